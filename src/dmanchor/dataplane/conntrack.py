"""Flows as the kernel's connection tracking sees them (ctnetlink events).

An access router learns which flows an MN's prefix carries from the
conntrack entries the kernel keeps for the packets it forwards: a new
entry is a new flow, a TCP entry reaching TIME_WAIT or CLOSE (FIN or RST
seen both ways) or any entry destroyed (its timeout ran out: a UDP flow
idle for ``nf_conntrack_udp_timeout``) is a flow that ended.  Nothing is
polled: the kernel multicasts each change on the NEW, UPDATE and DESTROY
groups of ``NETLINK_NETFILTER``.

Conntrack sees a packet once it passes the namespace's PREROUTING or
OUTPUT hook, and only in a namespace whose ruleset uses conntrack (the
charging table's ``ct`` rule turns it on, :mod:`.charging`).  A packet
decapsulated from an SRv6 tunnel skips those hooks unless the global,
one-way ``net.netfilter.nf_hooks_lwtunnel`` is set, so a router sees a
tunnelled-in flow only by what the MN sends (docs/operations.md).

The attributes are declared as data (pyroute2's ``nla_map`` style); the
parser is a pure function of a message's bytes, for golden tests.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import socket
import struct
from ipaddress import IPv6Address
from typing import NamedTuple

from .netlink import NetlinkError, open_in_netns, split_messages

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY = 1, 2, 3
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x300, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFGENMSG = struct.Struct("=BBH")
"""nfgenmsg: family, version, resource id (big-endian)."""
_NLMSGHDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

# Attribute tree (linux/netfilter/nfnetlink_conntrack.h): name -> type, per level.
CTA = {"tuple_orig": 1, "tuple_reply": 2, "status": 3, "protoinfo": 4, "id": 12}
CTA_TUPLE = {"ip": 1, "proto": 2}
CTA_IP = {"v6_src": 3, "v6_dst": 4}
CTA_PROTO = {"num": 1, "src_port": 2, "dst_port": 3}
CTA_PROTOINFO = {"tcp": 1}
CTA_PROTOINFO_TCP = {"state": 1}


class TcpState(enum.IntEnum):
    """enum tcp_conntrack (linux/netfilter/nf_conntrack_tcp.h)."""

    NONE = 0
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    LAST_ACK = 6
    TIME_WAIT = 7
    CLOSE = 8
    SYN_SENT2 = 9


ENDED_TCP = frozenset({TcpState.TIME_WAIT, TcpState.CLOSE})
"""TCP states of a connection that is over: FIN seen both ways, or a RST."""
CLOSING_TCP = frozenset({TcpState.FIN_WAIT, TcpState.CLOSE_WAIT, TcpState.LAST_ACK})
"""TCP states after one FIN: over once the other side's comes - which a
router that sees one direction only never sees."""


class Change(enum.Enum):
    """What happened to a conntrack entry."""

    NEW = "new"
    UPDATE = "update"
    GONE = "gone"


class Conn(NamedTuple):
    """A connection's original-direction 5-tuple."""

    src: IPv6Address
    dst: IPv6Address
    proto: int
    sport: int
    dport: int


class ConnEvent(NamedTuple):
    """One ctnetlink event."""

    change: Change
    conn: Conn
    tcp: TcpState | None = None
    """TCP state, when the event carries it."""

    @property
    def ended(self) -> bool:
        """The flow is over (destroyed, or a TCP connection closed)."""
        return self.change is Change.GONE or self.tcp in ENDED_TCP


def _attrs(data: bytes, pos: int = 0, end: int | None = None) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    end = len(data) if end is None else end
    while pos + _NLA.size <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < _NLA.size or pos + length > end:
            break
        out[kind & NLA_TYPE_MASK] = data[pos + _NLA.size:pos + length]
        pos += (length + 3) & ~3
    return out


def _tuple(raw: bytes) -> Conn | None:
    t = _attrs(raw)
    ip = _attrs(t.get(CTA_TUPLE["ip"], b""))
    proto = _attrs(t.get(CTA_TUPLE["proto"], b""))
    src, dst = ip.get(CTA_IP["v6_src"]), ip.get(CTA_IP["v6_dst"])
    num = proto.get(CTA_PROTO["num"])
    if src is None or dst is None or num is None or len(src) != 16 or len(dst) != 16:
        return None  # IPv4, or not a tuple we can use
    ports = [int.from_bytes(proto.get(CTA_PROTO[k], b"\0\0")[:2], "big")
             for k in ("src_port", "dst_port")]
    return Conn(IPv6Address(src), IPv6Address(dst), num[0], ports[0], ports[1])


def parse(mtype: int, flags: int, body: bytes) -> ConnEvent | None:
    """The event in one netlink message (None: not a conntrack event we use)."""
    if mtype >> 8 != NFNL_SUBSYS_CTNETLINK or len(body) < NFGENMSG.size:
        return None
    if NFGENMSG.unpack_from(body)[0] != socket.AF_INET6:
        return None
    kind = mtype & 0xFF
    if kind == IPCTNL_MSG_CT_DELETE:
        change = Change.GONE
    elif kind == IPCTNL_MSG_CT_NEW:
        change = Change.NEW if flags & NLM_F_CREATE else Change.UPDATE
    else:
        return None
    top = _attrs(body, NFGENMSG.size)
    conn = _tuple(top.get(CTA["tuple_orig"], b""))
    if conn is None:
        return None
    tcp = None
    info = _attrs(_attrs(top.get(CTA["protoinfo"], b"")).get(CTA_PROTOINFO["tcp"], b""))
    state = info.get(CTA_PROTOINFO_TCP["state"])
    if state:
        with contextlib.suppress(ValueError):
            tcp = TcpState(state[0])
    return ConnEvent(change, conn, tcp)


def encode(event: ConnEvent, seq: int = 0) -> bytes:
    """The netlink message the kernel would send for ``event`` (tests, vectors)."""
    def nla(kind: int, payload: bytes, nested: bool = False) -> bytes:
        length = _NLA.size + len(payload)
        return _NLA.pack(length, kind | (0x8000 if nested else 0)) + payload + \
            b"\0" * (((length + 3) & ~3) - length)

    c = event.conn
    ip = nla(CTA_IP["v6_src"], c.src.packed) + nla(CTA_IP["v6_dst"], c.dst.packed)
    proto = nla(CTA_PROTO["num"], bytes([c.proto])) + \
        nla(CTA_PROTO["src_port"], c.sport.to_bytes(2, "big")) + \
        nla(CTA_PROTO["dst_port"], c.dport.to_bytes(2, "big"))
    body = NFGENMSG.pack(socket.AF_INET6, 0, 0) + nla(CTA["tuple_orig"], nla(
        CTA_TUPLE["ip"], ip, True) + nla(CTA_TUPLE["proto"], proto, True), True)
    if event.tcp is not None:
        body += nla(CTA["protoinfo"], nla(CTA_PROTOINFO["tcp"], nla(
            CTA_PROTOINFO_TCP["state"], bytes([event.tcp])), True), True)
    kind = IPCTNL_MSG_CT_DELETE if event.change is Change.GONE else IPCTNL_MSG_CT_NEW
    flags = NLM_F_CREATE if event.change is Change.NEW else 0
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), NFNL_SUBSYS_CTNETLINK << 8 | kind,
                          flags, seq, 0) + body


class ConntrackMonitor:
    """The conntrack events of one namespace, read without blocking."""

    def __init__(self, netns: str | None = None) -> None:
        try:
            self.sock = open_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW,
                                      NETLINK_NETFILTER)
        except PermissionError as exc:
            raise NetlinkError("ctnetlink socket (needs CAP_NET_ADMIN)", errno.EPERM) from exc
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
        groups = 0
        for g in (NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY):
            groups |= 1 << (g - 1)
        self.sock.bind((0, groups))
        self.sock.setblocking(False)
        # Dumps go on their own socket: replies must not interleave with events.
        self._dumper = open_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW,
                                     NETLINK_NETFILTER)
        self._dumper.settimeout(5)
        self._seq = 0
        self.overruns = 0
        """Times the kernel dropped events because we read too slowly (ENOBUFS)."""

    def fileno(self) -> int:
        """For selectors and event loops."""
        return self.sock.fileno()

    def read(self) -> list[ConnEvent]:
        """Events received so far; never blocks."""
        out: list[ConnEvent] = []
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # counted; the next read goes on
                continue
            for mtype, flags, _, body in split_messages(data):
                ev = parse(mtype, flags, body)
                if ev is not None:
                    out.append(ev)

    def dump(self) -> set[Conn]:
        """Every IPv6 connection tracked now and not over (a TCP one in
        TIME_WAIT or CLOSE is not: :attr:`ConnEvent.ended`).

        The kernel destroys the expired entries a dump walks past (and
        says so on the DESTROY group): its garbage collector alone may
        take a minute to find an idle UDP flow in a small table, so a
        periodic dump is what makes "idle for N seconds" mean N.  The
        answer also resynchronises a reader that lost events.
        """
        self._seq += 1
        body = NFGENMSG.pack(socket.AF_INET6, 0, 0)
        self._dumper.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body),
                                         NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET,
                                         NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0) + body)
        out: set[Conn] = set()
        while True:
            for mtype, flags, seq, body in split_messages(self._dumper.recv(1 << 20)):
                if seq != self._seq:
                    continue  # an answer to an earlier, abandoned dump
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise NetlinkError("conntrack dump", code)
                    return out
                ev = parse(mtype, flags, body)
                if ev is not None and not ev.ended:
                    out.add(ev.conn)

    def close(self) -> None:
        """Close the sockets."""
        self.sock.close()
        self._dumper.close()
