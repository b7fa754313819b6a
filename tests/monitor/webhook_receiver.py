"""A real HTTP webhook receiver on a free port, in a background thread.

It records every POST, can answer 500 to the first ``fail_first`` of them, and
keeps one accepted delivery per ``Idempotency-Key`` as a careful receiver would.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """``with WebhookReceiver() as hook: ... hook.url ... hook.accepted``."""

    def __init__(self, fail_first: int = 0, *, keep_alive: bool = False) -> None:
        self.fail_first = fail_first
        self.keep_alive = keep_alive  # HTTP/1.1: a client may reuse its connection
        self.posts: list[dict[str, Any]] = []  # every POST, failed ones too
        self.accepted: dict[str, dict[str, Any]] = {}  # idempotency key -> payload
        self.duplicates = 0  # accepted POSTs whose key was seen before
        self.malformed = 0  # POSTs without a key, or whose header and payload keys differ
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if receiver.keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = receiver.record(json.loads(body), self.headers.get("idempotency-key"))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output quiet

        return Handler

    def record(self, payload: dict[str, Any], key: str | None) -> int:
        with self._lock:
            self.posts.append({"payload": payload, "key": key})
            if len(self.posts) <= self.fail_first:
                return 500
            if key is None or key != payload["idempotency_key"]:
                self.malformed += 1
                return 400
            if key in self.accepted:
                self.duplicates += 1
            self.accepted[key] = payload
            return 204

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
