"""The access links of a router, wired to its anchor agent (the I/O half).

What the anchor agent decides about the hosts on its access links it
decides in its core (:meth:`~dmanchor.fm.anchor.AnchorAgentCore.heard`,
:meth:`~dmanchor.fm.anchor.AnchorAgentCore.detach`); this module does the
I/O around it: hearing hosts (:mod:`.sniff`), watching carriers, sending
Router Advertisements on the core's :class:`~dmanchor.fm.anchor_model.Advertise`
effects and on the unsolicited schedule (:mod:`.ra`), giving each MN its
/64 (:mod:`.alloc`), and keeping each link's source filter (SM).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..dataplane.api import DataPlane, DataPlaneError
from ..dataplane.neigh import VALID, NeighbourMonitor, neighbours
from ..dataplane.netlink import LinkMonitor, Netlink, NetlinkError
from ..fm.anchor import AnchorAgentCore
from ..fm.anchor_model import Heard
from ..runtime import clock
from ..wire.types import Prefix
from .alloc import PoolExhausted, PrefixAllocator
from .nd import ROUTER_ALERT_HOPOPTS, encode_mld_query, encode_ra
from .ra import RaSchedule, link_advertisement, shortest_valid
from .reach import Reachability
from .sniff import LinkListener

log = logging.getLogger("dmanchor.node")

LEAVING_QUIET = 1.0
"""Seconds after an L2 trigger during which frames on the link are not
arrivals, unless its carrier goes first (then: until it is back)."""


UNRES_QLEN_BYTES = 16 << 20
"""Bytes an access link's neighbour may queue while it is resolved: room
for a released hold (see ``AccessLinks._configure``)."""


def carrier(link: str) -> bool:
    """Whether ``link`` has carrier now (False if it cannot be read)."""
    try:
        return Path(f"/sys/class/net/{link}/carrier").read_text().strip() == "1"
    except OSError:  # (reading carrier of a down link fails with EINVAL)
        return False

LeaseLeft = Callable[[float], Mapping[Prefix, float]]
"""What each DHCPv6-PD lease has left, seconds, at a given time."""


class AccessLinks:
    """One router's access links around its anchor agent."""

    def __init__(self, links: Sequence[str], agent: AnchorAgentCore, pump: Callable[[], None],
                 alloc: PrefixAllocator | None = None, ra_interval: float = 600.0,
                 lease_left: LeaseLeft | None = None,
                 sources: DataPlane | None = None) -> None:
        """``pump``: runs the agent's driver after an input; ``alloc``: the
        /64s given to MNs; ``sources``: where to set source filters (SM),
        if the router validates them."""
        self.links = tuple(links)
        self.agent = agent
        self.pump = pump
        self.alloc = alloc
        self.lease_left = lease_left
        self.sources = sources
        self._ra = RaSchedule(self.links, clock.now(), ra_interval) if self.links else None
        self._ra_timer: asyncio.TimerHandle | None = None
        self._listeners: list[LinkListener] = []
        self._monitor: LinkMonitor | None = None
        # Source filters in force; None until the first sync, which sets
        # every access link's (clearing what a previous run left).
        self._filters: dict[str, tuple[Prefix, ...]] | None = None
        # Links whose MNs just left: what is heard there now is no arrival
        # (see _stale).  Link -> when the L2 trigger said it was going down;
        # links whose carrier went down.
        self._leaving: dict[str, float] = {}
        self._down: set[str] = set()
        self.stale = 0
        """Frames heard on a link its MNs had just left, not taken for arrivals."""
        self._neigh: NeighbourMonitor | None = None
        self._reach: Reachability | None = None
        self.unreachable = 0
        """MNs detached because the kernel's NUD found them gone (shared links)."""

    def start(self) -> None:
        """Listen on every access link, watch their carriers, advertise."""
        loop = asyncio.get_running_loop()
        for link in self.links:
            self._configure(link)
            listener = LinkListener(link)
            self._listeners.append(listener)
            loop.add_reader(listener.fileno(), self._on_heard, listener)
        if self.links:
            # An MN's radio leaving: the access link loses its carrier.
            self._monitor = LinkMonitor()
            loop.add_reader(self._monitor.fileno(), self._on_carrier)
            # A shared link loses no carrier: the kernel's NUD tells instead.
            self._reach = Reachability({socket.if_nametoindex(n): n for n in self.links})
            self._neigh = NeighbourMonitor()
            loop.add_reader(self._neigh.fileno(), self._on_neighbours)
            self._already_here()
            self._on_ra_timer()

    def _already_here(self) -> None:
        """MNs on the links before this node started (it restarted): they
        will not solicit again - a stock host sent its RS, DAD and MLD
        reports when it arrived.  So each link is asked, as a querier that
        starts does (an MLDv2 General Query, RFC 3810 7.6.2): every host
        there reports within 0.1 s, and a report is heard as an arrival.
        Meanwhile each valid neighbour entry of a link-local address (an
        MN's own, with its MAC, the MN-ID) is taken as heard from - when
        traffic made the kernel keep one, which an RS from the unspecified
        address does not."""
        nl = Netlink()
        try:
            for link in self.links:
                if not carrier(link):
                    continue  # (its MNs left: the kernel flushed them)
                self._query(link)
                found = neighbours(nl, socket.if_nametoindex(link))
                log.debug("%s at start: neighbours %s", link,
                          [(str(ev.address), ev.state.name) for ev in found])
                for ev in found:
                    if ev.lladdr and ev.state & VALID and ev.address.is_link_local:
                        self._heard(link, ev.lladdr.hex(":"), (), False, "NEIGHBOUR")
        except (OSError, NetlinkError) as exc:
            log.warning("MNs already on the access links not read: %s", exc)
        finally:
            nl.close()

    @staticmethod
    def _configure(link: str) -> None:
        """The kernel skips routes through a link without carrier (an MN's
        radio leaving diverts its prefixes to the standby hold at once, not
        after the agent reacted), and learns the addresses an arriving MN
        announces (unsolicited NA) - not at the first packet, whose
        resolution queue can let a later packet overtake queued ones."""
        knobs = [(f"conf/{link}/{k}", "1")
                 for k in ("ignore_routes_with_linkdown", "accept_untracked_na")]
        # A hold released towards an MN whose address is still being resolved
        # (its link just came back: the kernel flushed its neighbours) waits
        # in that neighbour's queue, 208 KiB by default: a few hundred
        # released packets overflow it (the likely cause of 37 lost at a
        # ping-pong return under load - charged, never delivered, the first
        # packet 86 ms after the lifts).
        knobs.append((f"neigh/{link}/unres_qlen_bytes", str(UNRES_QLEN_BYTES)))
        for knob, value in knobs:
            try:
                Path(f"/proc/sys/net/ipv6/{knob}").write_text(value)
            except OSError as exc:
                log.warning("%s: cannot set %s: %s", link, knob, exc)

    # -- Inputs ---------------------------------------------------------------------------

    def _on_heard(self, listener: LinkListener) -> None:
        try:
            heard = listener.read()
        except OSError as exc:
            log.warning("access link %s: %s", listener.link, exc)
            return
        if heard and self._stale(listener.link):
            self.stale += len(heard)
            return
        for seen in heard:
            self._heard(listener.link, seen.mn_id,
                        seen.rs.previous if seen.rs is not None else (),
                        seen.rs is not None, seen.kind.name)

    @staticmethod
    def _query(link: str) -> None:
        """Send an MLDv2 General Query on ``link`` (hop limit 1, Router Alert)."""
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.encode())
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, ROUTER_ALERT_HOPOPTS)
                s.sendto(encode_mld_query(), ("ff02::1", 0, 0, socket.if_nametoindex(link)))
        except OSError as exc:
            log.warning("MLD query on %s: %s", link, exc)

    def _heard(self, link: str, mn: str, named: Sequence[Prefix], solicited: bool,
               how: str) -> None:
        """Host ``mn`` spoke on ``link`` (``how``: what it sent)."""
        try:
            given = (self.alloc.get(mn),) if self.alloc is not None else ()
        except PoolExhausted as exc:
            log.error("MN %s on %s not attached: %s", mn, link, exc)
            return
        what = self.agent.heard(mn, link, given, named, solicited, clock.now())
        # What an arrival asks (LM:1-1) goes out before the log line: one
        # costs ~0.15 ms on a 2-vCPU host, and the move waits on the answer.
        self.pump()
        if what in (Heard.ARRIVED, Heard.NAMED_MORE):
            log.info("MN %s %s on %s (%s): given %s, named %s", mn, what.value, link, how,
                     [str(p) for p in given], [str(p) for p in named],
                     extra={"mn": mn, "prefix": [*given, *named], "label": "LM:1-1"})

    def _stale(self, link: str) -> bool:
        """Whether a frame heard on ``link`` now is an echo of an MN that left.

        After an L2 trigger the MN may still send a frame or two before its
        radio goes, and frames read late (a busy node) can predate the
        carrier loss: taken for arrivals, they would anchor the MN's
        prefixes again on a link it has left (and a hold lifted there loops
        between the link's dead route and the standby hold).  So a link is
        deaf from the trigger until its carrier goes (or LEAVING_QUIET has
        passed: a shared link never loses it), and from the carrier loss
        until the carrier is back - read from the kernel when a frame comes,
        as the carrier-up event may be read after the frames it precedes.
        """
        since = self._leaving.get(link)
        if since is not None:
            if clock.now() - since < LEAVING_QUIET:
                return True
            del self._leaving[link]
        if link in self._down:
            if not carrier(link):
                return True
            self._down.discard(link)
        return False

    def _on_carrier(self) -> None:
        """Access links that went down: their MNs left (FM:6-1 holds start)."""
        assert self._monitor is not None
        gone = set()
        for name, up in self._monitor.read():
            if name not in self.links:
                continue
            if up:
                self._down.discard(name)
            else:
                gone.add(name)
                self._down.add(name)
                self._leaving.pop(name, None)
        self.down(gone, "went down")

    def _on_neighbours(self) -> None:
        """MNs whose every address stopped answering: they left (FM:6-1)."""
        assert self._neigh is not None and self._reach is not None
        now = clock.now()
        for ev in self._neigh.read():
            for mn, link in self._reach.feed(ev):
                st = self.agent.attached.get(mn)
                if st is not None and st.link == link:
                    self.agent.detach(mn, now)
                    self.unreachable += 1
                    log.info("MN %s detached: unreachable on %s (NUD)", mn, link,
                             extra={"mn": mn, "label": "FM:6-1"})
        self.pump()

    def going_down(self, link: str, target: str | None = None) -> int:
        """An L2 trigger (RFC 5184 Link Going Down): the MNs on ``link`` are
        leaving; returns how many.  ``target``: the router (node id) its L2
        says they go to - told first, with what they use here (a HI:
        predictive handover)."""
        now = clock.now()
        if target is not None:
            for mn, st in list(self.agent.attached.items()):
                if st.link == link and self.agent.leaving(mn, target, now):
                    log.info("MN %s goes to %s: HI sent", mn, target,
                             extra={"mn": mn, "prefix": [*st.own, *st.visiting], "label": "HI"})
        self._leaving[link] = now
        return self.down({link}, "going down (L2 trigger)")

    def down(self, links: set[str], why: str) -> int:
        """The MNs on these access links left; returns how many."""
        if not links:
            return 0
        now = clock.now()
        left = 0
        for mn, st in list(self.agent.attached.items()):
            if st.link in links:
                self.agent.detach(mn, now)
                left += 1
                log.info("MN %s detached: %s %s", mn, st.link, why,
                         extra={"mn": mn, "prefix": [*st.own, *st.visiting], "label": "FM:6-1"})
        self.pump()
        return left

    # -- Outputs --------------------------------------------------------------------------

    def advertise_mns(self, link: str, solicited: bool = True) -> None:
        """Advertise what the MNs on ``link`` use: the prefixes given here
        preferred, those kept from elsewhere deprecated.  ``solicited``: an
        answer, which pushes the unsolicited schedule on."""
        own: tuple[Prefix, ...] = ()
        kept: tuple[Prefix, ...] = ()
        for mn, st in self.agent.attached.items():
            if st.link == link:
                # The /64 given here is the MN's to prefer, even where (a
                # forwarding switch, 4.2.2) the anchor sees it as visiting.
                given = self.alloc.peek(mn) if self.alloc is not None else None
                own = (*own, *st.own, *((given,) if given is not None else ()))
                kept = (*kept, *st.visiting)
        now = clock.now()
        ra = link_advertisement(own, kept, self.agent.s.lifetime,
                                self.lease_left(now) if self.lease_left is not None else None)
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.encode())
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                s.sendto(encode_ra(ra), ("ff02::1", 0, 0, socket.if_nametoindex(link)))
        except OSError as exc:
            log.warning("router advertisement on %s: %s", link, exc)
            return
        if self._ra is not None and link in self.links:
            if solicited:
                self._ra.sent(link, now)  # the next unsolicited one is an interval on
            self._ra.lifetimes(link, now, shortest_valid(ra))
            self._arm_ra()

    def sync_sources(self) -> None:
        """SM: each access link accepts only the prefixes of the MNs on it."""
        if self.sources is None:
            return
        want: dict[str, tuple[Prefix, ...]] = dict.fromkeys(self.links, ())
        for st in self.agent.attached.values():
            if st.link in want:
                want[st.link] = tuple(dict.fromkeys((*want[st.link], *st.own, *st.visiting)))
        first = self._filters is None
        filters = self._filters = self._filters or {}
        for link, prefixes in want.items():
            if first or filters.get(link, ()) != prefixes:
                try:
                    self.sources.set_source_filter(link, prefixes)
                    filters[link] = prefixes
                except DataPlaneError as exc:
                    log.error("source filter on %s: %s", link, exc)

    def _on_ra_timer(self) -> None:
        """Unsolicited RAs (RFC 4861 6.2.4): each due access link advertises
        the prefixes of the MNs on it, so their hosts keep their addresses."""
        assert self._ra is not None
        self._ra_timer = None
        for link in self._ra.due(clock.now()):
            self.advertise_mns(link, solicited=False)
        self._arm_ra()

    def _arm_ra(self) -> None:
        assert self._ra is not None
        deadline = self._ra.next_deadline()
        if deadline is None:
            return
        if self._ra_timer is not None:
            self._ra_timer.cancel()
        self._ra_timer = asyncio.get_running_loop().call_later(
            max(0.0, deadline - clock.now()), self._on_ra_timer)

    def close(self) -> None:
        """Stop listening and advertising."""
        if self._ra_timer is not None:
            self._ra_timer.cancel()
        monitors = [m for m in (self._monitor, self._neigh) if m is not None]
        for source in (*self._listeners, *monitors):
            with contextlib.suppress(RuntimeError):  # (no loop running any more)
                asyncio.get_running_loop().remove_reader(source.fileno())
            source.close()
