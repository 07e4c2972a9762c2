"""The DataPlane interface: everything an anchor does to forwarding.

Forwarding state is a set of :class:`~dmanchor.wire.types.ForwardingEntry`
- the very entries FM:5-1 carries - so what a FM-CP sends is what a data
plane holds and reads back:

* ANCHOR prefix on an access link (connected route), ROUTE via a next hop,
  TUNNEL (SRv6 encap) towards a remote segment, DECAP at a local SID,
  BUFFER (FM:6), DROP; any of them restricted to one flow (FM:3-1).
* Source validation (SM): packets entering from an MN's access link with a
  source outside that link's allowed prefixes are dropped and counted.
* Buffers (FM:6): a BUFFER entry holds matching packets, up to a limit and
  for at most a timeout (what it drops is counted); deleting it releases
  the held packets, in order, through whatever forwarding is current then.
* Charging (FM:2): per flow-entry byte and packet counters.

Two implementations: :mod:`.memory` (a forwarding model used by tests and
the simulator) and, in its own issue, the Linux kernel over netlink.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from ..wire.types import FlowFilter, ForwardingEntry, Prefix


class DataPlaneError(Exception):
    """A batch could not be applied; ``entry`` names the offending one."""

    def __init__(self, message: str, entry: ForwardingEntry | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class BufferSpec(NamedTuple):
    """Limits of one FM:6 buffer."""

    limit: int = 10_000
    """Packets held at most; more are dropped and counted."""
    timeout: float = 2.0
    """Seconds a buffer may hold before it ends."""
    release_on_timeout: bool = False
    """At the timeout, release the packets (a hold at a new anchor waiting
    for the old path's end marker) instead of dropping them (counted)."""


class FlowUsage(NamedTuple):
    """Charging counters of one flow at one anchor (FM:2)."""

    bytes_up: int = 0
    bytes_down: int = 0
    packets_up: int = 0
    packets_down: int = 0


class DataPlane(Protocol):
    """What a FM-DP drives; implementations must apply batches atomically."""

    def apply(
        self,
        add: Sequence[ForwardingEntry],
        delete: Sequence[ForwardingEntry],
        now: float,
        buffers: Mapping[Prefix, BufferSpec] | None = None,
    ) -> None:
        """Delete then add, all or nothing; raises :class:`DataPlaneError`.

        BUFFER entries take their limits from ``buffers`` (default
        :class:`BufferSpec`); deleting a BUFFER entry releases its packets.
        """

    def set_source_filter(self, link: str, prefixes: Sequence[Prefix]) -> None:
        """Allow only these source prefixes from access link ``link`` (SM)."""

    def entries(self) -> list[ForwardingEntry]:
        """Every installed entry (read back)."""

    def expire(self, now: float) -> None:
        """Drop buffers held past their timeout (counted)."""

    def next_deadline(self) -> float | None:
        """When :meth:`expire` must next run."""

    def buffered(self, prefix: Prefix) -> int:
        """Packets currently held for ``prefix``."""

    def holds(self) -> set[Prefix]:
        """The prefixes held now (BUFFER entries; the data plane ends them
        itself, on a timeout or an end marker)."""

    def held(self, prefix: Prefix) -> bool:
        """Whether ``prefix`` is among :meth:`holds` (without building the set)."""

    def mark_end(self, tunnel: ForwardingEntry, now: float, served_on: str | None = None) -> bool:
        """Send an end marker down ``tunnel`` (a TUNNEL entry in force): no
        more of its prefix will take it (the routing upstream has moved
        away from this router).  False if that tunnel is not in force.

        ``served_on``: the prefix was delivered on that access link until
        now, its MN still there (a make-before-break move): what took the
        old path has reached the MN, so the marker may go at once - but
        only while the link has its carrier.  One that lost it may have
        diverted packets to its standby hold, which must go first: then
        none is sent (False)."""

    def track(self, flow: FlowFilter, link: str | None = None) -> None:
        """Start charging a flow here (counting from zero).

        ``link``: the access link its MN is (or will be) on; by default the
        link that anchors the flow's MN address now.  A data plane that
        counts every flow from its first packet by itself (Linux) needs no
        call.
        """

    def untrack(self, flow: FlowFilter) -> FlowUsage:
        """Stop charging a flow; returns its final counters."""

    def usage(self, flow: FlowFilter) -> FlowUsage:
        """Charging counters of a flow (both directions)."""

    def charges(self, prefix: Prefix) -> Mapping[FlowFilter, FlowUsage]:
        """Every flow of an MN address in ``prefix`` charged here, and its usage."""

    def take_charges(self, prefix: Prefix) -> Mapping[FlowFilter, FlowUsage]:
        """Stop charging every flow of ``prefix`` here: their final usage
        (FM:2 moves it to the next point)."""

    def add_usage(self, flow: FlowFilter, moved: FlowUsage) -> None:
        """Add counters moved in from another anchor (FM:2); tracks the flow.

        Added, never overwritten: this anchor may already have counted
        packets of the flow, and each packet must be charged exactly once.
        """

    def counters(self) -> Mapping[str, int]:
        """Drop and event counters by reason."""
