"""LMp: the location proxy of draft Fig 1d and 2b (sans-IO).

To its LMc clients it looks like an LMs; to the LMs it is one client.

* Queries: answered from its cache while fresh; otherwise one upstream
  query per prefix, however many clients ask at once (coalesced).
* Updates: relayed upstream with ORIGIN set to the authenticated client,
  acknowledged to the client only when the LMs acknowledged (durable).
* Subscriptions: one upstream subscription per prefix, whatever the number
  of clients; each push is acknowledged upstream, cached, and fanned out
  to every client subscribed to a covering prefix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from ..transport.policy import LMP_SENDERS, same_address
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
from ..wire.types import Cause, Prefix
from .subscriptions import Subscriptions


@dataclass(slots=True)
class _Cached:
    reply: m.LocationReply
    expires: float


@dataclass(slots=True)
class _Upstream:
    kind: str  # "query" | "update" | "subscribe" | "unsubscribe"
    waiting: list[MessageReceived] = field(default_factory=list)
    prefix: Prefix | None = None


class LmpCore(ServiceCore):
    """Location proxy between LMc clients and one LMs (or pool member list)."""

    SENDERS = LMP_SENDERS

    def __init__(self, upstream: Sequence[Addr], endpoint: Endpoint | None = None, *,
                 max_cache: int = 100_000, max_cache_age: float = 60.0,
                 max_subscriptions: int = 100_000) -> None:
        """``max_cache``: bindings cached at most (the oldest go first);
        ``max_cache_age``: the longest one is served from the cache, seconds
        (whatever lifetime the LMs gave it: a change it missed heals then);
        ``max_subscriptions``: (prefix, client) pairs held at most."""
        if not upstream:
            raise ValueError("an LMp needs at least one upstream LMs")
        super().__init__(endpoint or Endpoint())
        self.upstream = list(upstream)
        self.max_cache = max_cache
        self.max_cache_age = max_cache_age
        # Insertion order is age order: eviction pops from the front.
        self.cache: dict[Prefix, _Cached] = {}
        self.clients = Subscriptions(max_subscriptions)
        self.counters: Counter[str] = Counter()
        self._inflight: dict[int, _Upstream] = {}
        self._query_for: dict[Prefix, int] = {}  # coalescing: prefix -> request id
        self._up_index = 0

    def _up(self) -> Addr:
        return self.upstream[self._up_index % len(self.upstream)]

    def on_timer(self, name: Hashable, now: float) -> None:
        pass

    def on_event(self, event: Event, now: float) -> None:
        if isinstance(event, MessageReceived):
            self._from_client_or_server(event, now)
            return
        pending = self._inflight.pop(event.request_id, None)
        if pending is None:
            return  # a push to a client was acknowledged, or gave up
        if pending.kind == "query" and pending.prefix is not None:
            self._query_for.pop(pending.prefix, None)
        if isinstance(event, ReplyReceived):
            reply = event.reply
            if isinstance(reply, m.LocationReply) and pending.prefix is not None:
                self._cache_put(pending.prefix, reply, now)
            for client in pending.waiting:
                self.endpoint.reply(client, reply, now)
        elif isinstance(event, NegativeReply):
            for client in pending.waiting:
                self.endpoint.reject(client, event.status.code, event.status.message, now,
                                     pending.prefix)
        else:
            assert isinstance(event, RequestTimedOut)
            self._up_index += 1  # try the next upstream server next time
            self.counters["upstream-timeout"] += 1
            for client in pending.waiting:
                self.endpoint.reject(client, Cause.PEER_UNREACHABLE,
                                     "LMs did not answer", now, pending.prefix)

    def _from_client_or_server(self, ev: MessageReceived, now: float) -> None:
        msg = ev.message
        if isinstance(msg, m.LocationQuery):
            hit = self.cache.get(msg.prefix)
            if hit is not None and hit.expires > now:
                self.counters["cache-hit"] += 1
                r = hit.reply
                left = max(1, int(hit.expires - now))
                self.endpoint.reply(ev, m.LocationReply(r.prefix, r.forwarding_address, left,
                                                        r.mn), now)
                return
            rid = self._query_for.get(msg.prefix)
            if rid is not None:
                self.counters["coalesced"] += 1
                self._inflight[rid].waiting.append(ev)
                return
            rid = self.endpoint.request(m.LocationQuery(msg.prefix), self._up(), now)
            self._inflight[rid] = _Upstream("query", [ev], msg.prefix)
            self._query_for[msg.prefix] = rid
        elif isinstance(msg, m.LocationUpdate):
            self.cache.pop(msg.prefix, None)
            relayed = m.LocationUpdate(msg.prefix, msg.forwarding_address, msg.lifetime,
                                       ev.sender or msg.origin, msg.mn, msg.flows)
            rid = self.endpoint.request(relayed, self._up(), now)
            self._inflight[rid] = _Upstream("update", [ev], msg.prefix)
        elif isinstance(msg, m.MnQuery):
            # Not cached: the MN's prefixes change with every move of it.
            rid = self.endpoint.request(msg, self._up(), now)
            self._inflight[rid] = _Upstream("query", [ev])
        elif isinstance(msg, m.Subscribe):
            life = msg.lifetime if msg.lifetime is not None else 600
            new = self.clients.add(msg.prefixes, ev.source, life, now)
            if new is None:
                self.counters["subscribe-refused-full"] += 1
                self.endpoint.reject(ev, Cause.RESOURCE_EXHAUSTED, "subscription table full", now)
                return
            if new:
                # One upstream subscription per prefix, for all clients.
                rid = self.endpoint.request(m.Subscribe(tuple(new)), self._up(), now)
                self._inflight[rid] = _Upstream("subscribe")
            self.endpoint.reply(ev, m.SubscribeAck(msg.prefixes), now)
        elif isinstance(msg, m.Unsubscribe):
            gone = self.clients.remove(msg.prefixes, ev.source)
            if gone:
                rid = self.endpoint.request(m.Unsubscribe(tuple(gone)), self._up(), now)
                self._inflight[rid] = _Upstream("unsubscribe")
            self.endpoint.reply(ev, m.UnsubscribeAck(msg.prefixes), now)
        elif isinstance(msg, m.LocationInform):
            if not any(same_address(ev.source, up) for up in self.upstream):
                # Only its LMs pushes to the proxy: a forged push would be
                # cached and served to every client.
                self.refuse(ev, "refused:LOCATION_INFORM:not-upstream", now)
                return
            self.endpoint.reply(ev, m.LocationInformAck(msg.prefix), now)
            self._fan_out(msg, now)
        elif ev.expects_reply:
            self.endpoint.reject(ev, Cause.UNSUPPORTED, "not an LMp request", now)

    def _fan_out(self, msg: m.LocationInform, now: float) -> None:
        for key in list(self.cache):
            if msg.prefix.covers(key):
                del self.cache[key]
        if msg.lifetime:
            self._cache_put(msg.prefix, m.LocationReply(
                msg.prefix, msg.forwarding_address, msg.lifetime, msg.mn), now)
        for client in self.clients.live(msg.prefix, now):
            self.counters["push"] += 1
            self.endpoint.request(msg, client, now)

    def _cache_put(self, prefix: Prefix, reply: m.LocationReply, now: float) -> None:
        """Cache a binding for at most :attr:`max_cache_age`, evicting the
        oldest entry when full."""
        self.cache.pop(prefix, None)
        if len(self.cache) >= self.max_cache:
            del self.cache[next(iter(self.cache))]
            self.counters["cache-evicted"] += 1
        self.cache[prefix] = _Cached(reply, now + min(reply.lifetime, self.max_cache_age))
