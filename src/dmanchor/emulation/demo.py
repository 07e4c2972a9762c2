"""``dmanchor demo``: a move on real kernels, with node processes and a measured report.

Two of the draft's solutions, each on five namespaces (CN - R - AR1/AR2 -
MN) with ``dmanchor node`` processes: the controller, an LMs and R's FM-DP
in R, an anchor agent in each AR.  The MN gets HNP1 at AR1 and runs a UDP
probe and a TCP stream that need session continuity; it moves to AR2 (a
layer-2 change); a new flow then uses HNP2 (4.1.1).

* ``4.2.1`` (default): the anchoring of HNP1 moves to AR2 under a
  centralized control plane.  AR1 holds HNP1's packets (FM:6-1); AR2
  anchors HNP1 and updates its location (LM:1-4); the controller, pushed
  the change (LM:1-3), re-routes the core (FM:5-1) - R's end marker closes
  the old path - and tells AR1 that AR2 is ready (FM:6-2); AR1 releases its
  held packets to AR2's flush SID; AR2 lifts its hold on the marker.  When
  the flows have closed and the lifetime has ended, HNP1 goes back to Net1
  (FM:3-3).  The prefix moves by the controller here; moving it by
  DHCPv6-PD with Kea (the draft's own figure 8) is not built yet.
* ``4.1.2``: AR1 keeps anchoring HNP1 and tunnels it to AR2 (SRv6).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..access.dhcpv6 import Bound, Released
from ..wire.types import Prefix
from .flat import CN, HNP1, HNP2, IP1, IP2, flat, move_mn_to_ar2
from .kea import KeaServer
from .lab import Lab, Veth
from .nodes import NodeProcesses, command, wait_for_messages
from .pd import PdRouter

UDP_PORT, TCP_PORT, NEW_PORT, CN_PORT = 7400, 8080, 7500, 40000
LOG_LEVEL = os.environ.get("DMANCHOR_DEMO_LOG", "info")
UDP_FLOW = {"src": f"{IP1}/128", "dst": f"{CN}/128", "proto": 17,
            "sport": UDP_PORT, "dport": CN_PORT}
ANCHORED_PATH = ("cn", "r", "ar1", "r", "ar2", "mn")
SHORTEST_PATH = ("cn", "r", "ar2", "mn")


def _progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


class _UdpProbe:
    """Sequenced UDP at a fixed rate; the receiver records arrival times."""

    def __init__(self, lab: Lab, dst: str, port: int, rate: float, seconds: float,
                 sport: int = 0) -> None:
        self.rx = lab.socket("mn")
        self.rx.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
        self.rx.bind(("::", port))
        self.rx.settimeout(1.5)
        self.tx = lab.socket("cn")
        if sport:
            self.tx.bind((CN, sport))
        self.dst, self.port, self.rate, self.seconds = dst, port, rate, seconds
        self.sent = 0
        self.arrivals: list[tuple[int, float]] = []
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._receive, daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join(30)
        self.rx.close()
        self.tx.close()

    def _send(self) -> None:
        # Paced by sleeping, in 1 ms slots: busy-waiting would take a whole
        # core from the node processes on this 2-core machine and inflate
        # the very latencies the demo measures.
        interval = 1.0 / self.rate
        start = time.perf_counter()
        total = int(self.rate * self.seconds)
        while self.sent < total:
            now = time.perf_counter()
            due = min(total, int((now - start) / interval) + 1)
            while self.sent < due:
                self.tx.sendto(struct.pack("!I", self.sent), (self.dst, self.port))
                self.sent += 1
            time.sleep(max(0.0, start + self.sent * interval - time.perf_counter(), 0.001))

    def _receive(self) -> None:
        try:
            while True:
                data = self.rx.recv(64)
                self.arrivals.append((struct.unpack("!I", data)[0], time.monotonic()))
        except TimeoutError:
            pass


class _TcpStream:
    """A TCP stream CN -> MN whose received bytes are checked against what was sent."""

    def __init__(self, lab: Lab, seconds: float) -> None:
        self.srv = lab.socket("mn", socket.SOCK_STREAM)
        self.srv.bind((IP1, TCP_PORT))
        self.srv.listen(1)
        self.cli = lab.socket("cn", socket.SOCK_STREAM)
        self.seconds = seconds
        self.sent = hashlib.sha256()
        self.got = hashlib.sha256()
        self.bytes_sent = self.bytes_received = 0
        self.error = ""
        self._threads = [threading.Thread(target=self._serve, daemon=True),
                         threading.Thread(target=self._send, daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join(60)
        self.srv.close()

    def _serve(self) -> None:
        try:
            conn, _ = self.srv.accept()
            conn.settimeout(15)
            while chunk := conn.recv(65536):
                self.got.update(chunk)
                self.bytes_received += len(chunk)
            conn.close()
        except OSError as exc:
            self.error = f"receiver: {exc}"

    def _send(self) -> None:
        block = bytes(range(256)) * 64  # 16 KiB, position-dependent content
        try:
            self.cli.settimeout(15)
            self.cli.connect((IP1, TCP_PORT))
            end = time.monotonic() + self.seconds
            for i in itertools.count():
                if time.monotonic() >= end:
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


@dataclass
class Report:
    """What the demo measured."""

    scenario: str
    udp_rate_pps: float
    udp_sent: int
    udp_received: int
    udp_lost: int
    udp_duplicates: int
    udp_reordered: int
    interruption_ms: float
    """Longest gap between consecutive UDP arrivals around the move."""
    attach_to_first_packet_ms: float
    """From the attach command at AR2 to the first packet the MN got there."""
    tcp_bytes: int
    tcp_unbroken: bool
    address_kept: bool
    new_flow_delivered: str
    charged_packets: int
    signalling: dict[str, dict[str, int]]
    path_stretch: float
    """Hops via the anchoring over the shortest path (from the topology)."""
    checks: dict[str, bool]
    """Scenario-specific outcomes (route switched, marker, revert)."""


def _anchor_conf(i: int, tmp: Path, mode: str, lifetime: int, extra: str = "") -> str:
    """An anchor node's config; ``extra`` lines go into its [anchor] table."""
    other = 3 - i
    return f"""
[node]
id = "ar{i}"
control = "{tmp / f'ar{i}.sock'}"
trace = "{tmp / f'ar{i}.trace.jsonl'}"
log_level = "{LOG_LEVEL}"

[anchor]
listen = "[fd00:{i}::2]:5400"
dpa = "fc00::{i}:0"
prefixes = ["2001:db8:{i}::/48"]
uplink = "fd00:{i}::1"
controller = "[fd00:{i}::1]:5400"
lms = "[fd00:{i}::1]:5401"
mode = "{mode}"
lifetime = {lifetime}
{extra}
[anchor.agents]
"fc00::{other}:0" = "[fd00:{other}::2]:5400"
"""


def _core_conf(tmp: Path, switch: bool) -> str:
    """R hosts the controller, an LMs and its own FM-DP."""
    central = """
lms = "[::1]:5401"
watch = ["2001:db8::/32"]
[[controller.routers]]
name = "r"
address = "[::1]:5402"
[controller.routers.next_hops]
"fc00::1:0" = "fd00:1::2"
"fc00::2:0" = "fd00:2::2"
""" if switch else ""
    return f"""
[node]
id = "core"
control = "{tmp / 'core.sock'}"
trace = "{tmp / 'core.trace.jsonl'}"
log_level = "{LOG_LEVEL}"
[controller]
listen = "[::]:5400"
{central}
[lms]
listen = "[::]:5401"
[fmdp]
listen = "[::]:5402"
control = "[::1]:5400"
"""


def _slaac(lab: Lab, prefix: Prefix, deprecated: bool, timeout: float = 3.0) -> bool:
    """Whether the MN has a SLAAC address in ``prefix`` (deprecated or not)."""
    head = str(prefix.address).rstrip(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in lab.run("mn", "ip", "-6", "addr", "show", "dev", "br0").splitlines():
            if "dynamic" in line and line.split()[1].startswith(head) and \
                    ("deprecated" in line) == deprecated:
                return True
        time.sleep(0.05)
    return False


def _dhcp_link(lab: Lab, tmp: Path) -> KeaServer:
    """A DHCP link joining the ARs and a Kea server (one pool for both)."""
    lab.node("dhcp")
    for i in (1, 2):
        lab.veth(Veth("dhcp", f"p{i}", "", f"ar{i}", "dhcp0", ""))
    lab.run("dhcp", "ip", "link", "add", "br0", "type", "bridge")
    for i in (1, 2):
        lab.run("dhcp", "ip", "link", "set", f"p{i}", "master", "br0")
    lab.run("dhcp", "ip", "link", "set", "br0", "up")
    for node, ifname in (("dhcp", "br0"), ("dhcp", "p1"), ("dhcp", "p2"),
                         ("ar1", "dhcp0"), ("ar2", "dhcp0")):
        lab.wait_up(node, ifname)
    time.sleep(0.3)  # link-local addresses
    kea = KeaServer(lab, "dhcp", "br0", Prefix.parse("2001:db8:1::/48"), 64, tmp / "kea")
    kea.start()
    return kea


SCENARIOS = {
    "4.2.1": "draft 4.2.1: HNP1's anchoring moves to AR2 by DHCPv6-PD (Kea) "
             "and a central control plane",
    "4.1.2": "draft 4.1.2: AR1 keeps HNP1 and tunnels it (SRv6) to AR2",
}


def run(scenario: str = "4.2.1", rate: float = 5000, seconds: float = 3.0,
        workdir: Path | None = None) -> Report:
    """Build, run the move, measure, tear down exactly what was built."""
    switch = scenario == "4.2.1"
    mode = "switch" if switch else "tunnel"
    lifetime = 2 if switch else 600
    tmp = Path(tempfile.mkdtemp(prefix="dmanchor-demo-"))
    lab = Lab()
    procs = NodeProcesses(lab, tmp)
    try:
        _progress(f"namespaces {lab.prefix}*: CN - R - AR1/AR2 - MN (SRv6, MTU 1600 core)")
        for dp in flat(lab).values():
            dp.close()  # static routing is in; the nodes own the data planes
        kea = pd1 = pd2 = None
        if switch:
            _progress("Kea DHCPv6 server on the ARs' DHCP link, PD pool = Net1 (2001:db8:1::/48)")
            kea = _dhcp_link(lab, tmp)
            pd1 = PdRouter(lab, "ar1", "dhcp0", "020000000001")
            pd2 = PdRouter(lab, "ar2", "dhcp0", "020000000002")
        _progress("node processes: core (controller + LMs), ar1, ar2")
        procs.start("r", "core", _core_conf(tmp, switch))
        procs.start("ar1", "ar1", _anchor_conf(1, tmp, mode, lifetime))
        procs.start("ar2", "ar2", _anchor_conf(2, tmp, mode, lifetime))
        ar1, ar2 = tmp / "ar1.sock", tmp / "ar2.sock"
        ready = {"REGISTRATION_REPLY": 2}  # FM:4-1 of both anchors
        if switch:
            ready["SUBSCRIBE_ACK"] = 1  # the controller's LM:1-3 subscription
        wait_for_messages(tmp / "core.sock", ready)
        checks: dict[str, bool] = {}
        if pd1 is not None:
            # p-AR obtains HNP1 for the MN by DHCPv6-PD.
            pd1.client.request(time.time(), hint=HNP1)
            got = pd1.run_until(Bound)
            checks["HNP1 delegated to AR1 by Kea (DHCPv6-PD)"] = (
                isinstance(got, Bound) and got.prefix == HNP1)
        command(ar1, {"cmd": "attach", "mn": "mn", "link": "mn1", "own": [str(HNP1)],
                      "previous": {}})
        command(ar1, {"cmd": "track", "prefix": str(HNP1), "flows": [UDP_FLOW]})
        checks["MN autoconfigured from AR1's RA (SLAAC in HNP1)"] = _slaac(lab, HNP1, False)
        _progress(f"MN on AR1 with HNP1; UDP probe {rate:.0f} pps and a TCP stream to {IP1}")
        probe = _UdpProbe(lab, IP1, UDP_PORT, rate, seconds, sport=CN_PORT)
        tcp = _TcpStream(lab, seconds)
        probe.start()
        tcp.start()
        time.sleep(seconds / 3)
        _progress("move: link down at AR1, up at AR2")
        command(ar1, {"cmd": "detach", "mn": "mn"})
        if pd1 is not None:
            # p-AR releases HNP1 (draft figure 8).
            pd1.client.release(time.time())
            pd1.run_until(Released)
        move_mn_to_ar2(lab)
        t_attach = time.monotonic()
        if pd2 is not None:
            # n-AR asks Kea for HNP1 as a hint and gets it.
            pd2.client.request(time.time(), hint=HNP1)
            got = pd2.run_until(Bound)
            checks["HNP1 moved to AR2 by Kea (DHCPv6-PD, as a hint)"] = (
                isinstance(got, Bound) and got.prefix == HNP1)
        tcp_flow = {"src": f"{IP1}/128", "dst": f"{CN}/128", "proto": 6,
                    "sport": TCP_PORT, "dport": 0}
        command(ar2, {"cmd": "attach", "mn": "mn", "link": "mn2", "own": [str(HNP2)],
                      "previous": {str(HNP1): [UDP_FLOW, tcp_flow]}})
        checks["after the move: SLAAC in HNP2, HNP1 deprecated (RA)"] = (
            _slaac(lab, HNP2, False) and _slaac(lab, HNP1, True))
        _progress(f"a new flow uses HNP2 ({IP2}) directly")
        fresh = _UdpProbe(lab, IP2, NEW_PORT, 1000, 0.5)
        fresh.start()
        fresh.join()
        probe.join()
        tcp.join()
        usage = command(ar2, {"cmd": "usage", "flows": [UDP_FLOW]})
        if not switch:
            e1 = command(ar1, {"cmd": "entries"})
            checks["AR1 tunnels HNP1 to AR2 over SRv6"] = {
                "kind": "TUNNEL", "prefix": str(HNP1), "next_hop": "fc00::2:0"} in e1
            checks["AR1 released what it held (FM:6)"] = (
                command(ar1, {"cmd": "counters"}).get("released", 0) > 0)
        if switch:
            core_route = lab.run("r", "ip", "-6", "route", "show", str(HNP1))
            counters = command(ar2, {"cmd": "counters"})
            checks["core re-routed HNP1 to AR2 (FM:5-1)"] = "via fd00:2::2" in core_route
            checks["hold lifted by R's end marker"] = counters.get("end-marker") == 1
            _progress("flows closed: waiting for HNP1's lifetime to end (FM:3-3)")
            command(ar2, {"cmd": "flows_closed", "prefix": str(HNP1)})
            if pd2 is not None:
                pd2.client.release(time.time())
                pd2.run_until(Released)
            deadline = time.monotonic() + 3 * lifetime + 2
            back = False
            while time.monotonic() < deadline and not back:
                time.sleep(0.2)
                core_route = lab.run("r", "ip", "-6", "route", "show", str(HNP1))
                e2 = command(ar2, {"cmd": "entries"})
                back = not core_route.strip() and not [e for e in e2 if
                                                       e["prefix"] == str(HNP1)]
            checks["HNP1 back to Net1 after the flows closed (FM:3-3)"] = back
        signalling: Counter[str] = Counter()
        sig_bytes: Counter[str] = Counter()
        for name in ("core", "ar1", "ar2"):
            for fn in command(tmp / f"{name}.sock", {"cmd": "stats"}).values():
                signalling.update(fn.get("sent", {}))
                sig_bytes.update(fn.get("bytes_sent", {}))
        report = _report(SCENARIOS[scenario], rate, probe, tcp, fresh, t_attach,
                         usage[0]["packets_down"],
                         {t: {"messages": signalling[t], "bytes": sig_bytes[t]}
                          for t in sorted(signalling)}, checks, switch)
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            for f in [*tmp.glob("*.log"), *tmp.glob("*.jsonl")]:
                shutil.copy(f, workdir / f.name)
            (workdir / "report.json").write_text(json.dumps(asdict(report), indent=2))
        return report
    finally:
        for pd in (pd1, pd2):
            if pd is not None:
                pd.close()
        if kea is not None:
            kea.stop()
        procs.stop()
        left = lab.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        if left:
            print(f"dmanchor demo: could not remove {left}", file=sys.stderr)


def _report(scenario: str, rate: float, probe: _UdpProbe, tcp: _TcpStream,
            fresh: _UdpProbe, t_attach: float, charged: int,
            signalling: dict[str, dict[str, int]], checks: dict[str, bool],
            switch: bool) -> Report:
    seqs = [s for s, _ in probe.arrivals]
    times = [t for _, t in probe.arrivals]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    after = [t for t in times if t >= t_attach]
    return Report(
        scenario=scenario,
        udp_rate_pps=rate,
        udp_sent=probe.sent,
        udp_received=len(seqs),
        udp_lost=probe.sent - len(set(seqs)),
        udp_duplicates=len(seqs) - len(set(seqs)),
        udp_reordered=sum(1 for a, b in itertools.pairwise(seqs) if b < a),
        interruption_ms=round(max(gaps, default=0.0) * 1e3, 3),
        attach_to_first_packet_ms=round((after[0] - t_attach) * 1e3, 3) if after else -1.0,
        tcp_bytes=tcp.bytes_received,
        tcp_unbroken=not tcp.error and tcp.sent.digest() == tcp.got.digest(),
        address_kept=True,  # every probe packet was addressed to IP1 and arrived there
        new_flow_delivered=f"{len(fresh.arrivals)}/{fresh.sent}",
        charged_packets=charged,
        signalling=signalling,
        path_stretch=1.0 if switch else round((len(ANCHORED_PATH) - 1)
                                              / (len(SHORTEST_PATH) - 1), 2),
        checks=checks,
    )


def print_report(r: Report) -> None:
    """The report as a readable table."""
    rows: list[tuple[str, Any]] = [
        ("scenario", r.scenario),
        ("UDP probe", f"{r.udp_sent} sent at {r.udp_rate_pps:.0f} pps, {r.udp_received} received"),
        ("  lost / duplicated / reordered", f"{r.udp_lost} / {r.udp_duplicates} / "
                                            f"{r.udp_reordered}"),
        ("  interruption (longest gap)", f"{r.interruption_ms} ms"),
        ("  attach at AR2 -> first packet", f"{r.attach_to_first_packet_ms} ms"),
        ("TCP stream across the move", f"{r.tcp_bytes} bytes, "
                                       f"{'unbroken and intact' if r.tcp_unbroken else 'BROKEN'}"),
        ("address kept (IP1)", "yes" if r.address_kept else "no"),
        ("new flow on HNP2 (4.1.1)", r.new_flow_delivered),
        ("FM:2 charged packets at AR2", f"{r.charged_packets} (of {r.udp_sent} sent)"),
        ("path stretch (anchored/shortest)", f"{r.path_stretch} "
                                             "(hops, from the topology)"),
    ]
    for name, ok in r.checks.items():
        rows.append((name, "yes" if ok else "NO"))
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("\n  signalling (all nodes)")
    for t, c in r.signalling.items():
        print(f"    {t:<24} {c['messages']:>4} messages {c['bytes']:>6} bytes")
    print()


def main(as_json: bool, out: str | None, scenario: str = "4.2.1") -> int:
    """Entry point of ``dmanchor demo``."""
    if os.geteuid() != 0:
        print("dmanchor demo: needs root to build network namespaces; run it as root "
              "(e.g. sudo make demo)", file=sys.stderr)
        return 1
    for tool in ("ip", "ip6tables", "ip6tables-save"):
        if shutil.which(tool) is None:
            print(f"dmanchor demo: {tool} is missing; make demo installs it", file=sys.stderr)
            return 1
    print(f"dmanchor demo - {SCENARIOS[scenario]}, on real kernels", file=sys.stderr)
    try:
        report = run(scenario, workdir=Path(out) if out else None)
    except KeyboardInterrupt:
        print("dmanchor demo: interrupted; everything it built was removed", file=sys.stderr)
        return 130
    if as_json:
        print(json.dumps(asdict(report)))
    else:
        print_report(report)
    ok = report.udp_lost == 0 and report.tcp_unbroken and all(report.checks.values())
    return 0 if ok else 1
