"""The forwarding state a router's cores want, kept by the cores themselves.

A core decides from what it asked for, never from reading the kernel back
(a dump costs ~1 ms on the handover path, and the kernel is the thing being
converged, not the authority).  :class:`DesiredFib` sits between the cores
of one router and its data plane: every change goes through to the data
plane, and :meth:`DesiredFib.entries` answers from the changes that were
applied.  It is seeded once from the data plane, so a restarted agent finds
what it left (reconciliation after a restart).

Holds (BUFFER entries) are the exception: the data plane ends them itself
(a timeout, an end marker), so they are whatever it holds now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..dataplane.api import BufferSpec, DataPlane, FlowUsage
from ..wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix


class DesiredFib:
    """A :class:`~dmanchor.dataplane.api.DataPlane` answering ``entries()``
    from what was applied through it."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self._entries: dict[ForwardingEntry, None] = {}
        # The same, by prefix: a handover looks at one prefix's entries, and
        # a router may have a hundred thousand (the cost of a handover must
        # not grow with the MNs a router serves).
        self._by_prefix: dict[Prefix, dict[ForwardingEntry, None]] = {}
        for e in dataplane.entries():
            if e.kind is not EntryKind.BUFFER:
                self._remember(e)

    def _remember(self, e: ForwardingEntry) -> None:
        self._entries[e] = None
        self._by_prefix.setdefault(e.prefix, {})[e] = None

    def _forget(self, e: ForwardingEntry) -> None:
        if self._entries.pop(e, 0) is None:
            of = self._by_prefix[e.prefix]
            del of[e]
            if not of:
                del self._by_prefix[e.prefix]

    def apply(self, add: Sequence[ForwardingEntry], delete: Sequence[ForwardingEntry],
              now: float, buffers: Mapping[Prefix, BufferSpec] | None = None) -> None:
        """Apply through to the data plane; remembered only once it took it."""
        self.dataplane.apply(add, delete, now, buffers)
        for e in delete:
            self._forget(e)
        for e in add:
            if e.kind is not EntryKind.BUFFER:
                self._remember(e)

    def entries(self) -> list[ForwardingEntry]:
        """What the cores asked for, and the holds in force."""
        holds = [ForwardingEntry(EntryKind.BUFFER, p) for p in self.dataplane.holds()]
        return [*self._entries, *holds]

    def entries_of(self, prefix: Prefix) -> list[ForwardingEntry]:
        """:meth:`entries` of exactly ``prefix`` (per-flow ones included)."""
        out = list(self._by_prefix.get(prefix, ()))
        if self.dataplane.held(prefix):
            out.append(ForwardingEntry(EntryKind.BUFFER, prefix))
        return out

    def has(self, entry: ForwardingEntry) -> bool:
        """Whether ``entry`` is among :meth:`entries`."""
        if entry.kind is EntryKind.BUFFER:
            return entry.flow is None and entry.next_hop is None \
                and self.dataplane.held(entry.prefix)
        return entry in self._entries

    def held(self, prefix: Prefix) -> bool:
        return self.dataplane.held(prefix)

    def holds(self) -> set[Prefix]:
        return self.dataplane.holds()

    def set_source_filter(self, link: str, prefixes: Sequence[Prefix]) -> None:
        self.dataplane.set_source_filter(link, prefixes)

    def expire(self, now: float) -> None:
        self.dataplane.expire(now)

    def next_deadline(self) -> float | None:
        return self.dataplane.next_deadline()

    def buffered(self, prefix: Prefix) -> int:
        return self.dataplane.buffered(prefix)

    def mark_end(self, tunnel: ForwardingEntry, now: float, served_on: str | None = None) -> bool:
        return self.dataplane.mark_end(tunnel, now, served_on)

    def track(self, flow: FlowFilter, link: str | None = None) -> None:
        self.dataplane.track(flow, link)

    def untrack(self, flow: FlowFilter) -> FlowUsage:
        return self.dataplane.untrack(flow)

    def usage(self, flow: FlowFilter) -> FlowUsage:
        return self.dataplane.usage(flow)

    def charges(self, prefix: Prefix) -> Mapping[FlowFilter, FlowUsage]:
        return self.dataplane.charges(prefix)

    def take_charges(self, prefix: Prefix) -> Mapping[FlowFilter, FlowUsage]:
        return self.dataplane.take_charges(prefix)

    def add_usage(self, flow: FlowFilter, moved: FlowUsage) -> None:
        self.dataplane.add_usage(flow, moved)

    def counters(self) -> Mapping[str, int]:
        return self.dataplane.counters()
