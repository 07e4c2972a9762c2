"""Silent peers (issue 16 item 3): a claim whose peer stays silent is
retried, in virtual time, with the project's cores."""

from __future__ import annotations

from functools import partial
from ipaddress import IPv6Address as A

import pytest

from dmanchor.prefixtable import PrefixTable
from dmanchor.sim.traffic import Flow, report, start_flow
from dmanchor.transport.reliable import Addr
from dmanchor.wire import messages as m
from dmanchor.wire.codec import decode
from dmanchor.wire.types import EntryKind
from tests.unit.test_call_flows import HNP3, Trace, move_stock
from tests.unit.test_fm import (
    CTRL,
    HNP1,
    HNP2,
    IP1,
    LMS,
    World,
    downlink,
    filter_of,
    opened,
    world,
)

AR1_CTL = "fc00::1:0"
"""AR1's agent (its CPA is its DPA in the flat network)."""


def _received_after(w: World, flow: str, t: float) -> int:
    return sum(1 for d in w.fab.received("mn") if d.packet.flow == flow and d.at >= t)


def _moved_with_ar1_silent(stop: float) -> tuple[World, Flow]:
    """4.1.2: a continuity flow to HNP1 until ``stop``; AR1, HNP1's anchor,
    goes silent for signalling just before the MN moves to AR2 at 0.5 s."""
    w = world("tunnel")
    cont = downlink("cont", IP1, 0.1, stop)
    start_flow(w.fab, cont)
    w.net.call_at(0.49, lambda: w.net.down.add(AR1_CTL))
    w.move(0.5, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    return w, cont


def test_a_claim_the_home_anchor_missed_is_retried_when_it_answers_again() -> None:
    """4.1.2: HNP1's anchor (AR1) is unreachable for its signalling from
    just before the move until 3 s, so AR2's FM:6-2 to it times out.  AR2
    tries again, later each time, while the MN is still there; once AR1
    answers, its tunnel is re-pointed and the session is served again.
    (Before, the failure was counted and the session never came back.)"""
    w, cont = _moved_with_ar1_silent(6.0)
    w.net.call_at(3.0, lambda: w.net.down.discard(AR1_CTL))
    w.net.run(until=6.5)
    counters = w.ar[2].stats.counters
    assert counters["claim-retry"] >= 1 and counters["claim-abandoned"] == 0, counters
    # Served again well before the flow ends (the retries back off to 4 s at most).
    assert _received_after(w, cont.name, 5.5) >= 0.4 * cont.rate
    assert report(w.fab, cont).duplicates == 0


def test_a_claim_is_abandoned_and_counted_after_its_last_retry() -> None:
    """An anchor that never answers: the retries end (not one a second
    forever) and the abandoned claim is counted, for the operator."""
    w, _ = _moved_with_ar1_silent(1.0)
    w.net.run(until=60.0)
    counters = w.ar[2].stats.counters
    assert counters["claim-abandoned"] == 1, counters
    assert 1 <= counters["claim-retry"] <= 6, counters


def test_an_mn_query_the_lms_missed_is_asked_again() -> None:
    """A stock MN arrives at AR2 while the LMs is down (restarting): AR2's
    LM:1-1 query for the MN's prefixes times out.  Asked again once the LMs
    is back, the answer names HNP1 and the session is served again.
    (Before, the MN kept only what its RS named - nothing - for good.)"""
    w = world("tunnel", hold_timeout=5.0)
    cont = downlink("cont", IP1, 0.1, 5.0)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    w.net.call_at(0.49, lambda: w.net.down.add(LMS[0]))
    move_stock(w, 0.5, 0.03, HNP2)
    w.net.call_at(1.5, lambda: w.net.down.discard(LMS[0]))
    w.net.run(until=5.5)
    counters = w.ar[2].stats.counters
    assert counters["mn-query-failed"] >= 1 and counters["kept-by-lm"] == 1, counters
    assert _received_after(w, cont.name, 4.5) >= 0.4 * cont.rate
    # (AR1 held what came meanwhile, up to its hold's limit: the rest is lost.)
    assert report(w.fab, cont).duplicates == 0


def test_a_discovery_a_restarted_controller_cannot_answer_yet_is_asked_again() -> None:
    """A controller that lost its registrations answers FM:4-3 with
    UNKNOWN_PREFIX until HNP1's anchor registers again: the claim asks
    again instead of giving up on the first answer."""
    w = world("tunnel", lifetime=4)
    cont = downlink("cont", IP1, 0.1, 4.0)
    start_flow(w.fab, cont)

    def restarted() -> None:
        w.ctrl.registry = PrefixTable()  # what a restart loses until re-registered
    w.net.call_at(0.45, restarted)
    w.move(0.5, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.net.run(until=4.5)
    counters = w.ar[2].stats.counters
    assert counters["failed:ANCHOR_DISCOVERY"] >= 1 and counters["claim-retry"] >= 1, counters
    assert _received_after(w, cont.name, 3.5) >= 0.4 * cont.rate


def test_a_flow_state_transfer_sent_again_is_counted_once() -> None:
    """FM:2 whose answer was lost is sent again by the old point (a new
    request, the same transfer id): the new point answers it without adding
    the charges twice; another transfer of the same counters is added."""
    from dmanchor.wire import messages as m
    from dmanchor.wire.types import FlowState

    w = world("tunnel")
    cont = downlink("cont", IP1, 0.1, 0.2)
    flow = filter_of(cont)
    states = (FlowState(flow, 0, 100, 2000, 1, 20),)
    ar1, ar2 = w.ar[1], w.ar[2]
    to_ar2 = ("fc00::2:0", 5400)

    def send(transfer: int) -> None:
        ar1.endpoint.request(m.FlowStateTransfer(HNP1, states, transfer), to_ar2, w.net.now)
        w.net.poll(("fc00::1:0", 5400))
    for at, transfer in ((0.5, 7), (0.6, 7), (0.7, 8)):
        w.net.call_at(at, partial(send, transfer))
    w.net.run(until=1.0)
    assert ar2.stats.counters["flow-state-repeat"] == 1
    assert ar2.dp.usage(flow).packets_down == 2 * 20  # transfers 7 and 8, 7 once


def test_a_flow_held_while_its_claim_waits_is_not_taken_for_ended() -> None:
    """The controller is unreachable from just before the move until 2 s:
    AR1 holds HNP1's packets meanwhile (FM:6-1), so none of them is charged
    there.  Its flow sweeps must not take the flow for idle and end it: its
    charges would stay at AR1, out of FM:2 (630 of 4500 uncharged at the MN's
    router on real kernels).  Charging stays exact across the move."""
    from dmanchor.dataplane.api import BufferSpec

    w = world("tunnel", flow_idle=0.3, buffer=BufferSpec(10_000, 5.0))
    cont = downlink("cont", IP1, 0.15, 3.0)  # (charged from its first packet)
    flt = filter_of(cont)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    w.net.call_at(0.49, lambda: w.net.down.add(CTRL[0]))
    w.move(0.5, 0.03, HNP2, previous={HNP1: [flt]})
    for t in (0.6, 1.0, 1.4, 1.8):  # the node's flow sweeps (conntrack, counters)
        w.at(t, 1, lambda a, now: a.conn_present(
            [], now, now, {flt: a.dp.usage(flt)}))
    w.net.call_at(2.0, lambda: w.net.down.discard(CTRL[0]))
    w.net.run(until=4.0)
    rep = report(w.fab, cont)
    assert rep.lost == 0 and w.ar[2].stats.counters["claim-retry"] >= 1, rep
    assert w.fab.routers["ar2"].usage(flt).packets_down == rep.delivered


def test_a_home_anchor_asks_again_for_its_prefix_from_a_point_that_was_down() -> None:
    """A -> B -> A with B's control down as the MN comes home: HNP1's anchor
    asks B for it (FM:6-2 to its flush SID) in vain, and lifts its hold at
    last.  It asks again later: once B answers, B hands the flows' charges
    back (FM:2) - before, they stayed at B, and charging came up short."""
    w = world("tunnel")
    cont = downlink("cont", IP1, 0.15, 4.0)
    flt = filter_of(cont)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    w.move(0.5, 0.03, HNP2, previous={HNP1: [flt]})
    w.net.call_at(0.99, lambda: w.net.down.add("fc00::2:0"))
    w.move(1.0, 0.03, HNP1, previous={}, src=2, dst=1)
    w.at(1.031, 1, lambda a, now: a.conn_events(opened(cont), now))  # its conntrack, back home
    w.net.call_at(3.0, lambda: w.net.down.discard("fc00::2:0"))
    w.net.run(until=6.0)
    rep = report(w.fab, cont)
    assert rep.duplicates == 0, rep
    assert w.fab.routers["ar1"].usage(flt).packets_down == rep.delivered


def test_a_home_anchor_relearns_flows_whose_state_died_with_the_point_it_came_from() -> None:
    """A -> B -> A -> C, stock MN.  B answers A's FM:6-2 as the MN comes
    home, then dies before its FM:2 (the flows' state and charges) goes out
    (``fault-moves`` on real kernels: killed at that moment).  A's conntrack
    still shows the flow: A learns it again, and any update of its binding
    carries the flow.  Before, A counted none: on real kernels its next
    update told the LMs HNP1 carried nothing, the next router did not keep
    it, and the session stalled 2.3 s until the MN came back to A.  A also
    asks B again for the charges (B stays dead here: those are lost)."""
    w = world("tunnel", n=3)
    trace = Trace(w.net)
    cont = downlink("cont", IP1, 0.1, 3.0)
    conns = [ev.conn for ev in opened(cont)]
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    move_stock(w, 0.5, 0.02, HNP2)
    move_stock(w, 1.0, 0.02, HNP1, src=2, dst=1)

    def dies_after_answering(at: float, src: Addr, dst: Addr, data: bytes) -> None:
        # B answers this FM:6-2 as it is delivered, and is down before the
        # timer sending FM:2 fires.
        if dst[0] == "fc00::2:0" and at >= 1.0 and isinstance(decode(data).message,
                                                              m.BufferReady):
            w.net.call_at(at, lambda: w.net.down.add("fc00::2:0"))
    w.net.taps.append(dies_after_answering)
    for t in (1.2, 1.4):  # A's flow sweeps: its conntrack has the flow
        w.at(t, 1, lambda a, now: a.conn_present(conns, now, now))
    move_stock(w, 1.6, 0.02, HNP3, src=1, dst=3)
    w.net.run(until=3.5)
    counters = w.ar[1].stats.counters
    assert counters["flow-relearned"] == 1 and counters["flow-state-asked-again"] == 1, counters
    reply = trace.assert_order([("lms", "ar3", "MN_REPLY")], since=1.6)[0].message
    assert isinstance(reply, m.MnReply)
    assert (HNP1, A("fc00::1:0"), 1) in {(b.prefix, b.forwarding_address, b.flows)
                                         for b in reply.bindings}
    assert HNP1 in w.ar[3].visiting
    assert _received_after(w, cont.name, 2.5) >= 0.4 * cont.rate * 0.5  # served at C


def _moved_with_own_member_dead(dead: bool) -> tuple[World, Flow]:
    """Fig 1a's pool: a stock MN with a continuity flow on HNP1 moves to
    AR2 at 0.5 s; AR2's own pool member (lms-2) is killed just before, if
    ``dead``."""
    w = world("tunnel", lm="pool", hold_timeout=5.0)
    cont = downlink("cont", IP1, 0.1, 5.0)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    if dead:
        w.net.call_at(0.49, lambda: w.net.remove(("fc00::2:0", 5401)))
    move_stock(w, 0.5, 0.03, HNP2)
    w.net.run(until=5.5)
    return w, cont


def test_an_anchor_asks_the_next_pool_member_when_its_own_is_dead() -> None:
    """Issue 16 item 7: AR2's LM:1-1 by MN times out at its dead member and
    goes on to lms-1, which answers that HNP1 is the MN's and busy; AR2
    keeps HNP1 and the session is served there.  lms-1 is used from then
    on, and AR2 subscribes and registers again there.  (Before, AR2 asked
    only its own member: the MN kept nothing and the session was lost.)"""
    w, cont = _moved_with_own_member_dead(True)
    counters = w.ar[2].stats.counters
    assert counters["lms-failover"] >= 1 and counters["lms-switched"] == 1, counters
    assert counters["kept-by-lm"] == 1, counters
    assert w.ar[2].lm is not None and w.ar[2].lm.pool.current == ("fc00::1:0", 5401)
    assert _received_after(w, cont.name, 4.5) >= 0.4 * cont.rate
    assert report(w.fab, cont).duplicates == 0
    # AR2's subscription to its MN's prefix lives at lms-1, which pushes to it.
    assert ("fc00::2:0", 5400) in w.members[1].subs.live(HNP2, w.net.now)
    # lms-1's gather of the MN's bindings found lms-2 silent: down at once,
    # not asked again until it is heard from (its heartbeats).
    assert w.members[1].counters["member-down-silent"] == 1, w.members[1].counters


def test_an_anchor_keeps_its_own_pool_member_while_it_answers() -> None:
    """The control: with its member alive, AR2 never fails over."""
    w, cont = _moved_with_own_member_dead(False)
    counters = w.ar[2].stats.counters
    assert counters["lms-failover"] == 0 and counters["lms-switched"] == 0, counters
    assert counters["kept-by-lm"] == 1, counters
    assert _received_after(w, cont.name, 4.5) >= 0.4 * cont.rate


def test_charges_that_reach_a_point_after_it_handed_the_prefix_on_follow_it() -> None:
    """FM:2 racing a move: AR1's transfer of HNP1's charges reaches AR2
    after the MN went back home to AR1 and AR2 had handed HNP1 there (seen
    on real kernels in ``fault-moves``: the claim at AR2 waited for a
    restarting controller, the MN left meanwhile, and AR2 took its charges
    to hand on a moment before AR1's arrived: 553 packets delivered were
    never charged).  AR2 passes them on to where it tunnels HNP1."""
    from dmanchor.wire.types import FlowState

    w = world("tunnel")
    cont = downlink("cont", IP1, 0.1, 2.0)
    flt = filter_of(cont)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    w.move(0.5, 0.03, HNP2, previous={HNP1: [flt]})
    w.move(1.0, 0.03, HNP1, previous={}, src=2, dst=1)
    w.net.run(until=1.3)
    ar1, ar2 = w.ar[1], w.ar[2]
    before = ar1.dp.usage(flt).packets_down
    late = m.FlowStateTransfer(HNP1, (FlowState(flt, 0, 100, 2000, 1, 20),), 99)

    def send() -> None:
        ar1.endpoint.request(late, ("fc00::2:0", 5400), w.net.now)
        w.net.poll(("fc00::1:0", 5400))
    w.net.call_at(1.3, send)
    w.net.run(until=1.6)
    assert ar2.stats.counters["flow-state-passed-on"] == 1, ar2.stats.counters
    assert ar2.dp.usage(flt).packets_down == 0
    assert ar1.dp.usage(flt).packets_down >= before + 20


def _switched_with_controller_member_dead(dead: bool) -> tuple[World, Flow]:
    """4.2.1 over Fig 1a's pool: the controller subscribes through lms-2
    (lms-1 behind it); lms-2 is killed just before the MN, with a
    continuity flow on HNP1 (lms-1 is its primary), moves to AR2, if
    ``dead``."""
    # The controller renews every 3 s: it finds lms-2 dead only after AR2
    # has failed over to lms-1 and updated HNP1's binding there (twice: at
    # the move, and again on switching members).
    w = world("switch", lm="pool", hold_timeout=5.0, lms_check=3.0)
    cont = downlink("cont", IP1, 0.1, 6.0)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    if dead:
        w.net.call_at(0.49, lambda: w.net.remove(("fc00::2:0", 5401)))
    w.move(0.5005, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.net.run(until=6.5)
    return w, cont


def test_the_controller_learns_a_move_its_dead_pool_member_never_pushed() -> None:
    """Issue 16 item 7, the controller's side: lms-2, the member the
    controller uses, dies just before the move, so the push of AR2's new
    binding for HNP1 comes only through lms-1, where the controller also
    subscribed.  Kept until lms-2 is found silent (its renewal times out
    and goes to lms-1), it is believed then: the core is switched to AR2
    and the session continues.  (Subscribed at one member and failing over
    at the next renewal, the move would have been learnt only at AR2's
    next refresh, minutes later.)"""
    w, cont = _switched_with_controller_member_dead(True)
    c = w.ctrl.counters
    assert c["lms-switched"] == 1 and c["inform-recovered"] >= 1, c
    assert w.ctrl.lm is not None and w.ctrl.lm.pool.current == ("fc00::1:0", 5401)
    assert w.ctrl.moved.get(HNP1) == A("fc00::2:0")
    assert _received_after(w, cont.name, 5.5) >= 0.4 * cont.rate * 0.5
    assert report(w.fab, cont).duplicates == 0


def test_the_controller_believes_only_its_member_in_use_while_it_answers() -> None:
    """The control: lms-2 alive, the controller never fails over; the copy
    of each push that lms-1 sends it is kept, not acted on twice."""
    w, cont = _switched_with_controller_member_dead(False)
    c = w.ctrl.counters
    assert c["lms-switched"] == 0 and c["lms-failover"] == 0, c
    assert c["inform-kept"] >= 1 and c["inform-recovered"] == 0, c
    assert w.ctrl.moved.get(HNP1) == A("fc00::2:0")
    assert _received_after(w, cont.name, 5.5) >= 0.4 * cont.rate * 0.5


def _restart_agent(w: World, i: int) -> None:
    """Agent ``i`` dies and starts again (``kill -9``): a new core with the
    same settings over the same data plane, whose state the kernel kept."""
    from dmanchor.fm.anchor import AnchorAgentCore
    from dmanchor.transport.reliable import Endpoint

    addr = (f"fc00::{i}:0", 5400)
    w.net.remove(addr)
    w.ar[i] = AnchorAgentCore(w.ar[i].s, w.fab.routers[f"ar{i}"], Endpoint(), w.net.now)
    w.net.add(addr, w.ar[i])


def _kept_then_gone(w: World, cont: Flow) -> None:
    """Run on: the session loses nothing, and once it has ended nothing of
    HNP1 is left at AR1 or AR2."""
    w.net.run(until=5.0)
    rep = report(w.fab, cont)
    assert rep.lost == 0 and rep.duplicates == 0, rep
    for name in ("ar1", "ar2"):
        left = [e for e in w.fab.routers[name].entries() if e.prefix == HNP1]
        assert left == [], (name, left)


def test_a_restarted_home_anchor_takes_down_the_tunnel_of_a_session_that_ended() -> None:
    """4.1.2: HNP1's home (AR1) tunnels it to AR2 for a kept session; AR1's
    agent is restarted meanwhile (the kernel keeps the tunnel).  The session
    goes on, and when it ends at AR2, the tunnel at AR1 goes too - the
    restarted agent learns what it anchors from its kernel and the LMs."""
    w = world("tunnel", lifetime=1)
    cont = downlink("cont", IP1, 0.1, 1.5)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    w.move(0.5, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.net.call_at(1.0, lambda: _restart_agent(w, 1))
    w.at(1.6, 2, lambda a, now: a.flows_closed(HNP1, now))
    _kept_then_gone(w, cont)


def test_a_restarted_visited_router_lets_go_of_a_session_that_ended() -> None:
    """4.1.2, stock MN: AR2 serves HNP1 for a kept session (AR1 tunnels it
    there) and its agent is restarted meanwhile.  As on a real node, the
    restarted agent hears the MN on its link again (the kernel's neighbour
    table) and relearns the flow from conntrack.  The session goes on; when
    it ends, nothing of HNP1 is left at AR1 or AR2."""
    w = world("tunnel", lifetime=1)
    cont = downlink("cont", IP1, 0.1, 1.5)
    conns = [ev.conn for ev in opened(cont)]
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    move_stock(w, 0.5, 0.03, HNP2)
    w.net.call_at(1.0, lambda: _restart_agent(w, 2))
    w.at(1.02, 2, lambda a, now: a.arrive("mn", "mn2", [HNP2], [], now))
    for t in (1.1, 1.3):  # AR2's flow sweeps: its conntrack has the flow
        w.at(t, 2, lambda a, now: a.conn_present(conns, now, now))
    w.at(1.6, 2, lambda a, now: a.flows_closed(HNP1, now))
    _kept_then_gone(w, cont)


def test_a_subscription_keeps_other_members_pushes_within_a_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pushes kept from members not in use are bounded (one per prefix,
    at most MAX_KEPT): beyond, they are counted, not kept."""
    from dmanchor.lm import pool
    from dmanchor.lm.pool import PoolRequests, PoolSubscription, Push
    from dmanchor.transport.reliable import Endpoint
    from dmanchor.wire.types import Prefix

    monkeypatch.setattr(pool, "MAX_KEPT", 2)
    in_use, other = ("fc00::1:0", 5401), ("fc00::2:0", 5401)
    sub = PoolSubscription(PoolRequests(Endpoint(), [in_use, other]), (), 600)
    pushes = [Push(Prefix.parse(f"2001:db8:1:{i}::/64"), A("fc00::2:0"), 60) for i in range(4)]
    for p in pushes:
        assert sub.pushed(other, p) is None
    assert sub.dropped == 2
    assert sub.pushed(in_use, pushes[0]) == pushes[0]  # the member in use: believed


def test_a_restarted_chain_point_ends_its_leftover_tunnel() -> None:
    """4.1.2, A -> B -> C: after the second move AR2 keeps a leftover tunnel
    to AR3 (in-flight packets follow the MN), ended by a timer - which its
    agent, restarted just after, no longer has.  The restart sweep asks the
    LMs: HNP1 is bound at AR3, where the tunnel leads, so the leftover is
    ended as it would have been.  The session loses nothing."""
    w = world("tunnel", lifetime=1, n=3)
    cont = downlink("cont", IP1, 0.1, 2.5)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    w.move(0.5, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.move(1.0, 0.03, HNP3, previous={HNP1: [filter_of(cont)]}, src=2, dst=3)
    w.net.call_at(1.1, lambda: _restart_agent(w, 2))
    w.net.run(until=2.0)
    leftover = [e for e in w.fab.routers["ar2"].entries() if e.prefix == HNP1]
    assert [e.kind for e in leftover] == [EntryKind.TUNNEL]  # still there, no timer for it
    w.at(2.6, 3, lambda a, now: a.flows_closed(HNP1, now))
    w.net.run(until=6.0)
    rep = report(w.fab, cont)
    assert rep.lost == 0 and rep.duplicates == 0, rep
    assert [e for e in w.fab.routers["ar2"].entries() if e.prefix == HNP1] == []
    assert w.ar[2].stats.counters["sweep-leftover"] == 1


def test_a_home_restarted_after_its_session_ended_removes_the_stale_tunnel() -> None:
    """4.1.2: AR1 tunnels HNP1 to AR2 and goes down; the session ends while
    it is down, so the revert (FM:1) never reaches it.  Restarted long after,
    its kernel still has the tunnel: the sweep finds HNP1 bound nowhere and
    removes it.  (Kept before: nothing else would ever end it.)"""
    w = world("tunnel", lifetime=1)
    cont = downlink("cont", IP1, 0.1, 1.0)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    w.move(0.5, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.net.call_at(1.1, lambda: w.net.remove(("fc00::1:0", 5400)))
    w.at(1.2, 2, lambda a, now: a.flows_closed(HNP1, now))
    w.net.call_at(20.0, lambda: _restart_agent(w, 1))
    w.net.run(until=21.0)
    assert [e.kind for e in w.fab.routers["ar1"].entries()
            if e.prefix == HNP1] == [EntryKind.TUNNEL]
    w.net.run(until=24.0)
    assert [e for e in w.fab.routers["ar1"].entries() if e.prefix == HNP1] == []
    assert w.ar[1].stats.counters["sweep-removed"] == 1


def test_a_restarted_router_keeps_what_its_binding_says_it_serves() -> None:
    """The sweep's other side: AR2's agent restarts while it serves HNP1 and
    its MN stays silent (not heard again on the link).  The LMs binds HNP1
    at AR2, so its route stays and the session goes on."""
    w = world("tunnel", lifetime=5)
    cont = downlink("cont", IP1, 0.1, 4.0)
    w.ar[1].conn_events(opened(cont), 0.0)
    start_flow(w.fab, cont)
    move_stock(w, 0.5, 0.03, HNP2)
    w.net.call_at(1.0, lambda: _restart_agent(w, 2))
    w.net.run(until=4.0)
    assert w.ar[2].stats.counters["sweep-kept"] == 1
    assert w.ar[2].stats.counters["sweep-removed"] == 0
    assert [e.kind for e in w.fab.routers["ar2"].entries()
            if e.prefix == HNP1] == [EntryKind.ANCHOR]
    # Delivered all along after the sweep (at 3 s), as before it.
    assert _received_after(w, cont.name, 3.1) >= 0.95 * cont.rate * (4.0 - 3.1)
