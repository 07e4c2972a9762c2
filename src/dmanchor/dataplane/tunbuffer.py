"""FM:6 packet holding on Linux with a TUN device, driven only by netlink.

A held prefix is routed (metric 1, ahead of its other routes) into the TUN
device ``dmbuf0`` of the namespace.  The kernel queues what it forwards
there in the device's ring (``txqueuelen`` = the buffer limit; overflow is
the device's tx_dropped).  Releasing reads the ring and writes each packet
back into the device: it re-enters the kernel as if received from
``dmbuf0`` and is routed by whatever forwarding is current then.

Why not NFQUEUE: toggling an ip6tables rule costs a process spawn (~10 ms)
on the handover path; here holding and releasing are route changes (tens
of microseconds) plus our own reads and writes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .netlink import NetlinkError, _libc

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
DEVICE = "dmbuf0"
MAX_PACKET = 65536
READ_LIMIT = 512
"""Most packets one read of the device takes (well under 1 ms of a loop's
time: ~1.5 us each; under a flood the loop comes back for the rest after
its other work)."""
LIFT_READ = 256
"""Most packets one read of a lift step takes (see :class:`Lifter`)."""
LIFT_QUIET = 0.0003
"""Seconds without a packet for the prefix before its hold is lifted."""
LIFT_WAIT = 0.01
"""Longest a release waits for that lull, seconds."""
EDGE_WAIT = 0.002
"""Longest a lift under a steady stream polls for the end of an arrival,
seconds (see :func:`_edge`)."""
EDGE_QUIET = 0.00005
"""Seconds without a packet, after one, that end an arrival (a burst's
packets come microseconds apart)."""
FORCE_AFTER = 100
"""A release under a stream that never lets the device run empty lifts after
this many ``wait`` periods (1 s), not never.  Not sooner: an agent starved
of CPU also finds the device non-empty at every read, and lifting then
leaves hundreds of packets behind the lift (measured: 516 after 100 ms
under two CPU hogs)."""


class TunBuffer:
    """The TUN device of one namespace, holding packets of held prefixes."""

    def __init__(self, netns: str | None) -> None:
        self.fd = self._open(netns)

    @staticmethod
    def _open(netns: str | None) -> int:
        libc = _libc()
        home = target = -1
        try:
            if netns is not None:
                target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
                home = os.open("/proc/self/ns/net", os.O_RDONLY)
                if libc.setns(target, 0x40000000) != 0:
                    raise NetlinkError(f"entering {netns!r} for {DEVICE}", errno.EPERM)
            try:
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            except OSError as exc:
                raise NetlinkError("/dev/net/tun (needs root and the tun module)",
                                   exc.errno or errno.ENODEV) from exc
            try:
                fcntl.ioctl(fd, TUNSETIFF,
                            struct.pack("16sH22x", DEVICE.encode(), IFF_TUN | IFF_NO_PI))
            except OSError as exc:
                os.close(fd)
                raise NetlinkError(f"creating {DEVICE}", exc.errno or errno.EINVAL) from exc
            return fd
        finally:
            if home >= 0:
                libc.setns(home, 0x40000000)
                os.close(home)
            if target >= 0:
                os.close(target)

    def read_all(self, limit: int = READ_LIMIT) -> list[bytes]:
        """The packets waiting in the device ring, oldest first, at most ``limit``.

        Bounded: under a flood the ring refills as fast as it is read, and
        an unbounded read would keep the agent's event loop here (the
        driver comes back, the device still being readable)."""
        out = []
        read = os.read
        for _ in range(limit):
            try:
                out.append(read(self.fd, MAX_PACKET))
            except BlockingIOError:
                break
        return out

    def write(self, packet: bytes) -> None:
        """Inject ``packet`` as received from the device (it is routed anew)."""
        os.write(self.fd, packet)

    def close(self) -> None:
        """Close: the (non-persistent) device disappears with its ring."""
        os.close(self.fd)


def destination(packet: bytes) -> int:
    """IPv6 destination of a raw packet (0 if it is not IPv6)."""
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return 0
    return int.from_bytes(packet[24:40], "big")


@dataclass(frozen=True, slots=True)
class Lift:
    """What lifting one hold took."""

    released: int
    """Packets written out of the device for the prefix."""
    stragglers: int
    """Of those, packets that entered the device just before the hold went
    (each one could have been overtaken by the direct path)."""
    forced: bool = False
    """The device never came up empty: lifted at ``FORCE_AFTER * wait``."""
    waited: float = 0.0
    """Seconds from the first read to the hold's removal."""
    guarded: bool = False
    """The lift's last step ran at real-time priority (:func:`unpreempted`)."""
    steps: int = 1
    """Steps it took (:class:`Lifter`): the event loop ran between them."""
    cut: bool = False
    """Lifted at once (:meth:`Lifter.finish`): the prefix's forwarding was
    about to change under it."""
    longest: float = 0.0
    """Seconds the longest step took: the longest the lift held the event
    loop at once."""


WRITE_BATCH = 128
"""Held packets one step writes out at most (about 1 ms of writes: a write
into the device routes the packet in the kernel, ~8 us)."""
LIFT_STEP = 0.0005
"""Longest one step of a lift looks for its lull before it gives the event
loop back, seconds.  A step that writes a batch gives it back after the
batch; one that decides to lift runs on for at most :data:`EDGE_WAIT` more.
So no step holds the loop much above 2.5 ms (a whole lift under a stream
once held it up to ``FORCE_AFTER * wait`` = 1 s; steps of 2 ms of looking,
2048 reads and 256 writes made a p99 of 12 ms under load)."""


class Lifter:
    """Write a held prefix's packets out in order, then lift its hold in a lull
    - in bounded steps, so the event loop runs between them.

    ``take`` returns (and forgets) what the device holds for the prefix,
    oldest first; ``write`` re-injects one packet; ``remove_hold`` removes
    the hold route.  While the hold stays, new arrivals queue behind the
    held packets and leave in order.  A packet that enters the device just
    before the lift is written out just after it, where one arriving right
    behind it on the direct path could overtake it: so the lift waits for
    ``quiet`` seconds without a packet (traffic comes in bursts; the lift
    lands between two), at most ``wait`` seconds.

    The driver calls :meth:`step` until it returns the :class:`Lift`.  What
    arrives while the loop is elsewhere waits in the device, behind the
    hold, and is taken by the next step; the lull is judged from the
    packets themselves (a read that finds none after ``quiet`` without
    one), so the time between steps cannot fake one.
    """

    def __init__(self, take: Callable[[], list[bytes]], write: Callable[[bytes], None],
                 remove_hold: Callable[[], None], *, quiet: float = LIFT_QUIET,
                 wait: float = LIFT_WAIT, step: float = LIFT_STEP) -> None:
        self._take, self._write, self._remove_hold = take, write, remove_hold
        self.quiet, self.wait, self.step_budget = quiet, wait, step
        self.released = 0
        self.steps = 0
        """Steps taken so far (the last one lifts)."""
        self._start: float | None = None
        self._last = 0.0
        self._began = 0.0  # when the step under way began
        self._pending: deque[bytes] = deque()  # taken, not yet written (in order)
        self.longest = 0.0
        """Seconds the longest step so far took."""

    def step(self) -> Lift | None:
        """Write out what is held now; lift if the moment has come.  ``None``:
        call again (soon - arrivals queue behind the hold meanwhile).

        The step runs at real-time priority where allowed (:func:`unpreempted`):
        its work is bounded (:data:`LIFT_STEP`, a batch, the edge), and a
        step preempted by other tasks holds the loop - and the held packets -
        for as long as they run (measured under two CPU hogs: steps of 6-16 ms
        for 0.5-2.5 ms of work)."""
        with unpreempted():
            return self._step()

    def _step(self) -> Lift | None:
        self.steps += 1
        now = time.monotonic()
        if self._start is None:
            self._start = self._last = now
        self._began = now
        start, until = self._start, now + self.step_budget
        pending = self._pending
        while True:
            batch = self._take()
            pending.extend(batch)
            now = time.monotonic()
            if pending:
                # A long hold's backlog goes out over several steps, in order:
                # writing thousands at once held the loop for tens of ms.
                for _ in range(min(len(pending), WRITE_BATCH)):
                    self._write(pending.popleft())
                    self.released += 1
                now = time.monotonic()
                if batch:
                    self._last = now
                if now - start >= FORCE_AFTER * self.wait:
                    # A stream that never leaves the device empty (line rate):
                    # lift anyway rather than forward it in user space forever.
                    return self._lift(lull=False, forced=True)
                if pending:
                    break  # a backlog: the loop has its turn between batches
            elif now - self._last >= self.quiet or now - start >= self.wait:
                # Lift only right after a read found the device empty: lifting
                # while packets flow would leave more of them behind the lift.
                return self._lift(lull=now - self._last >= self.quiet, forced=False)
            if now >= until:
                break
            if not batch:
                time.sleep(self.quiet / 4)
        self.longest = max(self.longest, now - self._began)
        return None

    def take_back(self) -> list[bytes]:
        """Give up: the packets taken but not written yet, oldest first."""
        out = list(self._pending)
        self._pending.clear()
        return out

    def finish(self) -> Lift:
        """Lift now, whatever comes (the prefix is about to change under it)."""
        self._began = time.monotonic()
        if self._start is None:
            self._start = self._last = self._began
        return self._lift(lull=False, forced=False, cut=True)

    def _lift(self, *, lull: bool, forced: bool, cut: bool = False) -> Lift:
        assert self._start is not None
        backlog = len(self._pending)
        while self._pending:  # (a cut or a forced lift: all of it goes first)
            self._write(self._pending.popleft())
        with unpreempted() as guarded:
            now_or_never = lull or forced or cut
            tail = self._take() if now_or_never else _edge(self._take, self._write)
            if now_or_never:
                for pkt in tail:
                    self._write(pkt)
            self._remove_hold()
            waited = time.monotonic() - self._start
            late = self._take()
            for pkt in late:
                self._write(pkt)
        self.longest = max(self.longest, time.monotonic() - self._began)
        return Lift(self.released + backlog + len(tail) + len(late), len(late), forced, waited,
                    guarded, self.steps, cut, self.longest)


def _edge(take: Callable[[], list[bytes]], write: Callable[[bytes], None]) -> list[bytes]:
    """Under a steady stream (no lull came): poll without sleeping until an
    arrival has ended - a packet, then :data:`EDGE_QUIET` without one -
    writing what comes, and return it; the lift follows at once, as far
    from the next arrival as it can be.  Lifting at whatever moment the
    ``wait`` bound passed can land at the start of a burst, leaving its
    rest behind the lift (measured: 4-10 stragglers a lift at 10k pps,
    each overtaken); sleeping between polls overshoots by tens of
    microseconds.  At most :data:`EDGE_WAIT`."""
    out: list[bytes] = []
    now = time.monotonic()
    until, seen = now + EDGE_WAIT, None
    while now < until:
        batch = take()
        now = time.monotonic()
        if batch:
            for pkt in batch:
                write(pkt)
            out.extend(batch)
            seen = now
        elif seen is not None and now - seen >= EDGE_QUIET:
            break
    return out


@contextmanager
def unpreempted() -> Iterator[bool]:
    """Run the enclosed steps at real-time priority (SCHED_FIFO 1), if allowed.

    The lift's last steps - read the device, remove the hold route, read
    what entered just before - must follow each other closely: whatever
    enters the device between the read and the removal is written out after
    it, behind packets that took the direct path meanwhile.  An agent
    preempted there (a loaded host) leaves whole bursts behind.  At
    real-time priority no ordinary task preempts those ~100 microseconds
    of system calls.  Measured under two CPU hogs, 4.2.1: stragglers in 4
    of 46 lifts and no run reordered, against 8 of 34 and 3 runs reordered
    without it.  Every step of a lift runs so (:meth:`Lifter.step`): each is
    bounded, and a preempted step holds the loop for as long as others run.

    Yields whether the priority was raised (it is not without
    CAP_SYS_NICE or real-time bandwidth, as in some containers); the
    previous policy is restored on the way out in any case.
    """
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        already = policy in (os.SCHED_FIFO, os.SCHED_RR)
        if not already:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        yield False
        return
    # The body's own errors (an OSError from a write, say) pass through:
    # no yield sits inside the try above.
    if already:
        yield True
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, policy, param)
