"""The continuity probe's ends as processes (dmanchor.scenario.probe), over
loopback: every datagram sent is recorded once, in order, on one clock with
the caller; SIGTERM ends the sender early and it still says what it sent;
the receiver ends only once told the sender is done."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from dmanchor.scenario.probe import ARRIVAL, READY
from tests.helpers import has_ipv6_loopback

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")]


def end(*args: str, fd: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "dmanchor.scenario.probe", *args],
                            pass_fds=(fd,), stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def pair() -> tuple[socket.socket, socket.socket, int]:
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        # Room for all of it, should the receiver wait for a CPU (hogs).
        rx.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
    except PermissionError:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.bind(("::1", 0))
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx.bind(("::1", 0))
    return rx, tx, rx.getsockname()[1]


def run(seconds: float, stop_after: float | None = None) -> tuple[int, list[tuple[int, float]],
                                                                 float]:
    rx, tx, port = pair()
    receiver = end("receive", str(rx.fileno()), fd=rx.fileno())
    sender: subprocess.Popen[bytes] | None = None
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.read(len(READY)) == READY
        began = time.monotonic()
        sender = end("send", str(tx.fileno()), "::1", str(port), "2000", str(seconds),
                     fd=tx.fileno())
        assert sender.stdout is not None
        assert sender.stdout.readline().strip() == b"ready"
        if stop_after is not None:
            time.sleep(stop_after)
            sender.send_signal(signal.SIGTERM)
        out, _ = sender.communicate(timeout=30)
        sent = int(out)
        data, _ = receiver.communicate(timeout=30)
        return sent, list(ARRIVAL.iter_unpack(data)), began
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        rx.close()
        tx.close()


def test_every_datagram_is_recorded_once_in_order_on_the_callers_clock() -> None:
    sent, arrivals, began = run(0.3)
    assert sent == 600
    seqs = [s for s, _ in arrivals]
    assert seqs == list(range(600))  # (loopback neither loses nor reorders)
    times = [t for _, t in arrivals]
    assert times == sorted(times)
    assert began < times[0] and times[-1] < time.monotonic()


def test_sigterm_ends_the_sender_early_and_it_says_what_it_sent() -> None:
    sent, arrivals, _ = run(30.0, stop_after=0.2)
    assert 0 < sent < 60_000
    assert [s for s, _ in arrivals] == list(range(sent))
