"""Who may open the dashboard when the gateway asks for keys: a key, or a session cookie.

A browser's ``EventSource`` cannot send an ``Authorization`` header, and a
key in a URL ends up in histories, proxies and logs. So the page asks for the
key once, in a form (``POST /dashboard/login``), and answers with a cookie
holding a signed, expiring token instead of the key:

``<key name>~<expiry, Unix s>~<HMAC-SHA256 of both>``

The HMAC's secret is the key's SHA-256 (what the config holds): every worker
and replica with the same keys accepts the cookie, and changing or removing
the key revokes it. The cookie is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it) and scoped to
``Path=/dashboard``: the API routes never take it.

>>> token = issue("ops", "ab" * 32, now=1000.0)
>>> verify(token, {"ops": "ab" * 32}, now=1001.0)
'ops'
>>> verify(token, {"ops": "cd" * 32}, now=1001.0) is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Protocol

__all__ = ["COOKIE", "SESSION_SECONDS", "KeyGate", "issue", "login_key", "verify"]

COOKIE = "overdrive_dashboard"
SESSION_SECONDS = 12 * 3600
_SEP = "~"  # never in a key's name (config: [A-Za-z0-9_.:-]+)


def _mac(name: str, expires: int, digest: str) -> str:
    message = f"overdrive-dashboard{_SEP}{name}{_SEP}{expires}".encode()
    return hmac.new(digest.encode(), message, hashlib.sha256).hexdigest()


def issue(name: str, digest: str, *, now: float, seconds: int = SESSION_SECONDS) -> str:
    """A session token for the key ``name`` (SHA-256 ``digest``), valid ``seconds`` from ``now``."""
    expires = int(now) + seconds
    return f"{name}{_SEP}{expires}{_SEP}{_mac(name, expires, digest)}"


def verify(token: str, digests: Mapping[str, str], *, now: float) -> str | None:
    """The key name a valid, unexpired token was issued for; None for anything else."""
    parts = token.split(_SEP)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    name, expires, mac = parts[0], int(parts[1]), parts[2]
    digest = digests.get(name)
    if digest is None or expires < now:
        return None
    return name if hmac.compare_digest(mac, _mac(name, expires, digest)) else None


def cookie_token(headers: Mapping[str, str]) -> str | None:
    """The dashboard's cookie in a ``Cookie`` header, if there is one."""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def login_key(body: bytes) -> str:
    """The key a login form sent (``key=...``, form-encoded), or "" when none."""
    try:
        fields = urllib.parse.parse_qs(body.decode("utf-8"), max_num_fields=4)
    except (UnicodeDecodeError, ValueError):
        return ""
    return (fields.get("key") or [""])[0].strip()


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class Keys(Protocol):
    """The gateway's keys: which one a request's headers carry (its ``Tenants``)."""

    def find(self, headers: Mapping[str, str]) -> _Named | None: ...


class KeyGate:
    """The dashboard's door under ``[gateway] metrics = "keys"`` with keys configured.

    ``keys`` finds a key in ``Authorization`` / ``x-api-key``; ``digests``
    maps each key's name to its SHA-256 (the cookie's secret).
    """

    __slots__ = ("_digests", "_keys", "_now")

    def __init__(
        self,
        keys: Keys,
        digests: Mapping[str, str],
        now: Callable[[], float] = time.time,
    ) -> None:
        self._keys, self._digests, self._now = keys, digests, now

    def who(self, headers: Mapping[str, str]) -> str | None:
        """The name of the key the request carries, in a header or the session cookie."""
        found = self._keys.find(headers)
        if found is not None:
            return found.name
        token = cookie_token(headers)
        return None if token is None else verify(token, self._digests, now=self._now())

    def session(self, key: str) -> str | None:
        """A ``Set-Cookie`` value for a valid ``key``; None when the gateway does not know it."""
        found = self._keys.find({"authorization": f"Bearer {key}"}) if key else None
        digest = None if found is None else self._digests.get(found.name)
        if found is None or digest is None:
            return None
        token = issue(found.name, digest, now=self._now())
        return (
            f"{COOKIE}={token}; Path=/dashboard; Max-Age={SESSION_SECONDS}; "
            "HttpOnly; SameSite=Strict"
        )

    def __repr__(self) -> str:
        return f"KeyGate(keys={sorted(self._digests)})"
