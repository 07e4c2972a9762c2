"""Plots of a run: each flow's packets (or TCP goodput) over time, moves marked.

The emulator keeps every flow's arrival times in ``DIR/arrivals.json``;
``dmanchor run --out DIR --plots`` and ``dmanchor trace DIR`` draw, per
flow, ``DIR/flow-NAME.png``: UDP packets received per 5 ms (TCP: goodput
in MB/s per 20 ms) against time from the first move, each move of the
flow's MN as a dashed line, and the interruption around it - from the last
arrival before the move to the first after - shaded and labelled.
(matplotlib, without a display.)
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any

UDP_BIN, TCP_BIN = 0.005, 0.02
"""Seconds per bar: packets per 5 ms, TCP bytes per 20 ms."""


def save_arrivals(directory: Path, flows: dict[str, dict[str, Any]],
                  moves: list[dict[str, Any]]) -> Path:
    """Keep what the plots need: per flow its kind, MN, arrival times (and
    TCP's byte counts); and the moves."""
    path = directory / "arrivals.json"
    path.write_text(json.dumps({"flows": flows, "moves": moves}))
    return path


def _bins(times: list[float], values: list[float], width: float, t0: float,
          t1: float) -> tuple[list[float], list[float]]:
    n = max(1, int((t1 - t0) / width) + 1)
    sums = [0.0] * n
    for t, v in zip(times, values, strict=True):
        i = int((t - t0) / width)
        if 0 <= i < n:
            sums[i] += v
    return [t0 + width * i for i in range(n)], sums


def gaps(times: list[float], moves: list[float]) -> list[tuple[float, float]]:
    """The interruption around each move: (last arrival before, first after)."""
    out = []
    for at in moves:
        i = bisect.bisect_left(times, at)
        if 0 < i < len(times):
            out.append((times[i - 1], times[i]))
    return out


def draw(directory: Path) -> list[Path]:
    """One PNG per flow of the run kept in ``directory``; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads((directory / "arrivals.json").read_text())
    moves = data["moves"]
    written = []
    for name, f in data["flows"].items():
        times = f["times"]
        if not times:
            continue
        at = [m["at"] for m in moves if m["mn"] == f["mn"] and m.get("old") is not None]
        t0 = at[0] if at else times[0]
        rel = [t - t0 for t in times]
        if f["kind"] == "tcp":
            sizes = [b - a for a, b in zip([0, *f["bytes"][:-1]], f["bytes"], strict=True)]
            x, y = _bins(rel, [s / TCP_BIN / 1e6 for s in sizes], TCP_BIN, rel[0], rel[-1])
            ylabel, width = "goodput (MB/s)", TCP_BIN
        else:
            x, y = _bins(rel, [1.0] * len(rel), UDP_BIN, rel[0], rel[-1])
            ylabel, width = f"packets per {UDP_BIN * 1e3:g} ms", UDP_BIN
        fig, ax = plt.subplots(figsize=(9, 3.2))
        ax.bar(x, y, width=width, align="edge", color="#36c", linewidth=0)
        for (a, b), m in zip(gaps(times, at), at, strict=False):
            ax.axvspan(a - t0, b - t0, color="#f90", alpha=0.35)
            ax.text(b - t0, max(y) * 0.95, f" {(b - a) * 1e3:.1f} ms", color="#a50",
                    fontsize=8, va="top")
            ax.axvline(m - t0, color="#c00", linestyle="--", linewidth=0.8)
        ax.set_xlabel("seconds from the first move" if at else "seconds")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{name} ({f['kind']}, to {f['mn']}): moves dashed, interruptions shaded",
                     fontsize=10)
        fig.tight_layout()
        path = directory / f"flow-{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
