"""Predictive handover (HI/HAck): the MN's router tells the router it goes to.

Driven like the call flows of ``test_call_flows.py``: the project's cores
in virtual time, the order of the messages on the wire asserted.  The old
router's L2 names the target before the link goes (``leaving``), then the
MN's link goes (FM:6-1 holds) and it solicits at the target as a stock host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv6Address as A

from dmanchor.dataplane.api import BufferSpec
from dmanchor.fm.anchor import AnchorAgentCore
from dmanchor.fm.anchor_model import PrefixEvent as Ev
from dmanchor.fm.anchor_model import PrefixState as St
from dmanchor.fm.anchor_predict import MAX_HI_PREFIXES, PREPARED_FOR, Expectation, ExpectedMns
from dmanchor.sim.traffic import Flow, report, start_flow
from dmanchor.wire import messages as m
from dmanchor.wire.types import EntryKind, ForwardingEntry, MnBinding, Prefix
from tests.unit.test_call_flows import HNP3, Trace, about, life_of, record_lives
from tests.unit.test_fm import (
    HNP1,
    HNP2,
    IP1,
    LMS,
    World,
    assert_lossless,
    downlink,
    opened,
    world,
)

IDS = {A("fc00::1:0"): "ar1", A("fc00::2:0"): "ar2"}
AR2 = ("fc00::2:0", 5400)


def announced_move(w: World, t: float, gap: float, target: str = "ar2",
                   hint_after: float | None = None) -> None:
    """The MN's L2 at AR1 names ``target`` at ``t`` (or ``hint_after``
    seconds after the MN came up there), its link goes, and it solicits at
    AR2 ``gap`` later with a plain RS."""
    def down() -> None:
        w.fab.detach("mn")

    def up() -> None:
        w.fab.attach("mn", "ar2", "mn2")
        w.fab.add_address("mn", HNP2.network + 0x10)

    def leave(a: AnchorAgentCore, now: float) -> None:
        if hint_after is None:
            a.leaving("mn", target, now)
        a.detach("mn", now)
    w.net.call_at(t, down)
    w.at(t, 1, leave)
    w.net.call_at(t + gap, up)
    w.at(t + gap, 2, lambda a, now: a.arrive("mn", "mn2", [HNP2], [], now))
    if hint_after is not None:
        # (AR1 still tells of the MN it had: the HI is built from what was
        # attached, so a late one is sent from a copy kept here.)
        late = m.HandoverInitiate("mn", (MnBinding(HNP1, A("fc00::1:0"), 600, 1),))
        w.at(t + gap + hint_after, 1, lambda a, now: send(a, late, now))


def send(agent: AnchorAgentCore, msg: m.Message, now: float) -> None:
    """``agent`` sends ``msg`` to AR2 under its own key."""
    agent.endpoint.request(msg, AR2, now)


def with_flow(stop: float = 1.2) -> tuple[World, Trace, Flow]:
    """The signed flat network; a flow needing continuity on HNP1, which
    AR1's conntrack reports."""
    w = world("tunnel", signed=True, agent_ids=IDS)
    record_lives(w)
    trace = Trace(w.net)
    cont = downlink("cont", IP1, 0.1, stop)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    return w, trace, cont


def test_the_target_claims_at_the_arrival_without_waiting_for_the_lms() -> None:
    w, trace, flow = with_flow()
    announced_move(w, 0.5, 0.02)
    w.net.run(until=2.0)
    seq = trace.assert_order([
        ("ar1", "ar2", "HANDOVER_INITIATE"),  # HI: the MN comes, HNP1 carries a flow
        ("ar2", "ar1", "HANDOVER_ACK"),
        ("ar2", "ctrl", "ANCHOR_DISCOVERY"),  # FM:4-3 asked ahead of the MN
        ("ctrl", "ar2", "DISCOVERY_ANSWER"),
        ("ar2", "lms", "MN_QUERY"),           # the MN solicits: LM:1-1 still asked
        ("ar2", "ar1", "BUFFER_READY"),       # FM:6-2 at once, from the HI's context
        ("lms", "ar2", "MN_REPLY"),           # ... before the LMs's answer
        ("ar1", "ar2", "BUFFER_READY_ACK"),
        ("ar1", "ar2", "FLOW_STATE_TRANSFER"),  # FM:2: charging moves as usual
    ], since=0.5)
    hi = seq[0].message
    assert isinstance(hi, m.HandoverInitiate)
    assert [(b.prefix, b.forwarding_address, b.flows) for b in hi.bindings] == \
        [(HNP1, A("fc00::1:0"), 1)]
    assert seq[3].t < 0.52 <= seq[4].t  # the discovery was done before the MN came
    # Nothing asked twice: one discovery, one FM:6-2 to AR1.
    assert trace.count("ANCHOR_DISCOVERY", since=0.5) == 1
    assert trace.count("BUFFER_READY", since=0.5) == 1
    assert w.ar[1].stats.counters["hi-sent"] == 1
    assert w.ar[2].stats.counters["hi-used"] == 1
    assert len(w.ar[2].expected) == 0
    assert_lossless(report(w.fab, flow))
    assert life_of(w.ar[2], HNP1)[:2] == [(Ev.KEPT, St.JOINING), (Ev.CLAIMED, St.VISITING)]
    assert w.ar[2].attached["mn"].visiting == (HNP1,)


def test_a_hi_that_comes_after_its_mn_still_goes_ahead_of_the_lms() -> None:
    w, trace, flow = with_flow()
    announced_move(w, 0.5, 0.02, hint_after=0.0)
    w.net.run(until=2.0)
    trace.assert_order([
        ("ar2", "lms", "MN_QUERY"),
        ("ar1", "ar2", "HANDOVER_INITIATE"),
        ("ar2", "ctrl", "ANCHOR_DISCOVERY"),  # the claim starts from the HI
        ("ar2", "ar1", "BUFFER_READY"),
    ], since=0.5)
    counters = w.ar[2].stats.counters
    assert (counters["hi-late"], counters["kept-by-hi"], counters["kept-by-lm"]) == (1, 1, 0)
    assert trace.count("BUFFER_READY", since=0.5) == 1
    assert_lossless(report(w.fab, flow))


def test_an_mn_that_never_comes_is_forgotten_and_its_next_router_asks_the_lms() -> None:
    w, trace, _ = with_flow()
    # The L2 named AR2, but the MN came up there only after the HI expired.
    announced_move(w, 0.5, PREPARED_FOR + 0.1)
    w.net.run(until=0.5 + PREPARED_FOR + 0.05)
    assert w.ar[2].stats.counters["hi-unused"] == 1 and len(w.ar[2].expected) == 0
    w.net.run(until=0.5 + PREPARED_FOR + 1.0)
    trace.assert_order([
        ("ar2", "lms", "MN_QUERY"),
        ("lms", "ar2", "MN_REPLY"),
        ("ar2", "ar1", "BUFFER_READY"),  # reactive: after the LMs's answer
    ], since=0.5 + PREPARED_FOR)
    assert w.ar[2].stats.counters["hi-used"] == 0
    assert w.ar[2].attached["mn"].visiting == (HNP1,)


def test_a_hi_naming_what_its_sender_does_not_serve_is_refused() -> None:
    w, _, _ = with_flow()
    # AR1 names a prefix as served at AR2 (not its own DPA): refused.
    lie = m.HandoverInitiate("mn", (MnBinding(HNP1, A("fc00::2:0"), 600, 1),))
    w.at(0.3, 1, lambda a, now: send(a, lie, now))
    w.net.run(until=0.6)
    assert w.ar[2].refused["refused:HANDOVER_INITIATE:not-its-prefix"] == 1
    # Its own flush SID is no DPA: nothing is served there.
    flush = m.HandoverInitiate("mn", (MnBinding(HNP1, A("fc00::1:1"), 600, 1),))
    w.at(0.65, 1, lambda a, now: send(a, flush, now))
    assert len(w.ar[2].expected) == 0
    # The true binding, but sent by the LMs: not an anchor's key, refused
    # by the sender table before the anchor reads it.
    true = m.HandoverInitiate("mn", (MnBinding(HNP1, A("fc00::1:0"), 600, 1),))

    def from_lms() -> None:
        w.lms.endpoint.request(true, AR2, w.net.now)
        w.net.poll(LMS)
    w.net.call_at(0.7, from_lms)
    w.net.run(until=1.0)
    assert w.ar[2].refused["refused:HANDOVER_INITIATE:not-a-dpa"] == 1
    assert sum(w.ar[2].refused.values()) == 3
    assert len(w.ar[2].expected) == 0 and w.ar[2].stats.counters["hi-expected"] == 0


def test_an_unknown_target_sends_nothing() -> None:
    w, trace, flow = with_flow()
    announced_move(w, 0.5, 0.02, target="ar9")
    w.net.run(until=2.0)
    assert trace.count("HANDOVER_INITIATE") == 0
    assert w.ar[1].stats.counters["hi-sent"] == 0
    assert_lossless(report(w.fab, flow))


def test_expectations_are_bounded() -> None:
    book = ExpectedMns(limit=2)
    b = (MnBinding(HNP1, A("fc00::1:0"), 600, 1),)
    e = Expectation(b, (), 1.0)
    assert book.put("a", e) == 0 and book.put("b", e) == 0
    assert book.put("c", e) == 1  # "a" forgotten
    assert book.take("a", 0.5) is None and book.take("c", 0.5) == e
    assert book.take("b", 1.5) is None  # expired
    book.put("d", Expectation(b, (), 2.0))
    assert not book.forget("d", 1.0) and book.forget("d", 2.0)  # only its own timer


# -- Prepared: the target holds the prefix and claims it before the MN comes ---------


def anchor_known(w: World, at: int = 2) -> None:
    """AR``at`` already knows HNP1's anchor (FM:4-4 kept from an earlier move)."""
    w.at(0.1, at, lambda a, now: a.anchors.put(
        m.DiscoveryAnswer(HNP1, A("fc00::1:0"), A("fc00::1:0"), "ar1"), now))


def test_a_prefix_its_anchor_announces_is_drawn_to_the_target_before_the_mn() -> None:
    """HNP1's anchor is the router the MN leaves, and AR2 knows it: AR2
    holds HNP1 and claims it at the HI (FM:6-2, the binding); AR1 tunnels
    what it held and all that follows into AR2's hold; the MN's arrival
    only puts HNP1 on its link (the hold lifts there) - before HNP2, the
    prefix AR2 gives it, whose anchoring would hold the lift up."""
    w, trace, flow = with_flow()
    anchor_known(w)
    announced_move(w, 0.5, 0.02)
    linked: list[Prefix] = []
    apply = w.ar[2].dp.apply

    def record(add: Sequence[ForwardingEntry], delete: Sequence[ForwardingEntry], now: float,
               buffers: Mapping[Prefix, BufferSpec] | None = None) -> None:
        linked.extend(e.prefix for e in add if e.kind is EntryKind.ANCHOR)
        apply(add, delete, now, buffers)
    w.ar[2].dp.apply = record  # type: ignore[method-assign]
    w.net.run(until=2.0)
    assert linked[:2] == [HNP1, HNP2]
    seq = trace.assert_order([
        ("ar1", "ar2", "HANDOVER_INITIATE"),
        ("ar2", "ar1", "BUFFER_READY"),         # FM:6-2 before the MN is there
        ("ar2", "lms", "LOCATION_UPDATE", about(HNP1, forwarding_address=A("fc00::2:0"))),
        ("ar1", "ar2", "FLOW_STATE_TRANSFER"),  # FM:2: its flows' state, ahead too
        ("ar2", "lms", "MN_QUERY"),             # the MN solicits
    ], since=0.5)
    assert seq[3].t < 0.52 <= seq[4].t
    assert trace.count("ANCHOR_DISCOVERY", since=0.5) == 0  # (its anchor was known)
    assert trace.count("BUFFER_READY", since=0.5) == 1
    counters = w.ar[2].stats.counters
    assert (counters["hi-prepared"], counters["prepared-used"]) == (1, 1)
    assert w.ar[2].attached["mn"].visiting == (HNP1,)
    assert w.ar[2].flows.count(HNP1) == 1  # the flow came with FM:2, and stays counted
    rep = report(w.fab, flow)
    assert_lossless(rep)
    assert ("cn", "r", "ar1", "r", "ar2", "mn") in rep.paths
    assert life_of(w.ar[2], HNP1)[:2] == [(Ev.KEPT, St.JOINING), (Ev.CLAIMED, St.VISITING)]


def test_a_prepared_prefix_whose_mn_comes_late_is_dropped_then_put_on_its_link() -> None:
    """The MN comes only after the HI expired: what AR2 held is dropped (as
    AR1's hold would have been), HNP1 stays served at AR2; when the MN
    comes, the LMs's answer puts it on its link."""
    w, _, flow = with_flow(stop=3.5)
    anchor_known(w)
    announced_move(w, 0.5, PREPARED_FOR + 0.2)
    w.net.run(until=0.5 + PREPARED_FOR + 1.5)
    counters = w.ar[2].stats.counters
    assert (counters["hi-prepared"], counters["prepared-dropped"],
            counters["prepared-used"]) == (1, 1, 1)
    assert w.ar[2].attached["mn"].visiting == (HNP1,)
    rep = report(w.fab, flow)
    assert rep.lost > 0 and rep.duplicates == 0 and rep.reordered == 0
    assert ("cn", "r", "ar1", "r", "ar2", "mn") in rep.paths  # delivered once it came


def test_a_prepared_prefix_whose_mn_goes_elsewhere_follows_it() -> None:
    """The L2 named AR2, but the MN comes up at AR3: AR3 learns from the
    LMs that HNP1 is served at AR2 and claims it from there and from its
    anchor; AR2, which held it for the MN, sends it on."""
    ids = {**IDS, A("fc00::3:0"): "ar3"}
    w = world("tunnel", signed=True, agent_ids=ids, n=3)
    trace = Trace(w.net)
    flow = downlink("cont", IP1, 0.1, 1.2)
    start_flow(w.fab, flow)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(flow), now))
    anchor_known(w)

    def up() -> None:
        w.fab.attach("mn", "ar3", "mn3")
        w.fab.add_address("mn", HNP3.network + 0x10)

    def leave(a: AnchorAgentCore, now: float) -> None:
        a.leaving("mn", "ar2", now)
        a.detach("mn", now)
    w.net.call_at(0.5, lambda: w.fab.detach("mn"))
    w.at(0.5, 1, leave)
    w.net.call_at(0.52, up)
    w.at(0.52, 3, lambda a, now: a.arrive("mn", "mn3", [HNP3], [], now))
    w.net.run(until=2.0)
    trace.assert_order([
        ("ar2", "ar1", "BUFFER_READY"),  # prepared at the HI
        ("ar3", "lms", "MN_QUERY"),
        ("lms", "ar3", "MN_REPLY"),      # HNP1 at AR2
        ("ar3", "ar2", "BUFFER_READY"),  # what AR2 held comes to AR3
    ], since=0.5)
    assert w.ar[2].stats.counters["prepared-passed-on"] == 1
    assert HNP1 not in w.ar[2].visiting and len(w.ar[2].expected) == 1
    assert w.ar[3].attached["mn"].visiting == (HNP1,)
    rep = report(w.fab, flow)
    assert (rep.lost, rep.duplicates) == (0, 0)


def test_a_ping_pong_prepares_each_move_away_from_the_anchor() -> None:
    """AR1 -> AR2 -> AR1 -> AR2, every move announced with its target: the
    first away from HNP1's anchor finds its anchor (FM:4-3 ahead), the
    second is prepared - though AR2 still had HNP1's leftover path towards
    AR1 from the way back.  Nothing is lost, duplicated or reordered."""
    w, trace, flow = with_flow(stop=1.6)

    def hop(t: float, src: int, dst: int) -> None:
        def leave(a: AnchorAgentCore, now: float) -> None:
            a.leaving("mn", f"ar{dst}", now)
            a.detach("mn", now)
        own = HNP1 if dst == 1 else HNP2
        w.net.call_at(t, lambda: w.fab.detach("mn"))
        w.at(t, src, leave)

        def up() -> None:
            w.fab.attach("mn", f"ar{dst}", f"mn{dst}")
            w.fab.add_address("mn", own.network + 0x10)
        w.net.call_at(t + 0.02, up)
        w.at(t + 0.02, dst, lambda a, now: a.arrive("mn", f"mn{dst}", [own], [], now))
    hop(0.5, 1, 2)
    hop(0.8, 2, 1)
    hop(1.2, 1, 2)
    w.net.run(until=2.5)
    assert w.ar[2].stats.counters["hi-prepared"] == 1
    assert w.ar[2].stats.counters["prepared-used"] == 1
    # The second time, AR2's FM:6-2 went before the MN was there.
    claim = trace.assert_order([("ar2", "ar1", "BUFFER_READY")], since=1.2)[0]
    assert claim.t < 1.22
    assert w.ar[2].attached["mn"].visiting == (HNP1,)
    assert_lossless(report(w.fab, flow))


def test_an_old_his_expiry_leaves_a_newer_preparation_alone() -> None:
    """A HI's context ends 2 s after it came; by then a ping-pong has had
    new HIs for the same MN.  Each one's expiry touches only what it
    prepared: the hold prepared by the latest stays."""
    book = ExpectedMns()
    b = (MnBinding(HNP1, A("fc00::1:0"), 600, 1),)
    book.put("mn", Expectation(b, (HNP1,), 2.5))
    assert book.newer("mn", 2.0) and not book.newer("mn", 2.5) and not book.newer("x", 0.0)
    w, _, _ = with_flow(stop=4.0)
    anchor_known(w)
    # A HI at 0.5 prepares HNP1 at AR2; the MN does not come (it arrives
    # after the run).  A later HI for the same MN (put here directly: it
    # ends at 4.4) is pending when the first one's timer fires, at 2.5.
    announced_move(w, 0.5, 5.0)
    def later_hi(a: AnchorAgentCore, now: float) -> None:
        a.expected.put("mn", Expectation((), (), now + PREPARED_FOR))
    w.at(2.4, 2, later_hi)
    w.net.run(until=2.6)
    assert w.ar[2].stats.counters["prepared-dropped"] == 0  # the later HI's, left alone


def test_a_hi_is_acted_on_for_a_bounded_number_of_prefixes() -> None:
    w, _, _ = with_flow()
    many = tuple(MnBinding(Prefix.parse(f"2001:db8:1:{i + 16:x}::/64"), A("fc00::1:0"), 600, 1)
                 for i in range(MAX_HI_PREFIXES + 6))
    w.at(0.3, 1, lambda a, now: send(a, m.HandoverInitiate("other", many), now))
    w.net.run(until=0.4)
    agent = w.ar[2]
    assert agent.stats.counters["hi-truncated"] == 1
    expected = agent.expected.take("other", w.net.now)
    assert expected is not None and len(expected.bindings) == MAX_HI_PREFIXES
