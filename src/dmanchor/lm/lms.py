"""LMs: the location server core, with its LM:2 pool behaviour (sans-IO).

* LM:1-1/1-2: answers queries from its bindings (exact or covering prefix).
* LM:1-4: applies updates, acknowledges them once the store made them
  durable; lifetime 0 deletes; bindings expire at the end of their lifetime.
* LM:1-3: pushes every change to the subscribers of a covering prefix,
  retransmitting until acknowledged (a subscriber that never answers is
  dropped and counted).
* LM:2-1: joins the configured peers, naming the prefixes it is primary for;
  overlapping claims are refused with OVERLAPPING_CLAIM.
* LM:2-2/2-3: a query or update for a prefix another member is primary for
  is relayed to that member and its answer relayed back.  The primary
  fans its pushes out to the other members, which push to their own
  subscribers, so a client may subscribe at any member.
* Members send heartbeats; one silent for ``dead_after`` is reported down
  (:class:`MemberDown`), and queries it is primary for fail fast with
  PEER_UNREACHABLE instead of waiting.
* SM: with an authorization table, only the listed node may update a prefix
  (by its authenticated key owner; ORIGIN is trusted only from pool members).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import ClassVar

from ..prefixtable import PrefixTable
from ..transport.policy import LMS_SENDERS, not_own_id
from ..transport.reliable import (
    Addr,
    Endpoint,
    Event,
    MessageReceived,
    NegativeReply,
    ReplyReceived,
    RequestTimedOut,
    RetransmitPolicy,
)
from ..transport.service import ServiceCore
from ..wire import messages as m
from ..wire.auth import Role
from ..wire.ie import INFINITE_LIFETIME
from ..wire.types import Cause, MnBinding, Prefix
from .store import Binding, MemoryStore, Store, StoreError
from .subscriptions import Subscriptions


@dataclass(frozen=True, slots=True)
class LmsSettings:
    """Behaviour of one LMs (the daemon builds it from the config file)."""

    node_id: str
    """This server's node id (sent in LM:2-1 and heartbeats)."""
    address: IPv6Address = IPv6Address("::1")
    """The LMs address announced to the pool (LM:2-1 parameter)."""
    primary: tuple[Prefix, ...] = ()
    """Prefixes this member hosts the primary records for."""
    peers: tuple[Addr, ...] = ()
    """Pool members to join at start."""
    authorization: Mapping[str, tuple[Prefix, ...]] | None = None
    """Node id -> prefixes it may update; None disables the check."""
    max_lifetime: int = 86400
    """Longest binding lifetime granted, seconds."""
    subscription_lifetime: int = 600
    """Lifetime of a subscription that names none, seconds."""
    max_subscription_lifetime: int = 3600
    """Longest lifetime granted to a subscription, seconds."""
    max_subscriptions: int = 100_000
    """(prefix, subscriber) pairs held at most; a subscribe beyond is
    refused RESOURCE_EXHAUSTED and counted (subscribe-refused-full)."""
    accepts_members: bool = True
    """Whether LM:2-1 joins are accepted.  An LMs of several workers
    refuses them (UNSUPPORTED): a member's heartbeats and relays would
    reach one worker, and the others would not know the member."""
    heartbeat_interval: float = 1.0
    """Seconds between heartbeats to each pool member."""
    dead_after: float = 3.5
    """A member silent this long is reported down."""
    peer_policy: RetransmitPolicy = RetransmitPolicy(0.05, 2.0, 0.4, 3)
    """Retransmission of peer queries/relays (bounded: callers wait on them -
    an anchor at a move, while the old router holds the MN's packets; 0.35 s
    in all).  A peer that lets one time out is taken for down at once (see
    :meth:`LmsCore._on_timeout`)."""


@dataclass(frozen=True, slots=True)
class MemberDown:
    """A pool member stopped answering heartbeats."""

    node_id: str
    address: Addr


@dataclass(frozen=True, slots=True)
class MemberUp:
    """A pool member joined or came back."""

    node_id: str
    address: Addr


@dataclass(frozen=True, slots=True)
class JoinRefused:
    """A peer refused our LM:2-1 join (e.g. overlapping claims)."""

    address: Addr
    reason: str


@dataclass(frozen=True, slots=True)
class BindingChanged:
    """A binding was created, moved, deleted or expired (lifetime 0)."""

    prefix: Prefix
    forwarding_address: IPv6Address
    lifetime: int


LmsEvent = MemberDown | MemberUp | JoinRefused | BindingChanged


@dataclass(slots=True)
class Member:
    """What this LMs knows of one pool peer."""

    node_id: str
    address: Addr
    prefixes: tuple[Prefix, ...]
    last_seen: float
    alive: bool = True


@dataclass(slots=True)
class _Relay:
    """A client request waiting on a pool peer's answer."""

    client: MessageReceived
    prefix: Prefix


@dataclass(slots=True)
class _Gather:
    """A client's LM:1-1 by MN waiting on the pool's other members."""

    client: MessageReceived
    mn: str
    found: dict[Prefix, MnBinding]
    waiting: set[int] = field(default_factory=set)


SUBSCRIPTION_SWEEP = 60.0
"""Seconds between sweeps of expired subscriptions."""


class LmsCore(ServiceCore):
    """One LMs (optionally a pool member); see the module docstring."""

    SENDERS = LMS_SENDERS

    def __init__(
        self,
        settings: LmsSettings,
        endpoint: Endpoint | None = None,
        store: Store | None = None,
        now: float = 0.0,
    ) -> None:
        super().__init__(endpoint or Endpoint())
        self.settings = settings
        self.store: Store = store or MemoryStore()
        self.bindings: PrefixTable[Binding] = PrefixTable()
        self.subs = Subscriptions(settings.max_subscriptions,
                                  settings.max_subscription_lifetime)
        self.members: dict[str, Member] = {}
        self.counters: Counter[str] = Counter()
        self.events: list[LmsEvent] = []
        self._claims: PrefixTable[str] = PrefixTable()  # prefix -> member id
        self._by_mn: dict[str, set[Prefix]] = {}  # MN-ID -> its bound prefixes
        self._member_addrs: dict[Addr, str] = {}
        self._expiry: list[tuple[float, Prefix]] = []
        self._relays: dict[int, _Relay] = {}
        self._gathers: dict[int, _Gather] = {}  # LM:1-1 by MN asked of members
        self._joined: set[Addr] = set()
        self._join_pending: dict[int, Addr] = {}
        for p in settings.primary:
            self._claims.set(p, settings.node_id)
        loaded = list(self.store.load())
        for b in loaded:
            self._bind(b)
        self._expiry = [(b.expires, b.prefix) for b in loaded]
        heapq.heapify(self._expiry)
        if self._expiry:
            self.set_timer("expire", self._expiry[0][0])
        if settings.peers:
            self.set_timer("join", now)

    # -- Queries for drivers and tests ------------------------------------------

    def drain_events(self) -> list[LmsEvent]:
        """Take the upward events (member up/down, binding changes ...)."""
        out, self.events = self.events, []
        return out

    def lookup(self, prefix: Prefix, now: float) -> Binding | None:
        """The live binding of ``prefix`` or of its longest covering prefix."""
        b = self.bindings.get(prefix)
        if b is not None and b.expires > now:
            return b  # the common case, without walking every prefix length
        for _, b in self.bindings.covering(prefix):
            if b.expires > now:
                return b
        return None

    def of_mn(self, mn: str, now: float) -> list[Binding]:
        """The live bindings naming ``mn``."""
        out = []
        for p in sorted(self._by_mn.get(mn, ()), key=lambda q: (q.network, q.length)):
            b = self.bindings.get(p)
            if b is not None and b.expires > now:
                out.append(b)
        return out

    def _bind(self, b: Binding) -> None:
        old = self.bindings.get(b.prefix)
        if old is not None and old.mn and old.mn != b.mn:
            self._forget_mn(old.mn, b.prefix)
        self.bindings.set(b.prefix, b)
        if b.mn:
            self._by_mn.setdefault(b.mn, set()).add(b.prefix)

    def _unbind(self, prefix: Prefix) -> None:
        old = self.bindings.pop(prefix)
        if old is not None and old.mn:
            self._forget_mn(old.mn, prefix)

    def _forget_mn(self, mn: str, prefix: Prefix) -> None:
        held = self._by_mn.get(mn)
        if held is not None:
            held.discard(prefix)
            if not held:
                del self._by_mn[mn]

    def primary_for(self, prefix: Prefix) -> str | None:
        """Node id of the member primary for ``prefix`` (None: unclaimed)."""
        for _, owner in self._claims.covering(prefix):
            return owner
        return None

    # -- Events --------------------------------------------------------------------

    def on_event(self, event: Event, now: float) -> None:
        if isinstance(event, MessageReceived):
            self._touch(event.source, now)
            handler = self._handlers.get(type(event.message))
            if handler is None:
                if event.expects_reply:
                    self.endpoint.reject(event, Cause.UNSUPPORTED, "not an LMs request", now)
                self.counters["unsupported"] += 1
                return
            handler(self, event, now)
        elif isinstance(event, ReplyReceived):
            self._touch(event.source, now)
            self._on_reply(event, now)
        elif isinstance(event, NegativeReply):
            self._touch(event.source, now)
            self._on_negative(event, now)
        else:
            self._on_timeout(event, now)

    def on_timer(self, name: Hashable, now: float) -> None:
        if name == "expire":
            self._expire(now)
        elif name == "join":
            self._join_peers(now)
        elif name == "heartbeat":
            self._heartbeat(now)
        elif name == "subs-sweep":
            self.counters["subscription-expired"] += self.subs.sweep(now)
            if len(self.subs):
                self.set_timer("subs-sweep", now + SUBSCRIPTION_SWEEP)

    # -- Client requests -------------------------------------------------------------

    def _remote_primary(self, prefix: Prefix) -> Member | None:
        owner = self.primary_for(prefix)
        if owner is None or owner == self.settings.node_id:
            return None
        return self.members.get(owner)

    def _on_query(self, ev: MessageReceived, now: float) -> None:
        msg = ev.message
        assert isinstance(msg, m.LocationQuery | m.PeerQuery)
        if (self.members and isinstance(msg, m.LocationQuery)
                and self._member_at(ev.source) is None):
            member = self._remote_primary(msg.prefix)
            if member is not None:
                self._relay(ev, m.PeerQuery(msg.prefix), member, msg.prefix, now)
                return
        b = self.lookup(msg.prefix, now)
        if b is None:
            self.counters["query-miss"] += 1
            self.endpoint.reject(ev, Cause.UNKNOWN_PREFIX, "no binding", now, msg.prefix)
            return
        self.counters["query-hit"] += 1
        reply_cls = m.LocationReply if isinstance(msg, m.LocationQuery) else m.PeerReply
        self.endpoint.reply(
            ev, reply_cls(b.prefix, b.forwarding_address, self._remaining(b, now), b.mn or None),
            now)

    def _on_mn_query(self, ev: MessageReceived, now: float) -> None:
        """LM:1-1 by MN: every prefix bound to the MN and where it is served.

        In a pool, a client's query also goes to every live member (each is
        primary for some prefixes, LM:2-2) and the answers are merged; a
        member's query is answered from this member's bindings alone.
        """
        msg = ev.message
        assert isinstance(msg, m.MnQuery)
        found = {b.prefix: MnBinding(b.prefix, b.forwarding_address,
                                     self._remaining(b, now), b.flows)
                 for b in self.of_mn(msg.mn, now)}
        self.counters["mn-query"] += 1
        peers = [] if self._member_at(ev.source) is not None else [
            mb for mb in self.members.values() if mb.alive]
        gather = _Gather(ev, msg.mn, found)
        for mb in peers:
            rid = self.endpoint.request(m.MnQuery(msg.mn), mb.address, now,
                                        self.settings.peer_policy)
            gather.waiting.add(rid)
            self._gathers[rid] = gather
        if not gather.waiting:
            self._answer_gather(gather, now)

    def _gathered(self, rid: int, reply: m.Message | None, now: float) -> None:
        """A member answered an MN query (``None``: it did not)."""
        gather = self._gathers.pop(rid)
        gather.waiting.discard(rid)
        if isinstance(reply, m.MnReply) and reply.mn == gather.mn:
            for b in reply.bindings:
                gather.found.setdefault(b.prefix, b)
        elif reply is None:
            self.counters["mn-query-member-silent"] += 1
        if not gather.waiting:
            self._answer_gather(gather, now)

    def _answer_gather(self, gather: _Gather, now: float) -> None:
        found = sorted(gather.found.values(), key=lambda b: (b.prefix.network, b.prefix.length))
        self.endpoint.reply(gather.client, m.MnReply(gather.mn, tuple(found)), now)

    def _on_update(self, ev: MessageReceived, now: float) -> None:
        msg = ev.message
        assert isinstance(msg, m.LocationUpdate)
        # A member's relay names the original sender; only a member may (when
        # signed, one whose key is an LMs key): anyone else's ORIGIN is ignored.
        from_member = self._member_at(ev.source) is not None and (
            ev.sender is None or Role.LMS in ev.roles)
        origin = msg.origin if from_member and msg.origin else ev.sender
        # Never relay what a member relayed to us: claims disagreeing during a
        # join must not bounce an update around the pool.
        member = None if from_member else self._remote_primary(msg.prefix)
        if member is not None:
            relayed = m.LocationUpdate(
                msg.prefix, msg.forwarding_address, msg.lifetime,
                origin or msg.origin, msg.mn, msg.flows,
            )
            self._relay(ev, relayed, member, msg.prefix, now)
            return
        cause = self._authorize(origin, msg.prefix)
        if cause is not None:
            self.counters["update-refused"] += 1
            self.endpoint.reject(ev, cause, f"{origin or 'unauthenticated'} "
                                 f"may not update {msg.prefix}", now, msg.prefix)
            return
        held = self.bindings.get(msg.prefix)
        mn = (held.mn if held is not None and held.expires > now else "")
        if msg.mn and mn and msg.mn != mn:
            # SM: the prefix is bound to another MN - a host naming it (in an
            # RS, say) must not pull that MN's traffic to itself.
            self.counters["update-refused:other-mn"] += 1
            self.endpoint.reject(ev, Cause.NOT_AUTHORIZED,
                                 f"{msg.prefix} is bound to another MN", now, msg.prefix)
            return
        # Unreported flows: the MN's own count carries over (its new point
        # claims before it learns the flows); an update naming no MN (a
        # host-based MN's own agent) reports none the network keeps for it.
        flows = msg.flows if msg.flows is not None else (
            held.flows if held is not None and msg.mn and msg.mn == mn else 0)
        mn = msg.mn or mn
        lifetime = min(msg.lifetime, self.settings.max_lifetime)
        try:
            if lifetime == 0:
                self.store.delete(msg.prefix)
            else:
                binding = Binding(
                    msg.prefix, msg.forwarding_address, now + lifetime,
                    origin or msg.origin or "", mn, flows,
                )
                self.store.put(binding)
        except StoreError as exc:
            self.counters["store-failure"] += 1
            self.endpoint.reject(ev, Cause.STORE_FAILURE, str(exc), now, msg.prefix)
            return
        # Durable: now it may be acknowledged and applied.
        if lifetime == 0:
            self._unbind(msg.prefix)
        else:
            self._bind(binding)
            heapq.heappush(self._expiry, (binding.expires, msg.prefix))
            if self._expiry[0][1] == msg.prefix:
                self.set_timer("expire", binding.expires)
        self.counters["update"] += 1
        self.endpoint.reply(ev, m.LocationUpdateAck(msg.prefix, lifetime), now)
        self._changed(msg.prefix, msg.forwarding_address, lifetime, now, fan_out=True,
                      mn=mn or None)

    def stored_elsewhere(self, changes: Iterable[tuple[Prefix, Binding | None]],
                         now: float) -> None:
        """Bindings another LMs sharing this one's store wrote (a binding) or
        removed (None), in the store's order, as its watch reported them:
        served from here too, and pushed to this server's subscribers
        (LM:1-3).  Not fanned out to the pool: each LMs on the store
        pushes to its own subscribers."""
        for prefix, b in changes:
            self.counters["store-watched"] += 1
            if b is None:
                old = self.bindings.get(prefix)
                if old is not None:
                    self._unbind(prefix)
                    self._changed(prefix, old.forwarding_address, 0, now, fan_out=False)
                continue
            self._bind(b)
            heapq.heappush(self._expiry, (b.expires, prefix))
            if self._expiry[0][1] == prefix:
                self.set_timer("expire", b.expires)
            lifetime = self._remaining(b, now) if b.expires > now else 0
            self._changed(prefix, b.forwarding_address, lifetime, now, fan_out=False,
                          mn=b.mn or None)

    def _authorize(self, who: str | None, prefix: Prefix) -> Cause | None:
        table = self.settings.authorization
        if table is None:
            return None
        if who is None:
            return Cause.AUTH_REQUIRED
        for allowed in table.get(who, ()):
            if allowed.covers(prefix):
                return None
        return Cause.NOT_AUTHORIZED

    def _on_subscribe(self, ev: MessageReceived, now: float) -> None:
        msg = ev.message
        assert isinstance(msg, m.Subscribe)
        life = msg.lifetime if msg.lifetime is not None else self.settings.subscription_lifetime
        if self.subs.add(msg.prefixes, ev.source, life, now) is None:
            self.counters["subscribe-refused-full"] += 1
            self.endpoint.reject(ev, Cause.RESOURCE_EXHAUSTED, "subscription table full", now)
            return
        if not self.has_timer("subs-sweep"):
            self.set_timer("subs-sweep", now + SUBSCRIPTION_SWEEP)
        self.endpoint.reply(ev, m.SubscribeAck(msg.prefixes), now)

    def _on_unsubscribe(self, ev: MessageReceived, now: float) -> None:
        msg = ev.message
        assert isinstance(msg, m.Unsubscribe)
        self.subs.remove(msg.prefixes, ev.source)
        self.endpoint.reply(ev, m.UnsubscribeAck(msg.prefixes), now)

    def _on_inform(self, ev: MessageReceived, now: float) -> None:
        """A pool member pushes a change it applied: tell our subscribers."""
        msg = ev.message
        assert isinstance(msg, m.LocationInform)
        self.endpoint.reply(ev, m.LocationInformAck(msg.prefix), now)
        if self._member_at(ev.source) is None:
            self.counters["inform-from-non-member"] += 1
            return
        self._changed(msg.prefix, msg.forwarding_address, msg.lifetime, now, fan_out=False,
                      mn=msg.mn)

    # -- Pool --------------------------------------------------------------------------

    def _on_join(self, ev: MessageReceived, now: float) -> None:
        msg = ev.message
        assert isinstance(msg, m.PoolJoin)
        if not_own_id(ev, msg.node_id):
            self.refuse(ev, "refused:POOL_JOIN:not-own-id", now)
            return
        if not self.settings.accepts_members:
            self.counters["join-refused-workers"] += 1
            self.endpoint.reject(ev, Cause.UNSUPPORTED, "an LMs of several workers", now)
            return
        conflict = self._conflict(msg.node_id, msg.prefixes)
        if conflict is not None:
            self.counters["join-refused"] += 1
            self.endpoint.reject(ev, Cause.OVERLAPPING_CLAIM, conflict, now)
            return
        self._add_member(msg.node_id, ev.source, msg.prefixes, now)
        self._joined.add(ev.source)
        self.endpoint.reply(ev, m.PoolJoinAck(self.settings.node_id, self.settings.primary), now)

    def _conflict(self, node_id: str, prefixes: tuple[Prefix, ...]) -> str | None:
        if node_id == self.settings.node_id:
            return f"node id {node_id} is this server's own"
        for p in prefixes:
            for claimed, owner in self._claims.items():
                if owner != node_id and claimed.overlaps(p):
                    return f"{p} overlaps {claimed} claimed by {owner}"
        return None

    def _add_member(self, node_id: str, addr: Addr, prefixes: tuple[Prefix, ...],
                    now: float) -> None:
        old = self.members.get(node_id)
        if old is not None:
            for p in old.prefixes:
                self._claims.pop(p)
            self._member_addrs.pop(old.address, None)
        self.members[node_id] = Member(node_id, addr, prefixes, now)
        self._member_addrs[addr] = node_id
        for p in prefixes:
            self._claims.set(p, node_id)
        if old is None or not old.alive:
            self.events.append(MemberUp(node_id, addr))
        if not self.has_timer("heartbeat"):
            self.set_timer("heartbeat", now + self.settings.heartbeat_interval)

    def _join_peers(self, now: float) -> None:
        for peer in self.settings.peers:
            if peer in self._joined or peer in self._join_pending.values():
                continue
            rid = self.endpoint.request(
                m.PoolJoin(self.settings.node_id, self.settings.address,
                           self.settings.primary),
                peer, now, self.settings.peer_policy,
            )
            self._join_pending[rid] = peer
        if len(self._joined) < len(self.settings.peers):
            self.set_timer("join", now + 2 * self.settings.heartbeat_interval)

    def _heartbeat(self, now: float) -> None:
        s = self.settings
        once = RetransmitPolicy(s.heartbeat_interval, 1.0, s.heartbeat_interval, 1)
        for member in self.members.values():
            if member.alive and now - member.last_seen > s.dead_after:
                member.alive = False
                self.counters["member-down"] += 1
                self.events.append(MemberDown(member.node_id, member.address))
            self.endpoint.request(m.Heartbeat(s.node_id), member.address, now, once)
        self.set_timer("heartbeat", now + s.heartbeat_interval)

    def _on_heartbeat(self, ev: MessageReceived, now: float) -> None:
        self.endpoint.reply(ev, m.HeartbeatAck(self.settings.node_id), now)

    def _member_silent(self, addr: Addr) -> None:
        """A member let a relay or a gather time out: down from now on, so
        that the next ones fail fast rather than wait for it too (its
        heartbeats, or anything else from it, bring it back up)."""
        member = self._member_at(addr)
        if member is not None and member.alive:
            member.alive = False
            self.counters["member-down-silent"] += 1
            self.events.append(MemberDown(member.node_id, member.address))

    def _member_at(self, addr: Addr) -> Member | None:
        node_id = self._member_addrs.get(addr)
        return None if node_id is None else self.members.get(node_id)

    def _touch(self, addr: Addr, now: float) -> None:
        member = self._member_at(addr)
        if member is not None:
            member.last_seen = now
            if not member.alive:
                member.alive = True
                self.events.append(MemberUp(member.node_id, addr))

    def _relay(self, ev: MessageReceived, request: m.Message, member: Member,
               prefix: Prefix, now: float) -> None:
        if not member.alive:
            self.counters["relay-peer-down"] += 1
            self.endpoint.reject(
                ev, Cause.PEER_UNREACHABLE, f"primary {member.node_id} is down", now, prefix
            )
            return
        self.counters["relayed"] += 1
        rid = self.endpoint.request(request, member.address, now, self.settings.peer_policy)
        self._relays[rid] = _Relay(ev, prefix)

    # -- Answers to our own requests ------------------------------------------------------

    def _on_reply(self, ev: ReplyReceived, now: float) -> None:
        if ev.request_id in self._gathers:
            self._gathered(ev.request_id, ev.reply, now)
            return
        relay = self._relays.pop(ev.request_id, None)
        if relay is not None:
            r = ev.reply
            if isinstance(r, m.PeerReply):
                out: m.Message = m.LocationReply(r.prefix, r.forwarding_address, r.lifetime,
                                                 r.mn)
            else:
                out = r  # a relayed update's ack passes through unchanged
            self.endpoint.reply(relay.client, out, now)
            return
        peer = self._join_pending.pop(ev.request_id, None)
        if peer is not None and isinstance(ev.reply, m.PoolJoinAck):
            conflict = self._conflict(ev.reply.node_id, ev.reply.prefixes)
            if conflict is not None:
                self.events.append(JoinRefused(peer, conflict))
                return
            self._joined.add(peer)
            self._add_member(ev.reply.node_id, peer, ev.reply.prefixes, now)

    def _on_negative(self, ev: NegativeReply, now: float) -> None:
        if ev.request_id in self._gathers:
            self._gathered(ev.request_id, None, now)
            return
        relay = self._relays.pop(ev.request_id, None)
        if relay is not None:
            self.endpoint.reject(relay.client, ev.status.code, ev.status.message, now,
                                 relay.prefix)
            return
        peer = self._join_pending.pop(ev.request_id, None)
        if peer is not None:
            self.counters["join-refused-by-peer"] += 1
            self.events.append(JoinRefused(peer, ev.status.message))

    def _on_timeout(self, ev: RequestTimedOut, now: float) -> None:
        if ev.request_id in self._gathers:
            self._member_silent(ev.destination)
            self._gathered(ev.request_id, None, now)
            return
        relay = self._relays.pop(ev.request_id, None)
        if relay is not None:
            self._member_silent(ev.destination)
            self.endpoint.reject(relay.client, Cause.PEER_UNREACHABLE,
                                 "primary did not answer", now, relay.prefix)
            return
        self._join_pending.pop(ev.request_id, None)
        if isinstance(ev.request, m.LocationInform):
            self._drop_subscriber(ev.destination)

    # -- Changes, pushes, expiry ------------------------------------------------------------

    def _changed(self, prefix: Prefix, address: IPv6Address, lifetime: int, now: float,
                 fan_out: bool, mn: str | None = None) -> None:
        self.events.append(BindingChanged(prefix, address, lifetime))
        inform = m.LocationInform(prefix, address, lifetime, mn)
        for client in self.subs.live(prefix, now):
            self.counters["push"] += 1
            self.endpoint.request(inform, client, now)
        if fan_out:
            for member in self.members.values():
                if member.alive:
                    self.endpoint.request(inform, member.address, now,
                                          self.settings.peer_policy)

    def _drop_subscriber(self, client: Addr) -> None:
        self.counters["subscriber-dropped"] += 1
        self.subs.drop_client(client)

    def _expire(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires, prefix = heapq.heappop(heap)
            b = self.bindings.get(prefix)
            if b is None or b.expires != expires:
                continue  # refreshed or deleted since
            try:
                gone = self.store.expire(b)
            except StoreError:
                self.counters["store-failure"] += 1
                heapq.heappush(heap, (now + 1.0, prefix))
                self._bind(b._replace(expires=now + 1.0))
                continue
            if not gone:
                # Another LMs sharing the store renewed it: its watch event
                # (stored_elsewhere) is on its way.
                self.counters["expiry-renewed-elsewhere"] += 1
                continue
            self._unbind(prefix)
            self.counters["expired"] += 1
            self._changed(prefix, b.forwarding_address, 0, now, fan_out=True)
        if heap:
            self.set_timer("expire", heap[0][0])

    @staticmethod
    def _remaining(b: Binding, now: float) -> int:
        if b.expires == math.inf:
            return INFINITE_LIFETIME
        return max(1, min(INFINITE_LIFETIME - 1, math.floor(b.expires - now)))

    _handlers: ClassVar[
        dict[type[m.Message], Callable[[LmsCore, MessageReceived, float], None]]
    ] = {
        m.LocationQuery: _on_query,
        m.PeerQuery: _on_query,
        m.MnQuery: _on_mn_query,
        m.LocationUpdate: _on_update,
        m.Subscribe: _on_subscribe,
        m.Unsubscribe: _on_unsubscribe,
        m.LocationInform: _on_inform,
        m.PoolJoin: _on_join,
        m.Heartbeat: _on_heartbeat,
    }
