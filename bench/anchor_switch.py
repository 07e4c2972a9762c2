"""Anchor switching (draft 4.2): controller push (FM:5-1) against BGP, one topology.

Needs root and bird2.  ``ar1 - r1 - r2 - r3 - r4 - ar2`` in namespaces; the
routers run BIRD 2 (eBGP, FIB export) *and* a dmanchor FM-DP each, so both
ways of moving a prefix's anchoring act on the same kernels, alternating
move by move:

* **controller**: the new anchor's agent (ar2, switch mode) takes HNP_k as
  a visiting prefix -> LM:1-4 to the LMs -> LM:1-3 to the central FM-CP ->
  FM:5-1 to the four routers' FM-DPs -> kernel route.  Each FM-DP is a
  ``dmanchor node`` process of its own in its router's namespace, as on
  real routers; the control side (LMs, FM-CP, the two anchors' agents)
  shares this process in a namespace ``cp`` with a management link to
  every router.
* **bgp**: ar2's dmanchor BGP speaker announces HNP_k -> BIRD r4 -> r3 ->
  r2 -> r1, each exporting to its kernel.

A move is timed from the moment ar2 acts to the moment the last of the four
routers' kernels announces (rtnetlink multicast) a route for HNP_k towards
ar2.  Each move is undone (revert / withdrawal) and its removal awaited
before the next.  Ends with one JSON line; ``ratio`` = BGP p50 / controller
p50 (above 1: the controller is faster).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from ipaddress import IPv6Address as A
from pathlib import Path

from dmanchor.dataplane.memory import MemoryDataPlane
from dmanchor.dataplane.netlink import RouteMonitor
from dmanchor.emulation.bgplab import BgpChain
from dmanchor.emulation.lab import Lab, Veth, can_run, stop_process
from dmanchor.fm.anchor import AnchorAgentCore
from dmanchor.fm.anchor_model import AnchorSettings, Mode
from dmanchor.fm.controller import ControllerCore, ControllerSettings, RouterControl
from dmanchor.lm.lms import LmsCore, LmsSettings
from dmanchor.runtime.aio import UdpDriver
from dmanchor.wire import messages as m
from dmanchor.wire.types import Prefix

MOVES = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 50
DPA1, DPA2 = A("fc00::1:0"), A("fc00::2:0")
BASE = 25400
"""The control side's ports: LMs, FM-CP, then the anchors' agents (+20 + n)."""
FMDP_PORT = 5400
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run this thread in network namespace ``netns`` (sockets made inside
    stay there), then return it to where it was."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"entering {netns}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "returning to the first namespace")
    finally:
        os.close(target)
        os.close(home)


def mgmt(i: int, end: int) -> str:
    """The management link's address at router ``i`` (end 2) or the cp (end 1)."""
    return f"fd10:{i:x}::{end}"


def start_fmdps(lab: Lab, routers: list[str], workdir: Path) -> list[subprocess.Popen[bytes]]:
    """One ``dmanchor node`` hosting an FM-DP per router, in its namespace."""
    procs: list[subprocess.Popen[bytes]] = []
    for i, r in enumerate(routers, start=1):
        cfg = workdir / f"fmdp-{r}.toml"
        cfg.write_text(f"""[node]
id = "{r}"
log_level = "warning"
[fmdp]
listen = "[{mgmt(i, 2)}]:{FMDP_PORT}"
control = "[{mgmt(i, 1)}]:{BASE + 1}"
status_interval = 1.0
[security]
insecure = true
""")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns(r), sys.executable, "-m", "dmanchor.cli", "node",
             "--config", str(cfg)], stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout is not None
        while (line := proc.stdout.readline()).strip() != b"ready":
            if not line:  # its end of output: it stopped
                raise RuntimeError(f"the FM-DP of {r} did not start")
    return procs


def watch_main(namespaces: list[str]) -> None:
    """The watcher process: ``expect PREFIX add|del`` on stdin, then prints
    ``done T`` once every namespace's kernel announced that change, T being
    the last of them (``time.perf_counter``: CLOCK_MONOTONIC, the same clock
    in every process).  Apart from the agents, so reading four route streams
    never delays the signalling it measures."""
    import selectors

    mons = {ns: RouteMonitor(ns) for ns in namespaces}
    sel = selectors.DefaultSelector()
    for ns, mon in mons.items():
        sel.register(mon.fileno(), selectors.EVENT_READ, ns)
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    want: tuple[Prefix, bool] | None = None
    seen: dict[str, float] = {}
    print("ready", flush=True)
    while True:
        # The expectation first: it was written before the change it awaits,
        # but both may be ready at once, and a route read before it is lost.
        for key, _ in sorted(sel.select(), key=lambda ready: ready[0].data is not None):
            now = time.perf_counter()
            if key.data is None:
                line = sys.stdin.readline().split()
                if not line:
                    return
                want, seen = (Prefix.parse(line[1]), line[2] == "add"), {}
                continue
            for added, route in mons[key.data].read():
                if want is None or key.data in seen:
                    continue
                prefix, want_added = want
                if (route.dst, route.dst_len) != (prefix.address, prefix.length):
                    continue
                # Added: only a route towards ar2 (its gateway is a "::2" end).
                if added == want_added and (not added or str(route.gateway).endswith("::2")):
                    seen[key.data] = now
                    if len(seen) == len(mons):
                        print(f"done {max(seen.values())}", flush=True)
                        want = None


class Watch:
    """Talks to the watcher process."""

    def __init__(self, lab: Lab, routers: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--watch", *(lab.ns(r) for r in routers)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("watcher did not start")

    def expect(self, prefix: Prefix, added: bool) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"expect {prefix} {'add' if added else 'del'}\n")
        self.proc.stdin.flush()

    async def done(self, timeout: float = 10.0) -> float:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline), timeout)
        return float(line.split()[1])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the watcher ends at end of input; ours, by PID
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


async def run(lab: Lab, chain: BgpChain) -> dict[str, object]:
    """The moves, with this thread in the ``cp`` namespace."""
    routers = chain.routers
    drivers: list[UdpDriver] = []

    async def serve(core: object, host: str, port: int) -> tuple[str, int]:
        d = UdpDriver(core)  # type: ignore[arg-type]
        drivers.append(d)
        return await d.start(host, port)

    base = BASE
    lms = await serve(LmsCore(LmsSettings("lms")), "::1", base)
    ctrl_addr = ("::1", base + 1)
    rcs = []
    for i, r in enumerate(routers, start=1):
        rcs.append(RouterControl(r, (mgmt(i, 2), FMDP_PORT),
                                 {DPA1: A(f"fd00:{i:x}::1"), DPA2: A(f"fd00:{i + 1:x}::2")}))
    # Both anchors' agents share ::1, so each has its own port; the
    # controller talks only to the home anchor (ar1), at anchor_port.
    ctrl = ControllerCore(ControllerSettings(lms=lms, watch=(Prefix.parse("2001:db8::/32"),),
                                             routers=tuple(rcs), anchor_port=base + 21))
    await serve(ctrl, "::", ctrl_addr[1])  # the FM-DPs report over their management links
    agents = {}
    for n, dpa in ((1, DPA1), (2, DPA2)):
        agent = AnchorAgentCore(AnchorSettings(
            f"ar{n}", dpa, A("::1"), (Prefix.parse(f"2001:db8:{n}::/48"),), A("fd00::ff"),
            controller=ctrl_addr, lms=lms, mode=Mode.SWITCH, lifetime=3600, port=base + 20 + n,
            agents={DPA1: ("::1", base + 21), DPA2: ("::1", base + 22)}), MemoryDataPlane(f"ar{n}"))
        agents[n] = agent
        await serve(agent, "::1", base + 20 + n)
    await asyncio.sleep(0.3)  # registrations and the LM:1-3 subscription
    for _ in range(100):  # every FM-DP heard (FM:5-2): a move waits for all of them
        if all(r in ctrl.status for r in routers):
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError(f"FM-DPs not heard: {set(routers) - set(ctrl.status)}")

    speaker = chain.speaker("ar2")
    speaker.change([], [chain.anchors["ar2"].owned])
    speaker.start()
    home = chain.speaker("ar1")
    home.change([], [chain.anchors["ar1"].owned])
    home.start()
    await asyncio.wait_for(asyncio.gather(speaker.up.wait(), home.up.wait()), 30)
    await asyncio.sleep(0.5)
    watch = Watch(lab, routers)
    times: dict[str, list[float]] = {"controller": [], "bgp": []}
    drv2 = drivers[-1]
    try:
        for k in range(MOVES):
            for how in ("controller", "bgp"):
                subnet = k + (0x1000 if how == "bgp" else 0x100)  # distinct per method
                prefix = Prefix.parse(f"2001:db8:1:{subnet:x}::/64")
                watch.expect(prefix, True)
                t0 = time.perf_counter()
                if how == "bgp":
                    speaker.change([], [prefix])
                else:
                    agents[2].attach(f"mn{k}", "mn", [], {prefix: []}, time.time())
                    drv2.pump()
                times[how].append(await watch.done() - t0)
                # Undo, and wait until every router forgot it.
                watch.expect(prefix, False)
                if how == "bgp":
                    speaker.change([prefix], [])
                else:
                    # The binding goes (FM:3-3): the FM-CP deletes the routes.
                    agents[2].detach(f"mn{k}", time.time())
                    agents[2].endpoint.request(m.LocationUpdate(prefix, DPA2, 0), lms,
                                               time.time())
                    drv2.pump()
                await watch.done()
    finally:
        watch.close()
        await speaker.stop()
        await home.stop()
        for d in drivers:
            d.close()

    def pct(xs: list[float], q: float) -> float:
        return round(sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000, 3)

    out: dict[str, object] = {"moves": MOVES, "routers": len(routers)}
    p50 = {how: statistics.median(xs) * 1000 for how, xs in times.items()}
    for how, xs in times.items():
        out[f"{how}_p50_ms"] = round(p50[how], 3)
        out[f"{how}_p99_ms"] = pct(xs, 0.99)
    out["ratio"] = round(p50["bgp"] / p50["controller"], 2)
    return out


def main() -> None:
    if sys.argv[1:2] == ["--watch"]:
        watch_main(sys.argv[2:])
        return
    why = can_run()
    if why:
        print(f"anchor_switch: {why}", file=sys.stderr)
        sys.exit(2)
    lab = Lab()
    workdir = Path(tempfile.mkdtemp(prefix="dmanchor-bgp-"))
    chain = BgpChain(lab, workdir, routers=4)
    fmdps: list[subprocess.Popen[bytes]] = []
    try:
        chain.build()
        lab.node("cp", forwarding=False)
        links = [Veth("cp", f"m{i}", f"{mgmt(i, 1)}/64", r, "mgmt", f"{mgmt(i, 2)}/64")
                 for i, r in enumerate(chain.routers, start=1)]
        for link in links:
            lab.veth(link)
        for link in links:
            lab.wait_up(link.a, link.a_if)
            lab.wait_up(link.b, link.b_if)
        fmdps = start_fmdps(lab, chain.routers, workdir)
        with inside(lab.ns("cp")):
            figures = asyncio.run(run(lab, chain))
    finally:
        for proc in fmdps:
            stop_process(proc)
        chain.stop()
        left = lab.cleanup()
        if left:
            print(f"left behind: {left}", file=sys.stderr)
    for k, v in figures.items():
        print(f"{k:>20}: {v}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
