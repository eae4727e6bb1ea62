"""Which hosts are this machine: servers bind them by default, clients send them keys
without TLS."""

from __future__ import annotations


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1); a bracketed IPv6 host too."""
    import ipaddress  # here: the CLI's thin search path imports this module, never calls it

    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
