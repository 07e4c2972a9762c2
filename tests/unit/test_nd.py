"""RA/RS codec: exact bytes, round trips, scapy agreement, bad input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmanchor.access.nd import (
    NdError,
    PrefixInfo,
    RouterAdvertisement,
    RouterSolicitation,
    decode_ra,
    decode_rs,
    encode_ra,
    encode_rs,
)
from dmanchor.access.ra import link_advertisement
from dmanchor.wire.types import Prefix

HNP1, HNP2 = Prefix.parse("2001:db8:1:1::/64"), Prefix.parse("2001:db8:2:1::/64")


def test_mn_advertisement_deprecates_previous_prefixes() -> None:
    ra = link_advertisement((HNP2,), (HNP1,), 600)
    data = encode_ra(ra)
    assert data[:16].hex() == "86000000400007080000000000000000"
    back = decode_ra(data)
    assert back == ra
    assert [(p.prefix, p.preferred, p.valid) for p in back.prefixes] == [
        (HNP2, 600, 600), (HNP1, 0, 600)]


def test_rs_previous_prefix_option_exact_bytes() -> None:
    rs = RouterSolicitation((HNP1,), bytes.fromhex("020000000001"))
    data = encode_rs(rs)
    assert data.hex() == ("85000000" "00000000"
                          "0101" "020000000001"
                          "fd03" "40" "0000000000" "20010db8000100010000000000000000")
    assert decode_rs(data) == rs


def test_scapy_reads_our_ra() -> None:
    icmp6 = pytest.importorskip("scapy.layers.inet6")
    data = encode_ra(link_advertisement((HNP2,), (HNP1,), 600))
    pkt = icmp6.ICMPv6ND_RA(data)
    pios = []
    opt = pkt.payload
    while opt and opt.__class__.__name__ == "ICMPv6NDOptPrefixInfo":
        pios.append((opt.prefix, opt.prefixlen, opt.validlifetime, opt.preferredlifetime,
                     opt.L, opt.A))
        opt = opt.payload
    assert pkt.routerlifetime == 1800
    assert pios == [("2001:db8:2:1::", 64, 600, 600, 1, 1), ("2001:db8:1:1::", 64, 600, 0, 1, 1)]


def test_scapy_reads_our_mld_general_query() -> None:
    """A restarted router asks its links who is there (RFC 3810 5.1)."""
    mld = pytest.importorskip("scapy.layers.inet6")
    from dmanchor.access.nd import encode_mld_query

    data = encode_mld_query(100)
    assert len(data) == 28  # an MLDv2 query: a v1 host would take a shorter one
    q = mld.ICMPv6MLQuery2(data)
    assert (q.type, q.mrd, q.mladdr, q.QRV, q.QQIC, q.sources_number) == (
        130, 100, "::", 2, 125, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 128), st.integers(0, 1000)), max_size=4))
def test_ra_round_trip(items: list[tuple[int, int]]) -> None:
    ra = RouterAdvertisement(300, tuple(PrefixInfo(Prefix(0, n), v, v // 2) for n, v in items))
    assert decode_ra(encode_ra(ra)) == ra


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=120))
def test_bad_input_raises_only_nd_error(data: bytes) -> None:
    for fn in (decode_ra, decode_rs):
        with contextlib.suppress(NdError):
            fn(data)
