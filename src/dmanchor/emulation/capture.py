"""A capture of an emulated run's control traffic, as one pcapng file.

``dumpcap`` (Debian ``wireshark-common``, pulled in by ``tshark``) runs in
every node's namespace on all its interfaces, keeping only what that node
*sends* on the protocol's ports (``outbound``: each message once, at its
sender, loopback included); ``mergecap`` joins the files in time order.
Read it with the dissector: ``tshark -X lua_script:contrib/wireshark/
dmanchor.lua -r FILE``.

The capture processes are this run's own: started here, stopped by PID.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from .lab import Lab, stop_process

FILTER = "outbound and ip6[7] == 64 and udp portrange 5400-5405"
"""What each node's capture keeps: what it sends itself (a router forwarding
a message sends it out too, one hop fewer than the sockets' default hop
limit of 64) on the functions' ports (see the dissector)."""


class CaptureError(RuntimeError):
    """The capture tools are missing or would not start."""


class Capture:
    """dumpcap in each of ``nodes``' namespaces, merged into ``path`` at :meth:`stop`."""

    def __init__(self, lab: Lab, nodes: list[str], path: Path, workdir: Path) -> None:
        for tool in ("dumpcap", "mergecap"):
            if shutil.which(tool) is None:
                raise CaptureError(f"--pcap needs {tool} (Debian package tshark; make test "
                                   "installs it)")
        self.lab, self.nodes, self.path, self.workdir = lab, nodes, path, workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: list[Path] = []

    def start(self, timeout: float = 10.0) -> None:
        """Start every capture; returns once each one is capturing."""
        for node in self.nodes:
            out = self.workdir / f"capture-{node}.pcapng"
            with (self.workdir / f"capture-{node}.log").open("wb") as err:
                self.procs[node] = subprocess.Popen(
                    ["ip", "netns", "exec", self.lab.ns(node), "dumpcap", "-q", "-i", "any",
                     "-f", FILTER, "-w", str(out)],
                    stdout=subprocess.DEVNULL, stderr=err)
            self.files.append(out)
        deadline = time.monotonic() + timeout
        for node, proc in self.procs.items():
            said = self.workdir / f"capture-{node}.log"
            # dumpcap says "Capturing on 'any'" once its socket is open.
            while b"Capturing on" not in said.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise CaptureError(f"dumpcap in {node} did not start: "
                                       f"{said.read_text(errors='replace').strip()}")
                time.sleep(0.01)

    def stop(self, merge: bool = True) -> None:
        """Stop the captures (by PID) and, if ``merge``, write the merged file."""
        for proc in self.procs.values():
            stop_process(proc)
        self.procs.clear()
        present = [f for f in self.files if f.exists()]
        if merge and present:
            subprocess.run(["mergecap", "-w", str(self.path), *map(str, present)],
                           check=True, capture_output=True, timeout=60)
        for f in present:
            f.unlink()
        self.files.clear()
