"""What a scenario's twin did (:class:`TwinRun`), and how a run - the
twin's, or a kernel run's traces - is compared with another.

:func:`handover_signalling` reduces a run to what each move made each node
send, :func:`comparable` to what the kernel runs and the twin are compared
by (``tests/netns/test_scenarios.py``), :func:`lasting` the end state as
compared, and :func:`end_state_only` says which scenarios are compared by
their end state alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..scenario.callflow import BEFORE, window
from ..scenario.model import Scenario
from ..scenario.plan import Plan
from .traffic import FlowReport

HANDOVER_TYPES = frozenset({
    "MN_QUERY", "LOCATION_QUERY", "ANCHOR_DISCOVERY", "BUFFER_REQUEST", "BUFFER_READY",
    "FORWARDING_UPDATE", "FLOW_STATE_TRANSFER", "FM_HANDOFF", "LEASE_RELEASE", "LEASE_TAKE",
    "HANDOVER_INITIATE"})
"""Requests a move causes (refreshes, reports and pushes go on regardless)."""


def end_state_only(sc: Scenario) -> str | None:
    """Why a kernel run of ``sc`` and its twin are compared by their end
    state only, not move by move (None: both)."""
    if len(sc.of_kind("mn")) > 1:
        # A move's window holds whatever other MNs' moves overlap it.
        return "several MNs: the traces say what a node sent, not for whom"
    if any(st.action == "loss" for st in sc.timeline):
        return "control messages lost at random: the two runs lose different ones"
    moves_at = {st.at for st in sc.timeline if st.action in ("attach", "move")}
    if any(st.action == "kill" and st.at in moves_at and sc.nodes[st.args["node"]].anchor
           for st in sc.timeline):
        # How far the router got with the move before it died - its claim,
        # the binding it moved - is timing (on the kernels it varies from
        # run to run), and its restarted agent asks after it accordingly.
        return "an access router killed as a move begins: what it did before is timing"
    pool = sum(1 for n in sc.nodes.values() if n.lms) > 1
    if pool and any(st.action == "kill" and sc.nodes[st.args["node"]].lms
                    for st in sc.timeline):
        # The survivors answer alike, but which member an anchor asks
        # first is drawn at random: the two runs ask different ones.
        return "an LM:2 pool member killed: the member asked first is drawn at random"
    return None


@dataclass(frozen=True, slots=True)
class Sent:
    """One message on the wire: at ``t`` from node ``src`` to node ``dst``."""

    t: float
    src: str
    dst: str
    type: str


@dataclass(frozen=True, slots=True)
class Move:
    """An MN's radio came up on ``new`` at ``at`` (from ``old``)."""

    mn: str
    old: str | None
    new: str
    at: float
    left: float | None = None
    """When the MN left ``old`` (its L2 hint, then the link, went)."""


@dataclass(slots=True)
class TwinRun:
    """What the twin did."""

    scenario: str
    moves: list[Move] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    flows: dict[str, FlowReport] = field(default_factory=dict)
    final: dict[str, list[str]] = field(default_factory=dict)
    """Per router, its entries for MN prefixes at the end
    (:func:`~dmanchor.scenario.converge.mobile_state`)."""
    security: dict[str, int] = field(default_factory=dict)
    """Messages dropped in SM or refused by sender policy, by node and
    reason (as :attr:`~dmanchor.scenario.report.Report.security`)."""


def handover_signalling(sent: Iterable[Sent], moves: Sequence[Move], after: float = 0.5
                        ) -> list[dict[str, list[tuple[str, str]]]]:
    """Per move (attachments that left a router): for each node, the
    handover requests it sent in the move's window (as the call-flow
    diagrams draw it, :func:`~dmanchor.scenario.callflow.window`), in the order each
    (destination, type) first appeared - what a move makes each node do,
    without what timing alone varies (retransmissions, the interleaving of
    different nodes' messages, refreshes)."""
    ordered = sorted(sent, key=lambda s: s.t)
    out: list[dict[str, list[tuple[str, str]]]] = []
    for i, mv in enumerate(moves):
        if mv.old is None:
            continue
        # From when the MN left (a predictive hint's HI, and what it set
        # off, go before the radio is up: by the radio gap, long under load).
        start, end = window(mv.at, (_began(n) for n in moves[i + 1:] if n.mn == mv.mn), after)
        start = min(start, _began(mv) - BEFORE)
        per: dict[str, list[tuple[str, str]]] = {}
        for s in ordered:
            if start <= s.t <= end and s.type in HANDOVER_TYPES:
                seq = per.setdefault(s.src, [])
                if (s.dst, s.type) not in seq:
                    seq.append((s.dst, s.type))
        out.append(per)
    return out


def _began(mv: Move) -> float:
    """When a move began: the MN left its router (or, first, attached)."""
    return mv.at if mv.left is None else min(mv.at, mv.left)


def lasting(final: Mapping[str, Sequence[str]], plan: Plan) -> dict[str, list[str]]:
    """An end state (:attr:`TwinRun.final`, a kernel run's ``Report.final``)
    as the two are compared: without the tunnels to a flush SID, a move's
    leftovers (in-flight packets follow the MN on them) that end by a timer
    or by FM:2 - whether one is still there at the moment of the reading is
    timing alone (seen under two CPU hogs in ``crowd``)."""
    flush = tuple(f"-> {np.dpa + 1}" for np in plan.nodes.values() if np.dpa is not None)
    out = {node: [e for e in entries if not (e.startswith("TUNNEL ") and e.endswith(flush))]
           for node, entries in final.items()}
    return {node: entries for node, entries in out.items() if entries}


COMPARED_SPAN = 1.0
"""Seconds after a move's attachment that :func:`comparable` looks at: twice
the call-flow diagrams' (the kernel's FM:2 waits on ``nft`` processes for
the charges, seen 576 ms after the attachment under two CPU hogs)."""


def comparable(sent: Iterable[Sent], moves: Sequence[Move], ordered: bool = True
               ) -> list[dict[str, dict[str, list[str]]]]:
    """:func:`handover_signalling` as a kernel run and the twin are compared:
    per move and node, the requests it sent to each peer, in order.  The
    order between requests to different peers is left out with the rest of
    what timing alone changes: two requests a node sends at once (FM:6-2 to
    an anchor and to a parent AR, say) leave in either order.

    ``ordered=False`` (predictive moves): not even to one peer - what a HI
    sets off at the new router and what the MN's arrival does race (the
    radio against the signalling), so only which requests went is compared.
    """
    return [{node: {dst: _in_order([t for d, t in seq if d == dst], ordered)
                    for dst, _ in seq}
             for node, seq in per.items()}
            for per in handover_signalling(sent, moves, COMPARED_SPAN)]


def _in_order(types: list[str], ordered: bool) -> list[str]:
    return types if ordered else sorted(types)


def from_trace(records: Iterable[Mapping[str, Any]], moves: Iterable[Mapping[str, Any]],
               names: Mapping[str, str]) -> tuple[list[Sent], list[Move]]:
    """A kernel run's node traces and report moves, in the twin's terms."""
    sent = [Sent(float(r["t"]), str(r["node"]), names.get(r["peer"][0], r["peer"][0]),
                 str(r["type"]))
            for r in records if r.get("dir") == "tx" and r.get("peer") and r.get("type")]
    mv = [Move(str(m["mn"]), m.get("old"), str(m["new"]), float(m["at"]),
               None if m.get("left") is None else float(m["left"])) for m in moves]
    return sent, mv


def run_json(run: TwinRun) -> dict[str, Any]:
    """The run as JSON: moves, each move's handover signalling per node,
    the flows, and the routers' final entries for MN prefixes."""
    return {
        "scenario": run.scenario,
        "moves": [{"mn": m.mn, "old": m.old, "new": m.new, "at": round(m.at, 6)}
                  for m in run.moves],
        "handovers": [{node: [f"{t} -> {dst}" for dst, t in seq] for node, seq in per.items()}
                      for per in handover_signalling(run.sent, run.moves)],
        "flows": {n: {"sent": f.sent, "delivered": f.delivered, "lost": f.lost,
                      "duplicates": f.duplicates, "reordered": f.reordered,
                      "max_gap_ms": round(f.max_gap * 1e3, 3)} for n, f in run.flows.items()},
        "final": run.final,
        "security": run.security,
    }


def format_run(run: TwinRun) -> str:
    """The run as text (``dmanchor sim SCENARIO``)."""
    doc = run_json(run)
    lines = [f"{run.scenario} in virtual time, with the project's cores", ""]
    moves = [m for m in run.moves if m.old is not None]
    for m, per in zip(moves, doc["handovers"], strict=True):
        lines.append(f"  move {m.mn} {m.old} -> {m.new} at {m.at:.3f} s:")
        lines += [f"    {node}: {', '.join(seq)}" for node, seq in per.items()]
    lines.append("")
    for name, f in doc["flows"].items():
        lines.append(f"  {name}: {f['delivered']} of {f['sent']} delivered, {f['lost']} lost, "
                     f"{f['reordered']} reordered, longest gap {f['max_gap_ms']} ms")
    lines.append("")
    if run.security:
        lines.append("  dropped or refused (SM): " + ", ".join(
            f"{k} x{n}" for k, n in sorted(run.security.items())))
        lines.append("")
    lines.append("  at the end:" if doc["final"] else "  at the end: no router holds MN state")
    for router, entries in doc["final"].items():
        lines += [f"    {router}: {e}" for e in entries]
    return "\n".join(lines)
