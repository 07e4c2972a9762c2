"""A modelled data-plane network moving packets hop by hop in virtual time.

The topology is data (:class:`TopologySpec`): routers with addresses and
static entries, hosts (CN, MN), links with delays.  Routers are
:class:`~dmanchor.dataplane.memory.MemoryDataPlane` instances, the very
objects FM-DP agents drive; the fabric only carries packets between them
and records where each packet ends up: delivered (when, to whom, by which
path) or dropped (where, why).  It shares the clock of a
:class:`~dmanchor.runtime.virtual.VirtualNetwork`, so control messages and
data packets interleave in one deterministic timeline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv6Address

from ..dataplane.memory import Decision, MemoryDataPlane, Packet
from ..runtime.virtual import VirtualNetwork
from ..wire.types import ForwardingEntry


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """A router of the modelled network."""

    name: str
    addresses: tuple[str, ...]
    """Its own addresses; the first is its SRv6 source / loopback."""
    entries: tuple[ForwardingEntry, ...] = ()
    """Static forwarding entries installed at start (routing)."""


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A host (CN or MN)."""

    name: str
    addresses: tuple[str, ...] = ()
    """Addresses it owns at start (an MN gains more as it moves)."""
    gateway: str = ""
    """Router it is wired to (CN); empty for an MN, which attaches."""


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A point-to-point link between two nodes."""

    a: str
    b: str
    delay: float = 0.0005
    """One-way delay, seconds."""


@dataclass(frozen=True, slots=True)
class TopologySpec:
    """The whole modelled network."""

    routers: tuple[RouterSpec, ...]
    hosts: tuple[HostSpec, ...]
    links: tuple[LinkSpec, ...]
    access_delay: float = 0.0002
    """Delay of an MN access link."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A packet that reached a host."""

    at: float
    host: str
    packet: Packet
    link: str
    """Access link it arrived on ('' for wired hosts)."""


@dataclass(frozen=True, slots=True)
class Drop:
    """A packet that was discarded."""

    at: float
    node: str
    packet: Packet
    reason: str


@dataclass(slots=True)
class _Host:
    name: str
    addresses: set[int]
    gateway: str
    attached: tuple[str, str] | None = None  # (router, access link)
    listening: set[tuple[str, str]] = field(default_factory=set)  # old radios still up (MBB)
    received: list[Delivery] = field(default_factory=list)
    sids: set[int] = field(default_factory=set)  # host-based tunnel endpoints


class Fabric:
    """Routers, hosts and links of a modelled network, on a virtual clock."""

    MAX_HOPS = 32

    def __init__(self, spec: TopologySpec, clock: VirtualNetwork) -> None:
        self.clock = clock
        self.spec = spec
        self.routers: dict[str, MemoryDataPlane] = {}
        self.hosts: dict[str, _Host] = {}
        self.owner: dict[int, str] = {}
        self.adjacent: dict[str, dict[str, float]] = {}
        self.drops: list[Drop] = []
        self._on_link: dict[tuple[str, str], _Host] = {}  # (router, access link) -> host
        self.drop_reasons: Counter[str] = Counter()
        self.observers: list[Callable[[str, Packet], None]] = []
        """Called with (router, packet) for each plain packet a router
        handles (arrived plain, or just decapsulated): what its connection
        tracking sees."""
        for r in spec.routers:
            addrs = [int(IPv6Address(a)) for a in r.addresses]
            dp = MemoryDataPlane(r.name, addrs)
            dp.on_release = partial(self._released, r.name)
            dp.on_marker = partial(self._marker, r.name)
            dp.link_up = partial(self._link_up, r.name)
            dp.apply(r.entries, (), clock.now)
            self.routers[r.name] = dp
            for a in addrs:
                self.owner[a] = r.name
            self.adjacent[r.name] = {}
        for h in spec.hosts:
            host_addrs = {int(IPv6Address(a)) for a in h.addresses}
            self.hosts[h.name] = _Host(h.name, host_addrs, h.gateway)
            for a in host_addrs:
                self.owner[a] = h.name
            self.adjacent[h.name] = {}
        for link in spec.links:
            for x, y in ((link.a, link.b), (link.b, link.a)):
                if x not in self.adjacent:
                    raise ValueError(f"link names unknown node {x!r}")
                self.adjacent[x][y] = link.delay

    # -- Hosts ------------------------------------------------------------------------

    def add_host(self, name: str) -> None:
        """A host beyond the topology's, with no address yet (another MN)."""
        if name in self.adjacent:
            raise ValueError(f"node {name!r} exists")
        self.hosts[name] = _Host(name, set(), "")
        self.adjacent[name] = {}

    def attach(self, host: str, router: str, link: str, keep: bool = False) -> None:
        """The MN comes up on ``router``'s access link ``link``; with
        ``keep`` (make-before-break) its previous link stays up, receiving
        only, until :meth:`drop_link`."""
        h = self.hosts[host]
        if keep and h.attached is not None:
            h.listening.add(h.attached)
        else:
            self.detach(host)
        h.attached = (router, link)
        self._on_link[(router, link)] = h

    def drop_link(self, host: str, router: str, link: str) -> None:
        """A link the MN kept (:meth:`attach` with ``keep``) goes down."""
        h = self.hosts[host]
        h.listening.discard((router, link))
        if h.attached != (router, link) and self._on_link.get((router, link)) is h:
            del self._on_link[(router, link)]

    def detach(self, host: str) -> None:
        """The MN's access links go down."""
        h = self.hosts[host]
        for at in (h.attached, *h.listening):
            if at is not None and self._on_link.get(at) is h:
                del self._on_link[at]
        h.attached = None
        h.listening.clear()

    def attachment(self, host: str) -> tuple[str, str] | None:
        """(router, link) the host is on, or None."""
        return self.hosts[host].attached

    def add_address(self, host: str, address: int) -> None:
        """The host configured an address (e.g. by SLAAC from a new prefix)."""
        self.hosts[host].addresses.add(address)

    def add_sid(self, host: str, sid: int) -> None:
        """The host decapsulates tunnels addressed to ``sid`` (host-based FM)."""
        self.hosts[host].sids.add(sid)

    def remove_sid(self, host: str, sid: int) -> None:
        """The host no longer ends tunnels addressed to ``sid``."""
        self.hosts[host].sids.discard(sid)

    def received(self, host: str) -> list[Delivery]:
        """Packets delivered to ``host`` so far."""
        return self.hosts[host].received

    def send(self, host: str, packet: Packet) -> None:
        """``host`` emits ``packet`` now."""
        h = self.hosts[host]
        packet = packet.via(host)
        if h.attached is not None:
            router, link = h.attached
            self.clock.call_later(self.spec.access_delay,
                                  lambda: self._at_router(router, packet, link))
        elif h.gateway:
            delay = self.adjacent[host].get(h.gateway, 0.0)
            self.clock.call_later(delay, lambda: self._at_router(h.gateway, packet, None))
        else:
            self._drop(host, packet, "host-detached")

    # -- Forwarding --------------------------------------------------------------------

    def _link_up(self, router: str, link: str) -> bool:
        return (router, link) in self._on_link

    def _released(self, name: str, p: Packet) -> None:
        # Released packets were already through this router's lookup once.
        self._at_router(name, p, None, via=False)

    def _marker(self, name: str, old: Decision, p: Packet) -> None:
        p = p.via(name)
        if old.kind == "encap":
            # The tunnel's far end may be several hops away: route the
            # encapsulated marker like any packet of that tunnel.
            p = replace(p, outer=(min(self.routers[name].addresses), old.next_hop))
            self._at_router(name, p, None, via=False)
            return
        self._transmit(name, old.next_hop, p)

    def _at_router(self, name: str, p: Packet, in_link: str | None, via: bool = True) -> None:
        dp = self.routers[name]
        if via:
            p = p.via(name)
        flushed = False
        seen = False
        for _ in range(4):  # encap/decap re-lookups at the same router
            if len(p.hops) > self.MAX_HOPS:
                self._drop(name, p, "hop-limit")
                return
            if self.observers and p.outer is None and not seen:
                seen = True
                for observe in self.observers:
                    observe(name, p)
            d = dp.decide(p, in_link, flushed)
            in_link = None
            if d.kind == "encap":
                p = replace(p, outer=(min(dp.addresses), d.next_hop))
                continue
            if d.kind == "decap":
                p = replace(p, outer=None)
                flushed = d.link == "flush"
                continue
            break
        else:
            self._drop(name, p, "encap-loop")
            return
        if d.kind == "forward":
            self._transmit(name, d.next_hop, p)
        elif d.kind == "deliver":
            self._deliver_access(name, d.link, p)
        elif d.kind == "local":
            self._drop(name, p, "local-delivery")  # routers sink nothing in this model
        elif d.kind == "drop":
            self._drop(name, p, d.reason)
        # "buffer": the data plane holds it; release re-enters via on_release.
        # "consumed": an end marker did its work.

    def _transmit(self, node: str, next_hop: int, p: Packet) -> None:
        target = self.owner.get(next_hop)
        if target is None or target not in self.adjacent[node]:
            self._drop(node, p, "next-hop-not-adjacent")
            return
        delay = self.adjacent[node][target]
        if target in self.routers:
            self.clock.call_later(delay, lambda: self._at_router(target, p, None))
        else:
            self.clock.call_later(delay, lambda: self._arrive(target, p, ""))

    def _deliver_access(self, router: str, link: str, p: Packet) -> None:
        h = self._on_link.get((router, link))
        if h is None:
            self._drop(router, p, "no-host-on-link")
            return
        self.clock.call_later(self.spec.access_delay,
                              partial(self._arrive_access, h, router, link, p))

    def _arrive_access(self, h: _Host, router: str, link: str, p: Packet) -> None:
        if h.attached != (router, link) and (router, link) not in h.listening:
            self._drop(router, p, "host-left-link")  # in flight while the MN moved
            return
        self._arrive(h.name, p, link)

    def _arrive(self, host: str, p: Packet, link: str) -> None:
        h = self.hosts[host]
        if p.outer is not None:
            # Host-based mobility (Fig 2a/2b): the MN ends the tunnel itself.
            if p.outer[1] not in h.sids:
                self._drop(host, p, "no-decap-at-host")
                return
            p = replace(p, outer=None)
        if p.dst not in h.addresses:
            self._drop(host, p, "not-my-address")
            return
        h.received.append(Delivery(self.clock.now, host, p.via(host), link))

    def _drop(self, node: str, p: Packet, reason: str) -> None:
        self.drops.append(Drop(self.clock.now, node, p, reason))
        self.drop_reasons[reason] += 1
