"""Virtual-time driver: run sans-IO cores in memory, deterministically.

A :class:`VirtualNetwork` holds cores at addresses and delivers datagrams
between them after a per-link delay, dropping some with a seeded random
loss.  Time only advances when the next event is due, so a long scenario
runs in as much CPU time as its events cost.  The same seed gives the same
run, event for event.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .core import Addr, Core


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """Delay and loss between two hosts."""

    delay: float = 0.0005
    """One-way delay, seconds."""
    loss: float = 0.0
    """Probability, 0..1, that a datagram is lost."""


class VirtualNetwork:
    """An in-memory network of cores under one virtual clock."""

    def __init__(self, seed: int = 0, default: LinkProfile | None = None) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.default = default or LinkProfile()
        self.links: dict[tuple[str, str], LinkProfile] = {}
        self.down: set[str] = set()
        """Hosts that neither send nor receive (a crashed or cut node)."""
        self.profile_of: Callable[[str, str], LinkProfile] | None = None
        """The profile between two hosts not in :attr:`links` (a large
        topology's delays computed on demand rather than stored per pair);
        ``default`` when None."""
        self.counters: Counter[str] = Counter()
        self._cores: dict[Addr, Core] = {}
        # (time, insertion order, action): plain tuples, compared in C; the
        # order is unique, so two actions are never compared.
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = 0
        # Per core: the deadline it wants now, and the earliest time an
        # entry of its timer is queued for.  A deadline moved later pushes
        # nothing: the queued entry fires early, finds the core not due and
        # queues the later time then.  (A push per change left most of the
        # queue stale - 93% in a 16k-MN simulation - and every stale entry
        # cost a pop.)
        self._timer_at: dict[Addr, float | None] = {}
        self._queued_at: dict[Addr, float] = {}
        self._on_poll: dict[Addr, Callable[[], None]] = {}
        self.taps: list[Callable[[float, Addr, Addr, bytes], None]] = []
        """Called with (time, source, destination, datagram) for each delivery:
        what call-flow tests and traces read the message sequence from."""
        self.sent_taps: list[Callable[[float, Addr, Addr, bytes], None]] = []
        """The same for each datagram sent, lost or not (as a node's trace
        records what it sends)."""

    # -- Topology ----------------------------------------------------------------

    def add(self, addr: Addr, core: Core, on_poll: Callable[[], None] | None = None) -> Core:
        """Place ``core`` at ``addr``; returns it for chaining.

        ``on_poll`` runs after each time the core was pumped, like the
        asyncio driver's hook: to take other outputs of the core (e.g. the
        routes an anchor announces) to a model of what consumes them.
        """
        if addr in self._cores:
            raise ValueError(f"address {addr} already used")
        self._cores[addr] = core
        if on_poll is not None:
            self._on_poll[addr] = on_poll
        self._timer_at[addr] = None
        self.poll(addr)
        return core

    def on_poll(self, addr: Addr, hook: Callable[[], None]) -> None:
        """Set the ``on_poll`` hook (see :meth:`add`) of a core placed already."""
        self._on_poll[addr] = hook

    def remove(self, addr: Addr) -> None:
        """Take a core off the network (its pending timer is ignored)."""
        self._cores.pop(addr, None)
        self._timer_at.pop(addr, None)
        self._queued_at.pop(addr, None)
        self._on_poll.pop(addr, None)

    def set_link(self, a: str, b: str, profile: LinkProfile) -> None:
        """Set delay/loss between hosts ``a`` and ``b`` (both directions)."""
        self.links[(a, b)] = profile
        self.links[(b, a)] = profile

    # -- Scheduling ---------------------------------------------------------------

    def call_at(self, at: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``at`` (scripted steps of a test)."""
        self._order += 1
        heapq.heappush(self._queue, (max(at, self.now), self._order, action))

    def call_later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay`` seconds from now."""
        self.call_at(self.now + delay, action)

    def poll(self, addr: Addr) -> None:
        """Collect a core's output and timer; call after any direct command."""
        core = self._cores.get(addr)
        if core is None:
            return
        for data, dest in core.datagrams_to_send():
            self._transmit(addr, data, dest)
        hook = self._on_poll.get(addr)
        if hook is not None:
            hook()
        deadline = core.get_timer()
        self._timer_at[addr] = deadline
        if deadline is not None:
            self._queue_timer(addr, deadline)

    def _queue_timer(self, addr: Addr, deadline: float) -> None:
        """Have ``addr``'s timer fire at ``deadline`` at the latest."""
        queued = self._queued_at.get(addr)
        if queued is None or deadline < queued:
            self._queued_at[addr] = deadline
            self.call_at(deadline, lambda: self._fire(addr, deadline))

    def run(self, until: float | None = None, max_events: int = 10_000_000) -> int:
        """Process events (up to time ``until``); returns how many ran."""
        n = 0
        queue = self._queue
        while queue and n < max_events:
            if until is not None and queue[0][0] > until:
                break
            self.now, _, action = heapq.heappop(queue)
            action()
            n += 1
        if until is not None and self.now < until:
            self.now = until
        return n

    def run_for(self, seconds: float) -> int:
        """Process events for ``seconds`` of virtual time."""
        return self.run(self.now + seconds)

    # -- Internals ----------------------------------------------------------------

    def _fire(self, addr: Addr, queued: float) -> None:
        if self._queued_at.get(addr) == queued:
            del self._queued_at[addr]  # (an earlier entry superseded any other)
        want = self._timer_at.get(addr)
        if want is None:
            return  # no timer any more (or the core was removed)
        if want > self.now:
            self._queue_timer(addr, want)  # moved later since it was queued
            return
        self._timer_at[addr] = None
        core = self._cores.get(addr)
        if core is None or addr[0] in self.down:
            return
        core.handle_timer(self.now)
        self.poll(addr)

    def inject(self, src: Addr, data: bytes, dest: Addr) -> None:
        """A datagram from outside the modelled cores (a forger's): delivered
        after the default delay, never seen by :attr:`sent_taps` (no node
        sent it)."""
        self.call_at(self.now + self.default.delay, lambda: self._deliver(src, data, dest))

    def _transmit(self, src: Addr, data: bytes, dest: Addr) -> None:
        self.counters["sent"] += 1
        self.counters["bytes"] += len(data)
        for tap in self.sent_taps:
            tap(self.now, src, dest, data)
        if src[0] in self.down:
            self.counters["dropped-down"] += 1
            return
        prof = self.links.get((src[0], dest[0])) or (
            self.profile_of(src[0], dest[0]) if self.profile_of is not None else self.default)
        if prof.loss and self.rng.random() < prof.loss:
            self.counters["lost"] += 1
            return
        self.call_at(self.now + prof.delay, lambda: self._deliver(src, data, dest))

    def _deliver(self, src: Addr, data: bytes, dest: Addr) -> None:
        core = self._cores.get(dest)
        if core is None or dest[0] in self.down:
            self.counters["undeliverable"] += 1
            return
        self.counters["delivered"] += 1
        for tap in self.taps:
            tap(self.now, src, dest, data)
        core.receive_datagram(data, src, self.now, dest)
        self.poll(dest)
