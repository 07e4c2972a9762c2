"""A crowd of MNs on a seeded random walk, written in a few lines.

A scenario's ``walk`` section stands for what would otherwise take hundreds
of lines: the MNs, their radio links to every router of the walk, their
first attachments, one continuity probe (and maybe a TCP stream) each, the
moves, and what every flow must show.  It is expanded into those ordinary
entries before the scenario is validated, so a generated entry is checked
like a written one (errors point at the ``walk`` line)::

    walk:
      seed: 7                      # same seed, same walk
      mns: 20                      # mn1 .. mn20
      routers: [ar1, ar2, ar3, ar4]
      moves: 100                   # in all
      start: 1.0                   # the earliest move, seconds
      dwell: [0.8, 1.6]            # seconds at a router before moving on
      probe: {from: cn, rate: 200} # a continuity UDP probe to every MN
      tcp: {from: cn, mns: 4}      # and a TCP stream to the first 4
      expect:                      # for every probe / every stream
        probe: {lost: 0, duplicates: 0, reordered: 0.1%, charged: exact}
        tcp: {tcp: unbroken}

Each MN starts at a router drawn at random and, after a dwell drawn
uniformly, moves to another drawn among the router's ``adjacent`` ones
(default: any other router of the walk); moves are taken in time order
until ``moves`` have been made.  Flows start at ``flows_at`` and run until
``tail`` seconds after the last move.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any

from .fields import Doc, PathKey, Table, as_int, as_list, as_mapping, as_num, as_str

FLOW_START = 0.2
"""Default start of the generated flows, seconds."""


@dataclass(frozen=True, slots=True)
class Walk:
    """The ``walk`` section, read and checked."""

    seed: int
    mns: int
    """How many MNs: ``mn1`` .. ``mnN``."""
    routers: tuple[str, ...]
    """The access routers the MNs walk over (anchor nodes)."""
    moves: int
    """Moves in all, over every MN."""
    start: float
    """The earliest move, seconds into the run."""
    dwell: tuple[float, float]
    """Shortest and longest stay at a router, seconds (uniform)."""
    adjacent: dict[str, tuple[str, ...]]
    """Where an MN at a router may go next (default: any other router)."""
    probe: dict[str, Any]
    """``from`` (a host) and ``rate`` (pps) of every MN's continuity probe."""
    tcp: dict[str, Any] | None
    """``from`` and ``mns`` (how many, from mn1 on) of the TCP streams."""
    expect: dict[str, Any]
    """``probe`` / ``tcp``: the expectation every such flow must meet."""
    flows_at: float
    tail: float
    """Seconds the flows run on after the last move."""


def _pair(v: Any) -> tuple[float, float]:
    lo, hi = (as_num(x) for x in as_list(v))
    if not 0 < lo <= hi:
        raise ValueError(f"expected [shortest, longest] with 0 < shortest <= longest, got {v!r}")
    return lo, hi


def read(doc: Doc) -> Walk:
    """The walk section of ``doc``, every field checked."""
    t = Table(doc, ("walk",), doc.data["walk"])
    routers = tuple(as_str(r) for r in t.get("routers", as_list, required=True))
    if len(routers) < 2:
        raise doc.error(("walk", "routers"), "a walk needs at least two routers")
    adj_raw: dict[str, Any] = t.get("adjacent", as_mapping, {})
    adjacent = {as_str(k): tuple(as_str(x) for x in as_list(v)) for k, v in adj_raw.items()}
    for r, nexts in adjacent.items():
        if r not in routers or not nexts or any(x not in routers or x == r for x in nexts):
            raise doc.error(("walk", "adjacent", r),
                            "each router of the walk lists other routers of the walk")
    probe_t = t.sub("probe")
    probe = {"from": probe_t.get("from", as_str, required=True),
             "rate": probe_t.get("rate", as_num, 200.0)}
    probe_t.finish()
    tcp: dict[str, Any] | None = None
    if "tcp" in t.value:
        tcp_t = t.sub("tcp")
        tcp = {"from": tcp_t.get("from", as_str, required=True),
               "mns": tcp_t.get("mns", as_int, required=True)}
        tcp_t.finish()
    expect: dict[str, Any] = t.get("expect", as_mapping, {})
    for k in expect:
        if k not in ("probe", "tcp"):
            raise doc.error(("walk", "expect", k), "expected probe or tcp")
    w = Walk(
        seed=int(t.get("seed", lambda v: int(as_num(v)), 0)),
        mns=t.get("mns", as_int, required=True),
        routers=routers,
        moves=t.get("moves", as_int, required=True),
        start=t.get("start", as_num, 1.0),
        dwell=t.get("dwell", _pair, required=True),
        adjacent=adjacent,
        probe=probe,
        tcp=tcp,
        expect=expect,
        flows_at=t.get("flows_at", as_num, FLOW_START),
        tail=t.get("tail", as_num, 0.8),
    )
    t.finish()
    if w.mns > 99:
        raise doc.error(("walk", "mns"), "at most 99 MNs (node names mn1 .. mn99)")
    if tcp is not None and tcp["mns"] > w.mns:
        raise doc.error(("walk", "tcp", "mns"), f"more streams than MNs ({w.mns})")
    if w.flows_at >= w.start:
        raise doc.error(("walk", "flows_at"), "the flows start before the first move")
    return w


def plan_moves(w: Walk) -> tuple[dict[str, str], list[tuple[float, str, str]]]:
    """Where each MN starts, and every move (time, MN, router) in time order."""
    rng = random.Random(w.seed)
    first = {f"mn{k}": rng.choice(w.routers) for k in range(1, w.mns + 1)}
    at = dict(first)
    due = [(round(w.start + rng.uniform(0, w.dwell[1] - w.dwell[0]), 4), k, f"mn{k}")
           for k in range(1, w.mns + 1)]
    heapq.heapify(due)
    moves: list[tuple[float, str, str]] = []
    while len(moves) < w.moves:
        t, k, mn = heapq.heappop(due)
        options = w.adjacent.get(at[mn]) or tuple(r for r in w.routers if r != at[mn])
        at[mn] = rng.choice(options)
        moves.append((t, mn, at[mn]))
        heapq.heappush(due, (round(t + rng.uniform(*w.dwell), 4), k, mn))
    return first, moves


def expand(doc: Doc) -> None:
    """Replace ``doc``'s walk section by the entries it stands for."""
    w = read(doc)
    line = doc.lines.get(("walk",), 0)
    data = doc.data
    nodes, links = data.setdefault("nodes", {}), data.setdefault("links", [])
    timeline, expect = data.setdefault("timeline", []), data.setdefault("expect", {})
    first, moves = plan_moves(w)
    end = moves[-1][0] + w.tail
    generated: list[dict[str, Any]] = []
    for mn, router in first.items():
        if mn in nodes:
            raise doc.error(("walk", "mns"), f"node {mn!r} is already defined")
        nodes[mn] = {"kind": "mn"}
        doc.lines[("nodes", mn)] = line
        for r in w.routers:
            doc.lines[("links", len(links))] = line
            links.append({"a": r, "b": mn})
        generated.append({"at": 0.0, "attach": {"mn": mn, "to": router}})
    for k, mn in enumerate(first, start=1):
        flows = [("probe", {"name": f"p-{mn}", "kind": "udp", "from": w.probe["from"],
                            "to": mn, "rate": w.probe["rate"], "continuity": True})]
        if w.tcp is not None and k <= w.tcp["mns"]:
            flows.append(("tcp", {"name": f"t-{mn}", "kind": "tcp", "from": w.tcp["from"],
                                  "to": mn, "continuity": True}))
        for kind, flow in flows:
            flow["duration"] = round(end - w.flows_at, 4)
            generated.append({"at": w.flows_at, "flow": flow})
            if kind in w.expect:
                expect[flow["name"]] = dict(w.expect[kind])
    generated.extend({"at": t, "move": {"mn": mn, "to": r}} for t, mn, r in moves)
    _merge_timeline(doc, timeline, generated, line)
    del data["walk"]


def _merge_timeline(doc: Doc, written: list[Any], generated: list[dict[str, Any]],
                    line: int) -> None:
    """Merge in time order (written entries first at equal times), keeping
    every written entry's line numbers under its new index."""
    def at(item: Any) -> float:
        v = item.get("at") if isinstance(item, dict) else None
        return float(v) if isinstance(v, int | float) else 0.0
    order = sorted([(at(x), 0, i) for i, x in enumerate(written)]
                   + [(at(x), 1, i) for i, x in enumerate(generated)])
    old_lines = {k: v for k, v in doc.lines.items() if k[:1] == ("timeline",)}
    for k in old_lines:
        del doc.lines[k]
    merged: list[Any] = []
    for new, (_, source, i) in enumerate(order):
        if source == 0:
            merged.append(written[i])
            for key, ln in old_lines.items():
                if key[1:2] == (i,):
                    doc.lines[("timeline", new, *key[2:])] = ln
        else:
            merged.append(generated[i])
            doc.lines[("timeline", new)] = line
    written[:] = merged
    top: PathKey = ("timeline",)
    doc.lines.setdefault(top, line)
