"""The hold-lift policy of the Linux data plane (no kernel needed).

A :class:`Lifter` decides when a hold route may go: these tests feed it a
scripted device and check the order of what it writes, when it removes the
hold, what it counts as stragglers, that it neither lifts while packets
flow nor waits forever under a stream that never stops, that it gives the
event loop back between bounded steps, and that the lift runs at real-time
priority when the process may raise it (root in CI).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

import pytest

from dmanchor.dataplane import tunbuffer
from dmanchor.dataplane.tunbuffer import Lift, Lifter, unpreempted


class Device:
    """A scripted hold device: ``arrivals[i]`` is what the i-th read finds."""

    def __init__(self, arrivals: list[list[bytes]], after_lift: list[bytes]) -> None:
        self.arrivals = deque(arrivals)
        self.after_lift = after_lift
        self.lifted = False
        self.written: list[bytes] = []
        self.events: list[str] = []
        self.policy_at_lift: int | None = None
        self.reads: list[int] = []
        """How many packets each read before the lift found."""

    def take(self) -> list[bytes]:
        if self.lifted:
            out, self.after_lift = self.after_lift, []
            return out
        out = self.arrivals.popleft() if self.arrivals else []
        self.reads.append(len(out))
        return out

    def write(self, pkt: bytes) -> None:
        self.written.append(pkt)
        self.events.append(f"write {pkt.decode()}")

    def remove_hold(self) -> None:
        self.lifted = True
        self.policy_at_lift = os.sched_getscheduler(0)
        self.events.append("lift")


def test_everything_leaves_in_order_and_the_lift_comes_after_the_last_held_packet() -> None:
    dev = Device([[b"1", b"2"], [], [b"3"]], after_lift=[b"4"])
    lift = drain_and_lift(dev.take, dev.write, dev.remove_hold, quiet=0.002, wait=1.0)
    assert dev.written == [b"1", b"2", b"3", b"4"]
    assert dev.events.index("lift") == 3  # after 1, 2, 3; the straggler 4 after it
    assert (lift.released, lift.stragglers) == (4, 1)


def test_a_steady_stream_is_lifted_at_the_force_bound_not_never() -> None:
    endless = [[b"x"] for _ in range(1_000_000)]
    dev = Device(endless, after_lift=[])
    lift = drain_and_lift(dev.take, dev.write, dev.remove_hold, quiet=1.0, wait=0.002)
    assert dev.lifted and lift.forced and lift.stragglers == 0
    assert 0 < lift.released < 1_000_000


def test_the_lift_waits_for_an_empty_read_even_past_the_lull_bound() -> None:
    # Packets in every read for a while: past ``wait`` but before the force
    # bound, the lift still comes only after a read found nothing.
    dev = Device([[b"1"], [b"2"], [b"3"], []], after_lift=[])
    lift = drain_and_lift(dev.take, dev.write, dev.remove_hold, quiet=0.004, wait=0.001)
    assert dev.events == ["write 1", "write 2", "write 3", "lift"]
    assert not lift.forced


def drain_and_lift(take: Callable[[], list[bytes]], write: Callable[[bytes], None],
                   remove_hold: Callable[[], None], **bounds: float) -> Lift:
    """A whole lift, stepped as a driver does until it is done."""
    lifter = Lifter(take, write, remove_hold, **bounds)
    while (lift := lifter.step()) is None:
        pass
    return lift


class Clock:
    """A stand-in for the ``time`` module: each reading takes a microsecond,
    sleeping advances it (so preemption on a loaded host cannot turn a gap
    of a few reads into a lull)."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        self.t += 1e-6
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_under_a_steady_stream_the_lift_follows_the_end_of_an_arrival(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # No lull ever comes (quiet is long): past ``wait``, the lift polls for
    # the end of the next arrival - a burst whose packets come reads apart
    # - and goes right after its last packet, not at whatever moment the
    # bound passed (the start of a burst would leave its rest behind).
    burst = [[b"a"], [], [b"b"], [], [b"c"]]
    monkeypatch.setattr(tunbuffer, "time", Clock())
    dev = Device([[b"p"], [], [b"q"], [], *burst, *[[] for _ in range(200_000)]],
                 after_lift=[])
    lift = drain_and_lift(dev.take, dev.write, dev.remove_hold, quiet=1.0, wait=0.01)
    assert dev.lifted and not lift.forced
    assert dev.events == ["write p", "write q", "write a", "write b", "write c", "lift"]
    assert lift.stragglers == 0


def test_the_lift_runs_at_real_time_priority_when_allowed_and_the_policy_is_restored() -> None:
    before = os.sched_getscheduler(0)
    dev = Device([[b"1"]], after_lift=[])
    lift = drain_and_lift(dev.take, dev.write, dev.remove_hold, quiet=0.001, wait=0.1)
    if os.geteuid() == 0:
        assert lift.guarded  # root may raise it (CAP_SYS_NICE)
    assert dev.policy_at_lift == (os.SCHED_FIFO if lift.guarded else before)
    assert os.sched_getscheduler(0) == before


def test_every_step_of_a_lift_runs_at_real_time_priority_when_allowed() -> None:
    """Issue 16 item 5: a step preempted by other tasks holds the loop (and
    the held packets) while they run; so each bounded step is guarded, and
    the loop runs at its usual priority between steps."""
    before = os.sched_getscheduler(0)
    policies: list[int] = []
    dev = Device([[b"1"], [b"2"], [b"3"], *[[] for _ in range(50)]], after_lift=[])

    def take() -> list[bytes]:
        policies.append(os.sched_getscheduler(0))
        return dev.take()
    lifter = Lifter(take, dev.write, dev.remove_hold, quiet=0.0003, wait=0.01, step=0.0)
    between = []
    while (lift := lifter.step()) is None:
        between.append(os.sched_getscheduler(0))
    assert lift.steps > 1 and set(between) == {before}
    if os.geteuid() == 0:
        assert lift.guarded and set(policies) == {os.SCHED_FIFO}


def test_a_failed_lift_propagates_and_still_restores_the_policy() -> None:
    before = os.sched_getscheduler(0)

    def refuse() -> None:
        raise RuntimeError("netlink said no")

    dev = Device([], after_lift=[])
    with pytest.raises(RuntimeError, match="said no"):
        drain_and_lift(dev.take, dev.write, refuse, quiet=0.001, wait=0.1)
    assert os.sched_getscheduler(0) == before


def test_nested_real_time_sections_leave_the_outer_one_in_force() -> None:
    with unpreempted() as outer:
        with unpreempted() as inner:
            assert inner == outer
        if outer:
            assert os.sched_getscheduler(0) == os.SCHED_FIFO


def test_an_os_error_inside_a_nested_section_reaches_the_caller_unchanged() -> None:
    before = os.sched_getscheduler(0)
    with pytest.raises(OSError, match="device gone"), unpreempted(), unpreempted():
        raise OSError("device gone")
    assert os.sched_getscheduler(0) == before


def test_a_read_of_the_hold_device_is_bounded_under_a_flood() -> None:
    """However full the ring, one read takes at most ``limit`` packets, in
    order: the event loop gets back to everything else."""
    import socket

    from dmanchor.dataplane.tunbuffer import TunBuffer

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    dev = TunBuffer.__new__(TunBuffer)  # the ring, without a kernel device
    dev.fd = ours.fileno()
    try:
        for i in range(25):
            theirs.send(bytes([i]))
        assert dev.read_all(limit=10) == [bytes([i]) for i in range(10)]
        assert dev.read_all(limit=10) == [bytes([i]) for i in range(10, 20)]
        assert dev.read_all(limit=10) == [bytes([i]) for i in range(20, 25)]
        assert dev.read_all(limit=10) == []
    finally:
        ours.close()
        theirs.close()


def _stepped(lifter: Lifter, clock: Clock, dev: Device) -> tuple[list[float], Lift]:
    """Step ``lifter`` to its end as a driver does: each step's length in
    ``clock``'s time, and the lift; between steps the hold stays."""
    spans = []
    while True:
        before = clock.t
        lift = lifter.step()
        spans.append(clock.t - before)
        if lift is not None:
            return spans, lift
        assert not dev.lifted  # arrivals queue behind it meanwhile


def test_a_lift_under_a_stream_gives_the_loop_back_between_bounded_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16 item 5: a packet in every read for 30 ms (no lull) - the lift
    returns to its caller every step (about ``step`` seconds, plus the final
    edge), and what it writes stays in order across the steps."""
    clock = Clock()
    monkeypatch.setattr(tunbuffer, "time", clock)
    stream = [[str(i).encode()] for i in range(30_000)]  # 1 us a read: 30 ms
    dev = Device([*stream, *[[] for _ in range(10)]], after_lift=[])
    lifter = Lifter(dev.take, dev.write, dev.remove_hold, quiet=0.0003, wait=0.01,
                    step=0.002)
    spans, lift = _stepped(lifter, clock, dev)
    assert len(spans) > 10 and lift.steps == len(spans)
    assert max(spans) <= 0.002 + tunbuffer.EDGE_WAIT + 1e-4
    assert abs(lift.longest - max(spans)) < 1e-5  # what the trace reports
    assert dev.written == [str(i).encode() for i in range(30_000)]
    assert dev.events[-1] == "lift" and not lift.forced


def test_a_lift_cut_short_writes_what_is_held_then_lifts() -> None:
    """A batch about to change the prefix's forwarding finishes its lift at
    once: what was held goes first, by the route it was released to."""
    dev = Device([[b"1"], [b"2"]], after_lift=[b"3"])
    lifter = Lifter(dev.take, dev.write, dev.remove_hold, quiet=1.0, wait=1.0, step=0.0)
    assert lifter.step() is None  # a stream: no lull yet
    lift = lifter.finish()
    assert lift.cut and not lift.forced
    assert dev.events == ["write 1", "write 2", "lift", "write 3"]
    assert (lift.released, lift.stragglers, lift.steps) == (3, 1, 1)


@pytest.mark.parametrize("cls", ["dataplane.linux.LinuxDataPlane", "fm.anchor.AnchorAgentCore"])
def test_no_mixin_stub_stands_in_for_a_method(cls: str) -> None:
    """The Linux data plane and the anchor agent are assembled from mixins
    that declare what they use of each other (for the type checker only):
    a run-time stub that resolves ahead of the real method (the end
    markers', once) silently breaks them."""
    import importlib
    import inspect

    module, name = cls.rsplit(".", 1)
    core = getattr(importlib.import_module(f"dmanchor.{module}"), name)
    stubs = [n for n, fn in inspect.getmembers(core, inspect.isfunction)
             if "raise NotImplementedError" in inspect.getsource(fn)]
    assert stubs == []


def test_a_long_holds_backlog_goes_out_over_several_steps_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """3000 packets held (3 s at 1000 pps), each write taking 10 us: the
    first step does not write them all (30 ms of the loop's time, as it
    did); a step writes at most WRITE_BATCH, then gives the loop back."""
    clock = Clock()
    monkeypatch.setattr(tunbuffer, "time", clock)
    backlog = [str(i).encode() for i in range(3000)]
    dev = Device([backlog, *[[] for _ in range(50)]], after_lift=[])

    def write(pkt: bytes) -> None:
        clock.t += 1e-5
        dev.write(pkt)
    lifter = Lifter(dev.take, write, dev.remove_hold, quiet=0.0003, wait=0.01, step=0.002)
    spans, lift = _stepped(lifter, clock, dev)
    # No step held the loop for more than one batch of writes (and the last
    # its looking and the edge): the backlog took a step per batch.
    batch = tunbuffer.WRITE_BATCH * 1e-5
    assert len(spans) >= 3000 // tunbuffer.WRITE_BATCH, len(spans)
    assert max(spans[:-1]) <= 0.002 + batch, max(spans[:-1])
    assert spans[-1] <= 0.002 + batch + tunbuffer.EDGE_WAIT + 1e-4, spans[-1]
    assert dev.written == backlog and dev.events[-1] == "lift"
    assert lift.released == 3000
