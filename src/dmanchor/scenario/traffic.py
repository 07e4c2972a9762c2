"""Real traffic for emulated scenarios: a sequenced UDP probe and a checked TCP stream.

Both run in threads with sockets inside the lab's namespaces, send only to
addresses inside them, and record what the report needs: arrival times and
sequence numbers (UDP), and a digest of the bytes sent and received (TCP).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import socket
import struct
import threading
import time

from ..emulation.lab import Lab


class UdpProbe:
    """Sequenced UDP at a fixed rate; the receiver records arrival times."""

    def __init__(self, lab: Lab, src: str, dst_node: str, dst: str, port: int, rate: float,
                 seconds: float, sport: int) -> None:
        self.rx = lab.socket(dst_node)
        self.rx.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
        self.rx.bind((dst, port))
        self.rx.settimeout(1.5)
        self.tx = lab.socket(src)
        self.tx.bind(("::", sport))
        self.dst, self.port, self.rate, self.seconds = dst, port, rate, seconds
        self.sent = 0
        self.started = 0.0
        self.arrivals: list[tuple[int, float]] = []
        """(sequence number, time.monotonic()) of every packet received."""
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._receive, daemon=True)]
        self._stop = threading.Event()

    def start(self) -> None:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """End the flow now: the sender sends no more (the receiver drains)."""
        self._stop.set()

    def join(self) -> None:
        for t in self._threads:
            t.join(30)
        self.rx.close()
        self.tx.close()

    def _send(self) -> None:
        # Paced by sleeping, in 1 ms slots: busy-waiting would take a whole
        # core from the node processes on a small machine and inflate the
        # very latencies being measured.
        interval = 1.0 / self.rate
        start = time.perf_counter()
        total = int(self.rate * self.seconds)
        while self.sent < total and not self._stop.is_set():
            now = time.perf_counter()
            due = min(total, int((now - start) / interval) + 1)
            while self.sent < due:
                # No route for a moment: that packet is lost, and counted so.
                with contextlib.suppress(OSError):
                    self.tx.sendto(struct.pack("!I", self.sent), (self.dst, self.port))
                self.sent += 1
            time.sleep(max(0.0, start + self.sent * interval - time.perf_counter(), 0.001))

    def _receive(self) -> None:
        # Until 1.5 s of silence after the sender stopped: an outage longer
        # than that (a node killed, a cut) is measured, not taken for the end.
        while True:
            try:
                data = self.rx.recv(64)
            except TimeoutError:
                if self._threads[0].is_alive():
                    continue
                return
            except OSError:
                return
            self.arrivals.append((struct.unpack("!I", data)[0], time.monotonic()))


class TcpStream:
    """A TCP stream host -> MN whose received bytes are checked against what was sent."""

    def __init__(self, lab: Lab, src: str, dst_node: str, dst: str, port: int,
                 seconds: float) -> None:
        self.srv = lab.socket(dst_node, socket.SOCK_STREAM)
        self.srv.bind((dst, port))
        self.srv.listen(1)
        self.cli = lab.socket(src, socket.SOCK_STREAM)
        self.dst, self.port, self.seconds = dst, port, seconds
        self.sent = hashlib.sha256()
        self.got = hashlib.sha256()
        self.bytes_sent = self.bytes_received = 0
        self.error = ""
        self.arrivals: list[tuple[int, float]] = []
        """(bytes so far, time.monotonic()) per receive: the stream's progress."""
        self._threads = [threading.Thread(target=self._serve, daemon=True),
                         threading.Thread(target=self._send, daemon=True)]
        self._stop = threading.Event()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """End the stream now: the sender shuts its side, the receiver closes."""
        self._stop.set()

    def join(self) -> None:
        for t in self._threads:
            t.join(60)
        self.srv.close()

    @property
    def unbroken(self) -> bool:
        """Connected throughout, and every byte arrived, in order, unaltered."""
        return not self.error and self.bytes_sent > 0 and \
            self.sent.digest() == self.got.digest()

    def _serve(self) -> None:
        try:
            self.srv.settimeout(10)
            conn, _ = self.srv.accept()
            conn.settimeout(15)
            while chunk := conn.recv(65536):
                self.got.update(chunk)
                self.bytes_received += len(chunk)
                self.arrivals.append((self.bytes_received, time.monotonic()))
            conn.close()
        except OSError as exc:
            self.error = f"receiver: {exc}"

    def _send(self) -> None:
        block = bytes(range(256)) * 64  # 16 KiB, position-dependent content
        try:
            self.cli.settimeout(15)
            self.cli.connect((self.dst, self.port))
            end = time.monotonic() + self.seconds
            for i in itertools.count():
                if time.monotonic() >= end or self._stop.is_set():
                    break
                chunk = block[i % 256:] + block[: i % 256]
                self.cli.sendall(chunk)
                self.sent.update(chunk)
                self.bytes_sent += len(chunk)
                time.sleep(0.001)  # ~10-15 MB/s: a stream, not a flood
            self.cli.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.error = f"sender: {exc}"
        finally:
            self.cli.close()
