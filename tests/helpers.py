"""Test helpers shared by the unit tests."""

from __future__ import annotations

from dmanchor.transport.reliable import Addr, Endpoint, Event


class Collector:
    """A bare endpoint on the virtual network that records its events."""

    def __init__(self, endpoint: Endpoint | None = None) -> None:
        self.ep = endpoint or Endpoint()
        self.events: list[Event] = []

    def receive_datagram(self, data: bytes, source: Addr, now: float) -> None:
        self.ep.receive_datagram(data, source, now)
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
