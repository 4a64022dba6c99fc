"""Sealed access tokens and client addresses: pure functions."""

from __future__ import annotations

import ipaddress
import os
import warnings

import pytest

from shared.addresses import dotted_quad, limit_subject, parse_ip
from shared.hashing import b64url, random_hex
from shared.settings import ApiClient, Secret
from shared.tokens import Claims, client_tag, network, new_token_id, seal, unseal

SECRET = Secret("t" * 40)
SHOP = ApiClient("shop.example", Secret("k" * 24))


def claims(**changes: object) -> Claims:
    base = dict(user_id=1001, expires=2_000_000_000, generation=3, token_id=new_token_id(),
                client=client_tag(SECRET, SHOP))
    base.update(changes)
    return Claims(**base)  # type: ignore[arg-type]


def test_a_sealed_token_unseals_to_its_claims() -> None:
    sealed = claims()
    token = seal(SECRET, sealed)
    assert token.startswith("tgl_") and len(token) < 80
    assert unseal(SECRET, token) == sealed


def test_a_token_changed_anywhere_or_sealed_with_another_secret_is_refused() -> None:
    token = seal(SECRET, claims())
    assert unseal(Secret("u" * 40), token) is None
    for n in range(len("tgl_"), len(token)):
        for replacement in "AB_-":
            if token[n] != replacement:
                changed = token[:n] + replacement + token[n + 1:]
                assert unseal(SECRET, changed) is None, (n, replacement)
    for junk in ("", "tgl_", "tgl_x", token + "A", token[:-1], "\ud800" * 70, "tgl_" + "=" * 66):
        assert unseal(SECRET, junk) is None


def test_the_client_is_sealed_in() -> None:
    assert client_tag(SECRET, SHOP) != client_tag(SECRET, None)
    assert client_tag(SECRET, SHOP) != client_tag(SECRET, ApiClient("blog", Secret("k" * 24)))
    # the name, not the key: rotating a client's key keeps its users' sessions
    assert client_tag(SECRET, SHOP) == client_tag(SECRET, ApiClient("shop.example",
                                                                     Secret("n" * 24)))


@pytest.mark.parametrize(
    ("address", "subject"),
    [
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::/64"),
        ("2001:0db8:0000:0000:ffff:ffff:ffff:ffff", "2001:db8::/64"),
        ("[2001:db8::7]", "2001:db8::/64"),
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::FFFF:c000:0201", "192.0.2.1"),
        ("192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::/64"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("[192.0.2.1]", "192.0.2.1"),
        ("unknown", "unknown"),
        # not addresses (kept as sent, each its own budget): octal-looking, short,
        # full-width digits, a NUL
        ("010.0.2.1", "010.0.2.1"),
        ("192.0.2", "192.0.2"),
        ("\uff11\uff19\uff12.0.2.1", "\uff11\uff19\uff12.0.2.1"),
        ("192.0.2.1\x00", "192.0.2.1\x00"),
    ],
)
def test_every_spelling_of_an_address_and_every_address_of_a_64_is_one_budget(
    address: str, subject: str
) -> None:
    assert limit_subject(address) == subject


def test_an_address_parses_the_same_from_the_cache_and_from_ipaddress() -> None:
    """`parse_ip` (cached; dotted quads through inet_pton) agrees with `ipaddress` on
    every spelling, the second reading (from the cache) as the first."""
    spellings = ["192.0.2.1", "0.0.0.0", "255.255.255.255", "256.0.0.1", "1.2.3.04",
                 "0x1.2.3.4", "1.2.3.4.5", "+1.2.3.4", "::1", "::ffff:10.0.0.1",
                 "2001:db8::1", "1.2.3.4/32", "", "\u0661.\u0662.\u0663.\u0664"]
    for text in spellings:
        try:
            ip: object = ipaddress.ip_address(text)
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        assert parse_ip(text) == ip, text
        assert parse_ip(text) == ip, text


def test_the_dotted_quad_shortcut_agrees_with_parsing() -> None:
    """Budgets and networks take a canonical dotted quad as it is (`dotted_quad`); every
    other spelling goes through `parse_ip`: both ways give the same subject and network."""
    spellings = ["192.0.2.1", "0.0.0.0", "255.255.255.255", "10.1.2.3", " 10.1.2.3",
                 "10.1.2.3 ", "[10.1.2.3]", "010.1.2.3", "1.2.3.04", "0x1.2.3.4", "1.2.3",
                 "1.2.3.4.5", "256.0.0.1", "1.2.3.4%eth0", "::ffff:10.1.2.3", "1.2.3.4\0",
                 "\u0661.\u0662.\u0663.\u0664", "unknown", ""]
    for text in spellings:
        quad = dotted_quad(text)
        ip = parse_ip(text)
        if quad is not None:  # the shortcut only takes what parses to itself
            assert ip is not None and ip.packed == quad and str(ip) == text, text
        expected = str(ip) if isinstance(ip, ipaddress.IPv4Address) else text
        assert limit_subject(text) == expected, text
        packed = b"" if ip is None else ip.packed[: 3 if ip.version == 4 else 6]
        assert network(text) == (b64url(packed) if packed else ""), text


def test_the_ipv6_prefix_is_configurable() -> None:
    assert limit_subject("2001:db8:1:2:3::1", 48) == "2001:db8:1::/48"
    assert limit_subject("2001:db8::1", 128) == "2001:db8::1/128"


def test_random_ids_are_never_handed_out_twice_not_even_across_a_fork() -> None:
    """Ids come from a pool of operating-system random bytes; a forked child starts
    its own pool instead of repeating its parent's."""
    seen = {random_hex(8) for _ in range(2000)}  # crosses a pool refill
    assert len(seen) == 2000
    reader, writer = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of fork with threads about
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(writer, random_hex(8).encode())
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 64).decode()
    os.waitpid(pid, 0)
    assert child != random_hex(8) and child not in seen
