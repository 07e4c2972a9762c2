"""LM clients over an LMs pool (LM:2, Fig 1a): failover and subscriptions.

A pool member relays what another member is primary for, so a client may
ask any member.  :class:`PoolRequests` sends each request to the member in
use and on to the next when one stays silent; :class:`PoolSubscription`
keeps a subscriber (LM:1-3) informed across a member's death.  Both run
over the client's own endpoint (sans-IO).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address

from ..transport.policy import same_address
from ..transport.reliable import (
    Addr,
    Endpoint,
    NegativeReply,
    ReplyReceived,
    RequestTimedOut,
    RetransmitPolicy,
)
from ..wire import messages as m
from ..wire.types import Prefix


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


FAILOVER_POLICY = RetransmitPolicy(attempts=3)
"""A member is given up for the next after 0.35 s (three sends, 50 ms
apart, then 100 ms, then 200 ms) rather than the 1.55 s of a request with
nowhere else to go: an anchor asks at a move, while the old router holds
the MN's packets (2 s by default), and a member killed just before the
move cost the whole hold (2313 of 6000 lost, ``fault-pool``).  At 30%
loss both ways about one request in eight goes on to the next member,
which answers as well."""


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

    def __init__(self, endpoint: Endpoint, servers: Sequence[Addr],
                 failover: RetransmitPolicy = FAILOVER_POLICY) -> None:
        self.endpoint = endpoint
        self.pool = ServerPool(servers)
        self.failover = failover
        """Retransmissions at a member with others left to try (the last
        member tried gets the endpoint's own, longer, policy)."""
        # request id -> (it, members tried before, the member it went to)
        self._sent: dict[int, tuple[m.Message, int, Addr]] = {}

    def request(self, message: m.Message, now: float) -> int:
        """Send ``message`` to the member in use; its request id."""
        return self._send(message, 0, now)

    def _send(self, message: m.Message, tried: int, now: float) -> int:
        server = self.pool.pick(tried)
        last = tried + 1 >= len(self.pool)
        rid = self.endpoint.request(message, server, now, None if last else self.failover)
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


@dataclass(frozen=True, slots=True)
class Push:
    """An LM:1-3 push to believe (lifetime 0: the binding is gone)."""

    prefix: Prefix
    forwarding_address: IPv6Address
    lifetime: int


MAX_KEPT = 100_000
"""Pushes from members not in use kept at most between two renewals (one
per prefix; the members are trusted, but a watch as wide as a /32 is not a
bound)."""


class PoolSubscription:
    """A subscriber's LM:1-3 across a pool, without a gap when a member dies.

    A subscription lives at the member that took it, and a member that dies
    pushes nothing more.  Failing over when the subscriber next renews
    would lose every push of the time in between (a move in it is learnt
    only at its anchor's next refresh).  So the subscriber subscribes at
    every member: each pushes what the pool's primaries fan out to it.  It
    believes the member in use only - two members' copies of the pushes of
    two quick moves could arrive crossed and flap the route - and keeps the
    others' latest push per prefix until the member in use is heard again
    (its renewal answered: it delivered its own).  When the member in use
    changes, the new one's kept pushes are the ones missed, and are
    believed then (:meth:`switched`).
    """

    def __init__(self, requests: PoolRequests, prefixes: Sequence[Prefix],
                 lifetime: int) -> None:
        self.requests = requests
        self.prefixes = tuple(prefixes)
        self.lifetime = lifetime
        self._renewals: set[int] = set()  # at the member in use (failing over)
        self._others: set[int] = set()  # at every other member
        self._kept: dict[Prefix, tuple[Addr, Push]] = {}
        self.dropped = 0
        """Pushes not kept: :data:`MAX_KEPT` were kept already."""

    def renew(self, now: float) -> None:
        """Subscribe (again) at every member."""
        message = m.Subscribe(self.prefixes, self.lifetime)
        self._renewals.add(self.requests.request(message, now))
        pool = self.requests.pool
        for member in pool.servers:
            if member != pool.current:
                self._others.add(self.requests.endpoint.request(message, member, now))

    def owns(self, request_id: int) -> bool:
        """Whether the answer to ``request_id`` is this subscription's
        (taken by :meth:`answered`)."""
        return request_id in self._renewals or request_id in self._others

    def answered(self, event: ReplyReceived | NegativeReply | RequestTimedOut,
                 again: int | None) -> None:
        """A subscription's answer or timeout (``again``: the id it was sent
        again under, to the next member, if it was)."""
        rid = event.request_id
        if rid in self._others:
            self._others.discard(rid)
            return
        self._renewals.discard(rid)
        if again is not None:
            self._renewals.add(again)
        elif isinstance(event, ReplyReceived):
            # The member in use answered: it has delivered what it pushed
            # before, so the others' copies are not needed.
            self._kept.clear()

    def pushed(self, source: Addr, push: Push) -> Push | None:
        """A push from a member: the one to believe now, or None (kept, or
        past :data:`MAX_KEPT` dropped - counted in :attr:`dropped`)."""
        if same_address(source, self.requests.pool.current):
            self._kept.pop(push.prefix, None)
            return push
        self._kept.pop(push.prefix, None)  # the latest goes last
        if len(self._kept) >= MAX_KEPT:
            self.dropped += 1
            return None
        self._kept[push.prefix] = (source, push)
        return None

    def switched(self) -> list[Push]:
        """The member in use changed: its pushes kept meanwhile, oldest first."""
        current = self.requests.pool.current
        out = [p for src, p in self._kept.values() if same_address(src, current)]
        self._kept.clear()
        return out
