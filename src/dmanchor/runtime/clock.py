"""The two clocks of a node.

Every timer, deadline and lifetime runs on the **monotonic** clock
(:func:`now`): a step of the wall clock (an NTP correction, an operator's
``date -s``) then neither expires bindings and holds at once nor stalls
retransmissions.  The **wall** clock (:func:`wall`) is used only where the
wire needs a time that other machines share - the SM timestamps of signed
messages and end markers - and where state outlives the process: an
absolute expiry is persisted as wall time (:func:`to_wall`) and read back
onto the monotonic clock (:func:`from_wall`), since the monotonic clock
restarts at each boot.
"""

from __future__ import annotations

import time


def now() -> float:
    """Seconds on the monotonic clock: what drivers hand their cores."""
    return time.monotonic()


def wall() -> float:
    """Seconds since the epoch: SM timestamps only."""
    return time.time()


def to_wall(at: float) -> float:
    """A monotonic instant as wall time (to persist it)."""
    return at + time.time() - time.monotonic()


def from_wall(at: float) -> float:
    """A persisted wall-clock instant back on the monotonic clock."""
    return at - time.time() + time.monotonic()
