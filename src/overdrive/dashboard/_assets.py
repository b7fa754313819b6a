"""The page and its assets, shipped in ``static/``: a fixed allow-list, read once.

Only names in :data:`ASSETS` are served, each with its own content type; a
name is never joined to a path taken from the request, so nothing outside
``static/`` can be reached.

>>> sorted(ASSETS)
['dashboard.css', 'dashboard.js']
>>> asset("../../config.py") is None
True
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["ASSETS", "asset", "page"]

ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
HTML = "text/html; charset=utf-8"


@cache
def _read(name: str) -> bytes:
    # Files of the package, not paths: works from a wheel or a zip as well.
    return resources.files(__package__).joinpath("static", name).read_bytes()


def asset(name: str) -> tuple[bytes, str] | None:
    """The bytes and content type of an allowed asset, None for any other name."""
    media_type = ASSETS.get(name)
    return None if media_type is None else (_read(name), media_type)


def page(name: str = "index.html") -> bytes:
    """The dashboard page (``index.html``) or the key form (``login.html``)."""
    if name not in ("index.html", "login.html"):
        raise ValueError(f"no page {name!r}")
    return _read(name)
