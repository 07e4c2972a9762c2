"""A router's DHCPv6-PD delegations (one IA_PD per prefix), against a model server."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from dmanchor.access.delegation import Delegated, Delegations, Refused, Returned, iaid_for
from dmanchor.access.dhcpv6 import (
    Dhcp6Message,
    IaPd,
    IaPrefix,
    MsgType,
    StatusCode,
    decode,
    duid_ll,
    encode,
)
from dmanchor.wire.types import Prefix

P = Prefix.parse
HNP1, HNP2 = P("2001:db8:1:1::/64"), P("2001:db8:1:2::/64")
AR1, AR2 = duid_ll(bytes.fromhex("020000000001")), duid_ll(bytes.fromhex("020000000002"))
SERVER_ID = b"\x00\x01\x00\x01model"
SRC = ("fe80::1", 547)


@dataclass
class ModelServer:
    """Rapid-commit PD as Kea does it: a hint is delegated only when free;
    a client asking again on an IAID that holds a lease gets that lease."""

    pool: list[Prefix]
    leases: dict[Prefix, tuple[bytes, int]] = field(default_factory=dict)
    commits: int = 0

    def answer(self, data: bytes) -> bytes:
        m = decode(data)
        assert m.client_id is not None
        ia = m.ia_pd[0]
        if m.msg_type is MsgType.RELEASE:
            for p in ia.prefixes:
                if self.leases.get(p.prefix) == (m.client_id, ia.iaid):
                    del self.leases[p.prefix]
            return self._reply(m, ia.iaid, None)
        held = [p for p, who in self.leases.items() if who == (m.client_id, ia.iaid)]
        hint = ia.prefixes[0].prefix if ia.prefixes else None
        if held:
            got: Prefix | None = held[0]
        elif hint is not None and hint in self.pool and hint not in self.leases:
            got = hint
        else:
            got = next((p for p in self.pool if p not in self.leases), None)
        if got is None:
            return self._reply(m, ia.iaid, None, (StatusCode.NO_PREFIX_AVAIL, "none left"))
        if m.msg_type is MsgType.SOLICIT and not m.rapid_commit:
            return self._reply(m, ia.iaid, got, kind=MsgType.ADVERTISE)  # nothing committed
        if m.msg_type is MsgType.REQUEST and self.leases.get(got, (m.client_id, 0))[0] \
                != m.client_id:
            return self._reply(m, ia.iaid, None, (StatusCode.NO_PREFIX_AVAIL, "taken"))
        self.leases[got] = (m.client_id, ia.iaid)
        self.commits += 1
        return self._reply(m, ia.iaid, got)

    def _reply(self, m: Dhcp6Message, iaid: int, p: Prefix | None,
               status: tuple[int, str] | None = None,
               kind: MsgType = MsgType.REPLY) -> bytes:
        ias = (IaPrefix(p, 60, 120),) if p is not None else ()
        return encode(Dhcp6Message(kind, m.xid, m.client_id, SERVER_ID,
                                   (IaPd(iaid, 30, 48, ias, status),)))


def run(server: ModelServer, d: Delegations, start: float, until: float,
        lose: bool = False) -> float:
    """Exchange messages (each answered 1 ms later) and fire timers."""
    now = start
    while now < until:
        while out := d.datagrams_to_send():
            for data, _ in out:
                if not lose:
                    d.receive(server.answer(data), SRC, now + 0.001)
            if lose:
                break
        deadline = d.get_timer()
        if deadline is None or deadline > until:
            break
        now = max(now, deadline)
        d.handle_timer(now)
    return now


def events(d: Delegations) -> list[object]:
    out: list[object] = []
    while (ev := d.next_event()) is not None:
        out.append(ev)
    return out


def test_the_hint_is_delegated_once_the_previous_router_released_it() -> None:
    server = ModelServer([HNP1, HNP2, P("2001:db8:1:3::/64")])
    ar1, ar2 = Delegations(AR1), Delegations(AR2, retry=0.05, patience=3.0)
    ar1.hold(HNP1, 0.0)
    run(server, ar1, 0.0, 0.01)
    assert events(ar1) == [Delegated(HNP1, 120)] and server.leases[HNP1][0] == AR1
    # AR2 asks before AR1 let go: it is offered another prefix, hands it
    # back, and asks again until HNP1 is free.
    ar2.hold(HNP1, 0.1)
    commits = server.commits
    run(server, ar2, 0.1, 0.3)
    assert ar2.counters["hint-refused"] == 1 and events(ar2) == []
    assert [who for who, _ in server.leases.values()] == [AR1]  # no offer kept
    # Only the first ask (rapid commit) cost the server a lease; the asks
    # since take the hint or nothing.
    assert server.commits == commits + 1
    ar1.let_go(HNP1, 0.3)
    run(server, ar1, 0.3, 0.31)
    assert events(ar1) == [Returned(HNP1)] and ar1.held(0.31) == {}
    assert ar1.get_timer() is None  # nothing left of it
    run(server, ar2, 0.3, 0.5)
    assert events(ar2) == [Delegated(HNP1, 120)]
    assert server.leases == {HNP1: (AR2, iaid_for(HNP1))}
    assert 119 < ar2.held(0.5)[HNP1] <= 120
    # Renewal keeps it while it is held.
    run(server, ar2, 0.5, 31.0)
    assert events(ar2) == [Delegated(HNP1, 120, renewed=True)]


def test_a_prefix_moving_in_is_asked_for_without_committing_another() -> None:
    server = ModelServer([HNP1, HNP2])
    server.leases[HNP1] = (AR1, iaid_for(HNP1))
    ar2 = Delegations(AR2, retry=0.02)
    ar2.hold(HNP1, 0.0, moving=True)
    run(server, ar2, 0.0, 0.1)
    assert server.commits == 0 and ar2.counters["hint-refused"] == 0 and events(ar2) == []
    del server.leases[HNP1]  # the previous router released it
    run(server, ar2, 0.1, 0.2)
    assert events(ar2) == [Delegated(HNP1, 120)] and server.commits == 1


def test_gives_up_after_its_patience_and_keeps_nothing() -> None:
    server = ModelServer([HNP1, HNP2])
    server.leases[HNP1] = (AR1, iaid_for(HNP1))  # never released
    ar2 = Delegations(AR2, retry=0.1, patience=1.0)
    ar2.hold(HNP1, 0.0)
    run(server, ar2, 0.0, 2.0)
    got = events(ar2)
    assert len(got) == 1 and isinstance(got[0], Refused) and got[0].prefix == HNP1
    assert "offered 2001:db8:1:2::/64" in got[0].reason
    assert server.leases == {HNP1: (AR1, iaid_for(HNP1))} and ar2.get_timer() is None


def test_prefixes_have_their_own_ias_and_replies_are_not_confused() -> None:
    server = ModelServer([HNP1, HNP2])
    d = Delegations(AR1)
    d.hold(HNP1, 0.0)
    d.hold(HNP2, 0.0)
    sent = [decode(data) for data, _ in d.datagrams_to_send()]
    assert {m.ia_pd[0].iaid for m in sent} == {iaid_for(HNP1), iaid_for(HNP2)}
    assert len({m.xid for m in sent}) == 2
    # Answers in the opposite order, plus junk and a stranger's transaction.
    d.receive(b"\x07\x00", SRC, 0.001)
    d.receive(encode(Dhcp6Message(MsgType.REPLY, 0xABCDEF, AR1, SERVER_ID)), SRC, 0.001)
    for m in reversed(sent):
        d.receive(server.answer(encode(m)), SRC, 0.002)
    assert sorted(str(e.prefix) for e in events(d) if isinstance(e, Delegated)) == [
        str(HNP1), str(HNP2)]
    assert d.counters["stray-datagram"] == 2
    assert server.leases == {HNP1: (AR1, iaid_for(HNP1)), HNP2: (AR1, iaid_for(HNP2))}


def test_a_lease_moved_by_the_controller_is_taken_at_once() -> None:
    """lease6-update gave HNP1 to AR2 on the IAID AR2 derives from HNP1:
    AR2's first Solicit gets it, with no wait for AR1's release."""
    server = ModelServer([HNP1, HNP2])
    server.leases[HNP1] = (AR2, iaid_for(HNP1))
    ar2 = Delegations(AR2)
    ar2.hold(HNP1, 0.0)
    run(server, ar2, 0.0, 0.01)
    assert events(ar2) == [Delegated(HNP1, 120)] and ar2.counters["hint-refused"] == 0


def _crc_collision() -> tuple[Prefix, Prefix]:
    """Two /64s with one CRC-32: CRC is affine over GF(2), so a set of
    prefix-bit flips whose CRC differences sum to zero (found by Gaussian
    elimination over 33 of the 64 prefix bits) changes the prefix, not its CRC."""
    base = 0x20010DB8 << 96

    def crc(net: int) -> int:
        return zlib.crc32(net.to_bytes(16, "big") + b"\x40")

    rows: list[tuple[int, int]] = []  # (crc difference, bits flipped), reduced
    for bit in range(64, 97):
        v, flips = crc(base ^ (1 << bit)) ^ crc(base), 1 << bit
        for rv, rf in rows:
            if v ^ rv < v:
                v, flips = v ^ rv, flips ^ rf
        if v == 0:
            return Prefix(base, 64), Prefix(base ^ flips, 64)
        rows.append((v, flips))
        rows.sort(reverse=True)
    raise AssertionError("33 vectors in 32 dimensions are dependent")


def test_colliding_iaids_take_the_next_free_one() -> None:
    # CRC-32 tells apart any two inputs differing within 32 consecutive bits,
    # so /64s of one pool up to /32 never collide; bits further apart can.
    pair = _crc_collision()
    assert pair[0] != pair[1] and iaid_for(pair[0]) == iaid_for(pair[1])
    assert pair is not None
    d = Delegations(AR1)
    d.hold(pair[0], 0.0)
    d.hold(pair[1], 0.0)
    iaids = [decode(data).ia_pd[0].iaid for data, _ in d.datagrams_to_send()]
    assert iaids == [iaid_for(pair[0]), iaid_for(pair[0]) % 0xFFFFFFFF + 1]


def test_let_go_while_asking_releases_what_comes() -> None:
    server = ModelServer([HNP1])
    d = Delegations(AR1)
    d.hold(HNP1, 0.0)
    [(data, _)] = d.datagrams_to_send()
    d.let_go(HNP1, 0.0005)  # before the answer
    d.receive(server.answer(data), SRC, 0.001)
    run(server, d, 0.001, 0.1)
    assert server.leases == {} and events(d) == [Returned(HNP1)]
    assert d.held(0.1) == {} and d.get_timer() is None


def test_an_unreachable_server_is_reported_not_waited_on() -> None:
    d = Delegations(AR1, retry=0.05, patience=0.5, initial_rt=0.05, max_rc=2)
    d.hold(HNP1, 0.0)
    run(ModelServer([HNP1]), d, 0.0, 5.0, lose=True)
    got = events(d)
    assert len(got) == 1 and isinstance(got[0], Refused) and "no answer" in got[0].reason
    assert d.get_timer() is None


def test_many_delegations_are_indexed_consistently_through_renewals_and_releases() -> None:
    """300 prefixes: every answer reaches its own IA, renewals come at T1
    for all, and at every step the indexed next time equals the earliest
    time of any IA (checked against a walk of them all)."""
    pool = [P(f"2001:db8:{i // 256:x}:{i % 256:x}::/64") for i in range(300)]
    server = ModelServer(list(pool))
    d = Delegations(AR1)

    def brute_force() -> float | None:
        times = [t for ia in d._ias.values() for t in (ia.client.get_timer(), ia.retry_at)
                 if t is not None]
        return min(times) if times else None

    for p in pool:
        d.hold(p, 0.0)
    now = 0.0
    while now < 70.0:  # T1 = 30 s, T2 = 48 s, valid 120 s: two renewal rounds
        while out := d.datagrams_to_send():
            for data, _ in out:
                d.receive(server.answer(data), SRC, now + 0.001)
        assert d.get_timer() == brute_force()
        deadline = d.get_timer()
        assert deadline is not None
        now = max(now, deadline)
        d.handle_timer(now)
    got = events(d)
    assert sum(isinstance(e, Delegated) and not e.renewed for e in got) == 300
    assert sum(isinstance(e, Delegated) and e.renewed for e in got) == 600
    assert {p for p, (who, _) in server.leases.items() if who == AR1} == set(pool)
    for p in pool[:150]:
        d.let_go(p, now)
    now = run(server, d, now, now + 1.0)
    assert sum(isinstance(e, Returned) for e in events(d)) == 150
    assert set(server.leases) == set(pool[150:]) and len(d._ias) == 150
    assert len(d._by_xid) <= 150 and d.get_timer() == brute_force()
