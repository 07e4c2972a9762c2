"""LMc: the location client (sans-IO core + asyncio API).

The core keeps a cache of answers honouring their lifetimes; LM:1-3
pushes (for prefixes it subscribed to) update or invalidate it.  Requests
go to the first configured server and fail over to the next one when a
server does not answer, so a client may use any member of an LMs pool.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address

from ..transport.policy import LMC_SENDERS
from ..transport.reliable import (
    Addr,
    Endpoint,
    Event,
    MessageReceived,
    NegativeReply,
    ReplyReceived,
)
from ..transport.service import ServiceCore
from ..wire import messages as m
from ..wire.ie import INFINITE_LIFETIME
from ..wire.types import Cause, Prefix
from .pool import PoolRequests

# -- Events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    """An LM:1-2 answer: where packets for ``prefix`` are forwarded."""

    prefix: Prefix
    """The binding's prefix (may cover the prefix asked about)."""
    forwarding_address: IPv6Address
    """FM-DP/DPA/DPN address."""
    lifetime: int
    """Seconds the answer stays valid."""


@dataclass(frozen=True, slots=True)
class Done:
    """A request of the client finished: ``result`` or ``cause``."""

    token: int
    result: Location | m.Message | None
    cause: Cause = Cause.OK
    text: str = ""


@dataclass(frozen=True, slots=True)
class Pushed:
    """An LM:1-3 push arrived (lifetime 0: the binding is gone)."""

    prefix: Prefix
    forwarding_address: IPv6Address
    lifetime: int


LmcEvent = Done | Pushed


@dataclass(slots=True)
class _Op:
    token: int
    message: m.Message


@dataclass(slots=True)
class _Cached:
    location: Location
    expires: float


class LmcCore(ServiceCore):
    """Location client core; results come out as events (:meth:`drain`)."""

    SENDERS = LMC_SENDERS

    def __init__(self, servers: Sequence[Addr], endpoint: Endpoint | None = None) -> None:
        super().__init__(endpoint or Endpoint())
        self.requests = PoolRequests(self.endpoint, servers)
        self.cache: dict[Prefix, _Cached] = {}
        self.cache_hits = 0
        self._ops: dict[int, _Op] = {}
        self._tokens = itertools.count(1)
        self._out: list[LmcEvent] = []

    # -- Commands -----------------------------------------------------------------

    def query(self, prefix: Prefix, now: float, use_cache: bool = True) -> int:
        """LM:1-1; a fresh cached answer is returned without asking."""
        token = next(self._tokens)
        if use_cache:
            hit = self.cache.get(prefix)
            if hit is not None and hit.expires > now:
                self.cache_hits += 1
                loc = hit.location
                self._out.append(Done(token, Location(
                    loc.prefix, loc.forwarding_address, max(1, int(hit.expires - now)))))
                return token
        self._send(_Op(token, m.LocationQuery(prefix)), now)
        return token

    def update(self, prefix: Prefix, address: IPv6Address, lifetime: int, now: float) -> int:
        """LM:1-4 (lifetime 0 deletes)."""
        token = next(self._tokens)
        self.cache.pop(prefix, None)
        self._send(_Op(token, m.LocationUpdate(prefix, address, lifetime)), now)
        return token

    def subscribe(self, prefixes: Sequence[Prefix], now: float,
                  lifetime: int | None = None) -> int:
        """Ask for LM:1-3 pushes about ``prefixes``."""
        token = next(self._tokens)
        self._send(_Op(token, m.Subscribe(tuple(prefixes), lifetime)), now)
        return token

    def unsubscribe(self, prefixes: Sequence[Prefix], now: float) -> int:
        """Stop pushes about ``prefixes``."""
        token = next(self._tokens)
        self._send(_Op(token, m.Unsubscribe(tuple(prefixes))), now)
        return token

    def drain(self) -> list[LmcEvent]:
        """Take the finished requests and pushes."""
        out, self._out = self._out, []
        return out

    # -- Internals ------------------------------------------------------------------

    def _send(self, op: _Op, now: float) -> None:
        self._ops[self.requests.request(op.message, now)] = op

    def on_event(self, event: Event, now: float) -> None:
        if isinstance(event, MessageReceived):
            msg = event.message
            if isinstance(msg, m.LocationInform):
                self.endpoint.reply(event, m.LocationInformAck(msg.prefix), now)
                self._apply_push(msg, now)
            elif event.expects_reply:
                self.endpoint.reject(event, Cause.UNSUPPORTED, "LMc", now)
            return
        op = self._ops.pop(event.request_id, None)
        if op is None:
            return
        again = self.requests.outcome(event, now).again
        if again is not None:
            self._ops[again] = op  # failed over to the next server
            return
        if isinstance(event, ReplyReceived):
            reply = event.reply
            if isinstance(reply, m.LocationReply):
                loc = Location(reply.prefix, reply.forwarding_address, reply.lifetime)
                if reply.lifetime != INFINITE_LIFETIME:
                    expires = now + reply.lifetime
                else:
                    expires = float("inf")
                assert isinstance(op.message, m.LocationQuery)
                self.cache[op.message.prefix] = _Cached(loc, expires)
                self._out.append(Done(op.token, loc))
            else:
                self._out.append(Done(op.token, reply))
        elif isinstance(event, NegativeReply):
            self._out.append(Done(op.token, None, event.status.code, event.status.message))
        else:
            self._out.append(Done(op.token, None, Cause.PEER_UNREACHABLE,
                                  "no server answered"))

    def _apply_push(self, msg: m.LocationInform, now: float) -> None:
        for key, cached in list(self.cache.items()):
            if msg.prefix.covers(key) or cached.location.prefix == msg.prefix:
                if msg.lifetime == 0:
                    del self.cache[key]
                else:
                    self.cache[key] = _Cached(
                        Location(msg.prefix, msg.forwarding_address, msg.lifetime),
                        now + msg.lifetime,
                    )
        self._out.append(Pushed(msg.prefix, msg.forwarding_address, msg.lifetime))

    def on_timer(self, name: Hashable, now: float) -> None:
        pass


