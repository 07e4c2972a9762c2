"""Reliable request/reply over datagrams, sans-IO.

An :class:`Endpoint` is one node's signalling socket as a state machine.
It never reads a clock or touches a socket: the driver feeds it datagrams
and timer ticks with ``now`` and drains what it wants to send, its next
deadline, and its events.

* Requests (messages whose type has a ``REPLY``) are retransmitted with
  exponential backoff until a reply, an ERROR, or the last attempt times out.
* Received requests are delivered once; a duplicate (same authenticated
  peer - or source address when unsigned - and sequence) is answered from
  the reply cache without re-executing, or dropped while the first copy is still being served.
* Messages without a reply type (FM:5-2 status) are sent once.
"""

from __future__ import annotations

import heapq
import secrets
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from ..wire.auth import Role, Security, Verdict
from ..wire.codec import Flags, Packet, decode
from ..wire.errors import WireError
from ..wire.messages import Error, Message, MsgType
from ..wire.types import Cause, Prefix, Status

Addr = tuple[str, int]
"""A (host, port) transport address."""

CACHE_SWEEP = 0.5
"""Seconds by which reply-cache expiry may lag, to batch it."""

_RESPONSE = Flags.RESPONSE.value
_RETRANSMIT = Flags.RETRANSMIT.value


@dataclass(frozen=True, slots=True)
class RetransmitPolicy:
    """When to retransmit a request and when to give up."""

    initial_rto: float = 0.05
    """Seconds before the first retransmission."""
    backoff: float = 2.0
    """Each retransmission waits this factor longer than the previous one."""
    max_rto: float = 1.0
    """Upper bound of one wait, seconds."""
    attempts: int = 5
    """Transmissions in total (first send included) before timing out."""

    def __post_init__(self) -> None:
        if self.initial_rto <= 0 or self.backoff < 1 or self.attempts < 1:
            raise ValueError("retransmit policy needs rto > 0, backoff >= 1, attempts >= 1")

    def total(self) -> float:
        """Seconds from first send to giving up."""
        rto, out = self.initial_rto, 0.0
        for _ in range(self.attempts):
            out += rto
            rto = min(rto * self.backoff, self.max_rto)
        return out


# -- Events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A new request or notification arrived (duplicates are not reported)."""

    message: Message
    source: Addr
    seq: int
    sender: str | None
    """Authenticated sender (key owner), None when unsigned."""
    roles: frozenset[Role] = frozenset()
    """The authenticated sender's roles (empty when unsigned)."""

    @property
    def expects_reply(self) -> bool:
        """True when the sender waits for a reply (answer or reject it)."""
        return self.message.REPLY is not None


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """The positive reply to one of our requests."""

    request_id: int
    request: Message
    reply: Message
    source: Addr


@dataclass(frozen=True, slots=True)
class NegativeReply:
    """An ERROR answered one of our requests."""

    request_id: int
    request: Message
    status: Status
    source: Addr


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """No answer after every retransmission."""

    request_id: int
    request: Message
    destination: Addr


Event = MessageReceived | ReplyReceived | NegativeReply | RequestTimedOut


@dataclass(slots=True)
class _Pending:
    message: Message
    dest: Addr
    data: bytes
    deadline: float
    rto: float
    sent: int
    policy: RetransmitPolicy


@dataclass(slots=True)
class _Cached:
    # The answer (None while the request is being served) and the bytes it
    # was last sent as: unsigned bytes are sent again as they are, signed
    # ones signed afresh - the same signed bytes twice are a replay to the
    # peer, which would count an honest duplicate answer as an attack.
    answer: Message | None
    data: bytes
    expires: float


@dataclass(slots=True)
class EndpointStats:
    """Counters every endpoint keeps; drops are keyed by reason."""

    sent: Counter[MsgType] = field(default_factory=Counter)
    received: Counter[MsgType] = field(default_factory=Counter)
    bytes_sent: Counter[MsgType] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    retransmissions: int = 0
    duplicates_answered: int = 0


class Endpoint:
    """One signalling endpoint: request/reply with retransmission and SM."""

    def __init__(
        self,
        *,
        security: Security | None = None,
        policy: RetransmitPolicy | None = None,
        reply_cache_ttl: float | None = None,
        reply_cache_size: int = 65536,
        initial_seq: int | None = None,
        local: Addr | None = None,
    ) -> None:
        """
        ``reply_cache_ttl`` defaults to twice the time a peer using the same
        policy keeps retransmitting, so late duplicates still find the reply.
        ``initial_seq`` defaults to a random value: a restarted process must
        not reuse the sequence numbers its peers still cache replies for.
        ``local`` is the address datagrams arrive on when the driver does not
        say (signed messages are verified against it).
        """
        self.security = security or Security()
        self.policy = policy or RetransmitPolicy()
        self.reply_cache_ttl = (
            reply_cache_ttl if reply_cache_ttl is not None else 2 * self.policy.total()
        )
        self.reply_cache_size = reply_cache_size
        self.stats = EndpointStats()
        if initial_seq is None:
            initial_seq = secrets.randbits(32)
        self._seq = initial_seq & 0xFFFFFFFF or 1
        self.local = local
        self._pending: dict[int, _Pending] = {}
        self._timers: list[tuple[float, int]] = []
        # An OrderedDict, not a dict: popping a plain dict from the front
        # leaves dummies that make every next(iter()) scan them (quadratic).
        # Keyed by the authenticated peer (its key owner) when signed, else by
        # its address: a peer's retransmission from another address is still
        # a duplicate, and no one else can answer or poison its entries.
        self._cache: OrderedDict[tuple[str | Addr, int], _Cached] = OrderedDict()
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[Event] = deque()

    # -- Commands --------------------------------------------------------------

    def request(
        self,
        message: Message,
        dest: Addr,
        now: float,
        policy: RetransmitPolicy | None = None,
    ) -> int:
        """Send ``message``; returns its request id (the sequence number).

        Messages that expect no reply are sent once and tracked no further.
        """
        seq = self._next_seq()
        data = self.security.encode(message, seq, 0, now, dest)
        self._send(data, dest, message)
        if message.REPLY is not None:
            pol = policy or self.policy
            self._pending[seq] = _Pending(
                message, dest, data, now + pol.initial_rto, pol.initial_rto, 1, pol
            )
            heapq.heappush(self._timers, (now + pol.initial_rto, seq))
        return seq

    def reply(self, event: MessageReceived, message: Message, now: float) -> None:
        """Answer a received request (and cache the answer for duplicates)."""
        data = self.security.encode(message, event.seq, _RESPONSE, now, event.source)
        key = (event.sender or event.source, event.seq)
        if event.message.IDEMPOTENT:
            # Served afresh if asked again: nothing kept past the answer
            # (on a busy LMs, a cache of every query was most of what the
            # garbage collector walked).
            self._cache.pop(key, None)
            self._send(data, event.source, message)
            return
        cached = self._cache.get(key)
        if cached is not None:
            cached.answer, cached.data = message, data
            cached.expires = now + self.reply_cache_ttl
            # Moved to the end so insertion order stays expiry order.
            self._cache.move_to_end(key)
        self._send(data, event.source, message)

    def reject(
        self,
        event: MessageReceived,
        cause: Cause,
        text: str,
        now: float,
        prefix: Prefix | None = None,
    ) -> None:
        """Answer a received request with an ERROR carrying ``cause``."""
        text = text.encode()[:255].decode(errors="ignore")
        self.reply(event, Error(Status(cause, text), prefix), now)

    def unanswered(self, event: MessageReceived) -> bool:
        """Whether ``event`` (a request) is still waiting for its answer."""
        cached = self._cache.get((event.sender or event.source, event.seq))
        return cached is not None and cached.answer is None

    def cancel(self, request_id: int) -> None:
        """Forget a pending request: no retransmission, no event."""
        self._pending.pop(request_id, None)

    # -- Inputs ----------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, source: Addr, now: float, local: Addr | None = None
    ) -> None:
        """Feed one datagram from ``source`` that arrived on ``local``
        (default: :attr:`local`); never raises on bad input (drops are counted)."""
        try:
            packet = decode(data)
        except WireError as exc:
            self.stats.drops[f"malformed:{exc.reason}"] += 1
            return
        verdict = self.security.check(
            data, packet, source[0], now, local if local is not None else self.local)
        if verdict.drop is not None:
            self.stats.drops[verdict.drop.value] += 1
            return
        self.stats.received[packet.message.TYPE] += 1
        if packet.flags & _RESPONSE:
            self._on_response(packet, source)
        else:
            self._on_request(packet, source, verdict, now)

    def handle_timer(self, now: float) -> None:
        """Retransmit what is due, time out what is exhausted, expire cache."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, seq = heapq.heappop(timers)
            p = self._pending.get(seq)
            if p is None or p.deadline != deadline:
                continue  # answered, cancelled, or rescheduled
            if p.sent >= p.policy.attempts:
                del self._pending[seq]
                self._events.append(RequestTimedOut(seq, p.message, p.dest))
                continue
            p.rto = min(p.rto * p.policy.backoff, p.policy.max_rto)
            p.deadline = now + p.rto
            p.sent += 1
            # Re-sign: a retransmission is a fresh message for replay checks.
            p.data = self.security.encode(p.message, seq, _RETRANSMIT, now, p.dest)
            self.stats.retransmissions += 1
            self._send(p.data, p.dest, p.message)
            heapq.heappush(timers, (p.deadline, seq))
        cache = self._cache
        while cache:
            entry = next(iter(cache.values()))
            if entry.expires > now:
                break
            cache.popitem(last=False)

    # -- Outputs ---------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """Drain the datagrams to send, in order."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        """Pop the next event, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` must run."""
        timers = self._timers
        while timers:
            deadline, seq = timers[0]
            p = self._pending.get(seq)
            if p is not None and p.deadline == deadline:
                break
            heapq.heappop(timers)
        first = timers[0][0] if timers else None
        if self._cache:
            # Expiring cached replies only frees memory, so it is batched:
            # one timer per CACHE_SWEEP seconds, not one per request.
            exp = next(iter(self._cache.values())).expires + CACHE_SWEEP
            first = exp if first is None else min(first, exp)
        return first

    @property
    def pending_count(self) -> int:
        """Requests awaiting an answer."""
        return len(self._pending)

    # -- Internals -------------------------------------------------------------

    def next_id(self) -> int:
        """The request id the next request will get: unique among this
        endpoint's for as long as peers cache replies (and across restarts,
        with the random ``initial_seq``) - a name for what it carries."""
        return self._seq

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFFFFFF or 1
        return seq

    def _send(self, data: bytes, dest: Addr, message: Message) -> None:
        mtype = message.TYPE
        self.stats.sent[mtype] += 1
        self.stats.bytes_sent[mtype] += len(data)
        self._out.append((data, dest))

    def _on_response(self, packet: Packet, source: Addr) -> None:
        p = self._pending.get(packet.seq)
        if p is None or p.dest != source:
            self.stats.drops["unexpected-reply"] += 1
            return
        msg = packet.message
        if isinstance(msg, Error):
            del self._pending[packet.seq]
            self._events.append(NegativeReply(packet.seq, p.message, msg.status, source))
        elif type(msg) is p.message.REPLY:
            del self._pending[packet.seq]
            self._events.append(ReplyReceived(packet.seq, p.message, msg, source))
        else:
            self.stats.drops["wrong-reply-type"] += 1

    def _on_request(self, packet: Packet, source: Addr, verdict: Verdict, now: float) -> None:
        msg = packet.message
        sender = verdict.owner
        if msg.REPLY is None:
            self._events.append(MessageReceived(msg, source, packet.seq, sender, verdict.roles))
            return
        key = (sender or source, packet.seq)
        cached = self._cache.get(key)
        if cached is not None:
            if cached.answer is None:
                self.stats.drops["duplicate-in-progress"] += 1
            else:
                self.stats.duplicates_answered += 1
                if self.security.send_key is not None:
                    cached.data = self.security.encode(
                        cached.answer, packet.seq, _RESPONSE, now, source)
                self._out.append((cached.data, source))
            return
        if len(self._cache) >= self.reply_cache_size:
            # Oldest entry first: insertion order is expiry order.
            self._cache.popitem(last=False)
            self.stats.drops["reply-cache-evicted"] += 1
        self._cache[key] = _Cached(None, b"", now + self.reply_cache_ttl)
        self._events.append(MessageReceived(msg, source, packet.seq, sender, verdict.roles))
