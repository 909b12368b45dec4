"""Which Host names a local HTTP service (the dashboard, the metrics endpoint) answers: loopback names only, unless
it was bound elsewhere on purpose (DNS rebinding: a page elsewhere cannot reach it by a name that resolves here)."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without its port ("[::1]:8765" -> "[::1]")."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0]
