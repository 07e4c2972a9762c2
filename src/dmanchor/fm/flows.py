"""The flows an access router knows on its MNs' prefixes (FM:2, FM:3).

Which flows need session continuity is what the kernel's connection
tracking shows at the router that forwards them (:mod:`..dataplane.conntrack`):
a flow on an MN's prefix that is still open when the MN moves keeps that
prefix reachable (FM:3-2), and once every flow on a kept prefix has ended
the forwarding changes can be reverted (FM:3-3).  Flows can also come with
their FM:2 state from the previous point, or be named by the MN's
attachment (FM:3-1 filters).

Sans-IO: the book only counts.  Conntrack is blind to packets decapsulated
from a tunnel, so a router may see a flow one way only, in part (a few
packets re-injected from a hold), or not at all (one handed over to a
point its packets reach through a tunnel) - and take it for ended while
it goes on.  So conntrack's word only makes a flow a candidate: it has
ended when its charged packets have also stopped growing for the idle
time (:meth:`FlowBook.idle`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv6Address

from ..dataplane.api import FlowUsage
from ..dataplane.conntrack import Conn
from ..wire.types import FlowFilter, Prefix

CHARGED_RECORDS = 4096
"""Charging records of ended flows kept for queries, oldest dropped first."""
MAX_FLOWS_PER_PREFIX = 4096
"""Open flows the book keeps per prefix: the peers of an MN choose how many
flows it has, so the book is bounded.  Beyond it a flow is not kept (the
prefix counts as busy anyway; charging is the kernel's, not the book's)."""
TRACKED_PROTOCOLS = frozenset({6, 17})
"""TCP and UDP: the flows whose end the kernel reports (FIN/RST, idle timeout)."""


def flow_of(conn: Conn, mn_side: Callable[[IPv6Address], Prefix | None]
            ) -> tuple[FlowFilter, Prefix] | None:
    """The flow a connection is, oriented MN side first (an uplink
    :class:`FlowFilter`), and the MN prefix it uses; None if neither end is
    in an MN prefix ``mn_side`` knows, or it is not TCP/UDP."""
    if conn.proto not in TRACKED_PROTOCOLS:
        return None
    for mn, peer, mport, pport in ((conn.dst, conn.src, conn.dport, conn.sport),
                                   (conn.src, conn.dst, conn.sport, conn.dport)):
        prefix = mn_side(mn)
        if prefix is not None:
            return FlowFilter(Prefix.host(mn), Prefix.host(peer), conn.proto, mport,
                              pport), prefix
    return None


class FlowBook:
    """Open flows per MN prefix, and what ended flows were charged."""

    def __init__(self) -> None:
        self.open: dict[Prefix, tuple[FlowFilter, ...]] = {}
        """Flows using each prefix here (learned, handed over or named)."""
        self.seen: dict[FlowFilter, float] = {}
        """Flows this router's conntrack has reported open, and since when."""
        self.closed: set[Prefix] = set()
        """Prefixes whose flows have all ended (FM:3-3 may revert them)."""
        self.charged: OrderedDict[FlowFilter, FlowUsage] = OrderedDict()
        """Final usage of flows that ended here (charging records)."""
        self.closing: set[FlowFilter] = set()
        """Flows conntrack says are over, or half closed (TCP, one FIN seen)."""
        self._activity: dict[FlowFilter, tuple[int, float]] = {}
        self.over_cap = 0
        """Flows not kept: their prefix had MAX_FLOWS_PER_PREFIX open already."""
        # flow -> (packets charged, since when): for flows judged by their counters

    def count(self, prefix: Prefix) -> int | None:
        """Flows open on ``prefix`` here (None: none ever known of)."""
        if prefix in self.closed:
            return 0
        flows = self.open.get(prefix)
        return None if flows is None else len(flows)

    def add(self, prefix: Prefix, flows: Iterable[FlowFilter]) -> tuple[FlowFilter, ...]:
        """``flows`` use ``prefix``; returns those not known before."""
        have = self.open.get(prefix, ())
        new = tuple(f for f in dict.fromkeys(flows) if f not in have)
        room = max(0, MAX_FLOWS_PER_PREFIX - len(have))
        self.over_cap += max(0, len(new) - room)
        new = new[:room]
        self.open[prefix] = have + new
        if new:
            self.closed.discard(prefix)
        return new

    def end(self, prefix: Prefix, flow: FlowFilter) -> bool:
        """``flow`` ended; True if it was the last open on ``prefix``."""
        self._forget(flow)
        have = self.open.get(prefix, ())
        if flow not in have:
            return False
        rest = tuple(f for f in have if f != flow)
        self.open[prefix] = rest
        return not rest

    def prefix_of(self, flow: FlowFilter) -> Prefix | None:
        """The prefix an open ``flow`` uses here."""
        return next((p for p, fs in self.open.items() if flow in fs), None)

    def watched(self) -> list[tuple[Prefix, FlowFilter]]:
        """Open flows that may have ended: conntrack says so (it may have
        seen only part of the flow), saw one FIN, or never saw the flow
        (its packets arrive decapsulated)."""
        return [(p, f) for p, fs in self.open.items() for f in fs
                if f not in self.seen or f in self.closing]

    def idle(self, counted: Mapping[FlowFilter, FlowUsage], now: float, limit: float
             ) -> list[tuple[Prefix, FlowFilter]]:
        """Watched flows whose charged packets (``counted``) have not grown
        for ``limit`` seconds: they ended."""
        out = []
        for p, f in self.watched():
            total = sum(u.packets_up + u.packets_down for g, u in counted.items()
                        if f.matches(g.src.network, g.dst.network, g.proto, g.sport, g.dport))
            last = self._activity.get(f)
            if last is None or last[0] != total:
                self._activity[f] = (total, now)
            elif now - last[1] >= limit:
                out.append((p, f))
        return out

    def vanished(self, present: set[FlowFilter], taken: float) -> list[FlowFilter]:
        """Flows conntrack reported open that a dump taken at ``taken`` no
        longer shows (an event was lost).  A flow first seen after the dump
        began may simply not be in it."""
        return [f for fs in self.open.values() for f in fs
                if self.seen.get(f, taken) < taken and f not in present]

    def drop(self, prefix: Prefix) -> tuple[FlowFilter, ...]:
        """Forget ``prefix``'s flows (they moved on, or the prefix went)."""
        flows = self.open.pop(prefix, ())
        for f in flows:
            self._forget(f)
        self.closed.discard(prefix)
        return flows

    def _forget(self, flow: FlowFilter) -> None:
        self.seen.pop(flow, None)
        self.closing.discard(flow)
        self._activity.pop(flow, None)

    def record(self, flow: FlowFilter, usage: FlowUsage) -> None:
        """Keep the final usage of a flow that ended here."""
        have = self.charged.pop(flow, FlowUsage())
        self.charged[flow] = FlowUsage(*(a + b for a, b in zip(have, usage, strict=True)))
        while len(self.charged) > CHARGED_RECORDS:
            self.charged.popitem(last=False)

    def recorded(self, want: FlowFilter) -> FlowUsage:
        """What the ended flows ``want`` selects were charged here."""
        total = [0, 0, 0, 0]
        for f, u in self.charged.items():
            if want.matches(f.src.network, f.dst.network, f.proto, f.sport, f.dport):
                total = [a + b for a, b in zip(total, u, strict=True)]
        return FlowUsage(*total)
