"""A BGP speaker for anchors: announce and withdraw anchored prefixes (draft 4.2).

:class:`BgpSession` is the session state machine of RFC 4271 section 8 for
one peer over one TCP connection, sans-IO like every core here: the driver
reports the connection and its bytes, asks for bytes to write and for the
next timer, and passes ``now``.  :class:`~.bgp_aio.BgpSpeaker` is that
driver on asyncio, reconnecting while the peer is away.

The speaker only originates routes (an anchor announces the prefixes it
anchors, with itself as next hop); what the peer sends is decoded, checked
and kept in an Adj-RIB-In so tools can show it, but never installed: the
routers' own daemons (BIRD in the emulator) install routes.

Announcements outlive a session: the Adj-RIB-Out is sent again whole each
time a session comes up, so a restarted peer relearns everything.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv6Address

from ..wire.types import Prefix
from . import bgpwire as w


class State(IntEnum):
    """Session states (RFC 4271 section 8.2.2; Connect/Active are the driver's)."""

    IDLE = 0
    OPEN_SENT = 3
    OPEN_CONFIRM = 4
    ESTABLISHED = 5


@dataclass(frozen=True, slots=True)
class BgpSettings:
    """One BGP session of an anchor."""

    local_as: int
    """This speaker's AS."""
    peer_as: int
    """The AS the peer must announce (its OPEN is refused otherwise)."""
    router_id: int
    """BGP identifier, non-zero 32-bit."""
    next_hop: IPv6Address
    """Next hop of every announced prefix (this anchor's address on the link)."""
    hold_time: int = 9
    """Proposed hold time, seconds; the session uses the smaller of both."""
    connect_retry: float = 1.0
    """Seconds between connection attempts while the peer is away."""
    open_hold: float = 240.0
    """How long to wait for the peer's OPEN (RFC 4271's suggested 4 minutes)."""


@dataclass(frozen=True, slots=True)
class SessionUp:
    """The session is Established."""

    peer_as: int
    hold_time: int


@dataclass(frozen=True, slots=True)
class SessionDown:
    """The session ended; ``notification`` is what was sent or received, if any."""

    reason: str
    notification: w.Notification | None = None


@dataclass(frozen=True, slots=True)
class RoutesReceived:
    """The peer's UPDATE, applied to the Adj-RIB-In."""

    announced: tuple[Prefix, ...]
    withdrawn: tuple[Prefix, ...]


BgpEvent = SessionUp | SessionDown | RoutesReceived


@dataclass(slots=True)
class BgpStats:
    """Counts by message type, and errors by reason."""

    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class BgpSession:
    """One peer's BGP session (sans-IO)."""

    def __init__(self, settings: BgpSettings) -> None:
        if not 0 < settings.router_id < 1 << 32:
            raise ValueError("router_id must be a non-zero 32-bit number")
        if settings.hold_time and settings.hold_time < 3:
            raise ValueError("hold_time must be 0 or at least 3 seconds")
        self.s = settings
        self.state = State.IDLE
        self.rib_out: dict[Prefix, None] = {}
        """Prefixes announced (ordered, so re-announcement keeps the order)."""
        self.rib_in: dict[Prefix, tuple[IPv6Address | None, tuple[int, ...]]] = {}
        """Prefixes the peer announced: next hop and AS path."""
        self.stats = BgpStats()
        self.hold_time = 0
        self.close_requested = False
        """The driver must close the connection once the output is written."""
        self._out = bytearray()
        self._in = bytearray()
        self._events: deque[BgpEvent] = deque()
        self._hold_deadline: float | None = None
        self._keepalive_at: float | None = None

    # -- Driver inputs ------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        """A TCP connection to the peer is up: send OPEN."""
        self._in.clear()
        self._out.clear()
        self.close_requested = False
        caps = (w.mp_capability(), (w.Cap.ROUTE_REFRESH, b""),
                (w.Cap.FOUR_OCTET_AS, self.s.local_as.to_bytes(4, "big")))
        self._send(w.Open(self.s.local_as, self.s.hold_time, self.s.router_id, caps))
        self.state = State.OPEN_SENT
        self._hold_deadline = now + self.s.open_hold
        self._keepalive_at = None

    def data_received(self, data: bytes, now: float) -> None:
        """Bytes from the peer."""
        if self.state is State.IDLE:
            return
        self._in += data
        try:
            for kind, body in w.split(self._in):
                msg = w.DECODERS[kind](body)
                self.stats.received[w.MsgType(kind).name] += 1
                self._on_message(msg, now)
                if self.close_requested:
                    return  # the session ended: the rest of the stream is moot
        except w.BgpError as exc:
            self.stats.errors[str(exc).split(":")[0]] += 1
            self._fail(w.Notification(exc.code, exc.subcode, exc.data), str(exc))

    def connection_lost(self, now: float) -> None:
        """The TCP connection closed (or failed)."""
        if self.state is not State.IDLE:
            self._down("connection lost")

    def handle_timer(self, now: float) -> None:
        """Run what is due at ``now`` (hold expiry, keepalives)."""
        if self.state is State.IDLE:
            return
        if self._hold_deadline is not None and now >= self._hold_deadline:
            self._fail(w.Notification(w.ErrorCode.HOLD_TIMER_EXPIRED), "hold timer expired")
            return
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._send(w.Keepalive())
            self._keepalive_at = now + self.hold_time / 3

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next, or None."""
        times = [t for t in (self._hold_deadline, self._keepalive_at) if t is not None]
        return min(times) if times else None

    def data_to_send(self) -> bytes:
        """Bytes to write to the connection (taken)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> BgpEvent | None:
        """The next upward event, or None."""
        return self._events.popleft() if self._events else None

    # -- Application inputs ---------------------------------------------------------------

    def change(self, withdraw: Iterable[Prefix], announce: Iterable[Prefix],
               now: float) -> None:
        """Withdraw and announce prefixes: sent at once when Established, else
        when the session next comes up.  Packed into as few UPDATEs as fit."""
        gone = [p for p in withdraw if p in self.rib_out]
        for p in gone:
            del self.rib_out[p]
        new = [p for p in dict.fromkeys(announce) if p not in self.rib_out]
        for p in new:
            self.rib_out[p] = None
        if self.state is State.ESTABLISHED:
            self._send_routes(gone, new)

    def close(self, now: float) -> None:
        """Stop the session politely (NOTIFICATION Cease)."""
        if self.state is not State.IDLE:
            self._fail(w.Notification(w.ErrorCode.CEASE, 2), "administrative shutdown")

    # -- Internals -------------------------------------------------------------------------

    def _on_message(self, msg: w.Message, now: float) -> None:
        if isinstance(msg, w.Notification):
            self._down(f"peer sent NOTIFICATION {msg.code}/{msg.subcode}", msg)
            return
        if self.state is State.OPEN_SENT:
            if not isinstance(msg, w.Open):
                self._fail(w.Notification(w.ErrorCode.FSM, 1), "expected OPEN")
                return
            self._on_open(msg, now)
            return
        if isinstance(msg, w.Open):
            self._fail(w.Notification(w.ErrorCode.FSM, 2 if self.state is State.OPEN_CONFIRM
                                      else 3), "unexpected OPEN")
            return
        if self.state is State.OPEN_CONFIRM:
            if not isinstance(msg, w.Keepalive):
                self._fail(w.Notification(w.ErrorCode.FSM, 2), "expected KEEPALIVE")
                return
            self.state = State.ESTABLISHED
            self._refresh_hold(now)
            self._events.append(SessionUp(self.s.peer_as, self.hold_time))
            self._send_routes((), list(self.rib_out))
            return
        # Established.
        self._refresh_hold(now)
        if isinstance(msg, w.Update):
            # A path through our own AS is a loop (RFC 4271 9.1.2): not a
            # route, and it replaces (withdraws) the one we had for it.
            looped = msg.announced if self.s.local_as in msg.as_path else ()
            announced = () if looped else msg.announced
            for p in (*msg.withdrawn, *looped):
                self.rib_in.pop(p, None)
            for p in announced:
                self.rib_in[p] = (msg.next_hop, msg.as_path)
            self._events.append(RoutesReceived(announced, (*msg.withdrawn, *looped)))
        elif isinstance(msg, w.RouteRefresh) and (msg.afi, msg.safi) == (w.AFI_IPV6,
                                                                         w.SAFI_UNICAST):
            self._send_routes((), list(self.rib_out))

    def _on_open(self, msg: w.Open, now: float) -> None:
        if msg.asn != self.s.peer_as:
            self._fail(w.Notification(w.ErrorCode.OPEN, w.OpenSub.BAD_PEER_AS),
                       f"peer AS {msg.asn}, expected {self.s.peer_as}")
            return
        if msg.hold_time in (1, 2):
            self._fail(w.Notification(w.ErrorCode.OPEN, w.OpenSub.UNACCEPTABLE_HOLD_TIME),
                       f"hold time {msg.hold_time}")
            return
        if msg.router_id == 0 or (msg.router_id == self.s.router_id
                                  and msg.asn == self.s.local_as):
            self._fail(w.Notification(w.ErrorCode.OPEN, w.OpenSub.BAD_BGP_ID),
                       f"BGP identifier {msg.router_id}")
            return
        if not msg.has(w.Cap.MULTIPROTOCOL, w.mp_capability()[1]):
            # Without it the peer would take our MP_REACH_NLRI as an error.
            self._fail(w.Notification(w.ErrorCode.OPEN, w.OpenSub.UNSUPPORTED_CAPABILITY,
                                      bytes((w.Cap.MULTIPROTOCOL, 4)) + w.mp_capability()[1]),
                       "peer lacks IPv6 unicast")
            return
        self.hold_time = min(msg.hold_time, self.s.hold_time)
        self._send(w.Keepalive())
        self.state = State.OPEN_CONFIRM
        self._refresh_hold(now)

    def _refresh_hold(self, now: float) -> None:
        if self.hold_time:
            self._hold_deadline = now + self.hold_time
            if self._keepalive_at is None:
                self._keepalive_at = now + self.hold_time / 3
        else:
            self._hold_deadline = self._keepalive_at = None

    def _send_routes(self, withdraw: Sequence[Prefix], announce: Sequence[Prefix]) -> None:
        ibgp = self.s.local_as == self.s.peer_as
        path = () if ibgp else (self.s.local_as,)
        for u in w.updates_for(withdraw, announce, self.s.next_hop, path,
                               100 if ibgp else None):
            self._send(u)

    def _send(self, msg: w.Message) -> None:
        self._out += w.encode(msg)
        self.stats.sent[msg.TYPE.name] += 1

    def _fail(self, notification: w.Notification, reason: str) -> None:
        self._send(notification)
        self._down(reason, notification)

    def _down(self, reason: str, notification: w.Notification | None = None) -> None:
        self.state = State.IDLE
        self.close_requested = True
        self.rib_in.clear()
        self._hold_deadline = self._keepalive_at = None
        self._events.append(SessionDown(reason, notification))
