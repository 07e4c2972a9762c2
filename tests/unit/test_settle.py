"""Time to settle after a fault (issue 16 item 8): the watcher, scripted."""

from __future__ import annotations

import threading

from dmanchor.scenario.settle import FaultRecord, SettleWatch
from tests.helpers import wait_until


class Network:
    """A scripted network: stale for the next ``left`` polls; the clock is
    the number of polls made (one second each)."""

    def __init__(self) -> None:
        self.polls = 0
        self.left = 0
        self.lock = threading.Lock()

    def stale(self) -> list[str]:
        with self.lock:
            self.polls += 1
            if self.left:
                self.left -= 1
                if self.left == 1:
                    raise ConnectionRefusedError("restarting")  # a node not answering
                return ["ar1: 2001:db8:1:1::/64 still held"]
            return []

    def clock(self) -> float:
        with self.lock:
            return float(self.polls)


def test_time_to_settle_counts_from_the_recovery_not_the_fault() -> None:
    net = Network()
    watch = SettleWatch(net.stale, net.clock)
    net.left = 10**9  # stale throughout the fault
    watch.fault("ar2", "ar2 killed")
    wait_until(lambda: net.polls >= 3, 10, "polls during the fault")
    watch.recovered("ar2", "ar2 restarted")
    with net.lock:
        net.left = 4  # three stale polls, the third one unanswered, then settled
    rec = watch.records[0]
    wait_until(lambda: rec.converged_s is not None, 30, "the network settled")
    assert rec.recovered == "ar2 restarted" and rec.recovered_at is not None
    assert rec.recovered_at >= 3  # the polls during the fault do not count
    assert rec.converged_s is not None and rec.converged_s >= 5
    assert rec.converged_s == net.polls - rec.recovered_at  # settled at its last poll
    assert watch.finish() == [rec]
    assert f"settled {rec.converged_s:.2f} s later" in rec.line()


def test_a_fault_never_recovered_from_is_timed_from_itself_or_reported_unsettled() -> None:
    net = Network()
    watch = SettleWatch(net.stale, net.clock)
    watch.fault("link r-c", "link r-c cut")  # nothing stale: settled at once
    wait_until(lambda: watch.records[0].converged_s is not None, 10, "settled")
    assert watch.records[0].converged_s == 1.0 and watch.records[0].recovered == ""
    with net.lock:
        net.left = 10**9
    watch.fault("ar1", "ar1 killed")  # never settles before the run ends
    wait_until(lambda: watch.records[1].polls >= 2, 10, "polls")
    records = watch.finish()
    assert records[1].converged_s is None
    assert "NOT settled" in records[1].line()
    assert FaultRecord(**records[1].as_json()) == records[1]
