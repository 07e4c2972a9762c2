"""``dmanchor sweep``: a parameter sweep of simulations on a local Dask
cluster of 2 worker processes (issue 17 section 3)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dmanchor.cli import main
from dmanchor.sim.sweep import (
    SweepError,
    format_sweep,
    parse_spec,
    run_point,
    run_sweep,
    write_outputs,
)

SMALL = {"base": {"aggregations": 2, "access_per_aggregation": 2, "duration": 4.0,
                  "dwell": 1.0},
         "vary": {"mns": [4, 8], "seed": [1, 2]}}
"""Four small simulations: two sizes, two seeds each."""


def _figures(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if k != "wall_s"}


def test_a_sweep_on_two_workers_gathers_what_each_simulation_gives(tmp_path: Path) -> None:
    spec = parse_spec(SMALL)
    result = run_sweep(spec, workers=2)
    assert result.workers == 2
    # Every point once, in the spec's order, whatever order they finished in.
    assert [row["config"] for row in result.rows] == spec.points()
    assert len(result.rows) == 4
    # Each row is what that simulation gives when run here: same seed, same run.
    assert _figures(result.rows[3]) == _figures(run_point(spec.points()[3]))
    assert all(row["handovers"] > 0 for row in result.rows)
    # Averaged over the seeds: one group per size, both designs in each.
    assert [g["values"] for g in result.groups] == [{"mns": 4}, {"mns": 8}]
    assert all(g["runs"] == 2 for g in result.groups)
    table = format_sweep(result)
    assert table.count("distributed") == 2 and table.count("centralized") == 2
    written = write_outputs(result, tmp_path)
    with (tmp_path / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["mns"]), int(r["seed"])) for r in rows] == [(4, 1), (4, 2), (8, 1), (8, 2)]
    assert tmp_path / "sweep.png" in written and (tmp_path / "sweep.png").stat().st_size > 0


@pytest.mark.parametrize(("doc", "field"), [
    ({"base": {"mnz": 4}}, "base.mnz"),
    ({"vary": {"seed": []}}, "vary.seed"),
    ({"vary": {"seed": 3}}, "vary.seed"),
    ({"vary": {"topology": ["tree", "ring"]}}, "ring"),
    ({"vary": {"mns": [0]}}, "MNs"),
    ({"base": {}, "extra": 1}, "'base' and 'vary'"),
])
def test_a_spec_that_cannot_run_is_refused_naming_what_is_wrong(doc: dict[str, object],
                                                                 field: str) -> None:
    with pytest.raises(SweepError, match=field):
        parse_spec(doc)


def test_the_sweep_command_prints_json_and_refuses_a_bad_spec(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(json.dumps({"base": SMALL["base"], "vary": {"seed": [1, 2]}}))
    assert main(["sweep", str(spec), "--workers", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == 2 and out["workers"] == 2
    spec.write_text("vary: {seed: []}\n")
    assert main(["sweep", str(spec)]) == 2
    assert "vary.seed" in capsys.readouterr().err
