"""``dmanchor sweep SPEC``: many independent simulations on a Dask cluster.

A sweep is a base :class:`~.simulate.SimConfig` and the values to vary -
seeds, sizes, topologies, dwell times - whose cartesian product is run, one
simulation per point, each a task on a Dask cluster (a local one of
``workers`` processes by default; ``scheduler``: the address of a real
one).  Every simulation reports both designs (distributed and centralized)
on the same topology and mobility, so the designs are not a dimension of
their own.  Results are gathered into one table, averaged over the seeds
(with their spread), and optionally a CSV and a plot.

Why Dask rather than Ray: the simulations are independent CPU-bound tasks
that need nothing but ``client.map``; ``dask.distributed`` is two pure-Python
wheels, a local cluster is one call, and a real one is a scheduler address
(``dask scheduler`` / ``dask worker``).  Ray's wheel alone is larger than
this project and brings its own object store, dashboard and runtime.

The spec (YAML)::

    base:                  # SimConfig fields (dmanchor sim's options)
      topology: tree
      duration: 20
    vary:                  # each a list: every combination is run
      seed: [1, 2, 3]
      mns: [50, 200]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .simulate import SimConfig, Simulation

FIGURES = ("stretch_mean", "stretch_p99", "stretch_all_mean", "messages_per_handover",
           "bytes_per_handover", "latency_ms_p50", "latency_ms_p99", "tunnels_max",
           "tunnels_mean")
"""The per-design figures a sweep collects (:class:`~.simulate.DesignReport`)."""
DESIGNS = ("distributed", "centralized")
MAX_POINTS = 10_000
"""Most simulations one sweep may ask for (a typo in a list can ask for a lot)."""


class SweepError(ValueError):
    """A spec that cannot be run, with what is wrong in it."""


@dataclass(frozen=True, slots=True)
class Spec:
    """A parsed sweep: the base config and the values varied."""

    base: Mapping[str, Any]
    vary: Mapping[str, Sequence[Any]]

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the varied values over the base, in order."""
        names = list(self.vary)
        return [{**self.base, **dict(zip(names, values, strict=True))}
                for values in itertools.product(*(self.vary[n] for n in names))]


def load_spec(path: Path) -> Spec:
    """Read and check a sweep spec; errors name the field."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SweepError(f"{path}: {exc}") from exc
    return parse_spec(doc, str(path))


def parse_spec(doc: object, where: str = "spec") -> Spec:
    """Check a spec given as data (see the module doc)."""
    if not isinstance(doc, dict) or set(doc) - {"base", "vary"}:
        raise SweepError(f"{where}: expected a mapping with 'base' and 'vary'")
    base, vary = doc.get("base") or {}, doc.get("vary") or {}
    if not isinstance(base, dict) or not isinstance(vary, dict):
        raise SweepError(f"{where}: 'base' and 'vary' must be mappings")
    known = {f.name for f in dataclasses.fields(SimConfig)} - {"trace"}
    for section, table in (("base", base), ("vary", vary)):
        for name in table:
            if name not in known:
                raise SweepError(f"{where}: field '{section}.{name}': not a simulation "
                                 f"option (one of {', '.join(sorted(known))})")
    for name, values in vary.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: field 'vary.{name}': expected a non-empty list")
    spec = Spec(base, {k: list(v) for k, v in vary.items()})
    n = math.prod(len(v) for v in spec.vary.values())
    if n > MAX_POINTS:
        raise SweepError(f"{where}: {n} simulations, more than {MAX_POINTS}")
    for point in spec.points():
        try:
            Simulation.check(SimConfig(**point))
        except (TypeError, ValueError) as exc:
            raise SweepError(f"{where}: {point}: {exc}") from exc
    return spec


def run_point(point: Mapping[str, Any]) -> dict[str, Any]:
    """One simulation of the sweep (a Dask task: module-level, plain data
    in and out): its config and both designs' figures, flat."""
    report = Simulation(SimConfig(**point)).run()
    row: dict[str, Any] = {"config": dict(point), "handovers": report.handovers,
                           "wall_s": report.wall_s}
    for design in DESIGNS:
        figures = dataclasses.asdict(getattr(report, design))
        row.update({f"{design}.{k}": figures[k] for k in FIGURES})
    return row


@dataclass(slots=True)
class SweepResult:
    """What a sweep found: one row per simulation, in the spec's order."""

    spec: Spec
    rows: list[dict[str, Any]]
    wall_s: float
    workers: int
    """Dask workers that ran it."""
    groups: list[dict[str, Any]] = field(default_factory=list)
    """The rows averaged over seeds (see :func:`summarize`)."""


def run_sweep(spec: Spec, *, scheduler: str | None = None, workers: int = 2,
              progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run every point of ``spec`` on Dask and gather the rows in order.

    ``scheduler``: a running scheduler's address (``tcp://host:8786``);
    without one a local cluster of ``workers`` single-threaded processes
    is started for the sweep and closed after it.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    points = spec.points()
    started = time.perf_counter()
    # (dask.distributed's constructors are not annotated: the ignores below.)
    cluster = None if scheduler is not None else LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        target = scheduler if scheduler is not None else cluster
        with Client(target) as client:  # type: ignore[no-untyped-call]
            n_workers = len(client.scheduler_info()["workers"])
            futures = client.map(run_point, points, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            rows: list[dict[str, Any] | None] = [None] * len(points)
            done_in_turn = as_completed(futures)  # type: ignore[no-untyped-call]
            for done, future in enumerate(done_in_turn, start=1):
                rows[index[future.key]] = future.result()
                if progress is not None:
                    progress(done, len(points))
    finally:
        if cluster is not None:
            cluster.close()
    complete = [r for r in rows if r is not None]
    result = SweepResult(spec, complete, time.perf_counter() - started, n_workers)
    result.groups = summarize(spec, complete)
    return result


def summarize(spec: Spec, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Average the rows over the seeds: one group per combination of the
    other varied values, each figure as its mean and (with several seeds)
    its sample standard deviation."""
    keys = [k for k in spec.vary if k != "seed"]
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row["config"][k] for k in keys), []).append(row)
    out = []
    for values, members in groups.items():
        g: dict[str, Any] = {"values": dict(zip(keys, values, strict=True)),
                             "runs": len(members)}
        for design in DESIGNS:
            for fig in FIGURES:
                xs = [float(r[f"{design}.{fig}"]) for r in members]
                g[f"{design}.{fig}"] = statistics.fmean(xs)
                g[f"{design}.{fig}.sd"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        out.append(g)
    return out


SHOWN = (("stretch, kept sessions", "stretch_mean", "{:.3f}"),
         ("stretch, every flow", "stretch_all_mean", "{:.3f}"),
         ("messages/handover", "messages_per_handover", "{:.1f}"),
         ("latency p50 ms", "latency_ms_p50", "{:.1f}"),
         ("tunnels max", "tunnels_max", "{:.0f}"))


def format_sweep(r: SweepResult) -> str:
    """The table: one line per group and design, the figures as mean (sd)."""
    keys = [k for k in r.spec.vary if k != "seed"]
    seeds = len(r.spec.vary.get("seed", [r.spec.base.get("seed", 1)]))
    head = [*keys, "design", *(name for name, _, _ in SHOWN)]
    lines = []
    for g in r.groups:
        for design in DESIGNS:
            cells = [str(g["values"][k]) for k in keys] + [design]
            for _, fig, fmt in SHOWN:
                cell = fmt.format(g[f"{design}.{fig}"])
                if g["runs"] > 1:
                    cell += " (" + fmt.format(g[f"{design}.{fig}.sd"]) + ")"
                cells.append(cell)
            lines.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    body = "\n".join(fmt_row.format(*cells) for cells in lines)
    return (f"dmanchor sweep: {len(r.rows)} simulations on {r.workers} Dask workers in "
            f"{r.wall_s:.1f} s ({seeds} seed{'s' if seeds > 1 else ''} each point; "
            f"mean (sd) over seeds)\n\n{fmt_row.format(*head)}\n{body}")


def write_outputs(r: SweepResult, out: Path) -> list[Path]:
    """``out/sweep.csv`` (one row per simulation) and, when one value besides
    the seed is varied, ``out/sweep.png`` (each figure against it)."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "sweep.csv"]
    cols = [*r.spec.vary, "handovers", *(f"{d}.{f}" for d in DESIGNS for f in FIGURES)]
    with written[0].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for row in r.rows:
            w.writerow([row["config"].get(c, row.get(c)) if c in r.spec.vary else row[c]
                        for c in cols])
    keys = [k for k in r.spec.vary if k != "seed"]
    if len(keys) == 1:  # (with more, one line per design would mix them)
        written.append(_plot(r, keys[0], out / "sweep.png"))
    return written


def _plot(r: SweepResult, key: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import COLOURS

    fig, axes = plt.subplots(1, len(SHOWN), figsize=(4 * len(SHOWN), 3.4))
    xs = [g["values"][key] for g in r.groups]
    numeric = all(isinstance(x, int | float) for x in xs)
    for ax, (name, fig_name, _) in zip(axes, SHOWN, strict=True):
        for design in DESIGNS:
            ys = [g[f"{design}.{fig_name}"] for g in r.groups]
            sds = [g[f"{design}.{fig_name}.sd"] for g in r.groups]
            at = xs if numeric else list(range(len(xs)))
            ax.errorbar(at, ys, yerr=sds, marker="o", capsize=3, label=design,
                        color=COLOURS[design])
            if not numeric:
                ax.set_xticks(at, [str(x) for x in xs])
        ax.set_xlabel(key)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
