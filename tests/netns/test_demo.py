"""The demo (make demo) itself, both scenarios, shorter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmanchor.emulation.demo import run


@pytest.mark.parametrize("scenario", ["4.2.1", "4.1.2"])
def test_demo_scenario_is_lossless_and_its_checks_hold(scenario: str, tmp_path: Path) -> None:
    report = run(scenario, rate=2000, seconds=2.0, workdir=tmp_path)
    assert report.udp_sent == 4000
    assert (report.udp_lost, report.udp_duplicates, report.udp_reordered) == (0, 0, 0)
    assert report.tcp_unbroken and report.tcp_bytes > 0
    assert report.new_flow_delivered == "500/500"
    assert report.charged_packets == report.udp_sent
    assert report.checks and all(report.checks.values()), report.checks
    assert report.signalling["BUFFER_READY"]["messages"] >= 1
    # --out keeps each node's trace: messages and data-plane changes, as JSON lines.
    records = [json.loads(line) for line in (tmp_path / "ar1.trace.jsonl").read_text()
               .splitlines()]
    assert any(r.get("type") == "BUFFER_READY" and r["dir"] == "rx" for r in records)
    assert any(r["fn"] == "dataplane" and {"kind": "BUFFER", "prefix": "2001:db8:1:1::/64"}
               in r["add"] for r in records)
    assert json.loads((tmp_path / "report.json").read_text())["udp_lost"] == 0
