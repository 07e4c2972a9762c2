"""``dmanchor sim``: many MNs over a generated tree, the project's cores in
virtual time, a centralized baseline beside them (issue 17, first slice)."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from dmanchor.cli import main
from dmanchor.sim.graph import ar_dpa, geometric, grid, tree
from dmanchor.sim.simulate import SimConfig, Simulation, format_report
from dmanchor.wire.types import EntryKind

SMALL = SimConfig(aggregations=2, access_per_aggregation=3, mns=12, duration=15.0, dwell=2.0,
                  continuity=0.5, seed=3)


def test_the_tree_routes_every_access_network_from_the_core() -> None:
    t = tree(3, 4, cns=2, cn_at_edge=True)
    assert len(t.access) == 12 and t.hops_from("ar1")["ar12"] == 4
    assert t.hops_from("ar1")["ar2"] == 2 and t.hops_from("r0")["ar5"] == 2
    # Correspondents at the edge are spread over the access routers.
    assert [at for _, at in t.cns] == ["ar1", "ar7"]
    # Hop counts from the tree's shape agree with a breadth-first search.
    for a in ("r0", "g1", "ar1", "ar6", "ar12"):
        assert all(t.hops(a, b) == n for b, n in t.hops_from(a).items())
    with pytest.raises(ValueError, match="access routers"):
        tree(0, 4)


def test_a_grid_is_a_mesh_with_the_core_off_its_middle() -> None:
    g = grid(3, 4)
    assert len(g.access) == 12 and g.hops("ar1", "ar12") == 5
    assert g.hops("r0", "ar7") == 1 and g.hops("r0", "ar1") == 4  # (ar7: row 1, column 2)
    assert sorted(g.walk[1]) == [2, 5] and sorted(g.walk[6]) == [2, 5, 7, 10]
    # Each router's first neighbour leads towards the core.
    assert all(g.hops(g.neighbours[r][0], "r0") == g.hops(r, "r0") - 1 for r in g.access)
    with pytest.raises(ValueError, match="access routers"):
        grid(0, 3)


def test_a_geometric_graph_is_one_network_drawn_from_its_seed() -> None:
    """Routers within reach of each other are linked; parts left apart are
    joined; the same seed draws the same graph, another seed another."""
    g = geometric(4, 10, seed=7)
    assert len(g.access) == 40
    reach = g.hops_from("r0")
    assert all(ar in reach for ar in g.access)  # one network
    degrees = [len(g.walk[i]) for i in range(1, 41)]
    assert all(d >= 1 for d in degrees) and 3 <= sum(degrees) / 40 <= 7
    assert g.walk == geometric(4, 10, seed=7).walk
    assert g.walk != geometric(4, 10, seed=8).walk
    assert all(g.hops(g.neighbours[r][0], "r0") == g.hops(r, "r0") - 1 for r in g.access)


def test_random_waypoint_walks_shortest_paths_between_waypoints() -> None:
    """Each move is to a linked router (hop by hop along a shortest path to
    the waypoint, never a jump), and moves go further than a random walk's
    (it crosses the grid rather than hovering)."""
    cfg = dataclasses.replace(SMALL, topology="grid", aggregations=5, access_per_aggregation=5,
                              mns=20, duration=30.0, dwell=1.0, continuity=0.0)

    def moves(mobility: str) -> tuple[Simulation, list[tuple[float, int, int]]]:
        sim = Simulation(dataclasses.replace(cfg, mobility=mobility))
        sim.run()
        return sim, sim.moves
    sim, way = moves("waypoint")
    _, walk = moves("walk")
    at = {mn.index: mn.home for mn in sim.mns}
    for _, mn, to in way:
        assert to in sim.network.walk[at[mn]], (mn, at[mn], to)
        at[mn] = to

    def spread(ms: list[tuple[float, int, int]]) -> float:
        seen: dict[int, set[int]] = {}
        for _, mn, to in ms:
            seen.setdefault(mn, set()).add(to)
        return sum(len(v) for v in seen.values()) / len(seen)
    assert spread(way) > spread(walk)
    with pytest.raises(ValueError, match="mobility"):
        Simulation(dataclasses.replace(cfg, mobility="teleport"))


@pytest.mark.parametrize(("topology", "mobility"), [
    ("tree", "walk"), ("grid", "walk"), ("geometric", "walk"), ("grid", "waypoint")])
def test_the_cores_follow_every_move_and_keep_every_session(topology: str,
                                                            mobility: str) -> None:
    """The real anchors tunnel each kept session to where its MN is at the
    end; every probe is delivered or counted as dropped (in flight at a
    move), bar the last few still in flight when the run stops."""
    sim = Simulation(dataclasses.replace(SMALL, topology=topology, mobility=mobility))
    r = sim.run()
    assert r.handovers >= 20
    dropped = sum(r.drops.values())
    assert r.probes_sent - r.probes_delivered - dropped <= len(sim.mns)
    assert dropped <= 0.01 * r.probes_sent, r.drops
    away = 0
    for mn in sim.mns:
        if mn.session is None or mn.at in (0, mn.home):
            continue
        home = sim.fab.routers[f"ar{mn.home}"]
        prefix = sim._prefix(mn.index, mn.home)
        tunnels = {e.next_hop for e in home.entries()
                   if e.prefix == prefix and e.kind is EntryKind.TUNNEL}
        assert tunnels == {IPv6Address(ar_dpa(mn.at))}, (mn, tunnels)
        away += 1
    assert away >= 1  # (the check above ran)


def test_with_the_correspondent_at_the_core_only_kept_sessions_are_stretched() -> None:
    """The LMA sits on the shortest path from a core correspondent, so the
    centralized design's paths are the shortest; the distributed one
    detours kept sessions through their home router (stretch > 1) and
    signals more per handover, while new flows go direct."""
    r = Simulation(SMALL).run()
    d, c = r.distributed, r.centralized
    assert c.stretch_mean == 1.0 and d.stretch_mean > 1.0
    assert 1.0 <= d.stretch_all_mean < d.stretch_mean
    assert c.messages_per_handover == 4 and d.messages_per_handover > 4
    assert d.latency_ms_p50 > 0 and c.tunnels_max == SMALL.mns
    assert "distributed" in format_report(r)


def test_the_same_seed_gives_the_same_run() -> None:
    def figures(seed: int) -> dict[str, object]:
        rep = dataclasses.asdict(Simulation(dataclasses.replace(SMALL, seed=seed)).run())
        del rep["wall_s"], rep["wall_moves_s"]
        return rep
    assert figures(3) == figures(3)
    assert figures(3) != figures(4)


def test_moves_can_come_from_a_trace(tmp_path: Path) -> None:
    trace = tmp_path / "moves.csv"
    trace.write_text("time,mn,router\n2.0,0,2\n4.0,0,5\n6.0,1,6\n")
    sim = Simulation(dataclasses.replace(SMALL, mns=2, trace=trace))
    r = sim.run()
    assert r.handovers == 3 and sim.mns[0].at == 5
    trace.write_text("2.0,0,two\n")
    with pytest.raises(ValueError, match=r"moves\.csv:1"):
        Simulation(dataclasses.replace(SMALL, mns=2, trace=trace)).run()
    trace.write_text("2.0,0,99\n")
    with pytest.raises(ValueError, match="router 99"):
        Simulation(dataclasses.replace(SMALL, mns=2, trace=trace)).run()


def test_the_command_refuses_a_bad_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--mns", "0"]) == 2
    assert "MNs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="topology 'ring'"):
        Simulation(dataclasses.replace(SMALL, topology="ring"))


def test_the_command_writes_its_report_and_plots(tmp_path: Path) -> None:
    """``--out``: report.json and the CDFs of both designs (#18 item 2)."""
    assert main(["sim", "--aggregations", "2", "--access", "2", "--mns", "6",
                 "--duration", "6", "--out", str(tmp_path)]) == 0
    names = {"report.json", "stretch-cdf.png", "latency-cdf.png", "tunnels-cdf.png",
             "signalling.png"}
    assert {p.name for p in tmp_path.iterdir()} == names
    for name in names - {"report.json"}:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
