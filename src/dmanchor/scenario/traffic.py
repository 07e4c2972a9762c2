"""Real traffic for emulated scenarios: a sequenced UDP probe and a checked TCP stream.

Both use sockets inside the lab's namespaces (the probe's ends run as
processes of their own, the stream in threads), send only to
addresses inside them, and record what the report needs: arrival times and
sequence numbers (UDP), and a digest of the bytes sent and received (TCP).
"""

from __future__ import annotations

import hashlib
import itertools
import socket
import subprocess
import sys
import threading
import time

from ..emulation.lab import Lab
from .probe import ARRIVAL, READY

JOIN_SLACK = 30.0
"""Seconds an end of the UDP probe may take beyond its flow to finish."""


class UdpProbe:
    """Sequenced UDP at a fixed rate; the receiver records arrival times.

    Each end runs in a process of its own (:mod:`.probe`), on the socket
    opened here in its namespace: as threads of the emulator, its work at
    a move stalled the sender, and the stall was counted as interruption.
    """

    def __init__(self, lab: Lab, src: str, dst_node: str, dst: str, port: int, rate: float,
                 seconds: float, sport: int) -> None:
        self.rx = lab.socket(dst_node)
        self.rx.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
        self.rx.bind((dst, port))
        self.tx = lab.socket(src)
        self.tx.bind(("::", sport))
        self.dst, self.port, self.rate, self.seconds = dst, port, rate, seconds
        self.sent = 0
        self.arrivals: list[tuple[int, float]] = []
        """(sequence number, time.monotonic()) of every packet received."""
        self._sender: subprocess.Popen[bytes] | None = None
        self._receiver: subprocess.Popen[bytes] | None = None

    def _end(self, *args: str, fd: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "dmanchor.scenario.probe", *args],
                                pass_fds=(fd,), stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def start(self) -> None:
        """Start both ends, the receiver first; return when both run (the
        timeline goes on from a flow that flows, as with threads)."""
        self._receiver = self._end("receive", str(self.rx.fileno()), fd=self.rx.fileno())
        assert self._receiver.stdout is not None
        if self._receiver.stdout.read(len(READY)) != READY:
            raise RuntimeError(f"the UDP probe's receiver at {self.dst} did not start")
        self._sender = self._end("send", str(self.tx.fileno()), self.dst, str(self.port),
                                 str(self.rate), str(self.seconds), fd=self.tx.fileno())
        assert self._sender.stdout is not None
        if self._sender.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the UDP probe's sender to {self.dst} did not start")

    def stop(self) -> None:
        """End the flow now: the sender sends no more (the receiver drains)."""
        if self._sender is not None and self._sender.poll() is None:
            self._sender.terminate()

    def join(self) -> None:
        """Wait for both ends; take what they counted.  An end that does not
        finish in time is killed (by its PID) and what it had is lost."""
        try:
            if self._sender is not None:
                out, _ = self._sender.communicate(timeout=self.seconds + JOIN_SLACK)
                self.sent = int(out or b"0")
            if self._receiver is not None:
                out, _ = self._receiver.communicate(timeout=JOIN_SLACK)
                self.arrivals = [(seq, t) for seq, t in ARRIVAL.iter_unpack(
                    out[:len(out) - len(out) % ARRIVAL.size])]
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"the UDP probe to {self.dst} did not end: {exc}") from exc
        finally:
            self.close()

    def close(self) -> None:
        """Stop both ends now (by PID) and close the sockets (idempotent)."""
        for proc in (self._sender, self._receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()
        self.rx.close()
        self.tx.close()


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
