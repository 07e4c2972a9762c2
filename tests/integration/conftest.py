"""Fixtures that run dmanchor daemons as real processes on loopback.

Every process started is recorded and, at teardown, stopped by its PID
(SIGTERM, then SIGKILL) - never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Daemon:
    """One started daemon process."""

    name: str
    proc: subprocess.Popen[str]
    port: int
    log: Path

    def kill9(self) -> None:
        """Crash it (SIGKILL) and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text()


@dataclass
class Daemons:
    """Starts daemons and remembers them for cleanup."""

    tmp: Path
    started: list[Daemon] = field(default_factory=list)

    def start(self, kind: str, name: str, config: str, timeout: float = 15) -> Daemon:
        cfg = self.tmp / f"{name}.toml"
        cfg.write_text(config)
        log = self.tmp / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "dmanchor.cli", kind, "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env,
        )
        d = Daemon(name, proc, 0, log)
        self.started.append(d)
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready HOST PORT"
        if not line.startswith("ready ") or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{name} did not start: {line!r} {log.read_text()}")
        d.port = int(line.split()[2])
        return d

    def stop_all(self) -> None:
        for d in self.started:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
        for d in self.started:
            try:
                d.proc.wait(5)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait(5)
            if d.proc.stdout is not None:
                d.proc.stdout.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    ds = Daemons(tmp_path)
    try:
        yield ds
    finally:
        ds.stop_all()


def free_port() -> int:
    """A TCP port on loopback nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Etcd:
    """A real etcd (Debian's etcd-server) on loopback, data in ``data``."""

    data: Path
    log: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> Etcd:
        from dmanchor.lm.etcd import wait_ready

        url = self.endpoint
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            ["etcd", "--name", "t", "--data-dir", str(self.data),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"t={peer}"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("a"))
        wait_ready(url, timeout=20)
        return self

    def kill9(self) -> None:
        """Crash it (SIGKILL) and reap it; :meth:`start` brings it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    """A fresh etcd for one test, stopped by its PID at the end."""
    server = Etcd(tmp_path / "etcd", tmp_path / "etcd.log")
    try:
        yield server.start()
    finally:
        server.stop()
