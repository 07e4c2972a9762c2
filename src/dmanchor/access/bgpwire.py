"""BGP-4 messages for IPv6 unicast (RFC 4271, RFC 4760, RFC 6793), sans-IO.

What an anchor needs to announce and withdraw the prefixes it anchors
(draft 4.2): OPEN with the multiprotocol (IPv6 unicast), four-octet AS and
route-refresh capabilities, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH and
UPDATE with ORIGIN, AS_PATH (four-octet), MULTI_EXIT_DISC, LOCAL_PREF,
MP_REACH_NLRI and MP_UNREACH_NLRI.  Attributes it does not interpret are
kept as raw bytes so a received UPDATE decodes whole.

Messages are frozen, slotted dataclasses; :data:`DECODERS` maps each type
code to its decoder.  Malformed input raises only :class:`BgpError`, which
carries the NOTIFICATION error code and subcode RFC 4271 section 6 assigns
to it, so a session can tell the peer exactly what was wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv6Address

from ..wire.types import Prefix

MARKER = b"\xff" * 16
HEADER = 19
MAX_SIZE = 4096
"""Largest message without RFC 8654 extended messages."""
AS_TRANS = 23456
AFI_IPV6 = 2
SAFI_UNICAST = 1


class MsgType(IntEnum):
    """BGP message types."""

    OPEN = 1
    UPDATE = 2
    NOTIFICATION = 3
    KEEPALIVE = 4
    ROUTE_REFRESH = 5


class ErrorCode(IntEnum):
    """NOTIFICATION error codes (RFC 4271 section 4.5)."""

    HEADER = 1
    OPEN = 2
    UPDATE = 3
    HOLD_TIMER_EXPIRED = 4
    FSM = 5
    CEASE = 6


class HeaderSub(IntEnum):
    """Message header error subcodes."""

    NOT_SYNCHRONIZED = 1
    BAD_LENGTH = 2
    BAD_TYPE = 3


class OpenSub(IntEnum):
    """OPEN message error subcodes."""

    UNSUPPORTED_VERSION = 1
    BAD_PEER_AS = 2
    BAD_BGP_ID = 3
    UNSUPPORTED_PARAMETER = 4
    UNACCEPTABLE_HOLD_TIME = 6
    UNSUPPORTED_CAPABILITY = 7


class UpdateSub(IntEnum):
    """UPDATE message error subcodes."""

    MALFORMED_ATTRIBUTE_LIST = 1
    UNRECOGNIZED_WELL_KNOWN = 2
    MISSING_WELL_KNOWN = 3
    ATTRIBUTE_FLAGS = 4
    ATTRIBUTE_LENGTH = 5
    INVALID_ORIGIN = 6
    INVALID_NEXT_HOP = 8
    OPTIONAL_ATTRIBUTE = 9
    INVALID_NETWORK = 10
    MALFORMED_AS_PATH = 11


class Attr(IntEnum):
    """Path attribute type codes used here."""

    ORIGIN = 1
    AS_PATH = 2
    NEXT_HOP = 3
    MULTI_EXIT_DISC = 4
    LOCAL_PREF = 5
    MP_REACH_NLRI = 14
    MP_UNREACH_NLRI = 15


class Cap(IntEnum):
    """Capability codes (RFC 5492) used here."""

    MULTIPROTOCOL = 1
    ROUTE_REFRESH = 2
    FOUR_OCTET_AS = 65


# Attribute flags.
OPTIONAL, TRANSITIVE, PARTIAL, EXTENDED = 0x80, 0x40, 0x20, 0x10


class BgpError(ValueError):
    """A malformed BGP message, with the NOTIFICATION that reports it."""

    def __init__(self, code: int, subcode: int, reason: str, data: bytes = b"") -> None:
        super().__init__(f"{ErrorCode(code).name.lower()}/{subcode}: {reason}")
        self.code = code
        self.subcode = subcode
        self.data = data


# -- Messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Open:
    """OPEN: who the speaker is and what it can do."""

    asn: int
    """The speaker's AS (four octets; AS_TRANS goes in the two-octet field)."""
    hold_time: int
    """Proposed hold time, seconds (0 or >= 3)."""
    router_id: int
    """BGP identifier: a non-zero 32-bit number (written like an IPv4 address)."""
    capabilities: tuple[tuple[int, bytes], ...] = ()
    """(code, value) pairs sent in one Capabilities optional parameter."""
    version: int = 4

    TYPE = MsgType.OPEN

    def has(self, code: int, value: bytes | None = None) -> bool:
        """Whether capability ``code`` (with ``value``, if given) was offered."""
        return any(c == code and (value is None or v == value) for c, v in self.capabilities)

    @property
    def four_octet_asn(self) -> int | None:
        """The AS from the four-octet AS capability, if offered."""
        for c, v in self.capabilities:
            if c == Cap.FOUR_OCTET_AS and len(v) == 4:
                return int.from_bytes(v, "big")
        return None


@dataclass(frozen=True, slots=True)
class Update:
    """UPDATE for IPv6 unicast: withdrawals and announcements sharing attributes."""

    withdrawn: tuple[Prefix, ...] = ()
    """MP_UNREACH_NLRI prefixes."""
    announced: tuple[Prefix, ...] = ()
    """MP_REACH_NLRI prefixes (all with ``next_hop``)."""
    next_hop: IPv6Address | None = None
    """Global next hop of ``announced``."""
    link_local: IPv6Address | None = None
    """Optional link-local next hop (RFC 2545)."""
    origin: int = 0
    """0 IGP, 1 EGP, 2 INCOMPLETE."""
    as_path: tuple[int, ...] = ()
    """One AS_SEQUENCE (four-octet ASNs); empty on iBGP."""
    med: int | None = None
    local_pref: int | None = None
    other: tuple[tuple[int, int, bytes], ...] = ()
    """Attributes not interpreted here: (flags, type, value)."""

    TYPE = MsgType.UPDATE


@dataclass(frozen=True, slots=True)
class Notification:
    """NOTIFICATION: the sender closes the session for this reason."""

    code: int
    subcode: int = 0
    data: bytes = b""

    TYPE = MsgType.NOTIFICATION


@dataclass(frozen=True, slots=True)
class Keepalive:
    """KEEPALIVE."""

    TYPE = MsgType.KEEPALIVE


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    """ROUTE-REFRESH (RFC 2918): please send your routes of this family again."""

    afi: int = AFI_IPV6
    safi: int = SAFI_UNICAST

    TYPE = MsgType.ROUTE_REFRESH


Message = Open | Update | Notification | Keepalive | RouteRefresh


# -- Encoding ---------------------------------------------------------------------------


def _frame(kind: MsgType, body: bytes) -> bytes:
    size = HEADER + len(body)
    if size > MAX_SIZE:
        raise ValueError(f"{kind.name} of {size} bytes exceeds {MAX_SIZE}")
    return MARKER + struct.pack("!HB", size, kind) + body


def _nlri(prefixes: Iterable[Prefix]) -> bytes:
    out = bytearray()
    for p in prefixes:
        n = (p.length + 7) // 8
        out.append(p.length)
        out += p.network.to_bytes(16, "big")[:n]
    return bytes(out)


def _attr(flags: int, code: int, value: bytes) -> bytes:
    if len(value) > 255:
        return struct.pack("!BBH", flags | EXTENDED, code, len(value)) + value
    return struct.pack("!BBB", flags & ~EXTENDED, code, len(value)) + value


def mp_capability(afi: int = AFI_IPV6, safi: int = SAFI_UNICAST) -> tuple[int, bytes]:
    """The multiprotocol capability for one address family."""
    return (Cap.MULTIPROTOCOL, struct.pack("!HBB", afi, 0, safi))


def encode(msg: Message) -> bytes:
    """The message's bytes, header included."""
    if isinstance(msg, Keepalive):
        return _frame(MsgType.KEEPALIVE, b"")
    if isinstance(msg, Notification):
        return _frame(MsgType.NOTIFICATION, bytes((msg.code, msg.subcode)) + msg.data)
    if isinstance(msg, RouteRefresh):
        return _frame(MsgType.ROUTE_REFRESH, struct.pack("!HBB", msg.afi, 0, msg.safi))
    if isinstance(msg, Open):
        caps = b"".join(struct.pack("!BB", c, len(v)) + v for c, v in msg.capabilities)
        params = struct.pack("!BB", 2, len(caps)) + caps if caps else b""
        two = msg.asn if msg.asn <= 0xFFFF else AS_TRANS
        return _frame(MsgType.OPEN, struct.pack("!BHHIB", msg.version, two, msg.hold_time,
                                                msg.router_id, len(params)) + params)
    attrs = bytearray()
    if msg.announced:
        if msg.next_hop is None:
            raise ValueError("announced prefixes need a next hop")
        attrs += _attr(TRANSITIVE, Attr.ORIGIN, bytes((msg.origin,)))
        path = (struct.pack("!BB", 2, len(msg.as_path))
                + b"".join(a.to_bytes(4, "big") for a in msg.as_path)) if msg.as_path else b""
        attrs += _attr(TRANSITIVE, Attr.AS_PATH, path)
        if msg.med is not None:
            attrs += _attr(OPTIONAL, Attr.MULTI_EXIT_DISC, struct.pack("!I", msg.med))
        if msg.local_pref is not None:
            attrs += _attr(TRANSITIVE, Attr.LOCAL_PREF, struct.pack("!I", msg.local_pref))
        nh = msg.next_hop.packed + (msg.link_local.packed if msg.link_local else b"")
        attrs += _attr(OPTIONAL, Attr.MP_REACH_NLRI,
                       struct.pack("!HBB", AFI_IPV6, SAFI_UNICAST, len(nh)) + nh + b"\0"
                       + _nlri(msg.announced))
    if msg.withdrawn:
        attrs += _attr(OPTIONAL, Attr.MP_UNREACH_NLRI,
                       struct.pack("!HB", AFI_IPV6, SAFI_UNICAST) + _nlri(msg.withdrawn))
    for flags, code, value in msg.other:
        attrs += _attr(flags, code, value)
    return _frame(MsgType.UPDATE, struct.pack("!HH", 0, len(attrs)) + attrs)


def updates_for(withdrawn: Iterable[Prefix], announced: Iterable[Prefix],
                next_hop: IPv6Address, as_path: tuple[int, ...],
                local_pref: int | None = None) -> Iterator[Update]:
    """As few UPDATEs as fit 4096 bytes each for these changes.

    A /64 costs 9 bytes of NLRI; about 440 fit one message with its
    attributes, so 100k prefixes go in ~230 messages, not 100k.
    """
    room = MAX_SIZE - HEADER - 4 - 120  # header, lengths, attributes with slack
    batch: list[Prefix] = []
    size = 0
    for p in withdrawn:
        n = 1 + (p.length + 7) // 8
        if size + n > room:
            yield Update(withdrawn=tuple(batch))
            batch, size = [], 0
        batch.append(p)
        size += n
    if batch:
        yield Update(withdrawn=tuple(batch))
    batch, size = [], 0
    for p in announced:
        n = 1 + (p.length + 7) // 8
        if size + n > room:
            yield Update(announced=tuple(batch), next_hop=next_hop, as_path=as_path,
                         local_pref=local_pref)
            batch, size = [], 0
        batch.append(p)
        size += n
    if batch:
        yield Update(announced=tuple(batch), next_hop=next_hop, as_path=as_path,
                     local_pref=local_pref)


# -- Decoding ---------------------------------------------------------------------------


def _update_error(sub: UpdateSub, reason: str, data: bytes = b"") -> BgpError:
    return BgpError(ErrorCode.UPDATE, sub, reason, data)


def _decode_nlri(data: bytes, what: str) -> tuple[Prefix, ...]:
    out = []
    pos = 0
    while pos < len(data):
        length = data[pos]
        n = (length + 7) // 8
        if length > 128 or pos + 1 + n > len(data):
            raise _update_error(UpdateSub.INVALID_NETWORK, f"bad {what} prefix at {pos}")
        raw = data[pos + 1:pos + 1 + n]
        net = int.from_bytes(raw + bytes(16 - n), "big")
        if net & ((1 << (128 - length)) - 1):
            # Host bits set past the length: RFC 4271 says such NLRI is
            # syntactically incorrect.
            raise _update_error(UpdateSub.INVALID_NETWORK, f"{what} prefix has host bits")
        out.append(Prefix(net, length))
        pos += 1 + n
    return tuple(out)


def _decode_open(body: bytes) -> Open:
    if len(body) < 10:
        raise BgpError(ErrorCode.HEADER, HeaderSub.BAD_LENGTH, "OPEN too short",
                       struct.pack("!H", HEADER + len(body)))
    version, asn, hold, rid, plen = struct.unpack_from("!BHHIB", body)
    if version != 4:
        raise BgpError(ErrorCode.OPEN, OpenSub.UNSUPPORTED_VERSION, f"version {version}",
                       struct.pack("!H", 4))
    if 10 + plen != len(body):
        raise BgpError(ErrorCode.OPEN, 0, "optional parameters length mismatch")
    caps: list[tuple[int, bytes]] = []
    pos = 10
    while pos < len(body):
        if pos + 2 > len(body):
            raise BgpError(ErrorCode.OPEN, 0, "truncated optional parameter")
        ptype, n = body[pos], body[pos + 1]
        value = body[pos + 2:pos + 2 + n]
        if len(value) != n:
            raise BgpError(ErrorCode.OPEN, 0, "truncated optional parameter")
        if ptype != 2:
            raise BgpError(ErrorCode.OPEN, OpenSub.UNSUPPORTED_PARAMETER,
                           f"optional parameter {ptype}")
        cpos = 0
        while cpos < len(value):
            if cpos + 2 > len(value) or cpos + 2 + value[cpos + 1] > len(value):
                raise BgpError(ErrorCode.OPEN, 0, "truncated capability")
            code, clen = value[cpos], value[cpos + 1]
            caps.append((code, bytes(value[cpos + 2:cpos + 2 + clen])))
            cpos += 2 + clen
        pos += 2 + n
    o = Open(asn, hold, rid, tuple(caps), version)
    four = o.four_octet_asn
    return Open(four, hold, rid, tuple(caps), version) if four is not None else o


def _decode_attrs(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    pos = 0
    while pos < len(data):
        if pos + 3 > len(data):
            raise _update_error(UpdateSub.MALFORMED_ATTRIBUTE_LIST, "truncated attribute")
        flags, code = data[pos], data[pos + 1]
        if flags & EXTENDED:
            if pos + 4 > len(data):
                raise _update_error(UpdateSub.MALFORMED_ATTRIBUTE_LIST, "truncated attribute")
            (n,) = struct.unpack_from("!H", data, pos + 2)
            start = pos + 4
        else:
            n = data[pos + 2]
            start = pos + 3
        if start + n > len(data):
            raise _update_error(UpdateSub.ATTRIBUTE_LENGTH, f"attribute {code} overruns",
                                data[pos:start])
        yield flags, code, bytes(data[start:start + n])
        pos = start + n


def _decode_update(body: bytes) -> Update:
    if len(body) < 4:
        raise _update_error(UpdateSub.MALFORMED_ATTRIBUTE_LIST, "UPDATE too short")
    (wlen,) = struct.unpack_from("!H", body)
    if 2 + wlen + 2 > len(body):
        raise _update_error(UpdateSub.MALFORMED_ATTRIBUTE_LIST, "withdrawn length overruns")
    (alen,) = struct.unpack_from("!H", body, 2 + wlen)
    astart = 4 + wlen
    if astart + alen > len(body):
        raise _update_error(UpdateSub.MALFORMED_ATTRIBUTE_LIST, "attribute length overruns")
    if wlen or astart + alen < len(body):
        # IPv4 unicast NLRI: this speaker negotiates IPv6 unicast only.
        raise _update_error(UpdateSub.MALFORMED_ATTRIBUTE_LIST, "IPv4 NLRI not negotiated")
    fields: dict[str, object] = {}
    other: list[tuple[int, int, bytes]] = []
    seen: set[int] = set()
    withdrawn: tuple[Prefix, ...] = ()
    announced: tuple[Prefix, ...] = ()
    for flags, code, value in _decode_attrs(body[astart:astart + alen]):
        if code in seen:
            raise _update_error(UpdateSub.MALFORMED_ATTRIBUTE_LIST, f"attribute {code} twice")
        seen.add(code)
        if code == Attr.ORIGIN:
            if len(value) != 1:
                raise _update_error(UpdateSub.ATTRIBUTE_LENGTH, "ORIGIN length")
            if value[0] > 2:
                raise _update_error(UpdateSub.INVALID_ORIGIN, f"ORIGIN {value[0]}", value)
            fields["origin"] = value[0]
        elif code == Attr.AS_PATH:
            path: list[int] = []
            pos = 0
            while pos < len(value):
                if pos + 2 > len(value) or value[pos] not in (1, 2):
                    raise _update_error(UpdateSub.MALFORMED_AS_PATH, "bad segment")
                count = value[pos + 1]
                end = pos + 2 + 4 * count
                if end > len(value) or count == 0:
                    raise _update_error(UpdateSub.MALFORMED_AS_PATH, "segment overruns")
                path += [int.from_bytes(value[i:i + 4], "big") for i in range(pos + 2, end, 4)]
                pos = end
            fields["as_path"] = tuple(path)
        elif code in (Attr.MULTI_EXIT_DISC, Attr.LOCAL_PREF):
            if len(value) != 4:
                raise _update_error(UpdateSub.ATTRIBUTE_LENGTH, f"attribute {code} length")
            fields["med" if code == Attr.MULTI_EXIT_DISC else "local_pref"] = (
                int.from_bytes(value, "big"))
        elif code == Attr.MP_REACH_NLRI:
            if len(value) < 5:
                raise _update_error(UpdateSub.OPTIONAL_ATTRIBUTE, "MP_REACH_NLRI too short")
            afi, safi, nhlen = struct.unpack_from("!HBB", value)
            if (afi, safi) != (AFI_IPV6, SAFI_UNICAST):
                raise _update_error(UpdateSub.OPTIONAL_ATTRIBUTE, f"AFI/SAFI {afi}/{safi}")
            if nhlen not in (16, 32) or 4 + nhlen + 1 > len(value):
                raise _update_error(UpdateSub.INVALID_NEXT_HOP, f"next hop length {nhlen}")
            fields["next_hop"] = IPv6Address(value[4:20])
            if nhlen == 32:
                fields["link_local"] = IPv6Address(value[20:36])
            announced = _decode_nlri(value[4 + nhlen + 1:], "MP_REACH")
        elif code == Attr.MP_UNREACH_NLRI:
            if len(value) < 3:
                raise _update_error(UpdateSub.OPTIONAL_ATTRIBUTE, "MP_UNREACH_NLRI too short")
            afi, safi = struct.unpack_from("!HB", value)
            if (afi, safi) != (AFI_IPV6, SAFI_UNICAST):
                raise _update_error(UpdateSub.OPTIONAL_ATTRIBUTE, f"AFI/SAFI {afi}/{safi}")
            withdrawn = _decode_nlri(value[3:], "MP_UNREACH")
        elif code == Attr.NEXT_HOP:
            raise _update_error(UpdateSub.MALFORMED_ATTRIBUTE_LIST, "IPv4 NEXT_HOP")
        else:
            if not flags & OPTIONAL and code not in (6, 7):  # ATOMIC_AGGREGATE, AGGREGATOR
                raise _update_error(UpdateSub.UNRECOGNIZED_WELL_KNOWN, f"attribute {code}")
            other.append((flags, code, value))
    if announced and ("origin" not in fields or "as_path" not in fields):
        missing = Attr.ORIGIN if "origin" not in fields else Attr.AS_PATH
        raise _update_error(UpdateSub.MISSING_WELL_KNOWN, f"missing {missing.name}",
                            bytes((missing,)))
    return Update(withdrawn, announced, other=tuple(other), **fields)  # type: ignore[arg-type]


def _decode_notification(body: bytes) -> Notification:
    if len(body) < 2:
        raise BgpError(ErrorCode.HEADER, HeaderSub.BAD_LENGTH, "NOTIFICATION too short")
    return Notification(body[0], body[1], bytes(body[2:]))


def _decode_keepalive(body: bytes) -> Keepalive:
    if body:
        raise BgpError(ErrorCode.HEADER, HeaderSub.BAD_LENGTH, "KEEPALIVE with a body",
                       struct.pack("!H", HEADER + len(body)))
    return Keepalive()


def _decode_refresh(body: bytes) -> RouteRefresh:
    if len(body) != 4:
        raise BgpError(ErrorCode.HEADER, HeaderSub.BAD_LENGTH, "ROUTE-REFRESH length")
    afi, _, safi = struct.unpack("!HBB", body)
    return RouteRefresh(afi, safi)


DECODERS: dict[int, Callable[[bytes], Message]] = {
    MsgType.OPEN: _decode_open,
    MsgType.UPDATE: _decode_update,
    MsgType.NOTIFICATION: _decode_notification,
    MsgType.KEEPALIVE: _decode_keepalive,
    MsgType.ROUTE_REFRESH: _decode_refresh,
}
"""Decoder of each message type, keyed by type code."""


def split(buffer: bytearray) -> Iterator[tuple[int, bytes]]:
    """Take whole messages off the front of a TCP stream buffer.

    Yields (type, body); leaves a partial message in ``buffer``.  A bad
    marker, length or type raises :class:`BgpError` (the stream cannot be
    resynchronised after that: the session must close).
    """
    while len(buffer) >= HEADER:
        if buffer[:16] != MARKER:
            raise BgpError(ErrorCode.HEADER, HeaderSub.NOT_SYNCHRONIZED, "bad marker")
        size, kind = struct.unpack_from("!HB", buffer, 16)
        if size < HEADER or size > MAX_SIZE:
            raise BgpError(ErrorCode.HEADER, HeaderSub.BAD_LENGTH, f"length {size}",
                           struct.pack("!H", size))
        if kind not in DECODERS:
            raise BgpError(ErrorCode.HEADER, HeaderSub.BAD_TYPE, f"type {kind}", bytes((kind,)))
        if len(buffer) < size:
            return
        body = bytes(buffer[HEADER:size])
        del buffer[:size]
        yield kind, body


def decode(data: bytes) -> Message:
    """Decode exactly one whole message."""
    buf = bytearray(data)
    got = list(split(buf))
    if len(got) != 1 or buf:
        raise BgpError(ErrorCode.HEADER, HeaderSub.BAD_LENGTH, "not exactly one message")
    kind, body = got[0]
    return DECODERS[kind](body)
