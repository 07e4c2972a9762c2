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

from ..transport.policy import LMC_SENDERS, same_address
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
from ..wire.ie import INFINITE_LIFETIME
from ..wire.types import Cause, Prefix

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


class ServerPool:
    """The LMs pool members a client may ask, and the one it asks now.

    A request goes to the member in use; one that times out goes on to the
    next member (a pool member relays what another is primary for, so any
    member will do).  The first member that answers after a failover is
    the one asked from then on: a dead member costs one timeout, not one
    per request.  Shared by the LMc core and the anchor agent's LM client.
    """

    def __init__(self, servers: Sequence[Addr]) -> None:
        if not servers:
            raise ValueError("an LM client needs at least one server")
        self.servers = list(servers)
        self._current = 0

    @property
    def current(self) -> Addr:
        """The member asked first."""
        return self.servers[self._current]

    def pick(self, tried: int) -> Addr:
        """The member to ask after ``tried`` of them failed to answer."""
        return self.servers[(self._current + tried) % len(self.servers)]

    def answered(self, server: Addr) -> bool:
        """``server`` answered: ask it first from now on (the member in use
        may have changed since the request went out).  Whether that changed
        the member in use."""
        i = self.servers.index(server)
        if i == self._current:
            return False
        self._current = i
        return True

    def __contains__(self, source: object) -> bool:
        """Whether ``source`` (an address, port included) is a member."""
        return isinstance(source, tuple) and any(
            same_address(source, s) for s in self.servers)

    def __len__(self) -> int:
        return len(self.servers)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an answer (or a timeout) to a pool request means for its sender."""

    again: int | None = None
    """The request id it was sent again under (to the next member), if it was."""
    switched: bool = False
    """The member in use changed (subscriptions lived at the old one)."""


class PoolRequests:
    """Requests to a pool's member in use, each sent on to the next member
    when one times out: the failover of every LM client (the LMc core, the
    anchor agent's), over the sender's own endpoint."""

    def __init__(self, endpoint: Endpoint, servers: Sequence[Addr]) -> None:
        self.endpoint = endpoint
        self.pool = ServerPool(servers)
        # request id -> (it, members tried before, the member it went to)
        self._sent: dict[int, tuple[m.Message, int, Addr]] = {}

    def request(self, message: m.Message, now: float) -> int:
        """Send ``message`` to the member in use; its request id."""
        return self._send(message, 0, now)

    def _send(self, message: m.Message, tried: int, now: float) -> int:
        server = self.pool.pick(tried)
        rid = self.endpoint.request(message, server, now)
        self._sent[rid] = (message, tried, server)
        return rid

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._sent

    def outcome(self, event: ReplyReceived | NegativeReply | RequestTimedOut,
                now: float) -> Outcome:
        """Take the answer to one of our requests.

        A timeout with members left untried sends it again to the next
        (the caller moves what waited on the old id to ``again``); otherwise
        the event is the request's outcome, for the caller to handle.
        """
        message, tried, server = self._sent.pop(event.request_id)
        if isinstance(event, RequestTimedOut):
            if tried + 1 < len(self.pool):
                return Outcome(again=self._send(message, tried + 1, now))
            return Outcome()
        return Outcome(switched=self.pool.answered(server))

    def is_member(self, source: Addr) -> bool:
        """Whether ``source`` is one of the pool's members (pushes are
        believed from them only)."""
        return source in self.pool


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


