"""A real Kea DHCPv6 server in a lab namespace, for prefix delegation.

Started with a generated config (memfile leases, lock and pid files in its
own run directory), stopped by its PID.  Short lifetimes and a 1 s
reclamation timer make lease expiry observable in seconds.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..access.kea_ctrl import KeaControl, exchange
from ..wire.types import Prefix
from .lab import Lab, stop_process


class KeaServer:
    """``kea-dhcp6`` serving one PD pool on one interface of a lab node."""

    def __init__(self, lab: Lab, node: str, interface: str, pool: Prefix,
                 delegated_len: int, workdir: Path, subnet: str = "fd00:d::/64",
                 preferred: int = 60, valid: int = 120, lease_cmds: bool = False) -> None:
        """``lease_cmds``: load Kea's lease_cmds hook and open its control
        socket, so a controller can move a delegation itself (:meth:`command`)."""
        self.lab, self.node, self.workdir = lab, node, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "kea-dhcp6.json"
        self.log = workdir / "kea.log"
        self.leases = workdir / "leases6.csv"
        cfg = {"Dhcp6": {
            "interfaces-config": {"interfaces": [interface]},
            "data-directory": str(workdir),
            "server-id": {"type": "EN", "enterprise-id": 32473, "identifier": "646d616e63686f72",
                          "persist": False},
            "lease-database": {"type": "memfile", "persist": True,
                               "name": str(self.leases), "lfc-interval": 0},
            "preferred-lifetime": preferred, "valid-lifetime": valid,
            "renew-timer": preferred // 2, "rebind-timer": preferred * 4 // 5,
            "expired-leases-processing": {"reclaim-timer-wait-time": 1,
                                          "hold-reclaimed-time": 0,
                                          "flush-reclaimed-timer-wait-time": 1},
            "subnet6": [{
                "id": 1, "subnet": subnet, "interface": interface,
                "pd-pools": [{"prefix": str(pool.address), "prefix-len": pool.length,
                              "delegated-len": delegated_len}],
            }],
            "loggers": [{"name": "kea-dhcp6", "severity": "INFO",
                         "output_options": [{"output": str(self.log)}]}],
        }}
        self.socket = workdir / "kea6.ctl"
        self.preferred, self.valid = preferred, valid
        if lease_cmds:
            hook = lease_cmds_library()
            if hook is None:
                raise RuntimeError("Kea's lease_cmds hook library is not installed")
            cfg["Dhcp6"]["hooks-libraries"] = [{"library": str(hook)}]
            cfg["Dhcp6"]["control-socket"] = {"socket-type": "unix",
                                              "socket-name": str(self.socket)}
        self.config.write_text(json.dumps(cfg, indent=2))
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """Whether the kea-dhcp6 binary is installed."""
        return shutil.which("kea-dhcp6") is not None

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it serves (its log says so)."""
        env = dict(os.environ, KEA_LOCKFILE_DIR=str(self.workdir),
                   KEA_PIDFILE_DIR=str(self.workdir))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns(self.node), "kea-dhcp6", "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "kea.stderr").open("w"), env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kea-dhcp6 exited: {(self.workdir / 'kea.stderr').read_text()}")
            if self.log.exists() and "DHCP6_STARTED" in self.log.read_text():
                return
            time.sleep(0.05)
        raise RuntimeError("kea-dhcp6 did not start in time")

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                timeout: float = 5.0) -> dict[str, Any]:
        """One command on Kea's control socket; its answer, whatever its
        ``result`` (0: done), through the client the controller uses."""
        return asyncio.run(exchange(KeaControl(self.socket, timeout=timeout), name, arguments))

    def stop(self) -> None:
        """SIGTERM our own process (by PID), SIGKILL if it lingers."""
        if self.proc is not None:
            stop_process(self.proc)


def lease_cmds_library() -> Path | None:
    """Where Kea's lease_cmds hook library is installed, if it is."""
    for pattern in ("/usr/lib/*/kea/hooks/libdhcp_lease_cmds.so",
                    "/usr/lib/kea/hooks/libdhcp_lease_cmds.so",
                    "/usr/local/lib/kea/hooks/libdhcp_lease_cmds.so"):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    return None
