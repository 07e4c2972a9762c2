"""What an access router hears of its MNs on the link: arrival without help.

A stock host does not wait to be asked.  When its radio comes up on a new
link it sends, before anything else, an MLDv2 report for the groups it is
in; then neighbour discovery (DAD probes, unsolicited NAs) and, after
``router_solicitation_delay`` and DAD, a Router Solicitation (measured on
a Linux MN: the MLD report ~20 ms after its radio moved, the RS 2.5-3 s
after with defaults, 0.1-1.1 s with DAD and the delay off).  The access router listens
for all four on each access link (a packet socket with a classic BPF
filter, so only these few packets reach user space) and takes the first
as the MN's arrival: it knows the MN by the frame's source MAC, attaches it
and advertises at once, not when the host gets round to soliciting.

:func:`parse_frame` is sans-IO; :class:`LinkListener` is the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv6Address

from .nd import NdError, RouterSolicitation, decode_rs

ETH_P_IPV6 = 0x86DD
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
_ETH = 14
_IP6 = 40


class Heard(IntEnum):
    """The ICMPv6 messages that show a host on an access link."""

    ROUTER_SOLICITATION = 133
    NEIGHBOR_SOLICITATION = 135
    NEIGHBOR_ADVERTISEMENT = 136
    MLD_REPORT = 143


@dataclass(frozen=True, slots=True)
class HostSeen:
    """A host spoke on an access link."""

    mac: bytes
    """The frame's source MAC: the host's identity at the link."""
    source: IPv6Address
    """Its IPv6 source (``::`` for a DAD probe)."""
    kind: Heard
    rs: RouterSolicitation | None = None
    """The solicitation itself, when it was one."""

    @property
    def mn_id(self) -> str:
        """The MN-ID the routers and the LMs know the host by."""
        return self.mac.hex(":")


def _bpf() -> bytes:
    """A classic BPF program keeping RS, NS, NA and MLDv2 reports (IPv6 with
    ICMPv6 straight after the header, or after the 8-byte hop-by-hop header
    MLD carries).  Jump offsets count from the next instruction."""
    ld_h, ld_b, jeq, ret = 0x28, 0x30, 0x15, 0x06
    accept, drop = 13, 14

    def to(target: int, at: int) -> int:
        return target - at - 1
    prog = [
        (ld_h, 0, 0, 12),                                           # 0: ethertype
        (jeq, 0, to(drop, 1), ETH_P_IPV6),                          # 1
        (ld_b, 0, 0, _ETH + 6),                                     # 2: next header
        (jeq, to(7, 3), 0, 58),                                     # 3: ICMPv6
        (jeq, 0, to(drop, 4), 0),                                   # 4: hop-by-hop
        (ld_b, 0, 0, _ETH + _IP6),                                  # 5: its next header
        (jeq, to(11, 6), to(drop, 6), 58),                          # 6
        (ld_b, 0, 0, _ETH + _IP6),                                  # 7: ICMPv6 type
        (jeq, to(accept, 8), 0, Heard.ROUTER_SOLICITATION),         # 8
        (jeq, to(accept, 9), 0, Heard.NEIGHBOR_SOLICITATION),       # 9
        (jeq, to(accept, 10), to(drop, 10), Heard.NEIGHBOR_ADVERTISEMENT),  # 10
        (ld_b, 0, 0, _ETH + _IP6 + 8),                              # 11: type after HBH
        (jeq, to(accept, 12), to(drop, 12), Heard.MLD_REPORT),      # 12
        (ret, 0, 0, 0xFFFF),                                        # 13: accept
        (ret, 0, 0, 0),                                             # 14: drop
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


BPF_PROGRAM = _bpf()


def parse_frame(frame: bytes) -> HostSeen | None:
    """The host an Ethernet frame shows, if it is one of :class:`Heard`."""
    if len(frame) < _ETH + _IP6 + 4 or frame[12:14] != b"\x86\xdd":
        return None
    mac = bytes(frame[6:12])
    if mac[0] & 1:
        return None  # a group address is never a source
    source = IPv6Address(frame[_ETH + 8:_ETH + 24])
    nh, pos = frame[_ETH + 6], _ETH + _IP6
    if nh == 0:  # hop-by-hop options (MLD's router alert)
        nh, pos = frame[pos], pos + (frame[pos + 1] + 1) * 8
    if nh != 58 or len(frame) < pos + 4:
        return None
    try:
        kind = Heard(frame[pos])
    except ValueError:
        return None
    rs = None
    if kind is Heard.ROUTER_SOLICITATION:
        try:
            rs = decode_rs(bytes(frame[pos:]))
        except NdError:
            return None
    return HostSeen(mac, source, kind, rs)


class LinkListener:
    """A packet socket on one access link hearing :class:`Heard` messages."""

    def __init__(self, link: str) -> None:
        self.link = link
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        try:
            # struct sock_fprog {u16 len; struct sock_filter *filter}: the
            # kernel copies the program during the call.
            program = ctypes.create_string_buffer(BPF_PROGRAM, len(BPF_PROGRAM))
            fprog = struct.pack("HP", len(BPF_PROGRAM) // 8, ctypes.addressof(program))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            self.sock.bind((link, ETH_P_IPV6))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        """For event loops."""
        return self.sock.fileno()

    def read(self) -> list[HostSeen]:
        """Hosts heard since the last read (never blocks); the router's own
        packets are skipped."""
        out: list[HostSeen] = []
        while True:
            try:
                frame, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                    return out  # the link went down under us: nothing to hear
                raise
            if addr[2] == PACKET_OUTGOING:
                continue
            seen = parse_frame(frame)
            if seen is not None:
                out.append(seen)

    def close(self) -> None:
        """Close the socket."""
        with contextlib.suppress(OSError):
            self.sock.close()
