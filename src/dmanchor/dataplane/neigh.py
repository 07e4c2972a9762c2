"""Neighbour reachability as the kernel sees it (rtnetlink neighbour events).

On a shared access link an MN can leave without any carrier event.  The
kernel still finds out, by Neighbor Unreachability Detection (RFC 4861
section 7.3): when a packet is forwarded to a neighbour whose entry is
STALE, the entry goes DELAY, then PROBE (unicast Neighbor Solicitations),
then FAILED when no Neighbor Advertisement answered.  The kernel multicasts
each of these changes on ``RTNLGRP_NEIGH``; nothing is polled.

The attributes are declared as data (pyroute2's ``nla_map`` style); the
parser is a pure function of a message's bytes, for golden tests.
"""

from __future__ import annotations

import enum
import socket
import struct
from ipaddress import IPv6Address
from typing import NamedTuple

from .netlink import Multicast, Netlink

RTNLGRP_NEIGH = 3
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NDMSG = struct.Struct("=BxxxiHBB")
"""struct ndmsg: family, ifindex, state, flags, type."""
_NLA = struct.Struct("=HH")
_NLMSGHDR = struct.Struct("=IHHII")

# Attributes (linux/neighbour.h): name -> type.
NDA = {"dst": 1, "lladdr": 2}


class Nud(enum.IntFlag):
    """Neighbour entry states (``NUD_*``, linux/neighbour.h)."""

    INCOMPLETE = 0x01
    REACHABLE = 0x02
    STALE = 0x04
    DELAY = 0x08
    PROBE = 0x10
    FAILED = 0x20
    NOARP = 0x40
    PERMANENT = 0x80


VALID = Nud.REACHABLE | Nud.STALE | Nud.DELAY | Nud.PROBE | Nud.NOARP | Nud.PERMANENT
"""States of an entry with a link-layer address the kernel still uses."""


class NeighEvent(NamedTuple):
    """One change of an IPv6 neighbour entry."""

    ifindex: int
    """The link's interface index."""
    address: IPv6Address
    """The neighbour's IPv6 address."""
    state: Nud
    """Its state now (meaningless when ``deleted``)."""
    lladdr: bytes | None = None
    """Its link-layer address, when the kernel says (not in FAILED)."""
    deleted: bool = False
    """The entry is gone (garbage-collected, flushed, or its link went)."""


def _attrs(data: bytes, pos: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while pos + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, pos)
        if length < _NLA.size or pos + length > len(data):
            break
        out[kind & 0x3FFF] = data[pos + _NLA.size:pos + length]
        pos += (length + 3) & ~3
    return out


def parse(mtype: int, body: bytes) -> NeighEvent | None:
    """The event in one rtnetlink message (None: not an IPv6 neighbour change)."""
    if mtype not in (RTM_NEWNEIGH, RTM_DELNEIGH) or len(body) < NDMSG.size:
        return None
    family, ifindex, state, _, _ = NDMSG.unpack_from(body)
    if family != socket.AF_INET6:
        return None
    attrs = _attrs(body, NDMSG.size)
    dst = attrs.get(NDA["dst"])
    if dst is None or len(dst) != 16:
        return None
    return NeighEvent(ifindex, IPv6Address(dst), Nud(state & 0xFF),
                      attrs.get(NDA["lladdr"]), mtype == RTM_DELNEIGH)


def neighbours(nl: Netlink, index: int) -> list[NeighEvent]:
    """The IPv6 neighbour entries of one link (``ip -6 neigh show dev``)."""
    body = NDMSG.pack(socket.AF_INET6, index, 0, 0, 0)
    return [ev for ev in nl.dump(RTM_GETNEIGH, body, lambda data: parse(RTM_NEWNEIGH, data))
            if ev.ifindex == index]


def encode(ev: NeighEvent, seq: int = 0) -> bytes:
    """The netlink message the kernel would send for ``ev`` (tests, vectors)."""
    def nla(kind: int, payload: bytes) -> bytes:
        length = _NLA.size + len(payload)
        return _NLA.pack(length, kind) + payload + b"\0" * (((length + 3) & ~3) - length)

    body = NDMSG.pack(socket.AF_INET6, ev.ifindex, int(ev.state), 0, 1)
    body += nla(NDA["dst"], ev.address.packed)
    if ev.lladdr is not None:
        body += nla(NDA["lladdr"], ev.lladdr)
    mtype = RTM_DELNEIGH if ev.deleted else RTM_NEWNEIGH
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, 0, seq, 0) + body


class NeighbourMonitor(Multicast):
    """The IPv6 neighbour changes of one namespace, read without blocking."""

    def __init__(self, netns: str | None = None) -> None:
        super().__init__(netns, RTNLGRP_NEIGH)

    def read(self) -> list[NeighEvent]:
        """Changes received so far; never blocks."""
        out = []
        for mtype, body in self._messages():
            ev = parse(mtype, body)
            if ev is not None:
                out.append(ev)
        return out
