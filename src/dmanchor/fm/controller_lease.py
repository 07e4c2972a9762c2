"""Delegation first (FM:3-2): the controller moves a prefix's DHCPv6-PD lease
before it moves the prefix's anchoring (draft 4.2.1).

Who moves the lease is :class:`LeaseMoves`: the controller itself through
Kea (``lease6-update``, its host carries out :class:`MoveLease`), or the
access routers' own PD clients, told in turn (LEASE_RELEASE to the router
holding the lease, then LEASE_TAKE to the new one).  Either way the core
is re-routed (FM:5-1) only once the new router holds the lease; if it cannot
have it, the home anchor keeps the prefix - and takes its lease back - and
tunnels it to the new router (4.1.2), said so by :class:`SwitchTunnelled`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..transport.reliable import NegativeReply, ReplyReceived, RequestTimedOut
from ..wire import messages as m
from ..wire.types import Prefix

if TYPE_CHECKING:
    from collections import Counter

    from ..transport.reliable import Endpoint
    from .controller import ControllerEvent, ControllerSettings, Registration


class LeaseMoves(Enum):
    """Who moves a prefix's DHCPv6-PD lease when its anchoring moves."""

    NONE = "none"
    """No PD, or leases follow on their own (the routing moves first)."""
    KEA = "kea"
    """The controller, through Kea's ``lease6-update`` (``[controller.kea]``)."""
    ROUTERS = "routers"
    """The access routers' own PD clients, on LEASE_RELEASE and LEASE_TAKE."""


LEASE = -1
"""In :attr:`Change.waiting`: the lease's move (request ids are never negative)."""


@dataclass(slots=True)
class Change:
    """One change of where the core routes a prefix, until it is done."""

    prefix: Prefix
    dpa: IPv6Address | None  # None: revert
    previous: IPv6Address | None = None  # visited anchor it moves away from
    waiting: set[int] = field(default_factory=set)
    tunnel: bool = False  # no lease: the home anchor tunnels it, the core stays


@dataclass(frozen=True, slots=True)
class MoveLease:
    """:attr:`LeaseMoves.KEA`: give ``prefix``'s DHCPv6-PD lease to the router
    whose DPA is ``dpa``, then answer :meth:`ControllerLeases.lease_moved`."""

    prefix: Prefix
    dpa: IPv6Address


@dataclass(frozen=True, slots=True)
class SwitchTunnelled:
    """``prefix``'s lease could not move to ``dpa`` (``reason``): its home
    anchor tunnels it there instead of the core being re-routed (4.1.2)."""

    prefix: Prefix
    dpa: IPv6Address
    reason: str


class ControllerLeases:
    """The lease half of a move (mixin of the controller core)."""

    if TYPE_CHECKING:
        s: ControllerSettings
        endpoint: Endpoint
        counters: Counter[str]
        events: list[ControllerEvent]
        moved: dict[Prefix, IPv6Address]
        tunnelled: dict[Prefix, IPv6Address]
        _leasing: dict[Prefix, Change]
        _lease_asks: dict[int, Change]

        def discover(self, prefix: Prefix, now: float) -> Registration | None: ...
        def _registered_at(self, dpa: IPv6Address | None,
                           now: float) -> Registration | None: ...
        def _ask_hold(self, change: Change, now: float) -> None: ...
        def _switch(self, change: Change, now: float, held: bool = False) -> None: ...
        def _routers_done(self, change: Change, now: float) -> None: ...
        def _reroute(self, change: Change, dpa: IPv6Address | None, now: float) -> None: ...

    def _move_lease(self, change: Change, now: float) -> None:
        """Hold at the anchor the prefix leaves (FM:6-1), then move the lease;
        the core follows in :meth:`lease_moved`."""
        prefix = change.prefix
        assert change.dpa is not None
        change.waiting.add(LEASE)
        self._ask_hold(change, now)
        self._leasing[prefix] = change
        if self.s.leases is LeaseMoves.KEA:
            self.events.append(MoveLease(prefix, change.dpa))
            return
        # The lease is where the prefix is anchored: switched, or at home
        # (also while tunnelled from there).
        holder = self._registered_at(self.moved.get(prefix), now) \
            or self.discover(prefix, now)
        if holder is None or holder.dpa == change.dpa:
            self._ask_lease(change, m.LeaseTake(prefix), change.dpa, now)
        else:
            self._ask_lease(change, m.LeaseRelease(prefix), holder.dpa, now)

    def _ask_lease(self, change: Change, msg: m.LeaseRelease | m.LeaseTake,
                   dpa: IPv6Address, now: float) -> None:
        reg = self._registered_at(dpa, now)
        if reg is None:
            self.lease_moved(change.prefix, change.dpa or dpa, False,
                             f"no live registration for {dpa}", now)
            return
        rid = self.endpoint.request(msg, (str(reg.cpa), self.s.anchor_port), now)
        self._lease_asks[rid] = change

    def _lease_answered(self, event: ReplyReceived | NegativeReply | RequestTimedOut,
                        now: float) -> bool:
        """A router's answer to LEASE_RELEASE or LEASE_TAKE (False: not one)."""
        change = self._lease_asks.pop(event.request_id, None)
        if change is None:
            return False
        prefix, dpa = change.prefix, change.dpa
        assert dpa is not None
        if self._leasing.get(prefix) is not change:
            self.counters["lease-answer-stale"] += 1  # overtaken by a newer move
            return True
        name = "released" if isinstance(event.request, m.LeaseRelease) else "taken"
        if isinstance(event, NegativeReply):
            self.lease_moved(prefix, dpa, False,
                             f"not {name}: {event.status.message}", now)
        elif isinstance(event, RequestTimedOut):
            self.lease_moved(prefix, dpa, False, f"not {name}: no answer", now)
        elif isinstance(event.request, m.LeaseRelease):
            self._ask_lease(change, m.LeaseTake(prefix), dpa, now)
        else:
            self.lease_moved(prefix, dpa, True, "", now)
        return True

    def lease_moved(self, prefix: Prefix, dpa: IPv6Address, ok: bool, reason: str,
                    now: float) -> None:
        """The lease's move to ``dpa`` ended: ``ok``, or not (``reason``: why).
        The host's answer to :class:`MoveLease` (:attr:`LeaseMoves.KEA`)."""
        change = self._leasing.get(prefix)
        if change is None or change.dpa != dpa:
            self.counters["lease-answer-stale"] += 1
            return
        del self._leasing[prefix]
        change.waiting.discard(LEASE)
        if not ok and prefix in self.moved:
            # Switched already, and the lease cannot follow: the anchoring
            # goes back home, which asks for the lease again and tunnels the
            # prefix to the new router.  The router it leaves hands on what
            # it held (FM:6-2) and, if it still holds the lease (moved by
            # Kea), gives it up then - the home's PD client, asking again
            # every ``retry``, has it next.
            self.counters["switch-home-tunnelled"] += 1
            del self.moved[prefix]
            self._reroute(change, None, now)
        elif ok:
            self.tunnelled.pop(prefix, None)
            self._switch(change, now, held=True)
            return
        # The home anchor keeps the prefix (and its lease, asked back if it
        # gave it up) and tunnels it to the new router (FM:6-2 as for a
        # switch, once its hold is in place: it releases what it held that
        # way); a router it was tunnelled to before hands its leftovers on.
        self.counters["switch-tunnelled"] += 1
        self.tunnelled[prefix] = dpa
        self.events.append(SwitchTunnelled(prefix, dpa, reason))
        change.tunnel = True
        if not change.waiting:
            self._routers_done(change, now)
