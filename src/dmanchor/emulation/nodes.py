"""``dmanchor node`` processes inside lab namespaces, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from .lab import Lab


class NodeProcesses:
    """Starts node processes in namespaces and stops exactly those."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, ns: str, name: str, config: str) -> dict[str, tuple[str, int]]:
        """Start node ``name`` in lab node ``ns``; returns its bound endpoints."""
        path = self.workdir / f"{name}.toml"
        path.write_text(config)
        log = (self.workdir / f"{name}.log").open("a")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns(ns), sys.executable, "-m", "dmanchor.cli",
             "node", "--config", str(path)],
            stdout=subprocess.PIPE, stderr=log, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.procs[name] = proc
        assert proc.stdout is not None
        bound: dict[str, tuple[str, int]] = {}
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"node {name} did not start: {self.log(name)[-2000:]}")
            words = line.split()
            if words == ["ready"]:
                return bound
            bound[words[1]] = (words[2], int(words[3]))

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (ours, by PID): a crash, for fault scenarios."""
        p = self.procs[name]
        if p.poll() is None:
            p.kill()
            p.wait(5)
        if p.stdout is not None:
            p.stdout.close()

    def restart(self, name: str, ns: str) -> dict[str, tuple[str, int]]:
        """Start node ``name`` again with the config it had."""
        self.kill(name)
        return self.start(ns, name, (self.workdir / f"{name}.toml").read_text())

    def log(self, name: str) -> str:
        """What node ``name`` logged so far."""
        return (self.workdir / f"{name}.log").read_text()

    def stop(self) -> None:
        """SIGTERM each process we started (by PID), SIGKILL what lingers."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if p.stdout is not None:
                p.stdout.close()


def command(sock_path: Path, doc: dict[str, Any], timeout: float = 10.0) -> Any:
    """Send one command to a node's control socket; returns its ``ok`` value."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall((json.dumps(doc) + "\n").encode())
        reply = json.loads(s.makefile().readline())
    if "ok" not in reply:
        raise RuntimeError(f"{sock_path.name}: {reply.get('error', reply)}")
    return reply["ok"]


def wait_for_messages(sock_path: Path, wanted: dict[str, int], timeout: float = 10.0) -> None:
    """Wait until a node has sent at least these messages (by type name).

    E.g. ``{"REGISTRATION_REPLY": 2}`` at the controller: both anchors are
    registered.  Fixed sleeps make tests flaky on a loaded machine.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        sent: dict[str, int] = {}
        for fn in command(sock_path, {"cmd": "stats"}).values():
            for name, n in fn.get("sent", {}).items():
                sent[name] = sent.get(name, 0) + n
        if all(sent.get(k, 0) >= n for k, n in wanted.items()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sock_path.name}: still waiting for {wanted}, sent {sent}")
        time.sleep(0.05)
