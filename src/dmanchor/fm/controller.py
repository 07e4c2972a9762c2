"""The mobility controller: FM:4 anchor registry and a central FM-CP (sans-IO).

* FM:4-1/4-2: anchors register their DPA, CPA and anchored prefixes; the
  reply echoes them.  Registrations expire unless refreshed; a prefix
  overlapping another anchor's registration is refused.
* FM:4-3/4-4: discovery answers the DPA and CPA anchoring a prefix.
* FM:5-2: status reports from FM-DPs are tracked; an FM-DP that misses
  reports for ``dead_after``, or reports its forwarding inactive, is
  declared down (:class:`DataPlaneDown`).  Fallback: a move no longer waits
  for a router that is down or did not apply its FM:5-1 - the handover
  completes over the others, the old anchor tunnelling what still reaches
  it - and the router is brought up to date (resync) once it reports again.
* Central FM-CP for anchor switching (draft 4.2.1): subscribed (LM:1-3)
  to the location bindings of the prefixes it manages, it reacts to a
  binding that moved a prefix away from its home anchor by sending FM:5-1
  to every core router (a more specific route towards the new anchor) and
  FM:6-1 to the anchor the prefix is leaving (the MN left it: hold); once
  all have answered, FM:6-2 to the home anchor on behalf of the
  new one, which releases its buffer; after a chain of moves it also tells
  the visited anchor the prefix is leaving (FM:1: the role passes on).
  When the binding is removed (FM:3-3)
  it deletes those routes and hands the prefix back with FM:1.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from ..lm.pool import PoolRequests, PoolSubscription, Push
from ..prefixtable import PrefixTable
from ..transport.policy import CONTROLLER_SENDERS, not_own_id
from ..transport.reliable import (
    Addr,
    Endpoint,
    Event,
    MessageReceived,
    NegativeReply,
    ReplyReceived,
    RequestTimedOut,
)
from ..transport.service import ServiceCore
from ..wire import messages as m
from ..wire.types import Cause, DpState, EntryKind, ForwardingEntry, Load, Prefix
from .central_cp import AccessControl, AccessFmCp
from .controller_lease import (
    Change,
    ControllerLeases,
    LeaseMoves,
    MoveLease,
    SwitchTunnelled,
)

STATUS_EXPIRY = 600.0
"""Seconds after which a silent FM-DP is forgotten (it was down long since)."""


@dataclass(frozen=True, slots=True)
class RouterControl:
    """A core router the central FM-CP programs."""

    name: str
    """Its node id (matches its FM:5-2 reports)."""
    address: Addr
    """Its FM-DP endpoint."""
    next_hops: Mapping[IPv6Address, IPv6Address]
    """For each anchor DPA: the next hop this router uses to reach it."""


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """The mobility controller."""

    node_id: str = "controller"
    """Node id."""
    lms: Addr | None = None
    """LMs (or LMp) to subscribe to for binding changes."""
    lms_pool: tuple[Addr, ...] = ()
    """The other members of ``lms``'s LM:2 pool (Fig 1a): a request ``lms``
    does not answer goes on to the next member, which is asked from then on
    (and subscribed at again: subscriptions live at the member that took
    them)."""
    lms_check: float | None = None
    """With a pool: renew the subscription this often, seconds, so that a
    silent member is found within it rather than at the renewal at half
    ``subscription_lifetime`` (a subscriber only listens otherwise)."""
    watch: tuple[Prefix, ...] = ()
    """Prefixes whose anchoring it manages (subscribed with LM:1-3)."""
    routers: tuple[RouterControl, ...] = ()
    """Core routers it programs with FM:5-1."""
    anchor_port: int = 5400
    """Signalling port of anchor agents at their CPA."""
    dpn_parent: Mapping[IPv6Address, IPv6Address] = field(default_factory=dict)
    """Hierarchical networks (draft 4.2.2/4.2.3): forwarding switch (DPN) DPA
    -> DPA of the access router above it.  A binding naming a DPN counts as
    anchored at its AR: a move between FWs of one AR leaves the core alone,
    a move under another AR switches the prefix's anchoring to that AR."""
    max_registration: int = 3600
    """Longest registration lifetime granted, seconds."""
    max_registered: int = 100_000
    """Prefixes registered at most, all anchors together (expired ones are
    swept first); a registration beyond is refused RESOURCE_EXHAUSTED."""
    max_dataplanes: int = 10_000
    """FM-DPs whose FM:5-2 status is tracked at most."""
    dead_after: float = 1.5
    """An FM-DP silent this long (no FM:5-2) is declared down."""
    subscription_lifetime: int = 600
    """Lifetime asked for the LM:1-3 subscription (renewed at half)."""
    access: tuple[AccessControl, ...] = ()
    """Access routers whose FM-CP this controller is (Fig 1c/1d with the CPA
    apart from the DPA; :mod:`.central_cp`): they run an FM-DP only."""
    cpa: IPv6Address | None = None
    """This controller's address, named as the CPA of the ``access`` routers
    in discovery answers (their switches send FM:6-2 and FM:1 there, to the
    anchors' signalling port); required with ``access``."""
    leases: LeaseMoves = LeaseMoves.NONE
    """Draft 4.2.1 with DHCPv6-PD (FM:3-2): who moves a prefix's lease, so
    that its anchoring moves only with it.  Before re-routing the core the
    controller has the lease moved (:mod:`.controller_lease`) and waits;
    if it cannot move, the core is left alone and the prefix's home anchor
    tunnels it to the new router instead (4.1.2), said so by
    :class:`SwitchTunnelled`."""
    reconcile_grace: float = 30.0
    """After a restart: how long a prefix it had moved, whose binding the LMs
    does not know (yet - an LMs restarted too relearns bindings at the
    anchors' next refresh), stays routed where it was before it is reverted."""


@dataclass(frozen=True, slots=True)
class Registration:
    """An anchor's FM:4-1 registration."""

    node_id: str
    dpa: IPv6Address
    cpa: IPv6Address
    expires: float


@dataclass(slots=True)
class DpReport:
    """The last FM:5-2 report of one data plane."""

    seen: float
    """When it arrived."""
    load: Load
    """Forwarding active or not, and load."""
    state: DpState | None
    """What it carries (None from a sender that does not say)."""


@dataclass(frozen=True, slots=True)
class DataPlaneDown:
    """An FM-DP stopped reporting, or reports its forwarding inactive (FM:5-2)."""

    node_id: str


@dataclass(frozen=True, slots=True)
class DataPlaneUp:
    """An FM-DP reports (again)."""

    node_id: str


@dataclass(frozen=True, slots=True)
class AnchorSwitching:
    """The FM-CP starts re-routing ``prefix`` to ``dpa`` (None: back home).

    What follows the anchoring outside the routers can move now, in parallel
    with FM:5-1: e.g. the prefix's DHCPv6-PD lease (Kea ``lease6-update``).
    """

    prefix: Prefix
    dpa: IPv6Address | None


@dataclass(frozen=True, slots=True)
class AnchorMoved:
    """Every core router forwards ``prefix`` to ``dpa`` and the home released."""

    prefix: Prefix
    dpa: IPv6Address


@dataclass(frozen=True, slots=True)
class AnchorReverted:
    """``prefix`` is routed to its home anchor again (FM:3-3)."""

    prefix: Prefix


@dataclass(frozen=True, slots=True)
class AnchorRegistered:
    """A new anchor registered, or one changed its addresses (FM:4-1): the
    host keeps the registry (:attr:`ControllerCore.registered`), so a
    restart can answer FM:4-3 before every anchor has refreshed."""


ControllerEvent = (DataPlaneDown | DataPlaneUp | AnchorSwitching | AnchorMoved | AnchorReverted
                   | AnchorRegistered | MoveLease | SwitchTunnelled)


@dataclass(frozen=True, slots=True)
class _Sent:
    """An FM:5-1 in flight to a router: what it installs for one prefix."""

    router: str
    prefix: Prefix
    next_hop: IPv6Address | None  # None: the /64 route removed
    before: IPv6Address | None  # what it had (an update is atomic)
    change: Change | None  # None: a resync


class ControllerCore(ControllerLeases, ServiceCore):
    """Registry, discovery, FM:5-2 tracking and central anchor switching."""

    SENDERS = CONTROLLER_SENDERS

    def __init__(self, settings: ControllerSettings, endpoint: Endpoint | None = None,
                 now: float = 0.0, restored: Mapping[Prefix, IPv6Address] | None = None,
                 registered: Mapping[Prefix, Registration] | None = None,
                 tunnelled: Mapping[Prefix, IPv6Address] | None = None) -> None:
        """``restored``: the prefixes it had moved when it last ran (prefix ->
        DPA, as :class:`AnchorSwitching` events said; the host persists them):
        the core routers still route them so, and each is confirmed with the
        LMs (LM:1-1) - or reverted once the binding is surely gone.
        ``registered``: the registry it had (:attr:`registered`), kept by
        the host (:class:`AnchorRegistered`).  ``tunnelled``: the prefixes
        it had left tunnelled from home (:attr:`tunnelled`), confirmed
        likewise - or their tunnel taken down (FM:1)."""
        super().__init__(endpoint or Endpoint())
        self.s = settings
        self.registry: PrefixTable[Registration] = PrefixTable()
        self.counters: Counter[str] = Counter()
        self.events: list[ControllerEvent] = []
        self.status: dict[str, DpReport] = {}
        """The last FM:5-2 report of each data plane heard."""
        self.down: set[str] = set()
        self.moved: dict[Prefix, IPv6Address] = {}
        self.tunnelled: dict[Prefix, IPv6Address] = {}
        """Prefixes whose switch found no lease: the router their home
        anchor tunnels them to (the core routes them home)."""
        self._leasing: dict[Prefix, Change] = {}  # waiting for lease_moved
        self._lease_asks: dict[int, Change] = {}  # LEASE_RELEASE/TAKE in flight
        # Per router: the /64 routes it was told to have (prefix -> next
        # hop), and the prefixes whose last change it missed (down, failed).
        self._routed: dict[str, dict[Prefix, IPv6Address]] = {
            r.name: {} for r in settings.routers}
        self._stale: dict[str, set[Prefix]] = {r.name: set() for r in settings.routers}
        self._routers = {r.name: r for r in settings.routers}
        self._sent: dict[int, _Sent] = {}
        self._holds: set[int] = set()  # FM:6-1 in flight (answers only counted)
        self.access = AccessFmCp(settings.access)
        if settings.access:
            if settings.cpa is None:
                raise ValueError("access routers need the controller's cpa address")
            # Registered here on their behalf, for good: the controller is
            # their control plane.
            for r in settings.access:
                reg = Registration(r.name, r.dpa, settings.cpa, float("inf"))
                for p in r.prefixes:
                    self.registry.set(p, reg)
        self._reconciling: set[Prefix] = set()
        self._queries: dict[int, Prefix] = {}  # LM:1-1 of a restored prefix
        self.lm = PoolRequests(self.endpoint, (settings.lms, *settings.lms_pool)) \
            if settings.lms is not None else None
        """The LM client (LM:1-1, LM:1-3), failing over across the pool."""
        self.subscription = PoolSubscription(self.lm, settings.watch,
                                             settings.subscription_lifetime) \
            if self.lm is not None and settings.watch else None
        """LM:1-3 at every pool member, believing the member in use."""
        if settings.lms is not None and settings.watch:
            self.set_timer("subscribe", now)
        self.set_timer("liveness", now + settings.dead_after)
        for p, reg in (registered or {}).items():
            # Kept by the last run: believed until the anchor refreshes it,
            # at most one registration lifetime.
            self.registry.set(p, Registration(reg.node_id, reg.dpa, reg.cpa,
                                              now + self.s.max_registration))
        if restored or tunnelled:
            self._restore(restored or {}, tunnelled or {}, now)

    def drain_events(self) -> list[ControllerEvent]:
        """Take the upward events."""
        out, self.events = self.events, []
        return out

    @property
    def registered(self) -> dict[Prefix, Registration]:
        """The live registrations (for the host to keep across a restart)."""
        return dict(self.registry.items())

    def discover(self, prefix: Prefix, now: float) -> Registration | None:
        """The live registration anchoring ``prefix`` (longest match)."""
        for _, reg in self.registry.covering(prefix):
            if reg.expires > now:
                return reg
        return None

    # -- Events ---------------------------------------------------------------------------

    def on_event(self, event: Event, now: float) -> None:
        if isinstance(event, MessageReceived):
            msg = event.message
            if isinstance(msg, m.AnchorRegistration):
                self._on_register(event, msg, now)
            elif isinstance(msg, m.AnchorDiscovery):
                reg = self.discover(msg.prefix, now)
                if reg is None:
                    self.endpoint.reject(event, Cause.UNKNOWN_PREFIX, "no anchor", now,
                                         msg.prefix)
                else:
                    self.endpoint.reply(event, m.DiscoveryAnswer(
                        msg.prefix, reg.dpa, reg.cpa, reg.node_id), now)
            elif isinstance(msg, m.DataPlaneStatus):
                if not_own_id(event, msg.node_id):
                    self.refuse(event, "refused:DATAPLANE_STATUS:not-own-id", now)
                    return
                self._on_status(msg, now)
            elif isinstance(msg, m.LocationInform):
                if self.lm is None or not self.lm.is_member(event.source):
                    # Only the LMs we subscribed at (or a member of its pool)
                    # pushes to us (when signed, its role was checked too): a
                    # forged inform would re-route the core and move a Kea lease.
                    self.refuse(event, "refused:LOCATION_INFORM:not-our-lms", now)
                    return
                self.endpoint.reply(event, m.LocationInformAck(msg.prefix), now)
                push = Push(msg.prefix, msg.forwarding_address, msg.lifetime)
                if self.subscription is not None:
                    push_now = self.subscription.pushed(event.source, push)
                    if push_now is None:
                        self.counters["inform-kept"] += 1  # from a member not in use
                        return
                self._on_binding(push.prefix, push.forwarding_address, push.lifetime, now)
            elif self.access.handle(self.endpoint, event, now):
                pass
            elif event.expects_reply:
                self.endpoint.reject(event, Cause.UNSUPPORTED, "controller", now)
            return
        if self.access.answered(self.endpoint, event, now):
            return
        sub = self.subscription
        if sub is not None and sub.owns(event.request_id):
            # (Only the renewal at the member in use fails over.)
            again = self._lm_again(event, now) if event.request_id in sub.requests else None
            sub.answered(event, again)
            return
        if self.lm is not None and event.request_id in self.lm \
                and self._lm_again(event, now) is not None:
            return
        asked = self._queries.pop(event.request_id, None)
        if asked is not None:
            reply = event.reply if isinstance(event, ReplyReceived) else None
            if isinstance(reply, m.LocationReply):
                self._reconciling.discard(asked)
                self._on_binding(asked, reply.forwarding_address, reply.lifetime, now)
            return  # unknown (yet): an inform, or the deadline, decides
        if self._lease_answered(event, now):
            return
        ok = isinstance(event, ReplyReceived)
        sent = self._sent.pop(event.request_id, None)
        if sent is None:
            if event.request_id in self._holds:
                self._holds.discard(event.request_id)
                if not ok:
                    self.counters["fm6-1-failed"] += 1  # the hold is a nicety: go on
            elif not ok:
                self.counters[f"failed:{event.request.TYPE.name}"] += 1
            return
        self._route_answered(sent, event, now)
        change = sent.change
        if change is not None:
            change.waiting.discard(event.request_id)
            if not change.waiting:
                self._routers_done(change, now)

    def _lm_again(self, event: ReplyReceived | NegativeReply | RequestTimedOut,
                  now: float) -> int | None:
        """An LM request's answer or timeout; the id it was sent again under,
        to the next pool member (what waited on it now waits on that), if
        it was."""
        assert self.lm is not None
        out = self.lm.outcome(event, now)
        if out.again is not None:
            self.counters["lms-failover"] += 1
            if event.request_id in self._queries:
                self._queries[out.again] = self._queries.pop(event.request_id)
            return out.again
        if out.switched:
            self.counters["lms-switched"] += 1
            if self.subscription is not None:
                # What the new member pushed while the old one was in use
                # (and silent) is what was missed.
                for push in self.subscription.switched():
                    self.counters["inform-recovered"] += 1
                    self._on_binding(push.prefix, push.forwarding_address, push.lifetime, now)
        return None

    def on_timer(self, name: Hashable, now: float) -> None:
        if name == "subscribe" and self.subscription is not None:
            self.subscription.renew(now)
            every = self.s.subscription_lifetime / 2
            if self.s.lms_pool and self.s.lms_check is not None:
                every = min(every, self.s.lms_check)
            self.set_timer("subscribe", now + every)
        elif name == "liveness":
            forget = max(STATUS_EXPIRY, 10 * self.s.dead_after)
            for node, report in list(self.status.items()):
                seen = report.seen
                if now - seen > forget:
                    # Long down: forgotten (it is reported again if it comes
                    # back), so the table holds only data planes still heard.
                    del self.status[node]
                    self.down.discard(node)
                    self.counters["dataplane-forgotten"] += 1
                elif node not in self.down and now - seen > self.s.dead_after:
                    self.down.add(node)
                    self.counters["dataplane-down"] += 1
                    self.events.append(DataPlaneDown(node))
            self.set_timer("liveness", now + self.s.dead_after / 3)
        elif name == "reconcile" and self.lm is not None:
            for prefix in sorted(self._reconciling):
                self._queries[self.lm.request(m.LocationQuery(prefix), now)] = prefix
            self.set_timer("reconciled", now + self.s.reconcile_grace)
        elif name == "reconciled":
            # No binding for these all along: they ended while we were down.
            for prefix in sorted(self._reconciling):
                if prefix in self.moved:
                    self.counters["reconcile-reverted"] += 1
                    self._program(prefix, None, now)
                elif self.tunnelled.pop(prefix, None) is not None:
                    self.counters["reconcile-reverted"] += 1
                    self._routers_done(Change(prefix, None), now)  # FM:1: the tunnel goes
            self._reconciling.clear()

    def _restore(self, moved: Mapping[Prefix, IPv6Address],
                 tunnelled: Mapping[Prefix, IPv6Address], now: float) -> None:
        """Take back what the last run had moved (the routers kept it) or
        left tunnelled (the home anchors kept that)."""
        self.tunnelled.update(tunnelled)
        for prefix, dpa in moved.items():
            self.moved[prefix] = dpa
            for r in self.s.routers:
                nh = r.next_hops.get(dpa)
                if nh is not None:
                    self._routed[r.name][prefix] = nh
        self._reconciling = set(moved) | set(tunnelled)
        self.counters["restored"] += len(self._reconciling)
        self.set_timer("reconcile", now)

    # -- FM:4 ---------------------------------------------------------------------------

    def _on_register(self, ev: MessageReceived, msg: m.AnchorRegistration, now: float) -> None:
        if not_own_id(ev, msg.node_id):
            # FM:4 registers the sender itself: a node registering another's
            # id would move that anchor's data-plane address.
            self.refuse(ev, "refused:ANCHOR_REGISTRATION:not-own-id", now)
            return
        for p in msg.prefixes:
            # Overlap = a registered prefix covering p, or one p covers.
            for other, reg in itertools.chain(self.registry.covering(p),
                                              self.registry.covered(p)):
                if reg.node_id != msg.node_id and reg.expires > now:
                    self.counters["registration-refused"] += 1
                    self.endpoint.reject(ev, Cause.OVERLAPPING_CLAIM,
                                         f"{p} overlaps {other} of {reg.node_id}", now, p)
                    return
        new = sum(1 for p in set(msg.prefixes) if p not in self.registry)
        if len(self.registry) + new > self.s.max_registered:
            for p in [p for p, r in self.registry.items() if r.expires <= now]:
                self.registry.pop(p)
            if len(self.registry) + new > self.s.max_registered:
                self.counters["registration-refused-full"] += 1
                self.endpoint.reject(ev, Cause.RESOURCE_EXHAUSTED, "registry full", now)
                return
        life = min(msg.lifetime, self.s.max_registration)
        reg = Registration(msg.node_id, msg.dpa_address, msg.cpa_address, now + life)
        changed = False
        for p in msg.prefixes:
            had = self.registry.get(p)
            changed = changed or had is None or (had.node_id, had.dpa, had.cpa) != (
                reg.node_id, reg.dpa, reg.cpa)
            self.registry.set(p, reg)
        if changed:
            self.events.append(AnchorRegistered())
        self.counters["registered"] += 1
        self.endpoint.reply(ev, m.RegistrationReply(
            msg.node_id, msg.dpa_address, msg.cpa_address, life, msg.prefixes), now)

    # -- FM:5-2 -------------------------------------------------------------------------

    def _on_status(self, msg: m.DataPlaneStatus, now: float) -> None:
        node = msg.node_id
        if node not in self.status and len(self.status) >= self.s.max_dataplanes:
            self.counters["status-refused-full"] += 1
            return
        self.status[node] = DpReport(now, msg.load, msg.state)
        if not msg.load.active:
            # It says it cannot forward as asked (it refused an update): as
            # good as down for the moves to come, which must not wait for
            # it - but alive, so what it missed is sent again (below).
            if node not in self.down:
                self.down.add(node)
                self.counters["dataplane-inactive"] += 1
                self.events.append(DataPlaneDown(node))
        elif node in self.down:
            self.down.discard(node)
            self.events.append(DataPlaneUp(node))
        self._resync(node, now)

    def _resync(self, router: str, now: float) -> None:
        """Bring a router that missed changes up to date, one prefix at a time
        (it is told to delete only what it acknowledged having)."""
        r = self._routers.get(router)
        stale = self._stale.get(router)
        if r is None or not stale:
            return
        if any(s.router == router for s in self._sent.values()):
            return  # one round at a time: the next report tries again
        for prefix in list(stale):
            dpa = self.moved.get(prefix)
            nh = r.next_hops.get(dpa) if dpa is not None else None
            if not self._send_route(r, prefix, nh, None, now):
                stale.discard(prefix)  # nothing to change there
        self.counters["resync"] += 1

    # -- Anchor switching (4.2.1) -----------------------------------------------------

    def _on_binding(self, prefix: Prefix, dpa: IPv6Address, lifetime: int, now: float) -> None:
        home = self.discover(prefix, now)
        if home is None:
            self.counters["binding-without-home"] += 1
            return
        self._reconciling.discard(prefix)  # the LMs said where it is
        dpa = self.s.dpn_parent.get(dpa, dpa)
        if prefix in self._leasing and (lifetime == 0 or dpa == home.dpa):
            # Back (or gone) before its lease moved: no switch to finish.
            # (A lease the host moves all the same is the new router's to
            # give back when it lets the prefix go.)
            del self._leasing[prefix]
            self.counters["lease-move-overtaken"] += 1
        if prefix in self.tunnelled and (lifetime == 0 or dpa == home.dpa):
            # Tunnelled (no lease moved): back home, its anchor serves it
            # itself; gone, the anchor's tunnel goes with an FM:1 revert.
            del self.tunnelled[prefix]
            if lifetime == 0:
                self._routers_done(Change(prefix, None), now)
            return
        if lifetime > 0 and (dpa != home.dpa or prefix in self.moved):
            # A move - or the MN back home while the anchoring is elsewhere:
            # the core routes the /64 to its home explicitly, so that the
            # change marks the old path's end like any move.
            leasing = self._leasing.get(prefix)
            if self.moved.get(prefix, self.tunnelled.get(prefix)) != dpa and (
                    leasing is None or leasing.dpa != dpa):
                # (A refresh of the binding while its lease moves is no new move.)
                self._program(prefix, dpa, now)
        elif prefix in self.moved:
            self._program(prefix, None, now)

    def _program(self, prefix: Prefix, dpa: IPv6Address | None, now: float) -> None:
        previous = self.moved.get(prefix, self.tunnelled.get(prefix))
        self._leasing.pop(prefix, None)  # (a newer move: its answer is stale)
        change = Change(prefix, dpa, previous)
        if dpa is not None and self.s.leases is not LeaseMoves.NONE:
            self._move_lease(change, now)  # FM:3-2 first
            return
        self._switch(change, now)

    def _switch(self, change: Change, now: float, held: bool = False) -> None:
        """Re-route the core routers for ``change`` (FM:5-1), then FM:6-2."""
        prefix, dpa = change.prefix, change.dpa
        self.events.append(AnchorSwitching(prefix, dpa))
        if dpa is None:
            self.moved.pop(prefix, None)
        else:
            self.moved[prefix] = dpa
            if not held:
                self._ask_hold(change, now)
        self._reroute(change, dpa, now)
        if not change.waiting:
            self._routers_done(change, now)

    def _reroute(self, change: Change, dpa: IPv6Address | None, now: float) -> None:
        """FM:5-1 to every core router: route ``change``'s prefix to ``dpa``
        (None: home, by its network's route); ``change`` waits for them."""
        prefix = change.prefix
        for r in self.s.routers:
            nh = r.next_hops.get(dpa) if dpa is not None else None
            if dpa is not None and nh is None:
                self.counters["no-path-to-anchor"] += 1
                continue
            if r.name in self.down or any(
                    s.router == r.name and s.change is None for s in self._sent.values()):
                # Down, or being resynced: it gets this change with the rest
                # of what it missed, and the move does not wait for it.
                self._stale[r.name].add(prefix)
                self.counters["fm5-1-deferred"] += 1
                continue
            self._send_route(r, prefix, nh, change, now)

    def _send_route(self, r: RouterControl, prefix: Prefix, nh: IPv6Address | None,
                    change: Change | None, now: float) -> bool:
        """FM:5-1 to ``r``: route ``prefix`` to ``nh`` (None: remove its /64
        route), replacing what it was told before.  False if nothing to change."""
        routed = self._routed[r.name]
        had = routed.get(prefix)
        if had == nh:
            return False
        delete = (ForwardingEntry(EntryKind.ROUTE, prefix, had),) if had is not None else ()
        add = (ForwardingEntry(EntryKind.ROUTE, prefix, nh),) if nh is not None else ()
        rid = self.endpoint.request(m.ForwardingUpdate(add, delete), r.address, now)
        self._sent[rid] = _Sent(r.name, prefix, nh, had, change)
        if nh is None:
            routed.pop(prefix, None)
        else:
            routed[prefix] = nh
        if change is not None:
            change.waiting.add(rid)
        return True

    def _route_answered(self, sent: _Sent, event: Event, now: float) -> None:
        if isinstance(event, ReplyReceived):
            if sent.change is None:
                self._stale[sent.router].discard(sent.prefix)
            return
        self.counters["fm5-1-failed"] += 1
        self._stale[sent.router].add(sent.prefix)
        routed = self._routed[sent.router]
        if routed.get(sent.prefix) != sent.next_hop:
            return  # a later change was sent since; its answer decides
        # A refused update changed nothing: it has what it had - unless it
        # refused because it lacks even that (restarted without its state),
        # or the update may have been applied unanswered (timed out): then
        # the resync tries again, and after a refused delete only adds.
        had = sent.before
        if isinstance(event, NegativeReply) and event.status.code is Cause.INVALID_STATE:
            had = None
        if had is None:
            routed.pop(sent.prefix, None)
        else:
            routed[sent.prefix] = had

    def _ask_hold(self, change: Change, now: float) -> None:
        """FM:6-1 to the anchor the prefix is leaving: the MN left it."""
        home = self.discover(change.prefix, now)
        left = self._registered_at(change.previous, now) if change.previous else home
        if left is None or left.dpa == change.dpa:
            return
        rid = self.endpoint.request(m.BufferRequest(change.prefix),
                                    (str(left.cpa), self.s.anchor_port), now)
        # Not waited for: FM:6-2 (and FM:3-2's release) go to that anchor
        # later over the same path, so it holds before it releases; a lost
        # hold sent again after FM:6-2 finds the MN gone and does nothing.
        self._holds.add(rid)

    def _registered_at(self, dpa: IPv6Address | None, now: float) -> Registration | None:
        """The live registration of the anchor whose DPA is ``dpa``."""
        if dpa is None:
            return None
        for _, reg in self.registry.items():
            if reg.dpa == dpa and reg.expires > now:
                return reg
        return None

    def _routers_done(self, change: Change, now: float) -> None:
        home = self.discover(change.prefix, now)
        if home is None:
            return
        target = (str(home.cpa), self.s.anchor_port)
        if change.dpa is not None:
            # FM:6-2 on behalf of the new DPA: the path to it is ready.  The
            # leftovers go to its flush SID (DPA + 1), past its hold.  (Not
            # to the home anchor when that is where the prefix came back to.)
            if change.dpa != home.dpa:
                # (Without its lease moved, the home stays the anchor: said so.)
                self.endpoint.request(m.BufferReady(
                    change.prefix, change.dpa + 1, home.node_id if change.tunnel else None),
                    target, now)
            visited = self._registered_at(change.previous, now)
            if visited is not None and change.previous not in (change.dpa, home.dpa):
                # FM:1 along a chain of moves: the anchor the prefix is
                # leaving holds what arrived since the MN left it; the core
                # router's end marker follows those packets to the new one.
                self.endpoint.request(m.BufferReady(change.prefix, change.dpa + 1),
                                      (str(visited.cpa), self.s.anchor_port), now)
            if not change.tunnel:
                self.events.append(AnchorMoved(change.prefix, change.dpa))
        else:
            self.endpoint.request(m.FmHandoff(change.prefix, home.node_id, home.dpa),
                                  target, now)
            self.events.append(AnchorReverted(change.prefix))
