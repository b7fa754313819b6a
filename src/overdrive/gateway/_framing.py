"""HTTP/1.1 as bytes, for the gateway's protocol: heads, canned refusals, request paths.

Pure functions of their arguments, apart from a cache of status lines: the
connection's state machine lives in :mod:`._protocol`, the bytes it writes here.
"""

from __future__ import annotations

import urllib.parse
from http import HTTPStatus

import httptools

from ..doors import Answer, error_answer

__all__ = [
    "BAD_REQUEST",
    "CONTINUE",
    "LAST_CHUNK",
    "canned_answer",
    "request_path",
    "response_head",
    "status_line",
]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def request_path(url: bytes) -> str:
    """The decoded path of a request target (most are a bare path: no parsing needed)."""
    if url[:1] != b"/" or b"?" in url or b"#" in url:
        url = httptools.parse_url(url).path
    path = url.decode("latin-1")
    return urllib.parse.unquote(path) if "%" in path else path


def response_head(reply: Answer, length: int | None, keep_alive: bool) -> bytes:
    """The status line and headers; ``length`` None means chunked, -1 means until close."""
    lines = [status_line(reply.status)]
    for name, value in reply.headers.items():  # a loop: a comprehension is one more call
        lines.append(f"{name}: {value}\r\n")
    if length is None:
        lines.append("transfer-encoding: chunked\r\n")
    elif length >= 0:
        lines.append(f"content-length: {length}\r\n")
    if not keep_alive:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def canned_answer(status: int, message: str, code: str) -> bytes:
    """A whole error answer in the OpenAI shape that ends the connection."""
    reply = error_answer(status, message, code)
    return response_head(reply, len(reply.body), False) + reply.body


_STATUS_LINES: dict[int, str] = {}


def status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n"
    return line


BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 29\r\nconnection: close\r\n\r\nInvalid HTTP request received."
)
