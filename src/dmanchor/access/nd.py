"""Router Advertisements and Solicitations (RFC 4861), sans-IO.

The access router advertises the MN's prefixes: its own (new flows use
them) and, after a move, the prefixes of earlier networks that flows still
use, with a preferred lifetime of 0 - deprecated, so new flows do not pick
them while existing ones keep working (draft 4.1, "mobility only when
needed").  An MN's Router Solicitation may carry the Previous Prefix option
(draft-jhlee-dmm-dnpp in spirit; format in docs/protocol.md section 8) so the
new router learns which prefixes to keep reachable.

The ICMPv6 checksum is left 0: the kernel fills it for raw ICMPv6 sockets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from ..wire.types import Prefix

ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
OPT_SOURCE_LLADDR = 1
OPT_PREFIX_INFO = 3
OPT_MTU = 5
OPT_PREVIOUS_PREFIX = 253
"""Experimental option type (RFC 4727) carrying a previous prefix."""
PIO_ON_LINK = 0x80
PIO_AUTONOMOUS = 0x40


class NdError(ValueError):
    """A malformed RA or RS."""


@dataclass(frozen=True, slots=True)
class PrefixInfo:
    """A Prefix Information option."""

    prefix: Prefix
    valid: int
    preferred: int
    on_link: bool = True
    autonomous: bool = True


@dataclass(frozen=True, slots=True)
class RouterAdvertisement:
    """What an access router advertises on an MN's link."""

    router_lifetime: int = 1800
    prefixes: tuple[PrefixInfo, ...] = ()
    mtu: int | None = None
    source_lladdr: bytes | None = None
    hop_limit: int = 64


@dataclass(frozen=True, slots=True)
class RouterSolicitation:
    """An MN's solicitation, optionally naming its previous prefixes."""

    previous: tuple[Prefix, ...] = ()
    source_lladdr: bytes | None = None


def _lladdr(mac: bytes) -> bytes:
    if len(mac) != 6:
        raise NdError("link-layer address must be 6 bytes")
    return bytes((OPT_SOURCE_LLADDR, 1)) + mac


MLD_QUERY = 130
ROUTER_ALERT_HOPOPTS = bytes((0, 0, 5, 2, 0, 0, 1, 0))
"""The hop-by-hop header an MLD message carries (RFC 3810 5): Router Alert
(MLD), padded to 8 bytes; the kernel fills in the next header."""


def encode_mld_query(max_response_ms: int = 100) -> bytes:
    """An MLDv2 General Query (RFC 3810 5.1): every host on the link reports
    its groups within ``max_response_ms`` (below 32768: the code is the
    delay itself), with robustness 2 and a 125 s query interval."""
    return struct.pack("!BBHHH16sBBH", MLD_QUERY, 0, 0, max_response_ms, 0, bytes(16),
                       2, 125, 0)


def encode_ra(ra: RouterAdvertisement) -> bytes:
    """ICMPv6 Router Advertisement bytes."""
    out = [struct.pack("!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, ra.hop_limit, 0,
                       ra.router_lifetime, 0, 0)]
    if ra.source_lladdr is not None:
        out.append(_lladdr(ra.source_lladdr))
    if ra.mtu is not None:
        out.append(struct.pack("!BBHI", OPT_MTU, 1, 0, ra.mtu))
    for p in ra.prefixes:
        if p.preferred > p.valid:
            raise NdError(f"{p.prefix}: preferred lifetime above valid lifetime")
        flags = (PIO_ON_LINK if p.on_link else 0) | (PIO_AUTONOMOUS if p.autonomous else 0)
        out.append(struct.pack("!BBBBIII16s", OPT_PREFIX_INFO, 4, p.prefix.length, flags,
                               p.valid, p.preferred, 0, p.prefix.network.to_bytes(16, "big")))
    return b"".join(out)


def _options(data: bytes, pos: int) -> list[tuple[int, bytes]]:
    out = []
    while pos < len(data):
        if len(data) - pos < 2:
            raise NdError("truncated option")
        kind, units = data[pos], data[pos + 1]
        if units == 0:
            raise NdError("option of length 0")
        end = pos + units * 8
        if end > len(data):
            raise NdError("option longer than the message")
        out.append((kind, data[pos:end]))
        pos = end
    return out


def _prefix(length: int, raw: bytes) -> Prefix:
    if length > 128:
        raise NdError(f"prefix length {length}")
    mask = ((1 << 128) - 1) ^ ((1 << (128 - length)) - 1)
    return Prefix(int.from_bytes(raw, "big") & mask, length)


def decode_ra(data: bytes) -> RouterAdvertisement:
    """Parse a Router Advertisement; raises only :class:`NdError`."""
    if len(data) < 16 or data[0] != ROUTER_ADVERTISEMENT:
        raise NdError("not a router advertisement")
    hop_limit = data[4]
    lifetime = struct.unpack_from("!H", data, 6)[0]
    prefixes = []
    mtu = lladdr = None
    for kind, body in _options(data, 16):
        if kind == OPT_PREFIX_INFO:
            if len(body) != 32:
                raise NdError("prefix information option must be 32 bytes")
            _, _, plen, flags, valid, pref, _, raw = struct.unpack("!BBBBIII16s", body)
            prefixes.append(PrefixInfo(_prefix(plen, raw), valid, pref,
                                       bool(flags & PIO_ON_LINK), bool(flags & PIO_AUTONOMOUS)))
        elif kind == OPT_MTU and len(body) == 8:
            mtu = struct.unpack_from("!I", body, 4)[0]
        elif kind == OPT_SOURCE_LLADDR and len(body) == 8:
            lladdr = body[2:]
    return RouterAdvertisement(lifetime, tuple(prefixes), mtu, lladdr, hop_limit)


def encode_rs(rs: RouterSolicitation) -> bytes:
    """ICMPv6 Router Solicitation bytes, with Previous Prefix options."""
    out = [struct.pack("!BBHI", ROUTER_SOLICITATION, 0, 0, 0)]
    if rs.source_lladdr is not None:
        out.append(_lladdr(rs.source_lladdr))
    for p in rs.previous:
        out.append(struct.pack("!BBB5x16s", OPT_PREVIOUS_PREFIX, 3, p.length,
                               p.network.to_bytes(16, "big")))
    return b"".join(out)


NEIGHBOR_ADVERTISEMENT = 136


def encode_unsolicited_na(target: IPv6Address, lladdr: bytes) -> bytes:
    """An unsolicited Neighbor Advertisement (Override set) for ``target``,
    with its target link-layer address option: it tells the routers of the
    link where ``target`` is before they have to ask (RFC 4861 7.2.6)."""
    return (struct.pack("!BBHI", NEIGHBOR_ADVERTISEMENT, 0, 0, 0x20000000)
            + target.packed + struct.pack("!BB", 2, 1) + lladdr)


def decode_rs(data: bytes) -> RouterSolicitation:
    """Parse a Router Solicitation; raises only :class:`NdError`."""
    if len(data) < 8 or data[0] != ROUTER_SOLICITATION:
        raise NdError("not a router solicitation")
    previous = []
    lladdr = None
    for kind, body in _options(data, 8):
        if kind == OPT_PREVIOUS_PREFIX:
            if len(body) != 24:
                raise NdError("previous prefix option must be 24 bytes")
            previous.append(_prefix(body[2], body[8:24]))
        elif kind == OPT_SOURCE_LLADDR and len(body) == 8:
            lladdr = body[2:]
    return RouterSolicitation(tuple(previous), lladdr)
