"""The dashboard's routes, for any server: the gateway's and :func:`serve_dashboard`'s.

=====================================  =====================================================
``GET  /dashboard``                    the page (or, without a valid key, the key form)
``GET  /dashboard/assets/<name>``      its script and style (an allow-list)
``GET  /dashboard/live``               a snapshot per ``interval`` s as server-sent events
``GET  /dashboard/snapshot``           one snapshot as JSON (for ``overdrive top``, scripts)
``POST /dashboard/login``              the key form's target: a session cookie, then the page
=====================================  =====================================================

With a :class:`~._gate.KeyGate` (the server decides whether to give one)
the page answers the key form instead without a valid key, and the feed and
the snapshot answer 401; the assets are the package's own code and style, no
figure, and load for anyone (the key form wears the style too).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Mapping

from .._json import dumps
from .._validate import check_float, check_int
from ..doors import Answer, error_answer
from ._assets import ASSETS, HTML, asset, page
from ._feed import MAX_INTERVAL, MIN_INTERVAL, LiveClients, LiveFeed
from ._gate import KeyGate, login_key
from ._snapshot import Engine, snapshot

__all__ = [
    "ASSET_PREFIX",
    "GET_PATHS",
    "LIVE_PATH",
    "LOGIN_PATH",
    "PAGE_PATH",
    "SNAPSHOT_PATH",
    "Dashboard",
]

PAGE_PATH = "/dashboard"
LIVE_PATH = "/dashboard/live"
SNAPSHOT_PATH = "/dashboard/snapshot"
LOGIN_PATH = "/dashboard/login"
ASSET_PREFIX = "/dashboard/assets/"
GET_PATHS = (PAGE_PATH, LIVE_PATH, SNAPSHOT_PATH, *(ASSET_PREFIX + name for name in ASSETS))
# The page loads nothing from elsewhere, runs no inline script and may not be framed.
_PAGE_HEADERS = {
    "content-type": HTML,
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
Wait = Callable[[float], Awaitable[None]]


class Dashboard:
    """Answers the dashboard's routes for an engine; bounds the live feeds at ``max_clients``.

    ``interval`` is the feed's default period (a ``?interval=`` within
    [0.25, 60] s overrides it); ``wait`` how a feed waits between two
    snapshots (default: the engine clock's ``sleep``).

    >>> dashboard = Dashboard(max_clients=4)
    >>> reply = await dashboard.answer(od, "GET", "/dashboard/snapshot", {})  # doctest: +SKIP
    >>> reply.status  # doctest: +SKIP
    200
    """

    __slots__ = ("_clients", "_interval", "_wait")

    def __init__(
        self, *, max_clients: int = 8, interval: float = 1.0, wait: Wait | None = None
    ) -> None:
        check_int("dashboard.max_clients", max_clients, 1)
        check_float("dashboard.interval", interval, MIN_INTERVAL, MAX_INTERVAL)
        self._clients = LiveClients(max_clients)
        self._interval = interval
        self._wait = wait

    @property
    def clients(self) -> LiveClients:
        """The live feeds running now, and their bound."""
        return self._clients

    async def answer(
        self,
        engine: Engine,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        query: str = "",
        gate: KeyGate | None = None,
        ended: Callable[[], bool] = lambda: False,
    ) -> Answer:
        """The answer to one request under ``/dashboard``; 404 for a path it does not serve.

        ``ended`` tells a live feed to stop (the server is draining).
        """
        if method == "POST" and path == LOGIN_PATH:
            return self._login(body, gate)
        if method not in ("GET", "HEAD"):
            return error_answer(405, f"Method {method} is not allowed on {path}.", "bad_method")
        if gate is not None and not path.startswith(ASSET_PREFIX) and gate.who(headers) is None:
            # The form is a page served as asked (200): a 401 would be a console error.
            return _login_page(200) if path == PAGE_PATH else _unauthorized()
        if method == "HEAD" and path == LIVE_PATH:  # the head alone: no feed, no slot taken
            return Answer(200, {"content-type": "text/event-stream", "cache-control": "no-cache"})
        return self._get(engine, path, query, ended)

    def _get(self, engine: Engine, path: str, query: str, ended: Callable[[], bool]) -> Answer:
        if path == PAGE_PATH:
            return Answer(200, dict(_PAGE_HEADERS), page())
        if path == LIVE_PATH:
            return self.live(engine, _interval(query, self._interval), ended)
        if path == SNAPSHOT_PATH:
            return Answer(200, _json_headers(), dumps(snapshot(engine)))
        found = asset(path[len(ASSET_PREFIX) :]) if path.startswith(ASSET_PREFIX) else None
        if found is None:
            return error_answer(404, f"Unknown request URL: {path}", "unknown_url")
        content, media_type = found
        return Answer(
            200, {"content-type": media_type, "x-content-type-options": "nosniff"}, content
        )

    def live(
        self, engine: Engine, interval: float, ended: Callable[[], bool] = lambda: False
    ) -> Answer:
        """The live feed, or 503 when ``max_clients`` feeds already run."""
        if not self._clients.acquire():
            limit = self._clients.limit
            message = (
                f"The dashboard already serves {limit} live clients, its limit; "
                "close another tab or try again shortly."
            )
            reply = error_answer(503, message, "too_many_dashboard_clients")
            reply.headers["retry-after"] = "5"
            return reply
        wait = self._wait or engine.metrics.clock.sleep
        feed = LiveFeed(lambda: snapshot(engine), wait, interval, self._clients, ended)
        headers = {"content-type": "text/event-stream", "x-accel-buffering": "no"}
        return Answer(200, headers, stream=feed)

    def _login(self, body: bytes, gate: KeyGate | None) -> Answer:
        """The key form's post: a cookie and back to the page, or the form again (401)."""
        cookie = "" if gate is None else gate.session(login_key(body))
        if cookie is None:
            return _login_page(401)
        headers = {"location": PAGE_PATH, "cache-control": "no-store"}
        if cookie:
            headers["set-cookie"] = cookie
        return Answer(303, headers)

    def __repr__(self) -> str:
        return f"Dashboard({self._clients!r}, interval={self._interval:g}s)"


def _interval(query: str, default: float) -> float:
    """``?interval=`` in seconds, held within the bounds; the default when absent or bad."""
    values = urllib.parse.parse_qs(query, max_num_fields=8).get("interval")
    try:
        asked = float(values[0]) if values else default
    except ValueError:
        return default
    if asked != asked:  # NaN
        return default
    return min(MAX_INTERVAL, max(MIN_INTERVAL, asked))


def _json_headers() -> dict[str, str]:
    return {"content-type": "application/json", "cache-control": "no-store"}


def _login_page(status: int) -> Answer:
    return Answer(status, dict(_PAGE_HEADERS), page("login.html"))


def _unauthorized() -> Answer:
    message = (
        "The dashboard needs a key of this gateway's [[gateway.keys]]: send it as "
        "`Authorization: Bearer <key>`, or sign in at /dashboard for a session cookie."
    )
    reply = error_answer(401, message, "invalid_api_key")
    reply.headers["www-authenticate"] = "Bearer"
    return reply
