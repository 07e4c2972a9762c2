"""Delegation first (issue 16 item 4, FM:3-2): in draft 4.2.1 with DHCPv6-PD
the anchoring of a prefix moves only with its lease.  The controller asks
its host to move the lease (Kea ``lease6-update`` on a real node) and
re-routes the core only once that succeeded; refused, the prefix stays
anchored at home and is tunnelled to the new router (4.1.2).  In virtual
time with the project's cores; the host's answer is scripted."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from ipaddress import IPv6Address as A

from dmanchor.fm.controller import (
    AnchorMoved,
    AnchorReverted,
    AnchorSwitching,
    ControllerEvent,
)
from dmanchor.fm.controller_lease import LeaseMoves, MoveLease, SwitchTunnelled
from dmanchor.sim.traffic import Flow, report, start_flow
from dmanchor.wire.types import EntryKind, ForwardingEntry
from tests.unit.test_fm import (
    CTRL,
    HNP1,
    HNP2,
    IP1,
    World,
    assert_lossless,
    delegations,
    downlink,
    filter_of,
    opened,
    world,
)

AR2 = A("fc00::2:0")
KEA_DELAY = 0.05
"""Seconds the scripted host takes to move a lease (a Kea round trip)."""


def lease_host(w: World, ok: bool) -> list[tuple[float, ControllerEvent]]:
    """Make the controller wait for leases and answer every MoveLease
    ``ok`` (or refused) after :data:`KEA_DELAY`; returns the controller's
    events with their times, as they come."""
    w.ctrl.s = replace(w.ctrl.s, leases=LeaseMoves.KEA)
    seen: list[tuple[float, ControllerEvent]] = []

    def answer(ev: MoveLease) -> None:
        w.ctrl.lease_moved(ev.prefix, ev.dpa, ok, "" if ok else "Kea: lease is busy",
                           w.net.now)
        w.net.poll(CTRL)

    def hook() -> None:
        for ev in w.ctrl.drain_events():
            seen.append((w.net.now, ev))
            if isinstance(ev, MoveLease):
                w.net.call_later(KEA_DELAY, partial(answer, ev))
    w.net.on_poll(CTRL, hook)
    return seen


def move_with_session(w: World) -> None:
    """HNP1's MN moves from AR1 to AR2 with a session on HNP1; its flows end
    at 1.05 s (lifetime 1 s), so HNP1 goes back to Net1 after that.  Run to
    3 s: the session lost nothing."""
    cont = downlink("cont", IP1, 0.1, 1.0)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    w.move(0.5005, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.at(1.05, 2, lambda a, now: a.flows_closed(HNP1, now))
    w.net.run(until=3.0)
    assert_lossless(report(w.fab, cont))


def two_moves_with_session(w: World, stop: float) -> Flow:
    """HNP1's MN moves AR1 -> AR2 -> AR3 with a session on HNP1 until
    ``stop``; run to 2.3 s.  Returns the session's flow."""
    from tests.unit.test_call_flows import HNP3

    cont = downlink("cont", IP1, 0.1, stop)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    w.move(0.5005, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.move(1.2005, 0.03, HNP3, previous={HNP1: [filter_of(cont)]}, src=2, dst=3)
    w.net.run(until=2.3)
    return cont


def _moved(ok: bool) -> tuple[World, list[tuple[float, ControllerEvent]]]:
    w = world("switch", lifetime=1, pd=True)
    seen = lease_host(w, ok)
    move_with_session(w)
    return w, seen


def test_the_core_is_switched_only_once_the_lease_moved() -> None:
    w, seen = _moved(ok=True)
    kinds = [type(ev) for _, ev in seen if isinstance(ev, MoveLease | AnchorSwitching
                                                       | AnchorMoved | AnchorReverted)]
    # The lease first, then FM:5-1 and the move done, then the revert (FM:3-3).
    assert kinds[:3] == [MoveLease, AnchorSwitching, AnchorMoved], kinds
    asked = next(t for t, ev in seen if isinstance(ev, MoveLease))
    switching = next(t for t, ev in seen if ev == AnchorSwitching(HNP1, AR2))
    assert switching >= asked + KEA_DELAY
    assert AnchorReverted(HNP1) in [ev for _, ev in seen]
    assert w.ctrl.counters["switch-tunnelled"] == 0


def test_without_its_lease_the_prefix_stays_home_and_is_tunnelled() -> None:
    """Refused: the core is never re-routed, AR1 tunnels HNP1 to AR2 and
    the session goes on losslessly; when its flows end, the controller's
    FM:1 takes the tunnel down at AR1, which gives the lease back then (it
    held it all along)."""
    w, seen = _moved(ok=False)
    events = [ev for _, ev in seen]
    assert SwitchTunnelled(HNP1, AR2, "Kea: lease is busy") in events
    assert not [ev for ev in events if isinstance(ev, AnchorMoved | AnchorSwitching)]
    assert w.ctrl.counters["switch-tunnelled"] == 1
    assert w.fab.routers["r"].counters().get("end-marker-sent", 0) == 0
    # FM:1 at the end: nothing of HNP1 left anywhere, the lease given back
    # by AR1 only then; AR2 never anchored it with a lease of its own.
    assert HNP1 not in w.ctrl.tunnelled
    for name in ("r", "ar1", "ar2"):
        assert not [e for e in w.fab.routers[name].entries() if e.prefix == HNP1], name
    assert delegations(w.ar[1]) == [(True, HNP1), (False, HNP1)]


def test_a_tunnelled_prefix_carries_the_flow_through_its_home() -> None:
    """While tunnelled, every packet of the session goes CN - R - AR1 and
    back through R to AR2 (the core still routes HNP1 home)."""
    w = world("switch", lifetime=1, pd=True)
    lease_host(w, ok=False)
    cont = downlink("cont", IP1, 0.1, 1.0)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    w.move(0.5005, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.net.run(until=1.5)
    rep = report(w.fab, cont)
    assert_lossless(rep)
    assert ("cn", "r", "ar1", "r", "ar2", "mn") in rep.paths
    assert ("cn", "r", "ar2", "mn") not in rep.paths
    assert HNP1 in w.ar[1].delegated  # the home keeps its lease while it anchors
    tunnels = [e for e in w.fab.routers["ar1"].entries()
               if e.prefix == HNP1 and e.kind is EntryKind.TUNNEL]
    assert [e.next_hop for e in tunnels] == [AR2 + 1]  # to AR2's flush SID
    assert ForwardingEntry(EntryKind.ROUTE, HNP1, AR2) not in w.fab.routers["r"].entries()


def test_a_switched_prefix_whose_next_lease_kea_refuses_goes_back_home() -> None:
    """With Kea moving leases: HNP1 is switched to AR2 with its lease; Kea
    refuses to move it on to AR3.  The anchoring goes back home (the core's
    route to AR2 goes), AR1 asks for the lease again, AR2 gives it up as it
    hands what it held on to AR3, and AR1 tunnels HNP1 to AR3: lossless.
    (Before, HNP1 was switched to AR3 without a lease.)"""
    w = world("switch", lifetime=1, pd=True, n=3)
    w.ctrl.s = replace(w.ctrl.s, leases=LeaseMoves.KEA)
    ar3 = A("fc00::3:0")

    def answer(ev: MoveLease) -> None:
        ok = ev.dpa != ar3
        w.ctrl.lease_moved(ev.prefix, ev.dpa, ok, "" if ok else "Kea: refused", w.net.now)
        w.net.poll(CTRL)

    def hook() -> None:
        for ev in w.ctrl.drain_events():
            if isinstance(ev, MoveLease):
                w.net.call_later(KEA_DELAY, partial(answer, ev))
    w.net.on_poll(CTRL, hook)
    cont = two_moves_with_session(w, stop=2.0)
    assert_lossless(report(w.fab, cont))
    assert w.ctrl.counters["switch-home-tunnelled"] == 1
    assert HNP1 not in w.ctrl.moved and w.ctrl.tunnelled == {HNP1: ar3}
    assert not [e for e in w.fab.routers["r"].entries() if e.prefix == HNP1]
    assert [e.next_hop for e in w.fab.routers["ar1"].entries()
            if e.prefix == HNP1] == [ar3 + 1]
    # AR1 gave the lease up at the first switch and asks for it again now;
    # AR2 took it (as Kea gave it) and lets it go.
    assert delegations(w.ar[1]) == [(True, HNP1), (False, HNP1), (True, HNP1)]
    assert (False, HNP1) in delegations(w.ar[2])
