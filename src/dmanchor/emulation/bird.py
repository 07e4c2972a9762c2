"""A real BIRD 2 routing daemon in a lab namespace: the routers of draft 4.2.

Each router runs BIRD with one eBGP session per neighbour and exports what
it learns into the kernel FIB, so an anchor's announcement is forwarded by
real routers.  Started with a generated config, control socket and pid file
in its own run directory; stopped by its PID.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .lab import Lab, stop_process


@dataclass(frozen=True, slots=True)
class BgpNeighbor:
    """One eBGP neighbour of a BIRD router (directly connected)."""

    name: str
    """Protocol name in BIRD (letters, digits, underscore)."""
    address: str
    """The neighbour's address on the shared link."""
    asn: int
    """The neighbour's AS."""


class BirdRouter:
    """``bird`` with eBGP sessions and kernel export, in one lab namespace."""

    def __init__(self, lab: Lab, node: str, workdir: Path, asn: int, router_id: str,
                 neighbors: Sequence[BgpNeighbor], hold_time: int = 9) -> None:
        self.lab, self.node, self.workdir = lab, node, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "bird.conf"
        self.socket = workdir / "bird.ctl"
        self.pidfile = workdir / "bird.pid"
        self.log = workdir / "bird.log"
        sessions = "\n".join(f"""
protocol bgp {n.name} {{
  local as {asn};
  neighbor {n.address} as {n.asn};
  hold time {hold_time};
  connect retry time 1;
  error wait time 1, 5;
  ipv6 {{ import all; export all; next hop self; }};
}}""" for n in neighbors)
        # The kernel protocol exports to the FIB as soon as a best route
        # changes; "learn off": only BGP routes are ours to manage.
        self.config.write_text(f"""log "{self.log}" all;
router id {router_id};
protocol device {{ scan time 10; }}
protocol kernel {{
  ipv6 {{ import none; export all; }};
  learn off;
}}
{sessions}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """Whether the bird binary is installed."""
        return shutil.which("bird") is not None and shutil.which("birdc") is not None

    def start(self, timeout: float = 10.0) -> None:
        """Start in the foreground (so the PID is bird's) and wait for its socket."""
        err = (self.workdir / "bird.stderr").open("w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns(self.node), "bird", "-f", "-c", str(self.config),
             "-s", str(self.socket), "-P", str(self.pidfile)],
            stdout=subprocess.DEVNULL, stderr=err,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bird exited: {(self.workdir / 'bird.stderr').read_text()}")
            if self.socket.exists():
                return
            time.sleep(0.05)
        raise RuntimeError("bird did not start in time")

    def birdc(self, *command: str) -> str:
        """Run a birdc command against this router's control socket."""
        out = subprocess.run(["birdc", "-s", str(self.socket), *command],
                             capture_output=True, text=True, timeout=10)
        return out.stdout

    def established(self) -> list[str]:
        """Names of the BGP sessions that are Established."""
        up = []
        for line in self.birdc("show", "protocols").splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "BGP" and parts[5] == "Established":
                up.append(parts[0])
        return up

    def wait_established(self, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` sessions are Established."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.established()) >= count:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.node}: {self.established()} established, wanted {count}:\n"
                           + self.birdc("show", "protocols", "all"))

    def stop(self) -> None:
        """SIGTERM our own process (by PID), SIGKILL if it lingers."""
        if self.proc is not None:
            stop_process(self.proc)
