"""The interface every sans-IO core offers to its drivers."""

from __future__ import annotations

from typing import Protocol

Addr = tuple[str, int]


class Core(Protocol):
    """A state machine driven by datagrams and timers, with ``now`` given.

    After every call the driver drains :meth:`datagrams_to_send` and
    re-reads :meth:`get_timer`.
    """

    def receive_datagram(
        self, data: bytes, source: Addr, now: float, local: Addr | None = None
    ) -> None:
        """One datagram arrived from ``source`` on local address ``local``."""

    def handle_timer(self, now: float) -> None:
        """The deadline from :meth:`get_timer` has passed."""

    def get_timer(self) -> float | None:
        """Absolute time at which :meth:`handle_timer` must next run."""

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """Drain outgoing datagrams."""
