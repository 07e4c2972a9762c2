"""The continuity probe's two ends, each a process of its own.

:class:`~.traffic.UdpProbe` opens the sockets in the lab's namespaces and
hands each end its descriptor (inherited).  As threads of the emulator the
two ends shared its interpreter lock with the emulator's own work at a move
(netlink, the MN's RS, reading counters): the sender then stalled for 2-3 ms
around each move (measured: its longest gap near a move p50 2.3-2.7 ms,
against its 1 ms pacing), and the receiver counted the stall as part of the
handover's interruption.  A process of its own waits only for the CPU, as a
real correspondent's sender and an MN's application would.

``python -m dmanchor.scenario.probe send FD DST PORT RATE SECONDS``: paces
sequenced datagrams (4-byte sequence numbers) until done or SIGTERM; prints
``ready`` as it starts and how many it sent as it ends.  ``... receive FD``:
writes :data:`READY`, then records each datagram's sequence
number and ``time.monotonic()`` (one clock across processes) until its
stdin closes (the sender has ended) and then 1.5 s pass without one;
writes them to stdout as packed :data:`ARRIVAL` records.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import sys
import time

READY = b"R"
"""What the receiver writes first, listening."""
ARRIVAL = struct.Struct("!Id")
"""One arrival on the receiver's stdout: sequence number, monotonic time."""
SILENCE = 1.5
"""Seconds without a datagram, after the sender ended, that end the receiver:
an outage longer than that (a node killed, a cut) is measured, not taken
for the end."""


def send(fd: int, dst: str, port: int, rate: float, seconds: float) -> int:
    """Send ``rate`` datagrams a second for ``seconds`` (or until SIGTERM)."""
    stopped = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    sock = socket.socket(fileno=fd)
    # Paced by sleeping, in 1 ms slots: busy-waiting would take a whole
    # core from the node processes on a small machine and inflate the very
    # latencies being measured.
    interval = 1.0 / rate
    total = int(rate * seconds)
    sent = 0
    print("ready", flush=True)
    start = time.perf_counter()
    while sent < total and not stopped:
        due = min(total, int((time.perf_counter() - start) / interval) + 1)
        while sent < due:
            # No route for a moment: that datagram is lost, and counted so.
            with contextlib.suppress(OSError):
                sock.sendto(struct.pack("!I", sent), (dst, port))
            sent += 1
        time.sleep(max(0.0, start + sent * interval - time.perf_counter(), 0.001))
    return sent


def receive(fd: int) -> bytes:
    """Record arrivals until the sender has ended (stdin closed) and
    :data:`SILENCE` seconds pass without one."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ)
    out = bytearray()
    sender_done = False
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    while True:
        ready = sel.select(SILENCE)
        if not ready and sender_done:
            return bytes(out)
        for key, _ in ready:
            if key.fileobj is sock:
                while True:
                    try:
                        data = sock.recv(64)
                    except BlockingIOError:
                        break
                    if len(data) >= 4:
                        out += ARRIVAL.pack(struct.unpack_from("!I", data)[0], time.monotonic())
            elif not os.read(sys.stdin.fileno(), 64):
                sender_done = True
                sel.unregister(sys.stdin.fileno())


def main(argv: list[str]) -> int:
    """Run one end (see the module)."""
    if argv[:1] == ["send"] and len(argv) == 6:
        print(send(int(argv[1]), argv[2], int(argv[3]), float(argv[4]), float(argv[5])),
              flush=True)
        return 0
    if argv[:1] == ["receive"] and len(argv) == 2:
        sys.stdout.buffer.write(receive(int(argv[1])))
        sys.stdout.buffer.flush()
        return 0
    print("usage: probe send FD DST PORT RATE SECONDS | probe receive FD", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
