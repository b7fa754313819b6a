"""The live dashboard: an engine's figures as one snapshot, streamed to a page by SSE.

* :func:`snapshot` reads an engine into a :class:`Snapshot` (plain data,
  documented field by field; ``overdrive top`` reads the same);
* :class:`Dashboard` answers the routes under ``/dashboard`` for any server:
  the page, its assets, the live feed (``/dashboard/live``), one snapshot as
  JSON and the key form (see ``docs/dashboard.md``);
* :func:`serve_dashboard` (``od.dashboard()``) serves them on a small server
  of its own, for an engine inside an application; the gateway serves them
  among its routes, behind its ``[gateway] metrics`` policy.

>>> server = od.dashboard(port=8765)  # doctest: +SKIP
>>> print(server.url)  # doctest: +SKIP
http://127.0.0.1:8765/dashboard
"""

from __future__ import annotations

from ._demo import demo_config, demo_load, run_dashboard
from ._feed import MAX_INTERVAL, MIN_INTERVAL, LiveClients, LiveFeed, sse_frame
from ._gate import COOKIE, SESSION_SECONDS, KeyGate
from ._routes import (
    ASSET_PREFIX,
    GET_PATHS,
    LIVE_PATH,
    LOGIN_PATH,
    PAGE_PATH,
    SNAPSHOT_PATH,
    Dashboard,
)
from ._server import DashboardServer, serve_dashboard
from ._snapshot import (
    SNAPSHOT_VERSION,
    Decision,
    KeyUsage,
    Latency,
    Snapshot,
    Source,
    Totals,
    UpstreamRow,
    snapshot,
)

__all__ = [
    "ASSET_PREFIX",
    "COOKIE",
    "GET_PATHS",
    "LIVE_PATH",
    "LOGIN_PATH",
    "MAX_INTERVAL",
    "MIN_INTERVAL",
    "PAGE_PATH",
    "SESSION_SECONDS",
    "SNAPSHOT_PATH",
    "SNAPSHOT_VERSION",
    "Dashboard",
    "DashboardServer",
    "Decision",
    "KeyGate",
    "KeyUsage",
    "Latency",
    "LiveClients",
    "LiveFeed",
    "Snapshot",
    "Source",
    "Totals",
    "UpstreamRow",
    "demo_config",
    "demo_load",
    "run_dashboard",
    "serve_dashboard",
    "snapshot",
    "sse_frame",
]
