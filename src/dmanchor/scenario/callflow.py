"""Call-flow diagrams of a run: per move, the messages the nodes exchanged.

Drawn from what the nodes wrote down, not from what the scenario meant to
happen: every node's trace (``NAME.trace.jsonl``: each message sent and
received, each data-plane change and hold lift, on the shared monotonic
clock), the moves in ``report.json`` and the address of every node
(``nodes.json``, written by the emulator).  Per move: one lifeline per node
that took part, the moved MN first; an arrow per message sent, labelled
with its type and draft label (``BUFFER_READY (FM:6-2)``) and its time
relative to the MN's attachment; data-plane changes (hold, lift, tunnel,
re-route) as notes.  Periodic refreshes (registrations, FM:5-2 status,
heartbeats) are left out: they say nothing about the move.

Written as Mermaid text (``.mmd``, for renderers that know it) and as SVG
drawn here (``.svg``: any browser shows it, no script, no network).
``dmanchor trace DIR`` redraws them from a kept ``--out`` directory.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from ..wire.messages import MsgType, message_class

PERIODIC = {"ANCHOR_REGISTRATION", "REGISTRATION_REPLY", "DATAPLANE_STATUS", "HEARTBEAT",
            "HEARTBEAT_ACK"}
"""Refreshes that go on whatever happens: not drawn."""
BEFORE = 0.02
"""Seconds before an attachment that its diagram starts (the L2 trigger's hold)."""
WINDOW = 0.5
"""Longest a diagram runs after the attachment, seconds (or to the MN's next move)."""
MAX_ITEMS = 80
"""Most arrows and notes in one diagram (the rest is counted in its title)."""


@dataclass(frozen=True, slots=True)
class Arrow:
    """One message: ``src`` sent it to ``dst`` at ``t`` (seconds after the attachment)."""

    t: float
    src: str
    dst: str
    label: str


@dataclass(frozen=True, slots=True)
class Note:
    """A data-plane change at ``node``."""

    t: float
    node: str
    text: str


@dataclass(slots=True)
class CallFlow:
    """The diagram of one move."""

    title: str
    lifelines: list[str]
    items: list[Arrow | Note]


def label_of(type_name: str) -> str:
    """``BUFFER_READY`` -> ``BUFFER_READY (FM:6-2)``."""
    try:
        label = message_class(MsgType[type_name]).LABEL
    except (KeyError, ValueError):
        return type_name
    return f"{type_name} ({label})"


def _note(rec: dict[str, Any], name: dict[str, str]) -> str | None:
    """A data-plane record as a note, or None if it says nothing."""
    if rec.get("fn") == "lift":
        return f"lift {rec['prefix']} ({rec['cause']}, {rec['released']} pkts)"
    parts = []
    for verb, entries in (("+", rec.get("add", [])), ("-", rec.get("delete", []))):
        for e in entries:
            kind = e.get("kind", "")
            if kind in ("DECAP",) or e.get("flow"):
                continue
            hop = e.get("next_hop")
            towards = f" -> {name.get(hop, hop)}" if hop else ""
            what = {"BUFFER": "hold", "ANCHOR": f"on link {e.get('link', '')}"}.get(
                kind, kind.lower())
            parts.append(f"{verb}{what} {e['prefix']}{towards}")
    return "; ".join(parts) or None


def window(at: float, later: Iterable[float], after: float = WINDOW) -> tuple[float, float]:
    """The span of a move that attached at ``at``, given its MN's later
    attachments: from the L2 trigger's hold before it to ``after`` seconds
    after it, or to its MN's next move."""
    return at - BEFORE, min([at + after, *(t - BEFORE for t in later if t > at)])


def build(records: list[dict[str, Any]], moves: list[dict[str, Any]],
          names: dict[str, str]) -> list[CallFlow]:
    """One diagram per move (attachments that left a router)."""
    records = sorted(records, key=lambda r: r.get("t", 0.0))
    times = [r.get("t", 0.0) for r in records]
    out: list[CallFlow] = []
    for i, mv in enumerate(moves):
        if mv.get("old") is None:
            continue
        at = mv["at"]
        # To this MN's next move.  (Other MNs' moves in the window are in
        # it too: the trace says what each node sent, not for whom.)
        start, end = window(at, (n["at"] for n in moves[i + 1:] if n["mn"] == mv["mn"]))
        items: list[Arrow | Note] = [Note(0.0, mv["mn"], f"radio: {mv['old']} -> {mv['new']}")]
        for rec in records[bisect_left(times, start):bisect_right(times, end)]:
            t = rec.get("t", 0.0) - at
            if rec.get("dir") == "tx" and rec.get("type") not in PERIODIC:
                peer = rec.get("peer") or ["?"]
                items.append(Arrow(t, rec["node"], names.get(peer[0], peer[0]),
                                   label_of(rec.get("type", "?"))))
            elif rec.get("fn") in ("dataplane", "lift"):
                text = _note(rec, names)
                if text:
                    items.append(Note(t, rec["node"], text))
        items.sort(key=lambda x: x.t)
        left = len(items) - MAX_ITEMS
        items = items[:MAX_ITEMS]
        lifelines = [mv["mn"], mv["old"], mv["new"]]
        for x in items:
            for n in ((x.src, x.dst) if isinstance(x, Arrow) else (x.node,)):
                if n not in lifelines:
                    lifelines.append(n)
        title = f"move {len(out) + 1}: {mv['mn']} {mv['old']} -> {mv['new']}" + (
            f" ({left} more not drawn)" if left > 0 else "")
        out.append(CallFlow(title, lifelines, items))
    return out


def mermaid(flow: CallFlow) -> str:
    """The diagram as Mermaid ``sequenceDiagram`` text."""
    ids = {n: f"n{i}" for i, n in enumerate(flow.lifelines)}
    lines = ["sequenceDiagram", f"    title {flow.title}"]
    lines += [f"    participant {ids[n]} as {n}" for n in flow.lifelines]
    for x in flow.items:
        ms = f"{x.t * 1e3:+.2f} ms"
        if isinstance(x, Arrow):
            lines.append(f"    {ids[x.src]}->>{ids[x.dst]}: {ms} {x.label}")
        else:
            lines.append(f"    Note over {ids[x.node]}: {ms} {x.text}")
    return "\n".join(lines) + "\n"


COL, ROW, TOP, LEFT = 210, 24, 70, 90


def svg(flow: CallFlow) -> str:
    """The diagram as a self-contained SVG document."""
    x = {n: LEFT + COL * i + COL // 2 for i, n in enumerate(flow.lifelines)}
    width = LEFT + COL * len(flow.lifelines) + 20
    height = TOP + ROW * (len(flow.items) + 1) + 20
    bottom = height - 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="8" refY="4" '
           'orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-size="13" font-weight="bold">{escape(flow.title)}</text>']
    for n, cx in x.items():
        out.append(f'<rect x="{cx - 60}" y="30" width="120" height="22" rx="4" '
                   f'fill="#e8eef7" stroke="#456"/>')
        out.append(f'<text x="{cx}" y="45" text-anchor="middle">{escape(n)}</text>')
        out.append(f'<line x1="{cx}" y1="52" x2="{cx}" y2="{bottom}" stroke="#999" '
                   f'stroke-dasharray="4,3"/>')
    for i, item in enumerate(flow.items):
        y = TOP + ROW * i + 12
        out.append(f'<text x="6" y="{y + 4}" fill="#555">{item.t * 1e3:+.2f} ms</text>')
        if isinstance(item, Arrow):
            x1, x2 = x[item.src], x[item.dst]
            if x1 == x2:  # to itself (a function of the same node)
                out.append(f'<path d="M{x1},{y} h30 v8 h-30" fill="none" stroke="#036" '
                           f'marker-end="url(#a)"/>')
                tx = x1 + 34
            else:
                out.append(f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#036" '
                           f'marker-end="url(#a)"/>')
                tx = (x1 + x2) // 2
            out.append(f'<text x="{tx}" y="{y - 3}" text-anchor="middle" fill="#036">'
                       f'{escape(item.label)}</text>')
        else:
            cx = x[item.node]
            out.append(f'<text x="{cx + 6}" y="{y + 4}" fill="#8a3b00" '
                       f'font-style="italic">{escape(item.text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def traces(directory: Path) -> list[dict[str, Any]]:
    """Every node's trace records kept in ``directory``."""
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.trace.jsonl")):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
    return records


def load(directory: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """The traces, the moves and the node addresses kept in ``directory``."""
    records = traces(directory)
    report = json.loads((directory / "report.json").read_text())
    names_file = directory / "nodes.json"
    names = json.loads(names_file.read_text()) if names_file.exists() else {}
    return records, report.get("moves", []), names


def write(directory: Path) -> list[Path]:
    """Draw every move of the run kept in ``directory``; returns the files."""
    written = []
    for i, flow in enumerate(build(*load(directory)), start=1):
        for ext, text in (("mmd", mermaid(flow)), ("svg", svg(flow))):
            path = directory / f"callflow-{i}.{ext}"
            path.write_text(text)
            written.append(path)
    return written
