"""DHCPv6-PD codec and requesting-router state machine (no network)."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from dmanchor.access.dhcpv6 import (
    ALL_SERVERS,
    Bound,
    Dhcp6Message,
    DhcpError,
    Expired,
    Failed,
    IaPd,
    IaPrefix,
    MsgType,
    PdClient,
    Released,
    State,
    StatusCode,
    decode,
    duid_ll,
    encode,
)
from dmanchor.wire.types import Prefix

DUID = duid_ll(bytes.fromhex("020000000001"))
SERVER = b"\x00\x01\x00\x01kea-server"
SRC = ("fe80::1", 547)
P = Prefix.parse("2001:db8:1:1::/64")


def test_solicit_with_hint_exact_bytes() -> None:
    m = Dhcp6Message(MsgType.SOLICIT, 0x123456, DUID, ia_pd=(IaPd(1, 0, 0, (IaPrefix(P),)),),
                     rapid_commit=True, elapsed=0)
    data = encode(m)
    assert data.hex() == (
        "01123456"                                 # Solicit, transaction id
        "0001000a00030001020000000001"             # Client Identifier, DUID-LL
        "000800020000"                             # Elapsed Time 0
        "000e0000"                                 # Rapid Commit
        "0019002900000001000000000000000"          # IA_PD iaid 1, T1 0, T2 0 ...
        "0001a0019000000000000000040"              # ... IA Prefix, lifetimes 0, /64
        "20010db8000100010000000000000000"         # ... 2001:db8:1:1::
    )
    assert decode(data) == m


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MsgType), st.integers(0, (1 << 24) - 1), st.binary(max_size=20),
       st.lists(st.tuples(st.integers(0, 128), st.integers(0, (1 << 32) - 1)), max_size=3))
def test_round_trip(mtype: MsgType, xid: int, duid: bytes, prefixes: list[tuple[int, int]]) -> None:
    ias = tuple(IaPrefix(Prefix(0, plen), life, life) for plen, life in prefixes)
    m = Dhcp6Message(mtype, xid, duid, SERVER, (IaPd(7, 10, 20, ias),), elapsed=5,
                     status=(0, "ok"))
    assert decode(encode(m)) == m


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_dhcp_error(data: bytes) -> None:
    with contextlib.suppress(DhcpError):
        decode(data)


def reply(to: Dhcp6Message, mtype: MsgType, prefix: Prefix | None, valid: int = 120,
          status: tuple[int, str] | None = None) -> bytes:
    ias = (IaPrefix(prefix, 60, valid),) if prefix is not None else ()
    return encode(Dhcp6Message(mtype, to.xid, to.client_id, SERVER,
                               (IaPd(1, 30, 48, ias, status),)))


def sent(c: PdClient) -> tuple[Dhcp6Message, tuple[str, int]]:
    [(data, dest)] = c.datagrams_to_send()
    return decode(data), dest


def test_four_message_exchange_then_renew_then_release() -> None:
    c = PdClient(DUID, rapid_commit=False)
    c.request(0.0, hint=P)
    sol, dest = sent(c)
    assert sol.msg_type is MsgType.SOLICIT and dest == ALL_SERVERS
    assert sol.ia_pd[0].prefixes[0].prefix == P  # the hint
    c.receive(reply(sol, MsgType.ADVERTISE, P), SRC, 0.01)
    req, dest = sent(c)
    assert req.msg_type is MsgType.REQUEST and req.server_id == SERVER and dest == SRC
    c.receive(reply(req, MsgType.REPLY, P), SRC, 0.02)
    assert c.next_event() == Bound(P, 60, 120) and c.state is State.BOUND
    assert c.get_timer() == 0.02 + 30  # T1
    c.handle_timer(30.02)
    ren, dest = sent(c)
    assert ren.msg_type is MsgType.RENEW and dest == SRC
    c.receive(reply(ren, MsgType.REPLY, P), SRC, 30.03)
    assert c.next_event() == Bound(P, 60, 120, renewed=True)
    c.release(31.0)
    rel, _ = sent(c)
    assert rel.msg_type is MsgType.RELEASE and rel.ia_pd[0].prefixes[0].prefix == P
    c.receive(reply(rel, MsgType.REPLY, None, status=(0, "released")), SRC, 31.01)
    assert c.next_event() == Released(P) and c.lease is None


def test_rapid_commit_and_no_prefix_available() -> None:
    c = PdClient(DUID)
    c.request(0.0)
    sol, _ = sent(c)
    assert sol.rapid_commit
    c.receive(reply(sol, MsgType.REPLY, P), SRC, 0.01)
    assert isinstance(c.next_event(), Bound)
    d = PdClient(DUID)
    d.request(0.0)
    sol, _ = sent(d)
    d.receive(reply(sol, MsgType.REPLY, None,
                    status=(StatusCode.NO_PREFIX_AVAIL, "pool exhausted")), SRC, 0.01)
    ev = d.next_event()
    assert isinstance(ev, Failed) and "NO_PREFIX_AVAIL" in ev.reason


def test_retransmits_then_fails_and_ignores_strangers() -> None:
    c = PdClient(DUID, initial_rt=0.1, max_rc=3)
    c.request(0.0)
    first, _ = sent(c)
    c.receive(b"\x07garbage", SRC, 0.01)  # malformed: ignored
    other = Dhcp6Message(MsgType.REPLY, first.xid ^ 1, DUID, SERVER)
    c.receive(encode(other), SRC, 0.02)  # another transaction: ignored
    assert c.next_event() is None
    t = 0.0
    while (deadline := c.get_timer()) is not None:
        t = deadline
        c.handle_timer(t)
    again = [decode(d) for d, _ in c.datagrams_to_send()]
    assert [m.xid for m in again] == [first.xid] * 2  # same transaction, retransmitted
    assert again[-1].elapsed and again[-1].elapsed > 0
    ev = c.next_event()
    assert isinstance(ev, Failed) and "SOLICIT" in ev.reason


def test_lease_expires_without_renewal() -> None:
    c = PdClient(DUID, initial_rt=0.5, max_rc=2)
    c.request(0.0)
    sol, _ = sent(c)
    c.receive(reply(sol, MsgType.REPLY, P, valid=120), SRC, 0.0)
    c.next_event()
    t = 0.0
    while c.lease is not None and (deadline := c.get_timer()) is not None:
        t = deadline
        c.handle_timer(t)
        c.datagrams_to_send()  # the server never answers
    assert Expired(P) in [c.next_event(), c.next_event(), c.next_event()]
    assert t == 120.0


def test_only_the_hint_ends_at_an_advertise_of_another_prefix() -> None:
    c = PdClient(DUID)
    c.request(0.0, hint=P, only_hint=True)
    sol, _ = sent(c)
    assert not sol.rapid_commit  # nothing committed before we accept
    other = Prefix.parse("2001:db8:1:2::/64")
    c.receive(reply(sol, MsgType.ADVERTISE, other), SRC, 0.01)
    ev = c.next_event()
    assert isinstance(ev, Failed) and str(other) in ev.reason
    assert c.datagrams_to_send() == [] and c.state is State.IDLE and c.get_timer() is None
    # The hint itself is taken as usual.
    c.request(0.1, hint=P, only_hint=True)
    sol, _ = sent(c)
    c.receive(reply(sol, MsgType.ADVERTISE, P), SRC, 0.11)
    req, _ = sent(c)
    assert req.msg_type is MsgType.REQUEST
