"""Delegation first under BGP (draft 4.2 without a controller, FM:3-2).

Each access router is its own DHCPv6-PD client and announces the prefixes
it anchors by BGP.  The router an MN moves to has the prefix's lease
released where it was served (LEASE_RELEASE), takes it, and only then
announces the prefix; a lease it cannot have leaves the anchoring where it
was, tunnelled to it (4.1.2).  Driven in virtual time with the project's
cores, as call flows; the DHCPv6 server is scripted
(:class:`~tests.unit.pd_server.serve`).
"""

from __future__ import annotations

from ipaddress import IPv6Address as A

from dmanchor.fm.anchor_model import LeaseStayed
from dmanchor.sim.pd import PdServer
from dmanchor.sim.traffic import FlowReport, report, start_flow
from dmanchor.wire import messages as m
from dmanchor.wire.types import EntryKind, ForwardingEntry, Prefix
from tests.unit.pd_server import serve
from tests.unit.test_call_flows import HNP3, Trace, about
from tests.unit.test_fm import (
    HNP1,
    HNP2,
    IP1,
    World,
    assert_lossless,
    downlink,
    filter_of,
    opened,
    world,
)

AR1, AR2, AR3 = (A(f"fc00::{i}:0") for i in (1, 2, 3))


def moved(refuse: set[int], n: int = 2,
          second: bool = False) -> tuple[World, PdServer, Trace, FlowReport]:
    """HNP1's MN moves AR1 -> AR2 (and on to AR3 with ``second``) with a
    session on HNP1, whose flows end at 2.05 s (lifetime 1 s); run to 4 s:
    the session lost nothing, and got nothing twice."""
    w = world("bgp", lifetime=1, hold_timeout=0.1, pd=True, n=n)
    server = serve(w, refuse)
    trace = Trace(w.net)
    cont = downlink("cont", IP1, 0.1, 2.0)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    w.move(0.5005, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    last = 2
    if second:
        w.move(1.3005, 0.03, HNP3, previous={HNP1: [filter_of(cont)]}, src=2, dst=3)
        last = 3
    w.at(2.05, last, lambda a, now: a.flows_closed(HNP1, now))
    w.net.run(until=4.0)
    rep = report(w.fab, cont)
    assert (rep.lost, rep.duplicates) == (0, 0), rep
    return w, server, trace, rep


def history(server: PdServer, prefix: Prefix = HNP1) -> list[tuple[str, object]]:
    return [(kind, i) for _, kind, i, p in server.log if p == prefix]


def no_state_left(w: World) -> None:
    for name in w.fab.routers:
        assert not [e for e in w.fab.routers[name].entries() if e.prefix == HNP1], name


def test_the_new_anchor_announces_only_once_the_lease_is_its() -> None:
    w, server, trace, rep = moved(refuse=set())
    assert rep.reordered == 0
    trace.assert_order([
        ("ar2", "ar1", "LEASE_RELEASE", about(HNP1)),
        ("ar1", "ar2", "LEASE_RELEASE_ACK", about(HNP1, anchor="ar1", anchor_dpa=None)),
        ("ar2", "ar1", "BUFFER_READY", about(HNP1, dpa_address=AR2 + 1)),  # FM:6-2, flush SID
    ], since=0.5)
    # The server heard AR1 give the lease up before AR2 had it, and AR2
    # announced HNP1 only then; at the end AR2 withdrew it and gave it back.
    assert history(server) == [("Delegated", 1), ("Returned", 1), ("Delegated", 2),
                               ("Announced", 2), ("Withdrawn", 2), ("Returned", 2)]
    ack = trace.assert_order([("ar1", "ar2", "LEASE_RELEASE_ACK", about(HNP1))])[0]
    returned = next(t for t, kind, i, p in server.log if (kind, i, p) == ("Returned", 1, HNP1))
    assert ack.t >= returned  # answered once the server confirmed it
    assert w.ar[2].stats.counters["lease-stayed"] == 0
    assert server.owner.get(HNP1) is None  # back to Net1's pool (FM:3-3)
    no_state_left(w)


def test_a_lease_the_new_router_cannot_have_stays_with_its_anchor_tunnelled() -> None:
    """The server refuses AR2: after LEASE_WAIT AR2 stops asking and tells
    AR1 to stay the anchor (FM:6-2 naming AR2's DPA, not its flush SID); AR1
    asks for its lease back and tunnels HNP1 to AR2, which never announces
    it.  At the end FM:1 takes the tunnel down and AR1 gives the lease up."""
    w, server, trace, rep = moved(refuse={2})
    assert rep.reordered == 0
    # AR1 held the packets while AR2 waited LEASE_WAIT for the lease.
    assert 0.5 < rep.max_gap < 0.5 + 0.03 + 0.05
    trace.assert_order([
        ("ar2", "ar1", "LEASE_RELEASE", about(HNP1)),
        ("ar1", "ar2", "LEASE_RELEASE_ACK", about(HNP1, anchor="ar1")),
        ("ar2", "ar1", "BUFFER_READY", about(HNP1, dpa_address=AR2)),
        ("ar2", "ar1", "FM_HANDOFF", about(HNP1, node_id="ar1")),  # FM:1 at the end
    ], since=0.5)
    assert history(server) == [("Delegated", 1), ("Returned", 1), ("Delegated", 1),
                               ("Returned", 1)]
    assert w.ar[2].stats.counters["lease-stayed"] == 1
    assert w.ar[1].stats.counters["anchor-stayed"] == 1
    assert w.bgp is not None
    assert LeaseStayed(HNP1, AR1, "not delegated within 0.5 s") in w.bgp.effects
    assert server.owner.get(HNP1) is None
    no_state_left(w)


def test_a_tunnelled_prefix_carries_the_session_through_its_anchor() -> None:
    """While stayed, R routes HNP1 to AR1 (its /48), and AR1 tunnels it on."""
    w = world("bgp", lifetime=1, hold_timeout=0.1, pd=True)
    serve(w, {2})
    cont = downlink("cont", IP1, 0.1, 1.5)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    w.move(0.5005, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.net.run(until=1.4)
    assert [e for e in w.fab.routers["ar1"].entries() if e.prefix == HNP1] == [
        ForwardingEntry(EntryKind.TUNNEL, HNP1, AR2)]
    assert not [e for e in w.fab.routers["r"].entries() if e.prefix == HNP1]
    w.net.run(until=2.0)
    rep = report(w.fab, cont)
    assert_lossless(rep)
    assert rep.paths[-1] == ("cn", "r", "ar1", "r", "ar2", "mn")


def test_after_a_stay_the_next_router_asks_the_anchor_for_the_lease() -> None:
    """A -> B -> C, B refused by the server: HNP1 stayed at AR1, tunnelled to
    AR2.  AR3 asks AR2, which names AR1 (it only had HNP1 tunnelled); AR1
    gives the lease up, AR3 takes it, announces HNP1, and both AR1 and AR2
    send it what they still get.

    Known: AR3's hold lifts at the first end marker, while two paths drain
    into it (AR1's and AR2's leftovers): here 2 of 1900 packets arrive
    behind newer ones.  Nothing is lost or duplicated."""
    w, server, trace, rep = moved(refuse={2}, n=3, second=True)
    assert rep.reordered <= 5, rep
    trace.assert_order([
        ("ar3", "ar2", "LEASE_RELEASE", about(HNP1)),
        ("ar2", "ar3", "LEASE_RELEASE_ACK", about(HNP1, anchor="ar1", anchor_dpa=AR1)),
        ("ar3", "ar1", "LEASE_RELEASE", about(HNP1)),
        ("ar1", "ar3", "LEASE_RELEASE_ACK", about(HNP1, anchor="ar1", anchor_dpa=None)),
    ], since=1.3)
    ready = {(s.src, s.dst, s.message.dpa_address) for s in trace.since(1.3)
             if isinstance(s.message, m.BufferReady)}
    assert ready == {("ar3", "ar2", AR3 + 1), ("ar3", "ar1", AR3 + 1)}
    assert history(server)[-5:] == [("Returned", 1), ("Delegated", 3), ("Announced", 3),
                                    ("Withdrawn", 3), ("Returned", 3)]
    assert server.owner.get(HNP1) is None
    no_state_left(w)


def test_a_router_cannot_have_an_attached_mns_lease_released() -> None:
    """Under BGP another anchor may ask for a release - but not of a prefix
    whose MN is on this router's links: refused, the lease stays."""
    w = world("bgp", lifetime=1, pd=True, signed=True)
    server = serve(w)
    w.net.run(until=0.2)
    assert server.owner.get(HNP1) == 1
    w.ar[2].endpoint.request(m.LeaseRelease(HNP1), ("fc00::1:0", 5400), w.net.now)
    w.net.poll(("fc00::2:0", 5400))
    w.net.run(until=0.5)
    assert server.owner.get(HNP1) == 1 and HNP1 in w.ar[1].delegated
    assert w.ar[1].refused["refused:LEASE_RELEASE:attached-here"] == 1
