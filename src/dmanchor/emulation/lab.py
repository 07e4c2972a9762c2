"""Namespace lab: builds a topology from data, removes exactly what it built.

Every namespace gets the run prefix; every one created is recorded and
deleted by name at the end, even when the test failed.  Veths live inside
the namespaces, so deleting a namespace removes its links too.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from ..dataplane.netlink import open_in_netns

log = logging.getLogger("dmanchor.lab")


def sh(*args: str, check: bool = True) -> str:
    """Run a command, raising with its stderr on failure."""
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this program started: SIGTERM by PID, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) off until the block is done, then raise it.

    Cleanup runs inside: a first Ctrl-C starts it (KeyboardInterrupt in the
    run), and a second one, pressed while it removes namespaces and stops
    processes, would otherwise cut it short and leave them behind.  Only
    the main thread can set signal handlers; elsewhere the block just runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        pressed.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:  # only reached when the block itself succeeded
        raise KeyboardInterrupt


def run_all(steps: Sequence[Callable[[], object]]) -> list[Exception]:
    """Run every teardown step, even after one fails - one that stopped at
    its first error would leave what the later steps remove behind (node
    processes, namespaces); returns the failures, each logged."""
    errors: list[Exception] = []
    for step in steps:
        try:
            step()
        except Exception as exc:
            log.error("teardown: %s failed: %s", getattr(step, "__qualname__", step), exc)
            errors.append(exc)
    return errors


def can_run() -> str | None:
    """Why netns tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/usr/sbin/ip") and not os.path.exists("/sbin/ip"):
        return "needs iproute2"
    return None


@dataclass(frozen=True, slots=True)
class Veth:
    """A veth pair between two namespaces, with addresses."""

    a: str
    a_if: str
    a_addr: str
    b: str
    b_if: str
    b_addr: str
    mtu: int = 1500


@dataclass
class Lab:
    """Namespaces and veths of one run, under a unique run prefix.

    Used by the netns test tier, the benchmarks and the emulator.
    """

    prefix: str = field(default_factory=lambda: f"dmt{secrets.token_hex(3)}-")
    created: list[str] = field(default_factory=list)
    next_index: int = 1000
    """Interface index of the next veth end (see :meth:`veth`)."""

    def ns(self, name: str) -> str:
        """Full namespace name of lab node ``name``."""
        return self.prefix + name

    def node(self, name: str, forwarding: bool = True) -> str:
        """Create namespace ``name`` (IPv6 forwarding on for routers)."""
        full = self.ns(name)
        sh("ip", "netns", "add", full)
        self.created.append(full)
        self.run(name, "ip", "link", "set", "lo", "up")
        self.run(name, "sysctl", "-qw", f"net.ipv6.conf.all.forwarding={int(forwarding)}")
        self.run(name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
        self.run(name, "sysctl", "-qw", "net.ipv6.conf.all.seg6_enabled=1")
        self.run(name, "sysctl", "-qw", "net.ipv6.conf.default.seg6_enabled=1")
        self.run(name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        return full

    def veth(self, v: Veth) -> None:
        """Create a veth pair between two nodes, address and raise both ends.

        Every end gets an interface index of its own across the lab.  The
        kernel treats a carrier change of a veth whose index differs from
        its peer's as urgent and applies it at once; namespaces number
        their interfaces independently, so two ends left to the kernel
        often share an index, and then a carrier change waits for the
        rate-limited linkwatch run - up to a second during which the
        end that did not change state cannot send (measured here: 1.0-2.0 s
        against 3 ms).  A link that comes back up (an MN returning to a
        router) must carry traffic at once.
        """
        ia, ib = self.next_index, self.next_index + 1
        self.next_index += 2
        sh("ip", "link", "add", v.a_if, "netns", self.ns(v.a), "index", str(ia), "mtu",
           str(v.mtu), "type", "veth", "peer", "name", v.b_if, "netns", self.ns(v.b),
           "index", str(ib), "mtu", str(v.mtu))
        for node, ifname, addr in ((v.a, v.a_if, v.a_addr), (v.b, v.b_if, v.b_addr)):
            if addr:
                self.run(node, "ip", "-6", "addr", "add", addr, "dev", ifname, "nodad")
            self.run(node, "ip", "link", "set", ifname, "up")

    def run(self, node: str, *args: str, check: bool = True) -> str:
        """Run a command inside ``node``'s namespace; returns its stdout."""
        return sh("ip", "netns", "exec", self.ns(node), *args, check=check)

    def socket(self, node: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """A socket living in ``node``'s namespace."""
        return open_in_netns(self.ns(node), socket.AF_INET6, kind, 0)

    def cleanup(self) -> list[str]:
        """Delete every namespace this lab created; returns what was left over."""
        for full in reversed(self.created):
            sh("ip", "netns", "del", full, check=False)
        listed = sh("ip", "netns", "list", check=False)
        return [n for n in self.created if n in listed.split()]

    def build(self, nodes: Sequence[str], links: Sequence[Veth],
              hosts: Sequence[str] = ()) -> None:
        """Create nodes (``hosts`` without forwarding) and links, wait for carrier."""
        for n in nodes:
            self.node(n, forwarding=n not in hosts)
        for v in links:
            self.veth(v)
        for v in links:
            self.wait_up(v.a, v.a_if)
            self.wait_up(v.b, v.b_if)

    def wait_link_local(self, node: str, ifname: str, timeout: float = 10.0) -> None:
        """Wait until ``ifname`` has a usable link-local address (DAD done)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(node, "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link")
            if any("fe80:" in line and "tentative" not in line for line in out.splitlines()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node}/{ifname} has no link-local address after "
                                   f"{timeout}s: {out.strip()!r}")
            time.sleep(0.05)

    def wait_up(self, node: str, ifname: str, timeout: float = 5.0) -> None:
        """Wait for carrier: the kernel raises it asynchronously (linkwatch)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run(node, "cat", f"/sys/class/net/{ifname}/operstate").strip()
            if state == "up":
                return
            time.sleep(0.05)
        raise RuntimeError(f"{node}/{ifname} has no carrier after {timeout}s")
