"""The asyncio driver of :class:`~.bgp.BgpSession`: TCP to the peer, reconnecting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable
from ipaddress import IPv6Address

from ..wire.types import Prefix
from .bgp import BgpEvent, BgpSession, SessionUp


class BgpSpeaker:
    """Drives a :class:`BgpSession` over TCP on asyncio, reconnecting as needed.

    ``connect`` opens a connected-or-connecting TCP socket to the peer (the
    emulator opens it inside a namespace); by default a plain IPv6 socket to
    ``peer`` port 179.
    """

    def __init__(self, session: BgpSession, peer: IPv6Address,
                 on_event: Callable[[BgpEvent], None] | None = None,
                 connect: Callable[[], socket.socket] | None = None) -> None:
        self.session = session
        self.peer = peer
        self.on_event = on_event
        self._connect = connect or (lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.up = asyncio.Event()

    def start(self) -> None:
        """Start connecting (and keep reconnecting)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Send Cease, close, stop reconnecting."""
        loop = asyncio.get_running_loop()
        self.session.close(loop.time())
        self._pump()
        if self._writer is not None:
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self._writer.drain(), 1.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def change(self, withdraw: Iterable[Prefix], announce: Iterable[Prefix]) -> None:
        """Withdraw and announce now (or when the session is up)."""
        self.session.change(withdraw, announce, asyncio.get_running_loop().time())
        self._pump()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock = self._connect()
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (str(self.peer), 179))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reader, self._writer = await asyncio.open_connection(sock=sock)
            except OSError:
                sock.close()
                await asyncio.sleep(self.session.s.connect_retry)
                continue
            self.session.connection_made(loop.time())
            self._pump()
            try:
                while not self.session.close_requested:
                    data = await reader.read(65536)
                    if not data:
                        break
                    self.session.data_received(data, loop.time())
                    self._pump()
            except OSError:
                pass
            finally:
                self.session.connection_lost(loop.time())
                self._pump()
                self._writer.close()
                self._writer = None
                self.up.clear()
            await asyncio.sleep(self.session.s.connect_retry)

    def _pump(self) -> None:
        """Write what the session produced, deliver its events, arm its timer."""
        loop = asyncio.get_running_loop()
        out = self.session.data_to_send()
        if out and self._writer is not None:
            self._writer.write(out)
        while (ev := self.session.next_event()) is not None:
            if isinstance(ev, SessionUp):
                self.up.set()
            if self.on_event is not None:
                self.on_event(ev)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.session.get_timer()
        if when is not None:
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.session.handle_timer(asyncio.get_running_loop().time())
        self._pump()
        if self.session.close_requested and self._writer is not None:
            self._writer.close()
