"""Test helpers shared by the tiers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

from dmanchor.transport.reliable import Addr, Endpoint, Event

T = TypeVar("T")


class Collector:
    """A bare endpoint on the virtual network that records its events."""

    def __init__(self, endpoint: Endpoint | None = None) -> None:
        self.ep = endpoint or Endpoint()
        self.events: list[Event] = []

    def receive_datagram(
        self, data: bytes, source: Addr, now: float, local: Addr | None = None
    ) -> None:
        self.ep.receive_datagram(data, source, now, local)
        self._drain()

    def handle_timer(self, now: float) -> None:
        self.ep.handle_timer(now)
        self._drain()

    def get_timer(self) -> float | None:
        return self.ep.get_timer()

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        return self.ep.datagrams_to_send()

    def _drain(self) -> None:
        while (e := self.ep.next_event()) is not None:
            self.events.append(e)


def wait_until(condition: Callable[[], T], timeout: float, what: str | Callable[[], str],
               interval: float = 0.01) -> T:
    """Poll ``condition`` until it returns something true; return that.

    Tests wait for conditions, never for fixed sleeps: ``timeout`` is a
    deadline generous enough for a slow, loaded machine, not an expected
    duration.  On expiry the assertion says what was awaited and, if
    ``what`` is a callable, what was measured at that moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"not within {timeout} s: {said}")
        time.sleep(interval)


def has_ipv6_loopback() -> bool:
    """Whether ``::1`` can be bound here (some containers have no IPv6)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
