"""asyncio driver: pump a sans-IO core over a real UDP socket.

``now`` handed to the core is the monotonic clock (:func:`.clock.now`): a
step of the wall clock neither expires the core's lifetimes nor stalls its
retransmissions.  SM timestamps, which other machines compare, come from
the wall clock the endpoint's :class:`~dmanchor.wire.auth.Security` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable

from ..wire.codec import peek_type
from . import clock
from .core import Addr, Core

log = logging.getLogger("dmanchor.udp")


def _debug() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def normalize(addr: tuple[object, ...]) -> Addr:
    """(host, port) from any socket address tuple (IPv6 ones have 4 items)."""
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    port = addr[1]
    assert isinstance(port, int)
    return (host, port)


_IP_PKTINFO = 8
"""Linux ``IP_PKTINFO`` (absent from :mod:`socket` before Python 3.12)."""
_ANC_SPACE = socket.CMSG_SPACE(20)
"""Room for one IPV6_PKTINFO (in6_addr + ifindex) or IP_PKTINFO message."""
_MAX_DATAGRAM = 65535


def _destination(ancdata: list[tuple[int, int, bytes]]) -> str | None:
    """The address a datagram was sent to, from its PKTINFO message."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 16:
            return normalize((socket.inet_ntop(socket.AF_INET6, data[:16]), 0))[0]
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            return socket.inet_ntop(socket.AF_INET, data[8:12])
    return None


class UdpDriver:
    """Owns one UDP socket and one core; call :meth:`pump` after commands.

    The socket is read directly, not through an asyncio transport: a node
    bound to the wildcard address must still tell the core which of its
    addresses each datagram was sent to (read with ``recvmsg`` and
    PKTINFO), because signed messages are verified against it
    (:func:`dmanchor.wire.auth.receiver_id`).  Bound to one address, that
    address is the destination, and a plain ``recvfrom`` does.
    """

    def __init__(
        self, core: Core, *, on_pump: Callable[[], None] | None = None,
        trace: Callable[[str, bytes, Addr], None] | None = None, batch: bool = False,
    ) -> None:
        """``on_pump`` runs after every input, e.g. to resolve futures;
        ``trace`` sees every datagram (direction, bytes, peer); ``batch``:
        see :attr:`batch`."""
        self.core = core
        self.batch = batch
        """Answer a burst together: feed the core every datagram already
        queued (up to a batch), then pump once - instead of pumping after
        each.  For a server whose throughput matters more than the few
        microseconds an answer then waits for the rest of its burst (the LM
        daemons: about +40% queries/s in ``bench/lm.py``).  Nodes on the
        handover path keep answering each datagram before reading the next."""
        self.on_pump = on_pump
        self.trace = trace
        self.socket_errors = 0
        """ICMP errors read back and sends the socket refused (counted, not
        fatal: the core's retransmissions handle the silence)."""
        self.source: str | None = None
        """The IPv6 source address of what it sends, if not the kernel's
        choice: a host-based MN back in a network it was in before must
        sign from that network's address, which source selection may not
        pick (the newer address of the network it left looks as good)."""
        self.sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bound: Addr | None = None
        self._pktinfo = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    reuse_port: bool = False) -> Addr:
        """Bind and start receiving; returns the bound (host, port).

        ``reuse_port``: share the port with other processes' sockets that
        set it too (``SO_REUSEPORT``); the kernel then hands each datagram
        to one of them by a hash of its addresses and ports, so one client
        socket always reaches the same process (:mod:`dmanchor.lm.workers`)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        wildcard = ipaddress.ip_address(infos[0][4][0]).is_unspecified
        try:
            sock.setblocking(False)
            # (Bound to one address, that is every datagram's destination.)
            if wildcard and family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            elif wildcard:
                sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            # Bursts of replies (pool fan-out, pushes) must not be dropped by
            # a small default socket buffer.
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(infos[0][4])
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._loop = loop
        self._pktinfo = wildcard
        self._bound = normalize(sock.getsockname())
        loop.add_reader(sock.fileno(), self._readable)
        self.pump()
        return self._bound

    @property
    def address(self) -> Addr:
        """The bound address."""
        assert self._bound is not None, "driver not started"
        return self._bound

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        bound = self._bound
        assert bound is not None
        debug, trace, pktinfo, batch = _debug(), self.trace, self._pktinfo, self.batch
        local = bound
        # At most a batch per wake-up, so one busy socket does not starve the
        # loop; unless batching, each datagram's answers go out before the
        # next is read.
        for _ in range(64):
            try:
                if pktinfo:
                    data, anc, _flags, addr = sock.recvmsg(_MAX_DATAGRAM, _ANC_SPACE)
                    dst = _destination(anc)
                    local = (dst, bound[1]) if dst is not None else bound
                else:
                    data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # ICMP errors (peer port closed) surface here; the core's
                # retransmission logic already handles the silence that follows.
                self.socket_errors += 1
                continue
            source = normalize(addr)
            if debug:
                log.debug("rx %s from %s", peek_type(data), source)
            if trace is not None:
                trace("rx", data, source)
            self.core.receive_datagram(data, source, clock.now(), local)
            if not batch:
                self.pump()
        if batch:
            self.pump()

    def pump(self) -> None:
        """Send what the core has queued and re-arm its timer."""
        sock = self.sock
        if sock is None:
            return
        for data, dest in self.core.datagrams_to_send():
            if _debug():
                log.debug("tx %s to %s", peek_type(data), dest)
            if self.trace is not None:
                self.trace("tx", data, dest)
            try:
                if self.source is None:
                    sock.sendto(data, dest)
                else:
                    info = socket.inet_pton(socket.AF_INET6, self.source) + bytes(4)
                    sock.sendmsg([data], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)],
                                 0, dest)
            except OSError:
                # A full send buffer or an unreachable peer: like a loss on
                # the wire, retransmission or the next refresh covers it.
                self.socket_errors += 1
        if self.on_pump is not None:
            self.on_pump()
        deadline = self.core.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                loop = asyncio.get_running_loop()
                delay = max(0.0, deadline - clock.now())
                self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(clock.now())
        self.pump()

    def close(self) -> None:
        """Stop the timer and close the socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
