"""Base of every function core built on one :class:`Endpoint`.

A service core implements the driver-facing :class:`~dmanchor.runtime.core.Core`
interface: it feeds inputs to its endpoint, then handles the endpoint's events
and its own named timers.  Subclasses implement :meth:`on_event` and
:meth:`on_timer`; they never read a clock or touch a socket.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Hashable
from typing import ClassVar

from ..wire.types import Cause
from .policy import Senders, refusal
from .reliable import Addr, Endpoint, Event, MessageReceived


class ServiceCore:
    """Endpoint + named timers + event dispatch."""

    SENDERS: ClassVar[Senders] = {}
    """Who may send each request to this function (:mod:`.policy`)."""
    FAILURES: ClassVar[tuple[type[Exception], ...]] = ()
    """Errors a handler may meet that are not bugs (a data plane refusing a
    change): the request is answered INVALID_STATE, not left in progress
    (where the peer's retransmissions would be dropped as duplicates)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.refused: Counter[str] = Counter()
        """Requests the sender policy refused, by type and reason."""
        self.failed: Counter[str] = Counter()
        """Requests whose handling met one of :attr:`FAILURES`, by type."""
        self._timers: list[tuple[float, int, Hashable]] = []
        self._timer_due: dict[Hashable, float] = {}
        self._order = 0

    # -- Core interface ----------------------------------------------------------

    def receive_datagram(
        self, data: bytes, source: Addr, now: float, local: Addr | None = None
    ) -> None:
        """Feed a datagram that arrived on ``local``, then handle what it caused."""
        self.endpoint.receive_datagram(data, source, now, local)
        self.process(now)

    def handle_timer(self, now: float) -> None:
        """Run the endpoint's and our own due timers."""
        self.endpoint.handle_timer(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, name = heapq.heappop(timers)
            if self._timer_due.get(name) != at:
                continue  # rescheduled or cancelled
            del self._timer_due[name]
            self.on_timer(name, now)
        self.process(now)

    def get_timer(self) -> float | None:
        """Earliest deadline among the endpoint's and our own timers."""
        timers = self._timers
        while timers and self._timer_due.get(timers[0][2]) != timers[0][0]:
            heapq.heappop(timers)
        mine = timers[0][0] if timers else None
        theirs = self.endpoint.get_timer()
        if mine is None:
            return theirs
        return mine if theirs is None else min(mine, theirs)

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """Drain the endpoint's outgoing datagrams."""
        return self.endpoint.datagrams_to_send()

    # -- For subclasses ------------------------------------------------------------

    def process(self, now: float) -> None:
        """Handle every pending endpoint event (call after local commands)."""
        ep = self.endpoint
        while (ev := ep.next_event()) is not None:
            if isinstance(ev, MessageReceived):
                why = refusal(self.SENDERS, ev)
                if why is not None:
                    self.refuse(ev, why, now)
                    continue
            try:
                self.on_event(ev, now)
            except self.FAILURES as exc:
                if not isinstance(ev, MessageReceived):
                    raise
                self.failed[ev.message.TYPE.name] += 1
                if ev.expects_reply and ep.unanswered(ev):
                    ep.reject(ev, Cause.INVALID_STATE, str(exc), now)

    def refuse(self, ev: MessageReceived, why: str, now: float) -> None:
        """Refuse a request by policy: NOT_AUTHORIZED, counted, nothing else."""
        self.refused[why] += 1
        if ev.expects_reply:
            self.endpoint.reject(ev, Cause.NOT_AUTHORIZED, why, now,
                                 getattr(ev.message, "prefix", None))

    def set_timer(self, name: Hashable, at: float) -> None:
        """(Re)arm the timer ``name`` to fire at ``at``."""
        self._timer_due[name] = at
        self._order += 1
        heapq.heappush(self._timers, (at, self._order, name))

    def has_timer(self, name: Hashable) -> bool:
        """Whether the timer ``name`` is armed."""
        return name in self._timer_due

    def cancel_timer(self, name: Hashable) -> None:
        """Disarm the timer ``name`` if armed."""
        self._timer_due.pop(name, None)

    def on_event(self, event: Event, now: float) -> None:
        """Handle one endpoint event."""
        raise NotImplementedError

    def on_timer(self, name: Hashable, now: float) -> None:
        """A timer set with :meth:`set_timer` is due."""
        raise NotImplementedError
