"""Delegation first with router-driven DHCPv6-PD (issue 16 item 4, FM:3-2).

Each access router is its own PD client; the controller has the lease
released by the router holding it (LEASE_RELEASE) and taken by the new one
(LEASE_TAKE) before it re-routes the core.  Driven in virtual time with the
project's cores, as a call flow; the DHCPv6 server is scripted
(:class:`~tests.unit.pd_server.serve`): one owner per prefix, a prefix
delegated only when free.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv6Address as A

from dmanchor.fm.controller import ControllerCore
from dmanchor.fm.controller_lease import LeaseMoves
from dmanchor.sim.pd import PdServer
from dmanchor.sim.traffic import report, start_flow
from dmanchor.wire import messages as m
from dmanchor.wire.types import EntryKind, ForwardingEntry
from tests.unit.pd_server import serve
from tests.unit.test_call_flows import Trace, about
from tests.unit.test_fm import (
    CTRL,
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
from tests.unit.test_lease_first import AR2, move_with_session, two_moves_with_session


def moved(refuse: set[int] | None = None) -> tuple[World, PdServer, Trace]:
    """:func:`move_with_session` with router-driven leases, traced."""
    w = world("switch", lifetime=1, pd=True)
    w.ctrl.s = replace(w.ctrl.s, leases=LeaseMoves.ROUTERS)
    server = serve(w, refuse or set())
    trace = Trace(w.net)
    move_with_session(w)
    return w, server, trace


def test_the_lease_is_released_and_taken_before_the_core_is_switched() -> None:
    w, server, trace = moved()
    assert server.owner.get(HNP1) is None  # back to Net1's pool at the end (FM:3-3)
    trace.assert_order([
        ("ctrl", "ar1", "BUFFER_REQUEST", about(HNP1)),       # FM:6-1
        ("ctrl", "ar1", "LEASE_RELEASE", about(HNP1)),        # FM:3-2
        ("ar1", "ctrl", "LEASE_RELEASE_ACK", about(HNP1)),
        ("ctrl", "ar2", "LEASE_TAKE", about(HNP1)),
        ("ar2", "ctrl", "LEASE_TAKE_ACK", about(HNP1)),
        ("ctrl", "r", "FORWARDING_UPDATE"),                   # FM:5-1
        ("ctrl", "ar1", "BUFFER_READY", about(HNP1, anchor=None)),  # FM:6-2
    ], since=0.5)
    # The server heard: AR1's release confirmed before AR2's lease.
    moves = [(kind, i) for _, kind, i, p in server.log if p == HNP1]
    assert moves[:3] == [("Delegated", 1), ("Returned", 1), ("Delegated", 2)], moves
    # The release was answered only once the server confirmed it.
    returned = next(t for t, kind, i, p in server.log if (kind, i, p) == ("Returned", 1, HNP1))
    ack = trace.assert_order([("ar1", "ctrl", "LEASE_RELEASE_ACK", about(HNP1))])[0]
    assert ack.t >= returned
    assert w.ctrl.counters["switch-tunnelled"] == 0
    assert w.ar[2].stats.counters["lease-take"] == 1


def test_a_lease_the_new_router_cannot_have_stays_home_and_tunnels() -> None:
    """AR2 is refused by the server: AR2 refuses the take after LEASE_WAIT
    and stops asking, AR1 is told it stays the anchor (NODE_ID), asks for its
    lease back and gets it, and tunnels HNP1 to AR2.  The core never moves."""
    w, server, trace = moved(refuse={2})
    trace.assert_order([
        ("ctrl", "ar1", "LEASE_RELEASE", about(HNP1)),
        ("ar1", "ctrl", "LEASE_RELEASE_ACK", about(HNP1)),
        ("ctrl", "ar2", "LEASE_TAKE", about(HNP1)),
        ("ar2", "ctrl", "ERROR"),
        ("ctrl", "ar1", "BUFFER_READY", about(HNP1, anchor="ar1")),
    ], since=0.5)
    routed = [s for s in trace.since(0.5) if isinstance(s.message, m.ForwardingUpdate)
              and any(e.prefix == HNP1 for e in s.message.add)]
    assert not routed  # no FM:5-1 for HNP1
    assert ForwardingEntry(EntryKind.ROUTE, HNP1, AR2) not in w.fab.routers["r"].entries()
    moves = [(kind, i) for _, kind, i, p in server.log if p == HNP1]
    # AR1 had it back before the flows ended; AR2 never had it.
    assert moves[:3] == [("Delegated", 1), ("Returned", 1), ("Delegated", 1)], moves
    assert ("Delegated", 2) not in moves
    assert w.ar[2].stats.counters["lease-take-refused"] == 1
    assert w.ctrl.counters["switch-tunnelled"] == 1
    # FM:1 at the end takes the tunnel down; AR1 gives the lease back then.
    assert server.owner.get(HNP1) is None
    for name in ("r", "ar1", "ar2"):
        assert not [e for e in w.fab.routers[name].entries() if e.prefix == HNP1], name


def test_only_the_controller_moves_a_lease() -> None:
    """A LEASE_RELEASE from any other node is refused: the lease stays."""
    w = world("switch", lifetime=1, pd=True, signed=True)
    server = serve(w)
    w.net.run(until=0.2)
    assert server.owner.get(HNP1) == 1
    ar2 = w.ar[2]
    ar2.endpoint.request(m.LeaseRelease(HNP1), ("fc00::1:0", 5400), w.net.now)
    w.net.poll(("fc00::2:0", 5400))
    w.net.run(until=0.5)
    assert server.owner.get(HNP1) == 1
    assert sum(v for k, v in w.ar[1].refused.items() if "LEASE_RELEASE" in k) == 1
    assert HNP1 in w.ar[1].delegated



def test_a_restarted_controller_still_ends_a_tunnelled_prefix() -> None:
    """The fallback survives a controller restart: its host keeps what it
    left tunnelled from home, and when the binding ends while the controller
    is down, the restarted one finds no binding and has the home take its
    tunnel down (FM:1) - before, the home tunnelled HNP1 to AR2 for good."""
    w = world("switch", lifetime=1, pd=True)
    w.ctrl.s = replace(w.ctrl.s, leases=LeaseMoves.ROUTERS, reconcile_grace=1.0)
    server = serve(w, {2})
    cont = downlink("cont", IP1, 0.1, 1.3)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    w.move(0.5005, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.net.run(until=1.3)
    assert w.ctrl.tunnelled == {HNP1: AR2}
    kept = dict(w.ctrl.tunnelled)
    w.net.remove(CTRL)
    w.at(1.35, 2, lambda a, now: a.flows_closed(HNP1, now))  # the binding ends
    w.net.run(until=4.0)
    assert [e.kind for e in w.fab.routers["ar1"].entries()
            if e.prefix == HNP1] == [EntryKind.TUNNEL]  # nobody told AR1
    ctrl = ControllerCore(w.ctrl.s, now=w.net.now, tunnelled=kept)
    w.net.add(CTRL, ctrl)
    w.net.poll(CTRL)
    w.net.run(until=7.0)
    assert ctrl.counters["reconcile-reverted"] == 1 and not ctrl.tunnelled
    assert [e for e in w.fab.routers["ar1"].entries() if e.prefix == HNP1] == []
    assert server.owner.get(HNP1) is None  # AR1 gave the lease back (FM:3-3)


def test_a_switched_prefix_whose_next_lease_is_refused_goes_back_home() -> None:
    """A -> B -> C, C refused by the server: HNP1 was switched to AR2 with
    its lease; AR2 gives the lease up for the move to AR3, which cannot have
    it.  The anchoring goes back home: the core's route to AR2 goes, AR1
    asks for the lease again and tunnels HNP1 to AR3, and AR2 hands what it
    held on to AR3.  (Before, it was switched to AR3 without a lease.)"""
    w = world("switch", lifetime=1, pd=True, n=3)
    w.ctrl.s = replace(w.ctrl.s, leases=LeaseMoves.ROUTERS)
    server = serve(w, {3})
    cont = two_moves_with_session(w, stop=2.5)
    assert server.owner.get(HNP1) == 1
    moves = [(kind, i) for _, kind, i, p in server.log if p == HNP1]
    assert moves == [("Delegated", 1), ("Returned", 1), ("Delegated", 2), ("Returned", 2),
                     ("Delegated", 1)], moves
    assert w.ctrl.counters["switch-home-tunnelled"] == 1
    assert w.ctrl.counters["switch-without-lease"] == 0
    assert HNP1 not in w.ctrl.moved and w.ctrl.tunnelled == {HNP1: A("fc00::3:0")}
    assert not [e for e in w.fab.routers["r"].entries() if e.prefix == HNP1]
    assert [e.next_hop for e in w.fab.routers["ar1"].entries()
            if e.prefix == HNP1] == [A("fc00::3:1")]  # AR3's flush SID
    w.at(2.6, 3, lambda a, now: a.flows_closed(HNP1, now))
    w.net.run(until=6.0)
    rep = report(w.fab, cont)
    assert_lossless(rep)
    assert ("cn", "r", "ar1", "r", "ar3", "mn") in rep.paths
    assert server.owner.get(HNP1) is None  # given back at the end (FM:3-3)
    for name in ("r", "ar1", "ar2", "ar3"):
        assert not [e for e in w.fab.routers[name].entries() if e.prefix == HNP1], name
