"""Message <-> bytes, message <-> JSON.

Layout (docs/protocol.md): a 12-byte header ``version u8 | type u8 |
flags u16 | sequence u32 | length u16 | reserved u16`` followed by IEs.
An AUTH IE, when present, is the last IE; its MAC covers the receiver's
transport address followed by the whole message with the MAC field zeroed.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntFlag
from typing import Any, NamedTuple, cast

from .errors import WireError
from .ie import CODECS, IE, OPTIONAL_TO_UNDERSTAND
from .messages import REGISTRY, REQUIRED, Kind, Message, MessageSpec, MsgType
from .types import decode_entry_run, encode_entry_run

VERSION = 1
HEADER = struct.Struct("!BBHIHH")
TLV = struct.Struct("!HH")
AUTH = struct.Struct("!HHQ32s")
AUTH_IE_LEN = TLV.size + AUTH.size
MAC_LEN = 32
MAX_MESSAGE = 0xFFFF


class Flags(IntFlag):
    """Header flags."""

    NONE = 0
    RESPONSE = 0x0001
    """The sequence number echoes the request this message answers."""
    RETRANSMIT = 0x0002
    """This is a retransmission of an earlier request."""


_KNOWN_FLAGS = int(Flags.RESPONSE | Flags.RETRANSMIT)


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """The AUTH IE as received (verified separately, see :mod:`.auth`)."""

    key_id: int
    timestamp_us: int
    mac: bytes
    offset: int
    """Byte offset of the MAC inside the message, used to verify it."""


class Packet(NamedTuple):
    """A decoded message with its header fields (an envelope, built per datagram)."""

    message: Message
    seq: int
    flags: int = 0
    """Header flags as an int (test bits with :class:`Flags`)."""
    auth: AuthInfo | None = None


def encode(
    message: Message,
    seq: int,
    flags: int = 0,
    *,
    key_id: int | None = None,
    secret: bytes | None = None,
    timestamp_us: int = 0,
    receiver: bytes = b"",
) -> bytes:
    """Encode ``message``; with ``secret`` append an AUTH IE signed with it.

    ``receiver`` (see :func:`dmanchor.wire.auth.receiver_id`) is covered by
    the MAC but not carried: only the receiver it names can verify it.
    """
    # Keyed by class: hashing a type is C-level, hashing an Enum member is not.
    spec = _BY_CLASS.get(type(message))
    if spec is None:
        raise WireError("unknown-type", type(message).__name__)
    if not 0 <= seq <= 0xFFFFFFFF:
        raise WireError("bad-value", f"sequence {seq}")
    fast = _FAST_ENC.get(spec.type_code)
    if fast is not None:
        whole = fast(message, seq, flags)
        if whole is not None:
            if secret is None:
                return whole
            return _finish(spec.type_code, whole[HEADER.size:], seq, flags, key_id, secret,
                           timestamp_us, receiver)
    parts: list[bytes] = []
    append = parts.append
    pack = TLV.pack
    for f in spec.fields:
        value = getattr(message, f.name)
        if f.kind is Kind.MANY:
            run = _RUN_ENCODERS.get(f.code)
            if run is not None:
                append(run(f.code, value))
                continue
            enc = f.encode
            for item in value:
                raw = enc(item)
                append(pack(f.code, len(raw)))
                append(raw)
        elif value is not None:
            raw = f.encode(value)
            append(pack(f.code, len(raw)))
            append(raw)
        elif f.kind is Kind.ONE:
            raise WireError("missing-ie", f"{spec.cls.__name__}.{f.name}")
    body = b"".join(parts)
    return _finish(spec.type_code, body, seq, flags, key_id, secret, timestamp_us,
                           receiver)


def _finish(type_code: int, body: bytes, seq: int, flags: int, key_id: int | None,
            secret: bytes | None, timestamp_us: int, receiver: bytes) -> bytes:
    """Prepend the header; sign when ``secret`` is given."""
    if secret is None:
        length = HEADER.size + len(body)
        if length > MAX_MESSAGE:
            raise WireError("too-long", f"{length} bytes")
        return HEADER.pack(VERSION, type_code, flags, seq, length, 0) + body
    length = HEADER.size + len(body) + AUTH_IE_LEN
    if length > MAX_MESSAGE:
        raise WireError("too-long", f"{length} bytes")
    if key_id is None or not 0 <= key_id <= 0xFFFF:
        raise WireError("bad-value", f"key id {key_id}")
    if not 0 <= timestamp_us <= 0xFFFFFFFFFFFFFFFF:
        raise WireError("bad-value", f"timestamp {timestamp_us}")
    unsigned = (
        HEADER.pack(VERSION, type_code, flags, seq, length, 0)
        + body + TLV.pack(IE.AUTH, AUTH.size)
        + AUTH.pack(key_id, 0, timestamp_us, bytes(MAC_LEN))
    )
    mac = hmac.new(secret, receiver + unsigned, hashlib.sha256).digest()
    return unsigned[:-MAC_LEN] + mac


def decode(data: bytes) -> Packet:
    """Decode one message; raises only :class:`WireError` on bad input."""
    end = len(data)
    if end < 12:
        raise WireError("truncated", f"{end} bytes")
    version, type_code, flags, seq, length, reserved = HEADER.unpack_from(data)
    if version != VERSION:
        raise WireError("bad-version", str(version))
    if length != end:
        raise WireError("bad-length", f"header says {length}, got {end}")
    if reserved or flags & ~_KNOWN_FLAGS:
        raise WireError("bad-header", "reserved bits set")
    spec = REGISTRY.get(type_code)
    if spec is None:
        raise WireError("unknown-type", str(type_code))
    fast = _FAST.get(type_code)
    if fast is not None:
        message = fast(data)
        if message is not None:
            return Packet(message, seq, flags, None)
    by_code = spec.by_code
    args = list(spec.defaults)
    lists: dict[int, list[Any]] | None = None
    auth: AuthInfo | None = None
    pos = 12
    unpack_tlv = TLV.unpack_from
    while pos < end:
        if end - pos < 4:
            raise WireError("truncated", "IE header")
        code, ln = unpack_tlv(data, pos)
        pos += 4
        stop = pos + ln
        if stop > end:
            raise WireError("truncated", f"IE {code} value")
        slot = by_code.get(code)
        if slot is None:
            if code == IE.AUTH:
                if ln != AUTH.size or stop != end:
                    raise WireError("bad-auth", "AUTH IE malformed or not last")
                key_id, _, ts, mac = AUTH.unpack_from(data, pos)
                auth = AuthInfo(key_id, ts, mac, stop - MAC_LEN)
            elif not code & OPTIONAL_TO_UNDERSTAND:
                raise WireError("unknown-ie", f"{code} in {spec.cls.__name__}")
            pos = stop
            continue
        index, many, dec = slot
        if many and code in _RUN_DECODERS:
            items, pos = _RUN_DECODERS[code](data, pos - 4, end)
            if lists is None:
                lists = {}
            lists.setdefault(index, []).extend(items)
            continue
        value = dec(data[pos:stop])
        pos = stop
        if many:
            if lists is None:
                lists = {index: [value]}
            elif index in lists:
                lists[index].append(value)
            else:
                lists[index] = [value]
        elif args[index] is REQUIRED or args[index] is None:
            args[index] = value
        else:
            raise WireError("duplicate-ie", f"IE {code} in {spec.cls.__name__}")
    if lists:
        for index, items in lists.items():
            args[index] = tuple(items)
    if REQUIRED in args:
        missing = spec.fields[args.index(REQUIRED)].name
        raise WireError("missing-ie", f"{spec.cls.__name__}.{missing}")
    return Packet(spec.cls(*args), seq, flags, auth)


def compute_mac(data: bytes, auth: AuthInfo, secret: bytes, receiver: bytes = b"") -> bytes:
    """The MAC ``data`` should carry under ``secret`` (MAC field zeroed),
    when sent to ``receiver``."""
    zeroed = data[: auth.offset] + bytes(MAC_LEN) + data[auth.offset + MAC_LEN :]
    return hmac.new(secret, receiver + zeroed, hashlib.sha256).digest()


def peek_type(data: bytes) -> MsgType | None:
    """The message type of ``data`` without decoding it (None if unknown)."""
    if len(data) < 2:
        return None
    try:
        return MsgType(data[1])
    except ValueError:
        return None


# -- JSON -------------------------------------------------------------------


def to_json(packet: Packet) -> dict[str, Any]:
    """The JSON form used by ``dmanchor decode`` and the golden vectors."""
    msg = packet.message
    spec = REGISTRY[int(msg.TYPE)]
    body: dict[str, Any] = {}
    for f in spec.fields:
        value = getattr(msg, f.name)
        conv = CODECS[f.code].to_json
        if f.kind is Kind.MANY:
            body[f.name] = [conv(v) for v in value]
        elif value is not None:
            body[f.name] = conv(value)
    out: dict[str, Any] = {
        "type": msg.TYPE.name,
        "label": msg.LABEL,
        "seq": packet.seq,
        "flags": [f.name for f in Flags if f and f & packet.flags],
        "body": body,
    }
    if packet.auth is not None:
        out["auth"] = {
            "key_id": packet.auth.key_id,
            "timestamp_us": packet.auth.timestamp_us,
            "mac": packet.auth.mac.hex(),
        }
    return out


def from_json(doc: Any) -> Packet:
    """Build a packet from its JSON form (the ``auth`` member is ignored)."""
    if not isinstance(doc, dict):
        raise WireError("bad-json", "message must be an object")
    name = doc.get("type")
    try:
        mtype = MsgType[name] if isinstance(name, str) else None
    except KeyError:
        mtype = None
    if mtype is None:
        raise WireError("bad-json", f"unknown type {name!r}")
    spec = REGISTRY[int(mtype)]
    body = doc.get("body", {})
    if not isinstance(body, dict):
        raise WireError("bad-json", "body must be an object")
    known = {f.name for f in spec.fields}
    extra = set(body) - known
    if extra:
        raise WireError("bad-json", f"unknown fields {sorted(extra)} for {name}")
    values: dict[str, Any] = {}
    for f in spec.fields:
        conv = CODECS[f.code].from_json
        if f.name not in body:
            if f.kind is Kind.ONE:
                raise WireError("bad-json", f"{name}.{f.name} is required")
            continue
        raw = body[f.name]
        if f.kind is Kind.MANY:
            if not isinstance(raw, list):
                raise WireError("bad-json", f"{name}.{f.name} must be a list")
            values[f.name] = tuple(conv(v) for v in raw)
        else:
            values[f.name] = conv(raw)
    seq = doc.get("seq", 0)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= 0xFFFFFFFF:
        raise WireError("bad-json", "seq must be an integer 0..2^32-1")
    flag_names = doc.get("flags", [])
    if not isinstance(flag_names, list):
        raise WireError("bad-json", "flags must be a list")
    flags = 0
    for fname in flag_names:
        try:
            flags |= Flags[fname].value
        except (KeyError, TypeError) as exc:
            raise WireError("bad-json", f"unknown flag {fname!r}") from exc
    return Packet(spec.cls(**values), seq, flags)


# -- Fast paths ---------------------------------------------------------------
#
# Most messages are a few fixed-size IEs in canonical order.  For those, one
# struct call checks every IE header and slices every value; anything else
# (optional IEs present, another order, AUTH) takes the general TLV loop.

_FIXED_SIZE = {
    IE.PREFIX: 17, IE.FORWARDING_ADDRESS: 16, IE.DPA_ADDRESS: 16, IE.CPA_ADDRESS: 16,
    IE.LMS_ADDRESS: 16, IE.FM_ADDRESS: 16, IE.LIFETIME: 4, IE.LOAD: 2,
    IE.BUFFER_LIMIT: 4, IE.TIMEOUT_MS: 4, IE.COUNT: 8, IE.FLOW: 40,
}


def _fast_paths(spec: MessageSpec) -> tuple[
    Callable[[bytes], Message | None], Callable[[Message, int, int], bytes | None]
] | None:
    """Decoder and encoder of a message made of fixed-size IEs only, each
    one struct call; None for other types.  Either returns None for what
    it does not cover (an optional or repeated IE present): the general
    path then runs.  The encoder returns the whole unsigned message."""
    ones = [(i, f) for i, f in enumerate(spec.fields) if f.kind is Kind.ONE]
    if not ones or any(f.code not in _FIXED_SIZE for _, f in ones):
        return None
    sizes = [_FIXED_SIZE[f.code] for _, f in ones]
    layout = struct.Struct("!" + "".join(f"4s{n}s" for n in sizes))
    whole = struct.Struct("!12x" + layout.format[1:])
    packed = struct.Struct(HEADER.format + layout.format[1:])  # header and body
    heads = tuple(TLV.pack(f.code, n) for (_, f), n in zip(ones, sizes, strict=True))
    total = whole.size
    cls = spec.cls
    defaults = spec.defaults
    slots = [(i, f.decode) for i, f in ones]
    names = [f.name for _, f in ones]
    encoders = [f.encode for _, f in ones]
    optional = [f.name for f in spec.fields if f.kind is Kind.OPTIONAL]
    repeated = [f.name for f in spec.fields if f.kind is Kind.MANY]

    def fast_decode(data: bytes) -> Message | None:
        if len(data) != total:
            return None
        t = whole.unpack(data)
        if t[0::2] != heads:
            return None
        args = list(defaults)
        for (i, dec), raw in zip(slots, t[1::2], strict=True):
            args[i] = dec(raw)
        return cls(*args)

    # One C call each reads the fields the fast path needs (repeating the
    # first name makes every read a tuple, even of one field).
    read_optional = operator.attrgetter(*optional, optional[0]) if optional else None
    read_repeated = operator.attrgetter(*repeated, repeated[0]) if repeated else None
    get_ones = operator.attrgetter(*names)
    read_ones = get_ones if len(names) > 1 else (lambda msg: (get_ones(msg),))
    coders = list(zip(heads, encoders, strict=True))

    def fast_encode(message: Message, seq: int, flags: int) -> bytes | None:
        # An optional IE present (falsy values too), or a repeated one
        # non-empty: the general path.
        if read_optional is not None and read_optional(message).count(None) <= len(optional):
            return None
        if read_repeated is not None and any(read_repeated(message)):
            return None
        values: list[object] = [VERSION, spec.type_code, flags, seq, total, 0]
        for (head, enc), value in zip(coders, read_ones(message), strict=True):
            if value is None:
                raise WireError("missing-ie", f"{cls.__name__}.{names[len(values) // 2 - 3]}")
            values.append(head)
            values.append(enc(value))
        return packed.pack(*values)

    if len(slots) == 1 and len(spec.fields) == 1:
        # A message of one IE (the queries): no argument list to fill.
        [(_, dec_one)] = slots
        [head] = heads
        build = cast(Callable[[Any], Message], cls)  # (its one field's constructor)

        def fast_decode_one(data: bytes) -> Message | None:
            if len(data) != total:
                return None
            h, raw = whole.unpack(data)
            return build(dec_one(raw)) if h == head else None

        return fast_decode_one, fast_encode
    return fast_decode, fast_encode


# Repeated forwarding entries (FM:5-1) are coded a run at a time.
_RUN_ENCODERS: dict[int, Callable[[int, Any], bytes]] = {
    IE.ENTRY_ADD: encode_entry_run, IE.ENTRY_DELETE: encode_entry_run,
}
_RUN_DECODERS: dict[int, Callable[[bytes, int, int], tuple[list[Any], int]]] = {
    IE.ENTRY_ADD: decode_entry_run, IE.ENTRY_DELETE: decode_entry_run,
}
_BY_CLASS: dict[type[Message], MessageSpec] = {s.cls: s for s in REGISTRY.values()}
_FAST: dict[int, Callable[[bytes], Message | None]] = {}
_FAST_ENC: dict[int, Callable[[Message, int, int], bytes | None]] = {}
for _code, _spec in REGISTRY.items():
    _paths = _fast_paths(_spec)
    if _paths is not None:
        _FAST[_code], _FAST_ENC[_code] = _paths
