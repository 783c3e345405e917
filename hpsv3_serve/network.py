"""Which addresses keep a port on this machine."""

from __future__ import annotations

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")  # as people write them in --host or HOST:PORT
LOOPBACK_ADDRESS = "127.0.0.1"  # what a port that must stay local binds


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address or the host of HOST:PORT) only answers on this machine."""
    return host in LOOPBACK_HOSTS
