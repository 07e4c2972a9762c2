"""The draft's call flows with stock MNs, as ordered message sequences.

Each test drives the project's cores through one whole procedure in
virtual time, like aioquic's ``tests/test_connection.py`` drives two
connections, and asserts the order of the messages on the wire and the
routers' resulting state.  The MN is a stock host: its Router Solicitation
names no previous prefix, so the router it moves to learns the prefixes it
used elsewhere from the LMs (LM:1-1 by MN) and keeps those whose serving
point reports flows needing continuity on them (draft 4.1.1 vs 4.1.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address as A
from typing import Any

import pytest

from dmanchor.dataplane.conntrack import Change, ConnEvent
from dmanchor.fm.anchor import AnchorAgentCore
from dmanchor.fm.anchor_model import AnchorCache, Heard
from dmanchor.fm.anchor_model import PrefixEvent as Ev
from dmanchor.fm.anchor_model import PrefixState as St
from dmanchor.runtime.virtual import VirtualNetwork
from dmanchor.sim.traffic import Flow, report, start_flow
from dmanchor.transport.reliable import Addr
from dmanchor.wire import decode
from dmanchor.wire import messages as m
from dmanchor.wire.types import EntryKind, Prefix
from tests.unit.test_fm import (
    HNP1,
    HNP2,
    IP1,
    IP2,
    World,
    assert_lossless,
    downlink,
    opened,
    world,
)

HNP3 = Prefix.parse("2001:db8:3:1::/64")
NAMES = {"fc00::1:0": "ar1", "fc00::2:0": "ar2", "fc00::3:0": "ar3", "fc00::d": "lms",
         "fc00::c": "ctrl", "fc00::ff": "r"}


Step = tuple[str, str, str] | tuple[str, str, str, Callable[[Any], bool]]
"""(from, to, message type[, a test the message passes])."""


def about(prefix: Prefix, **fields: object) -> Callable[[Any], bool]:
    """A step's test: the message is about ``prefix`` with these field values."""
    def test(msg: Any) -> bool:
        return bool(getattr(msg, "prefix", None) == prefix
                    and all(getattr(msg, k) == v for k, v in fields.items()))
    return test


@dataclass(frozen=True)
class Seen:
    """One message delivered: when, from which node, to which, what."""

    t: float
    src: str
    dst: str
    message: m.Message

    @property
    def name(self) -> str:
        return self.message.TYPE.name


class Trace:
    """Every message the virtual network delivers, in delivery order."""

    def __init__(self, net: VirtualNetwork, names: dict[str, str] | None = None) -> None:
        """``names``: address -> node name (default: the flat network's)."""
        self.seen: list[Seen] = []
        self.names = NAMES if names is None else names
        net.taps.append(self._tap)

    def _tap(self, now: float, src: Addr, dst: Addr, data: bytes) -> None:
        name = self.names.get
        self.seen.append(Seen(now, name(src[0], src[0]), name(dst[0], dst[0]),
                              decode(data).message))

    def since(self, t: float) -> list[Seen]:
        return [s for s in self.seen if s.t >= t]

    def count(self, name: str, since: float = 0.0) -> int:
        return sum(1 for s in self.since(since) if s.name == name)

    def assert_order(self, steps: list[Step], since: float = 0.0) -> list[Seen]:
        """``steps`` - (from, to, message type[, test of the message]) - occur
        in this order (others may come between); returns the matches."""
        found: list[Seen] = []
        it = iter(self.since(since))
        for step in steps:
            src, dst, name = step[:3]
            test = step[3] if len(step) == 4 else None
            for s in it:
                if (s.src, s.dst, s.name) == (src, dst, name) and (
                        test is None or test(s.message)):
                    found.append(s)
                    break
            else:
                shown = "\n".join(f"  {s.t:.4f} {s.src} -> {s.dst} {s.name}"
                                  for s in self.since(since))
                raise AssertionError(f"no {src} -> {dst} {name} after {found[-1:]}; seen:\n"
                                     f"{shown}")
        return found


def life_of(agent: AnchorAgentCore, prefix: Prefix) -> list[tuple[Ev, St | None]]:
    """The (event, new state) steps ``prefix`` took at ``agent``."""
    assert agent.life.history is not None
    return [(t.event, t.after) for t in agent.life.history if t.prefix == prefix]


def record_lives(w: World) -> None:
    """Keep every agent's prefix transitions from now on."""
    for a in w.ar.values():
        a.life.history = []


def gone(flow: Flow) -> list[ConnEvent]:
    """What a router's conntrack reports when the flow's entry is destroyed."""
    return [ev._replace(change=Change.GONE) for ev in opened(flow)]


def sweeping(w: World, node: int, start: float, until: float, every: float = 0.25) -> None:
    """AR``node``'s periodic conntrack walk (it finds no entry) with its
    charging counters, as the node's flow watch does."""
    def sweep(a: AnchorAgentCore, now: float) -> None:
        a.conn_present([], now, now, a.dp.charges(Prefix.parse("::/0")))
    t = start
    while t < until:
        w.at(t, node, sweep)
        t += every


def move_stock(w: World, t: float, gap: float, own: Prefix, src: int = 1, dst: int = 2,
               mn: str = "mn") -> None:
    """The MN's radio goes from AR``src`` to AR``dst``; it solicits there
    with a plain RS (no previous prefix named).  AR``src`` sees its link go."""
    def down() -> None:
        w.fab.detach(mn)
    w.net.call_at(t, down)
    w.at(t, src, lambda a, now: a.detach(mn, now))

    def up() -> None:
        w.fab.attach(mn, f"ar{dst}", f"{mn}{dst}")
        w.fab.add_address(mn, own.network + 0x10)
    w.net.call_at(t + gap, up)
    w.at(t + gap, dst, lambda a, now: a.arrive(mn, f"{mn}{dst}", [own], [], now))


def moved_with_a_flow(mode: str, stop: float = 1.2, until: float = 2.0,
                      **kw: Any) -> tuple[World, Trace, Flow]:
    """The MN, with a continuity flow on HNP1 that AR1 reports, moves to AR2
    at 0.5 s as a stock host; run to ``until``.  Transitions are recorded."""
    w = world(mode, **kw)
    record_lives(w)
    trace = Trace(w.net)
    cont = downlink("cont", IP1, 0.1, stop)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    move_stock(w, 0.5, 0.02, HNP2)
    w.net.run(until=until)
    return w, trace, cont


# -- Fig 4 (4.1.1): mobility support not needed --------------------------------------


@pytest.mark.parametrize("ended", [True, False], ids=["flows-ended", "never-needed"])
def test_fig4_nothing_kept_when_no_flow_needs_it(ended: bool) -> None:
    """The flow on HNP1 ended (or never needed continuity): after the move
    the LMs lists HNP1 with no flows, so AR2 keeps nothing and no anchor
    is discovered or asked; new flows use HNP2."""
    w = world("tunnel")
    trace = Trace(w.net)
    old = downlink("old", IP1, 0.2, 0.45)
    new = downlink("new", IP2, 0.7, 1.0)
    start_flow(w.fab, old)
    start_flow(w.fab, new)
    if ended:
        w.at(0.15, 1, lambda a, now: a.conn_events(opened(old), now))
        # Its conntrack entry expires: HNP1 is anchored at AR1, which sees
        # all its packets, so conntrack's word is final.
        w.at(0.47, 1, lambda a, now: a.conn_events(gone(old), now))
    move_stock(w, 0.5, 0.02, HNP2)
    w.net.run(until=1.5)
    seq = trace.assert_order([
        ("ar2", "lms", "MN_QUERY"),          # LM:1-1 by MN, first: the move waits on it
        ("ar2", "lms", "LOCATION_UPDATE"),   # HNP2 bound to the MN at AR2
        ("lms", "ar2", "MN_REPLY"),          # LM:1-2: HNP1 at AR1, no flows
    ], since=0.5)
    reply = seq[-1].message
    assert isinstance(reply, m.MnReply)
    assert [(b.prefix, b.forwarding_address, b.flows) for b in reply.bindings
            if b.prefix == HNP1] == [(HNP1, A("fc00::1:0"), 0)]
    for name in ("ANCHOR_DISCOVERY", "BUFFER_READY", "FLOW_STATE_TRANSFER"):
        assert trace.count(name, since=0.5) == 0, name
    assert w.ar[2].attached["mn"].own == (HNP2,) and w.ar[2].attached["mn"].visiting == ()
    assert_lossless(report(w.fab, old))
    rep = report(w.fab, new)
    assert_lossless(rep)
    assert rep.paths == (("cn", "r", "ar2", "mn"),)


# -- Fig 5 (4.1.2): the old anchor keeps anchoring and tunnels ------------------------


def test_fig5_tunnel_call_flow_for_a_stock_mn() -> None:
    w = world("tunnel", lifetime=2, flow_idle=0.5)
    record_lives(w)
    trace = Trace(w.net)
    cont = downlink("cont", IP1, 0.1, 1.2)
    fresh = downlink("fresh", IP2, 0.8, 1.1)
    start_flow(w.fab, cont)
    start_flow(w.fab, fresh)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    move_stock(w, 0.5005, 0.03, HNP2)
    # AR2 gets HNP1's downlink decapsulated, which conntrack does not see:
    # the flow (handed over by FM:2) ends when its charged packets stop.
    sweeping(w, 2, 0.6, 4.5)
    w.net.run(until=4.5)
    # AR1 reported the flow on HNP1 to the LMs when it began.
    first = trace.assert_order([("ar1", "lms", "LOCATION_UPDATE")], since=0.12)[0].message
    assert isinstance(first, m.LocationUpdate) and (first.prefix, first.flows) == (HNP1, 1)
    seq = trace.assert_order([
        ("ar2", "lms", "MN_QUERY"),           # LM:1-1 by MN: where is it served?
        ("lms", "ar2", "MN_REPLY"),           # HNP1 at AR1, one flow
        ("ar2", "ctrl", "ANCHOR_DISCOVERY"),  # FM:4-3: who anchors HNP1?
        ("ctrl", "ar2", "DISCOVERY_ANSWER"),  # FM:4-4: AR1
        ("ar2", "ar1", "BUFFER_READY"),       # FM:6-2: ready, send what you hold
        ("ar2", "lms", "LOCATION_UPDATE",     # LM:1-4: HNP1 now at AR2, for the MN
         about(HNP1, forwarding_address=A("fc00::2:0"), mn="mn")),
        ("ar1", "ar2", "BUFFER_READY_ACK"),
        ("ar1", "ar2", "FLOW_STATE_TRANSFER"),  # FM:2: charging moves
        # FM:3-3, once the flow closed and the lifetime ran out:
        ("ar2", "lms", "LOCATION_UPDATE", about(HNP1, lifetime=0)),  # binding removed
        ("ar2", "ar1", "FM_HANDOFF"),         # FM:1: AR1 is HNP1's FM again
    ], since=0.5)
    # No LM:1-1 by prefix: the answer by MN already said where HNP1 was.
    assert trace.count("LOCATION_QUERY", since=0.5) == 0
    assert seq[8].t > 2.5  # not before the visit's lifetime ended
    rep = report(w.fab, cont)
    assert_lossless(rep)
    assert ("cn", "r", "ar1", "r", "ar2", "mn") in rep.paths
    assert_lossless(report(w.fab, fresh))
    assert w.ar[2].stats.counters["kept-by-lm"] == 1
    assert "mn" in w.ar[2].attached and w.ar[2].attached["mn"].visiting == ()  # reverted
    # HNP1's life at each router.
    assert life_of(w.ar[1], HNP1) == [
        (Ev.LEFT, St.HELD),        # the MN's link went: hold (FM:6-1)
        (Ev.READY, St.HANDED),     # FM:6-2 from AR2: tunnel there, flush the hold
        (Ev.RELEASED, None)]       # FM:1 after the revert: routed here again
    assert life_of(w.ar[2], HNP1) == [
        (Ev.KEPT, St.JOINING),     # the LMs said it carries a flow
        (Ev.CLAIMED, St.VISITING),  # anchor found, FM:6-2 and LM:1-4 sent
        (Ev.REVERTED, None)]       # FM:3-3
    assert life_of(w.ar[2], HNP2) == [(Ev.GIVEN, St.ANCHORED)]


# -- Fig 8 (4.2.1) and 4.2 by BGP: the anchoring moves --------------------------------


def test_fig8_switch_call_flow_for_a_stock_mn() -> None:
    w, trace, cont = moved_with_a_flow("switch", hold_timeout=0.05)
    trace.assert_order([
        ("ar2", "lms", "MN_QUERY"),
        ("lms", "ar2", "MN_REPLY"),
        ("ar2", "lms", "LOCATION_UPDATE"),     # LM:1-4: HNP1 at AR2 now
        ("lms", "ctrl", "LOCATION_INFORM"),    # LM:1-3 to the central FM-CP
        ("ctrl", "r", "FORWARDING_UPDATE"),    # FM:5-1: the core routes HNP1 to AR2
        ("ctrl", "ar1", "BUFFER_READY"),       # FM:6-2: AR1 sends what it held
        ("ar1", "ar2", "FLOW_STATE_TRANSFER"),  # FM:2
    ], since=0.5)
    # FM:6-1: the central FM-CP tells the anchor the MN left (AR1 holds
    # already, having seen its link go); FM:6-2 waits for its answer and
    # for the core's.
    trace.assert_order([
        ("lms", "ctrl", "LOCATION_INFORM"),
        ("ctrl", "ar1", "BUFFER_REQUEST", about(HNP1)),
        ("ar1", "ctrl", "BUFFER_ACK"),
        ("ctrl", "ar1", "BUFFER_READY"),
    ], since=0.5)
    trace.assert_order([
        ("ctrl", "r", "FORWARDING_UPDATE"),
        ("r", "ctrl", "FORWARDING_UPDATE_ACK"),
        ("ctrl", "ar1", "BUFFER_READY"),
    ], since=0.5)
    assert trace.count("ANCHOR_DISCOVERY", since=0.5) == 0  # internal to the control plane
    rep = report(w.fab, cont)
    assert rep.lost == 0 and rep.duplicates == 0 and rep.reordered == 0, rep
    assert ("cn", "r", "ar2", "mn") in rep.paths
    assert HNP1 in w.ar[2].visiting
    assert life_of(w.ar[1], HNP1) == [(Ev.LEFT, St.HELD), (Ev.READY, St.HANDED)]
    # Switch mode claims with the binding update itself.
    assert life_of(w.ar[2], HNP1) == [(Ev.KEPT, St.JOINING), (Ev.CLAIMED, St.VISITING)]


def test_bgp_call_flow_for_a_stock_mn() -> None:
    w, trace, cont = moved_with_a_flow("bgp", hold_timeout=0.05)
    trace.assert_order([
        ("ar2", "lms", "MN_QUERY"),
        ("lms", "ar2", "MN_REPLY"),
        ("ar2", "ar1", "BUFFER_READY"),        # FM:6-2 to the previous point
        ("ar2", "lms", "LOCATION_UPDATE"),
        ("ar1", "ar2", "BUFFER_READY_ACK"),
        ("ar1", "ar2", "FLOW_STATE_TRANSFER"),
    ], since=0.5)
    assert trace.count("LOCATION_QUERY", since=0.5) == 0
    rep = report(w.fab, cont)
    assert rep.lost == 0 and rep.duplicates == 0, rep
    assert HNP1 in w.ar[2].announced and HNP1 not in w.ar[1].announced


# -- Chains: the prefix follows the MN from router to router --------------------------


def test_a_chain_of_moves_keeps_the_prefix_at_each_router() -> None:
    """AR1 -> AR2 -> AR3: AR3 learns HNP1 from the LMs (served at AR2 now,
    its flow count carried over) and takes it from AR2, its anchor AR1
    re-pointing the tunnel."""
    w = world("tunnel", n=3)
    record_lives(w)
    trace = Trace(w.net)
    cont = downlink("cont", IP1, 0.1, 1.5)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    move_stock(w, 0.5, 0.02, HNP2)
    move_stock(w, 1.0, 0.02, HNP3, src=2, dst=3)
    w.net.run(until=3.5)  # (AR2's leftover tunnel goes 2 hold timeouts on)
    reply = trace.assert_order([("lms", "ar3", "MN_REPLY")], since=1.0)[0].message
    assert isinstance(reply, m.MnReply)
    # (HNP3, AR3's own, is bound after the query: asked first, it is answered first.)
    assert {(b.prefix, b.forwarding_address, b.flows) for b in reply.bindings} == {
        (HNP1, A("fc00::2:0"), 1), (HNP2, A("fc00::2:0"), 0)}
    trace.assert_order([("ar3", "ar2", "BUFFER_READY"), ("ar3", "ar1", "BUFFER_READY")],
                       since=1.0)
    rep = report(w.fab, cont)
    assert rep.lost == 0 and rep.duplicates == 0, rep
    assert ("cn", "r", "ar1", "r", "ar3", "mn") in rep.paths
    assert HNP1 in w.ar[3].visiting and HNP2 not in w.ar[3].visiting
    assert life_of(w.ar[2], HNP1) == [
        (Ev.KEPT, St.JOINING), (Ev.CLAIMED, St.VISITING),
        (Ev.LEFT, St.HELD), (Ev.READY, St.HANDED),  # handed on to AR3
        (Ev.RELEASED, None)]                          # its leftover tunnel cleaned up
    assert life_of(w.ar[1], HNP1) == [
        (Ev.LEFT, St.HELD), (Ev.READY, St.HANDED), (Ev.READY, St.HANDED)]  # re-pointed
    assert not [e for e in w.fab.routers["ar2"].entries()
                if e.prefix == HNP1 and e.kind is EntryKind.ANCHOR]


@pytest.mark.parametrize("mode", ["tunnel", "switch", "bgp"])
def test_back_to_a_router_visited_before(mode: str) -> None:
    """AR1 -> AR2 -> AR3 -> AR2: AR2 had handed HNP1 on to AR3 and kept a
    tunnel there for its leftovers.  Kept again for the returning MN, HNP1 is
    anchored at AR2 and that tunnel goes - with both, AR2 and AR3 would
    bounce HNP1's packets between them until their hop limit ran out."""
    w = world(mode, n=3, hold_timeout=0.05 if mode == "bgp" else 1.0)
    record_lives(w)
    cont = downlink("cont", IP1, 0.1, 2.5)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    move_stock(w, 0.5, 0.02, HNP2)
    move_stock(w, 1.0, 0.02, HNP3, src=2, dst=3)
    move_stock(w, 1.5, 0.02, HNP2, src=3, dst=2)
    w.net.run(until=3.0)
    rep = report(w.fab, cont)
    assert rep.duplicates == 0 and rep.reordered == 0, rep
    # At most what was on the radio as it went (no L2 trigger here).
    assert rep.lost <= 1, (rep, w.fab.drop_reasons)
    assert "hop-limit" not in w.fab.drop_reasons
    assert rep.paths[-1][-2:] == ("ar2", "mn")
    assert (Ev.KEPT, St.JOINING) in life_of(w.ar[2], HNP1)[3:]  # kept again on return
    assert w.ar[2].life.of(HNP1) is St.VISITING
    assert not [e for e in w.fab.routers["ar2"].entries()
                if e.prefix == HNP1 and e.kind is EntryKind.TUNNEL]


# -- SM: a host is known by its link-layer identity ----------------------------------


@pytest.mark.parametrize("mode", ["tunnel", "switch", "bgp"])
def test_another_host_gets_nothing_of_the_mn(mode: str) -> None:
    """A second host arriving at AR2 (its own link-layer identity) is given
    only its own prefix - the LMs lists nothing of the MN for it, and its RS
    naming HNP1 is refused; the MN's flow is undisturbed."""
    w = world(mode, hold_timeout=0.05)
    cont = downlink("cont", IP1, 0.1, 1.0)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    w.fab.add_host("evil")

    def evil() -> None:
        w.fab.attach("evil", "ar2", "ev2")
        w.fab.add_address("evil", IP1)  # it would take the MN's packets
    w.net.call_at(0.4, evil)
    w.at(0.4, 2, lambda a, now: a.arrive("02:00:00:00:0e:01", "ev2", [HNP2], [HNP1], now))
    w.net.run(until=1.5)
    assert w.ar[2].stats.counters["claim-refused"] == 1
    assert w.ar[2].stats.counters["kept-by-lm"] == 0
    assert HNP1 not in w.ar[2].visiting
    assert not [d for d in w.fab.received("evil") if d.packet.flow == "cont"]
    assert_lossless(report(w.fab, cont))
    assert report(w.fab, cont).paths == (("cn", "r", "ar1", "mn"),)


def test_fig1a_an_lm_pool_answers_for_every_member() -> None:
    """Fig 1a: each anchor's CPA hosts an LMs member.  AR2's member holds
    nothing of the MN; it asks the pool (LM:2) and answers with HNP1's
    binding, held at AR1's member."""
    w, trace, cont = moved_with_a_flow("tunnel", lm="pool")
    # (Each member's LMs listens on its anchor's address, port 5401.)
    trace.assert_order([
        ("ar2", "ar2", "MN_QUERY"),    # to its own member
        ("ar2", "ar1", "MN_QUERY"),    # that member asks the pool
        ("ar1", "ar2", "MN_REPLY"),
        ("ar2", "ar2", "MN_REPLY", lambda r: HNP1 in [b.prefix for b in r.bindings]),
        ("ar2", "ar1", "BUFFER_READY"),
    ], since=0.5)
    assert_lossless(report(w.fab, cont))
    assert HNP1 in w.ar[2].visiting


def test_what_a_router_hears_on_its_access_link() -> None:
    """heard(): the first packet of a host not attached on the link is its
    arrival (RA, LM:1-1 by MN); an RS from it later is answered; anything
    else it says is nothing new; an RS naming a prefix not kept yet adds it
    (checked against the binding as any claim)."""
    w = world("tunnel")
    a = w.ar[2]
    trace = Trace(w.net)
    results: list[Heard] = []

    def hear(named: list[Prefix], rs: bool) -> Callable[[AnchorAgentCore, float], None]:
        def run(agent: AnchorAgentCore, now: float) -> None:
            results.append(agent.heard("02:00:00:00:00:02", "h2", [HNP2], named, rs, now))
        return run
    w.fab.add_host("h")

    def up() -> None:
        w.fab.attach("h", "ar2", "h2")
    w.net.call_at(0.2, up)
    w.at(0.2, 2, hear([], False))      # its MLD report
    w.at(0.3, 2, hear([], False))      # ND
    w.at(0.4, 2, hear([], True))       # its RS
    w.at(0.5, 2, hear([HNP1], True))   # an RS naming someone else's prefix
    w.net.run(until=1.0)
    assert results == [Heard.ARRIVED, Heard.KNOWN, Heard.ANSWERED, Heard.NAMED_MORE]
    assert a.attached["02:00:00:00:00:02"].own == (HNP2,)
    assert trace.count("MN_QUERY") == 1  # asked about once, on arrival
    assert a.stats.counters["claim-refused"] == 1  # HNP1 is the MN's, not this host's
    assert HNP1 not in a.visiting


def test_a_prefix_anchor_is_asked_for_once_over_a_ping_pong() -> None:
    """AR1 -> AR2 -> AR1 -> AR2 (tunnel mode): AR2 asks the controller which
    anchor holds HNP1 (FM:4-3) at the first visit only; at the second it
    knows (the answer lives a registration lifetime) and goes straight to
    FM:6-2.  The session loses nothing either way."""
    w = world("tunnel")
    trace = Trace(w.net)
    cont = downlink("cont", IP1, 0.1, 2.4)
    start_flow(w.fab, cont)
    w.at(0.12, 1, lambda a, now: a.conn_events(opened(cont), now))
    move_stock(w, 0.5, 0.02, HNP2)
    move_stock(w, 1.0, 0.02, HNP1, src=2, dst=1)
    move_stock(w, 1.5, 0.02, HNP2)
    w.net.run(until=3.0)
    assert trace.count("ANCHOR_DISCOVERY", since=0.5) == 1
    assert trace.count("ANCHOR_DISCOVERY", since=1.5) == 0
    trace.assert_order([("lms", "ar2", "MN_REPLY"),
                        ("ar2", "ar1", "BUFFER_READY", about(HNP1, dpa_address=A("fc00::2:0")))],
                       since=1.5)
    assert_lossless(report(w.fab, cont))


def test_a_kept_anchor_answer_expires_and_is_bounded() -> None:
    cache = AnchorCache(ttl=10.0, limit=2)
    ar1 = A("fc00::1:0")
    ans = [m.DiscoveryAnswer(Prefix.parse(f"2001:db8:1:{i}::/64"), ar1, ar1, "ar1")
           for i in range(3)]
    cache.put(ans[0], 0.0)
    assert cache.get(ans[0].prefix, 9.9) == ans[0]
    assert cache.get(ans[0].prefix, 10.0) is None  # believed a lifetime only
    for a in ans:
        cache.put(a, 20.0)
    assert len(cache) == 2 and cache.get(ans[0].prefix, 21.0) is None  # the oldest went
    cache.forget(ans[1].prefix)
    assert cache.get(ans[1].prefix, 21.0) is None and cache.get(ans[2].prefix, 21.0) == ans[2]
