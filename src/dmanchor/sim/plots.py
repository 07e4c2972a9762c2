"""Plots of a ``dmanchor sim`` run, both designs on each (matplotlib, no display).

``dmanchor sim --out DIR`` writes ``DIR/report.json`` and:

- ``stretch-cdf.png``: the CDF of path stretch over the kept sessions' probes;
- ``latency-cdf.png``: the CDF of handover latency (arrival to the anchor
  sending down the new path);
- ``tunnels-cdf.png``: the CDF of tunnel state per router (the distributed
  design's access routers at the end of the run; the centralized MAGs and
  its LMA);
- ``signalling.png``: messages and bytes per handover.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .simulate import SimReport, Simulation

COLOURS = {"distributed": "#36c", "centralized": "#c60"}


def _cdf(ax: Any, samples: dict[str, list[float]], xlabel: str, title: str) -> None:
    for design, xs in samples.items():
        if not xs:
            continue
        xs = sorted(xs)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=design, color=COLOURS[design])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)


def write(sim: Simulation, report: SimReport, directory: Path) -> list[Path]:
    """Write the report and the plots into ``directory``; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    out = [directory / "report.json"]
    out[0].write_text(json.dumps(dataclasses.asdict(report), indent=1))
    on_mag = Counter(sim.network.access[mn.at - 1] for mn in sim.mns if mn.at)
    figures: dict[str, tuple[dict[str, list[float]], str, str]] = {
        "stretch-cdf": ({"distributed": sim.stretch, "centralized": sim.central_stretch},
                        "path length / shortest", "path stretch of kept sessions"),
        "latency-cdf": ({"distributed": [x * 1e3 for x in sim.latency],
                         "centralized": [x * 1e3 for x in sim.central_latency]},
                        "ms", "handover latency (arrival to the anchor's new path)"),
        "tunnels-cdf": ({"distributed": [float(n) for n in sim.tunnels_at.values()],
                         "centralized": [float(on_mag[a]) for a in sim.network.access]
                         + [float(len(sim.mns))]},
                        "tunnel entries", "tunnel state per router (centralized: MAGs + LMA)"),
    }
    for name, (samples, xlabel, title) in figures.items():
        fig, ax = plt.subplots(figsize=(6, 3.4))
        _cdf(ax, samples, xlabel, title)
        fig.tight_layout()
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out.append(path)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, key, label in ((axes[0], "messages_per_handover", "messages"),
                           (axes[1], "bytes_per_handover", "bytes")):
        values = [getattr(report.distributed, key), getattr(report.centralized, key)]
        ax.bar(list(COLOURS), values, color=list(COLOURS.values()))
        ax.set_title(f"{label} per handover", fontsize=10)
    fig.tight_layout()
    path = directory / "signalling.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    out.append(path)
    return out
