"""An anchor agent's handovers: FM:6-2 at the point a prefix leaves, the
way home, and FM:1 back (draft 3.2, 4.1.2, 4.2.1, 4.2.3).

At the previous point, FM:6-2 (BUFFER_READY) turns its hold into a tunnel
to the new point and says what it held; a point that took a prefix over for
a switch below (4.2.3) lets it go when the controller moves it on.  At the
prefix's home, the MN's return takes it back as a new anchor takes a
prefix: hold the direct path until the old one has drained.  The methods
belong to :class:`~.anchor.AnchorAgentCore` (a mixin: they use its state).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..dataplane.api import BufferSpec
from ..transport.policy import from_controller, same_address
from ..transport.reliable import (
    Addr,
    Endpoint,
    MessageReceived,
    NegativeReply,
    ReplyReceived,
    RequestTimedOut,
)
from ..wire import messages as m
from ..wire.auth import Role
from ..wire.types import EntryKind, ForwardingEntry, Prefix
from .anchor_lease import LeaseBook
from .anchor_model import (
    CLAIM_BACKOFF,
    CLAIM_RETRIES,
    SETTLE_GRACE,
    AnchorCache,
    AnchorSettings,
    AnchorStats,
    Attached,
    Cleanup,
    HandFlows,
    Mode,
    PrefixEvent,
    PrefixLife,
    PrefixState,
    Reclaim,
    Settle,
    Visiting,
)
from .fib import DesiredFib

MIN_MOBILE_PREFIX = 48
"""The shortest prefix an MN is given (a whole site's /48): FM:6-2 from
anyone but the controller names nothing shorter."""





class AnchorHandover:
    """Handovers of the anchor agent (mixed into it: the state below is the
    agent's, and so are the methods declared for the type checker)."""

    s: AnchorSettings
    dp: DesiredFib
    stats: AnchorStats
    life: PrefixLife
    endpoint: Endpoint
    attached: dict[str, Attached]
    away: dict[Prefix, str]
    serving: dict[Prefix, IPv6Address]
    visiting: dict[Prefix, Visiting]
    _back: set[Prefix]
    _handed: dict[Prefix, IPv6Address]
    _held_on_link: dict[Prefix, str]
    _routed_away: set[Prefix]
    _unmarked: dict[Prefix, IPv6Address]
    _served_at: dict[Prefix, IPv6Address]
    _served_before: set[Prefix]
    _homecoming: dict[int, ForwardingEntry]
    _came_back_from: dict[Prefix, IPv6Address]
    _agent_of_prefix: dict[Prefix, str]
    _claimed_by_mn: dict[Prefix, Addr]
    leases: LeaseBook
    anchors: AnchorCache

    if TYPE_CHECKING:
        def set_timer(self, name: Hashable, at: float) -> None: ...
        def cancel_timer(self, name: Hashable) -> None: ...
        def _step(self, prefix: Prefix, event: PrefixEvent) -> None: ...
        def _departed(self, prefix: Prefix, now: float, hold: bool,
                      own_only: bool = False) -> None: ...
        def _delegate(self, prefixes: Sequence[Prefix], on: bool) -> None: ...
        def _announce(self, prefixes: Sequence[Prefix], on: bool) -> None: ...
        def _claim(self, p: Prefix, mn: str, served: Mapping[Prefix, IPv6Address],
                   now: float) -> None: ...
        def _replace(self, prefix: Prefix, new: list[ForwardingEntry], now: float,
                     keep_buffer: bool = False, spec: BufferSpec | None = None) -> None: ...
        def _retry_hand(self, event: RequestTimedOut, now: float,
                        homecoming: bool = False) -> None: ...
        def _asked_to_stay(self, ev: MessageReceived, msg: m.BufferReady) -> bool: ...
        def _revert(self, prefix: Prefix, now: float) -> None: ...
        def _unprepare(self, prefix: Prefix, now: float) -> None: ...

    def _retry_claim(self, request: m.Message, now: float) -> None:
        """A claim's request timed out (or was answered with a transient
        cause): try it again later, if it is one to retry.

        Only a claim's own requests to its anchor - FM:4-3 discovery, the
        FM:6-2 asking to be sent the prefix - and only while the prefix's
        MN is here: without them its anchor never tunnels the prefix here.
        """
        prefix = getattr(request, "prefix", None)
        v = self.visiting.get(prefix) if isinstance(prefix, Prefix) else None
        discover = isinstance(request, m.AnchorDiscovery)
        to_anchor = isinstance(request, m.BufferReady) and request.dpa_address == self.s.dpa
        if v is None or prefix is None or not (discover or to_anchor):
            return
        if to_anchor:
            self.anchors.forget(prefix)  # (the next claim asks which anchor again)
        if v.claim_retries >= CLAIM_RETRIES:
            self.stats.counters["claim-abandoned"] += 1
            return
        self.set_timer(Reclaim(prefix, discover), now + CLAIM_BACKOFF * 2 ** v.claim_retries)
        v.claim_retries += 1
        self.stats.counters["claim-retry"] += 1

    def _on_reclaim(self, t: Reclaim, now: float) -> None:
        v = self.visiting.get(t.prefix)
        if v is None:
            return  # the MN left meanwhile: nothing to claim here any more
        if t.discover or v.home_cpa is None:
            self._claim(t.prefix, v.mn, {}, now)
        else:
            self.endpoint.request(m.BufferReady(t.prefix, self.s.dpa),
                                  (str(v.home_cpa), self.s.port), now)

    def _rejoin(self, p: Prefix, here: list[ForwardingEntry], spec: BufferSpec | None,
                now: float) -> None:
        self._unmarked.pop(p, None)
        target = self._handed.pop(p, None)
        if target is not None:
            self.cancel_timer(Cleanup(p, target))
        # What we held since the MN left (HELD) stays held while the new
        # entries hold too: a moved anchoring's leftovers end with a marker.
        # In tunnel mode everything for the prefix comes through its anchor,
        # in order: what we hold precedes all it sends from now on, so it
        # goes onto the link at once - nothing else would lift it (our
        # anchor asks only where the MN is, and an FM:6-2 for a homecoming
        # the MN has left again is not sent any more).
        self._replace(p, here, now, keep_buffer=spec is not None, spec=spec)

    def _return_home(self, p: Prefix, link: str, now: float) -> None:
        """The MN is back with a prefix of ours it took elsewhere.

        Taken back as a new anchor takes a prefix: the direct path is held
        while the point it was handed to sends what it holds or still gets
        through our flush SID, past the hold.  Switch mode (4.2.1): the
        binding update has the FM-CP re-route the core and tell that point
        (FM:6-2); the core's end marker lifts the hold.  Tunnel and BGP
        modes: we tell it (FM:6-2); the end marker our data plane sent down
        the tunnel we leave comes back behind what was on its way there and
        lifts the hold (:class:`Settle` if it does not); in BGP mode we
        announce the prefix again.
        """
        del self.away[p]
        self._unmarked.pop(p, None)
        anchor = ForwardingEntry(EntryKind.ANCHOR, p, link=link)
        handed = self._handed.pop(p, None)
        if self._claimed_by_mn.pop(p, None) is not None:
            # Its tunnel ended at the MN itself (Fig 2a): no point holds or
            # marks its end.  What is still on it follows the MN by the
            # MN's own claim of its last care-of prefix.
            handed = None
        serving = self._served_at.pop(p, None)
        if handed is not None and serving is not None:
            # It went on from the point we handed it to (BGP): what is
            # held for it is held where it was served last.
            handed = serving
        if self.s.mode is not Mode.SWITCH and handed is None:
            self._replace(p, [anchor], now)  # nothing elsewhere to wait for
            self._step(p, PrefixEvent.GIVEN)
            return
        self._replace(p, [anchor, ForwardingEntry(EntryKind.BUFFER, p)], now,
                      spec=BufferSpec(self.s.buffer.limit, self.s.hold_timeout, True))
        self._step(p, PrefixEvent.BACK)
        if self.s.mode.moves_anchoring:
            self._back.add(p)
            self._delegate((p,), True)
            self._announce((p,), True)
        if self.s.mode is not Mode.SWITCH and handed is not None:
            rid = self.endpoint.request(m.BufferReady(p, self.s.flush_sid),
                                        self._agent_of(handed), now)
            self._homecoming[rid] = anchor
            self._came_back_from[p] = handed

    def _abandon_homecoming(self, p: Prefix) -> None:
        """The MN left home again before the point it had been handed to
        answered our FM:6-2 for ``p``: the request goes unsent from now on.
        Its next try would reach that point after the MN's next claim there
        and draw the prefix back here, away from the MN (seen under 30%
        control loss: a loop for 1.26 s).  What the point still holds from
        before goes with the next claim's flush or its hold's end."""
        for rid, anchor in list(self._homecoming.items()):
            if anchor.prefix == p:
                del self._homecoming[rid]
                self.endpoint.cancel(rid)
                self.stats.counters["homecoming-abandoned"] += 1

    def _on_homecoming_answer(self, event: ReplyReceived | NegativeReply | RequestTimedOut,
                              now: float) -> None:
        """The visited point sent what it held (or will not).  What was still
        on its way there when the prefix came home follows, ended by the end
        marker our data plane sent down that tunnel: the marker lifts the
        hold (:class:`Settle`, if it never comes)."""
        anchor = self._homecoming.pop(event.request_id)
        if isinstance(event, RequestTimedOut) and self.life.of(anchor.prefix) in (
                PrefixState.RETURNING, PrefixState.ANCHORED):
            # That point was down (restarting): asked again, for the charges.
            self._retry_hand(event, now, homecoming=True)
        if self.life.of(anchor.prefix) is PrefixState.RETURNING:
            answered = isinstance(event, ReplyReceived)
            self._replace(anchor.prefix, [anchor], now, keep_buffer=answered)
            self._step(anchor.prefix, PrefixEvent.SETTLED)
            if answered:
                self.set_timer(Settle(anchor.prefix, anchor.link), now + SETTLE_GRACE)

    def _on_settle(self, t: Settle, now: float) -> None:
        held = self.dp.held(t.prefix)
        if not held or self.life.of(t.prefix) is not PrefixState.ANCHORED:
            return  # lifted by the marker, or the MN moved on meanwhile
        self.stats.counters["settled-unmarked"] += 1
        self._replace(t.prefix, [ForwardingEntry(EntryKind.ANCHOR, t.prefix, link=t.link)], now)

    def _on_cleanup(self, t: Cleanup, now: float) -> None:
        if self._unmarked.get(t.prefix) == t.target:
            del self._unmarked[t.prefix]  # the route never came: the hold timed out
        leftover = ForwardingEntry(EntryKind.TUNNEL, t.prefix, t.target)
        if self.dp.has(leftover):
            self.dp.apply((), (leftover,), now)
            if self.life.of(t.prefix) is PrefixState.HANDED:
                self._step(t.prefix, PrefixEvent.RELEASED)
                self._served_before.discard(t.prefix)

    def routes_heard(self, announced: Sequence[Prefix], withdrawn: Sequence[Prefix],
                     now: float) -> None:
        """BGP mode: our router's UPDATE (``withdrawn`` everything, on a
        session lost: its routes went with it).

        A router announces a prefix's new path to us once its own forwarding
        follows it (BIRD writes its FIB before its UPDATEs go out): no more
        packets of that prefix come here.  A prefix we handed on then gets
        its end marker down the tunnel to the new point, behind the last of
        them, and the new point's hold lifts on it - not at its timeout,
        when packets still coming this way would arrive behind newer ones
        that took the direct path (measured: 6 reordered under load).
        """
        if self.s.mode is not Mode.BGP:
            return
        # Exactly the prefix: the new point announces the very prefix it
        # took (a home's aggregate covering it says nothing of where it is).
        self._routed_away.difference_update(withdrawn)
        # Only prefixes this point has a part in: a router's whole table
        # would otherwise be kept here, as large as the peer makes it.
        self._routed_away.update(p for p in announced if self.life.of(p) is not None)
        for p in announced:
            self._mark_end(p, now)

    def routed_away(self) -> set[Prefix]:
        """BGP mode: the prefixes our router has announced to us (routed
        elsewhere), as :meth:`routes_heard` learnt them."""
        return set(self._routed_away)

    def _mark_end(self, prefix: Prefix, now: float) -> None:
        """The tunnel of ``prefix`` to the point it was just handed to
        carries no more of it: say so, once.  (Only then: a marker down an
        older tunnel would reach wherever the prefix went on from there, and
        lift a hold that waits for another path.)"""
        target = self._unmarked.pop(prefix, None)
        if target is not None and self.dp.mark_end(
                ForwardingEntry(EntryKind.TUNNEL, prefix, target), now):
            self.stats.counters["end-marker-routed-away"] += 1

    def _on_buffer_request(self, ev: MessageReceived, msg: m.BufferRequest, now: float) -> None:
        """FM:6-1 from the central FM-CP: the MN left (it saw the binding move).

        News of a departure, believed as LM:1-3's is (own prefixes only); a
        prefix not attached here stays as it is: it is held already, or
        handed on (a hold now would trap what the new point was sent).
        """
        self.stats.counters["buffer-request"] += 1
        self._departed(msg.prefix, now, hold=True, own_only=True)
        self.endpoint.reply(ev, m.BufferAck(msg.prefix), now)

    def _on_ready(self, ev: MessageReceived, msg: m.BufferReady, now: float) -> None:
        """FM:6-2 at the previous anchor: send held packets to the new one."""
        prefix = msg.prefix
        on_link = None if self.dp.held(prefix) else next(
            (st.link for st in self.attached.values()
             if prefix in st.own or prefix in st.visiting), None)
        requested = self._held_on_link.pop(prefix, None)
        # Held on news of its departure (FM:6-1, LM:1-3) while its MN still
        # listened on our link (make-before-break): the end marker of the
        # path into us may have come before that hold and gone onto the
        # link; then none reaches the new point, whose direct-path hold
        # waited for the next move (190 ms, in ~1 of 150 4.2.1 make-before-
        # break moves).  Under the anchor switch FM:6-2 comes only once the
        # path into us is gone (the controller sends it when the routers
        # follow the new one): our own marker, after the hold's packets
        # (the data plane sends it when the lift is done), ends it.  (Under
        # BGP the routers follow in their own time; tunnel-mode claims name
        # no flush SID.)
        on_link = on_link or (requested if self.s.mode is Mode.SWITCH else None)
        # The prefix is served at the new point: if its MN still counts as
        # attached here (no link event told us), it is not any more.
        self._departed(prefix, now, hold=False)
        self._unprepare(prefix, now)  # (or prepared here for it, and it went elsewhere)
        self._back.discard(prefix)
        self._handed[prefix] = msg.dpa_address
        if prefix in self._agent_of_prefix:
            # Only its MN's agent claims a host-based MN's prefix.
            self._claimed_by_mn[prefix] = ev.source
        held = self.dp.buffered(prefix)
        had = self.life.of(prefix) is not None
        # Leftovers (and late packets still routed here) go to the new point
        # through a tunnel: in switch mode too, so the new anchor can tell
        # them from packets of the new direct path.
        self._replace(prefix, [ForwardingEntry(EntryKind.TUNNEL, prefix, msg.dpa_address)], now)
        self.stats.flushed += held
        if on_link is not None and msg.dpa_address != dpa_of(msg.dpa_address):
            self._marked_from_link(prefix, msg.dpa_address, on_link, now)
        own = any(o.covers(prefix) for o in self.s.prefixes)
        # Who speaks: the controller's key when signed (an address can be
        # borrowed); its address only on an insecure deployment.
        by_controller = from_controller(ev, self.s.controller)
        # Anchored at the new point now - unless the controller says the
        # anchoring stays here (its lease could not move, FM:3-2), or under
        # BGP the router we released the lease for does.
        stays = (by_controller and msg.anchor == self.s.node_id) or self._asked_to_stay(ev, msg)
        self.leases.released_for.pop(prefix, None)
        # A point the prefix was tunnelled to from its anchor passes that on.
        self.leases.stayed.pop(prefix, None)
        if self.s.mode.moves_anchoring:
            # Staying, a lease given up for the move (router-driven PD) is
            # asked back; it was never let go when the controller moved it.
            self._delegate((prefix,), stays)
        if prefix in self.serving and by_controller:
            # 4.2.3: the anchoring we took over for a switch below moves to
            # another AR (the controller speaks for it): we only carry
            # leftovers now.  A switch below may take it over again.
            del self.serving[prefix]
            self._served_before.add(prefix)
            serving = False
        else:
            # A switch below takes the anchoring over naming its DPA; a point
            # draws only leftovers to its flush SID (a return home, a claim)
            # - also when this point knows nothing of the prefix (restarted).
            takes_over = msg.dpa_address == dpa_of(msg.dpa_address)
            serving = not own and self.s.mode is not Mode.BGP and takes_over and (
                prefix in self.serving or prefix in self._served_before or not had)
            self._served_before.discard(prefix)
        self._step(prefix, PrefixEvent.TAKEN_OVER if serving else PrefixEvent.READY)
        if stays:
            # Still anchored (and announced) here: the tunnel to the new
            # point carries the prefix until FM:1 says its visit ended.
            self.stats.counters["anchor-stayed"] += 1
        elif self.s.mode is Mode.BGP:
            # The new anchor announces the prefix: this point only carries
            # leftovers now, and stops announcing it.
            self._announce((prefix,), False)
            self._unmarked[prefix] = msg.dpa_address
            if prefix in self._routed_away:
                # Our router follows the new path already: what was held
                # has just been sent, and nothing follows it.
                self._mark_end(prefix, now)
            self.set_timer(Cleanup(prefix, msg.dpa_address), now + 2 * self.s.hold_timeout)
        elif serving:
            # 4.2.3: a forwarding switch below takes over a prefix anchored
            # at another AR; it is anchored here now, until FM:1 hands back.
            self.serving[prefix] = msg.dpa_address
            self.stats.counters["serving"] += 1
        elif not own:
            # An intermediate point (e.g. the previous FW): its tunnel only
            # carries leftovers, so it goes once they have surely drained.
            self.set_timer(Cleanup(prefix, msg.dpa_address), now + 2 * self.s.hold_timeout)
        self.endpoint.reply(ev, m.BufferReadyAck(prefix, held), now)
        self.set_timer(HandFlows(prefix, msg.dpa_address), now)  # FM:2, once this answer went

    def _marked_from_link(self, prefix: Prefix, flush: IPv6Address, link: str,
                          now: float) -> None:
        """Make-before-break: the MN is still on our ``link`` (its old radio
        up) while the point it went to draws ``prefix`` to its flush SID,
        holding the direct path there.  What came through us went to the MN
        directly, and the end marker of the tunnel that brought it ended at
        our link; nothing follows on the way to us (the claim came behind
        it).  Our own marker, down the new tunnel, lifts that hold now - not
        a grace period later.  The data plane sends it only while the link
        has its carrier: one whose radio went unannounced (its link event
        not here yet) had its standby hold catch what must go first."""
        if self.dp.mark_end(ForwardingEntry(EntryKind.TUNNEL, prefix, flush), now, link):
            self.stats.counters["end-marker-from-link"] += 1

    def _ready_refusal(self, ev: MessageReceived, msg: m.BufferReady) -> str | None:
        """Whether a signed FM:6-2 names a prefix and a target its sender may.

        The controller moves anchoring between any anchors.  An anchor may
        only draw a prefix's packets to itself: the target is its own DPA or
        flush SID (``agent_ids`` names the node owning each DPA; for one not
        listed, the agent's endpoint must be the sender's).  A switch below
        takes over a prefix this point never saw (4.2.3), so the prefix
        itself cannot be judged here.  An MN's agent names its care-of address, only for a
        prefix this point gave its MN (``host_based`` binds MN-IDs to
        agents).  No one but the controller names a prefix shorter than
        :data:`MIN_MOBILE_PREFIX`: that would carry whole networks, not one
        MN's traffic.
        """
        if ev.sender is None or Role.CONTROLLER in ev.roles:
            return None
        prefix = msg.prefix
        if prefix.length < MIN_MOBILE_PREFIX:
            return "refused:BUFFER_READY:prefix-too-short"
        if Role.ANCHOR in ev.roles:
            mine = self._speaks_for(ev, msg.dpa_address)
            return None if mine else "refused:BUFFER_READY:not-its-address"
        if not any(o.covers(prefix) for o in self.s.prefixes):
            return "refused:BUFFER_READY:not-our-prefix"
        if self._agent_of_prefix.get(prefix) != ev.sender:
            return "refused:BUFFER_READY:not-its-prefix"  # another MN's
        return None

    def _speaks_for(self, ev: MessageReceived, sid: IPv6Address) -> bool:
        """Whether ``ev`` comes from the agent of a DPA (or its flush SID):
        signed by the node ``agent_ids`` names for it, or - a DPA not
        listed, or an unsigned message - sent from that agent's endpoint."""
        owner = self.s.agent_ids.get(dpa_of(sid))
        if ev.sender is not None and owner is not None:
            return owner == ev.sender
        return same_address(self._agent_of(sid), ev.source)

    def _agent_of(self, sid: IPv6Address) -> Addr:
        """The agent serving a DPA address or its flush SID (DPA + 1).

        Co-located CPA and DPA (Fig 1a/1b): the agent listens on its DPA
        address; DPA addresses are even, so a flush SID maps back to it.
        """
        dpa = dpa_of(sid)
        known = self.s.agents.get(dpa)
        return known if known is not None else (str(dpa), self.s.port)

    def _on_handoff(self, ev: MessageReceived, msg: m.FmHandoff, now: float) -> None:
        """FM:1: the FM role for a prefix comes back here (revert, FM:3-3)."""
        prefix = msg.prefix
        own = any(o.covers(prefix) for o in self.s.prefixes)
        if msg.node_id == self.s.node_id and (prefix in self.away or own):
            # Ours again: whatever still points elsewhere (a tunnel to where
            # the MN went, or to the AR that took the anchoring) goes.
            self._replace(prefix, [], now)
            self.away.pop(prefix, None)
            self._served_at.pop(prefix, None)
            if self.life.of(prefix) is PrefixState.HANDED:
                self._step(prefix, PrefixEvent.RELEASED)
            if not any(prefix in st.own for st in self.attached.values()):
                self._delegate((prefix,), False)  # its MN is gone and so are its flows
            self.stats.counters["returned"] += 1
        elif (self.s.mode is Mode.BGP and msg.node_id == self.s.node_id
              and prefix in self.visiting):
            # Anchored here for a visit (its lease moved here) and stayed for
            # the next point, whose visit ended: so does ours.
            self._revert(prefix, now)
        elif self.serving.pop(prefix, None) is not None:
            self._replace(prefix, [], now)  # 4.2.3: the DPN below let it go
            self._step(prefix, PrefixEvent.RELEASED)
            self.stats.counters["served"] += 1
        self.endpoint.reply(ev, m.FmHandoffAck(prefix), now)



def dpa_of(sid: IPv6Address) -> IPv6Address:
    """The DPA address a DPA or flush SID (DPA + 1; DPAs are even) belongs to."""
    return sid - 1 if int(sid) & 1 else sid
