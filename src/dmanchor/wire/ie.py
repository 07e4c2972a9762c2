"""Information element (IE) type codes and their value codecs.

An IE is a TLV: ``type u16 | length u16 | value``.  Codes with the high bit
set (>= 0x8000) may be skipped by a receiver that does not know them; any
other unknown code makes the message malformed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv6Address
from typing import Any

from . import types as t
from .errors import WireError


class IE(IntEnum):
    """IE type codes (see docs/protocol.md, section 3)."""

    PREFIX = 1
    FORWARDING_ADDRESS = 2
    DPA_ADDRESS = 3
    CPA_ADDRESS = 4
    LMS_ADDRESS = 5
    FM_ADDRESS = 6
    LIFETIME = 7
    STATUS = 8
    LOAD = 9
    NODE_ID = 10
    FLOW = 11
    FLOW_STATE = 12
    ENTRY_ADD = 13
    ENTRY_DELETE = 14
    BUFFER_LIMIT = 15
    TIMEOUT_MS = 16
    COUNT = 17
    ORIGIN = 18
    MN_ID = 19
    BINDING = 20
    AUTH = 255
    DP_STATE = 0x8015
    TRANSFER_ID = 0x8016
    """Skippable: a controller that predates it still takes the report."""


OPTIONAL_TO_UNDERSTAND = 0x8000
INFINITE_LIFETIME = 0xFFFFFFFF

_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class ValueCodec:
    """How one kind of IE value is written, read and shown as JSON."""

    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]
    to_json: Callable[[Any], Any]
    from_json: Callable[[Any], Any]


def _enc_u32(v: int) -> bytes:
    if not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
        raise WireError("bad-value", f"u32 {v!r}")
    return _U32.pack(v)


def _dec_u32(raw: bytes) -> int:
    if len(raw) != 4:
        raise WireError("bad-ie-length", "u32")
    return int(_U32.unpack(raw)[0])


def _enc_u64(v: int) -> bytes:
    if not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFFFFFFFFFF:
        raise WireError("bad-value", f"u64 {v!r}")
    return _U64.pack(v)


def _dec_u64(raw: bytes) -> int:
    if len(raw) != 8:
        raise WireError("bad-ie-length", "u64")
    return int(_U64.unpack(raw)[0])


def _enc_name(v: str) -> bytes:
    raw = v.encode()
    if not 1 <= len(raw) <= 64:
        raise WireError("bad-value", f"node id {v!r} must be 1..64 bytes")
    return raw


def _dec_name(raw: bytes) -> str:
    if not 1 <= len(raw) <= 64:
        raise WireError("bad-ie-length", "node id")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise WireError("bad-value", "node id not UTF-8") from exc


def _json_int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise WireError("bad-json", f"expected an integer, got {v!r}")
    return v


def _json_str(v: Any) -> str:
    if not isinstance(v, str):
        raise WireError("bad-json", f"expected a string, got {v!r}")
    return v


def _addr_from_json(v: Any) -> IPv6Address:
    return t.parse_address(_json_str(v))


def _prefix_from_json(v: Any) -> t.Prefix:
    return t.Prefix.parse(_json_str(v))


PREFIX = ValueCodec(t.encode_prefix, t.decode_prefix, str, _prefix_from_json)
ADDRESS = ValueCodec(t.encode_address, t.decode_address, str, _addr_from_json)
U32 = ValueCodec(_enc_u32, _dec_u32, lambda v: v, _json_int)
U64 = ValueCodec(_enc_u64, _dec_u64, lambda v: v, _json_int)
NAME = ValueCodec(_enc_name, _dec_name, lambda v: v, _json_str)

CODECS: dict[IE, ValueCodec] = {
    IE.PREFIX: PREFIX,
    IE.FORWARDING_ADDRESS: ADDRESS,
    IE.DPA_ADDRESS: ADDRESS,
    IE.CPA_ADDRESS: ADDRESS,
    IE.LMS_ADDRESS: ADDRESS,
    IE.FM_ADDRESS: ADDRESS,
    IE.LIFETIME: U32,
    IE.STATUS: ValueCodec(
        t.encode_status, t.decode_status, t.status_to_json, t.status_from_json
    ),
    IE.LOAD: ValueCodec(t.encode_load, t.decode_load, t.load_to_json, t.load_from_json),
    IE.NODE_ID: NAME,
    IE.FLOW: ValueCodec(t.encode_flow, t.decode_flow, t.flow_to_json, t.flow_from_json),
    IE.FLOW_STATE: ValueCodec(
        t.encode_flow_state, t.decode_flow_state, t.state_to_json, t.state_from_json
    ),
    IE.ENTRY_ADD: ValueCodec(
        t.encode_entry, t.decode_entry, t.entry_to_json, t.entry_from_json
    ),
    IE.ENTRY_DELETE: ValueCodec(
        t.encode_entry, t.decode_entry, t.entry_to_json, t.entry_from_json
    ),
    IE.BUFFER_LIMIT: U32,
    IE.TIMEOUT_MS: U32,
    IE.COUNT: U64,
    IE.ORIGIN: NAME,
    IE.MN_ID: NAME,
    IE.DP_STATE: ValueCodec(
        t.encode_dp_state, t.decode_dp_state, t.dp_state_to_json, t.dp_state_from_json
    ),
    IE.BINDING: ValueCodec(
        t.encode_binding, t.decode_binding, t.binding_to_json, t.binding_from_json
    ),
    IE.TRANSFER_ID: U64,
}
