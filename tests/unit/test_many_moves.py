"""Many moves and many MNs, in virtual time with the project's cores (issue 14).

The real-kernel scenarios ``pingpong``, ``multi-prefix``, ``two-mns`` and
``crowd`` run one mode each; here the same procedures run in every flat
mode - tunnel (4.1.2), anchor switch by the controller (4.2.1) and by BGP
(4.2) - through the whole stack of cores: stock MNs whose routers learn
their other prefixes from the LMs, conntrack reports at the serving router
only, holds, flushes, bindings.  Every continuity flow must arrive whole,
once and in order, by a path no longer than one detour through its anchor.
"""

from __future__ import annotations

import random
from ipaddress import IPv6Address as A
from itertools import pairwise

import pytest

from dmanchor.fm.anchor import AnchorAgentCore
from dmanchor.runtime.virtual import LinkProfile
from dmanchor.sim.traffic import Flow, report, start_flow
from dmanchor.wire.types import EntryKind, FlowFilter, Prefix
from tests.unit.test_call_flows import move_stock, record_lives
from tests.unit.test_fm import CN, HNP1, IP1, World, opened, world

MODES = ["tunnel", "switch", "bgp"]
P = Prefix.parse


def hold_timeout(mode: str) -> float:
    # Under BGP, the new point's hold waits for an end marker that the
    # (modelled) BGP convergence does not send: it ends by its timeout.
    return 0.05 if mode == "bgp" else 1.0


def flow_to(mn: str, dst: int, start: float, stop: float, port: int,
            rate: float = 1000) -> Flow:
    """A downlink continuity flow from the CN to ``mn``'s address ``dst``."""
    return Flow(f"cont-{mn}-{port}", "cn", mn, CN, dst, rate, start, stop, dport=port)


def served(w: World, flow: Flow, router: int, t: float) -> None:
    """The serving router's conntrack sees the flow open at ``t``."""
    w.at(t, router, lambda a, now: a.conn_events(opened(flow), now))


def prefix_of(router: int, mn: int) -> Prefix:
    """The /64 router ``router`` gives MN number ``mn``."""
    return P(f"2001:db8:{router:x}:{mn:x}::/64")


def comes_up(w: World, mn: str, router: int, own: Prefix, t: float = 0.06) -> None:
    """Another stock MN comes up on AR``router`` at ``t``, given ``own``."""
    w.fab.add_host(mn)

    def up() -> None:
        w.fab.attach(mn, f"ar{router}", f"{mn}_{router}")
        w.fab.add_address(mn, own.network + 0x10)
    w.net.call_at(t, up)

    def arrive(a: AnchorAgentCore, now: float) -> None:
        a.arrive(mn, f"{mn}_{router}", [own], [], now)
    w.at(t, router, arrive)


def last_path(w: World, flow: Flow) -> tuple[str, ...]:
    """The hops of the flow's last delivered packet."""
    got = [d for d in w.fab.received(flow.receiver) if d.packet.flow == flow.name]
    return got[-1].packet.hops


def uses(w: World, router: int, mn: str) -> set[Prefix]:
    """The prefixes router ``router`` serves ``mn`` (its own and those kept)."""
    st = w.ar[router].attached.get(mn)
    return set(st.own) | set(st.visiting) if st is not None else set()


def assert_no_leftovers(w: World, prefix: Prefix, home: int, serving: int) -> None:
    """Only the prefix's home and its serving router forward it (and under
    anchor switching, not even the home)."""
    for i, a in w.ar.items():
        entries = [e for e in w.fab.routers[f"ar{i}"].entries() if e.prefix == prefix]
        if i not in (home, serving):
            assert not entries, (i, entries)
        assert not a.dp.buffered(prefix), (i, "still holds")


@pytest.mark.parametrize("mode", MODES)
def test_ping_pong_ten_moves_at_five_a_second(mode: str) -> None:
    """AR1 <-> AR2 ten times, 0.2 s apart: each return takes HNP1 home
    again (no tunnel to itself), each departure hands it on."""
    w = world(mode, hold_timeout=hold_timeout(mode))
    record_lives(w)
    cont = flow_to("mn", IP1, 0.1, 2.9, 5001)
    start_flow(w.fab, cont)
    served(w, cont, 1, 0.12)
    for i in range(10):
        src, dst = (1, 2) if i % 2 == 0 else (2, 1)
        move_stock(w, 0.5 + 0.2 * i, 0.02, prefix_of(dst, 1), src=src, dst=dst)
    w.net.run(until=5.0)  # (AR2's leftover tunnel goes 2 hold timeouts on)
    rep = report(w.fab, cont)
    assert rep.duplicates == 0 and rep.reordered == 0, rep
    assert rep.lost <= 10, (rep, w.fab.drop_reasons)  # at most the radio's, one a move
    assert "hop-limit" not in w.fab.drop_reasons
    assert last_path(w, cont) == ("cn", "r", "ar1", "mn")  # home: direct, no tunnel
    assert_no_leftovers(w, HNP1, 1, 1)
    assert not [e for e in w.fab.routers["ar1"].entries()
                if e.prefix == HNP1 and e.kind is EntryKind.TUNNEL]


@pytest.mark.parametrize("mode", MODES)
def test_ping_pong_faster_than_the_holds(mode: str) -> None:
    """Moves 30 ms apart: the MN is gone again before the previous move's
    hold and flush have ended.  Nothing loops, nothing is delivered twice,
    and when the moves stop the flow resumes at the last router."""
    w = world(mode, hold_timeout=hold_timeout(mode))
    cont = flow_to("mn", IP1, 0.1, 1.5, 5001)
    start_flow(w.fab, cont)
    served(w, cont, 1, 0.12)
    for i in range(9):
        src, dst = (1, 2) if i % 2 == 0 else (2, 1)
        move_stock(w, 0.5 + 0.03 * i, 0.005, prefix_of(dst, 1), src=src, dst=dst)
    w.net.run(until=3.0)
    rep = report(w.fab, cont)
    assert rep.duplicates == 0, rep
    assert "hop-limit" not in w.fab.drop_reasons, w.fab.drop_reasons
    assert last_path(w, cont)[-2:] == ("ar2", "mn")
    # Delivery resumed for good after the last move (0.74 s).
    late = [d for d in w.fab.received("mn") if d.packet.flow == cont.name and d.at > 0.9]
    assert len(late) >= 0.5 * 1000 * (1.5 - 0.9)
    assert_no_leftovers(w, HNP1, 1, 2)


@pytest.mark.parametrize("mode", MODES)
def test_flows_on_prefixes_of_three_earlier_anchors_at_once(mode: str) -> None:
    """A flow on each of HNP1, HNP2 and HNP3 (each begun after the move
    that gave its prefix); at AR4 all three are kept, each anchored by its
    own router (or switched to AR4); back at AR1 likewise."""
    w = world(mode, n=4, hold_timeout=hold_timeout(mode))
    flows = []
    for k, (start, router) in enumerate([(0.1, 1), (0.7, 2), (1.2, 3)], start=1):
        f = flow_to("mn", prefix_of(router, 1).network + 0x10, start, 2.6, 5000 + k)
        start_flow(w.fab, f)
        served(w, f, router, start + 0.02)
        flows.append(f)
    move_stock(w, 0.5, 0.02, prefix_of(2, 1), src=1, dst=2)
    move_stock(w, 1.0, 0.02, prefix_of(3, 1), src=2, dst=3)
    move_stock(w, 1.5, 0.02, prefix_of(4, 1), src=3, dst=4)
    move_stock(w, 2.0, 0.02, prefix_of(1, 1), src=4, dst=1)
    w.net.run(until=3.5)
    for k, f in enumerate(flows, start=1):
        rep = report(w.fab, f)
        assert rep.duplicates == 0 and rep.reordered == 0, (f.name, rep)
        # At most what was on the radio at each break it ran across.
        assert rep.lost <= 5 - k, (f.name, rep, w.fab.drop_reasons)
        at_ar4 = [p for p in rep.paths if p[-2:] == ("ar4", "mn")]
        assert at_ar4, (f.name, rep.paths)
        if mode == "tunnel":  # through its anchor, and no other
            assert at_ar4[-1] == ("cn", "r", f"ar{k}", "r", "ar4", "mn"), rep.paths
        assert last_path(w, f)[-2:] == ("ar1", "mn")
    assert {HNP1, prefix_of(2, 1), prefix_of(3, 1)} <= uses(w, 1, "mn")


@pytest.mark.parametrize("mode", MODES)
def test_two_mns_cross_and_their_states_never_mix(mode: str) -> None:
    """MN on AR1 and MN2 on AR2 move at the same instant to each other's
    router: each router hands one MN's prefix on and takes the other's in."""
    w = world(mode, hold_timeout=hold_timeout(mode))
    own2 = prefix_of(2, 2)
    comes_up(w, "mn2", 2, own2)
    f1 = flow_to("mn", IP1, 0.1, 1.5, 5001)
    f2 = flow_to("mn2", own2.network + 0x10, 0.1, 1.5, 5002)
    for f, r in ((f1, 1), (f2, 2)):
        start_flow(w.fab, f)
        served(w, f, r, 0.12)
    move_stock(w, 0.5, 0.02, prefix_of(2, 1), src=1, dst=2)
    move_stock(w, 0.5, 0.02, prefix_of(1, 2), src=2, dst=1, mn="mn2")
    w.net.run(until=2.5)
    for f, there in ((f1, "ar2"), (f2, "ar1")):
        rep = report(w.fab, f)
        assert rep.duplicates == 0 and rep.reordered == 0 and rep.lost <= 1, (f.name, rep)
        assert last_path(w, f)[-2:] == (there, f.receiver), rep.paths
    assert HNP1 in uses(w, 2, "mn") and HNP1 not in uses(w, 2, "mn2")
    assert own2 in uses(w, 1, "mn2") and own2 not in uses(w, 1, "mn")


@pytest.mark.parametrize("mode", MODES)
def test_a_crowd_on_a_random_walk_keeps_every_session(mode: str) -> None:
    """20 MNs, 4 routers, 100 moves (seeded, dwell 0.3-0.6 s), a continuity
    flow to each MN at 200 pps: none lost but what a radio drops at a break,
    none duplicated or reordered, and each ends at its MN's last router."""
    n_mn, n_ar, n_moves = 20, 4, 100
    w = world(mode, n=n_ar, hold_timeout=hold_timeout(mode))
    rng = random.Random(14)
    at: dict[str, int] = {}
    flows: dict[str, Flow] = {}
    for k in range(2, n_mn + 1):  # "mn" (k = 1) starts on AR1 already
        mn, r = f"mn{k}", rng.randint(1, n_ar)
        comes_up(w, mn, r, prefix_of(r, k))
        at[mn] = r
    at["mn"] = 1
    first = dict(at)
    due = sorted((0.5 + rng.uniform(0, 0.3), mn) for mn in at)
    last = 0.0
    for _ in range(n_moves):
        t, mn = due.pop(0)
        dst = rng.choice([r for r in range(1, n_ar + 1) if r != at[mn]])
        k = 1 if mn == "mn" else int(mn[2:])
        move_stock(w, t, 0.02, prefix_of(dst, k), src=at[mn], dst=dst, mn=mn)
        at[mn], last = dst, t
        due.append((t + rng.uniform(0.3, 0.6), mn))
        due.sort()
    for k, mn in enumerate(sorted(at, key=lambda m: int(m[2:] or 1)), start=1):
        dst = (HNP1 if mn == "mn" else prefix_of(first[mn], k)).network + 0x10
        flows[mn] = flow_to(mn, dst, 0.1, last + 0.3, 5000 + k, rate=200)
        start_flow(w.fab, flows[mn])
        served(w, flows[mn], first[mn], 0.12)
    w.net.run(until=last + 1.5)
    lost = 0
    for mn, f in flows.items():
        rep = report(w.fab, f)
        assert rep.duplicates == 0 and rep.reordered == 0, (mn, rep)
        assert last_path(w, f)[-2:] == (f"ar{at[mn]}", mn), (mn, rep.paths)
        lost += rep.lost
    assert lost <= n_moves, (lost, w.fab.drop_reasons)  # the radios' at the breaks
    assert "hop-limit" not in w.fab.drop_reasons


# -- Hierarchical (4.2.2 / 4.2.3, Figures 9-10): chains and returns over FWs --------


@pytest.mark.parametrize("route", [
    ["fw11", "fw12", "fw11", "fw12", "fw11"],   # 4.2.2 ping-pong under AR1
    ["fw11", "fw21", "fw11"],                   # 4.2.3 away under AR2, and home
    ["fw11", "fw12", "fw21", "fw11"],           # a chain across both ARs, and home
    ["fw11", "fw21", "fw12", "fw21"],           # back and forth between the ARs
], ids=["422-pingpong", "423-return", "chain-home", "423-back-and-forth"])
def test_hierarchical_chains_and_returns_keep_the_session(route: list[str]) -> None:
    from tests.unit.test_fm_hierarchy import CN as HCN
    from tests.unit.test_fm_hierarchy import HNP1 as H1
    from tests.unit.test_fm_hierarchy import IP1 as HIP1
    from tests.unit.test_fm_hierarchy import at, build

    net, fab, lms, agents, _, _ = build()
    flow = Flow("cont", "cn", "mn", HCN, HIP1, 1000, 0.2, 0.45 + 0.4 * len(route), dport=5001)
    flt = FlowFilter(Prefix(HIP1, 128), Prefix(HCN, 128), 17, 5001, 40000)
    fab.attach("mn", route[0], route[0])
    fab.add_address("mn", HIP1)
    at(net, agents, 0.06, route[0],
       lambda a, now: a.attach("mn", route[0], [], {H1: [flt]}, now))
    start_flow(fab, flow)
    for i, (src, dst) in enumerate(pairwise(route)):
        t = 0.6 + 0.4 * i

        def down() -> None:
            fab.detach("mn")

        def up(dst: str = dst) -> None:
            fab.attach("mn", dst, dst)
        net.call_at(t, down)
        at(net, agents, t, src, lambda a, now: a.detach("mn", now))
        net.call_at(t + 0.02, up)
        at(net, agents, t + 0.02, dst,
           lambda a, now, dst=dst: a.attach("mn", dst, [], {H1: [flt]}, now))
    net.run(until=flow.stop + 2.5)
    rep = report(fab, flow)
    assert rep.duplicates == 0 and rep.reordered == 0, rep
    assert rep.lost <= len(route) - 1, (rep, fab.drop_reasons)  # the radio's at each break
    assert "hop-limit" not in fab.drop_reasons
    last = route[-1]
    got = [d for d in fab.received("mn") if d.packet.flow == "cont"]
    # Through the last FW's own AR, never through a FW visited before.
    assert got[-1].packet.hops == ("cn", "r", f"ar{last[2]}", last, "mn"), rep.paths
    b = lms.lookup(H1, net.now)
    assert b is not None and str(b.forwarding_address) == agents[last].s.dpa.compressed
    for name in agents:
        if name not in (last, f"ar{last[2]}", "ar1"):
            assert not [e for e in fab.routers[name].entries() if e.prefix == H1], name


# -- Host-based (Fig 2a): the MN's own agent claims its prefix at each move ----------


def test_host_based_chain_and_return_home() -> None:
    """AR1 -> AR2 -> AR3 -> AR1: at AR2 and AR3 the MN's agent claims HNP1
    to its care-of address there (AR1, HNP1's anchor, re-points its tunnel
    to the MN itself, never through AR2); back home, AR1 anchors HNP1 on its
    link again and the tunnel to the last care-of address goes.

    What AR1 had already tunnelled to the previous care-of address when
    the MN left is held by that network's router under the care-of
    address's own prefix: the agent claims that prefix too, and it follows
    the MN (28 packets were lost at the AR2 -> AR3 move without).  The MN
    holds nothing, so such leftovers may come in behind the re-pointed
    tunnel's first packets: at most one reordered here.

    Back home the MN's SID is in its home prefix (``HNP1::5``), served
    on AR1's link, and AR3's prefix is claimed to it: what was in flight to
    AR3 follows the MN home too (~20 ms of the flow was lost without).  It
    comes in behind what AR1 sends directly - no one holds the direct path
    for a host-based MN - so at most what AR1 sent towards AR3 from the
    MN's leaving AR3 until AR1 took HNP1 back (the 20 ms radio gap here,
    plus two link delays) is reordered."""
    from dmanchor.fm.mn_agent import MnAgentCore, MnAgentSettings
    from tests.unit.test_fm import CTRL, LMS

    w = world("tunnel", n=3, host_based={"mn": "mn"})
    cont = flow_to("mn", IP1, 0.1, 2.0, 5001)
    start_flow(w.fab, cont)
    served(w, cont, 1, 0.12)
    agent = MnAgentCore(MnAgentSettings("mn", CTRL, LMS))
    where: list[tuple[str, int]] = []  # the agent listens on its care-of address

    def leave(src: int, t: float) -> None:
        def down() -> None:
            w.fab.detach("mn")
        w.net.call_at(t, down)
        w.at(t, src, lambda a, now: a.detach("mn", now))

    for i, (src, dst) in enumerate(((1, 2), (2, 3)), start=1):
        t = 0.5 * i
        coa = prefix_of(dst, 1).network + 5  # its SID there, as the agent picks it
        leave(src, t)

        def arrive(dst: int = dst, coa: int = coa) -> None:
            w.fab.attach("mn", f"ar{dst}", f"mn{dst}")
            w.fab.add_address("mn", coa)
            w.fab.add_sid("mn", coa)  # it ends the tunnel on its care-of address
            if where:
                w.net.remove(where[-1])
            where.append((str(A(coa)), 5400))
            w.net.add(where[-1], agent)
            agent.moved(A(coa), [HNP1], w.net.now)
            w.net.poll(where[-1])
        w.net.call_at(t + 0.02, arrive)

        def its_router(a: AnchorAgentCore, now: float, dst: int = dst) -> None:
            a.attach("mn", f"mn{dst}", [prefix_of(dst, 1)], {}, now)  # nothing of HNP1
        w.at(t + 0.02, dst, its_router)
    leave(3, 1.5)

    def home() -> None:
        w.fab.attach("mn", "ar1", "mn1")
        sid = HNP1.network + 5
        w.fab.add_sid("mn", sid)
        w.net.remove(where[-1])
        where.append((str(A(sid)), 5400))
        w.net.add(where[-1], agent)
        agent.moved(A(sid), [], w.net.now)  # HNP1 is home: only AR3's prefix
        w.net.poll(where[-1])
    w.net.call_at(1.52, home)
    w.at(1.52, 1, lambda a, now: a.attach("mn", "mn1", [HNP1], {}, now))
    w.net.run(until=3.0)
    rep = report(w.fab, cont)
    in_flight = int((1.52 - 1.5 + 2 * 0.002) * cont.rate)
    assert rep.duplicates == 0 and rep.reordered <= in_flight, rep
    # Back home nothing waits for a point that never sends an end marker:
    # the tunnel ended at the MN itself (held for the 1 s hold timeout before).
    assert rep.max_gap < 0.05, rep
    got = {d.packet.seq for d in w.fab.received("mn") if d.packet.flow == cont.name}
    missing = sorted(set(range(rep.sent)) - got)
    assert len(missing) <= 2, missing  # the radio's
    assert ("cn", "r", "ar1", "r", "ar3", "mn") in rep.paths  # to the MN, not via AR2
    assert last_path(w, cont) == ("cn", "r", "ar1", "mn")
    assert [e.kind for e in w.fab.routers["ar1"].entries() if e.prefix == HNP1] == [
        EntryKind.ANCHOR]
    for i in (2, 3):
        assert not [e for e in w.fab.routers[f"ar{i}"].entries() if e.prefix == HNP1]
    assert agent.counters["claimed"] >= 3


def test_a_homecoming_still_retransmitted_when_the_mn_has_left_again_redirects_nothing() -> None:
    """Seen in fault-lossy (30% control loss): AR1's FM:6-2 asking AR2 for
    HNP1 back (the MN came home) went unanswered; the MN left for AR2
    again; the transport's fifth try reached AR2 after AR2 had taken the
    MN, and AR2 sent HNP1 back towards AR1 - away from the MN on its own
    link - for 1.26 s.  A homecoming ends when the MN leaves home again:
    its request is not sent any more."""
    w = world("tunnel")
    cont = flow_to("mn", IP1, 0.1, 2.5, 5001)
    start_flow(w.fab, cont)
    served(w, cont, 1, 0.12)
    move_stock(w, 0.5, 0.02, prefix_of(2, 1), src=1, dst=2)
    ar1, ar2 = "fc00::1:0", "fc00::2:0"
    # Home again at 1.0 s: nothing from AR1 reaches AR2 until 1.45 s, so
    # the homecoming's FM:6-2 is unanswered when the MN leaves at 1.3 s.
    w.net.call_at(0.99, lambda: w.net.set_link(ar1, ar2, LinkProfile(loss=1.0)))
    move_stock(w, 1.0, 0.02, prefix_of(1, 1), src=2, dst=1)
    move_stock(w, 1.3, 0.02, prefix_of(2, 1), src=1, dst=2)
    w.net.call_at(1.45, lambda: w.net.set_link(ar1, ar2, LinkProfile()))
    w.net.run(until=3.0)
    late = [d for d in w.fab.received("mn") if d.packet.flow == cont.name and d.at > 1.9]
    assert len(late) >= 0.9 * 1000 * (2.5 - 1.9), (len(late), w.fab.drop_reasons)
    assert last_path(w, cont)[-2:] == ("ar2", "mn")
    assert w.ar[1].stats.counters["homecoming-abandoned"] == 1
