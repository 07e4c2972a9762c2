"""The DataPlane interface on the Linux kernel, over rtnetlink, in any netns.

Mapping of FM:5-1 entries to kernel objects (all tagged with protocol
:data:`~.netlink.RTPROT_DMANCHOR`, the only objects it ever reads back as
its own or removes):

============  ==============================================================
ANCHOR        ``route PREFIX dev LINK`` (connected route on the access link)
ROUTE         ``route PREFIX via NEXT_HOP``
TUNNEL        ``nexthop id N encap seg6 mode encap segs SEGMENT dev lo`` (one
              shared object per segment, so 100k tunnelled prefixes fit) and
              ``route PREFIX nhid N``
DECAP         ``route SID/128 encap seg6local action End.DT6 table main dev lo``
DROP          ``route blackhole PREFIX``
per flow      a rule ``from SRC to DST ipproto P sport S dport D lookup T``
              (FM:3-1) and the entry's route in its own table ``T``
source filter ``rule iif LINK from PREFIX lookup main`` per allowed prefix,
              then a counting trap (SM, see :mod:`.sourceval`)
============  ==============================================================

A batch is sent pipelined (one round trip per 1024 objects).  Netlink has no
transactions: when an object of a batch fails, the objects of that batch
that succeeded are removed again, so an update is all or nothing as seen
after :meth:`apply` returns.

BUFFER (FM:6) routes the prefix, at metric 1, into the namespace's TUN
device (:mod:`.tunbuffer`); deleting it releases the held packets in order
through the forwarding then current (see :meth:`LinuxDataPlane._release`).
Per-flow charging (FM:2) is :mod:`.charging`.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from ipaddress import IPv6Address

from ..wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix
from .api import BufferSpec, DataPlaneError, FlowUsage
from .charging import Charging
from .linux_holds import BUFFER_METRIC, FLUSH_TABLE, STANDBY_METRIC, Holds, _Hold, _Lifting
from .linux_markers import OLDPATH_TABLE, EndMarkers
from .markers import MarkerAuth
from .netlink import (
    FR_ACT_BLACKHOLE,
    RT_TABLE_MAIN,
    RTN_BLACKHOLE,
    RTPROT_DMANCHOR,
    Netlink,
    NetlinkError,
    Request,
    route,
    rule,
    seg6_nexthop,
)
from .sourceval import SourceFilters
from .tunbuffer import DEVICE as TUN_DEVICE
from .tunbuffer import Lift, TunBuffer

NHID_BASE = 0x4D000000
"""Nexthop ids dmanchor allocates start here (far from hand-made ones)."""
FLOW_TABLE_BASE = 0x4D00
"""Per-flow routing tables start here."""
FLOW_RULE_PRIORITY = 1000
"""Priority of FM:3-1 flow rules (before main at 32766)."""
RT_TABLE_LOCAL = 255
DT6_TABLES = {"flush": FLUSH_TABLE, "local": RT_TABLE_LOCAL}
"""DECAP ``link`` -> the table End.DT6 looks the inner packet up in: the flush
table (past holds), or the local table (a host ending its own tunnel, Fig 2a:
the inner packet is for one of its addresses).  Default: main (a router)."""
_REPLACEABLE = (EntryKind.ROUTE, EntryKind.TUNNEL, EntryKind.DROP)


def _repointed(add: Sequence[ForwardingEntry],
               delete: Sequence[ForwardingEntry]) -> dict[ForwardingEntry, ForwardingEntry]:
    """New entry -> the deleted one it replaces: the same prefix and metric,
    no flow, each one route (an ANCHOR or a flow's entry is more than one
    request, and keeps its delete-then-add)."""
    old = {(e.prefix, e.metric): e for e in delete
           if e.flow is None and e.kind in _REPLACEABLE}
    out: dict[ForwardingEntry, ForwardingEntry] = {}
    for e in add:
        if e.flow is None and e.kind in _REPLACEABLE:
            d = old.pop((e.prefix, e.metric), None)
            if d is not None:
                out[e] = d
    return out


def _flow_key(e: ForwardingEntry) -> tuple[object, ...]:
    return (e.prefix, e.flow)


class LinuxDataPlane(Holds, EndMarkers):
    """FM-DP forwarding state in a Linux network namespace."""

    def __init__(self, netns: str | None = None, *, sid_dev: str | None = None,
                 markers: MarkerAuth | None = None) -> None:
        """``netns``: namespace name (``ip netns``), None for the current one.

        ``markers``: signs this data plane's end markers and judges those
        its holds receive (default: unsigned, any marker believed).

        ``sid_dev``: device the End.DT6 routes are attached to.  It must not
        be ``lo``: on this kernel (6.18) an End.DT6 route on lo never matches
        incoming packets (counted as Ip6InNoRoutes, answered with ICMP
        unreachable).  Default: the uplink (the default route's device).
        """
        self.nl = Netlink(netns)
        self.netns = netns
        self.markers = markers or MarkerAuth((), None, require=False)
        self._sid_dev = sid_dev
        self._names: dict[int, str] = {}
        self._index: dict[str, int] = {}
        self._nhid: dict[IPv6Address, int] = {}
        self._hop_cache: tuple[object, int | None] = (None, None)  # see _nhid_of
        self._nh_refs: dict[int, int] = {}  # nexthop id -> routes using it
        self._flow_tables: dict[tuple[object, ...], int] = {}
        self._tun: TunBuffer | None = None
        self.upstream: set[IPv6Address] = set()
        """Next hops towards the core (an access router's uplink): no end
        marker is sent that way (see :meth:`_marker_paths`)."""
        self._holds: dict[Prefix, _Hold] = {}
        self._lifting: dict[Prefix, _Lifting] = {}  # released holds still draining
        self._lift_due: float | None = None
        self._marks_after_lift: dict[Prefix, tuple[ForwardingEntry, float]] = {}
        self._held: dict[Prefix, list[bytes]] = {}  # per hold, read, not yet released
        self._strays: list[bytes] = []  # read, no hold claims them (see STANDBY_METRIC)
        self._new_markers: list[bytes] = []  # end markers read, not yet judged
        self._held_bytes = 0
        self._held_bytes_of: Counter[Prefix] = Counter()
        self._counters: Counter[str] = Counter()
        self.on_change: Callable[[Sequence[ForwardingEntry], Sequence[ForwardingEntry]], None] | \
            None = None
        """Called with (added, deleted) after every applied batch (traces)."""
        self.on_lift: Callable[[Prefix, Lift, str], None] | None = None
        """Called with (prefix, what it took, cause) when a hold is lifted:
        cause ``apply`` (its BUFFER deleted), ``end-marker`` or ``timeout``."""
        self.charging = Charging(netns)
        """FM:2 per-flow counters (nftables); :meth:`Charging.start` names the
        access links they count on."""
        self._refresh_links()
        self.sources = SourceFilters(self.nl, self._ifindex)
        """The SM source filters (learned back from the kernel on start)."""
        self._drop_stale_release_rule()
        self._marker_sock: socket.socket | None = None
        self._oldpaths: set[Prefix] = set()  # OLDPATH_TABLE routes to remove next batch
        if os.path.exists("/dev/net/tun"):
            # Created up front: its descriptor is what a driver watches for
            # end markers, and creating it must not cost a move anything.
            self._ensure_tun()
        self._learn_nexthops()

    def close(self) -> None:
        """Close the netlink socket (routes stay; held packets are dropped,
        but those of a hold being lifted are sent on first)."""
        self._finish_lifts(list(self._lifting), 0.0)
        if self._tun is not None:
            self._tun.close()
            self._tun = None
            self._drop_stale_release_rule()
        if self._marker_sock is not None:
            self._marker_sock.close()
        if self._oldpaths:
            self.nl.batch([route(False, p.network.to_bytes(16, "big"), p.length,
                                 table=OLDPATH_TABLE) for p in self._oldpaths])
        self.nl.close()

    def apply(
        self,
        add: Sequence[ForwardingEntry],
        delete: Sequence[ForwardingEntry],
        now: float,
        buffers: Mapping[Prefix, BufferSpec] | None = None,
    ) -> None:
        if any(e.kind is EntryKind.BUFFER for e in add):
            self._ensure_tun()
        held_again: set[Prefix] = set()
        if self._lifting:
            # Held again while its lift drains (the MN left again, a ping-
            # pong): the hold route stays and keeps what it has; any other
            # change to a prefix being lifted finishes the lift first.
            held_again = {e.prefix for e in add if e.kind is EntryKind.BUFFER
                          and e.flow is None and e.prefix in self._lifting}
            for p in held_again:
                self._hold_again(p)
            self._finish_lifts({e.prefix for e in [*add, *delete]} - held_again, now)
        # A released hold's route goes last, after its packets drained.
        releasing = [e for e in delete if e.kind is EntryKind.BUFFER and e.flow is None]
        delete = [e for e in delete if e not in releasing]
        forward: list[Request] = []
        # (first request index, entry, added?) per entry: the inverse of what
        # succeeded is built only if something fails.
        spans: list[tuple[int, ForwardingEntry, bool]] = []
        new_nh = self._new_nexthops(add)
        nh_reqs = [seg6_nexthop(True, nhid, seg, self._oif_towards(seg))
                   for seg, nhid in new_nh.items()]
        forward.extend(nh_reqs)
        # New holds go first: the batch's messages take effect one by one,
        # and a path changed under a hold not yet in place forwards what
        # arrives meanwhile (an anchor taking its prefix back put its link
        # route in before its hold: 25-46 packets overtook those still
        # coming back through the visited point, at 10k pps).
        holds = [e for e in add if e.kind is EntryKind.BUFFER]
        # A route re-pointed is replaced in one message.  As a delete and then
        # an add, what arrived between the two took the covering route (a
        # core router re-pointing a prefix: chain-back lost 1 of 6800).
        repointed = _repointed(add, delete)
        replaced = set(repointed.values())
        try:
            for e in holds:
                if e.prefix in held_again:
                    continue  # its route never went
                spans.append((len(forward), e, True))
                forward.extend(self._requests(e, add=True))
            for e in delete:
                if e in replaced:
                    continue
                spans.append((len(forward), e, False))
                forward.extend(self._requests(e, add=False))
            for e in add:
                if e.kind is EntryKind.BUFFER:
                    continue
                spans.append((len(forward), e, True))
                forward.extend(self._requests(e, add=True, replace=e in repointed))
        except DataPlaneError:
            self._forget_nexthops(new_nh)
            raise
        # Where each re-routed prefix went before: its old path gets an end
        # marker.  The route the marker takes rides in the same batch, and the
        # previous markers' routes are removed in it: one round trip in all.
        markers = self._marker_paths(add, delete)
        main = len(forward)
        forward.extend(self._oldpath_route(p, old) for p, old in markers)
        fresh = {p for p, _ in markers}
        forward.extend(route(False, p.network.to_bytes(16, "big"), p.length, table=OLDPATH_TABLE)
                       for p in self._oldpaths if p not in fresh)
        failures = self.nl.batch(forward)
        self._oldpaths = {p for p in self._oldpaths if p in fresh}
        bad_marker = {i - main for i, _ in failures if main <= i < main + len(markers)}
        failures = [f for f in failures if f[0] < main]
        if failures:
            self._oldpaths |= fresh
            self._rollback(forward[:main], spans, new_nh, {i for i, _ in failures},
                           repointed)
            _, err = failures[0]
            raise DataPlaneError(f"{self.netns or 'host'}: {err}") from err
        for e in add:
            if e.kind is EntryKind.TUNNEL and e.next_hop is not None:
                nhid = self._nhid_of(e.next_hop)
                assert nhid is not None
                self._nh_refs[nhid] = self._nh_refs.get(nhid, 0) + 1
        for e in delete:
            if e.kind is EntryKind.TUNNEL and e.next_hop is not None:
                nhid = self._nhid_of(e.next_hop)
                if nhid is not None:
                    self._nh_refs[nhid] = self._nh_refs.get(nhid, 1) - 1
        if self.on_change is not None:
            self.on_change(add, [*delete, *releasing])
        for i, (prefix, _) in enumerate(markers):
            if i in bad_marker:
                self._counters["end-marker-failed"] += 1
            else:
                self._send_marker(prefix, now)
        self._drop_unused_nexthops()
        for e in add:
            if e.kind is EntryKind.BUFFER:
                spec = (buffers or {}).get(e.prefix, BufferSpec())
                self._holds[e.prefix] = _Hold(spec, now)
                self._adopt(e.prefix)
                self._counters["holds"] += 1
                if spec.release_on_timeout:
                    # The end marker reaches this new point through the flush
                    # SID: catch it (it is addressed to the prefix's first
                    # address) in the hold device.
                    self._batch_or_raise([route(
                        True, e.prefix.network.to_bytes(16, "big"), 128, table=FLUSH_TABLE,
                        oif=self._ifindex(TUN_DEVICE), replace=True)])
        for e in releasing:
            new = [a for a in add if a.prefix == e.prefix and a.flow is None]
            if all(a.kind is EntryKind.BUFFER for a in new):
                # The prefix's route came in an earlier batch (an anchor
                # taking its prefix back holds the direct path, then lifts
                # the hold alone): drain into what the kernel has.
                new = [a for a in self.entries() if a.prefix == e.prefix and a.flow is None]
            self._release(e, new, "apply", now)

    # -- FM:6 on Linux ---------------------------------------------------------------

    def _batch_or_raise(self, reqs: list[Request]) -> None:
        failures = self.nl.batch(reqs)
        if failures:
            raise DataPlaneError(f"{self.netns or 'host'}: {failures[0][1]}")

    def _rollback(self, forward: list[Request], spans: list[tuple[int, ForwardingEntry, bool]],
                  new_nh: dict[IPv6Address, int], failed: set[int],
                  repointed: Mapping[ForwardingEntry, ForwardingEntry]) -> None:
        """Undo, newest first, every request of a failed batch that succeeded."""
        undo: list[Request] = []
        bounds = [start for start, _, _ in spans] + [len(forward)]
        for (start, e, added), end in zip(spans, bounds[1:], strict=True):
            # reverse order of forward; a replaced route is put back by another
            old = repointed.get(e) if added else None
            inverse = (self._requests(old, add=True, replace=True) if old is not None
                       else self._requests(e, add=not added))
            for j in range(end - start):
                if start + j not in failed:
                    undo.append(inverse[len(inverse) - 1 - j])
        undo.reverse()
        # The new nexthop objects were the first requests of the batch.
        undo += [seg6_nexthop(False, nhid, seg, 0)
                 for i, (seg, nhid) in enumerate(new_nh.items()) if i not in failed]
        self.nl.batch(undo)
        self._forget_nexthops(new_nh)

    def _forget_nexthops(self, new_nh: dict[IPv6Address, int]) -> None:
        for seg in new_nh:
            self._nhid.pop(seg, None)
        self._hop_cache = (None, None)

    def set_source_filter(self, link: str, prefixes: Sequence[Prefix]) -> None:
        self.sources.set(link, prefixes)

    def entries(self) -> list[ForwardingEntry]:
        """Read back every dmanchor entry from the kernel."""
        # The routes first; the other dumps only when some route needs them
        # (this runs on the handover path, ~0.2 ms a dump).
        ours = [r for r in self.nl.routes() if r.protocol == RTPROT_DMANCHOR]
        segs = {nh.nhid: nh.segment for nh in self.nl.nexthops()
                if nh.protocol == RTPROT_DMANCHOR} if any(r.nhid for r in ours) else {}
        flows = {r.table: r for r in self.nl.rules()
                 if r.protocol == RTPROT_DMANCHOR and r.action != FR_ACT_BLACKHOLE
                 and r.table >= FLOW_TABLE_BASE} if any(
            r.table >= FLOW_TABLE_BASE for r in ours) else {}
        if any(r.oif is not None and r.oif not in self._names for r in ours):
            self._refresh_links()
        out = []
        for r in ours:
            prefix = Prefix.make(r.dst, r.dst_len)
            metric = 0 if r.metric in (None, 1024) else r.metric
            flow = None
            if r.seg6local and r.table == RT_TABLE_LOCAL:
                out.append(ForwardingEntry(EntryKind.DECAP, prefix, link="local"))
                continue
            if r.table != RT_TABLE_MAIN:
                fr = flows.get(r.table)
                if fr is None:
                    continue  # a table without its rule is not ours to report
                flow = FlowFilter(
                    Prefix.make(*fr.src) if fr.src else Prefix(0, 0),
                    Prefix.make(*fr.dst) if fr.dst else Prefix(0, 0),
                    fr.proto, fr.sport, fr.dport,
                )
            if r.seg6local:
                out.append(ForwardingEntry(EntryKind.DECAP, prefix))
            elif r.oif is not None and self._names.get(r.oif) == TUN_DEVICE:
                # A standby belongs to its ANCHOR; a hold being lifted is
                # released already (its route goes when its packets drained).
                if r.metric != STANDBY_METRIC and prefix not in self._lifting:
                    out.append(ForwardingEntry(EntryKind.BUFFER, prefix))
            elif r.type == RTN_BLACKHOLE:
                out.append(ForwardingEntry(EntryKind.DROP, prefix, flow=flow, metric=metric))
            elif r.nhid is not None and segs.get(r.nhid) is not None:
                out.append(ForwardingEntry(EntryKind.TUNNEL, prefix, segs[r.nhid], flow,
                                           metric=metric))
            elif r.gateway is not None:
                out.append(ForwardingEntry(EntryKind.ROUTE, prefix, r.gateway, flow,
                                           metric=metric))
            elif r.oif is not None:
                out.append(ForwardingEntry(EntryKind.ANCHOR, prefix, None, flow,
                                           self._names.get(r.oif, str(r.oif)), metric))
        return out

    def converge(self, desired: Iterable[ForwardingEntry]) -> tuple[int, int]:
        """Reconcile: make the kernel hold exactly ``desired`` (of ours).

        Used when an agent (re)starts: nothing is duplicated, nothing leaked.
        Returns (added, deleted).
        """
        want = list(dict.fromkeys(desired))
        have = self.entries()
        self._learn_flow_tables(have)
        add = [e for e in want if e not in have]
        delete = [e for e in have if e not in want]
        # End-marker routes a dead agent left behind go with this batch.
        self._oldpaths |= {Prefix.make(r.dst, r.dst_len) for r in self.nl.routes()
                           if r.table == OLDPATH_TABLE}
        self.apply(add, delete, 0.0)
        self._drop_orphan_rules()
        return len(add), len(delete)

    def track(self, flow: FlowFilter, link: str | None = None) -> None:
        # Nothing to set up: the charging table counts every flow on the
        # access links from its first packet (.charging).
        return None

    def untrack(self, flow: FlowFilter) -> FlowUsage:
        return self.charging.untrack(flow)

    def usage(self, flow: FlowFilter) -> FlowUsage:
        return self.charging.usage(flow)

    def charges(self, prefix: Prefix) -> Mapping[FlowFilter, FlowUsage]:
        return self.charging.of_prefix(prefix)

    def take_charges(self, prefix: Prefix) -> Mapping[FlowFilter, FlowUsage]:
        return self.charging.take(prefix)

    def add_usage(self, flow: FlowFilter, moved: FlowUsage) -> None:
        self.charging.add_usage(flow, moved)

    def counters(self) -> Mapping[str, int]:
        out = dict(self._counters)
        out.update(self.sources.counters())
        if self.charging.offsets_refused:
            out["charging-offsets-refused"] = self.charging.offsets_refused
        if self._tun is not None:
            out["buffer-overflow"] = (self.nl.link_tx_dropped(self._ifindex(TUN_DEVICE))
                                      + out.pop("buffer-overflow-held", 0))
        return out

    # -- Translation ------------------------------------------------------------------

    def _requests(self, e: ForwardingEntry, add: bool, replace: bool = False) -> list[Request]:
        """The netlink requests adding or deleting ``e``; ``replace``: the
        route replaces the one of the same prefix and metric (see
        :func:`_repointed`)."""
        table = RT_TABLE_MAIN
        out: list[Request] = []
        if e.flow is not None:
            table = self._flow_table(e, allocate=add)
            f = e.flow
            dst = f.dst if f.dst.length else e.prefix
            out.append(rule(
                add, FLOW_RULE_PRIORITY + (table - FLOW_TABLE_BASE), table,
                src=(f.src.address, f.src.length) if f.src.length else None,
                dst=(dst.address, dst.length), proto=f.proto, sport=f.sport, dport=f.dport,
            ))
        metric = e.metric or None
        p = e.prefix
        net = p.network.to_bytes(16, "big")
        kind = e.kind
        if kind is EntryKind.ROUTE:
            assert e.next_hop is not None
            r = route(add, net, p.length, table=table, gateway=e.next_hop.packed, metric=metric,
                      replace=replace)
        elif kind is EntryKind.TUNNEL:
            assert e.next_hop is not None
            nhid = self._nhid_of(e.next_hop)
            if nhid is None:
                raise DataPlaneError(f"no tunnel towards {e.next_hop}", e)
            r = route(add, net, p.length, table=table, nhid=nhid, metric=metric,
                      replace=replace)
        elif kind is EntryKind.ANCHOR:
            oif = self._ifindex(e.link)
            r = route(add, net, p.length, table=table, oif=oif, metric=metric)
            if e.flow is None and self._tun is not None:
                # Replace: a standby can outlive its ANCHOR when the link was
                # taken down (the kernel then deletes the ANCHOR route itself).
                out.append(route(add, net, p.length, oif=self._ifindex(TUN_DEVICE),
                                 metric=STANDBY_METRIC, replace=add))
            if e.flow is None:
                # Mirrored in the flush table: leftovers decapsulated at the
                # flush SID are delivered past any hold of the prefix.
                out.insert(0, route(add, net, p.length, table=FLUSH_TABLE, oif=oif))
        elif kind is EntryKind.DECAP:
            if p.length != 128:
                raise DataPlaneError("a DECAP SID must be a /128", e)
            # A host's own SIDs are in the local table, where End.DT6 looks
            # their inner packets up: a packet tunnelled to one SID and then
            # on to another (what was in flight to its last care-of address
            # follows it) is decapsulated twice.
            r = route(add, net, 128, oif=self._sid_oif(), seg6local_dt6=True,
                      dt6_table=DT6_TABLES.get(e.link, RT_TABLE_MAIN),
                      table=RT_TABLE_LOCAL if e.link == "local" else RT_TABLE_MAIN)
        elif kind is EntryKind.DROP:
            r = route(add, net, p.length, table=table, blackhole=True, metric=metric,
                      replace=replace)
        elif kind is EntryKind.BUFFER:
            if e.flow is not None:
                raise DataPlaneError("per-flow BUFFER is not supported on Linux", e)
            r = route(add, net, p.length, oif=self._ifindex(TUN_DEVICE), metric=BUFFER_METRIC)
        else:
            raise DataPlaneError(f"unsupported entry kind {e.kind.name}", e)
        # Routes before their rule on add; the rule first on delete.
        return [r, *out] if add else [*out, r]

    def _new_nexthops(self, add: Sequence[ForwardingEntry]) -> dict[IPv6Address, int]:
        new: dict[IPv6Address, int] = {}
        last: object = None
        for e in add:
            if e.kind is EntryKind.TUNNEL and e.next_hop is not None:
                if e.next_hop is last:
                    continue  # a bulk batch repeats one object: skip the hashing
                last = e.next_hop
                if e.next_hop in self._nhid or e.next_hop in new:
                    continue
                used = set(self._nhid.values()) | set(new.values())
                nhid = NHID_BASE
                while nhid in used:
                    nhid += 1
                new[e.next_hop] = nhid
        self._nhid.update(new)
        self._hop_cache = (None, None)
        return new

    def _nhid_of(self, hop: IPv6Address) -> int | None:
        """The nexthop object towards ``hop``.  A bulk batch carries one
        next-hop object many times, and an IPv6Address hashes through
        hex(int): the last answer is kept for the same object."""
        cached, nhid = self._hop_cache
        if hop is cached:
            return nhid
        nhid = self._nhid.get(hop)
        self._hop_cache = (hop, nhid)
        return nhid

    def _drop_unused_nexthops(self) -> None:
        # Reference counts, not a route dump: the handover path must not
        # pay for reading 100k routes back.
        stale = [(seg, nhid) for seg, nhid in self._nhid.items()
                 if self._nh_refs.get(nhid, 0) <= 0]
        if stale:
            self.nl.batch([seg6_nexthop(False, nhid, seg, 0) for seg, nhid in stale])
            self._hop_cache = (None, None)
            for seg, nhid in stale:
                del self._nhid[seg]
                self._nh_refs.pop(nhid, None)

    def _learn_nexthops(self) -> None:
        for nh in self.nl.nexthops():
            if nh.protocol == RTPROT_DMANCHOR and nh.segment is not None:
                self._nhid[nh.segment] = nh.nhid
                self._hop_cache = (None, None)
                self._nh_refs[nh.nhid] = 0
        if self._nh_refs:
            for r in self.nl.routes():
                if r.nhid in self._nh_refs:
                    self._nh_refs[r.nhid] += 1

    def _learn_flow_tables(self, have: Iterable[ForwardingEntry]) -> None:
        by_flow = {r.table: r for r in self.nl.rules()
                   if r.protocol == RTPROT_DMANCHOR and r.table >= FLOW_TABLE_BASE}
        for e in have:
            if e.flow is None:
                continue
            for table, r in by_flow.items():
                src = Prefix.make(*r.src) if r.src else Prefix(0, 0)
                if (src, r.proto, r.sport, r.dport) == (e.flow.src, e.flow.proto,
                                                        e.flow.sport, e.flow.dport):
                    self._flow_tables[_flow_key(e)] = table

    def _drop_orphan_rules(self) -> None:
        tables = {r.table for r in self.nl.routes() if r.protocol == RTPROT_DMANCHOR}
        orphans = [r for r in self.nl.rules()
                   if r.protocol == RTPROT_DMANCHOR and r.table >= FLOW_TABLE_BASE
                   and r.table not in tables]
        self.nl.batch([rule(False, r.priority, r.table, src=r.src, dst=r.dst, proto=r.proto,
                            sport=r.sport, dport=r.dport) for r in orphans])

    def _flow_table(self, e: ForwardingEntry, allocate: bool) -> int:
        key = _flow_key(e)
        table = self._flow_tables.get(key)
        if table is None:
            if not allocate:
                raise DataPlaneError("no such flow entry", e)
            used = set(self._flow_tables.values())
            table = FLOW_TABLE_BASE
            while table in used:
                table += 1
            self._flow_tables[key] = table
        return table

    def _sid_oif(self) -> int:
        if self._sid_dev is not None:
            return self._ifindex(self._sid_dev)
        return self._oif_towards(IPv6Address("2001:db8::"))  # via the default route

    def _oif_towards(self, addr: IPv6Address) -> int:
        """Device the kernel uses to reach ``addr`` (the encap's way out).

        The seg6 encapsulation takes its outer source address from this
        device, so it must be the real uplink, not ``lo`` (whose ::1 the
        next router would drop).
        """
        r = self.nl.route_get(addr)
        if r is not None and r.oif is not None and self._names.get(r.oif) != "lo":
            return r.oif
        # No route yet (it may come in the same batch): the lowest-numbered
        # real device - never the hold device, which goes with this process
        # and would take the route with it.
        for index, name in sorted(self._names.items()):
            if name not in ("lo", TUN_DEVICE):
                return index
        raise DataPlaneError(f"{self.netns or 'host'}: no device to send tunnels on")

    def _ifindex(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            self._refresh_links()
            index = self._index.get(name)
            if index is None:
                raise DataPlaneError(f"{self.netns or 'host'}: no interface {name!r}")
        return index

    def _refresh_links(self) -> None:
        try:
            links = list(self.nl._links())
        except NetlinkError as exc:
            raise DataPlaneError(str(exc)) from exc
        self._names = {i: n for n, i in links}
        self._index = {n: i for n, i in links}
