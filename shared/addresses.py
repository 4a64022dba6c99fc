"""Which budget a client address spends: one per IPv4 address, one per IPv6 network.

An IPv6 user is handed a whole /64 (2^64 addresses), so a per-address budget
keyed by the exact string would give each of them its own; and one address
has many spellings (`2001:db8::1`, `2001:DB8:0:0:0:0:0:1`). The budget is
therefore keyed by the canonical network of IPV6_LIMIT_PREFIX bits (64 by
default), and an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) counts as the
IPv4 address it is. Anything that is not an IP address (a unix socket peer,
"unknown") is used as it is.
"""

from __future__ import annotations

import ipaddress


def limit_subject(address: str, ipv6_prefix: int = 64) -> str:
    """The canonical name of the budget `address` spends."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        network = ipaddress.IPv6Network((ip, ipv6_prefix), strict=False)
        return network.compressed
    return str(ip)
