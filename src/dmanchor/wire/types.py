"""Value types carried in information elements (IEs).

They are immutable named tuples: hashable, shareable between cores, and
built at C speed, which matters because a forwarding update carries many of
them (see bench/codec.py).  Messages themselves are frozen dataclasses.
Each value type has an exact wire layout (docs/protocol.md) and a JSON form.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from functools import lru_cache
from ipaddress import AddressValueError, IPv6Address
from typing import Any, NamedTuple

from .errors import WireError

_ALL_ONES = (1 << 128) - 1


def _mask(length: int) -> int:
    return (_ALL_ONES << (128 - length)) & _ALL_ONES


_MASKS = tuple(_mask(n) for n in range(129))


def parse_address(text: str) -> IPv6Address:
    """Parse an IPv6 address, raising :class:`WireError` on bad text."""
    try:
        return IPv6Address(text)
    except (AddressValueError, ValueError) as exc:
        raise WireError("bad-address", repr(text)) from exc


class Prefix(NamedTuple):
    """An IPv6 prefix with its host bits clear (``2001:db8:1::/64``).

    The network is kept as a 128-bit integer: that is what longest-prefix
    match and the wire codec need, and it is far cheaper to build than an
    :class:`~ipaddress.IPv6Address` (see :attr:`address` for one).
    """

    network: int
    """Network address as an integer; host bits beyond ``length`` are zero."""
    length: int
    """Prefix length, 0..128."""

    @classmethod
    def parse(cls, text: str) -> Prefix:
        """Parse ``addr/len`` (a bare address means /128); strict host bits."""
        addr, sep, plen = text.partition("/")
        try:
            length = int(plen) if sep else 128
        except ValueError as exc:
            raise WireError("bad-prefix", repr(text)) from exc
        return cls.make(parse_address(addr), length)

    @classmethod
    def make(cls, address: IPv6Address | int, length: int) -> Prefix:
        """Build a prefix, validating the length and the host bits."""
        if not 0 <= length <= 128:
            raise WireError("bad-prefix", f"length {length}")
        value = int(address)
        if not 0 <= value <= _ALL_ONES or value & ~_MASKS[length]:
            raise WireError("bad-prefix", f"host bits set in {address}/{length}")
        return cls(value, length)

    @classmethod
    def host(cls, address: IPv6Address) -> Prefix:
        """The /128 of one address."""
        return cls(int(address), 128)

    @property
    def address(self) -> IPv6Address:
        """The network address as an :class:`~ipaddress.IPv6Address`."""
        return IPv6Address(self.network)

    def __str__(self) -> str:
        return f"{IPv6Address(self.network)}/{self.length}"

    def contains(self, address: IPv6Address | int) -> bool:
        """True when ``address`` lies inside this prefix."""
        return (int(address) & _MASKS[self.length]) == self.network

    def covers(self, other: Prefix) -> bool:
        """True when ``other`` is equal to or more specific than this prefix."""
        return (
            other.length >= self.length
            and (other.network & _MASKS[self.length]) == self.network
        )

    def overlaps(self, other: Prefix) -> bool:
        """True when the two prefixes share at least one address."""
        return self.covers(other) or other.covers(self)

    def address_at(self, offset: int) -> IPv6Address:
        """The address ``offset`` into the prefix (e.g. 1 for ``::1``)."""
        if not 0 <= offset < (1 << (128 - self.length)):
            raise ValueError(f"offset {offset} outside {self}")
        return IPv6Address(self.network + offset)


ANY_PREFIX = Prefix(0, 0)


class Cause(IntEnum):
    """Status / cause codes of the STATUS IE (negative replies and acks)."""

    OK = 0
    UNKNOWN_PREFIX = 1
    NOT_AUTHORIZED = 2
    AUTH_REQUIRED = 3
    MALFORMED = 4
    UNSUPPORTED = 5
    OVERLAPPING_CLAIM = 6
    NOT_PRIMARY = 7
    PEER_UNREACHABLE = 8
    RESOURCE_EXHAUSTED = 9
    INVALID_STATE = 10
    INTERNAL = 11
    STORE_FAILURE = 12


class EntryKind(IntEnum):
    """What a forwarding-table entry of FM:5-1 does with matching packets."""

    ANCHOR = 1
    """Deliver on the local access link ``link`` (connected route)."""
    ROUTE = 2
    """Forward to ``next_hop``."""
    TUNNEL = 3
    """Encapsulate (SRv6) towards the segment ``next_hop``."""
    DECAP = 4
    """``prefix`` is a local SID: decapsulate and look up the inner packet."""
    BUFFER = 5
    """Hold matching packets (FM:6) until released."""
    DROP = 6
    """Discard matching packets."""


class FlowFilter(NamedTuple):
    """FM:3-1 flow selector: a 5-tuple with wildcards.

    A prefix of length 0 matches any address, protocol 0 any protocol and
    port 0 any port; an exact 5-tuple uses /128 prefixes.
    """

    src: Prefix = ANY_PREFIX
    """Source prefix (MN side for uplink)."""
    dst: Prefix = ANY_PREFIX
    """Destination prefix."""
    proto: int = 0
    """IP protocol number, 0 = any."""
    sport: int = 0
    """Source port, 0 = any."""
    dport: int = 0
    """Destination port, 0 = any."""

    def matches(
        self, src: IPv6Address | int, dst: IPv6Address | int, proto: int, sport: int,
        dport: int,
    ) -> bool:
        """True when a packet with these header fields is selected."""
        return (
            self.src.contains(src)
            and self.dst.contains(dst)
            and self.proto in (0, proto)
            and self.sport in (0, sport)
            and self.dport in (0, dport)
        )

    def reversed(self) -> FlowFilter:
        """The same flow seen in the other direction."""
        return FlowFilter(self.dst, self.src, self.proto, self.dport, self.sport)


class FlowState(NamedTuple):
    """FM:2 per-flow context moved between anchors: QoS and charging."""

    flow: FlowFilter
    """The flow the state belongs to."""
    qos_class: int = 0
    """Operator QoS class identifier, 0..255."""
    bytes_up: int = 0
    """Charged uplink bytes so far."""
    bytes_down: int = 0
    """Charged downlink bytes so far."""
    packets_up: int = 0
    """Charged uplink packets so far."""
    packets_down: int = 0
    """Charged downlink packets so far."""
    opaque: bytes = b""
    """Further state the anchors agree on, carried unchanged."""


class ForwardingEntry(NamedTuple):
    """One forwarding-table entry of FM:5-1 (to add or to delete)."""

    kind: EntryKind
    """What the entry does."""
    prefix: Prefix
    """Destination prefix matched (or the local SID for DECAP)."""
    next_hop: IPv6Address | None = None
    """Next hop (ROUTE) or remote segment (TUNNEL)."""
    flow: FlowFilter | None = None
    """Restrict the entry to one flow (FM:3-1); None = whole prefix."""
    link: str = ""
    """Access link name for ANCHOR (at most 15 bytes, like a Linux ifname)."""
    metric: int = 0
    """Preference among entries of equal prefix; lower wins."""


class Status(NamedTuple):
    """Outcome of a request: a cause code and an optional human text."""

    code: Cause = Cause.OK
    """The cause code."""
    message: str = ""
    """Free text for logs, UTF-8, at most 255 bytes on the wire."""


class Load(NamedTuple):
    """FM:5-2 data-plane status: forwarding active or not, and load."""

    active: bool
    """Whether the forwarding function is active."""
    percent: int
    """Load, 0..100."""


class DpState(NamedTuple):
    """FM:5-2 detail: what a data plane carries now (IE DP_STATE)."""

    anchored: int
    """Prefixes anchored here whose MN is attached here."""
    visiting: int
    """Prefixes anchored elsewhere that this point serves (kept on a move)."""
    entries: int
    """Forwarding entries installed (holds excluded)."""
    held: int
    """Packets held now (FM:6-1), all prefixes together."""
    errors: int
    """Forwarding changes that failed since the data plane started."""


# -- Binary layouts ---------------------------------------------------------

class MnBinding(NamedTuple):
    """One prefix of an MN and where it is served (an answer to LM:1-1 by MN)."""

    prefix: Prefix
    """The MN's prefix."""
    forwarding_address: IPv6Address
    """The DPA serving it now."""
    lifetime: int
    """Seconds the binding has left."""
    flows: int = 0
    """Flows needing continuity its serving point reports active on it (0:
    none - the MN no longer needs the prefix kept where it goes)."""


_PREFIX = struct.Struct("!B16s")
_BINDING = struct.Struct("!B16s16sII")
_U32 = struct.Struct("!I")
_FLOW = struct.Struct("!BBBxHH16s16s")
_FLOW_STATE = struct.Struct("!B3xQQQQ")
_ENTRY_HEAD = struct.Struct("!BBHB16s")
_ENTRY_NH = struct.Struct("!BBHB16s16sB")
_LOAD = struct.Struct("!BB")
_DP_STATE = struct.Struct("!IIIII")
_U16 = struct.Struct("!H")
_ENTRY_HAS_NH = 0x01
_ENTRY_HAS_FLOW = 0x02
_KINDS: dict[int, EntryKind] = {int(k): k for k in EntryKind}
_CAUSES: dict[int, Cause] = {int(c): c for c in Cause}


@lru_cache(maxsize=4096)
def address_from_packed(packed: bytes) -> IPv6Address:
    """IPv6Address from 16 bytes, memoized.

    A pure function over immutable values: the same few anchor and next-hop
    addresses recur in nearly every message, so a small cache saves most
    address constructions without changing any result.
    """
    return IPv6Address(packed)


def _prefix(length: int, packed: bytes) -> Prefix:
    if length > 128:
        raise WireError("bad-prefix", f"length {length}")
    value = int.from_bytes(packed, "big")
    if value & ~_MASKS[length]:
        raise WireError("bad-prefix", "host bits set")
    return Prefix(value, length)


def _check_prefix(p: Prefix) -> bytes:
    network, length = p
    if not 0 <= length <= 128 or not 0 <= network <= _ALL_ONES:
        raise WireError("bad-prefix", repr(p))
    if network & ~_MASKS[length]:
        raise WireError("bad-prefix", f"host bits set in {p}")
    return network.to_bytes(16, "big")


def encode_prefix(p: Prefix) -> bytes:
    return bytes((p.length,)) + _check_prefix(p)


def decode_prefix(raw: bytes) -> Prefix:
    # (_prefix's checks inlined: every LM message carries a prefix.)
    if len(raw) != 17:
        raise WireError("bad-ie-length", f"prefix needs 17 bytes, got {len(raw)}")
    length = raw[0]
    if length > 128:
        raise WireError("bad-prefix", f"length {length}")
    value = int.from_bytes(raw[1:], "big")
    if value & ~_MASKS[length]:
        raise WireError("bad-prefix", "host bits set")
    return Prefix(value, length)


def encode_address(a: IPv6Address) -> bytes:
    return a.packed


def decode_address(raw: bytes) -> IPv6Address:
    if len(raw) != 16:
        raise WireError("bad-ie-length", f"address needs 16 bytes, got {len(raw)}")
    return address_from_packed(raw)


def _check_u16(v: int, what: str) -> None:
    if not 0 <= v <= 0xFFFF:
        raise WireError("bad-value", f"{what} {v} out of range")


def encode_flow(f: FlowFilter) -> bytes:
    if not 0 <= f.proto <= 255:
        raise WireError("bad-value", f"proto {f.proto}")
    _check_u16(f.sport, "sport")
    _check_u16(f.dport, "dport")
    return _FLOW.pack(
        f.proto, f.src.length, f.dst.length, f.sport, f.dport,
        _check_prefix(f.src), _check_prefix(f.dst),
    )


def decode_flow(raw: bytes) -> FlowFilter:
    if len(raw) != _FLOW.size:
        raise WireError("bad-ie-length", f"flow needs {_FLOW.size} bytes")
    proto, slen, dlen, sport, dport, src, dst = _FLOW.unpack(raw)
    return FlowFilter(_prefix(slen, src), _prefix(dlen, dst), proto, sport, dport)


_U64_MAX = (1 << 64) - 1


def encode_flow_state(s: FlowState) -> bytes:
    if not 0 <= s.qos_class <= 255:
        raise WireError("bad-value", f"qos_class {s.qos_class}")
    for n in (s.bytes_up, s.bytes_down, s.packets_up, s.packets_down):
        if not 0 <= n <= _U64_MAX:
            raise WireError("bad-value", f"counter {n}")
    return (
        encode_flow(s.flow)
        + _FLOW_STATE.pack(
            s.qos_class, s.bytes_up, s.bytes_down, s.packets_up, s.packets_down
        )
        + s.opaque
    )


def decode_flow_state(raw: bytes) -> FlowState:
    fixed = _FLOW.size + _FLOW_STATE.size
    if len(raw) < fixed:
        raise WireError("bad-ie-length", "flow state truncated")
    flow = decode_flow(raw[: _FLOW.size])
    qos, bu, bd, pu, pd = _FLOW_STATE.unpack(raw[_FLOW.size : fixed])
    return FlowState(flow, qos, bu, bd, pu, pd, bytes(raw[fixed:]))


def encode_binding(b: MnBinding) -> bytes:
    for n in (b.lifetime, b.flows):
        if not 0 <= n <= 0xFFFFFFFF:
            raise WireError("bad-value", f"binding field {n}")
    return (encode_prefix(b.prefix) + encode_address(b.forwarding_address)
            + _U32.pack(b.lifetime) + _U32.pack(b.flows))


def decode_binding(raw: bytes) -> MnBinding:
    if len(raw) != _BINDING.size:
        raise WireError("bad-ie-length", f"binding needs {_BINDING.size} bytes, got {len(raw)}")
    length, network, address, lifetime, flows = _BINDING.unpack(raw)
    return MnBinding(_prefix(length, network), address_from_packed(address), lifetime, flows)


def encode_entry(e: ForwardingEntry) -> bytes:
    kind, prefix, next_hop, flow, link, metric = e
    if kind not in _KINDS:
        raise WireError("bad-value", f"entry kind {kind!r}")
    network, length = prefix
    if not 0 <= length <= 128 or not 0 <= network <= _ALL_ONES or network & ~_MASKS[length]:
        raise WireError("bad-prefix", repr(prefix))
    if not 0 <= metric <= 0xFFFF:
        raise WireError("bad-value", f"metric {metric} out of range")
    if flow is None and not link and next_hop is not None:
        # The common shape (a route or tunnel) in one pack call.
        return _ENTRY_NH.pack(kind, _ENTRY_HAS_NH, metric, length,
                              network.to_bytes(16, "big"), next_hop.packed, 0)
    flags = 0
    tail = b""
    if next_hop is not None:
        flags = _ENTRY_HAS_NH
        tail = next_hop.packed
    if flow is not None:
        flags |= _ENTRY_HAS_FLOW
        tail += encode_flow(flow)
    if link:
        name = link.encode()
        if len(name) > 15:
            raise WireError("bad-value", f"link name {link!r} longer than 15 bytes")
        tail += bytes((len(name),)) + name
    else:
        tail += b"\0"
    return _ENTRY_HEAD.pack(kind, flags, metric, length, network.to_bytes(16, "big")) + tail


def decode_entry(raw: bytes) -> ForwardingEntry:
    n = len(raw)
    if n == 38 and raw[1] == _ENTRY_HAS_NH and raw[37] == 0:
        # The common shape: next hop, no flow, no link name.
        kind_code, _, metric, length, packed, nh, _ = _ENTRY_NH.unpack(raw)
        kind = _KINDS.get(kind_code)
        if kind is None:
            raise WireError("bad-value", f"entry kind {kind_code}")
        if length > 128:
            raise WireError("bad-prefix", f"length {length}")
        network = int.from_bytes(packed, "big")
        if network & ~_MASKS[length]:
            raise WireError("bad-prefix", "host bits set")
        return ForwardingEntry(kind, Prefix(network, length), address_from_packed(nh),
                               None, "", metric)
    return _decode_entry_general(raw)


_ENTRY_NH_TLV = struct.Struct("!HHBBHB16s16sB")


def encode_entry_run(code: int, entries: tuple[ForwardingEntry, ...]) -> bytes:
    """Several entries as consecutive IEs of type ``code`` (one pack each)."""
    pack = _ENTRY_NH_TLV.pack
    parts = []
    for e in entries:
        kind, (network, length), next_hop, flow, link, metric = e
        if (flow is None and not link and next_hop is not None and kind in _KINDS
                and 0 <= length <= 128 and 0 <= network <= _ALL_ONES
                and not network & ~_MASKS[length] and 0 <= metric <= 0xFFFF):
            parts.append(pack(code, 38, kind, _ENTRY_HAS_NH, metric, length,
                              network.to_bytes(16, "big"), next_hop.packed, 0))
        else:
            raw = encode_entry(e)
            parts.append(_U16.pack(code) + _U16.pack(len(raw)) + raw)
    return b"".join(parts)


def decode_entry_run(data: bytes, pos: int, end: int) -> tuple[list[ForwardingEntry], int]:
    """Decode consecutive IEs of the type at ``pos`` (a TLV header); returns
    the entries and the position after them."""
    code = data[pos] << 8 | data[pos + 1]
    out: list[ForwardingEntry] = []
    append = out.append
    unpack = _ENTRY_NH_TLV.unpack_from
    kinds = _KINDS
    masks = _MASKS
    size = _ENTRY_NH_TLV.size
    while pos + 4 <= end:
        if pos + size <= end:
            c, ln, kind_code, flags, metric, length, packed, nh, link_len = unpack(data, pos)
            if c != code:
                break
            if ln == 38 and flags == _ENTRY_HAS_NH and link_len == 0:
                kind = kinds.get(kind_code)
                if kind is None:
                    raise WireError("bad-value", f"entry kind {kind_code}")
                if length > 128:
                    raise WireError("bad-prefix", f"length {length}")
                network = int.from_bytes(packed, "big")
                if network & ~masks[length]:
                    raise WireError("bad-prefix", "host bits set")
                append(ForwardingEntry(kind, Prefix(network, length), address_from_packed(nh),
                                       None, "", metric))
                pos += size
                continue
        elif (data[pos] << 8 | data[pos + 1]) != code:
            break
        ln = data[pos + 2] << 8 | data[pos + 3]
        stop = pos + 4 + ln
        if stop > end:
            raise WireError("truncated", f"IE {code} value")
        append(decode_entry(data[pos + 4 : stop]))
        pos = stop
    return out, pos


def _decode_entry_general(raw: bytes) -> ForwardingEntry:
    n = len(raw)
    if n < 22:
        raise WireError("bad-ie-length", "forwarding entry truncated")
    kind_code, flags, metric, length, packed = _ENTRY_HEAD.unpack_from(raw)
    kind = _KINDS.get(kind_code)
    if kind is None:
        raise WireError("bad-value", f"entry kind {kind_code}")
    prefix = _prefix(length, packed)
    pos = 21
    next_hop = None
    flow = None
    if flags:
        if flags & ~(_ENTRY_HAS_NH | _ENTRY_HAS_FLOW):
            raise WireError("bad-value", f"entry flags {flags:#x}")
        if flags & _ENTRY_HAS_NH:
            if n < 38:
                raise WireError("bad-ie-length", "entry next hop truncated")
            next_hop = address_from_packed(raw[21:37])
            pos = 37
        if flags & _ENTRY_HAS_FLOW:
            if n < pos + _FLOW.size + 1:
                raise WireError("bad-ie-length", "entry flow truncated")
            flow = decode_flow(raw[pos : pos + _FLOW.size])
            pos += _FLOW.size
    if n != pos + 1 + raw[pos]:
        raise WireError("bad-ie-length", "entry link name")
    link = ""
    if n > pos + 1:
        try:
            link = raw[pos + 1 :].decode()
        except UnicodeDecodeError as exc:
            raise WireError("bad-value", "link name not UTF-8") from exc
    return ForwardingEntry(kind, prefix, next_hop, flow, link, metric)


def encode_status(s: Status) -> bytes:
    text = s.message.encode()
    if len(text) > 255:
        raise WireError("bad-value", "status message longer than 255 bytes")
    return _U16.pack(int(s.code)) + text


def decode_status(raw: bytes) -> Status:
    if len(raw) < 2 or len(raw) > 257:
        raise WireError("bad-ie-length", "status")
    (code,) = _U16.unpack_from(raw)
    cause = _CAUSES.get(code)
    if cause is None:
        raise WireError("bad-value", f"cause {code}")
    try:
        return Status(cause, raw[2:].decode())
    except UnicodeDecodeError as exc:
        raise WireError("bad-value", "status text not UTF-8") from exc


def encode_load(v: Load) -> bytes:
    if not 0 <= v.percent <= 100:
        raise WireError("bad-value", f"load {v.percent}%")
    return _LOAD.pack(1 if v.active else 0, v.percent)


def decode_load(raw: bytes) -> Load:
    if len(raw) != 2:
        raise WireError("bad-ie-length", "load")
    active, percent = _LOAD.unpack(raw)
    if active > 1 or percent > 100:
        raise WireError("bad-value", "load")
    return Load(bool(active), percent)


def encode_dp_state(v: DpState) -> bytes:
    if any(not isinstance(x, int) or not 0 <= x <= 0xFFFFFFFF for x in v):
        raise WireError("bad-value", f"dp state {v!r}")
    return _DP_STATE.pack(*v)


def decode_dp_state(raw: bytes) -> DpState:
    if len(raw) != _DP_STATE.size:
        raise WireError("bad-ie-length", "dp state")
    return DpState(*_DP_STATE.unpack(raw))


# -- JSON forms -------------------------------------------------------------


def flow_to_json(f: FlowFilter) -> dict[str, Any]:
    return {
        "src": str(f.src), "dst": str(f.dst),
        "proto": f.proto, "sport": f.sport, "dport": f.dport,
    }


def flow_from_json(d: Any) -> FlowFilter:
    d = _obj(d, "flow")
    return FlowFilter(
        Prefix.parse(_str(d.get("src", "::/0"))),
        Prefix.parse(_str(d.get("dst", "::/0"))),
        _int(d.get("proto", 0)), _int(d.get("sport", 0)), _int(d.get("dport", 0)),
    )


def state_to_json(s: FlowState) -> dict[str, Any]:
    return {
        "flow": flow_to_json(s.flow), "qos_class": s.qos_class,
        "bytes_up": s.bytes_up, "bytes_down": s.bytes_down,
        "packets_up": s.packets_up, "packets_down": s.packets_down,
        "opaque": s.opaque.hex(),
    }


def state_from_json(d: Any) -> FlowState:
    d = _obj(d, "flow state")
    try:
        opaque = bytes.fromhex(_str(d.get("opaque", "")))
    except ValueError as exc:
        raise WireError("bad-json", "opaque is not hex") from exc
    return FlowState(
        flow_from_json(d.get("flow")), _int(d.get("qos_class", 0)),
        _int(d.get("bytes_up", 0)), _int(d.get("bytes_down", 0)),
        _int(d.get("packets_up", 0)), _int(d.get("packets_down", 0)), opaque,
    )


def binding_to_json(b: MnBinding) -> dict[str, Any]:
    return {"prefix": str(b.prefix), "forwarding_address": str(b.forwarding_address),
            "lifetime": b.lifetime, "flows": b.flows}


def binding_from_json(d: Any) -> MnBinding:
    d = _obj(d, "binding")
    return MnBinding(Prefix.parse(_str(d.get("prefix"))),
                     parse_address(_str(d.get("forwarding_address"))),
                     _int(d.get("lifetime")), _int(d.get("flows", 0)))


def entry_to_json(e: ForwardingEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": e.kind.name, "prefix": str(e.prefix)}
    if e.next_hop is not None:
        out["next_hop"] = str(e.next_hop)
    if e.flow is not None:
        out["flow"] = flow_to_json(e.flow)
    if e.link:
        out["link"] = e.link
    if e.metric:
        out["metric"] = e.metric
    return out


def entry_from_json(d: Any) -> ForwardingEntry:
    d = _obj(d, "forwarding entry")
    kind_name = _str(d.get("kind"))
    try:
        kind = EntryKind[kind_name]
    except KeyError as exc:
        raise WireError("bad-json", f"entry kind {kind_name!r}") from exc
    nh = d.get("next_hop")
    flow = d.get("flow")
    return ForwardingEntry(
        kind, Prefix.parse(_str(d.get("prefix"))),
        parse_address(_str(nh)) if nh is not None else None,
        flow_from_json(flow) if flow is not None else None,
        _str(d.get("link", "")), _int(d.get("metric", 0)),
    )


def status_to_json(s: Status) -> dict[str, Any]:
    return {"code": s.code.name, "message": s.message}


def status_from_json(d: Any) -> Status:
    d = _obj(d, "status")
    name = _str(d.get("code", "OK"))
    try:
        return Status(Cause[name], _str(d.get("message", "")))
    except KeyError as exc:
        raise WireError("bad-json", f"cause {name!r}") from exc


def load_to_json(v: Load) -> dict[str, Any]:
    return {"active": v.active, "percent": v.percent}


def load_from_json(d: Any) -> Load:
    d = _obj(d, "load")
    active = d.get("active")
    if not isinstance(active, bool):
        raise WireError("bad-json", "load.active must be a boolean")
    return Load(active, _int(d.get("percent")))


def dp_state_to_json(v: DpState) -> dict[str, Any]:
    return v._asdict()


def dp_state_from_json(d: Any) -> DpState:
    d = _obj(d, "dp state")
    return DpState(*(_int(d.get(f)) for f in DpState._fields))


def _obj(d: Any, what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise WireError("bad-json", f"{what} must be an object")
    return d


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise WireError("bad-json", f"expected a string, got {v!r}")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise WireError("bad-json", f"expected an integer, got {v!r}")
    return v
