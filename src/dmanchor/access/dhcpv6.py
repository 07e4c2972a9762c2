"""DHCPv6 prefix delegation for the access routers (RFC 8415), sans-IO.

The codec covers what a requesting router uses: Solicit, Advertise,
Request, Renew, Rebind, Reply and Release with Client/Server Identifier,
IA_PD carrying IA Prefix options (a prefix hint when soliciting), Rapid
Commit, Elapsed Time, Preference and Status Code.  Unknown options are kept
as raw bytes.  Malformed input raises only :class:`DhcpError`.

:class:`PdClient` is the requesting router's state machine (draft 4.2.1:
the new router asks for the MN's previous prefix as a hint; the previous
one releases it).  Like every core it takes ``now``, never reads a clock,
and leaves sockets to a driver: datagrams go to ``ALL_SERVERS`` (the
driver adds the link) or to the server's source address.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from ..wire.types import Prefix

ALL_SERVERS = ("ff02::1:2", 547)
"""All_DHCP_Relay_Agents_and_Servers and the server port."""
CLIENT_PORT = 546


class DhcpError(ValueError):
    """A malformed DHCPv6 message."""


class MsgType(IntEnum):
    """DHCPv6 message types (RFC 8415 section 7.3)."""

    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9


class Opt(IntEnum):
    """The option codes this implementation understands."""

    CLIENTID = 1
    SERVERID = 2
    ORO = 6
    PREFERENCE = 7
    ELAPSED_TIME = 8
    STATUS_CODE = 13
    RAPID_COMMIT = 14
    IA_PD = 25
    IAPREFIX = 26


class StatusCode(IntEnum):
    """Status codes (RFC 8415 section 21.13)."""

    SUCCESS = 0
    UNSPEC_FAIL = 1
    NO_ADDRS_AVAIL = 2
    NO_BINDING = 3
    NOT_ON_LINK = 4
    USE_MULTICAST = 5
    NO_PREFIX_AVAIL = 6


INFINITY = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class IaPrefix:
    """An IA Prefix option: a delegated prefix (or a hint) and its lifetimes."""

    prefix: Prefix
    preferred: int = 0
    valid: int = 0
    status: tuple[int, str] | None = None


@dataclass(frozen=True, slots=True)
class IaPd:
    """An IA_PD option: an identity association for prefix delegation."""

    iaid: int
    t1: int = 0
    t2: int = 0
    prefixes: tuple[IaPrefix, ...] = ()
    status: tuple[int, str] | None = None


@dataclass(frozen=True, slots=True)
class Dhcp6Message:
    """One client/server message."""

    msg_type: MsgType
    xid: int
    """Transaction id, 24 bits."""
    client_id: bytes | None = None
    server_id: bytes | None = None
    ia_pd: tuple[IaPd, ...] = ()
    rapid_commit: bool = False
    elapsed: int | None = None
    """Elapsed Time, hundredths of a second."""
    preference: int | None = None
    status: tuple[int, str] | None = None
    oro: tuple[int, ...] = ()
    other: tuple[tuple[int, bytes], ...] = ()
    """Options not interpreted here, kept in order."""


def _opt(code: int, body: bytes) -> bytes:
    return struct.pack("!HH", code, len(body)) + body


def _status(code: int, text: str) -> bytes:
    return _opt(Opt.STATUS_CODE, struct.pack("!H", code) + text.encode())


def encode(m: Dhcp6Message) -> bytes:
    """Message bytes; options in a fixed order."""
    if not 0 <= m.xid < 1 << 24:
        raise DhcpError(f"transaction id {m.xid} is not 24 bits")
    out = [struct.pack("!I", (int(m.msg_type) << 24) | m.xid)]
    if m.client_id is not None:
        out.append(_opt(Opt.CLIENTID, m.client_id))
    if m.server_id is not None:
        out.append(_opt(Opt.SERVERID, m.server_id))
    if m.elapsed is not None:
        out.append(_opt(Opt.ELAPSED_TIME, struct.pack("!H", min(m.elapsed, 0xFFFF))))
    if m.rapid_commit:
        out.append(_opt(Opt.RAPID_COMMIT, b""))
    if m.preference is not None:
        out.append(_opt(Opt.PREFERENCE, bytes((m.preference,))))
    if m.oro:
        out.append(_opt(Opt.ORO, b"".join(struct.pack("!H", c) for c in m.oro)))
    for ia in m.ia_pd:
        sub = []
        for p in ia.prefixes:
            inner = _status(*p.status) if p.status is not None else b""
            sub.append(_opt(Opt.IAPREFIX, struct.pack(
                "!IIB16s", p.preferred, p.valid, p.prefix.length,
                p.prefix.network.to_bytes(16, "big")) + inner))
        if ia.status is not None:
            sub.append(_status(*ia.status))
        out.append(_opt(Opt.IA_PD, struct.pack("!III", ia.iaid, ia.t1, ia.t2) + b"".join(sub)))
    if m.status is not None:
        out.append(_status(*m.status))
    for code, body in m.other:
        out.append(_opt(code, body))
    return b"".join(out)


def _options(data: bytes, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
    while pos < end:
        if end - pos < 4:
            raise DhcpError("truncated option header")
        code, ln = struct.unpack_from("!HH", data, pos)
        pos += 4
        if pos + ln > end:
            raise DhcpError(f"option {code} longer than the message")
        yield code, data[pos : pos + ln]
        pos += ln


def _decode_status(body: bytes) -> tuple[int, str]:
    if len(body) < 2:
        raise DhcpError("status code too short")
    try:
        return struct.unpack_from("!H", body)[0], body[2:].decode("utf-8", "replace")
    except struct.error as exc:  # pragma: no cover - guarded above
        raise DhcpError("status code") from exc


def _decode_ia_pd(body: bytes) -> IaPd:
    if len(body) < 12:
        raise DhcpError("IA_PD too short")
    iaid, t1, t2 = struct.unpack_from("!III", body)
    prefixes = []
    status = None
    for code, sub in _options(body, 12, len(body)):
        if code == Opt.IAPREFIX:
            if len(sub) < 25:
                raise DhcpError("IA Prefix too short")
            pref, valid, plen, raw = struct.unpack_from("!IIB16s", sub)
            if plen > 128:
                raise DhcpError(f"prefix length {plen}")
            network = int.from_bytes(raw, "big")
            mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
            pstatus = None
            for c2, s2 in _options(sub, 25, len(sub)):
                if c2 == Opt.STATUS_CODE:
                    pstatus = _decode_status(s2)
            prefixes.append(IaPrefix(Prefix(network & mask, plen), pref, valid, pstatus))
        elif code == Opt.STATUS_CODE:
            status = _decode_status(sub)
    return IaPd(iaid, t1, t2, tuple(prefixes), status)


def decode(data: bytes) -> Dhcp6Message:
    """Decode a client/server message; raises only :class:`DhcpError`."""
    if len(data) < 4:
        raise DhcpError("shorter than a header")
    head = struct.unpack_from("!I", data)[0]
    try:
        mtype = MsgType(head >> 24)
    except ValueError as exc:
        raise DhcpError(f"message type {head >> 24}") from exc
    fields: dict[str, object] = {}
    ias: list[IaPd] = []
    oro: list[int] = []
    other: list[tuple[int, bytes]] = []
    for code, body in _options(data, 4, len(data)):
        if code == Opt.CLIENTID:
            fields["client_id"] = body
        elif code == Opt.SERVERID:
            fields["server_id"] = body
        elif code == Opt.IA_PD:
            ias.append(_decode_ia_pd(body))
        elif code == Opt.RAPID_COMMIT:
            fields["rapid_commit"] = True
        elif code == Opt.ELAPSED_TIME:
            if len(body) != 2:
                raise DhcpError("elapsed time must be 2 bytes")
            fields["elapsed"] = struct.unpack("!H", body)[0]
        elif code == Opt.PREFERENCE:
            if len(body) != 1:
                raise DhcpError("preference must be 1 byte")
            fields["preference"] = body[0]
        elif code == Opt.STATUS_CODE:
            fields["status"] = _decode_status(body)
        elif code == Opt.ORO:
            if len(body) % 2:
                raise DhcpError("option request of odd length")
            oro.extend(struct.unpack(f"!{len(body) // 2}H", body))
        else:
            other.append((code, body))
    return Dhcp6Message(mtype, head & 0xFFFFFF, ia_pd=tuple(ias), oro=tuple(oro),
                        other=tuple(other), **fields)  # type: ignore[arg-type]


def _status_text(status: tuple[int, str] | None) -> str:
    if status is None:
        return "no prefix in the reply"
    code, text = status
    known = {s.value: s.name for s in StatusCode}
    name = known.get(code, str(code))
    return f"{name}: {text}" if text else name


def duid_ll(mac: bytes) -> bytes:
    """DUID-LL (type 3) from an Ethernet address."""
    if len(mac) != 6:
        raise ValueError("a MAC address is 6 bytes")
    return struct.pack("!HH", 3, 1) + mac


# -- Client state machine ----------------------------------------------------------


class State(IntEnum):
    """Requesting-router states."""

    IDLE = 0
    SOLICITING = 1
    REQUESTING = 2
    BOUND = 3
    RENEWING = 4
    REBINDING = 5
    RELEASING = 6


@dataclass(frozen=True, slots=True)
class Bound:
    """A prefix is delegated (or renewed)."""

    prefix: Prefix
    preferred: int
    valid: int
    renewed: bool = False


@dataclass(frozen=True, slots=True)
class Released:
    """The server confirmed the release."""

    prefix: Prefix


@dataclass(frozen=True, slots=True)
class Failed:
    """No prefix: a status from the server, or no answer."""

    reason: str


@dataclass(frozen=True, slots=True)
class Expired:
    """The lease's valid lifetime ended without renewal."""

    prefix: Prefix


PdEvent = Bound | Released | Failed | Expired


@dataclass(slots=True)
class _Lease:
    prefix: Prefix
    server_id: bytes
    server: tuple[str, int]
    t1: float
    t2: float
    expires: float
    preferred: int
    valid: int


@dataclass(slots=True)
class PdClient:
    """One IA_PD of a requesting router.

    ``initial_rt``/``max_rc`` shorten RFC 8415's retransmission (1 s, 10 or 4
    tries) where a test or an emulator wants moves to fail fast.
    """

    duid: bytes
    iaid: int = 1
    rapid_commit: bool = True
    initial_rt: float = 1.0
    max_rc: int = 5
    xid_seed: int = 0x1D00
    state: State = State.IDLE
    lease: _Lease | None = None
    _out: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    _events: deque[PdEvent] = field(default_factory=deque)
    _xid: int = 0
    _sent: Dhcp6Message | None = None
    _dest: tuple[str, int] = ALL_SERVERS
    _started: float = 0.0
    _rt: float = 0.0
    _tries: int = 0
    _deadline: float | None = None
    _only: Prefix | None = None  # request(only_hint=True): the hint or nothing

    @property
    def xid(self) -> int | None:
        """The transaction under way (None when none is)."""
        return None if self._sent is None else self._sent.xid

    # -- Commands ------------------------------------------------------------------

    def request(self, now: float, hint: Prefix | None = None, *,
                only_hint: bool = False) -> None:
        """Start soliciting a prefix (``hint``: the one we would like).

        ``only_hint``: take the hint or nothing.  The Solicit then asks for
        no rapid commit, and an Advertise of another prefix ends the
        exchange (a :class:`Failed` naming it) without committing a lease
        the server would only have to take back.
        """
        self._only = hint if only_hint else None
        ia = IaPd(self.iaid, 0, 0, (IaPrefix(hint),) if hint is not None else ())
        self._start(State.SOLICITING, Dhcp6Message(
            MsgType.SOLICIT, self._new_xid(), self.duid, ia_pd=(ia,),
            rapid_commit=self.rapid_commit and self._only is None), ALL_SERVERS, now)

    def release(self, now: float) -> None:
        """Give the delegated prefix back (the MN left, or it is not needed)."""
        lease = self.lease
        if lease is None:
            return
        ia = IaPd(self.iaid, 0, 0, (IaPrefix(lease.prefix),))
        self._start(State.RELEASING, Dhcp6Message(
            MsgType.RELEASE, self._new_xid(), self.duid, lease.server_id, (ia,)),
            lease.server, now)

    # -- Driver interface -------------------------------------------------------------

    def receive(self, data: bytes, source: tuple[str, int], now: float) -> None:
        """A datagram from a server; bad or unrelated ones are ignored."""
        try:
            m = decode(data)
        except DhcpError:
            return
        if self._sent is None or m.xid != self._sent.xid or m.client_id != self.duid:
            return
        if m.msg_type is MsgType.ADVERTISE and self.state is State.SOLICITING:
            ia = self._ia(m)
            if ia is None or not ia.prefixes or m.server_id is None:
                return  # keep soliciting; another server may have one
            offered = ia.prefixes[0].prefix
            if self._only is not None and offered != self._only:
                self.state = State.IDLE
                self._sent = None
                self._deadline = None
                self._events.append(Failed(f"offered {offered} instead"))
                return
            self._start(State.REQUESTING, Dhcp6Message(
                MsgType.REQUEST, self._new_xid(), self.duid, m.server_id,
                (IaPd(self.iaid, 0, 0, (IaPrefix(ia.prefixes[0].prefix),)),)), source, now)
        elif m.msg_type is MsgType.REPLY:
            self._on_reply(m, source, now)

    def handle_timer(self, now: float) -> None:
        """Retransmissions and lease timers."""
        lease = self.lease
        if self._deadline is not None and now >= self._deadline and self._sent is not None:
            self._tries += 1
            # Renew and Rebind are bounded by T2 and the valid lifetime, not
            # by a count (RFC 8415 18.2.4/18.2.5).
            bounded = self.state not in (State.RENEWING, State.REBINDING)
            if bounded and self._tries >= self.max_rc:
                self._give_up(now)
            else:
                self._rt = min(self._rt * 2, 32 * self.initial_rt)
                self._emit(now)
        if lease is not None and self.state is State.BOUND and now >= lease.t1:
            self._start(State.RENEWING, Dhcp6Message(
                MsgType.RENEW, self._new_xid(), self.duid, lease.server_id,
                (IaPd(self.iaid, 0, 0, (IaPrefix(lease.prefix),)),)), lease.server, now)
        elif lease is not None and self.state is State.RENEWING and now >= lease.t2:
            self._start(State.REBINDING, Dhcp6Message(
                MsgType.REBIND, self._new_xid(), self.duid, None,
                (IaPd(self.iaid, 0, 0, (IaPrefix(lease.prefix),)),)), ALL_SERVERS, now)
        if lease is not None and now >= lease.expires and self.state is not State.RELEASING:
            self.lease = None
            self.state = State.IDLE
            self._sent = None
            self._deadline = None
            self._events.append(Expired(lease.prefix))

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run."""
        times = [t for t in (self._deadline,) if t is not None]
        if self.lease is not None:
            if self.state is State.BOUND:
                times.append(self.lease.t1)
            elif self.state is State.RENEWING:
                times.append(self.lease.t2)
            times.append(self.lease.expires)
        return min(times) if times else None

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        """Drain what to send (``ALL_SERVERS`` means: multicast on the link)."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> PdEvent | None:
        """Pop the next event."""
        return self._events.popleft() if self._events else None

    # -- Internals ----------------------------------------------------------------------

    def _new_xid(self) -> int:
        self._xid = (self._xid + 0x9E3779 + self.xid_seed) & 0xFFFFFF
        return self._xid

    def _ia(self, m: Dhcp6Message) -> IaPd | None:
        for ia in m.ia_pd:
            if ia.iaid == self.iaid:
                return ia
        return None

    def _start(self, state: State, msg: Dhcp6Message, dest: tuple[str, int],
               now: float) -> None:
        self.state = state
        self._sent = msg
        self._dest = dest
        self._started = now
        self._rt = self.initial_rt
        self._tries = 0
        self._emit(now)

    def _emit(self, now: float) -> None:
        assert self._sent is not None
        elapsed = int((now - self._started) * 100)
        msg = Dhcp6Message(self._sent.msg_type, self._sent.xid, self._sent.client_id,
                           self._sent.server_id, self._sent.ia_pd, self._sent.rapid_commit,
                           elapsed)
        self._out.append((encode(msg), self._dest))
        self._deadline = now + self._rt

    def _give_up(self, now: float) -> None:
        sent = self._sent
        self._sent = None
        self._deadline = None
        if self.state is State.RELEASING and self.lease is not None:
            # RFC 8415 18.2.7: after the last try the binding is gone anyway.
            prefix = self.lease.prefix
            self.lease = None
            self.state = State.IDLE
            self._events.append(Released(prefix))
            return
        self.state = State.IDLE
        self._events.append(Failed(f"no answer to {sent.msg_type.name if sent else '?'}"))

    def _on_reply(self, m: Dhcp6Message, source: tuple[str, int], now: float) -> None:
        state = self.state
        self._sent = None
        self._deadline = None
        if state is State.RELEASING:
            prefix = self.lease.prefix if self.lease is not None else None
            self.lease = None
            self.state = State.IDLE
            if prefix is not None:
                self._events.append(Released(prefix))
            return
        ia = self._ia(m)
        granted = [p for p in (ia.prefixes if ia else ()) if p.valid > 0]
        status = (ia.status if ia and ia.status else None) or m.status
        if not granted or m.server_id is None:
            self.state = State.IDLE if state in (State.SOLICITING, State.REQUESTING) else state
            self._events.append(Failed(_status_text(status)))
            return
        assert ia is not None
        p = granted[0]
        t1 = ia.t1 or p.preferred // 2
        t2 = ia.t2 or p.preferred * 4 // 5
        self.lease = _Lease(p.prefix, m.server_id, source, now + t1, now + t2,
                            now + p.valid, p.preferred, p.valid)
        self.state = State.BOUND
        self._events.append(Bound(p.prefix, p.preferred, p.valid,
                                  renewed=state in (State.RENEWING, State.REBINDING)))
