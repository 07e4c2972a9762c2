"""The measured report of a scenario run, and its check against ``expect``."""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..reordering import measure
from .breakdown import Breakdown
from .fields import Share
from .model import FlowSpec, Scenario
from .settle import FaultRecord
from .traffic import TcpStream, UdpProbe


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """One attachment of an MN."""

    mn: str
    old: str | None
    new: str
    at: float
    """``time.monotonic()`` when the MN's radio came up on the new router."""
    previous: list[str]
    """Prefixes its continuity flows still used (the routers keep them)."""
    fresh: list[str]
    """Prefixes the new router gave it."""
    radio_drops: int = 0
    """Packets lost on the access link as it went: dropped by the old
    router's kernel on the downed link, or arriving at the MN's side of it
    after the MN had left (from just before the link went down until it
    comes up again, or the report)."""
    addresses: list[str] = field(default_factory=list)
    """What the MN's own stack (SLAAC) held once it had the new router's
    prefix: ``address (preferred|deprecated)``."""
    left: float | None = None
    """``time.monotonic()`` when its old radio went down (a move only)."""


@dataclass(frozen=True, slots=True)
class MoveEffect:
    """What one move did to one flow."""

    move: str
    interruption_ms: float
    """Last packet (or TCP segment) before the move to the first after it."""
    attach_to_first_ms: float
    """From the MN's solicitation at the new router to the first arrival there."""


@dataclass(slots=True)
class FlowResult:
    """One flow's outcome."""

    name: str
    kind: str
    address: str
    prefix: str
    continuity: bool
    sent: int
    received: int
    lost: int
    duplicates: int
    reordered: int
    """Packets that arrived after one with a higher sequence number (RFC 4737)."""
    tcp_unbroken: bool | None
    path_stretch: float
    """Hops via the anchoring / shortest path, at the end (from the topology)."""
    charged: int | None
    """FM:2: packets its final anchor charged (continuity UDP flows)."""
    moves: list[MoveEffect] = field(default_factory=list)
    address_state: str = "-"
    """``kept``: it ran across a move on its first address; ``new``: it uses a
    prefix a move gave; ``-``: neither."""
    reorder_extent: int = 0
    """Worst reordering extent, in packets (RFC 4737 section 4.2)."""
    reorder_late_ms: float = 0.0
    """How late the worst reordered packet came behind the first that
    overtook it, milliseconds."""
    tcp_error: str = ""
    """Why a TCP stream broke, as its sender or receiver saw it."""
    _times: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def measure(cls, spec: FlowSpec, address: str, prefix: str, runner: UdpProbe | TcpStream,
                stretch: float, charged: int | None) -> FlowResult:
        if isinstance(runner, UdpProbe):
            seqs = [s for s, _ in runner.arrivals]
            times = [t for _, t in runner.arrivals]
            order = measure(seqs, times)
            return cls(spec.name, "udp", address, prefix, spec.continuity,
                       runner.sent, len(seqs), runner.sent - (len(seqs) - order.duplicates),
                       order.duplicates, order.reordered, None, stretch, charged,
                       reorder_extent=order.extent, reorder_late_ms=order.late_ms,
                       _times=times)
        return cls(spec.name, "tcp", address, prefix, spec.continuity,
                   runner.bytes_sent, runner.bytes_received,
                   runner.bytes_sent - runner.bytes_received, 0, 0, runner.unbroken, stretch,
                   None, tcp_error=runner.error, _times=[t for _, t in runner.arrivals])

    def effect_of(self, move: MoveRecord) -> MoveEffect | None:
        """The flow's gap around ``move``, if it was running across it."""
        times = self._times
        i = bisect.bisect_left(times, move.at)
        if i == 0 or i == len(times):
            return None
        return MoveEffect(f"{move.old}->{move.new}", round((times[i] - times[i - 1]) * 1e3, 3),
                          round((times[i] - move.at) * 1e3, 3))


@dataclass(slots=True)
class Report:
    """The whole run."""

    scenario: str
    title: str
    flows: list[FlowResult]
    moves: list[MoveRecord]
    signalling: dict[str, dict[str, int]]
    """Messages and bytes sent, by type, all nodes together."""
    checks: dict[str, bool]
    failures: list[str]
    """Expectations of the scenario that the run did not meet (empty: passed)."""
    security: dict[str, int] = field(default_factory=dict)
    """Messages dropped in SM (bad-mac, replay ...) or refused by sender
    policy, by node and reason: in a run with no attacker, none."""
    summary: dict[str, Any] = field(default_factory=dict)
    """All moves and continuity probes together (:func:`summarize`)."""
    breakdown: list[Breakdown] = field(default_factory=list)
    """Where each move's time went (:mod:`.breakdown`)."""
    faults: list[dict[str, Any]] = field(default_factory=list)
    """Each fault injected, and how long after its recovery every node's
    state had settled (:class:`~.settle.FaultRecord`)."""
    final: dict[str, list[str]] = field(default_factory=dict)
    """Per node with a data plane, its kernel's entries for MN prefixes at
    the end of the run (:func:`~.converge.mobile_state`)."""
    final_at: float | None = None
    """Seconds after the timeline's start at which :attr:`final` was read
    (the twin compares its state at the same moment)."""
    tunnelled: list[dict[str, Any]] = field(default_factory=list)
    """Anchor switches whose lease could not move (FM:3-2): the prefix
    stayed anchored at home (or, under BGP, at the router of DPA ``anchor``)
    and was tunnelled to the new router (4.1.2)."""

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for f in out["flows"]:
            f.pop("_times", None)
        return out


def build_report(sc: Scenario, flows: list[FlowResult], moves: list[MoveRecord],
                 signalling: dict[str, dict[str, int]], checks: dict[str, bool],
                 unannounced: bool = False, security: dict[str, int] | None = None) -> Report:
    """Assemble the report and check it against the scenario's ``expect``.

    ``unannounced``: the moves were breaks no L2 trigger announced.  A flow
    running across one may then lose what the old router's kernel had
    already sent towards the access link as it went: it was charged there,
    and lost on the radio (counted by the kernel on either side of the
    downed link, ``MoveRecord.radio_drops``).  Those drops are allowed on top
    of ``lost`` - said so in the failure text - and charging may exceed
    delivery by what was lost so.  Nothing lost anywhere else is.
    """
    for f in flows:
        # Only its own MN's moves: another MN's says nothing about this flow.
        mn = sc.flows[f.name].dst if f.name in sc.flows else None
        f.moves = [e for m in moves if m.old is not None and m.mn == mn
                   and (e := f.effect_of(m)) is not None]
        if f.moves:
            f.address_state = "kept"
        elif any(m.old is not None and f.prefix in m.fresh for m in moves):
            f.address_state = "new"
    failures = [f"check failed: {name}" for name, ok in checks.items() if not ok]
    security = security or {}
    expected = sc.expect.get("security", {})
    if security != expected:
        # Every node is honest: anything dropped or refused that the
        # scenario's attacks do not explain is a legitimate message the
        # security policy got wrong (or an attack that got through).
        failures.append(f"security: dropped or refused {security}, expected {expected}")
    by_name = {f.name: f for f in flows}
    for t, most in sc.expect.get("signalling", {}).items():
        sent = signalling.get(t, {}).get("messages", 0)
        if sent > most:
            failures.append(f"signalling: {sent} {t} messages, expected at most {most}")
    for name, want in sc.expect.items():
        if name in ("signalling", "security"):
            continue
        got = by_name.get(name)
        if got is None:
            failures.append(f"{name}: never ran")
            continue
        at_break = sum(m.radio_drops for m in moves
                       if m.old is not None and any(e.move == f"{m.old}->{m.new}"
                                                    for e in got.moves)) \
            if unannounced and got.kind == "udp" else 0
        for key in ("lost", "duplicates", "reordered"):
            if key not in want:
                continue
            limit = want[key]
            most = limit.of(got.sent) if isinstance(limit, Share) else limit
            of = f" ({limit} of {got.sent} sent)" if isinstance(limit, Share) else ""
            if key == "lost" and at_break:
                most += at_break
                of += f" (+{at_break} dropped on the access link as it went, unannounced)"
            if key == "reordered" and got.reordered:
                of += (f" (worst: {got.reorder_extent} packets back, "
                       f"{got.reorder_late_ms} ms late)")
            if getattr(got, key) > most:
                failures.append(f"{name}: {key} {getattr(got, key)} > {most}{of}")
        if "address" in want and got.address_state != want["address"]:
            failures.append(f"{name}: address {got.address_state}, expected {want['address']}")
        lost_at_break = min(got.lost, at_break)
        if want.get("charged") == "exact" and not (
                got.received <= (got.charged or 0) <= got.received + lost_at_break):
            failures.append(f"{name}: charged {got.charged} packets, {got.received} delivered "
                            "(FM:2)")
        if want.get("tcp") == "unbroken" and not got.tcp_unbroken:
            failures.append(f"{name}: TCP stream broken or altered"
                            + (f" ({got.tcp_error})" if got.tcp_error else ""))
        if "max_interruption_ms" in want:
            for e in got.moves:
                if e.interruption_ms > want["max_interruption_ms"]:
                    # Split at the attach: the rest (the radio's move, the
                    # old router) came before the new router could act.
                    failures.append(f"{name}: interruption {e.interruption_ms} ms at {e.move}"
                                    f" (attach -> first packet {e.attach_to_first_ms} ms)")
    return Report(sc.name, sc.title, flows, moves, signalling, checks, failures, security,
                  summarize(flows, moves))


def _percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, math.ceil(q / 100 * len(ranked)) - 1))]


def summarize(flows: list[FlowResult], moves: list[MoveRecord]) -> dict[str, Any]:
    """The run in one line: how many moves, the interruption each move
    caused as its MN's continuity probes saw it (p50/p99/max), and the
    probes' losses, duplicates and reordered packets (RFC 4737) in all."""
    probes = [f for f in flows if f.kind == "udp" and f.continuity]
    gaps = [e.interruption_ms for f in probes for e in f.moves]
    streams = [e.interruption_ms for f in flows if f.kind == "tcp" for e in f.moves]
    out: dict[str, Any] = {
        "moves": sum(1 for m in moves if m.old is not None),
        "probes": len(probes),
        "lost": sum(f.lost for f in probes),
        "duplicates": sum(f.duplicates for f in probes),
        "reordered": sum(f.reordered for f in probes),
        "sent": sum(f.sent for f in probes),
    }
    if gaps:
        out["interruption_ms"] = {"p50": _percentile(gaps, 50), "p99": _percentile(gaps, 99),
                                  "max": max(gaps), "samples": len(gaps)}
    if streams:
        out["tcp_stall_max_ms"] = max(streams)
    return out


BRIEF = 24
"""Above this many per-move lines, the printed report shows the worst only."""


def print_report(r: Report) -> None:
    """The report as readable tables."""
    print(f"\n  {r.scenario}: {r.title}\n")
    head = ("flow", "kind", "address", "sent", "recv", "lost", "dup", "reord", "stretch",
            "charged")
    rows = [head]
    for f in r.flows:
        addr = f"{f.address} ({f.address_state})"
        reord = str(f.reordered)
        if f.reordered:  # how far back the worst one was
            reord += f" (<={f.reorder_extent} pkts, {f.reorder_late_ms} ms)"
        rows.append((f.name, f.kind + (" cont" if f.continuity else ""), addr, str(f.sent),
                     str(f.received), str(f.lost), str(f.duplicates), reord,
                     str(f.path_stretch), "-" if f.charged is None else str(f.charged)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    for f in r.flows:
        if f.tcp_unbroken is not None:
            state = "unbroken, every byte intact" if f.tcp_unbroken else "BROKEN"
            print(f"  {f.name}: TCP {state}")
    effects = [(f.name, e) for f in r.flows for e in f.moves]
    if len(effects) > BRIEF:
        print(f"  (the {BRIEF // 2} longest interruptions of {len(effects)}; every one is "
              "in report.json)")
        effects = sorted(effects, key=lambda fe: -fe[1].interruption_ms)[:BRIEF // 2]
    for name, e in effects:
        print(f"  {name} at move {e.move}: interruption {e.interruption_ms} ms, "
              f"attach -> first packet {e.attach_to_first_ms} ms")
    shown = r.breakdown if len(r.breakdown) <= BRIEF else r.breakdown[:BRIEF // 2]
    if shown:
        print("  where each move's time went (ms after the radio came up):")
    for b in shown:
        print(f"    {b.line()}")
    if len(shown) < len(r.breakdown):
        print(f"    (the first {len(shown)} of {len(r.breakdown)}; every one is in report.json)")
    for mv in r.moves if len(r.moves) <= BRIEF else ():
        if mv.addresses:
            where = f"{mv.old} -> {mv.new}" if mv.old else f"at {mv.new}"
            print(f"  {mv.mn} {where}: its stack chose {', '.join(mv.addresses)}")
    sm = r.summary
    if sm.get("moves", 0) > 1 and "interruption_ms" in sm:
        i = sm["interruption_ms"]
        print(f"\n  {sm['moves']} moves, {sm['probes']} continuity probes: interruption "
              f"p50 {i['p50']} ms, p99 {i['p99']} ms, max {i['max']} ms; "
              f"{sm['lost']} lost, {sm['duplicates']} duplicated, {sm['reordered']} reordered "
              f"of {sm['sent']} sent"
              + (f"; TCP longest stall {sm['tcp_stall_max_ms']} ms"
                 if "tcp_stall_max_ms" in sm else ""))
    if r.faults:
        lost = sum(f.lost for f in r.flows)
        sent = sum(f.sent for f in r.flows if f.kind == "udp")
        print(f"\n  faults ({lost} packets lost in all, of {sent} sent):")
        for rec in r.faults:
            print(f"    {FaultRecord(**rec).line()}")
    for tun in r.tunnelled:
        at = f"the router of {tun['anchor']}" if "anchor" in tun else "home"
        print(f"\n  FM:3-2: {tun['prefix']} stayed anchored at {at}, tunnelled to "
              f"{tun['dpa']} (4.1.2): its lease did not move: {tun['reason']}")
    if r.checks:
        print()
        for name, ok in r.checks.items():
            print(f"  {'ok ' if ok else 'NO '} {name}")
    print("\n  signalling (all nodes)")
    for t, c in sorted(r.signalling.items()):
        print(f"    {t:<24} {c['messages']:>5} messages {c['bytes']:>7} bytes")
    print("\n  " + ("PASSED: every expectation met" if r.passed else
                    "FAILED:\n    " + "\n    ".join(r.failures)))
    print()
