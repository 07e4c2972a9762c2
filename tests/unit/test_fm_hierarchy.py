"""Draft 4.2.2/4.2.3: a hierarchical network (AR = DPA anchoring, FW = DPN serving).

4.2.2: a move between forwarding switches under one access router changes
only the AR-to-FW tunnel; leftovers at the old FW reach the new one past its
hold, the AR's end marker closes the old path, nothing is lost or reordered.

4.2.3: a move to a FW under another AR also moves HNP1's anchoring to that
AR (the central FM-CP re-routes the core, as in 4.2.1), which then reaches
the new FW by its tunnel (as in 4.2.2).
"""

from __future__ import annotations

from ipaddress import IPv6Address as A

import pytest

from dmanchor.dataplane.conntrack import Change, Conn, ConnEvent
from dmanchor.fm.anchor import AnchorAgentCore
from dmanchor.fm.anchor_model import AnchorSettings
from dmanchor.fm.controller import (
    AnchorMoved,
    AnchorRegistered,
    AnchorReverted,
    ControllerCore,
    ControllerSettings,
    RouterControl,
)
from dmanchor.fm.fmdp import FmDpCore, FmDpSettings
from dmanchor.lm.lmp import LmpCore
from dmanchor.lm.lms import LmsCore, LmsSettings
from dmanchor.runtime.virtual import VirtualNetwork
from dmanchor.sim.fabric import Fabric
from dmanchor.sim.topologies import CN_ADDR, hierarchical
from dmanchor.sim.traffic import Flow, report, start_flow
from dmanchor.transport.reliable import Addr
from dmanchor.wire import decode
from dmanchor.wire import messages as m
from dmanchor.wire.messages import MsgType
from dmanchor.wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix
from tests.unit.test_fm import AGENTS

P = Prefix.parse
HNP1 = P("2001:db8:1:1::/64")
IP1 = HNP1.network + 0x10
CN = int(A(CN_ADDR))
LMS: Addr = ("fc00::d", 5400)
CTRL: Addr = ("fc00::c", 5400)
LMP: Addr = ("fc00::e", 5400)
R_CTL: Addr = ("fc00::ff", 5400)
DPAS = {"ar1": "fc00::1:0", "ar2": "fc00::2:0", "fw11": "fc00:1::1:0",
        "fw12": "fc00:1::2:0", "fw21": "fc00:2::1:0"}
UPLINK = {"ar1": "fc00::ff", "ar2": "fc00::ff", "fw11": "fc00::1:0", "fw12": "fc00::1:0",
          "fw21": "fc00::2:0"}


NAMES = {d: n for n, d in DPAS.items()} | {CTRL[0]: "ctrl", LMS[0]: "lms", LMP[0]: "lmp",
                                          R_CTL[0]: "r"}
"""Address -> node, for call-flow traces."""


def parent(name: str) -> A | None:
    return A(DPAS[f"ar{name[2]}"]) if name.startswith("fw") else None


def build(proxy: bool = False, lifetime: int = 600) -> tuple[
        VirtualNetwork, Fabric, LmsCore, dict[str, AnchorAgentCore], LmpCore | None,
        ControllerCore]:
    """Fig 1c: LMs and FM-CP at the CPA (the ARs), FM-CP and LMc at the CPNs
    (the FWs).  ``proxy``: Fig 1d, the CPNs reach the LMs through an LMp.

    The central FM-CP watches every prefix and can re-route the core router;
    it knows which AR each FW sits under.
    """
    net = VirtualNetwork(seed=11)
    fab = Fabric(hierarchical(2), net)
    lms = LmsCore(LmsSettings("lms"))
    net.add(LMS, lms)
    ars = [A(DPAS["ar1"]), A(DPAS["ar2"])]
    ctrl = ControllerCore(ControllerSettings(
        lms=LMS, watch=(P("2001:db8::/32"),),
        routers=(RouterControl("r", R_CTL, {a: a for a in ars}),),
        dpn_parent={A(d): p for n, d in DPAS.items() if (p := parent(n)) is not None},
    ))
    net.add(CTRL, ctrl)
    net.add(R_CTL, FmDpCore(FmDpSettings("r", CTRL, status_interval=0.2), fab.routers["r"]))
    cpn_lm = LMS
    lmp = None
    if proxy:
        cpn_lm = LMP
        lmp = LmpCore([LMS])
        net.add(LMP, lmp)
    agents = {}
    for name, dpa in DPAS.items():
        owned = (P(f"2001:db8:{name[2]}::/48"),) if name.startswith("ar") else ()
        lm = cpn_lm if name.startswith("fw") else LMS
        agents[name] = AnchorAgentCore(
            AnchorSettings(name, A(dpa), A(dpa), owned, A(UPLINK[name]), CTRL, lm,
                           lifetime=lifetime, parent=parent(name)),
            fab.routers[name],
        )
        net.add((dpa, 5400), agents[name])
    AGENTS.extend(agents.values())
    net.run_for(0.05)
    return net, fab, lms, agents, lmp, ctrl


def at(net: VirtualNetwork, agents: dict[str, AnchorAgentCore], t: float, node: str,
       fn: object) -> None:
    assert callable(fn)

    def run() -> None:
        fn(agents[node], net.now)
        net.poll((DPAS[node], 5400))
    net.call_at(t, run)


@pytest.mark.parametrize("proxy", [False, True], ids=["fig1c", "fig1d-lmp"])
def test_4_2_2_move_between_fws_changes_only_the_ar_to_fw_tunnel(proxy: bool) -> None:
    """Figure 9."""
    from tests.unit.test_call_flows import Trace

    net, fab, lms, agents, lmp, ctrl = build(proxy)
    trace = Trace(net, NAMES)
    flow = Flow("cont", "cn", "mn", CN, IP1, 1000, 0.2, 1.2, dport=5001)
    flt = FlowFilter(Prefix(IP1, 128), Prefix(CN, 128), 17, 5001, 40000)
    # The MN attaches at FW11; HNP1 is anchored at AR1 (Fig 9).
    fab.attach("mn", "fw11", "fw11")
    fab.add_address("mn", IP1)
    at(net, agents, 0.06, "fw11", lambda a, now: a.attach("mn", "fw11", [], {HNP1: [flt]}, now))
    net.run_for(0.1)
    assert ForwardingEntry(EntryKind.TUNNEL, HNP1, A(DPAS["fw11"])) in fab.routers["ar1"].entries()
    start_flow(fab, flow)

    def down() -> None:
        fab.detach("mn")

    def up() -> None:
        fab.attach("mn", "fw12", "fw12")
    net.call_at(0.6005, down)
    at(net, agents, 0.6005, "fw11", lambda a, now: a.detach("mn", now))
    net.call_at(0.62, up)
    at(net, agents, 0.62, "fw12", lambda a, now: a.attach("mn", "fw12", [], {HNP1: [flt]}, now))
    r_before = sorted(map(repr, fab.routers["r"].entries()))
    net.run(until=3.0)
    lm = "lmp" if proxy else "lms"
    trace.assert_order([
        ("fw12", "ctrl", "ANCHOR_DISCOVERY"),   # FM:4-3: HNP1 is AR1's
        ("ctrl", "fw12", "DISCOVERY_ANSWER"),
        ("fw12", "fw11", "BUFFER_READY"),       # FM:6-2: FW11's leftovers, to the flush SID
        ("fw11", "fw12", "BUFFER_READY_ACK"),
        ("fw11", "fw12", "FLOW_STATE_TRANSFER"),  # FM:2
    ], since=0.6)
    trace.assert_order([
        ("ctrl", "fw12", "DISCOVERY_ANSWER"),
        ("fw12", "ar1", "BUFFER_READY"),        # FM:6-2: AR1 re-points its tunnel
        ("ar1", "fw12", "BUFFER_READY_ACK"),
    ], since=0.6)
    trace.assert_order([("fw12", lm, "LOCATION_UPDATE"), (lm, "fw12", "LOCATION_UPDATE_ACK")],
                       since=0.6)
    assert trace.count("FORWARDING_UPDATE", since=0.6) == 0  # the core is not touched
    rep = report(fab, flow)
    assert (rep.lost, rep.duplicates, rep.reordered) == (0, 0, 0), rep
    assert rep.paths[0] == ("cn", "r", "ar1", "fw11", "mn")
    assert ("cn", "r", "ar1", "fw12", "mn") in rep.paths
    assert ("cn", "r", "ar1", "fw11", "ar1", "fw12", "mn") in rep.paths  # leftovers
    # Only the AR-to-FW tunnel changed: the core is untouched, though the
    # central FM-CP saw HNP1's binding move (to a FW under the same AR).
    assert sorted(map(repr, fab.routers["r"].entries())) == r_before
    assert ctrl.moved == {} and [e for e in ctrl.drain_events()
                                 if not isinstance(e, AnchorRegistered)] == []
    hnp1 = [e for e in fab.routers["ar1"].entries() if e.prefix == HNP1]
    assert hnp1 == [ForwardingEntry(EntryKind.TUNNEL, HNP1, A(DPAS["fw12"]))]
    # The old FW's leftover tunnel is gone once drained; the marker did its work.
    assert not [e for e in fab.routers["fw11"].entries() if e.prefix == HNP1]
    assert fab.routers["fw12"].counters()["end-marker"] == 1
    # LM: HNP1 is now located at FW12 (the DPN); FM:2 charging is exact.
    b = lms.lookup(HNP1, net.now)
    assert b is not None and b.forwarding_address == A(DPAS["fw12"])
    assert fab.routers["fw12"].usage(flt).packets_down == rep.delivered
    if lmp is not None:  # Fig 1d: the CPNs' LM traffic went through the proxy
        got = lmp.endpoint.stats.received
        assert got[MsgType.LOCATION_QUERY] >= 2 and got[MsgType.LOCATION_UPDATE] >= 2


@pytest.mark.parametrize("proxy", [False, True], ids=["fig1c", "fig1d-lmp"])
def test_4_2_3_move_to_a_fw_under_another_ar_moves_the_anchoring(proxy: bool) -> None:
    """Figure 10."""
    from tests.unit.test_call_flows import Trace

    net, fab, lms, agents, lmp, ctrl = build(proxy, lifetime=1)
    trace = Trace(net, NAMES)
    flow = Flow("cont", "cn", "mn", CN, IP1, 1000, 0.2, 1.2, dport=5001)
    flt = FlowFilter(Prefix(IP1, 128), Prefix(CN, 128), 17, 5001, 40000)
    fab.attach("mn", "fw11", "fw11")
    fab.add_address("mn", IP1)
    at(net, agents, 0.06, "fw11", lambda a, now: a.attach("mn", "fw11", [], {HNP1: [flt]}, now))
    start_flow(fab, flow)

    def down() -> None:
        fab.detach("mn")

    def up() -> None:
        fab.attach("mn", "fw21", "fw21")
    net.call_at(0.6005, down)
    at(net, agents, 0.6005, "fw11", lambda a, now: a.detach("mn", now))
    net.call_at(0.62, up)
    at(net, agents, 0.62, "fw21", lambda a, now: a.attach("mn", "fw21", [], {HNP1: [flt]}, now))
    events: list[object] = []
    net.call_at(1.1, lambda: events.extend(ctrl.drain_events()))
    usage: list[int] = []
    net.call_at(1.3, lambda: usage.append(fab.routers["fw21"].usage(flt).packets_down))
    at(net, agents, 1.3, "fw21", lambda a, now: a.flows_closed(HNP1, now))
    late = Flow("late", "cn", "mn", CN, IP1, 1000, 3.5, 3.6, dport=5002)
    start_flow(fab, late)
    net.run(until=4.0)
    lm = "lmp" if proxy else "lms"
    trace.assert_order([
        ("fw21", "ctrl", "ANCHOR_DISCOVERY"),   # FM:4-3: HNP1 is AR1's
        ("ctrl", "fw21", "DISCOVERY_ANSWER"),
        ("fw21", "ar2", "BUFFER_READY"),        # its AR takes HNP1's anchoring over ...
        ("ar2", "fw21", "BUFFER_READY_ACK"),
        ("fw21", lm, "LOCATION_UPDATE"),        # ... and only then the binding moves
        ("lms", "ctrl", "LOCATION_INFORM"),     # LM:1-3 to the central FM-CP
        ("ctrl", "ar1", "BUFFER_REQUEST"),      # FM:6-1: the MN left AR1
        ("ar1", "ctrl", "BUFFER_ACK"),
        ("ctrl", "ar1", "BUFFER_READY"),        # FM:6-2 on behalf of AR2
    ], since=0.6)
    trace.assert_order([
        ("lms", "ctrl", "LOCATION_INFORM"),
        ("ctrl", "r", "FORWARDING_UPDATE"),     # FM:5-1: the core routes HNP1 to AR2
        ("r", "ctrl", "FORWARDING_UPDATE_ACK"),
        ("ctrl", "ar1", "BUFFER_READY"),
    ], since=0.6)
    trace.assert_order([("fw21", "fw11", "BUFFER_READY"), ("fw11", "fw21", "BUFFER_READY_ACK")],
                       since=0.6)
    rep = report(fab, flow)
    assert (rep.lost, rep.duplicates, rep.reordered) == (0, 0, 0), rep
    assert rep.paths[0] == ("cn", "r", "ar1", "fw11", "mn")
    # Anchoring changed AR1 -> AR2 (core route, 4.2.1), then AR2 -> FW21 (4.2.2).
    assert rep.paths[-1] == ("cn", "r", "ar2", "fw21", "mn")
    assert AnchorMoved(HNP1, A(DPAS["ar2"])) in events
    # FM:2: FW21 counted every packet (FW11 handed its counters over).
    assert usage == [rep.delivered]
    # FM:3-3 then FM:1: flows closed and lifetime over, HNP1 is Net1's again
    # - no route, tunnel or anchoring of it is left anywhere.
    assert AnchorReverted(HNP1) in ctrl.drain_events()
    for name in ("r", "ar1", "ar2", "fw11", "fw21"):
        assert not [e for e in fab.routers[name].entries() if e.prefix == HNP1], name
    # A packet to IP1 after the revert goes to Net1 and dies there (unassigned).
    assert report(fab, late).delivered == 0
    assert {(d.node, d.packet.flow, d.reason) for d in fab.drops} == {("ar1", "late", "drop-entry")}
    assert lms.lookup(HNP1, net.now) is None
    if lmp is not None:  # Fig 1d: the FWs' LM traffic went through the proxy
        assert lmp.endpoint.stats.received[MsgType.LOCATION_UPDATE] >= 3


def test_4_2_3_flows_seen_early_do_not_move_the_core_before_the_parent_is_ready() -> None:
    """FW21's conntrack reports the MN's flow while FW21 still waits for its
    parent AR2 to take HNP1's anchoring over.  The binding must not move to
    FW21 before AR2 answers: the controller would route HNP1 to AR2, which
    could not forward it yet (on real kernels: packets looping between AR2
    and R until their hop limit)."""
    net, fab, _, agents, _, _ = build(lifetime=600)
    flow = Flow("cont", "cn", "mn", CN, IP1, 1000, 0.2, 1.2, dport=5001)
    conn = Conn(A(CN), A(IP1), 17, 40000, 5001)
    fab.attach("mn", "fw11", "fw11")
    fab.add_address("mn", IP1)
    at(net, agents, 0.06, "fw11", lambda a, now: a.attach("mn", "fw11", [], {HNP1: []}, now))
    start_flow(fab, flow)
    sent: list[tuple[float, str, object]] = []

    def tap(now: float, src: Addr, dst: Addr, data: bytes) -> None:
        sent.append((now, src[0], decode(data).message))
    net.taps.append(tap)

    def up() -> None:
        fab.attach("mn", "fw21", "fw21")
    net.call_at(0.6005, lambda: fab.detach("mn"))
    at(net, agents, 0.6005, "fw11", lambda a, now: a.detach("mn", now))
    net.call_at(0.62, up)
    at(net, agents, 0.62, "fw21", lambda a, now: a.attach("mn", "fw21", [], {HNP1: []}, now))
    for i in range(40):  # its packets show up at FW21 all through the claim
        at(net, agents, 0.62 + i * 0.00025, "fw21",
           lambda a, now: a.conn_events([ConnEvent(Change.NEW, conn)], now))
    net.run(until=1.5)
    fw21 = DPAS["fw21"]
    ready = next(t for t, src, msg in sent
                 if src == DPAS["ar2"] and isinstance(msg, m.BufferReadyAck))
    moved = [t for t, src, msg in sent if src == fw21 and isinstance(msg, m.LocationUpdate)
             and msg.prefix == HNP1]
    assert moved and min(moved) > ready, (moved, ready)
    rep = report(fab, flow)
    assert (rep.lost, rep.duplicates) == (0, 0), (rep, fab.drop_reasons)


def test_fig1c_with_the_cpa_apart_the_controller_programs_the_access_router() -> None:
    """Fig 1c as the draft draws it, the CPA apart from the DPA: AR1 runs an
    FM-DP only, the central controller is its FM-CP (:mod:`.central_cp`).
    The switches tell it they are ready (FM:6-2) as they would tell AR1; it
    re-points AR1's tunnel with FM:5-1 and answers once AR1 applied it.
    The move is as lossless as with AR1's own agent (the test above)."""
    from dmanchor.fm.central_cp import AccessControl
    from tests.unit.test_call_flows import Trace

    net = VirtualNetwork(seed=11)
    fab = Fabric(hierarchical(2), net)
    lms = LmsCore(LmsSettings("lms"))
    net.add(LMS, lms)
    ar1_ctl: Addr = ("fc00::1:0", 5402)
    children = {A(DPAS["fw11"]): "fw11", A(DPAS["fw12"]): "fw12"}
    ctrl = ControllerCore(ControllerSettings(
        lms=LMS, cpa=A(CTRL[0]),
        access=(AccessControl("ar1", ar1_ctl, A(DPAS["ar1"]), (P("2001:db8:1::/48"),),
                              children),)))
    net.add(CTRL, ctrl)
    net.add(ar1_ctl, FmDpCore(FmDpSettings("ar1", CTRL, status_interval=0.2),
                              fab.routers["ar1"]))
    agents = {}
    for name in ("fw11", "fw12"):
        agents[name] = AnchorAgentCore(
            AnchorSettings(name, A(DPAS[name]), A(DPAS[name]), (), A(UPLINK[name]), CTRL, LMS,
                           parent=parent(name), agents={A(DPAS["ar1"]): CTRL}),
            fab.routers[name])
        net.add((DPAS[name], 5400), agents[name])
    AGENTS.extend(agents.values())
    trace = Trace(net, NAMES)
    net.run_for(0.05)
    flow = Flow("cont", "cn", "mn", CN, IP1, 1000, 0.2, 1.2, dport=5001)
    flt = FlowFilter(Prefix(IP1, 128), Prefix(CN, 128), 17, 5001, 40000)
    fab.attach("mn", "fw11", "fw11")
    fab.add_address("mn", IP1)
    at(net, agents, 0.06, "fw11", lambda a, now: a.attach("mn", "fw11", [], {HNP1: [flt]}, now))
    start_flow(fab, flow)
    net.call_at(0.6005, lambda: fab.detach("mn"))
    at(net, agents, 0.6005, "fw11", lambda a, now: a.detach("mn", now))
    net.call_at(0.62, lambda: fab.attach("mn", "fw12", "fw12"))
    at(net, agents, 0.62, "fw12", lambda a, now: a.attach("mn", "fw12", [], {HNP1: [flt]}, now))
    net.run(until=3.0)
    trace.assert_order([
        ("fw12", "ctrl", "ANCHOR_DISCOVERY"),     # FM:4-3: HNP1's DPA is AR1, its CPA here
        ("ctrl", "fw12", "DISCOVERY_ANSWER"),
        ("fw12", "ctrl", "BUFFER_READY"),         # FM:6-2 to AR1's FM-CP
        ("ctrl", "ar1", "FORWARDING_UPDATE"),     # FM:5-1: AR1's tunnel to FW12
        ("ar1", "ctrl", "FORWARDING_UPDATE_ACK"),
        ("ctrl", "fw12", "BUFFER_READY_ACK"),
    ], since=0.6)
    trace.assert_order([("fw12", "fw11", "BUFFER_READY"), ("fw11", "fw12", "BUFFER_READY_ACK")],
                       since=0.6)
    rep = report(fab, flow)
    assert (rep.lost, rep.duplicates, rep.reordered) == (0, 0, 0), rep
    assert rep.paths[0] == ("cn", "r", "ar1", "fw11", "mn")
    assert ("cn", "r", "ar1", "fw12", "mn") in rep.paths
    hnp1 = [e for e in fab.routers["ar1"].entries() if e.prefix == HNP1]
    assert hnp1 == [ForwardingEntry(EntryKind.TUNNEL, HNP1, A(DPAS["fw12"]))]
    assert fab.routers["fw12"].counters()["end-marker"] == 1
    assert ctrl.access.tunnels == {HNP1: A(DPAS["fw12"])}
    assert ctrl.access.counters == {"fm5-1-applied": 2}
