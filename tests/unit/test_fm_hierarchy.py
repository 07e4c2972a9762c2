"""Draft 4.2.2: a hierarchical network (AR = DPA anchoring, FW = DPN serving).

A move between forwarding switches under one access router changes only
the AR-to-FW tunnel; leftovers at the old FW reach the new one past its
hold, the AR's end marker closes the old path, nothing is lost or reordered.
"""

from __future__ import annotations

from ipaddress import IPv6Address as A

import pytest

from dmanchor.fm.anchor import AnchorAgentCore, AnchorSettings
from dmanchor.fm.controller import ControllerCore, ControllerSettings
from dmanchor.lm.lmp import LmpCore
from dmanchor.lm.lms import LmsCore, LmsSettings
from dmanchor.runtime.virtual import VirtualNetwork
from dmanchor.sim.fabric import Fabric
from dmanchor.sim.topologies import CN_ADDR, hierarchical
from dmanchor.sim.traffic import Flow, report, start_flow
from dmanchor.transport.reliable import Addr
from dmanchor.wire.messages import MsgType
from dmanchor.wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix

P = Prefix.parse
HNP1 = P("2001:db8:1:1::/64")
IP1 = HNP1.network + 0x10
CN = int(A(CN_ADDR))
LMS: Addr = ("fc00::d", 5400)
CTRL: Addr = ("fc00::c", 5400)
LMP: Addr = ("fc00::e", 5400)
DPAS = {"ar1": "fc00::1:0", "ar2": "fc00::2:0", "fw11": "fc00:1::1:0",
        "fw12": "fc00:1::2:0", "fw21": "fc00:2::1:0"}
UPLINK = {"ar1": "fc00::ff", "ar2": "fc00::ff", "fw11": "fc00::1:0", "fw12": "fc00::1:0",
          "fw21": "fc00::2:0"}


def build(proxy: bool = False) -> tuple[VirtualNetwork, Fabric, LmsCore,
                                         dict[str, AnchorAgentCore], LmpCore | None]:
    """Fig 1c: LMs and FM-CP at the CPA (the ARs), FM-CP and LMc at the CPNs
    (the FWs).  ``proxy``: Fig 1d, the CPNs reach the LMs through an LMp."""
    net = VirtualNetwork(seed=11)
    fab = Fabric(hierarchical(2), net)
    lms = LmsCore(LmsSettings("lms"))
    net.add(LMS, lms)
    net.add(CTRL, ControllerCore(ControllerSettings()))
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
            AnchorSettings(name, A(dpa), A(dpa), owned, A(UPLINK[name]), CTRL, lm),
            fab.routers[name],
        )
        net.add((dpa, 5400), agents[name])
    net.run_for(0.05)
    return net, fab, lms, agents, lmp


def at(net: VirtualNetwork, agents: dict[str, AnchorAgentCore], t: float, node: str,
       fn: object) -> None:
    assert callable(fn)

    def run() -> None:
        fn(agents[node], net.now)
        net.poll((DPAS[node], 5400))
    net.call_at(t, run)


@pytest.mark.parametrize("proxy", [False, True], ids=["fig1c", "fig1d-lmp"])
def test_4_2_2_move_between_fws_changes_only_the_ar_to_fw_tunnel(proxy: bool) -> None:
    net, fab, lms, agents, lmp = build(proxy)
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
    rep = report(fab, flow)
    assert (rep.lost, rep.duplicates, rep.reordered) == (0, 0, 0), rep
    assert rep.paths[0] == ("cn", "r", "ar1", "fw11", "mn")
    assert ("cn", "r", "ar1", "fw12", "mn") in rep.paths
    assert ("cn", "r", "ar1", "fw11", "ar1", "fw12", "mn") in rep.paths  # leftovers
    # Only the AR-to-FW tunnel changed: the core is untouched.
    assert sorted(map(repr, fab.routers["r"].entries())) == r_before
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
