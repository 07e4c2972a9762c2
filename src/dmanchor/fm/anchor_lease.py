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

Under BGP (draft 4.2 without a controller) the router the MN moved to
orders the two itself: LEASE_RELEASE to the router the prefix was served at
(an anchor honours it only for a prefix whose MN is not on its links), then
its own PD client's ask; it announces the prefix only once delegated.  A
lease it cannot have leaves the anchoring where it was: FM:6-2 naming its
own DPA (not its flush SID) asks that router - only the one it released
the lease for - to ask for the lease back and tunnel the prefix here
(4.1.2).  A router the prefix is only tunnelled to answers a later move's
LEASE_RELEASE with the anchor to ask instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..access.delegation import Delegated, DelegationEvent, Lost, Refused, Returned
from ..transport.policy import from_controller, same_address
from ..transport.reliable import (
    Addr,
    MessageReceived,
    NegativeReply,
    ReplyReceived,
    RequestTimedOut,
)
from ..wire import messages as m
from ..wire.auth import Role
from ..wire.types import Cause, EntryKind, ForwardingEntry, Prefix
from .anchor_model import Delegate, LeaseStayed, Mode, PrefixEvent

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Sequence

    from ..transport.reliable import Endpoint
    from .anchor_model import AnchorSettings, AnchorStats, Effect, Visiting
    from .flows import FlowBook

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


MAX_HOPS = 2
"""BGP mode: how many routers a claim asks in turn for a lease (the point
the prefix was served at, then the anchor it names): a prefix is tunnelled
from its anchor to one point at a time, so a longer chain is a loop."""


@dataclass(slots=True)
class LeaseMove:
    """BGP mode: a claim waiting for its prefix's lease (the new router's side)."""

    previous: IPv6Address
    """Where the prefix was served last: its leftovers come from there."""
    anchor: IPv6Address
    """The DPA of the router asked to release the lease (the anchor)."""
    anchor_id: str | None = None
    """That router's node id, once it said (FM:1 names it at the end)."""
    released: bool = False
    """The anchor confirmed the release: the lease is the server's to give."""
    hops: int = 0


@dataclass(frozen=True, slots=True)
class Stayed:
    """BGP mode: a prefix tunnelled here from the anchor its lease stayed at."""

    anchor: IPv6Address
    anchor_id: str | None


@dataclass(slots=True)
class LeaseBook:
    """The leases this router holds, and the lease moves it owes an answer."""

    leased: set[Prefix] = field(default_factory=set)
    """Prefixes the DHCPv6 server has delegated here (bound, not asked)."""
    taking: dict[Prefix, MessageReceived] = field(default_factory=dict)
    """LEASE_TAKE requests waiting for their delegation."""
    giving: dict[Prefix, MessageReceived] = field(default_factory=dict)
    """LEASE_RELEASE requests waiting for the server's confirmation."""
    moving: dict[Prefix, LeaseMove] = field(default_factory=dict)
    """BGP mode: claims here waiting for their lease (one per visiting prefix)."""
    asks: dict[int, Prefix] = field(default_factory=dict)
    """BGP mode: LEASE_RELEASE request id -> the claim it serves."""
    released_for: dict[Prefix, Addr | str] = field(default_factory=dict)
    """BGP mode: leases given up here at another router's request -> that
    router (its key's node id, or its address on an insecure node): only it
    may have the anchoring stay here (one per prefix anchored here)."""
    stayed: dict[Prefix, Stayed] = field(default_factory=dict)
    """BGP mode: visiting prefixes tunnelled here from their anchor."""


class AnchorLeases:
    """FM:3-2 lease moves (mixin of the agent): on the controller's order,
    or under BGP between the routers themselves."""

    if TYPE_CHECKING:
        s: AnchorSettings
        endpoint: Endpoint
        stats: AnchorStats
        delegated: set[Prefix]
        leases: LeaseBook
        visiting: dict[Prefix, Visiting]
        flows: FlowBook
        _effects: deque[Effect]

        def _delegate(self, prefixes: Sequence[Prefix], on: bool) -> None: ...
        def set_timer(self, name: object, at: float) -> None: ...
        def cancel_timer(self, name: object) -> None: ...
        def refuse(self, ev: MessageReceived, why: str, now: float) -> None: ...
        def _owner(self, prefix: Prefix) -> str | None: ...
        def _agent_of(self, sid: IPv6Address) -> Addr: ...
        def _anchor_bgp(self, prefix: Prefix, previous: IPv6Address | None,
                        anchor: IPv6Address | None, now: float) -> None: ...
        def _replace(self, prefix: Prefix, new: list[ForwardingEntry], now: float) -> None: ...
        def _refuse_claim(self, prefix: Prefix, now: float) -> None: ...
        def _step(self, prefix: Prefix, event: PrefixEvent) -> None: ...
        def _lm_update(self, prefix: Prefix, address: IPv6Address, now: float,
                       lifetime: int | None = None, mn: str | None = None) -> None: ...

    def _on_lease_release(self, ev: MessageReceived, msg: m.LeaseRelease,
                          now: float) -> None:
        p = msg.prefix
        if not from_controller(ev, self.s.controller):
            why = self._peer_release_refusal(ev, p)
            if why is not None:
                self.refuse(ev, why, now)
                return
            stayed = self.leases.stayed.get(p)
            if stayed is not None:
                # Only tunnelled here: the lease is at the anchor it stayed at.
                self.endpoint.reply(ev, m.LeaseReleaseAck(p, stayed.anchor_id, stayed.anchor), now)
                return
            if p in self.delegated or p in self.leases.leased:
                # (Kept only for a lease held here: a table as large as the
                # prefixes anchored here, whatever a peer asks about.)
                self.leases.released_for[p] = ev.sender or ev.source
        self.stats.counters["lease-release"] += 1
        self._delegate((p,), False)
        if p in self.leases.leased and self.s.pd:
            self.leases.giving[p] = ev  # answered at the server's confirmation
        else:
            # No lease here (no PD client, or none bound): nothing to wait for.
            self.endpoint.reply(ev, m.LeaseReleaseAck(p, self.s.node_id), now)

    def _peer_release_refusal(self, ev: MessageReceived, p: Prefix) -> str | None:
        """Why another router's LEASE_RELEASE is refused (None: it is not).

        Only under BGP, where no controller orders lease moves, and only from
        an anchor (its key's role; on an insecure node, anyone), for a
        prefix whose MN is not on this router's links: the MN is where the
        claim comes from, so a router cannot take an attached MN's prefix.
        """
        if self.s.mode is not Mode.BGP:
            return "refused:LEASE_RELEASE:not-the-controller"
        if ev.sender is not None and Role.ANCHOR not in ev.roles:
            return "refused:LEASE_RELEASE:role"
        if self._owner(p) is not None:
            return "refused:LEASE_RELEASE:attached-here"
        return None

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
        self._ask_now(p)
        before = self.leases.taking.get(p)
        if before is not None:
            # A newer move of the prefix asks again: the older one is over.
            self.endpoint.reject(before, Cause.INVALID_STATE, "asked again", now, p)
        self.leases.taking[p] = ev
        self.set_timer(LeaseWait(p), now + LEASE_WAIT)

    def _ask_now(self, p: Prefix) -> None:
        if p in self.delegated:
            # Asked already (since the MN arrived), waiting for the release:
            # ask again now rather than at the next retry.
            self._effects.append(Delegate(p, True))
        else:
            self._delegate((p,), True)

    def _on_lease_wait(self, t: LeaseWait, now: float) -> None:
        move = self.leases.moving.get(t.prefix)
        if move is not None:
            self._stay(t.prefix, move, f"not delegated within {LEASE_WAIT:g} s", now)
            return
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
            move = book.moving.pop(p, None)
            if move is not None:
                self.cancel_timer(LeaseWait(p))
                self._anchor_bgp(p, move.previous, move.anchor, now)
        elif isinstance(ev, Refused):
            asked = book.taking.pop(p, None)
            self.delegated.discard(p)  # the client stopped asking
            if asked is not None:
                self.cancel_timer(LeaseWait(p))
                self.stats.counters["lease-take-refused"] += 1
                self.endpoint.reject(asked, Cause.INVALID_STATE, ev.reason, now, p)
            move = book.moving.get(p)
            if move is not None:
                self._stay(p, move, ev.reason, now)
        elif isinstance(ev, Returned | Lost):
            book.leased.discard(p)
            gave = book.giving.pop(p, None)
            if gave is not None:
                self.endpoint.reply(gave, m.LeaseReleaseAck(p, self.s.node_id), now)

    # -- BGP mode: the new router moves the lease itself ---------------------------------

    def _move_lease(self, prefix: Prefix, previous: IPv6Address, now: float) -> None:
        """Delegation first under BGP: have the lease released where the
        prefix was served (its anchor), then take it, then anchor."""
        move = LeaseMove(previous, previous)
        self.leases.moving[prefix] = move
        self._ask_release(prefix, move, now)

    def _ask_release(self, prefix: Prefix, move: LeaseMove, now: float) -> None:
        rid = self.endpoint.request(m.LeaseRelease(prefix), self._agent_of(move.anchor), now)
        self.leases.asks[rid] = prefix

    def _on_release_answer(self, event: ReplyReceived | NegativeReply | RequestTimedOut,
                           now: float) -> None:
        prefix = self.leases.asks.pop(event.request_id)
        move = self.leases.moving.get(prefix)
        if move is None:
            return  # had the lease meanwhile, or the claim ended
        if isinstance(event, NegativeReply):
            # Refused (its MN is there, or this router may not ask): not
            # this claim's to move.
            del self.leases.moving[prefix]
            self.stats.counters["lease-release-refused"] += 1
            self._refuse_claim(prefix, now)
            return
        if isinstance(event, RequestTimedOut):
            # The anchor is silent: its lease is not free until it ends.  The
            # PD client goes on asking; a lease had anchors here, a refusal
            # (its patience) ends the claim - never anchored twice.
            self.stats.counters["lease-release-unanswered"] += 1
            return
        ack = event.reply
        if not isinstance(ack, m.LeaseReleaseAck):
            return
        if ack.anchor_dpa is not None and ack.anchor_dpa != move.anchor:
            if move.hops < MAX_HOPS:
                # Only tunnelled there: ask the anchor the lease stayed at.
                move.anchor, move.anchor_id, move.hops = ack.anchor_dpa, ack.anchor, move.hops + 1
                self._ask_release(prefix, move, now)
                return
            self.stats.counters["lease-release-loop"] += 1
        move.anchor_id = ack.anchor
        move.released = True
        self._ask_now(prefix)
        self.set_timer(LeaseWait(prefix), now + LEASE_WAIT)

    def _abandon_lease_move(self, prefix: Prefix, now: float) -> None:
        """The MN left before its prefix's lease came: stop asking for it
        (the router it goes to next, or its anchor, has it next).  Nothing
        was drawn here (no announcement, no FM:6-2, no binding): nothing to
        hold either."""
        if self.leases.moving.pop(prefix, None) is not None:
            self.cancel_timer(LeaseWait(prefix))
            self._delegate((prefix,), False)
            self._replace(prefix, [], now)
            self._step(prefix, PrefixEvent.DROPPED)
            self.flows.drop(prefix)
            self.stats.counters["lease-move-abandoned"] += 1

    def _stay(self, prefix: Prefix, move: LeaseMove, reason: str, now: float) -> None:
        """The lease cannot be had here: the anchoring stays where it was,
        which takes its lease back and tunnels the prefix here (4.1.2)."""
        del self.leases.moving[prefix]
        self.cancel_timer(LeaseWait(prefix))
        self._delegate((prefix,), False)  # stop asking: the anchor asks again
        v = self.visiting.get(prefix)
        if not move.released or v is None:
            # Nothing was let go for this claim (its anchor silent): no
            # anchor to stay at.  The claim ends; the prefix is not
            # anchored twice.
            self.stats.counters["lease-unavailable"] += 1
            self._refuse_claim(prefix, now)
            return
        self.stats.counters["lease-stayed"] += 1
        self.leases.stayed[prefix] = Stayed(move.anchor, move.anchor_id)
        self._effects.append(LeaseStayed(prefix, move.anchor, reason))
        # Everything comes one way now, down the anchor's tunnel: no hold.
        self._replace(prefix, [ForwardingEntry(EntryKind.ANCHOR, prefix, link=v.link)], now)
        self.endpoint.request(m.BufferReady(prefix, self.s.dpa), self._agent_of(move.anchor), now)
        if move.previous != move.anchor:
            # The point it was tunnelled to before hands its leftovers on.
            self.endpoint.request(m.BufferReady(prefix, self.s.flush_sid),
                                  self._agent_of(move.previous), now)
        self._lm_update(prefix, self.s.dpa, now, mn=v.mn)

    def _asked_to_stay(self, ev: MessageReceived, msg: m.BufferReady) -> bool:
        """BGP mode, at the anchor: FM:6-2 naming the sender's DPA from the
        router this one released the prefix's lease for (see the module)."""
        who = self.leases.released_for.get(msg.prefix)
        if self.s.mode is not Mode.BGP or who is None or int(msg.dpa_address) & 1:
            return False
        if ev.sender is not None:
            ok = who == ev.sender
        else:
            ok = not isinstance(who, str) and same_address(who, ev.source)
        if ok:
            del self.leases.released_for[msg.prefix]
        return ok

    def _end_stay(self, prefix: Prefix, now: float) -> None:
        """FM:1 to the anchor a prefix tunnelled here stayed at: its visit
        here ended, so the anchor's tunnel (and lease) can go (FM:3-3)."""
        stayed = self.leases.stayed.pop(prefix, None)
        if stayed is not None and stayed.anchor_id is not None:
            self.endpoint.request(m.FmHandoff(prefix, stayed.anchor_id, stayed.anchor),
                                  self._agent_of(stayed.anchor), now)
