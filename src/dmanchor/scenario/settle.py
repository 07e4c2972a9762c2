"""How long the network took to settle after each fault of a run (issue 16).

A fault (a node killed, a link cut, control messages lost) ends with its
recovery (the node restarted, the link healed, the loss stopped); a fault
never recovered from is watched from where it began.  From then a watcher asks
every node, every :data:`POLL` seconds, what it still holds for places its
MNs have left (:func:`~.converge.stale`), until nothing: the time from the
recovery to that first settled poll is the fault's time to converge.  The
watcher stops at the next fault or at the run's end, so a fault whose
network had not settled by then says so (``converged_s`` None).

It polls only between a recovery and its settling, not during the whole
run: each poll is a control command to every node, and the nodes are busy
handing over at that time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

POLL = 0.1
"""Seconds between two polls: the resolution of ``converged_s``."""


@dataclass
class FaultRecord:
    """One fault of a run and how the network came out of it."""

    fault: str
    """What happened, e.g. ``ar2 killed``, ``link r-c cut``."""
    at: float
    """Seconds after the timeline started."""
    recovered: str = ""
    """How it ended (``ar2 restarted``), empty if it did not."""
    recovered_at: float | None = None
    converged_s: float | None = None
    """Seconds from the recovery (or the fault, if none) until every node's
    state had settled where the MNs are; None: not settled before the next
    fault or the end of the run."""
    polls: int = 0
    """Polls it took (each asks every node for its entries)."""
    last_stale: str = ""
    """What the last unsettled poll found (a node's leftover, or why a node
    did not answer)."""

    def line(self) -> str:
        """One line of the report."""
        how = f", {self.recovered} at {self.recovered_at:.2f} s" if self.recovered else ""
        settled = (f"settled {self.converged_s:.2f} s later" if self.converged_s is not None
                   else f"NOT settled before the next fault or the end ({self.last_stale})")
        return f"{self.fault} at {self.at:.2f} s{how}: {settled}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class SettleWatch:
    """The run's faults, each watched from its recovery until it settled.

    ``stale`` lists what some node still holds for a place its MN left; it
    may raise (a node being restarted does not answer): that poll counts as
    not settled.
    """

    def __init__(self, stale: Callable[[], list[str]], clock: Callable[[], float]) -> None:
        """``clock``: seconds since the timeline started."""
        self._stale = stale
        self._clock = clock
        self.records: list[FaultRecord] = []
        self._open: dict[str, FaultRecord] = {}  # key -> fault not yet recovered
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def fault(self, key: str, what: str) -> None:
        """A fault began (``key`` names what will recover, e.g. the node):
        watched from now, as a fault that may never be recovered from."""
        self._halt()
        rec = FaultRecord(what, self._clock())
        self.records.append(rec)
        self._open[key] = rec
        self._watch(rec, rec.at)

    def recovered(self, key: str, how: str) -> None:
        """The fault ``key`` ended: watched again from now (what settled
        during the fault does not count)."""
        rec = self._open.pop(key, None)
        if rec is None:
            return
        self._halt()
        rec.recovered, rec.recovered_at = how, self._clock()
        rec.converged_s = None
        self._watch(rec, rec.recovered_at)

    def finish(self) -> list[FaultRecord]:
        """At the run's end, before the nodes stop: every record."""
        self._halt()
        self._open.clear()
        return self.records

    def _watch(self, rec: FaultRecord, since: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._poll_until_settled, args=(rec, since, self._stop), daemon=True,
            name="settle-watch")
        self._thread.start()

    def _halt(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _poll_until_settled(self, rec: FaultRecord, since: float,
                            stop: threading.Event) -> None:
        while not stop.is_set():
            rec.polls += 1
            try:
                left = self._stale()
            except (OSError, RuntimeError, ValueError) as exc:  # a node restarting
                left = [f"no answer: {exc}"]
            if left:
                rec.last_stale = "; ".join(left)
            else:
                rec.converged_s = round(max(0.0, self._clock() - since), 3)
                return
            stop.wait(POLL)
