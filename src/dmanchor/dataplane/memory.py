"""The memory data plane: a real forwarding model of one router.

It implements :class:`~dmanchor.dataplane.api.DataPlane` and decides, for a
modelled :class:`Packet`, what the router does with it: deliver on an
access link, send to a next hop, encapsulate towards a segment, hold in a
buffer, or drop (with a reason).  :mod:`dmanchor.sim.fabric` strings such
routers together and moves packets hop by hop in virtual time.

Lookup order mirrors Linux policy routing: flow-specific entries (FM:3-1
rules) first, longest prefix among those that match the packet; then the
longest-prefix match among whole-prefix entries; among entries of equal
prefix the lowest metric wins.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..prefixtable import PrefixTable
from ..wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix
from .api import BufferSpec, DataPlaneError, FlowUsage


@dataclass(frozen=True, slots=True)
class Packet:
    """A modelled IPv6 packet (addresses as integers), with one SRv6 outer header."""

    src: int
    dst: int
    proto: int = 17
    sport: int = 0
    dport: int = 0
    flow: str = ""
    """Label of the flow it belongs to (for reports)."""
    seq: int = 0
    """Sequence number within the flow."""
    size: int = 100
    """Bytes (inner packet)."""
    outer: tuple[int, int] | None = None
    """(source, destination SID) of the SRv6 encapsulation, if any."""
    hops: tuple[str, ...] = ()
    """Nodes traversed so far."""
    marker: bool = False
    """An end marker: the last packet a router sent on a path it left."""

    @property
    def route_dst(self) -> int:
        """The destination routers look at (outer if encapsulated)."""
        return self.outer[1] if self.outer is not None else self.dst

    def via(self, node: str) -> Packet:
        """This packet having passed through ``node``."""
        # (Field by field: dataclasses.replace costs a simulation of many
        # packets a fifth of its time.)
        return Packet(self.src, self.dst, self.proto, self.sport, self.dport, self.flow,
                      self.seq, self.size, self.outer, (*self.hops, node), self.marker)


class Decision(NamedTuple):
    """What a router does with a packet."""

    kind: str
    """deliver | forward | encap | decap | local | buffer | drop"""
    link: str = ""
    """Access link (deliver)."""
    next_hop: int = 0
    """Next hop (forward) or segment (encap)."""
    reason: str = ""
    """Why it was dropped."""


@dataclass(slots=True)
class _Buffer:
    spec: BufferSpec
    started: float
    packets: deque[Packet] = field(default_factory=deque)


def _flow_matches(f: FlowFilter, p: Packet) -> bool:
    return f.matches(p.src, p.dst, p.proto, p.sport, p.dport)


class MemoryDataPlane:
    """One router's forwarding state and decisions."""

    def __init__(self, name: str, addresses: Sequence[int] = ()) -> None:
        self.name = name
        self.addresses = set(addresses)
        """The router's own addresses (loopbacks, SIDs)."""
        self._plain: PrefixTable[list[ForwardingEntry]] = PrefixTable()
        self._flows: list[ForwardingEntry] = []
        self._source_filters: dict[str, tuple[Prefix, ...]] = {}
        self._buffers: dict[Prefix, _Buffer] = {}
        # (deadline, order, prefix) of every hold started; an entry whose
        # hold has gone (or is another hold of the prefix) is skipped: the
        # next deadline costs O(log n), not a walk of every hold.
        self._deadlines: list[tuple[float, int, Prefix]] = []
        self._order = 0
        self._usage: dict[FlowFilter, list[int]] = {}
        self._counters: Counter[str] = Counter()
        self.on_release: Callable[[Packet], None] | None = None
        """Where released buffered packets go (the fabric re-forwards them)."""
        self.released: list[Packet] = []
        """Released packets when no :attr:`on_release` is set."""
        self.link_up: Callable[[str], bool] | None = None
        """Whether an access link has its carrier (a host on it): the
        fabric's answer; None, always."""
        self.on_marker: Callable[[Decision, Packet], None] | None = None
        """Sends an end marker down the path a prefix just left."""

    # -- DataPlane interface ------------------------------------------------------

    def apply(
        self,
        add: Sequence[ForwardingEntry],
        delete: Sequence[ForwardingEntry],
        now: float,
        buffers: Mapping[Prefix, BufferSpec] | None = None,
    ) -> None:
        for e in delete:
            if not self._has(e):
                raise DataPlaneError(f"{self.name}: no such entry to delete", e)
        seen = set()
        for e in add:
            self._validate(e)
            key = (e.kind, e.prefix, e.flow, e.next_hop, e.link)
            if key in seen:
                raise DataPlaneError(f"{self.name}: entry added twice", e)
            seen.add(key)
        # Where each changed prefix went before, to mark the old path's end.
        # (A prefix taken back onto an access link leaves the tunnel it was
        # handed down: that path ends too.)
        leaving = {d.prefix for d in delete
                   if d.flow is None and d.kind in (EntryKind.ROUTE, EntryKind.TUNNEL)}
        before = {e.prefix: self._path_of(e.prefix.network)
                  for e in add if e.flow is None and (
                      e.kind in (EntryKind.ROUTE, EntryKind.TUNNEL)
                      or (e.kind is EntryKind.ANCHOR and e.prefix in leaving))}
        # Validated: apply without any failure path (atomic).
        released: list[Prefix] = []
        for e in delete:
            self._remove(e)
            if e.kind is EntryKind.BUFFER and not any(
                a.kind is EntryKind.BUFFER and a.prefix == e.prefix for a in add
            ):
                released.append(e.prefix)
        for e in add:
            if self._has(e):
                continue  # idempotent re-add
            self._insert(e)
            if e.kind is EntryKind.BUFFER and e.prefix not in self._buffers:
                spec = (buffers or {}).get(e.prefix, BufferSpec())
                self._buffers[e.prefix] = _Buffer(spec, now)
                self._order += 1
                heapq.heappush(self._deadlines, (now + spec.timeout, self._order, e.prefix))
        if self.on_marker is not None:
            for prefix, old in before.items():
                if old is not None and old != self._path_of(prefix.network):
                    self._counters["end-marker-sent"] += 1
                    self.on_marker(old, Packet(min(self.addresses, default=0),
                                               prefix.network, flow="end-marker", marker=True))
        for p in released:
            buf = self._buffers.pop(p, None)
            if buf is not None:
                self._counters["released"] += len(buf.packets)
                for pkt in buf.packets:
                    if self.on_release is not None:
                        self.on_release(pkt)
                    else:
                        self.released.append(pkt)

    def set_source_filter(self, link: str, prefixes: Sequence[Prefix]) -> None:
        if prefixes:
            self._source_filters[link] = tuple(prefixes)
        else:
            self._source_filters.pop(link, None)

    def entries(self) -> list[ForwardingEntry]:
        out = [e for _, es in self._plain.items() for e in es]
        return out + list(self._flows)

    def _live_deadline(self) -> tuple[float, Prefix] | None:
        """The earliest deadline of a hold in force (stale entries dropped)."""
        q = self._deadlines
        while q:
            at, _, prefix = q[0]
            buf = self._buffers.get(prefix)
            # Same sum as when it was pushed: "now - started >= timeout" can
            # be False at that very deadline by rounding, and a timer spin.
            if buf is not None and buf.started + buf.spec.timeout == at:
                return at, prefix
            heapq.heappop(q)
        return None

    def expire(self, now: float) -> None:
        while (due := self._live_deadline()) is not None and now >= due[0]:
            prefix = due[1]
            buf = self._buffers[prefix]
            hold = [e for e in (*(self._plain.get(prefix) or ()), *self._flows)
                    if e.kind is EntryKind.BUFFER and e.prefix == prefix]
            if buf.spec.release_on_timeout and hold:
                self._counters["hold-timeout-released"] += len(buf.packets)
                self.apply((), hold, now)
                continue
            self._counters["buffer-timeout"] += len(buf.packets)
            del self._buffers[prefix]
            for e in hold:
                self._remove(e)

    def next_deadline(self) -> float | None:
        due = self._live_deadline()
        return None if due is None else due[0]

    def usage(self, flow: FlowFilter) -> FlowUsage:
        u = self._usage.get(flow)
        return FlowUsage(*u) if u is not None else FlowUsage()

    def charges(self, prefix: Prefix) -> Mapping[FlowFilter, FlowUsage]:
        return {f: FlowUsage(*u) for f, u in self._usage.items() if prefix.covers(f.src)}

    def take_charges(self, prefix: Prefix) -> Mapping[FlowFilter, FlowUsage]:
        out = self.charges(prefix)
        for f in out:
            del self._usage[f]
        return out

    def add_usage(self, flow: FlowFilter, moved: FlowUsage) -> None:
        u = self._usage.setdefault(flow, [0, 0, 0, 0])
        for i, n in enumerate(moved):
            u[i] += n

    def track(self, flow: FlowFilter, link: str | None = None) -> None:
        """Start charging a flow (from zero unless state was moved in).

        The model charges a flow wherever it is delivered: ``link`` is not needed.
        """
        self._usage.setdefault(flow, [0, 0, 0, 0])

    def untrack(self, flow: FlowFilter) -> FlowUsage:
        """Stop charging a flow; returns its final counters."""
        u = self._usage.pop(flow, None)
        return FlowUsage(*u) if u is not None else FlowUsage()

    def counters(self) -> Mapping[str, int]:
        return dict(self._counters)

    def lose_holds(self) -> None:
        """The hold device went with the agent's process (``kill -9``): what
        every hold kept is lost (``hold-lost``), and the holds' routes into
        it with it - the prefixes' other entries stay."""
        for prefix, buf in self._buffers.items():
            self._counters["hold-lost"] += len(buf.packets)
            for e in [e for e in (*(self._plain.get(prefix) or ()), *self._flows)
                      if e.kind is EntryKind.BUFFER and e.prefix == prefix]:
                self._remove(e)
        self._buffers.clear()

    def holds(self) -> set[Prefix]:
        return set(self._buffers)

    def held(self, prefix: Prefix) -> bool:
        return prefix in self._buffers

    def mark_end(self, tunnel: ForwardingEntry, now: float, served_on: str | None = None) -> bool:
        if not self._has(tunnel) or tunnel.kind is not EntryKind.TUNNEL \
                or self.on_marker is None:
            return False
        if served_on is not None and self.link_up is not None and not self.link_up(served_on):
            self._counters["end-marker-link-down"] += 1
            return False
        path = self._path_of(tunnel.prefix.network)
        if path is None:
            return False  # held here, or routed elsewhere by a longer prefix
        self._counters["end-marker-sent"] += 1
        self.on_marker(path, Packet(min(self.addresses, default=0), tunnel.prefix.network,
                                    flow="end-marker", marker=True))
        return True

    def buffer_spec(self, prefix: Prefix) -> BufferSpec | None:
        """The limits of the hold for ``prefix``, if one is up."""
        buf = self._buffers.get(prefix)
        return buf.spec if buf is not None else None

    def buffered(self, prefix: Prefix) -> int:
        """Packets currently held for ``prefix``."""
        buf = self._buffers.get(prefix)
        return len(buf.packets) if buf is not None else 0

    # -- Forwarding model ---------------------------------------------------------

    def decide(self, p: Packet, in_link: str | None = None, flushed: bool = False) -> Decision:
        """What this router does with ``p`` (arrived on access link ``in_link``).

        ``flushed``: ``p`` was just decapsulated at this node's *flush SID*
        (a DECAP entry whose link is ``"flush"``): it is a leftover that a
        previous point of attachment forwards.  Leftovers pass the hold of
        their prefix, and the end marker that follows them releases it, so
        packets that took the new direct path wait for the old path to drain.
        """
        if in_link is not None:
            allowed = self._source_filters.get(in_link)
            if allowed is not None and not any(a.contains(p.src) for a in allowed):
                self._counters["spoofed-source"] += 1
                self._counters[f"spoofed-source:{in_link}"] += 1
                return Decision("drop", reason="spoofed-source")
            self._charge(p, up=True)
        dst = p.route_dst
        if p.outer is not None and dst in self.addresses:
            e = self._lookup_plain(dst)
            if e is not None and e.kind is EntryKind.DECAP:
                return Decision("decap", link=e.link)
            self._counters["no-decap"] += 1
            return Decision("drop", reason="no-decap")
        if dst in self.addresses:
            return Decision("local")
        entry = self._lookup_flow(p) if p.outer is None else None
        if entry is None:
            entry = self._lookup_plain(dst, skip_buffer=flushed)
        if p.marker:
            # The old path has drained up to here: release the hold it
            # guarded (at the new point), or stop at the MN's access router.
            if flushed:
                self._end_marker(dst)
                return Decision("consumed")
            if entry is not None and entry.kind is EntryKind.ANCHOR:
                return Decision("consumed")
        if entry is None:
            self._counters["no-route"] += 1
            return Decision("drop", reason="no-route")
        kind = entry.kind
        if kind is EntryKind.ANCHOR:
            self._charge(p, up=False)
            return Decision("deliver", link=entry.link)
        if kind is EntryKind.ROUTE:
            assert entry.next_hop is not None
            return Decision("forward", next_hop=int(entry.next_hop))
        if kind is EntryKind.TUNNEL:
            assert entry.next_hop is not None
            return Decision("encap", next_hop=int(entry.next_hop))
        if kind is EntryKind.BUFFER:
            buf = self._buffers.get(entry.prefix)
            if buf is None or len(buf.packets) >= buf.spec.limit:
                self._counters["buffer-overflow"] += 1
                return Decision("drop", reason="buffer-overflow")
            buf.packets.append(p)
            self._counters["buffered"] += 1
            return Decision("buffer")
        self._counters["dropped-by-entry"] += 1
        return Decision("drop", reason="drop-entry")

    def _charge(self, p: Packet, up: bool) -> None:
        if not self._usage:
            return
        for flow, u in self._usage.items():
            if up and _flow_matches(flow, p):
                u[0] += p.size
                u[2] += 1
                return
            if not up and _flow_matches(flow.reversed(), p):
                u[1] += p.size
                u[3] += 1
                return

    def _lookup_flow(self, p: Packet) -> ForwardingEntry | None:
        best: ForwardingEntry | None = None
        for e in self._flows:
            if (
                e.prefix.contains(p.dst) and e.flow is not None and _flow_matches(e.flow, p)
                and (best is None
                     or (e.prefix.length, -e.metric) > (best.prefix.length, -best.metric))
            ):
                best = e
        return best

    def _lookup_plain(self, dst: int, skip_buffer: bool = False) -> ForwardingEntry | None:
        hit = self._plain.longest(dst)
        if hit is None:
            return None
        entries = hit[1]
        if not skip_buffer:
            for e in entries:
                if e.kind is EntryKind.BUFFER:
                    return e  # a held prefix holds, whatever else is installed
        usable = [e for e in entries if e.kind is not EntryKind.BUFFER] if skip_buffer else entries
        if not usable:
            hit = self._plain.longest(dst, max_length=hit[0].length - 1) if hit[0].length else None
            return None if hit is None else min(hit[1], key=lambda e: e.metric)
        return min(usable, key=lambda e: e.metric)

    def _end_marker(self, dst: int) -> None:
        """The old path has drained: release the holds covering ``dst``."""
        for prefix in [p for p, b in self._buffers.items()
                       if p.contains(dst) and b.spec.release_on_timeout]:
            hold = [e for e in self.entries()
                    if e.kind is EntryKind.BUFFER and e.prefix == prefix and e.flow is None]
            self._counters["end-marker"] += 1
            self.apply((), hold, 0.0)

    def _path_of(self, dst: int) -> Decision | None:
        held = self._lookup_plain(dst)
        if held is not None and held.kind is EntryKind.BUFFER:
            # Held packets leave in order through whatever replaces the
            # hold; the route under it carried none of them, and a marker
            # sent that way could overtake them and open a hold too early.
            return None
        e = self._lookup_plain(dst, skip_buffer=True)
        if e is None or e.next_hop is None or e.prefix.length == 0:
            # A default route is where prefixes this router plays no part
            # in go (back towards the core): a marker sent that way would
            # come round to the prefix's live path and open holds early.
            return None
        if e.kind is EntryKind.ROUTE:
            return Decision("forward", next_hop=int(e.next_hop))
        if e.kind is EntryKind.TUNNEL:
            return Decision("encap", next_hop=int(e.next_hop))
        return None

    # -- Table maintenance -------------------------------------------------------

    def _validate(self, e: ForwardingEntry) -> None:
        if e.kind in (EntryKind.ROUTE, EntryKind.TUNNEL) and e.next_hop is None:
            raise DataPlaneError(f"{self.name}: {e.kind.name} needs a next hop", e)
        if e.kind is EntryKind.ANCHOR and not e.link:
            raise DataPlaneError(f"{self.name}: ANCHOR needs an access link", e)
        if e.kind is EntryKind.DECAP and e.flow is not None:
            raise DataPlaneError(f"{self.name}: DECAP cannot be per flow", e)

    def _has(self, e: ForwardingEntry) -> bool:
        if e.flow is not None:
            return e in self._flows
        es = self._plain.get(e.prefix)
        return es is not None and e in es

    def _insert(self, e: ForwardingEntry) -> None:
        if e.flow is not None:
            self._flows.append(e)
            return
        es = self._plain.get(e.prefix)
        if es is None:
            self._plain.set(e.prefix, [e])
        else:
            es.append(e)

    def _remove(self, e: ForwardingEntry) -> None:
        if e.flow is not None:
            self._flows.remove(e)
            return
        es = self._plain.get(e.prefix)
        assert es is not None
        es.remove(e)
        if not es:
            self._plain.pop(e.prefix)
