"""Who can reach the gateway: an open door without keys stays on loopback unless told.

Without ``[[gateway.keys]]`` every caller is served, on the operator's upstream
keys and budget. That is right on a laptop (127.0.0.1) and wrong on a public
interface, where anyone who finds the port spends the operator's money. So the
gateway refuses to listen beyond loopback without keys, unless the operator
says so (``[gateway] allow_anonymous = true`` or ``--allow-anonymous``).

>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
(True, True, False)
"""

from __future__ import annotations

import ipaddress
import socket

from .._errors import ConfigError
from ..config import Config

__all__ = ["check_exposure", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (an unknown name is not)."""
    literal = host.strip("[]")
    try:
        return ipaddress.ip_address(literal).is_loopback
    except ValueError:
        pass
    if not literal:  # "" binds every interface
        return False
    try:
        found = socket.getaddrinfo(literal, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in found}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_exposure(config: Config, host: str, *, allow_anonymous: bool = False) -> None:
    """Raise :class:`ConfigError` when keyless serving would reach beyond loopback."""
    gateway = config.gateway
    if gateway.keys or gateway.allow_anonymous or allow_anonymous or is_loopback(host):
        return
    raise ConfigError(
        "gateway.keys",
        f"no [[gateway.keys]] are configured, so anyone who can reach {host} could spend "
        "your upstream keys; add keys, listen on 127.0.0.1, or allow it explicitly with "
        "[gateway] allow_anonymous = true (or --allow-anonymous)",
    )
