"""Call-flow diagrams drawn from node traces (dmanchor.scenario.callflow)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from dmanchor.scenario.callflow import Arrow, Note, build, mermaid, svg, write

NAMES = {"fd00:2::1": "r", "fd00:3::2": "ar2", "fd00:2::2": "ar1", "fc00::2:0": "ar2"}
MOVES: list[dict[str, Any]] = [{"mn": "mn", "old": None, "new": "ar1", "at": 10.0},
         {"mn": "mn", "old": "ar1", "new": "ar2", "at": 20.0}]


def rec(t: float, node: str, **kw: object) -> dict[str, Any]:
    return {"t": t, "node": node, **kw}


RECORDS = [
    rec(19.0, "ar2", fn="anchor", dir="tx", type="LOCATION_UPDATE", peer=["fd00:2::1", 5401]),
    rec(19.999, "ar1", fn="dataplane", add=[{"kind": "BUFFER", "prefix": "2001:db8:1:1::/64"}],
        delete=[{"kind": "ANCHOR", "prefix": "2001:db8:1:1::/64", "link": "mn"}]),
    rec(20.001, "ar2", fn="anchor", dir="tx", type="LOCATION_UPDATE", peer=["fd00:2::1", 5401]),
    rec(20.0012, "r", fn="lms", dir="rx", type="LOCATION_UPDATE", peer=["fd00:3::2", 5400]),
    rec(20.002, "ar2", fn="anchor", dir="tx", type="ANCHOR_REGISTRATION",
        peer=["fd00:2::1", 5400]),
    rec(20.003, "ar2", fn="anchor", dir="tx", type="BUFFER_READY", peer=["fd00:2::2", 5400]),
    rec(20.004, "ar1", fn="dataplane",
        add=[{"kind": "TUNNEL", "prefix": "2001:db8:1:1::/64", "next_hop": "fc00::2:0"}],
        delete=[{"kind": "BUFFER", "prefix": "2001:db8:1:1::/64"}]),
    rec(20.005, "ar1", fn="lift", prefix="2001:db8:1:1::/64", cause="apply", released=7),
    rec(20.9, "ar2", fn="anchor", dir="tx", type="LOCATION_UPDATE", peer=["fd00:2::1", 5401]),
]


def test_each_move_is_drawn_from_the_messages_sent_in_order() -> None:
    [flow] = build(RECORDS, MOVES, NAMES)
    assert flow.title == "move 1: mn ar1 -> ar2"
    assert flow.lifelines == ["mn", "ar1", "ar2", "r"]
    arrows = [x for x in flow.items if isinstance(x, Arrow)]
    # Each message once (as sent), periodic registrations left out, nothing
    # from before the move's window or after it.
    assert [(a.src, a.dst, a.label) for a in arrows] == [
        ("ar2", "r", "LOCATION_UPDATE (LM:1-4)"), ("ar2", "ar1", "BUFFER_READY (FM:6-2)")]
    assert abs(arrows[0].t - 0.001) < 1e-9
    notes = [x.text for x in flow.items if isinstance(x, Note)]
    assert notes == ["+hold 2001:db8:1:1::/64; -on link mn 2001:db8:1:1::/64",
                     "radio: ar1 -> ar2",
                     "+tunnel 2001:db8:1:1::/64 -> ar2; -hold 2001:db8:1:1::/64",
                     "lift 2001:db8:1:1::/64 (apply, 7 pkts)"]


def test_another_mns_move_at_the_same_moment_does_not_cut_the_diagram() -> None:
    other = [{"mn": "mn2", "old": "ar2", "new": "ar1", "at": 20.002}]  # 2 ms later
    [flow, _] = build(RECORDS, [*MOVES, *other], NAMES)
    assert [x.label for x in flow.items if isinstance(x, Arrow)] == [
        "LOCATION_UPDATE (LM:1-4)", "BUFFER_READY (FM:6-2)"]


def test_mermaid_and_svg_say_the_same() -> None:
    [flow] = build(RECORDS, MOVES, NAMES)
    text = mermaid(flow)
    assert text.splitlines()[:3] == ["sequenceDiagram", "    title move 1: mn ar1 -> ar2",
                                     "    participant n0 as mn"]
    assert "    n2->>n1: +3.00 ms BUFFER_READY (FM:6-2)" in text
    root = ET.fromstring(svg(flow))  # well-formed, self-contained
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "BUFFER_READY (FM:6-2)" in texts and "+3.00 ms" in texts
    assert not list(root.iter("{http://www.w3.org/2000/svg}script"))


def test_write_draws_a_kept_run_and_survives_a_cut_trace_line(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps({"moves": MOVES}))
    (tmp_path / "nodes.json").write_text(json.dumps(NAMES))
    lines = [json.dumps(r) for r in RECORDS] + ['{"t": 20.5, "node": "ar']  # killed mid-line
    (tmp_path / "ar.trace.jsonl").write_text("\n".join(lines))
    written = write(tmp_path)
    assert [p.name for p in written] == ["callflow-1.mmd", "callflow-1.svg"]
    assert "BUFFER_READY" in written[0].read_text()
