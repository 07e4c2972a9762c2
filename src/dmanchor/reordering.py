"""Packet reordering as RFC 4737 counts it, for every probe, report and test.

RFC 4737 section 3: a packet is *reordered* when its sequence number is
below ``NextExp``, the highest sequence number received before it plus one.
So a burst of 500 late packets counts 500, not the 1 that counting adjacent
descents gives.  Duplicates (a number already received) are neither in
order nor reordered: only a number's first arrival is judged (RFC 4737
section 3.3 leaves duplicates to RFC 5560; we count them apart).

The worst extent is reported the way section 4.2 defines it: for a
reordered packet at arrival position ``i``, ``e = i - j`` where ``j`` is the
earliest arrival position holding a larger sequence number; its late time
is the arrival time at ``i`` minus that at ``j`` (section 4.3's offset, in
time rather than packets).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reordering:
    """Reordering of one received stream (RFC 4737)."""

    reordered: int = 0
    """Packets that arrived below ``NextExp`` (first copies only)."""
    duplicates: int = 0
    """Arrivals of a sequence number already received."""
    extent: int = 0
    """Largest reordering extent, in arrival positions (RFC 4737 4.2)."""
    late_ms: float = 0.0
    """Largest time by which a reordered packet followed the earliest
    packet with a larger sequence number, milliseconds."""


def measure(seqs: Sequence[int], times: Sequence[float] | None = None) -> Reordering:
    """Judge the arrival order ``seqs`` (with arrival ``times`` in seconds, if known)."""
    if times is not None and len(times) != len(seqs):
        raise ValueError("one arrival time per sequence number")
    seen: set[int] = set()
    highest: list[int] = []  # running maximum by arrival position: non-decreasing
    reordered = duplicates = extent = 0
    late = 0.0
    top = -1
    for i, s in enumerate(seqs):
        if s in seen:
            duplicates += 1
        else:
            seen.add(s)
            if s < top:  # below NextExp = top + 1
                reordered += 1
                j = bisect.bisect_right(highest, s)  # earliest position past s
                extent = max(extent, i - j)
                if times is not None:
                    late = max(late, times[i] - times[j])
            else:
                top = s
        highest.append(top)
    return Reordering(reordered, duplicates, extent, round(late * 1e3, 3))
