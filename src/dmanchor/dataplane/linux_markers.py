"""End markers of the Linux data plane: the last packet down a path a prefix left.

When a batch moves a prefix from one route or tunnel to another, a small
UDP datagram to the prefix (:mod:`.markers`) is sent down the path it left,
behind what is still in flight there: the new point's hold lifts when it
arrives.  Its route rides in the batch that moved the prefix, in a table of
its own chosen by the marker's fwmark, and goes with the next batch.  The
methods belong to :class:`~.linux.LinuxDataPlane` (a mixin: they use its state).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Mapping, Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..wire.types import EntryKind, ForwardingEntry, Prefix
from .api import DataPlaneError
from .markers import MARKER_PORT, MarkerAuth
from .netlink import (
    RT_TABLE_MAIN,
    RTPROT_DMANCHOR,
    KernelRoute,
    Netlink,
    Request,
    open_in_netns,
    route,
)

OLDPATH_TABLE = 0x4CFD
"""Carries an end marker down the path a prefix just left (fwmark rule)."""
MARKER_MARK = 0x4D4D
"""fwmark of end markers sent by this data plane."""
MARKER_LIMIT = 64
"""Most re-routed prefixes in one batch that get end markers (see _marker_paths)."""


class EndMarkers:
    """End markers of :class:`~.linux.LinuxDataPlane` (mixed into it)."""

    netns: str | None
    nl: Netlink
    markers: MarkerAuth
    upstream: set[IPv6Address]
    _nhid: dict[IPv6Address, int]
    _oldpaths: set[Prefix]
    _marker_sock: socket.socket | None
    _counters: Counter[str]
    _holds: Mapping[Prefix, object]
    _lifting: Mapping[Prefix, object]
    _marks_after_lift: dict[Prefix, tuple[ForwardingEntry, float]]

    if TYPE_CHECKING:
        def _nhid_of(self, hop: IPv6Address) -> int | None: ...
        def _ifindex(self, name: str) -> int: ...

    def _marker_paths(self, add: Sequence[ForwardingEntry],
                      delete: Sequence[ForwardingEntry] = ()) -> list[tuple[Prefix, KernelRoute]]:
        """The prefixes whose path ``add`` changes, with the path they leave.

        A path the same batch deletes (a tunnel re-pointed: TUNNEL to one
        SID out, to another in) is known without asking the kernel - which
        could not say anyway: ``route get`` does not resolve routes through
        seg6 nexthop objects, so such re-points sent no end marker and the
        new point's hold always ran to its timeout.
        """
        out: list[tuple[Prefix, KernelRoute]] = []
        moved = [e for e in add
                 if e.flow is None and e.kind in (EntryKind.ROUTE, EntryKind.TUNNEL)]
        if len(moved) > MARKER_LIMIT:
            # A bulk (re)installation - an agent converging at start, a
            # mass install - not a move: a lookup per prefix would cost as
            # much as installing it, and a marker per prefix more.
            self._counters["bulk-without-markers"] += 1
            return out
        leaving = {d.prefix: d for d in delete
                   if d.flow is None and d.kind in (EntryKind.ROUTE, EntryKind.TUNNEL)
                   and d.next_hop is not None}
        # A prefix taken back onto an access link (an anchor whose MN came
        # home) leaves the tunnel it was handed down: that path ends too.
        homecoming = [e for e in add if e.flow is None and e.kind is EntryKind.ANCHOR
                      and e.prefix in leaving]
        ask = []
        for e in (*moved, *homecoming):
            gone = leaving.get(e.prefix)
            if gone is None:
                ask.append(e)
            elif gone != e and gone.next_hop is not None and gone.next_hop not in self.upstream:
                nhid = self._nhid_of(gone.next_hop) if gone.kind is EntryKind.TUNNEL else None
                if gone.kind is EntryKind.ROUTE or nhid is not None:
                    out.append((e.prefix, KernelRoute(
                        gone.prefix.address, gone.prefix.length, RT_TABLE_MAIN, RTPROT_DMANCHOR,
                        1, gone.next_hop if nhid is None else None, None, nhid, None, False)))
        moved = ask
        # One pipelined lookup for all, not a round trip each.
        for e, old in zip(moved, self.nl.routes_get([e.prefix.address for e in moved]),
                          strict=True):
            if old is None or not (old.gateway or old.nhid) or old.gateway in self.upstream:
                # Nothing forwarded it (a hold, a local or no route), or only
                # the way up to the core, where prefixes this router plays no
                # part in go: a marker sent there would come round to the
                # prefix's live path and lift a hold too early.
                continue
            new = ((e.next_hop, None) if e.kind is EntryKind.ROUTE
                   else (None, self._nhid.get(e.next_hop) if e.next_hop else None))
            if (old.gateway, old.nhid) != new:
                out.append((e.prefix, old))
        return out

    def _oldpath_route(self, prefix: Prefix, old: KernelRoute) -> Request:
        """The route end markers of ``prefix`` take: the path it just left."""
        return route(True, prefix.network.to_bytes(16, "big"), prefix.length,
                     table=OLDPATH_TABLE,
                     gateway=old.gateway.packed if old.gateway is not None else None,
                     oif=old.oif if old.nhid is None else None, nhid=old.nhid, replace=True)

    def _send_marker(self, prefix: Prefix, now: float) -> None:
        """Send an end marker down the path ``prefix`` just left.

        Its route (in OLDPATH_TABLE, chosen by the marker's fwmark) was put
        in by the batch that moved the prefix, and goes with the next batch.
        """
        self._oldpaths.add(prefix)
        try:
            if self._marker_sock is None:
                sock = open_in_netns(self.netns, socket.AF_INET6, socket.SOCK_DGRAM, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARKER_MARK)
                self._marker_sock = sock
            self._marker_sock.sendto(self.markers.payload(prefix, now),
                                     (str(prefix.address), MARKER_PORT))
            self._counters["end-marker-sent"] += 1
        except OSError as exc:
            self._counters["end-marker-failed"] += 1
            raise DataPlaneError(f"end marker for {prefix}: {exc}") from exc

    def _carrier(self, link: str) -> bool:
        """Whether access ``link`` is up with its carrier now (its flags, not
        its operational state, which the kernel's link watch updates up to
        a second late under load); a link gone or unreadable counts as
        down: no marker is the safe answer."""
        try:
            return self.nl.link_carrier(self._ifindex(link))
        except (DataPlaneError, OSError):  # (NetlinkError is an OSError)
            return False

    def mark_end(self, tunnel: ForwardingEntry, now: float, served_on: str | None = None) -> bool:
        if tunnel.kind is not EntryKind.TUNNEL or tunnel.flow is not None \
                or tunnel.next_hop is None:
            return False
        if served_on is not None and not self._carrier(served_on):
            # Its radio went: the standby hold may have caught what the
            # marker must not overtake.
            self._counters["end-marker-link-down"] += 1
            return False
        if tunnel.prefix in self._lifting:
            # Its held packets are still draining down that tunnel: the
            # marker follows them, when the lift is done.
            self._marks_after_lift[tunnel.prefix] = (tunnel, now)
            return True
        if tunnel.prefix in self._holds:
            return False  # (held: a marker would overtake what is held)
        nhid = self._nhid_of(tunnel.next_hop)
        if nhid is None:
            return False
        p = tunnel.prefix
        path = KernelRoute(p.address, p.length, RT_TABLE_MAIN, RTPROT_DMANCHOR, 1, None, None,
                           nhid, None, False)
        if self.nl.batch([self._oldpath_route(p, path)]):
            self._counters["end-marker-failed"] += 1
            return False
        self._send_marker(p, now)
        return True
