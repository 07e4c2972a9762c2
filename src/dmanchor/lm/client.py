"""The LMc as an asyncio API (the IO shell around :class:`LmcCore`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from ipaddress import IPv6Address

from ..runtime import clock
from ..runtime.aio import UdpDriver
from ..transport.reliable import Addr, Endpoint
from ..wire import messages as m
from ..wire.auth import Security
from ..wire.types import Cause, Prefix
from .lmc import Done, LmcCore, Location, Pushed


class LocationError(Exception):
    """An LM request failed with a cause code."""

    def __init__(self, cause: Cause, text: str) -> None:
        super().__init__(f"{cause.name}: {text}" if text else cause.name)
        self.cause = cause


class LocationClient:
    """The LMc as an asyncio API over a UDP socket.

    >>> client = await LocationClient.connect([("127.0.0.1", 5400)])
    >>> loc = await client.query(Prefix.parse("2001:db8:1::/64"))
    """

    def __init__(self, core: LmcCore) -> None:
        self.core = core
        self.driver = UdpDriver(core, on_pump=self._dispatch)
        self.pushes: asyncio.Queue[Pushed] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[Done]] = {}

    @classmethod
    async def connect(
        cls, servers: Sequence[Addr], *, security: Security | None = None,
        host: str = "127.0.0.1", port: int = 0,
    ) -> LocationClient:
        """Bind a local socket and return a ready client."""
        client = cls(LmcCore(servers, Endpoint(security=security)))
        await client.driver.start(host, port)
        return client

    def _dispatch(self) -> None:
        for ev in self.core.drain():
            if isinstance(ev, Pushed):
                self.pushes.put_nowait(ev)
            else:
                fut = self._waiting.pop(ev.token, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)

    async def _wait(self, token: int) -> Done:
        fut: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        self.driver.pump()
        done = await fut
        if done.cause is not Cause.OK:
            raise LocationError(done.cause, done.text)
        return done

    async def query(self, prefix: Prefix, use_cache: bool = True) -> Location:
        """LM:1-1/1-2; raises :class:`LocationError` (UNKNOWN_PREFIX ...)."""
        done = await self._wait(self.core.query(prefix, clock.now(), use_cache))
        assert isinstance(done.result, Location)
        return done.result

    async def update(self, prefix: Prefix, address: IPv6Address, lifetime: int) -> int:
        """LM:1-4; returns the lifetime granted once the update is durable."""
        done = await self._wait(self.core.update(prefix, address, lifetime, clock.now()))
        assert isinstance(done.result, m.LocationUpdateAck)
        return done.result.lifetime

    async def subscribe(self, prefixes: Sequence[Prefix], lifetime: int | None = None) -> None:
        """Receive LM:1-3 pushes about ``prefixes`` on :attr:`pushes`."""
        await self._wait(self.core.subscribe(prefixes, clock.now(), lifetime))

    async def unsubscribe(self, prefixes: Sequence[Prefix]) -> None:
        """Stop pushes about ``prefixes``."""
        await self._wait(self.core.unsubscribe(prefixes, clock.now()))

    def close(self) -> None:
        """Close the socket; pending requests are abandoned."""
        self.driver.close()
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
