"""The memory data plane as a forwarding model: where packets end up."""

from __future__ import annotations

from ipaddress import IPv6Address as A

import pytest

from dmanchor.dataplane.api import BufferSpec, DataPlaneError
from dmanchor.dataplane.memory import MemoryDataPlane, Packet
from dmanchor.runtime.virtual import VirtualNetwork
from dmanchor.sim.fabric import Fabric
from dmanchor.sim.topologies import CN_ADDR, flat
from dmanchor.wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix

P = Prefix.parse
E = ForwardingEntry
K = EntryKind
HNP1 = P("2001:db8:1:1::/64")
IP1 = HNP1.network + 0x10
CN = int(A(CN_ADDR))


def test_longest_prefix_and_metric() -> None:
    dp = MemoryDataPlane("x")
    dp.apply([E(K.ROUTE, P("::/0"), A("fc00::1")),
              E(K.ROUTE, P("2001:db8::/32"), A("fc00::2"), metric=5),
              E(K.ROUTE, P("2001:db8::/32"), A("fc00::3"), metric=1),
              E(K.ANCHOR, HNP1, link="mn0")], [], 0.0)
    assert dp.decide(Packet(CN, IP1)).link == "mn0"
    assert dp.decide(Packet(CN, P("2001:db8:9::/48").network)).next_hop == int(A("fc00::3"))
    assert dp.decide(Packet(CN, int(A("2001:db9::1")))).next_hop == int(A("fc00::1"))


def test_flow_rule_steers_only_its_flow() -> None:
    dp = MemoryDataPlane("x")
    flow = FlowFilter(P(f"{A(CN)}/128"), Prefix(IP1, 128), 6, 0, 443)
    dp.apply([E(K.ANCHOR, HNP1, link="mn0"),
              E(K.TUNNEL, HNP1, A("fc00::2"), flow=flow)], [], 0.0)
    assert dp.decide(Packet(CN, IP1, 6, 50000, 443)).kind == "encap"
    assert dp.decide(Packet(CN, IP1, 6, 50000, 80)).kind == "deliver"
    assert dp.decide(Packet(CN, IP1, 17, 50000, 443)).kind == "deliver"


def test_source_validation_drops_and_counts_spoofed_packets() -> None:
    dp = MemoryDataPlane("x")
    dp.apply([E(K.ROUTE, P("::/0"), A("fc00::1"))], [], 0.0)
    dp.set_source_filter("mn0", [HNP1])
    assert dp.decide(Packet(IP1, CN), in_link="mn0").kind == "forward"
    assert dp.decide(Packet(IP1 + (1 << 64), CN), in_link="mn0").reason == "spoofed-source"
    assert dp.counters()["spoofed-source"] == 1


def test_apply_is_atomic_and_validates() -> None:
    dp = MemoryDataPlane("x")
    good = E(K.ANCHOR, HNP1, link="mn0")
    with pytest.raises(DataPlaneError):
        dp.apply([good, E(K.ROUTE, P("::/0"))], [], 0.0)  # route without next hop
    assert dp.entries() == []
    with pytest.raises(DataPlaneError):
        dp.apply([good], [E(K.ROUTE, P("::/0"), A("fc00::1"))], 0.0)  # absent delete
    assert dp.entries() == []


def test_buffer_holds_in_order_releases_on_delete_and_counts_limit() -> None:
    dp = MemoryDataPlane("x")
    buf = E(K.BUFFER, HNP1)
    dp.apply([E(K.ANCHOR, HNP1, link="mn0"), buf], [], 0.0, {HNP1: BufferSpec(limit=3)})
    for i in range(5):
        dp.decide(Packet(CN, IP1, seq=i))
    assert dp.buffered(HNP1) == 3 and dp.counters()["buffer-overflow"] == 2
    dp.apply([], [buf], 1.0)
    assert [p.seq for p in dp.released] == [0, 1, 2]
    assert dp.decide(Packet(CN, IP1)).kind == "deliver"


def test_buffer_timeout_drops_are_counted() -> None:
    dp = MemoryDataPlane("x")
    dp.apply([E(K.BUFFER, HNP1)], [], 0.0, {HNP1: BufferSpec(timeout=0.5)})
    dp.decide(Packet(CN, IP1))
    assert dp.next_deadline() == 0.5
    dp.expire(0.6)
    assert dp.counters()["buffer-timeout"] == 1 and dp.entries() == []


def test_buffer_expires_at_exactly_its_deadline() -> None:
    # 1.0005 + 2.0 - 1.0005 < 2.0 in binary floating point: expiring at the
    # advertised deadline must still work, or a driver's timer spins there.
    dp = MemoryDataPlane("x")
    dp.apply([E(K.BUFFER, HNP1)], [], 1.0005, {HNP1: BufferSpec(timeout=2.0)})
    deadline = dp.next_deadline()
    assert deadline is not None and deadline - 1.0005 < 2.0
    dp.expire(deadline)
    assert dp.next_deadline() is None and dp.entries() == []


def test_fabric_srv6_tunnel_end_to_end() -> None:
    net = VirtualNetwork()
    fab = Fabric(flat(2), net)
    fab.attach("mn", "ar2", "mn2")
    fab.add_address("mn", IP1)
    # AR1 tunnels HNP1 to AR2's SID; AR2 decapsulates and delivers.
    fab.routers["ar1"].apply([E(K.TUNNEL, HNP1, A("fc00::2:0"))], [], 0.0)
    fab.routers["ar2"].apply([E(K.DECAP, P("fc00::2:0/128")),
                              E(K.ANCHOR, HNP1, link="mn2")], [], 0.0)
    fab.send("cn", Packet(CN, IP1, seq=7))
    net.run()
    [d] = fab.received("mn")
    assert d.packet.hops == ("cn", "r", "ar1", "r", "ar2", "mn")
    assert d.packet.outer is None and d.link == "mn2"


def test_fabric_reports_where_packets_die() -> None:
    net = VirtualNetwork()
    fab = Fabric(flat(2), net)
    fab.send("cn", Packet(CN, IP1))  # Net1 address nobody holds
    net.run()
    fab.routers["ar1"].apply([E(K.TUNNEL, HNP1, A("fc00::2:0"))], [], 0.0)
    fab.send("cn", Packet(CN, IP1))  # tunnelled to AR2, which has no SID entry
    net.run()
    assert [(d.node, d.reason) for d in fab.drops] == [("ar1", "drop-entry"),
                                                       ("ar2", "no-decap")]


def test_holds_expire_in_deadline_order_and_a_new_hold_keeps_its_own() -> None:
    """The holds' deadlines come from a heap: the earliest first, and a hold
    ended and started again for a prefix is timed from its new start."""
    dp = MemoryDataPlane("x")
    a, b = P("2001:db8:1:1::/64"), P("2001:db8:1:2::/64")
    dp.apply([E(K.BUFFER, a)], [], 0.0, {a: BufferSpec(timeout=1.0)})
    dp.apply([E(K.BUFFER, b)], [], 0.2, {b: BufferSpec(timeout=0.5)})
    assert dp.next_deadline() == 0.7
    dp.apply([], [E(K.BUFFER, b)], 0.3)        # b released early ...
    dp.apply([E(K.BUFFER, b)], [], 0.4, {b: BufferSpec(timeout=2.0)})  # ... and held again
    assert dp.next_deadline() == 1.0 and dp.held(b)
    dp.expire(1.0)
    assert not dp.held(a) and dp.held(b) and dp.next_deadline() == 2.4
    dp.expire(2.4)
    assert dp.holds() == set() and dp.next_deadline() is None and dp.entries() == []


def test_the_desired_fib_answers_one_prefix_without_a_walk() -> None:
    """``DesiredFib.entries_of`` and ``has`` agree with ``entries`` as entries
    come and go (holds included)."""
    from dmanchor.fm.fib import DesiredFib

    dp = MemoryDataPlane("x")
    dp.apply([E(K.ANCHOR, HNP1, link="mn0")], [], 0.0)
    fib = DesiredFib(dp)  # seeded from what the data plane has
    other = P("2001:db8:1:2::/64")
    tunnel = E(K.TUNNEL, HNP1, A("fc00::2:1"))
    fib.apply([tunnel, E(K.ANCHOR, other, link="mn1")], [E(K.ANCHOR, HNP1, link="mn0")], 0.1)
    fib.apply([E(K.BUFFER, HNP1)], [], 0.2)
    for p in (HNP1, other, P("2001:db8:1:3::/64")):
        assert sorted(map(str, fib.entries_of(p))) == sorted(
            str(e) for e in fib.entries() if e.prefix == p)
    assert fib.has(tunnel) and fib.has(E(K.BUFFER, HNP1))
    assert not fib.has(E(K.ANCHOR, HNP1, link="mn0")) and not fib.has(E(K.BUFFER, other))
    fib.apply([], [tunnel, E(K.BUFFER, HNP1)], 0.3)
    assert fib.entries_of(HNP1) == [] and not fib.has(tunnel)


def test_a_marker_from_an_access_link_goes_only_while_the_link_has_its_carrier() -> None:
    """``mark_end(..., served_on=link)``: the prefix was delivered on that
    link until now; with its radio gone, what a standby hold caught must go
    before any marker - none is sent, and that is counted."""
    dp = MemoryDataPlane("x", [int(A("fc00::1:0"))])
    sent: list[Packet] = []
    dp.on_marker = lambda _old, p: sent.append(p)
    tunnel = E(K.TUNNEL, HNP1, A("fc00::2:1"))
    dp.apply([tunnel], [], 0.0)
    up = {"mn0": True}
    dp.link_up = up.__getitem__
    assert dp.mark_end(tunnel, 0.0, "mn0") and len(sent) == 1
    up["mn0"] = False
    assert not dp.mark_end(tunnel, 0.0, "mn0") and len(sent) == 1
    assert dp.counters()["end-marker-link-down"] == 1
    assert dp.mark_end(tunnel, 0.0) and len(sent) == 2  # (no link named: as before)
