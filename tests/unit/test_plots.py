"""Per-flow plots of a run (dmanchor.scenario.plots)."""

from __future__ import annotations

from pathlib import Path

from dmanchor.scenario.plots import draw, gaps, save_arrivals


def test_the_interruption_is_the_gap_around_each_move() -> None:
    times = [0.0, 0.001, 0.002, 0.030, 0.031, 0.5]
    assert gaps(times, [0.01, 0.4]) == [(0.002, 0.030), (0.031, 0.5)]
    assert gaps(times, [-1.0, 9.0]) == []  # not running across it


def test_each_flow_gets_a_png(tmp_path: Path) -> None:
    udp = [i * 0.001 for i in range(1000) if not 400 <= i < 420]  # a 21 ms gap at 0.41
    tcp = [i * 0.002 for i in range(500)]
    save_arrivals(tmp_path, {
        "probe": {"kind": "udp", "mn": "mn", "times": udp},
        "stream": {"kind": "tcp", "mn": "mn", "times": tcp,
                   "bytes": [16384 * (i + 1) for i in range(500)]},
        "never": {"kind": "udp", "mn": "mn", "times": []},
    }, [{"mn": "mn", "old": None, "new": "ar1", "at": 0.0},
        {"mn": "mn", "old": "ar1", "new": "ar2", "at": 0.41}])
    written = draw(tmp_path)
    assert [p.name for p in written] == ["flow-probe.png", "flow-stream.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
