"""Delegation first with router-driven DHCPv6-PD (FM:3-2): the anchor's side.

Where each access router is its own DHCPv6-PD client (``[anchor.pd]``, no
``[controller.kea]``), a prefix's lease can only move by the router holding
it releasing it and the next one asking for it.  The controller orders the
two, so that the anchoring moves only with the lease (draft 4.2.1):

1. LEASE_RELEASE to the router the prefix leaves: it gives the lease back
   and answers once the server confirmed the Release.
2. LEASE_TAKE to the router the prefix comes to: it asks for the prefix as a
   hint and answers once delegated - or refuses (no PD client here, or no
   lease within :data:`LEASE_WAIT`), and stops asking, so that the router
   the prefix stays anchored at can have it back without a race.

The answers wait for the PD client's outcomes, which the host feeds in with
:meth:`AnchorLeases.lease_event`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..access.delegation import Delegated, DelegationEvent, Lost, Refused, Returned
from ..transport.policy import from_controller
from ..transport.reliable import MessageReceived
from ..wire import messages as m
from ..wire.types import Cause, Prefix
from .anchor_model import Delegate

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Sequence

    from ..transport.reliable import Endpoint
    from .anchor_model import AnchorSettings, AnchorStats, Effect

LEASE_WAIT = 0.5
"""Seconds a router told to take a lease waits for it before it refuses.
Once the lease was released the server delegates it at the first ask (a
few ms; asked again every ``[anchor.pd] retry``): a lease not had by then
is refused, and meanwhile the MN's packets are held at the old anchor, so
the fallback (a tunnel from there) should come well within the hold's
timeout.  Shorter than the controller's retransmissions of LEASE_TAKE
(1.55 s), so the refusal is what the controller hears, not a timeout
after which this router might still get the lease."""


@dataclass(frozen=True, slots=True)
class LeaseWait:
    """Timer: a LEASE_TAKE for ``prefix`` has waited :data:`LEASE_WAIT`."""

    prefix: Prefix


@dataclass(slots=True)
class LeaseBook:
    """The leases this router holds, and the lease moves it owes an answer."""

    leased: set[Prefix] = field(default_factory=set)
    """Prefixes the DHCPv6 server has delegated here (bound, not asked)."""
    taking: dict[Prefix, MessageReceived] = field(default_factory=dict)
    """LEASE_TAKE requests waiting for their delegation."""
    giving: dict[Prefix, MessageReceived] = field(default_factory=dict)
    """LEASE_RELEASE requests waiting for the server's confirmation."""


class AnchorLeases:
    """FM:3-2 lease moves on the controller's order (mixin of the agent)."""

    if TYPE_CHECKING:
        s: AnchorSettings
        endpoint: Endpoint
        stats: AnchorStats
        delegated: set[Prefix]
        leases: LeaseBook
        _effects: deque[Effect]

        def _delegate(self, prefixes: Sequence[Prefix], on: bool) -> None: ...
        def set_timer(self, name: object, at: float) -> None: ...
        def cancel_timer(self, name: object) -> None: ...
        def refuse(self, ev: MessageReceived, why: str, now: float) -> None: ...

    def _on_lease_release(self, ev: MessageReceived, msg: m.LeaseRelease,
                          now: float) -> None:
        if not from_controller(ev, self.s.controller):
            self.refuse(ev, "refused:LEASE_RELEASE:not-the-controller", now)
            return
        p = msg.prefix
        self.stats.counters["lease-release"] += 1
        self._delegate((p,), False)
        if p in self.leases.leased and self.s.pd:
            self.leases.giving[p] = ev  # answered at the server's confirmation
        else:
            # No lease here (no PD client, or none bound): nothing to wait for.
            self.endpoint.reply(ev, m.LeaseReleaseAck(p), now)

    def _on_lease_take(self, ev: MessageReceived, msg: m.LeaseTake, now: float) -> None:
        if not from_controller(ev, self.s.controller):
            self.refuse(ev, "refused:LEASE_TAKE:not-the-controller", now)
            return
        p = msg.prefix
        self.stats.counters["lease-take"] += 1
        if not self.s.pd:
            self.endpoint.reject(ev, Cause.INVALID_STATE, "no DHCPv6-PD client here", now, p)
            return
        if p in self.leases.leased:
            self.endpoint.reply(ev, m.LeaseTakeAck(p), now)
            return
        if p in self.delegated:
            # Asked already (since the MN arrived), waiting for the release:
            # ask again now rather than at the next retry.
            self._effects.append(Delegate(p, True))
        else:
            self._delegate((p,), True)
        before = self.leases.taking.get(p)
        if before is not None:
            # A newer move of the prefix asks again: the older one is over.
            self.endpoint.reject(before, Cause.INVALID_STATE, "asked again", now, p)
        self.leases.taking[p] = ev
        self.set_timer(LeaseWait(p), now + LEASE_WAIT)

    def _on_lease_wait(self, t: LeaseWait, now: float) -> None:
        ev = self.leases.taking.pop(t.prefix, None)
        if ev is None:
            return
        self.stats.counters["lease-take-refused"] += 1
        # Stop asking: the prefix stays anchored where it was, which takes
        # its lease back.
        self._delegate((t.prefix,), False)
        self.endpoint.reject(ev, Cause.INVALID_STATE,
                             f"not delegated within {LEASE_WAIT:g} s", now, t.prefix)

    def lease_event(self, ev: DelegationEvent, now: float) -> None:
        """What this router's DHCPv6-PD client reported (the host's input):
        answers the lease moves waiting for it."""
        p = ev.prefix
        book = self.leases
        if isinstance(ev, Delegated):
            book.leased.add(p)
            asked = book.taking.pop(p, None)
            if asked is not None:
                self.cancel_timer(LeaseWait(p))
                self.endpoint.reply(asked, m.LeaseTakeAck(p), now)
        elif isinstance(ev, Refused):
            asked = book.taking.pop(p, None)
            self.delegated.discard(p)  # the client stopped asking
            if asked is not None:
                self.cancel_timer(LeaseWait(p))
                self.stats.counters["lease-take-refused"] += 1
                self.endpoint.reject(asked, Cause.INVALID_STATE, ev.reason, now, p)
        elif isinstance(ev, Returned | Lost):
            book.leased.discard(p)
            gave = book.giving.pop(p, None)
            if gave is not None:
                self.endpoint.reply(gave, m.LeaseReleaseAck(p), now)

