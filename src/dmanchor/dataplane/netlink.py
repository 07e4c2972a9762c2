"""Minimal rtnetlink: routes, SRv6 nexthops and seg6local routes, FIB rules.

Requests are pipelined: a batch of messages goes to the kernel in as few
``send`` calls as the socket buffer allows, and the acknowledgements are
read afterwards, so a handover's intents cost one round trip rather than
one per object (pyroute2's ``route()`` costs ~250 us a call here).  Each
failure is reported as a :class:`NetlinkError` naming the object and the
errno.  A socket can be opened inside a named network namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TypeVar

# -- Constants (linux/netlink.h, rtnetlink.h, fib_rules.h, nexthop.h, seg6*.h) ----

NETLINK_ROUTE = 0
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3

RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_GETADDR = 22
IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 6, 8
IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x20, 0x40
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
RTM_NEWNEXTHOP, RTM_DELNEXTHOP, RTM_GETNEXTHOP = 104, 105, 106

RTA_DST, RTA_SRC, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY = 1, 2, 4, 5, 6
RTA_TABLE, RTA_ENCAP_TYPE, RTA_ENCAP, RTA_NH_ID = 15, 21, 22, 30
RTN_UNICAST, RTN_BLACKHOLE = 1, 6
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RT_TABLE_MAIN = 254

LWTUNNEL_ENCAP_SEG6, LWTUNNEL_ENCAP_SEG6_LOCAL = 5, 7
SEG6_IPTUNNEL_SRH = 1
SEG6_IPTUN_MODE_ENCAP = 1
SEG6_LOCAL_ACTION, SEG6_LOCAL_TABLE, SEG6_LOCAL_COUNTERS = 1, 3, 10
SEG6_LOCAL_ACTION_END_T, SEG6_LOCAL_ACTION_END_DT6 = 3, 7
SEG6_LOCAL_CNT_PACKETS, SEG6_LOCAL_CNT_BYTES, SEG6_LOCAL_CNT_ERRORS = 2, 3, 4

NHA_ID, NHA_OIF, NHA_ENCAP_TYPE, NHA_ENCAP = 1, 5, 7, 8

FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_TABLE = 1, 2, 3, 6, 15
FRA_PROTOCOL, FRA_IP_PROTO, FRA_SPORT_RANGE, FRA_DPORT_RANGE = 21, 22, 23, 24
FR_ACT_TO_TBL = 1
FR_ACT_BLACKHOLE = 6

RTPROT_DMANCHOR = 77
"""Protocol tag on every route, rule and nexthop dmanchor installs: what
reconciliation reads back as ours, and never touches anything else."""

_NLMSGHDR = struct.Struct("=IHHII")
_NLMSGERR = struct.Struct("=i")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NHMSG = struct.Struct("=BBBBI")
_RULEHDR = struct.Struct("=BBBBBBBBI")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
_U64 = struct.Struct("=Q")

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class NetlinkError(OSError):
    """The kernel refused an operation; ``what`` names the object.

    An :class:`OSError`, so daemons report it like any other system error
    (a missing privilege is one line, not a traceback).
    """

    def __init__(self, what: str, err: int) -> None:
        super().__init__(err, f"{what}: {os.strerror(err)} (errno {err})")
        self.what = what

    def __str__(self) -> str:
        return str(self.strerror)


def _align(n: int) -> int:
    return (n + 3) & ~3


def rta(kind: int, payload: bytes) -> bytes:
    """One route attribute (padded)."""
    length = _RTA.size + len(payload)
    return _RTA.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def split_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, sequence number, body) of each netlink message in one
    datagram; a truncated tail ends it."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, mtype, flags, seq, _ = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            return
        yield mtype, flags, seq, data[pos + _NLMSGHDR.size:pos + length]
        pos += _align(length)


def _parse_attrs(data: bytes, pos: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while pos + 4 <= end:
        length, kind = _RTA.unpack_from(data, pos)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[pos + 4 : pos + length]
        pos += _align(length)
    return out


# -- Requests -------------------------------------------------------------------------


class _RouteName:
    """Describes a route for errors; formatted only if an error happens."""

    __slots__ = ("dst", "dst_len")

    def __init__(self, dst: bytes, dst_len: int) -> None:
        self.dst = dst
        self.dst_len = dst_len

    def __str__(self) -> str:
        return f"route {IPv6Address(self.dst)}/{self.dst_len}"


@dataclass(frozen=True, slots=True)
class Request:
    """One netlink request of a batch, with a description for errors."""

    msg_type: int
    flags: int
    body: bytes
    what: object
    """Names the object in errors (anything with a ``str``)."""
    tolerate: tuple[int, ...] = ()
    """Errnos that count as success (e.g. ENOENT for an idempotent delete)."""


_ATTR16 = struct.Struct("=HH16s")
_ATTR32 = struct.Struct("=HHI")
_TABLE_MAIN = _ATTR32.pack(8, RTA_TABLE, RT_TABLE_MAIN)
def _dt6_encap(table: int) -> bytes:
    return (
        rta(RTA_ENCAP_TYPE, _U16.pack(LWTUNNEL_ENCAP_SEG6_LOCAL))
        + rta(RTA_ENCAP | 0x8000, rta(SEG6_LOCAL_ACTION, _U32.pack(SEG6_LOCAL_ACTION_END_DT6))
              + rta(SEG6_LOCAL_TABLE, _U32.pack(table)))
    )


def _trap_encap(sink: int) -> bytes:
    # End.T into ``sink`` with per-route counters: the kernel wants all
    # three counters named (as zeros) to turn them on.
    zeros = b"".join(rta(k, _U64.pack(0)) for k in (
        SEG6_LOCAL_CNT_PACKETS, SEG6_LOCAL_CNT_BYTES, SEG6_LOCAL_CNT_ERRORS))
    return (
        rta(RTA_ENCAP_TYPE, _U16.pack(LWTUNNEL_ENCAP_SEG6_LOCAL))
        + rta(RTA_ENCAP | 0x8000, rta(SEG6_LOCAL_ACTION, _U32.pack(SEG6_LOCAL_ACTION_END_T))
              + rta(SEG6_LOCAL_TABLE, _U32.pack(sink))
              + rta(SEG6_LOCAL_COUNTERS | 0x8000, zeros))
    )


_DT6_ENCAP = _dt6_encap(RT_TABLE_MAIN)
_ADD_EXCL = NLM_F_CREATE | NLM_F_EXCL
_ADD_REPLACE = NLM_F_CREATE | NLM_F_REPLACE
_TOLERATE_EXIST = (errno.EEXIST,)
_TOLERATE_GONE = (errno.ESRCH,)


def route(
    add: bool, dst: bytes, dst_len: int, *, table: int = RT_TABLE_MAIN,
    gateway: bytes | None = None, oif: int | None = None, nhid: int | None = None,
    blackhole: bool = False, metric: int | None = None, seg6local_dt6: bool = False,
    protocol: int = RTPROT_DMANCHOR, replace: bool = False, dt6_table: int = RT_TABLE_MAIN,
    trap_into: int | None = None,
) -> Request:
    """RTM_NEWROUTE / RTM_DELROUTE for an IPv6 prefix (addresses as 16 bytes).

    ``trap_into``: a counting trap, ``encap seg6local action End.T table
    TRAP_INTO count``.  Whatever the route takes is counted by the kernel
    (``packets`` if it had a segment left, ``errors`` otherwise) and, with a
    blackhole as the only route of table ``trap_into``, dropped.

    On the handover path: built with a few struct calls, no string work.
    """
    local = seg6local_dt6 or trap_into is not None
    if add:
        rtype = RTN_BLACKHOLE if blackhole else RTN_UNICAST
        scope = RT_SCOPE_LINK if (oif is not None and gateway is None and nhid is None
                                  and not local and not blackhole) else RT_SCOPE_UNIVERSE
        hdr = _RTMSG.pack(socket.AF_INET6, dst_len, 0, 0, table if table < 256 else 252,
                          protocol, scope, rtype, 0)
    else:
        hdr = _RTMSG.pack(socket.AF_INET6, dst_len, 0, 0, table if table < 256 else 252,
                          protocol if protocol != RTPROT_DMANCHOR else 0, 0, 0, 0)
    body = hdr + _ATTR16.pack(20, RTA_DST, dst) + (
        _TABLE_MAIN if table == RT_TABLE_MAIN else _ATTR32.pack(8, RTA_TABLE, table))
    if gateway is not None:
        body += _ATTR16.pack(20, RTA_GATEWAY, gateway)
    if oif is not None:
        body += _ATTR32.pack(8, RTA_OIF, oif)
    if nhid is not None:
        body += _ATTR32.pack(8, RTA_NH_ID, nhid)
    if metric is not None:
        body += _ATTR32.pack(8, RTA_PRIORITY, metric)
    if seg6local_dt6:
        body += _DT6_ENCAP if dt6_table == RT_TABLE_MAIN else _dt6_encap(dt6_table)
    elif trap_into is not None and add:
        body += _trap_encap(trap_into)
    what = _RouteName(dst, dst_len)
    if add:
        if replace:
            return Request(RTM_NEWROUTE, _ADD_REPLACE, body, what)
        return Request(RTM_NEWROUTE, _ADD_EXCL, body, what, _TOLERATE_EXIST)
    return Request(RTM_DELROUTE, 0, body, what, _TOLERATE_GONE)


def seg6_nexthop(add: bool, nhid: int, segment: IPv6Address, oif: int) -> Request:
    """RTM_NEWNEXTHOP with SRv6 encapsulation towards one segment (shared by routes)."""
    hdr = _NHMSG.pack(socket.AF_INET6, 0, RTPROT_DMANCHOR if add else 0, 0, 0)
    attrs = rta(NHA_ID, _U32.pack(nhid))
    if add:
        # struct seg6_iptunnel_encap { int mode; struct ipv6_sr_hdr srh; }
        srh = struct.pack("=BBBBBBH", 0, 2, 4, 0, 0, 0, 0) + segment.packed
        tun = struct.pack("=i", SEG6_IPTUN_MODE_ENCAP) + srh
        attrs += rta(NHA_OIF, _U32.pack(oif))
        attrs += rta(NHA_ENCAP_TYPE, _U16.pack(LWTUNNEL_ENCAP_SEG6))
        attrs += rta(NHA_ENCAP | 0x8000, rta(SEG6_IPTUNNEL_SRH, tun))
        return Request(RTM_NEWNEXTHOP, NLM_F_CREATE | NLM_F_REPLACE, hdr + attrs,
                       f"nexthop {nhid} seg6 {segment}")
    return Request(RTM_DELNEXTHOP, 0, hdr + attrs, f"nexthop {nhid}", (errno.ENOENT,))


def rule(
    add: bool, priority: int, table: int, *, src: tuple[IPv6Address, int] | None = None,
    dst: tuple[IPv6Address, int] | None = None, proto: int = 0, sport: int = 0,
    dport: int = 0, iif: str = "", blackhole: bool = False, fwmark: int = 0,
    protocol: int = RTPROT_DMANCHOR,
) -> Request:
    """RTM_NEWRULE / RTM_DELRULE: an FM:3-1 5-tuple rule, or a blackhole rule."""
    action = FR_ACT_BLACKHOLE if blackhole else FR_ACT_TO_TBL
    hdr = _RULEHDR.pack(socket.AF_INET6, dst[1] if dst else 0, src[1] if src else 0, 0,
                        0 if blackhole else (table if table < 256 else 252), 0, 0, action, 0)
    attrs = rta(FRA_PRIORITY, _U32.pack(priority))
    if not blackhole:
        attrs += rta(FRA_TABLE, _U32.pack(table))
    attrs += rta(FRA_PROTOCOL, bytes((protocol,)))
    if src:
        attrs += rta(FRA_SRC, src[0].packed)
    if dst:
        attrs += rta(FRA_DST, dst[0].packed)
    if proto:
        attrs += rta(FRA_IP_PROTO, bytes((proto,)))
    if sport:
        attrs += rta(FRA_SPORT_RANGE, struct.pack("=HH", sport, sport))
    if dport:
        attrs += rta(FRA_DPORT_RANGE, struct.pack("=HH", dport, dport))
    if iif:
        attrs += rta(FRA_IIFNAME, iif.encode() + b"\0")
    if fwmark:
        attrs += rta(10, _U32.pack(fwmark))  # FRA_FWMARK
    what = f"rule {priority} -> table {table}"
    if add:
        return Request(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, hdr + attrs, what,
                       (errno.EEXIST,))
    return Request(RTM_DELRULE, 0, hdr + attrs, what, (errno.ENOENT,))


# -- Read back ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A route as dumped from the kernel."""

    dst: IPv6Address
    dst_len: int
    table: int
    protocol: int
    type: int
    gateway: IPv6Address | None
    oif: int | None
    nhid: int | None
    metric: int | None
    seg6local: bool
    counters: tuple[int, int, int] | None = None
    """A seg6local route's (packets, bytes, errors), when it counts."""


@dataclass(frozen=True, slots=True)
class KernelNexthop:
    """A nexthop object as dumped from the kernel."""

    nhid: int
    protocol: int
    oif: int | None
    segment: IPv6Address | None


@dataclass(frozen=True, slots=True)
class KernelRule:
    """An IPv6 FIB rule as dumped from the kernel."""

    action: int
    iif: str
    priority: int
    table: int
    protocol: int
    src: tuple[IPv6Address, int] | None
    dst: tuple[IPv6Address, int] | None
    proto: int
    sport: int
    dport: int


def _parse_route(data: bytes) -> KernelRoute | None:
    family, dst_len, _, _, table, protocol, _, rtype, _ = _RTMSG.unpack_from(data)
    if family != socket.AF_INET6:
        return None
    a = _parse_attrs(data, _RTMSG.size, len(data))
    if RTA_TABLE in a:
        table = _U32.unpack(a[RTA_TABLE][:4])[0]
    encap_type = _U16.unpack(a[RTA_ENCAP_TYPE][:2])[0] if RTA_ENCAP_TYPE in a else 0
    counters = None
    if encap_type == LWTUNNEL_ENCAP_SEG6_LOCAL and RTA_ENCAP in a:
        nest = _parse_attrs(a[RTA_ENCAP], 0, len(a[RTA_ENCAP])).get(SEG6_LOCAL_COUNTERS)
        if nest is not None:
            c = _parse_attrs(nest, 0, len(nest))

            def u64(kind: int) -> int:
                v = c.get(kind, b"")
                return int(_U64.unpack(v[:8])[0]) if len(v) >= 8 else 0

            counters = (u64(SEG6_LOCAL_CNT_PACKETS), u64(SEG6_LOCAL_CNT_BYTES),
                        u64(SEG6_LOCAL_CNT_ERRORS))
    return KernelRoute(
        IPv6Address(a[RTA_DST]) if RTA_DST in a else IPv6Address(0), dst_len, table,
        protocol, rtype,
        IPv6Address(a[RTA_GATEWAY]) if RTA_GATEWAY in a else None,
        _U32.unpack(a[RTA_OIF][:4])[0] if RTA_OIF in a else None,
        _U32.unpack(a[RTA_NH_ID][:4])[0] if RTA_NH_ID in a else None,
        _U32.unpack(a[RTA_PRIORITY][:4])[0] if RTA_PRIORITY in a else None,
        encap_type == LWTUNNEL_ENCAP_SEG6_LOCAL,
        counters,
    )


def _parse_nexthop(data: bytes) -> KernelNexthop | None:
    family, _, protocol, _, _ = _NHMSG.unpack_from(data)
    a = _parse_attrs(data, _NHMSG.size, len(data))
    if NHA_ID not in a:
        return None
    segment = None
    if NHA_ENCAP in a:
        inner = _parse_attrs(a[NHA_ENCAP], 0, len(a[NHA_ENCAP]))
        tun = inner.get(SEG6_IPTUNNEL_SRH)
        if tun is not None and len(tun) >= 4 + 8 + 16:
            segment = IPv6Address(tun[12:28])
    del family
    return KernelNexthop(_U32.unpack(a[NHA_ID][:4])[0], protocol,
                         _U32.unpack(a[NHA_OIF][:4])[0] if NHA_OIF in a else None, segment)


@dataclass(frozen=True, slots=True)
class KernelAddress:
    """One IPv6 address of a link, as the kernel holds it."""

    address: IPv6Address
    prefix_length: int
    index: int
    flags: int
    """IFA_F_* bits (0x20 deprecated, 0x40 tentative, ...)."""
    scope: int
    updated: int = 0
    """When its lifetimes were last set, in the kernel's 1/100 s since boot
    (``tstamp``): a router advertisement of its prefix refreshes it."""

    @property
    def deprecated(self) -> bool:
        """Valid but no longer preferred: new connections do not pick it."""
        return bool(self.flags & IFA_F_DEPRECATED)

    @property
    def tentative(self) -> bool:
        """Still under duplicate address detection: not usable yet."""
        return bool(self.flags & IFA_F_TENTATIVE)


def _parse_address(data: bytes) -> KernelAddress | None:
    if len(data) < _IFADDRMSG.size:
        return None
    family, plen, flags, scope, index = _IFADDRMSG.unpack_from(data)
    if family != socket.AF_INET6:
        return None
    attrs = _parse_attrs(data, _IFADDRMSG.size, len(data))
    raw = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
    if raw is None or len(raw) != 16:
        return None
    if IFA_FLAGS in attrs and len(attrs[IFA_FLAGS]) == 4:
        flags = _U32.unpack(attrs[IFA_FLAGS])[0]  # the full 32 bits
    info = attrs.get(IFA_CACHEINFO, b"")
    # struct ifa_cacheinfo: preferred, valid, cstamp, tstamp (u32 each).
    updated = _U32.unpack_from(info, 12)[0] if len(info) >= 16 else 0
    return KernelAddress(IPv6Address(raw), plen, index, flags, scope, updated)


def _parse_rule(data: bytes) -> KernelRule | None:
    family, dst_len, src_len, _, table, _, _, action, _ = _RULEHDR.unpack_from(data)
    if family != socket.AF_INET6:
        return None
    a = _parse_attrs(data, _RULEHDR.size, len(data))
    if FRA_TABLE in a:
        table = _U32.unpack(a[FRA_TABLE][:4])[0]
    return KernelRule(
        action, a.get(FRA_IIFNAME, b"").rstrip(b"\0").decode(),
        _U32.unpack(a[FRA_PRIORITY][:4])[0] if FRA_PRIORITY in a else 0, table,
        a[FRA_PROTOCOL][0] if FRA_PROTOCOL in a else 0,
        (IPv6Address(a[FRA_SRC]), src_len) if FRA_SRC in a else None,
        (IPv6Address(a[FRA_DST]), dst_len) if FRA_DST in a else None,
        a[FRA_IP_PROTO][0] if FRA_IP_PROTO in a else 0,
        _U16.unpack(a[FRA_SPORT_RANGE][:2])[0] if FRA_SPORT_RANGE in a else 0,
        _U16.unpack(a[FRA_DPORT_RANGE][:2])[0] if FRA_DPORT_RANGE in a else 0,
    )


# -- Socket ----------------------------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def open_in_netns(netns: str | None, family: int, kind: int, proto: int) -> socket.socket:
    """A socket created inside network namespace ``netns`` (None: the current one).

    ``setns`` affects only the calling thread, and the socket stays in the
    namespace it was created in after the thread switches back.
    """
    if netns is None:
        return socket.socket(family, kind, proto)
    libc = _libc()
    path = f"/var/run/netns/{netns}"
    try:
        target = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise NetlinkError(f"network namespace {netns!r}", exc.errno or errno.ENOENT) from exc
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetlinkError(f"entering network namespace {netns!r} (needs root)", err)
        try:
            return socket.socket(family, kind, proto)
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise NetlinkError("returning to the original namespace", ctypes.get_errno())
    finally:
        os.close(target)
        os.close(home)


class Netlink:
    """One rtnetlink socket (optionally in a netns) with pipelined batches."""

    CHUNK = 1024
    """Requests sent before reading their acknowledgements."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        try:
            self.sock = open_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        except PermissionError as exc:
            raise NetlinkError("netlink socket (needs CAP_NET_ADMIN)", errno.EPERM) from exc
        # Acks of a whole chunk must fit: ask for big buffers, forcing past
        # rmem_max/wmem_max when privileged (SO_*BUFFORCE).
        for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, force, 8 << 20)
            except OSError:
                with contextlib.suppress(OSError):
                    self.sock.setsockopt(socket.SOL_SOCKET, plain, 8 << 20)
        self.sock.bind((0, 0))
        with contextlib.suppress(OSError):  # older kernels: unfiltered dumps
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        self._seq = 1
        # One receive buffer for every read: a fresh 1 MB per recv() is an
        # mmap and munmap each time, which once cost more than the kernel.
        self._buf = bytearray(1 << 16)

    def _recv(self) -> bytes:
        """One netlink message batch (a dump part is at most 32 KB)."""
        n = self.sock.recv_into(self._buf)
        return bytes(memoryview(self._buf)[:n])

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def ifindex(self, name: str) -> int:
        """Interface index of ``name`` inside this socket's namespace."""
        # The whole dump is read: one left half-read makes the next dump on
        # this socket fail with EBUSY.
        index = dict(self._links()).get(name)
        if index is None:
            raise NetlinkError(f"interface {name!r}", errno.ENODEV)
        return index

    def set_link(self, index: int, up: bool = True, txqlen: int | None = None) -> None:
        """Bring a link up (or down) and set its queue length."""
        iff_up = 0x1
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, iff_up if up else 0, iff_up)
        if txqlen is not None:
            body += rta(13, _U32.pack(txqlen))  # IFLA_TXQLEN
        failures = self.batch([Request(RTM_NEWLINK, 0, body, f"link {index}")])
        if failures:
            raise failures[0][1]

    def set_master(self, index: int, master: int) -> None:
        """Enslave a link to a bridge (``master`` 0: release it)."""
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
        body += rta(10, _U32.pack(master))  # IFLA_MASTER
        failures = self.batch([Request(RTM_NEWLINK, 0, body, f"link {index}")])
        if failures:
            raise failures[0][1]

    def link_tx_dropped(self, index: int) -> int:
        """tx_dropped of a link (IFLA_STATS64)."""
        return self._link_stat(index, 7)

    def link_rx_otherhost_dropped(self, index: int) -> int:
        """Frames a link received for another host's address and dropped
        (``rx_otherhost_dropped`` of IFLA_STATS64, Linux 5.19 on; 0 before)."""
        return self._link_stat(index, 24)

    def link_running(self, index: int) -> bool:
        """Whether a link's operational state is up (IFLA_OPERSTATE: carrier
        and all; raised asynchronously after the link is set up)."""
        msg = self._get(RTM_GETLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0))
        state = _parse_attrs(msg, 16, len(msg)).get(16) if msg is not None else None
        return state is not None and state[:1] == b"\x06"  # IF_OPER_UP

    def link_carrier(self, index: int) -> bool:
        """Whether a link is up and has its carrier now (IFF_UP and
        IFF_LOWER_UP of its flags, which change as the link does - its
        operational state, :meth:`link_running`, follows later, by the
        kernel's rate-limited link watch)."""
        msg = self._get(RTM_GETLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0))
        if msg is None or len(msg) < 16:
            return False
        flags = struct.unpack_from("=I", msg, 8)[0]
        return bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)

    def _link_stat(self, index: int, field: int) -> int:
        """Field ``field`` (counted in u64s) of a link's rtnl_link_stats64."""
        msg = self._get(RTM_GETLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0))
        if msg is None:
            return 0
        stats = _parse_attrs(msg, 16, len(msg)).get(23)  # IFLA_STATS64
        if not stats or len(stats) < (field + 1) * 8:
            return 0
        return int(struct.unpack_from("=Q", stats, field * 8)[0])

    def _get(self, msg_type: int, body: bytes) -> bytes | None:
        """One non-dump request; its answer's payload, or None on an error."""
        seq = self._seq
        self._seq += 1
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type,
                                      NLM_F_REQUEST, seq, 0) + body)
        while True:
            data = self._recv()
            pos = 0
            while pos + _NLMSGHDR.size <= len(data):
                length, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(data, pos)
                if mseq == seq:
                    if mtype == NLMSG_ERROR:
                        return None
                    return data[pos + _NLMSGHDR.size : pos + length]
                pos += _align(length)

    def _links(self) -> Iterator[tuple[str, int]]:
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
        for data in self._dump(RTM_GETLINK, body):
            index = struct.unpack_from("=i", data, 4)[0]
            attrs = _parse_attrs(data, 16, len(data))
            name = attrs.get(3, b"").rstrip(b"\0").decode()  # IFLA_IFNAME
            yield name, index

    def batch(self, requests: Sequence[Request]) -> list[tuple[int, NetlinkError]]:
        """Send every request (pipelined); returns (index, error) of each failure.

        Only the last request of a chunk asks for an acknowledgement: the
        kernel reports every failure anyway and handles a chunk in order, so
        the last ack means the whole chunk is done.  One receive per chunk
        instead of one per object (a syscall costs ~20 us here).
        """
        errors: list[tuple[int, NetlinkError]] = []
        pack = _NLMSGHDR.pack
        for start in range(0, len(requests), self.CHUNK):
            chunk = requests[start : start + self.CHUNK]
            first = self._seq
            last = first + len(chunk) - 1
            parts: list[bytes] = []
            seq = first
            for req in chunk:
                flags = NLM_F_REQUEST | req.flags | (NLM_F_ACK if seq == last else 0)
                parts.append(pack(_NLMSGHDR.size + len(req.body), req.msg_type, flags, seq, 0))
                parts.append(req.body)
                seq += 1
            self._seq = last + 1
            self.sock.send(b"".join(parts))
            done = False
            while not done:
                data = self._recv()
                pos = 0
                while pos + _NLMSGHDR.size <= len(data):
                    length, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(data, pos)
                    if mtype == NLMSG_ERROR and first <= mseq <= last:
                        err = -_NLMSGERR.unpack_from(data, pos + _NLMSGHDR.size)[0]
                        req = chunk[mseq - first]
                        if err and err not in req.tolerate:
                            errors.append((start + mseq - first, NetlinkError(req.what, err)))
                        if mseq == last:
                            done = True
                    pos += _align(length)
        return errors

    def _dump(self, msg_type: int, body: bytes) -> Iterator[bytes]:
        seq = self._seq
        self._seq += 1
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type,
                                      NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        while True:
            data = self._recv()
            pos = 0
            while pos + _NLMSGHDR.size <= len(data):
                length, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(data, pos)
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return
                    if mtype == NLMSG_ERROR:
                        err = -_NLMSGERR.unpack_from(data, pos + _NLMSGHDR.size)[0]
                        if err:
                            raise NetlinkError(f"dump {msg_type}", err)
                        return
                    yield data[pos + _NLMSGHDR.size : pos + length]
                pos += _align(length)

    def route_get(self, addr: IPv6Address) -> KernelRoute | None:
        """The route the kernel would use to reach ``addr`` (``ip route get``)."""
        return self.routes_get([addr])[0]

    def routes_get(self, addrs: Sequence[IPv6Address]) -> list[KernelRoute | None]:
        """:meth:`route_get` for many addresses, pipelined like :meth:`batch`:
        one send and a few receives per chunk, not a round trip each."""
        out: list[KernelRoute | None] = []
        head = _RTMSG.pack(socket.AF_INET6, 128, 0, 0, 0, 0, 0, 0, 0)
        pack = _NLMSGHDR.pack
        size = _NLMSGHDR.size + len(head) + 20
        for start in range(0, len(addrs), self.CHUNK):
            chunk = addrs[start : start + self.CHUNK]
            first = self._seq
            self._seq += len(chunk)
            self.sock.send(b"".join(
                pack(size, RTM_GETROUTE, NLM_F_REQUEST, first + i, 0) + head
                + _ATTR16.pack(20, RTA_DST, a.packed) for i, a in enumerate(chunk)))
            got: list[KernelRoute | None] = [None] * len(chunk)
            left = len(chunk)
            while left:
                data = self._recv()
                pos = 0
                while pos + _NLMSGHDR.size <= len(data):
                    length, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(data, pos)
                    i = mseq - first
                    if 0 <= i < len(chunk):
                        if mtype != NLMSG_ERROR:  # an error (no route) leaves None
                            got[i] = _parse_route(data[pos + _NLMSGHDR.size : pos + length])
                        left -= 1
                    pos += _align(length)
            out += got
        return out

    def _dump_parsed(self, msg_type: int, body: bytes,
                     parse: Callable[[bytes], T | None]) -> list[T]:
        return [obj for data in self._dump(msg_type, body)
                if (obj := parse(data)) is not None]

    dump = _dump_parsed
    """A dump request of ``msg_type`` (``body``: its header), each answer
    parsed (None: skipped) - for objects other modules declare."""

    def routes(self, table: int | None = None) -> list[KernelRoute]:
        """Every IPv6 route of every table, or of one ``table``.

        With a table the kernel filters the dump itself (strict checking), so
        reading a small table does not cost a walk through 100k others.
        """
        if table is None:
            return self._dump_parsed(
                RTM_GETROUTE, _RTMSG.pack(socket.AF_INET6, 0, 0, 0, 0, 0, 0, 0, 0), _parse_route)
        body = _RTMSG.pack(socket.AF_INET6, 0, 0, 0, table if table < 256 else 252,
                           0, 0, 0, 0) + _ATTR32.pack(8, RTA_TABLE, table)
        # Filtered here too: a kernel without strict dumps sends every table.
        return [r for r in self._dump_parsed(RTM_GETROUTE, body, _parse_route)
                if r.table == table]

    def nexthops(self) -> list[KernelNexthop]:
        """Every nexthop object (none where the kernel has no nexthop support)."""
        try:
            return self._dump_parsed(
                RTM_GETNEXTHOP, _NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), _parse_nexthop)
        except NetlinkError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
            return []

    def addresses(self, index: int) -> list[KernelAddress]:
        """The IPv6 addresses of one link (``ip -6 addr show dev``)."""
        return [a for a in self._dump_parsed(
            RTM_GETADDR, _IFADDRMSG.pack(socket.AF_INET6, 0, 0, 0, index), _parse_address)
            if a.index == index]

    def rules(self) -> list[KernelRule]:
        """Every IPv6 FIB rule."""
        return self._dump_parsed(
            RTM_GETRULE, _RULEHDR.pack(socket.AF_INET6, 0, 0, 0, 0, 0, 0, 0, 0), _parse_rule)


RTNLGRP_LINK, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_ROUTE = 1, 9, 11
RTM_NEWADDR, RTM_DELADDR = 20, 21
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000


class Multicast:
    """An rtnetlink socket joined to one multicast group of a namespace."""

    def __init__(self, netns: str | None, group: int) -> None:
        try:
            self.sock = open_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        except PermissionError as exc:
            raise NetlinkError("netlink socket (needs CAP_NET_ADMIN)", errno.EPERM) from exc
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((0, 1 << (group - 1)))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        """For selectors and event loops."""
        return self.sock.fileno()

    def _messages(self) -> Iterator[tuple[int, bytes]]:
        """(type, body) of every message received so far; never blocks."""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            for mtype, _, _, body in split_messages(data):
                yield mtype, body

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class RouteMonitor(Multicast):
    """IPv6 route changes of one namespace, as the kernel announces them.

    Whoever changes the FIB (BIRD, a dmanchor agent, ``ip``), the kernel
    multicasts each change: reading them tells exactly when a route took
    effect, with no polling.
    """

    def __init__(self, netns: str | None = None) -> None:
        super().__init__(netns, RTNLGRP_IPV6_ROUTE)

    def read(self) -> list[tuple[bool, KernelRoute]]:
        """Changes received so far: (added, route); never blocks."""
        out: list[tuple[bool, KernelRoute]] = []
        for mtype, body in self._messages():
            if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
                r = _parse_route(body)
                if r is not None:
                    out.append((mtype == RTM_NEWROUTE, r))
        return out


class LinkMonitor(Multicast):
    """Link state changes of one namespace (an MN's radio coming or going)."""

    def __init__(self, netns: str | None = None) -> None:
        super().__init__(netns, RTNLGRP_LINK)

    def read(self) -> list[tuple[str, bool]]:
        """Changes received so far: (link name, up with carrier?); never blocks."""
        out: list[tuple[str, bool]] = []
        for mtype, body in self._messages():
            if mtype != RTM_NEWLINK or len(body) < 16:
                continue
            flags = struct.unpack_from("=I", body, 8)[0]
            name = _parse_attrs(body, 16, len(body)).get(3, b"").rstrip(b"\0").decode()
            out.append((name, bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)))
        return out


class AddressMonitor(Multicast):
    """IPv6 address changes of one namespace (SLAAC configuring, expiring)."""

    def __init__(self, netns: str | None = None) -> None:
        super().__init__(netns, RTNLGRP_IPV6_IFADDR)

    def changed(self) -> bool:
        """Whether any address came or went since the last call; never blocks."""
        return any(mtype in (RTM_NEWADDR, RTM_DELADDR) for mtype, _ in self._messages())

