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

import functools
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)
def parse_ip(address: str) -> IPAddress | None:
    """The IP address `address` spells (brackets, a zone and surrounding blanks aside; an
    IPv4-mapped IPv6 address as the IPv4 address it is), or None when it spells none.

    A request's address is read more than once (its budget, its session's network), and
    `ipaddress` parses text in Python: the answers are cached (a flood of distinct
    addresses only cycles the cache), and a dotted quad goes through the C parser
    (`inet_pton`, as strict: four decimal parts, no leading zeros).
    """
    text = address.strip().strip("[]").split("%", 1)[0]
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):  # not a dotted quad; ValueError: a NUL in the text
        pass
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def dotted_quad(address: str) -> bytes | None:
    """The four bytes of `address` when it is exactly an IPv4 address as written
    canonically (`192.0.2.1`, how a client's address mostly comes: its text is its
    canonical form), by the C parser alone; None for any other text (`parse_ip`)."""
    try:
        return socket.inet_pton(socket.AF_INET, address)
    except (OSError, ValueError):  # ValueError: a NUL in the text
        return None


def limit_subject(address: str, ipv6_prefix: int = 64) -> str:
    """The canonical name of the budget `address` spends."""
    if dotted_quad(address) is not None:
        return address
    ip = parse_ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((ip, ipv6_prefix), strict=False)
        return network.compressed
    return str(ip)
