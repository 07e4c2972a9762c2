"""Where a move's interruption went: one line per move, from the nodes' traces.

Every instant is in milliseconds after the MN's radio came up at the new
router (the emulator's ``MoveRecord.at``), read from what the nodes wrote
down on the shared monotonic clock (``NAME.trace.jsonl``) and from the
flows' arrivals:

* ``radio``: how long the MN was on no radio (old link down -> new one up);
* ``hi``: a predictive move's HI went from the old router (negative: before
  the radio came up);
* ``attach``: the new router installed the MN's prefixes (its first
  data-plane change putting a prefix on an access link);
* ``lm``: the new router's location management answered (the first
  LM:1-x reply it received);
* ``fm``: the old path was re-pointed (the first data-plane change at
  another node adding a tunnel or a route: FM:6-2 at the old anchor, FM:5-1
  at a router);
* ``lift``: the last hold on the MN's kept prefixes was lifted (and how long
  that lift itself took);
* ``first``: the first packet of the MN's flows after the radio came up.

A phase the move did not go through (no LM query for a fresh attachment, no
hold to lift) is ``None`` and left out of the line.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

LM_REPLIES = frozenset({"LOCATION_UPDATE_ACK", "LOCATION_REPLY", "MN_REPLY"})
"""Replies of location management a new router waits for (LM:1-1, LM:1-4)."""
EARLY = 0.005
"""Seconds before the radio came up that a move's records may start (the
router can hear the MN as its radio's carrier rises)."""
LONGEST = 1.0
"""Longest a move's records run after the radio came up, seconds (or to the
MN's next move)."""
PHASES = ("radio", "hi", "attach", "lm", "fm", "lift", "first")


@dataclass(frozen=True, slots=True)
class Breakdown:
    """One move, phase by phase (milliseconds; see the module)."""

    mn: str
    move: str
    radio: float | None
    attach: float | None
    lm: float | None
    fm: float | None
    lift: float | None
    lift_took: float | None
    """Milliseconds the last lift itself took (its drain and removal)."""
    first: float | None
    hi: float | None = None
    """A predictive move's HI left the old router (ms after the radio; < 0)."""

    def line(self) -> str:
        """The move in one line."""
        items = [] if self.radio is None else [f"radio gap {self.radio} ms"]
        for name, label in (("hi", "HI"), ("attach", "attach"), ("lm", "LM"), ("fm", "FM"),
                            ("lift", "lift"), ("first", "first packet")):
            value = getattr(self, name)
            if value is not None:
                took = f" (took {self.lift_took} ms)" if name == "lift" and self.lift_took else ""
                items.append(f"{label} {value:+}{took}")
        return f"{self.mn} {self.move}: " + " | ".join(items)


def _ms(rec: dict[str, Any] | float | None, at: float) -> float | None:
    """A record's time (or a time) in ms after ``at``."""
    t = rec.get("t") if isinstance(rec, dict) else rec
    return None if t is None else round((float(t) - at) * 1e3, 3)


def _adds(rec: dict[str, Any], kinds: tuple[str, ...]) -> bool:
    return rec.get("fn") == "dataplane" and any(
        e.get("kind") in kinds and "flow" not in e for e in rec.get("add", []))


def compute(records: list[dict[str, Any]], moves: list[dict[str, Any]],
            arrivals: dict[str, list[float]]) -> list[Breakdown]:
    """The breakdown of every move (not first attachments).

    ``records``: every node's trace records; ``moves``: the moves as in
    ``report.json`` (``mn``, ``old``, ``new``, ``at``, ``left``,
    ``previous``); ``arrivals``: each MN's flows' arrival times, sorted.
    """
    records = sorted(records, key=lambda r: r.get("t", 0.0))
    out = []
    for i, mv in enumerate(moves):
        if mv.get("old") is None:
            continue
        later = [m["at"] for m in moves[i + 1:] if m["mn"] == mv["mn"]]
        end = min([mv["at"] + LONGEST, *later])
        window = [r for r in records if mv["at"] - EARLY <= r.get("t", 0.0) < end]
        got = next((t for t in arrivals.get(mv["mn"], []) if mv["at"] <= t < end), None)
        # A predictive move's HI goes when the MN leaves, before the radio.
        left = mv.get("left") or mv["at"]
        hi = next((r for r in records if left - EARLY <= r.get("t", 0.0) < end
                   and r.get("node") == mv["old"] and r.get("dir") == "tx"
                   and r.get("type") == "HANDOVER_INITIATE"), None)
        out.append(_one(mv, window, got, hi))
    return out


def _one(mv: dict[str, Any], window: list[dict[str, Any]], got: float | None,
         hi: dict[str, Any] | None) -> Breakdown:
    at, new, mn = mv["at"], mv["new"], mv["mn"]
    attach = next((r for r in window if r.get("node") == new and _adds(r, ("ANCHOR",))), None)
    lm = next((r for r in window if r.get("node") == new and r.get("dir") == "rx"
               and r.get("type") in LM_REPLIES), None)
    fm = next((r for r in window if r.get("node") not in (new, mn)
               and _adds(r, ("TUNNEL", "ROUTE"))), None)
    kept = set(mv.get("previous", ()))
    lifts = [r for r in window if r.get("fn") == "lift" and r.get("prefix") in kept]
    lift = lifts[-1] if lifts else None
    left = mv.get("left")
    return Breakdown(
        mn, f"{mv['old']}->{new}", None if left is None else round((at - left) * 1e3, 3),
        _ms(attach, at), _ms(lm, at), _ms(fm, at), _ms(lift, at),
        None if lift is None else lift.get("waited_ms"), _ms(got, at), _ms(hi, at))


def medians(breakdowns: list[Breakdown]) -> dict[str, float]:
    """Each phase's median over the moves that went through it, milliseconds."""
    out = {}
    for name in PHASES:
        values = [v for b in breakdowns if (v := getattr(b, name)) is not None]
        if values:
            out[name] = round(statistics.median(values), 3)
    return out
