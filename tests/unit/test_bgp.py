"""The BGP speaker: exact bytes, scapy's reading of them, the session FSM, bad input."""

from __future__ import annotations

from ipaddress import IPv6Address as A
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmanchor.access import bgpwire as w
from dmanchor.access.bgp import (
    BgpEvent,
    BgpSession,
    BgpSettings,
    RoutesReceived,
    SessionDown,
    SessionUp,
    State,
)
from dmanchor.wire.types import Prefix

P = Prefix.parse
HNP1 = P("2001:db8:1:1::/64")
NH = A("2001:db8:ff::2")
FF = "ff" * 16

# Golden vectors, field by field (RFC 4271 4.2/4.3, RFC 4760, RFC 6793, RFC 5492).
KEEPALIVE = FF + "0013" + "04"
OPEN = (FF + "002d" + "01"
        + "04" + "fde9" + "0009" + "0a000001" + "10"     # version, AS, hold, id, params len
        + "020e"                                         # capabilities parameter
        + "0104" + "0002" + "00" + "01"                  # multiprotocol IPv6 unicast
        + "0200"                                         # route refresh
        + "4104" + "0000fde9")                           # four-octet AS 65001
UPDATE = (FF + "0045" + "02" + "0000" + "002e"
          + "400101" + "00"                              # ORIGIN IGP
          + "400206" + "0201" + "0000fde9"               # AS_PATH: AS_SEQUENCE (65001)
          + "800e1e" + "0002" + "01" + "10" + NH.packed.hex() + "00"
          + "40" + "20010db800010001")                   # MP_REACH_NLRI 2001:db8:1:1::/64
WITHDRAW = (FF + "0026" + "02" + "0000" + "000f"
            + "800f0c" + "0002" + "01" + "40" + "20010db800010001")  # MP_UNREACH_NLRI


def update(attrs: str) -> str:
    """An UPDATE with these path attributes (hex), lengths filled in."""
    n = len(attrs) // 2
    return FF + f"{19 + 4 + n:04x}" + "02" + "0000" + f"{n:04x}" + attrs


ATTRS = UPDATE[46:]


def caps(asn: int) -> tuple[tuple[int, bytes], ...]:
    return (w.mp_capability(), (w.Cap.ROUTE_REFRESH, b""),
            (w.Cap.FOUR_OCTET_AS, asn.to_bytes(4, "big")))


@pytest.mark.parametrize("msg, hexbytes", [
    (w.Keepalive(), KEEPALIVE),
    (w.Open(65001, 9, 0x0A000001, caps(65001)), OPEN),
    (w.Update(announced=(HNP1,), next_hop=NH, as_path=(65001,)), UPDATE),
    (w.Update(withdrawn=(HNP1,)), WITHDRAW),
    (w.Notification(6, 2), FF + "0015" + "03" + "0602"),
    (w.RouteRefresh(), FF + "0017" + "05" + "00020001"),
], ids=["keepalive", "open", "update", "withdraw", "notification", "refresh"])
def test_golden_bytes_both_ways(msg: w.Message, hexbytes: str) -> None:
    assert w.encode(msg).hex() == hexbytes
    assert w.decode(bytes.fromhex(hexbytes)) == msg


def test_four_octet_as_uses_as_trans_in_the_two_octet_field() -> None:
    data = w.encode(w.Open(4200000001, 9, 1, caps(4200000001)))
    assert data[20:22] == (23456).to_bytes(2, "big")
    assert w.decode(data) == w.Open(4200000001, 9, 1, caps(4200000001))


def test_scapy_reads_our_update_like_we_wrote_it() -> None:
    pytest.importorskip("scapy")
    from scapy.contrib import bgp as sb
    # A NEW speaker (RFC 6793), like us; restored for whoever imports it next.
    old = sb.bgp_module_conf.use_2_bytes_asn
    sb.bgp_module_conf.use_2_bytes_asn = False
    try:
        check_with_scapy(sb)
    finally:
        sb.bgp_module_conf.use_2_bytes_asn = old


def check_with_scapy(sb: Any) -> None:
    prefixes = (*tuple(P(f"2001:db8:{i:x}::/48") for i in range(1, 40)), HNP1)
    data = w.encode(w.Update(announced=prefixes, next_hop=NH, as_path=(65001, 65002)))
    pkt = sb.BGP(data)
    up = pkt[sb.BGPUpdate]
    attrs = {a.type_code: a for a in up.path_attr}
    reach = attrs[14].attribute
    assert reach.afi == 2 and reach.safi == 1
    assert reach.nh_v6_addr == str(NH)
    got = [x.prefix for x in reach.nlri]
    assert got == [str(p) for p in prefixes]
    segs = attrs[2].attribute.segments
    assert [list(s.segment_value) for s in segs] == [[65001, 65002]]


def test_updates_are_packed_under_4096_bytes() -> None:
    many = [P(f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::/64") for i in range(5000)]
    ups = list(w.updates_for([], many, NH, (65001,)))
    assert len(ups) <= 13
    assert [p for u in ups for p in u.announced] == many
    assert all(len(w.encode(u)) <= w.MAX_SIZE for u in ups)


@pytest.mark.parametrize("hexbytes, code, sub", [
    ("00" * 16 + "0013" + "04", 1, 1),                     # bad marker
    (FF + "0012" + "04", 1, 2),                             # length below 19
    (FF + "1001" + "04", 1, 2),                             # length above 4096
    (FF + "0013" + "09", 1, 3),                             # unknown type
    (FF + "0014" + "04" + "00", 1, 2),                      # KEEPALIVE with a body
    (OPEN[:38] + "03" + OPEN[40:], 2, 1),                   # version 3
    (update("40010103" + ATTRS[8:]), 3, 6),                 # ORIGIN 3
    (UPDATE[:-18] + "3f" + UPDATE[-16:], 3, 10),            # /63 with host bits set
    (update("40010100" + ATTRS), 3, 1),                     # ORIGIN twice
    (update(ATTRS[8:]), 3, 3),                              # no ORIGIN
    (update(ATTRS + "40ff00"), 3, 2),                      # unknown well-known attribute
    (update(ATTRS[:-2]), 3, 5),                             # MP_REACH overruns the list
    (update(ATTRS.replace("0002011" + "0", "0002012" + "0")), 3, 8),  # next hop length 32
], ids=["marker", "short", "long", "type", "keepalive-body", "version", "origin",
        "host-bits", "duplicate-attribute", "missing-origin", "unknown-well-known",
        "overrun", "next-hop-length"])
def test_malformed_messages_name_their_notification(hexbytes: str, code: int,
                                                    sub: int) -> None:
    with pytest.raises(w.BgpError) as err:
        w.decode(bytes.fromhex(hexbytes))
    assert (err.value.code, err.value.subcode) == (code, sub)


# -- Sessions ---------------------------------------------------------------------------


def pair(a_as: int = 65001, b_as: int = 65101) -> tuple[BgpSession, BgpSession]:
    a = BgpSession(BgpSettings(a_as, b_as, 1, NH))
    b = BgpSession(BgpSettings(b_as, a_as, 2, A("2001:db8:ff::1")))
    return a, b


def pump(a: BgpSession, b: BgpSession, now: float) -> None:
    for _ in range(10):
        x, y = a.data_to_send(), b.data_to_send()
        if not x and not y:
            return
        if x:
            b.data_received(x, now)
        if y:
            a.data_received(y, now)


def events(s: BgpSession) -> list[BgpEvent]:
    out: list[BgpEvent] = []
    while (e := s.next_event()) is not None:
        out.append(e)
    return out


def test_session_comes_up_and_carries_announcements_both_ways() -> None:
    a, b = pair()
    a.change([], [HNP1], 0.0)  # queued before the session is up
    a.connection_made(0.0)
    b.connection_made(0.0)
    pump(a, b, 0.0)
    assert a.state is b.state is State.ESTABLISHED
    assert events(a) == [SessionUp(65101, 9)]
    assert events(b) == [SessionUp(65001, 9), RoutesReceived((HNP1,), ())]
    assert b.rib_in == {HNP1: (NH, (65001,))}
    other = P("2001:db8:2:1::/64")
    a.change([HNP1], [other], 1.0)  # a handover: one call, withdraw and announce
    pump(a, b, 1.0)
    assert b.rib_in == {other: (NH, (65001,))}


def test_a_path_through_our_own_as_is_a_loop_and_withdraws_the_route() -> None:
    """RFC 4271 9.1.2: a router echoing our own announcement back (or any
    path through our AS) is no route to us - it replaces the one we had."""
    a, b = pair()
    a.connection_made(0.0)
    b.connection_made(0.0)
    pump(a, b, 0.0)
    events(b)
    b.data_received(w.encode(w.Update(announced=(HNP1,), next_hop=NH, as_path=(65001,))), 1.0)
    assert events(b) == [RoutesReceived((HNP1,), ())]
    b.data_received(w.encode(w.Update(announced=(HNP1,), next_hop=NH,
                                      as_path=(65001, 65101, 65002))), 2.0)
    assert events(b) == [RoutesReceived((), (HNP1,))]
    assert b.rib_in == {}
    assert b.state is State.ESTABLISHED


def test_ibgp_announcements_carry_local_pref_and_no_as() -> None:
    a, b = pair(65001, 65001)
    a.change([], [HNP1], 0.0)
    a.connection_made(0.0)
    b.connection_made(0.0)
    pump(a, b, 0.0)
    assert b.rib_in == {HNP1: (NH, ())}


def test_hold_timer_expiry_sends_notification_and_drops_the_session() -> None:
    a, b = pair()
    a.connection_made(0.0)
    b.connection_made(0.0)
    pump(a, b, 0.0)
    t = a.get_timer()
    assert t == 3.0  # keepalive at hold/3
    a.handle_timer(3.0)
    assert w.decode(a.data_to_send()) == w.Keepalive()
    a.handle_timer(9.0)  # nothing heard from b for 9 s
    assert w.decode(a.data_to_send()) == w.Notification(4, 0)
    assert a.state is State.IDLE and a.close_requested
    assert events(a)[-1] == SessionDown("hold timer expired", w.Notification(4, 0))


def test_wrong_peer_as_is_refused_with_bad_peer_as() -> None:
    a = BgpSession(BgpSettings(65001, 65999, 1, NH))
    _, b = pair()
    a.connection_made(0.0)
    b.connection_made(0.0)
    pump(a, b, 0.0)
    assert a.state is State.IDLE
    sent = [e for e in events(a) if isinstance(e, SessionDown)]
    assert sent[0].notification == w.Notification(2, 2)


def test_announcements_survive_a_lost_session_and_are_resent() -> None:
    a, b = pair()
    a.change([], [HNP1], 0.0)
    a.connection_made(0.0)
    b.connection_made(0.0)
    pump(a, b, 0.0)
    a.connection_lost(1.0)
    b.connection_lost(1.0)
    assert b.rib_in == {}
    a.connection_made(2.0)
    b.connection_made(2.0)
    pump(a, b, 2.0)
    assert b.rib_in == {HNP1: (NH, (65001,))}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_an_established_session(junk: bytes) -> None:
    a, b = pair()
    a.connection_made(0.0)
    b.connection_made(0.0)
    pump(a, b, 0.0)
    events(a)
    a.data_received(junk, 1.0)
    # Either still up (a partial message waits for more) or down with a
    # NOTIFICATION sent; never an exception.
    if a.state is State.IDLE:
        down = events(a)[-1]
        assert isinstance(down, SessionDown) and down.notification is not None
        assert w.decode(a.data_to_send()[-len(w.encode(down.notification)):]) == \
            down.notification
    else:
        assert a.state is State.ESTABLISHED
