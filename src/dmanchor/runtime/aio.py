"""asyncio driver: pump a sans-IO core over a real UDP socket.

``now`` handed to the core is the wall clock (``time.time()``), because
SM timestamps are compared across machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable

from ..wire.codec import peek_type
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


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, driver: UdpDriver) -> None:
        self.driver = driver

    def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
        if _debug():
            log.debug("rx %s from %s", peek_type(data), addr[:2])
        source = normalize(addr)
        if self.driver.trace is not None:
            self.driver.trace("rx", data, source)
        self.driver.core.receive_datagram(data, source, time.time())
        self.driver.pump()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (peer port closed) surface here; the core's
        # retransmission logic already handles the silence that follows.
        self.driver.socket_errors += 1


class UdpDriver:
    """Owns one UDP socket and one core; call :meth:`pump` after commands."""

    def __init__(
        self, core: Core, *, on_pump: Callable[[], None] | None = None,
        trace: Callable[[str, bytes, Addr], None] | None = None,
    ) -> None:
        """``on_pump`` runs after every input, e.g. to resolve futures;
        ``trace`` sees every datagram (direction, bytes, peer)."""
        self.core = core
        self.on_pump = on_pump
        self.trace = trace
        self.socket_errors = 0
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Addr:
        """Bind and start receiving; returns the bound (host, port)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port), family=family
        )
        self.transport = transport
        sock = transport.get_extra_info("socket")
        # Bursts of replies (pool fan-out, pushes) must not be dropped by a
        # small default socket buffer.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        self.pump()
        return normalize(sock.getsockname())

    @property
    def address(self) -> Addr:
        """The bound address."""
        assert self.transport is not None, "driver not started"
        return normalize(self.transport.get_extra_info("sockname"))

    def pump(self) -> None:
        """Send what the core has queued and re-arm its timer."""
        transport = self.transport
        if transport is None:
            return
        for data, dest in self.core.datagrams_to_send():
            if _debug():
                log.debug("tx %s to %s", peek_type(data), dest)
            if self.trace is not None:
                self.trace("tx", data, dest)
            transport.sendto(data, dest)
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
                delay = max(0.0, deadline - time.time())
                self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(time.time())
        self.pump()

    def close(self) -> None:
        """Stop the timer and close the socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
