"""A scenario's twin in virtual time (``dmanchor sim SCENARIO``): the shipped
scenario files, played with the cores their nodes run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dmanchor.fm.anchor_model import SETTLE_GRACE
from dmanchor.scenario.model import parse
from dmanchor.scenario.plan import make_plan
from dmanchor.scenario.run import find, shipped
from dmanchor.sim.runs import end_state_only, handover_signalling, lasting
from dmanchor.sim.twin import Twin, Unsupported, unsupported
from dmanchor.wire.types import Prefix

SUPPORTED = [n for n in shipped() if unsupported(find(n)) is None]


def test_the_twin_plays_4_1_2_as_the_draft_draws_it() -> None:
    """Fig 4 / 4.1.2 by its file: AR2 asks the LMs for the MN's prefixes,
    the controller for HNP1's anchor (FM:4-3), and AR1 for HNP1 (FM:6-2);
    AR1 hands the flows' state on (FM:2); the sessions lose nothing."""
    run = Twin(find("4.1.2")).play()
    assert handover_signalling(run.sent, run.moves) == [{
        "ar2": [("r", "MN_QUERY"), ("r", "ANCHOR_DISCOVERY"), ("ar1", "BUFFER_READY")],
        "ar1": [("ar2", "FLOW_STATE_TRANSFER")]}]
    for name in ("probe", "stream", "fresh"):
        assert (run.flows[name].lost, run.flows[name].duplicates) == (0, 0), name
    # HNP1 is tunnelled from its home to where its MN is (its lifetime runs on).
    assert run.final["ar1"] == ["TUNNEL 2001:db8:1:1::/64 -> fc00::2:0"]


def test_a_predictive_move_tells_the_new_router_first() -> None:
    """``--predictive``: AR1's L2 names AR2, so AR1 sends it a HI before the
    radio goes; AR2 asks for HNP1's anchor at once, and at the MN's arrival
    claims HNP1 (FM:6-2) without waiting for the LMs - which it still asks.
    The move's span starts when the MN left: the HI is in it."""
    run = Twin(find("4.1.2"), predictive=True).play()
    (move,) = [m for m in run.moves if m.old is not None]
    assert move.left is not None and move.left < move.at
    assert handover_signalling(run.sent, run.moves) == [{
        "ar1": [("ar2", "HANDOVER_INITIATE"), ("ar2", "FLOW_STATE_TRANSFER")],
        "ar2": [("r", "ANCHOR_DISCOVERY"), ("r", "MN_QUERY"), ("ar1", "BUFFER_READY")]}]
    hi = next(s for s in run.sent if s.type == "HANDOVER_INITIATE")
    assert hi.t < move.at
    claim = next(s for s in run.sent if s.type == "BUFFER_READY")
    reply = next(s for s in run.sent if s.type == "MN_REPLY" and s.t > move.at)
    assert claim.t < reply.t  # not waiting on LM:1-1
    for name in ("probe", "stream", "fresh"):
        assert (run.flows[name].lost, run.flows[name].duplicates) == (0, 0), name
    assert run.final == Twin(find("4.1.2")).play().final


@pytest.mark.parametrize("name", SUPPORTED)
def test_every_supported_scenario_plays_and_keeps_its_sessions(name: str) -> None:
    run = Twin(find(name)).play()
    assert len(run.moves) == sum(1 for s in find(name).timeline
                                 if s.action in ("attach", "move"))
    sc = find(name)
    for flow, rep in run.flows.items():
        assert rep.duplicates == 0, flow
        if sc.flows[flow].continuity:
            assert rep.delivered > 0.95 * rep.sent, (flow, rep)


def test_under_bgp_the_routers_follow_the_anchors_announcements() -> None:
    """Draft 4.2 without a controller (4.2-bgp): mid-visit the core routers
    route HNP1 to AR2, which announced it; once its flows ended (the
    charging counters idle) it reverted, and nothing is left for it."""
    mid = Twin(find("4.2-bgp")).play(until=1.5)
    assert mid.final == {"r1": ["ROUTE 2001:db8:1:1::/64 -> fd00:2::2"],
                         "r2": ["ROUTE 2001:db8:1:1::/64 -> fd00:4::2"],
                         "ar2": ["ANCHOR 2001:db8:1:1::/64 on mn",
                                 "ANCHOR 2001:db8:2:1::/64 on mn"]}
    end = Twin(find("4.2-bgp")).play()
    assert end.final == {"ar2": ["ANCHOR 2001:db8:2:1::/64 on mn"]}


HNP1 = Prefix.parse("2001:db8:1:1::/64")


def test_4_2_1_moves_the_lease_before_the_core_and_gives_it_back_at_the_revert() -> None:
    """FM:3-2 with the routers' PD clients and the Kea model: the controller
    has AR1 release HNP1's lease and AR2 take it, and only then re-routes
    the core (FM:5-1); after the flows, the revert returns it to the pool."""
    twin = Twin(find("4.2.1"))
    run = twin.play()
    assert [(what, router) for _, what, router, p in twin.pd.log if p == HNP1] == [
        ("Delegated", "ar1"), ("Returned", "ar1"), ("Delegated", "ar2"), ("Returned", "ar2")]
    order = [s.type for s in run.sent if s.src == "r" and s.type in (
        "LEASE_RELEASE", "LEASE_TAKE", "FORWARDING_UPDATE")]
    assert order[:3] == ["LEASE_RELEASE", "LEASE_TAKE", "FORWARDING_UPDATE"]
    assert run.final == {"ar2": ["ANCHOR 2001:db8:2:1::/64 on mn"]}


def test_a_lease_that_cannot_move_leaves_the_prefix_tunnelled_from_home() -> None:
    """4.2.1-nolease: AR2 has no PD client, so Kea knows no DUID for it and
    the controller's lease6-update fails: HNP1 stays anchored at AR1 (the
    core is not re-routed), tunnelled to AR2 (4.1.2)."""
    twin = Twin(find("4.2.1-nolease"))
    run = twin.play(until=1.5)
    assert "FORWARDING_UPDATE" not in {s.type for s in run.sent if 1.0 < s.t < 1.5}
    assert "r" not in run.final
    assert run.final["ar1"][0].startswith("TUNNEL 2001:db8:1:1::/64 -> fc00::2:")
    assert twin.pd.owner[HNP1] == "ar1"


def test_a_controller_killed_mid_switch_restarts_from_its_state_and_reverts() -> None:
    """fault-cp-switch: the controller's node dies between 4.2.1's switch
    and its revert; restarted with its state file and the LMs's store, it
    takes the switched prefix back (it was restored) and routes it home
    once its flows ended (FM:3-3) - nothing left anywhere for it."""
    twin = Twin(find("fault-cp-switch"))
    run = twin.play()
    assert twin._controllers["r"].counters["restored"] == 1
    assert run.final == {"ar2": ["ANCHOR 2001:db8:2:1::/64 on mn"]}
    assert all(f.lost == 0 for f in run.flows.values()), run.flows


def test_a_cut_control_link_loses_the_moves_queries_until_it_heals() -> None:
    """fault-cut-move: the controller's link is cut as the MN moves (0.8 s
    to 2.8 s after the start): AR2's LM:1-1 goes out again and again, lost;
    after the heal the move completes (FM:6-2 to AR1), and what arrived
    meanwhile was held, none lost."""
    twin = Twin(find("fault-cut-move"))
    run = twin.play()
    asked = [s.t for s in run.sent if (s.src, s.type) == ("ar2", "MN_QUERY")]
    ready = [s.t for s in run.sent if (s.src, s.type) == ("ar2", "BUFFER_READY")]
    assert len(asked) >= 4 and asked[0] < 1.0 and ready and ready[0] > 2.9
    assert twin.net.counters["lost"] > 0
    assert all(f.lost == 0 for f in run.flows.values()), run.flows


def test_end_states_are_compared_without_a_moves_leftover_flush_tunnels() -> None:
    """A tunnel to a flush SID (fc00::N:1) ends by a timer or by FM:2: whether
    it is still there when the state is read is timing alone."""
    plan = make_plan(find("crowd"), signed=False)
    final = {"ar4": ["ANCHOR 2001:db8:4:2::/64 on mn12",
                     "TUNNEL 2001:db8:1:8::/64 -> fc00::1:1",
                     "TUNNEL 2001:db8:4:1::/64 -> fc00::2:0"],
             "ar1": ["TUNNEL 2001:db8:1:1::/64 -> fc00::3:1"]}
    assert lasting(final, plan) == {"ar4": ["ANCHOR 2001:db8:4:2::/64 on mn12",
                                            "TUNNEL 2001:db8:4:1::/64 -> fc00::2:0"]}


def test_a_pool_member_killed_leaves_the_session_whole_and_is_compared_by_end_state() -> None:
    """fault-pool: the LM:2 member the anchors ask is killed before a move;
    the anchors ask the survivor, the session loses nothing, and the MN
    ends at home with HNP1 - as on the kernels.  Which member is asked
    first is drawn at random, so only the end state is compared."""
    sc = find("fault-pool")
    run = Twin(sc).play()
    assert {n: f.lost for n, f in run.flows.items()} == {"probe": 0, "stream": 0}
    assert run.final == {"ar1": ["ANCHOR 2001:db8:1:1::/64 on mn"]}
    assert "drawn at random" in (end_state_only(sc) or "")
    assert "several MNs" in (end_state_only(find("crowd")) or "")
    assert end_state_only(find("4.1.2")) is None


def test_a_lossy_control_network_loses_messages_not_the_session() -> None:
    """fault-lossy: 10% then 30% of control messages lost (drawn from the
    twin's seeded generator, as the nodes' rules drop them); retransmissions
    carry every move, the sessions lose nothing, the MN ends at home.
    Which messages are lost differs from a kernel run's: compared by the
    end state only."""
    sc = find("fault-lossy")
    twin = Twin(sc)
    run = twin.play()
    assert twin.net.counters["lost"] > 20
    assert {n: f.lost for n, f in run.flows.items()} == {"probe": 0, "stream": 0}
    assert run.final == {"ar1": ["ANCHOR 2001:db8:1:1::/64 on mn"]}
    assert "at random" in (end_state_only(sc) or "")


def test_a_host_based_mn_claims_its_prefix_itself_and_ends_the_tunnel() -> None:
    """Fig 2a by its file: the new router only asks the LMs (the MN's
    solicitation names nothing); the MN's own agent finds HNP1's anchor
    (FM:4-3) and claims it to its care-of SID there (FM:6-2), signalling
    from its new address; AR1 hands the flows' charges to the MN's agent
    (FM:2) and tunnels HNP1 to the SID, where the MN ends the tunnel."""
    run = Twin(find("fig2a")).play()
    coa = "2001:db8:2:1:0:ff:fe00:1"  # its SLAAC address at AR2 (02:00:00:00:00:01)
    assert handover_signalling(run.sent, run.moves) == [{
        "ar2": [("r", "MN_QUERY")],
        "mn": [("r", "ANCHOR_DISCOVERY"), ("ar1", "BUFFER_READY")],
        "ar1": [(coa, "FLOW_STATE_TRANSFER")]}]
    assert {n: (f.lost, f.duplicates) for n, f in run.flows.items()} == {
        "probe": (0, 0), "stream": (0, 0)}
    assert run.final["ar1"] == ["TUNNEL 2001:db8:1:1::/64 -> 2001:db8:2:1::5"]


def test_a_host_based_mn_back_home_claims_what_went_to_its_care_of_address() -> None:
    """return-host (A -> B -> A): back at AR1 the agent claims AR2's prefix
    (where what AR1 tunnelled when the MN left went) to its SID in HNP1;
    AR2 hands on the charges of the MN's own signalling from there (its
    charging table counted those flows too).  Nothing is lost; HNP1 is
    served on AR1's link again, AR2's prefix tunnelled home."""
    run = Twin(find("return-host")).play()
    home = "2001:db8:1:1:0:ff:fe00:1"
    assert handover_signalling(run.sent, run.moves)[1] == {
        "ar1": [("r", "MN_QUERY")],
        "mn": [("r", "ANCHOR_DISCOVERY"), ("ar2", "BUFFER_READY")],
        "ar2": [(home, "FLOW_STATE_TRANSFER")]}
    assert {n: f.lost for n, f in run.flows.items()} == {"probe": 0, "stream": 0}
    assert run.final == {"ar1": ["ANCHOR 2001:db8:1:1::/64 on mn"],
                         "ar2": ["TUNNEL 2001:db8:2:1::/64 -> 2001:db8:1:1::5"]}


def test_forged_signalling_is_dropped_or_refused_by_the_same_rules_as_on_the_kernels() -> None:
    """attacks: with an attack in its timeline the twin signs as the nodes
    do (each node its own key, on the virtual clock); each forged message
    - unsigned, or signed with AR2's stolen key - is dropped or refused,
    counted by node and reason exactly as the scenario expects of its
    kernel runs (and nothing honest is: every node signs); the session
    loses nothing and the MN's move goes as usual."""
    sc = find("attacks")
    run = Twin(sc).play()
    assert run.security == sc.expect["security"]
    assert {n: f.lost for n, f in run.flows.items()} == {"probe": 0, "stream": 0}
    assert handover_signalling(run.sent, run.moves) == [{
        "ar2": [("r", "MN_QUERY"), ("r", "ANCHOR_DISCOVERY"), ("ar1", "BUFFER_READY")],
        "ar1": [("ar2", "FLOW_STATE_TRANSFER")]}]


def test_a_visited_router_restarted_mid_visit_takes_the_prefix_back_and_reverts_it() -> None:
    """fault-visit: AR2's agent killed (its kernel forwards on) and
    restarted mid-visit hears the MN again (its links asked), finds HNP1
    bound to itself and busy, and claims it again from AR1; it lost the
    flows' state, and learns the TCP stream again as conntrack reports it
    closing - so when the flows end, the revert (FM:3-3) reaches AR1 and
    nothing is left anywhere."""
    run = Twin(find("fault-visit")).play()
    after = [s for s in run.sent if 1.9 < s.t < 2.5 and s.src == "ar2"]
    assert ("ar1", "BUFFER_READY") in [(s.dst, s.type) for s in after]  # claimed again
    assert {n: (f.lost, f.duplicates) for n, f in run.flows.items()} == {
        "probe": (0, 0), "stream": (0, 0)}
    assert run.final == {"ar2": ["ANCHOR 2001:db8:2:1::/64 on mn"]}  # reverted


def test_a_router_killed_as_it_holds_loses_what_it_held_not_the_session() -> None:
    """fault-moves: a node killed at each of four moves (the new router,
    the old one holding HNP1, the controller, the LMs).  The old router's
    hold went with its process: what it held is lost (counted); the
    sessions go on and the MN ends at home."""
    twin = Twin(find("fault-moves"))
    run = twin.play()
    assert twin.fab.routers["ar2"].counters().get("hold-lost", 0) > 0
    assert run.flows["probe"].delivered > 0.98 * run.flows["probe"].sent
    assert run.final == {"ar1": ["ANCHOR 2001:db8:1:1::/64 on mn"]}
    # Killed as a move begins: how far it got is timing - compared with the
    # kernels by the end state (killed mid-visit, fault-visit: move by move).
    assert "timing" in (end_state_only(find("fault-moves")) or "")
    assert end_state_only(find("fault-visit")) is None


def test_make_before_break_moves_switch_the_path_and_hold_nothing() -> None:
    """mbb: the MN's new radio attaches while the old one still hears its
    router.  Away from HNP1's anchor, AR1 never lost the MN's link: at AR2's
    claim it moves HNP1 from its link to the tunnel, holding nothing.  Back
    home, AR1 holds the direct path for what AR2 still had; AR2, whose link
    the MN is still on (its carrier up), ends the new tunnel with its own
    end marker at once - the marker AR1 sent down the old tunnel ended at
    AR2's link - so the hold lifts without waiting out its grace period
    (SETTLE_GRACE).  Nothing lost, duplicated or reordered; no gap beyond
    a few of the probe's packets."""
    twin = Twin(find("mbb"))
    run = twin.play()
    assert [(m.old, m.new) for m in run.moves] == [(None, "ar1"), ("ar1", "ar2"),
                                                   ("ar2", "ar1"), ("ar1", "ar2")]
    probe = run.flows["probe"]
    assert (probe.lost, probe.duplicates, probe.reordered) == (0, 0, 0)
    assert probe.max_gap < min(0.005, SETTLE_GRACE)  # (1/2000 s apart)
    assert twin.anchors["ar2"].stats.counters["end-marker-from-link"] == 1
    assert twin.anchors["ar1"].stats.counters["settled-unmarked"] == 0
    # AR2 held nothing when the MN went home: its link was still up.
    assert twin.fab.routers["ar2"].counters().get("released", 0) == 0


def _cut_flow_link() -> str:
    """fault-cut, cutting the link from the core to AR1 (which the flows
    cross) instead of the controller's own."""
    text = shipped()["fault-cut"].read_text()
    assert "cut: {a: r, b: c}" in text
    return text.replace("cut: {a: r, b: c}", "cut: {a: r, b: ar1}")


def test_what_the_twin_does_not_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    """Every shipped scenario runs; a cut of a link the flows may cross
    does not (the fabric would have to lose the packets there too)."""
    assert list(shipped()) == SUPPORTED
    text = _cut_flow_link()
    sc = parse(text)
    assert "may carry the flows" in (unsupported(sc) or "")
    with pytest.raises(Unsupported, match="r-ar1"):
        Twin(sc)
    path = tmp_path / "cut.yaml"
    path.write_text(text)
    bad = subprocess.run([sys.executable, "-m", "dmanchor.cli", "sim", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "may carry the flows" in bad.stderr


def test_dmanchor_sim_takes_a_scenario() -> None:
    out = subprocess.run([sys.executable, "-m", "dmanchor.cli", "sim", "pingpong", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    doc = json.loads(out.stdout)
    assert doc["scenario"] == "pingpong" and len(doc["handovers"]) >= 6
