"""The gateway's access log: one line per request on the ``overdrive.access`` logger.

Each line names the time, method, path, status, the key's *name*, the model,
the upstream, the cache result (``HIT``, ``MISS``, ``STALE``, ``SEMANTIC`` or ``-``), the
milliseconds the call queued and the milliseconds the whole request took.
Never a key, a prompt or a body: what a caller sent stays out of the log,
except the path and the model name, which are escaped and cut short so a
request cannot forge or flood log lines.

``[gateway] access_log`` picks the shape: ``"text"``::

    2025-01-31T09:12:03.412Z POST /v1/chat/completions 200 key=team-a model=gpt-4o-mini
    upstream=primary cache=MISS queue_ms=0.0 total_ms=12.4 cost_usd=0.000150

(one line), ``"json"`` (one object per line, the same fields), or ``"off"``.
The line is only built when the logger is enabled for INFO, so a gateway
whose logging drops it pays one level check per request. Building it and its
log record costs ~5 µs; a handler that writes and flushes each line costs
several times that again on a busy gateway, so :class:`AccessLogHandler`
writes the lines in batches (at most ``interval`` s late).

>>> log = AccessLog("text")
>>> log.record("GET", "/health/live", 200, None, 0.0012)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Literal, TextIO

from .._json import dumps

if TYPE_CHECKING:
    from ..doors import Answer

__all__ = ["ACCESS_LOGGER", "AccessLog", "AccessLogHandler"]

ACCESS_LOGGER = logging.getLogger("overdrive.access")
# A path or a model name is the caller's text: at most this much of it is logged.
_MAX_FIELD = 200
_NONE = "-"


class AccessLog:
    """Writes a request's line to ``overdrive.access`` in the configured shape."""

    __slots__ = ("_style",)

    def __init__(self, style: Literal["text", "json", "off"]) -> None:
        self._style = style

    @property
    def enabled(self) -> bool:
        """Whether a line would be written now (the style is on and INFO passes)."""
        return self._style != "off" and ACCESS_LOGGER.isEnabledFor(logging.INFO)

    def record(
        self, method: str, path: str, status: int, reply: Answer | None, total_s: float
    ) -> None:
        """Log one request; ``reply`` is None when it was refused before the app saw it."""
        if not self.enabled:
            return
        now = time.time()
        if self._style == "json":
            line = _json_line(now, method, path, status, reply, total_s)
        else:
            line = _text_line(now, method, path, status, reply, total_s)
        direct = _sole_batching_handler()
        if direct is not None:  # nothing but our own handler would see the record
            direct.add(line)
            return
        # makeRecord and handle: Logger.info would also walk the stack for a caller
        # nobody reads here, a third of the cost of a line.
        ACCESS_LOGGER.handle(
            ACCESS_LOGGER.makeRecord(ACCESS_LOGGER.name, logging.INFO, "", 0, line, (), None)
        )

    def __repr__(self) -> str:
        return f"AccessLog({self._style!r}, enabled={self.enabled})"


_NO_HEADERS: dict[str, str] = {}


def _sole_batching_handler() -> AccessLogHandler | None:
    """The logger's one :class:`AccessLogHandler`, when no filter, formatter or parent
    logger would see a record: then the line goes to it without building a record
    (about half of what a line costs)."""
    logger = ACCESS_LOGGER
    handlers = logger.handlers
    if len(handlers) != 1 or logger.propagate or logger.filters:
        return None
    handler = handlers[0]
    if type(handler) is not AccessLogHandler or handler.filters or handler.formatter is not None:
        return None
    return handler if handler.level <= logging.INFO else None


def _text_line(
    now: float, method: str, path: str, status: int, reply: Answer | None, total_s: float
) -> str:
    headers = reply.headers if reply is not None else _NO_HEADERS
    key = reply.key if reply is not None else ""
    model = reply.model[:_MAX_FIELD] if reply is not None else ""
    return (
        f"{_stamp(now)} {_word(method)} {_word(path[:_MAX_FIELD])} {status}"
        f" key={key or _NONE} model={_word(model)}"
        # The key's and the upstream's names are the operator's, the rest the gateway's own:
        # only the path and the model come from the caller and need escaping.
        f" upstream={headers.get('x-overdrive-upstream') or _NONE}"
        f" cache={headers.get('x-overdrive-cache') or _NONE}"
        f" queue_ms={headers.get('x-overdrive-queue-ms') or _NONE}"
        f" total_ms={total_s * 1000:.1f}"
        f" cost_usd={reply.cost if reply is not None else 0.0:.6f}"
    )


def _json_line(
    now: float, method: str, path: str, status: int, reply: Answer | None, total_s: float
) -> str:
    headers = reply.headers if reply is not None else _NO_HEADERS
    queue_ms = headers.get("x-overdrive-queue-ms")
    fields = {
        "time": _stamp(now),
        "method": method or None,
        "path": path[:_MAX_FIELD] or None,
        "status": status,
        "key": (reply.key if reply is not None else "") or None,
        "model": (reply.model[:_MAX_FIELD] if reply is not None else "") or None,
        "upstream": headers.get("x-overdrive-upstream") or None,
        "cache": headers.get("x-overdrive-cache"),
        "queue_ms": float(queue_ms) if queue_ms else None,
        "total_ms": round(total_s * 1000, 1),
        "cost_usd": reply.cost if reply is not None else 0.0,
    }
    return dumps(fields).decode()


_second = (-1, "")  # the last whole second formatted, and its text: one tuple, swapped whole


def _stamp(now: float) -> str:
    """``now`` in ISO 8601 UTC with milliseconds; the seconds are formatted once per second."""
    global _second
    whole, text = _second
    if int(now) != whole:
        whole = int(now)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{int((now - whole) * 1000):03d}Z"


def _word(text: str) -> str:
    """One space-free token: ``-`` for nothing, the caller's odd text quoted and escaped."""
    if not text:
        return _NONE
    if text.isprintable() and text.isascii() and " " not in text and '"' not in text:
        return text
    # A newline or a quote in a path must not start a forged line or field.
    escaped = text.encode("unicode_escape").decode("ascii")
    escaped = escaped.replace('"', '\\"').replace(" ", "\\x20")
    return f'"{escaped}"'


class AccessLogHandler(logging.Handler):
    """Writes log lines to ``stream`` (stderr by default) in batches, not one write each.

    Lines are kept until ``max_buffer`` characters are waiting or ``interval``
    seconds have passed (a daemon thread flushes them), and at close; so the
    buffer is bounded, and a line is never more than ``interval`` s late.

    >>> logging.getLogger("overdrive.access").addHandler(AccessLogHandler())  # doctest: +SKIP
    """

    def __init__(
        self, stream: TextIO | None = None, interval: float = 0.5, max_buffer: int = 64 * 1024
    ) -> None:
        super().__init__()
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._max_buffer = max_buffer
        self._lines: list[str] = []
        self._size = 0
        self._stopped = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every_interval, name="overdrive-access-log", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= self._max_buffer:
            self._write(record)

    def add(self, line: str) -> None:
        """Take a formatted line as :meth:`emit` takes a record's message."""
        self.acquire()
        try:
            self._lines.append(line)
            self._size += len(line) + 1
            if self._size >= self._max_buffer:
                self._write(None)
        finally:
            self.release()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write(None)
        finally:
            self.release()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def _write(self, record: logging.LogRecord | None) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        self._size = 0
        try:
            self._stream.write(text)
            self._stream.flush()
        except Exception:
            if record is not None:
                self.handleError(record)

    def _flush_every_interval(self) -> None:
        while not self._stopped.wait(self._interval):
            self.flush()

    def __repr__(self) -> str:
        return f"AccessLogHandler(waiting={len(self._lines)}, interval={self._interval})"
