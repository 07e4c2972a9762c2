"""Scenario files: validation with file:line:field errors, and the plan they give."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmanchor.config import ConfigError
from dmanchor.nodeconf import load_node_config
from dmanchor.scenario.fields import ScenarioError, Share
from dmanchor.scenario.model import parse
from dmanchor.scenario.plan import make_plan
from dmanchor.scenario.report import FlowResult, MoveRecord, build_report
from dmanchor.scenario.run import find, shipped
from dmanchor.wire.types import Prefix

BASE = """\
scenario: t
title: a test
nodes:
  cn: {kind: host}
  r: {controller: true, lms: true}
  ar1: {anchor: {prefix: "2001:db8:1::/48"}}
  ar2: {anchor: {prefix: "2001:db8:2::/48"}}
  mn: {kind: mn}
links:
  - {a: cn, b: r}
  - {a: r, b: ar1}
  - {a: r, b: ar2}
  - {a: ar1, b: mn}
  - {a: mn, b: ar2}
timeline:
  - {at: 0.0, attach: {mn: mn, to: ar1}}
  - {at: 0.1, flow: {name: f, kind: udp, from: cn, to: mn, duration: 1, continuity: true}}
  - {at: 0.5, move: {mn: mn, to: ar2}}
expect:
  f: {lost: 0, address: kept}
"""


def test_the_base_scenario_is_valid() -> None:
    sc = parse(BASE, "t.yaml")
    assert [s.action for s in sc.timeline] == ["attach", "flow", "move"]
    assert sc.flows["f"].continuity and sc.expect["f"] == {"lost": 0, "address": "kept"}
    # Access links are kept router -> MN whichever way they were written.
    assert (sc.links[-1].a, sc.links[-1].b, sc.links[-1].mtu) == ("ar2", "mn", 1500)


@pytest.mark.parametrize("old, new, message", [
    ("kind: host}", "kind: hots}", "t.yaml:4: field 'nodes.cn.kind': expected one of"),
    ('prefix: "2001:db8:1::/48"', 'prefix: "2001:db8:1::1/48"', "nodes.ar1.anchor.prefix"),
    ("{a: r, b: ar1}", "{a: r, b: ar9}", "t.yaml:11: field 'links[1].b': no node 'ar9'"),
    ("to: ar2}}", "to: cn}}", "t.yaml:18: field 'timeline[2].move.to': 'cn' is not an anchor"),
    ("at: 0.5", "at: 0.05", "t.yaml:18: field 'timeline[2].at': steps go in time order"),
    ("duration: 1,", "duration: -1,", "timeline[1].flow.duration': expected a number >= 0"),
    ("{lost: 0, address: kept}", "{lost: 0, adress: kept}", "t.yaml:20: field 'expect.f.adress':"
     " unknown field"),
    ("  f: {lost", "  g: {lost", "field 'expect.g': no flow 'g' in the timeline"),
    ("r: {controller: true, lms: true}", "r: {lms: true}", "anchors need a controller"),
    ("cn: {kind: host}", "cn: {kind: host, lms: true}", "nodes.cn.lms': a host hosts no"),
    ("  - {a: cn, b: r}\n", "", "field 'nodes.cn': is linked to nothing"),
    ("{at: 0.5, move:", "{at: 0.5, jump:", "timeline[2]': expected 'at' and one of"),
    ("mn: {kind: mn}", "mn: {kind: mn}\n  mn: {kind: mn}", "field 'nodes.mn' appears twice"),
    ("{lost: 0,", "{lost: '101%',", "field 'expect.f.lost': expected a percentage from 0% to"),
    ("{lost: 0,", "{lost: 'a%',", "field 'expect.f.lost': expected a percentage"),
    ("{lost: 0,", "{lost: -1,", "field 'expect.f.lost': expected a count >= 0 or a percentage"),
    ("{lost: 0,", "{lost: 0.5,", "field 'expect.f.lost': expected a count >= 0 or a percentage"),
    ("  - {at: 0.5, move: {mn: mn, to: ar2}}",
     "  - {at: 0.5, move: {mn: mn, to: ar2}}\n  - {at: 0.6, check: {lease: {flow: f, at: ar1}}}",
     "field 'timeline[3].check.lease.at': 'ar1' is no anchor with pd"),
], ids=["kind", "host-bits", "no-node", "not-anchor", "order", "negative", "unknown-field",
        "unknown-flow", "no-controller", "host-function", "unlinked", "action", "twice",
        "share-over-100", "share-not-a-number", "negative-count", "fractional-count",
        "lease-without-pd"])
def test_bad_scenarios_are_refused_with_a_clear_error(old: str, new: str, message: str) -> None:
    assert old in BASE
    with pytest.raises(ScenarioError) as err:
        parse(BASE.replace(old, new, 1), "t.yaml")
    assert message in str(err.value), str(err.value)
    assert str(err.value).startswith("t.yaml:")


def _probe(sent: int, reordered: int) -> FlowResult:
    return FlowResult("f", "udp", "2001:db8:1:1::1", "2001:db8:1:1::/64", True, sent, sent, 0,
                      0, reordered, None, 1.0, None, reorder_extent=reordered,
                      reorder_late_ms=2.5)


def test_a_make_before_break_move_ends_with_its_old_radio_leaving() -> None:
    """``overlap``: the parser puts the move's ``leave`` where it falls,
    after the other steps of its instant."""
    text = BASE.replace("{at: 0.5, move: {mn: mn, to: ar2}}",
                        "{at: 0.5, move: {mn: mn, to: ar2, overlap: 0.25}}\n"
                        "  - {at: 0.75, close: {flows: [f]}}\n"
                        "  - {at: 0.9, move: {mn: mn, to: ar1}}")
    sc = parse(text, "t.yaml")
    assert [(s.at, s.action) for s in sc.timeline] == [
        (0.0, "attach"), (0.1, "flow"), (0.5, "move"), (0.75, "close"), (0.75, "leave"),
        (0.9, "move")]
    assert sc.timeline[2].args == {"mn": "mn", "to": "ar2", "overlap": 0.25}
    assert sc.timeline[4].args == {"mn": "mn"}


@pytest.mark.parametrize("overlap, message", [
    ("0", "timeline[2].move.overlap': expected seconds, more than 0 and at most 10"),
    ("11", "timeline[2].move.overlap': expected seconds, more than 0 and at most 10"),
    ("0.5", "mn moves again at most 0.5 s after its move at 0.5: its old radio is still up"),
])
def test_a_wrong_overlap_is_an_error(overlap: str, message: str) -> None:
    text = BASE.replace("{at: 0.5, move: {mn: mn, to: ar2}}",
                        f"{{at: 0.5, move: {{mn: mn, to: ar2, overlap: {overlap}}}}}\n"
                        "  - {at: 0.9, move: {mn: mn, to: ar1}}")
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(text, "t.yaml")


def test_a_host_based_mn_does_not_make_before_break() -> None:
    text = BASE.replace("mn: {kind: mn}", "mn: {kind: mn, agent: {}}").replace(
        "to: ar2}}", "to: ar2, overlap: 0.2}}")
    with pytest.raises(ScenarioError, match="host-based MN's moves break before they make"):
        parse(text, "t.yaml")


def test_a_share_limit_is_taken_of_what_the_flow_sent() -> None:
    sc = parse(BASE.replace("{lost: 0, address: kept}", "{lost: 0, reordered: 0.1%}"), "t.yaml")
    assert sc.expect["f"]["reordered"] == Share(0.1)
    assert build_report(sc, [_probe(20_000, 20)], [], {}, {}).failures == []
    assert build_report(sc, [_probe(20_000, 21)], [], {}, {}).failures == [
        "f: reordered 21 > 20 (0.1% of 20000 sent) (worst: 21 packets back, 2.5 ms late)"]
    # A count stays a count: 0 means none.
    strict = parse(BASE.replace("{lost: 0, address: kept}", "{reordered: 0}"), "t.yaml")
    assert build_report(strict, [_probe(20_000, 1)], [], {}, {}).failures == [
        "f: reordered 1 > 0 (worst: 1 packets back, 2.5 ms late)"]


def test_not_yaml_and_empty_are_refused() -> None:
    with pytest.raises(ScenarioError, match="not valid YAML"):
        parse("nodes: [", "x.yaml")
    with pytest.raises(ScenarioError, match="empty"):
        parse("", "x.yaml")


def test_plan_addresses_routes_and_stretch_facts() -> None:
    plan = make_plan(parse(BASE, "t.yaml"))
    r, ar1 = plan.nodes["r"], plan.nodes["ar1"]
    assert [i.address for i in r.ifaces] == ["2001:db8:99:1::ff/64", "fd00:2::1/64",
                                             "fd00:3::1/64"]
    assert ar1.dpa is not None and str(ar1.dpa) == "fc00::1:0"
    # The core routes each anchor's network and SIDs to it; an access router
    # sends everything else up its default route.
    assert (Prefix.parse("2001:db8:1::/48"), "fd00:2::2") in r.routes
    assert (Prefix.parse("fc00::2:0/127"), "fd00:3::2") in r.routes
    assert ar1.uplink == "fd00:2::1" and ar1.routes == []
    assert plan.path("cn", "ar2") == ["cn", "r", "ar2"] and plan.hops[("ar1", "ar2")] == 2


@pytest.mark.parametrize("name", list(shipped()))
def test_every_shipped_scenario_plans_configs_the_node_accepts(name: str,
                                                              tmp_path: Path) -> None:
    sc = find(name)
    assert sc.covers and sc.expect
    plan = make_plan(sc)
    configs = 0
    for node, np in plan.nodes.items():
        if not np.config:
            continue
        path = tmp_path / f"{node}.toml"
        path.write_text(np.config.replace("@CONTROL@", str(tmp_path / "c.sock"))
                        .replace("@TRACE@", str(tmp_path / "t.jsonl")).replace("@LOG@", "info")
                        .replace("@STATE@", str(tmp_path / "s.json")))
        cfg = load_node_config(path)  # the real loader: raises on any bad field
        assert cfg.node_id == node
        if np.spec.anchor is not None and np.spec.anchor.cp is not None:
            # An AR whose control plane is the controller's: an FM-DP only,
            # reporting there; the controller's config names its DPA.
            assert cfg.anchor is None and cfg.fmdp is not None
            ctl = load_node_config(tmp_path / f"{np.spec.anchor.cp}.toml").controller
            assert ctl is not None
            assert [a.dpa for a in ctl[1].access if a.name == node] == [np.dpa]
        elif np.spec.anchor is not None:
            assert cfg.anchor is not None and cfg.anchor[1].dpa == np.dpa
        configs += 1
    assert configs >= 2


def test_an_unannounced_break_may_lose_what_the_downed_link_dropped_and_says_so() -> None:
    sc = parse(BASE.replace("{lost: 0, address: kept}", "{lost: 0, charged: exact}"), "t.yaml")
    move = MoveRecord("mn", "ar1", "ar2", 1.0, [], [], radio_drops=2)

    def crossing(lost: int, charged: int) -> FlowResult:
        return FlowResult("f", "udp", "2001:db8:1:1::1", "2001:db8:1:1::/64", True, 1000,
                          1000 - lost, lost, 0, 0, None, 1.0, charged, _times=[0.5, 1.5])

    # Announced (the L2 trigger): nothing may be lost, charging is exact.
    assert build_report(sc, [crossing(1, 1000)], [move], {}, {}).failures == [
        "f: lost 1 > 0", "f: charged 1000 packets, 999 delivered (FM:2)"]
    # Unannounced: what the old router's kernel dropped on the downed link
    # (it was charged there) is allowed ...
    assert build_report(sc, [crossing(2, 1000)], [move], {}, {}, unannounced=True).failures == []
    # ... and no more.
    assert build_report(sc, [crossing(3, 1000)], [move], {}, {}, unannounced=True).failures == [
        "f: lost 3 > 2 (+2 dropped on the access link as it went, unannounced)",
        "f: charged 1000 packets, 997 delivered (FM:2)"]


# -- walk: a crowd in a few lines ---------------------------------------------------------

WALK = """\
scenario: w
title: a walk
nodes:
  cn: {kind: host}
  r: {controller: true, lms: true}
  ar1: {anchor: {prefix: "2001:db8:1::/48"}}
  ar2: {anchor: {prefix: "2001:db8:2::/48"}}
  ar3: {anchor: {prefix: "2001:db8:3::/48"}}
links:
  - {a: cn, b: r}
  - {a: r, b: ar1}
  - {a: r, b: ar2}
  - {a: r, b: ar3}
walk:
  seed: 3
  mns: 5
  routers: [ar1, ar2, ar3]
  adjacent: {ar1: [ar2], ar2: [ar3], ar3: [ar1]}
  moves: 40
  start: 1.0
  dwell: [0.5, 1.0]
  probe: {from: cn, rate: 100}
  tcp: {from: cn, mns: 2}
  expect:
    probe: {lost: 0, reordered: 0.1%}
    tcp: {tcp: unbroken}
timeline:
  - {at: 0.1, check: {counter: {node: ar1, name: holds, min: 0}}}
"""


def test_a_walk_expands_into_mns_links_flows_moves_and_expectations() -> None:
    sc = parse(WALK, "w.yaml")
    mns = [n for n, s in sc.nodes.items() if s.kind == "mn"]
    assert mns == [f"mn{k}" for k in range(1, 6)]
    assert len(sc.links) == 4 + 5 * 3  # every MN has a radio towards every router
    moves = [s for s in sc.timeline if s.action == "move"]
    assert len(moves) == 40
    assert [s.at for s in sc.timeline] == sorted(s.at for s in sc.timeline)
    assert sc.timeline[5].action == "check"  # the written step, merged in time order
    # Each MN dwells within the bounds and goes only where ``adjacent`` allows.
    nxt = {"ar1": "ar2", "ar2": "ar3", "ar3": "ar1"}
    where = {s.args["mn"]: s.args["to"] for s in sc.timeline if s.action == "attach"}
    last: dict[str, float] = {}
    for s in moves:
        mn = s.args["mn"]
        assert s.args["to"] == nxt[where[mn]]
        where[mn] = s.args["to"]
        if mn in last:
            assert 0.5 - 1e-6 <= s.at - last[mn] <= 1.0 + 1e-6
        last[mn] = s.at
    assert set(sc.flows) == {f"p-mn{k}" for k in range(1, 6)} | {"t-mn1", "t-mn2"}
    assert all(f.continuity for f in sc.flows.values())
    assert sc.flows["p-mn3"].rate == 100 and sc.flows["t-mn1"].kind == "tcp"
    end = max(s.at for s in moves)
    assert all(f.duration == pytest.approx(end + 0.8 - 0.2) for f in sc.flows.values())
    assert sc.expect["p-mn4"] == {"lost": 0, "reordered": Share(0.1)}
    assert sc.expect["t-mn2"] == {"tcp": "unbroken"}


def test_a_walk_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    def walk(text: str) -> list[tuple[float, str, str]]:
        return [(s.at, s.args["mn"], s.args["to"]) for s in parse(text).timeline
                if s.action in ("attach", "move")]
    assert walk(WALK) == walk(WALK)
    assert walk(WALK) != walk(WALK.replace("seed: 3", "seed: 4"))


@pytest.mark.parametrize("old, new, message", [
    ("routers: [ar1, ar2, ar3]", "routers: [ar1]", "field 'walk.routers': a walk needs at"),
    ("routers: [ar1, ar2, ar3]\n  adjacent: {ar1: [ar2], ar2: [ar3], ar3: [ar1]}",
     "routers: [ar1, cn]", "w.yaml:15: field 'timeline[2].attach.to': 'cn' is not an anchor"),
    ("ar3: [ar1]}", "ar3: [ar3]}", "field 'walk.adjacent.ar3': each router"),
    ("dwell: [0.5, 1.0]", "dwell: [1.0, 0.5]", "field 'walk.dwell': expected [shortest"),
    ("tcp: {from: cn, mns: 2}", "tcp: {from: cn, mns: 9}", "field 'walk.tcp.mns': more"),
    ("mns: 5", "mns: 100", "field 'walk.mns': at most 99"),
    ("probe: {from: cn, rate: 100}", "probe: {from: cn, rat: 100}", "walk.probe.rat': unknown"),
    ("  seed: 3", "  seed: 3\n  speed: 2", "field 'walk.speed': unknown field"),
    ("probe: {lost: 0", "probes: {lost: 0", "field 'walk.expect.probes': expected probe or tcp"),
    ("  cn: {kind: host}", "  cn: {kind: host}\n  mn2: {kind: mn}", "node 'mn2' is already"),
])
def test_a_wrong_walk_is_an_error_naming_its_field(old: str, new: str, message: str) -> None:
    assert old in WALK
    with pytest.raises(ScenarioError, match=None) as err:
        parse(WALK.replace(old, new), "w.yaml")
    assert message in str(err.value)


def test_the_summary_counts_each_move_once_for_its_own_mn() -> None:
    sc = parse(WALK)
    moves = [MoveRecord("mn1", "ar1", "ar2", 10.0, [], []),
             MoveRecord("mn2", "ar2", "ar3", 20.0, [], [])]
    # p-mn1 received throughout, with a 52 ms gap at its own move and a
    # 2 ms one at mn2's - which is none of its business.
    times = [t / 1000 for t in range(5000, 9990, 2)] + [t / 1000 for t in range(10040, 25000, 2)]
    f = FlowResult("p-mn1", "udp", "2001:db8:1:1::1", "2001:db8:1:1::/64", True, 10, 10, 0, 0,
                   0, None, 1.0, 10, _times=times)
    g = FlowResult("p-mn2", "udp", "2001:db8:2:1::1", "2001:db8:2:1::/64", True, 10, 9, 1, 0,
                   2, None, 1.0, 10, _times=[19.0, 19.99, 20.02, 21.0])
    rep = build_report(sc, [f, g], moves, {}, {})
    assert [e.move for e in f.moves] == ["ar1->ar2"] and [e.move for e in g.moves] == ["ar2->ar3"]
    assert rep.summary["moves"] == 2 and rep.summary["lost"] == 1
    assert rep.summary["reordered"] == 2 and rep.summary["sent"] == 20
    i = rep.summary["interruption_ms"]
    assert (i["p50"], i["max"], i["samples"]) == (pytest.approx(30.0), pytest.approx(52.0), 2)


def test_a_metrics_check_names_a_metric_its_labels_and_a_bound() -> None:
    text = BASE.replace("  - {at: 0.5, move: {mn: mn, to: ar2}}\n", (
        "  - {at: 0.4, check: {metrics: {node: ar1, name: dmanchor_lifts_total, max: 0}}}\n"
        "  - {at: 0.5, move: {mn: mn, to: ar2}}\n"
        "  - {at: 0.6, check: {metrics: {node: ar2, name: dmanchor_messages_total,\n"
        "                               labels: {type: BUFFER_READY}}}}\n"))
    checks = [s.args for s in parse(text).timeline if s.action == "check"]
    assert checks == [
        {"check": "metrics", "node": "ar1", "name": "dmanchor_lifts_total", "labels": {},
         "max": 0.0, "min": None},
        {"check": "metrics", "node": "ar2", "name": "dmanchor_messages_total",
         "labels": {"type": "BUFFER_READY"}, "max": None, "min": 1.0}]
    with pytest.raises(ScenarioError, match=r"metrics\.node': no node 'ar9'"):
        parse(text.replace("node: ar1, name", "node: ar9, name"))


def test_a_pool_members_anchor_is_given_the_other_members(tmp_path: Path) -> None:
    """Fig 1a: each anchor asks its own LMs pool member first and knows the
    others (``lms_pool``) for when it is silent; a pool without the member
    asked first is a config error naming the field."""
    plan = make_plan(find("fig1a"))
    text = (plan.nodes["ar2"].config.replace("@CONTROL@", str(tmp_path / "c.sock"))
            .replace("@TRACE@", str(tmp_path / "t.jsonl")).replace("@LOG@", "info")
            .replace("@LMSTATE@", str(tmp_path / "lms")))
    path = tmp_path / "ar2.toml"
    path.write_text(text)
    cfg = load_node_config(path)
    assert cfg.anchor is not None
    s = cfg.anchor[1]
    assert s.lms is not None and len(s.lms_pool) == 1 and s.lms_pool[0] != s.lms
    assert s.lms_pool[0][0] == str(plan.nodes["ar1"].control)
    path.write_text("\n".join(line for line in text.splitlines()
                              if not line.startswith("lms = ")))
    with pytest.raises(ConfigError, match=r"anchor\.lms_pool"):
        load_node_config(path)


def test_a_failing_teardown_step_still_stops_the_nodes_and_removes_the_namespaces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulation.close runs every step: one that raised before stopping the
    node processes once left them, and 29 namespaces, behind."""
    from dmanchor.scenario.emulator import Emulation

    emu = Emulation(find("4.1.2"), tmp_path)
    done: list[str] = []

    def kea_fails() -> None:
        done.append("kea")
        raise OSError("kea would not stop")

    monkeypatch.setattr(emu, "_stop_kea", kea_fails)
    monkeypatch.setattr(emu.procs, "stop", lambda: done.append("procs"))
    monkeypatch.setattr(emu, "_stop_birds", lambda: done.append("birds"))
    def cleanup() -> list[str]:
        done.append("namespaces")
        return []

    monkeypatch.setattr(emu.lab, "cleanup", cleanup)
    with pytest.raises(OSError, match="kea would not stop"):
        emu.close()
    assert done == ["kea", "procs", "birds", "namespaces"]
