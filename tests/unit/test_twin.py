"""A scenario's twin in virtual time (``dmanchor sim SCENARIO``): the shipped
scenario files, played with the cores their nodes run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dmanchor.scenario.run import find, shipped
from dmanchor.sim.twin import Twin, Unsupported, handover_signalling, unsupported

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


def test_what_the_twin_does_not_model_is_refused_with_the_reason() -> None:
    with pytest.raises(Unsupported, match="host-based"):
        Twin(find("fig2a"))
    assert "Kea" in (unsupported(find("4.2.1")) or "")
    assert "faults" in (unsupported(find("fault-cp")) or "")
    assert len(SUPPORTED) >= 6, SUPPORTED


def test_dmanchor_sim_takes_a_scenario() -> None:
    out = subprocess.run([sys.executable, "-m", "dmanchor.cli", "sim", "pingpong", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    doc = json.loads(out.stdout)
    assert doc["scenario"] == "pingpong" and len(doc["handovers"]) >= 6
    bad = subprocess.run([sys.executable, "-m", "dmanchor.cli", "sim", "fault-cp"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not modelled" in bad.stderr
