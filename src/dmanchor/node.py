"""``dmanchor node --config FILE``: one process hosting a node's functions.

A node is what runs on one router (or in one namespace of the emulator).
Its config names the functions it hosts, each on its own signalling
endpoint; they share the process, its event loop and its SM keys::

    [node]
    id = "ar1"                      # node id
    log_level = "info"
    control = "/run/dmanchor/ar1.sock"   # commands (dmanchor.nodecmd); mode 0600
    control_group = "dmanchor"      # optional: this group may use it too (0660)
    trace = "/var/log/dmanchor/ar1.jsonl"   # optional: messages and data-plane changes
    metrics = "[fd00:1::2]:9464"    # optional: Prometheus GET /metrics (dmanchor.metrics)

    [anchor]                        # FM-CP + FM-DP + LMc of an access router
    listen = "[fd00:1::2]:5400"
    dpa = "fc00::1:0"               # End.DT6 SID; its flush SID is dpa + 1
    prefixes = ["2001:db8:1::/48"]  # anchored here (FM:4-1)
    uplink = "fd00:1::1"
    controller = "[fd00:1::1]:5400"
    lms = "[fd00:1::1]:5401"
    lms_pool = ["[fd00:2::2]:5401"] # other LM:2 pool members: failover
    mode = "tunnel"                 # or "switch", "bgp"
    access_links = ["mn1"]          # where MNs arrive (heard: dmanchor.access.links)
    mn_pool = "2001:db8:1::/48"     # the /64 each MN gets there
    [anchor.agents]                 # DPA -> agent endpoint of the peers
    "fc00::2:0" = "[fd00:2::2]:5400"

    [anchor.pd]                     # MN prefixes delegated by DHCPv6-PD (4.2.1)
    link = "dhcp0"                  # towards the delegating router (Kea)

    [controller]                    # FM:4 registry (+ central FM-CP, FM:5-2)
    [lms]                           # as for ``dmanchor lms``
    [fmdp]                          # a router's FM-DP driven by a central FM-CP
    [security]                      # as for ``dmanchor lms``

(every field: dmanchor.nodeconf and docs/operations.md.)

The node is a shell: it wires sockets, netlink monitors, timers and the
control socket to the sans-IO cores, pumps a core's driver after every
input, and carries out the anchor agent's effects (BGP announcements,
DHCPv6-PD, Router Advertisements).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from ipaddress import IPv6Address
from typing import Any

from . import logs
from .access.alloc import PrefixAllocator, StateError
from .access.bgp import BgpEvent, BgpSession, RoutesReceived, SessionDown
from .access.bgp_aio import BgpSpeaker
from .access.delegation import DelegationEvent, Delegations
from .access.flowwatch import FlowWatch
from .access.links import AccessLinks
from .access.pd_aio import PdDriver, link_duid
from .config import ConfigError
from .control import ControlServer
from .dataplane.api import DataPlaneError
from .dataplane.linux import LinuxDataPlane
from .dataplane.tunbuffer import Lift
from .fm.anchor import AnchorAgentCore
from .fm.anchor_model import TakeCharges
from .fm.controller import ControllerCore
from .fm.fib import DesiredFib
from .fm.fmdp import FmDpCore
from .fm.mn_agent import MnAgentCore
from .lm.daemon import StoreWatch, build_core, log_events
from .lm.etcd import EtcdStore
from .lm.lms import LmsCore
from .lm.store import Store, StoreError
from .metrics import MetricsServer, NodeMetrics
from .mn.host import HostMobility
from .nodecmd import run_command
from .nodeconf import NodeConfig, load_node_config
from .nodeevents import NodeEvents, Trace, anchor_effects, load_state
from .runtime import clock
from .runtime.aio import UdpDriver
from .transport.reliable import Addr, Endpoint
from .transport.service import ServiceCore
from .wire.auth import Security
from .wire.types import ForwardingEntry, Prefix

log = logging.getLogger("dmanchor.node")


class Node:
    """The running functions of one node."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.drivers: dict[str, UdpDriver] = {}
        self.anchor: AnchorAgentCore | None = None
        self.controller: ControllerCore | None = None
        self.dataplane: LinuxDataPlane | None = None
        self.access: AccessLinks | None = None
        self.flows: FlowWatch | None = None
        self.bgp: BgpSpeaker | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # FM:2 charges being taken
        self.pd: PdDriver | None = None
        self.mn_agent: MnAgentCore | None = None
        self.host: HostMobility | None = None
        self.trace = Trace(cfg.trace, cfg.node_id) if cfg.trace is not None else None
        self._stores: dict[str, Store] = {}  # the LMs' binding store, closed at the end
        self._store_watch: StoreWatch | None = None  # etcd: other LMs' writes
        self.events = NodeEvents(cfg.kea, self.trace, cfg.controller_state)
        self._control: ControlServer | None = None
        self._security: Security | None = None
        self.metrics = NodeMetrics(self) if cfg.metrics is not None else None
        self._metrics_server: MetricsServer | None = None

    def _watch_dataplane(self, dp: LinuxDataPlane) -> None:
        """The trace and the metrics hear every data-plane change and lift."""
        listeners = [x for x in (self.trace, self.metrics) if x is not None]

        def change(added: Sequence[ForwardingEntry], deleted: Sequence[ForwardingEntry]) -> None:
            for x in listeners:
                x.change(added, deleted)

        def lift(prefix: Prefix, done: Lift, cause: str) -> None:
            for x in listeners:
                x.lift(prefix, done, cause)
        if listeners:
            dp.on_change, dp.on_lift = change, lift

    def _endpoint(self) -> Endpoint:
        # One SM state for all the node's functions: they sign with one key,
        # whose timestamps must never repeat (a receiver keeps one replay
        # window per key id).
        if self._security is None:
            self._security = self.cfg.security.build()
        return Endpoint(security=self._security)

    def _cores(self, now: float) -> dict[str, tuple[ServiceCore, Addr]]:
        """Build the node's cores (and its data plane), by function name."""
        cfg = self.cfg
        cores: dict[str, tuple[ServiceCore, Addr]] = {}
        if cfg.mn is not None:
            # End.DT6 on the MN's own link: its anchors' tunnels end here.
            self.dataplane = LinuxDataPlane(sid_dev=cfg.mn[2], markers=cfg.security.markers())
            self.mn_agent = MnAgentCore(cfg.mn[1], self._endpoint())
            cores["mn"] = (self.mn_agent, cfg.mn[0])
        if cfg.anchor or cfg.fmdp:
            self.dataplane = LinuxDataPlane(markers=cfg.security.markers())
            self._watch_dataplane(self.dataplane)
        for name, lm in (("lms", cfg.lms), ("lmp", cfg.lmp)):
            if lm is not None:
                core, store = build_core(lm, now, security=self._endpoint().security)
                cores[name] = (core, lm.listen)
                if store is not None:
                    self._stores[name] = store
        if cfg.controller is not None:
            listen, settings = cfg.controller
            kept = load_state(cfg.controller_state)
            if kept.moved or kept.registered or kept.tunnelled:
                log.info("controller: %d moved prefixes, %d tunnelled and %d registrations "
                         "taken back from %s", len(kept.moved), len(kept.tunnelled),
                         len(kept.registered), cfg.controller_state)
            self.controller = ControllerCore(settings, self._endpoint(), now,
                                             restored=kept.moved, registered=kept.registered,
                                             tunnelled=kept.tunnelled)
            cores["controller"] = (self.controller, listen)
        # One desired state for the cores sharing this router's data plane.
        fib = DesiredFib(self.dataplane) if self.dataplane is not None else None
        if cfg.fmdp is not None and fib is not None:
            listen, fsettings = cfg.fmdp
            cores["fmdp"] = (FmDpCore(fsettings, fib, self._endpoint(), now), listen)
        if cfg.anchor is not None and fib is not None and self.dataplane is not None:
            listen, asettings = cfg.anchor
            self.dataplane.upstream = {asettings.uplink}
            # FM:2's charges come off the kernel by nft processes: taken in a
            # task (TakeCharges), not on the event loop's time.
            asettings = replace(asettings, defer_charges=True)
            self.anchor = AnchorAgentCore(asettings, fib, self._endpoint(), now)
            cores["anchor"] = (self.anchor, listen)
        return cores

    async def start(self) -> list[str]:
        """Start every function; returns 'function host port' lines."""
        self.cfg.security.warn(log)
        cfg = self.cfg
        cores = self._cores(clock.now())
        if cfg.bgp is not None:
            peer, bsettings = cfg.bgp
            self.bgp = BgpSpeaker(BgpSession(bsettings), peer, on_event=self._on_bgp)
            self.bgp.start()
        if cfg.pd is not None:
            pc = cfg.pd
            delegations = Delegations(pc.duid or link_duid(pc.link), retry=pc.retry,
                                      patience=pc.patience)
            self.pd = PdDriver(delegations, pc.link, self._on_pd)
            self.pd.start()
        lines = []
        for name, (core, (host, port)) in cores.items():
            hook = {"anchor": self._after_anchor}.get(name)
            if isinstance(core, ControllerCore):
                hook = partial(self.events.controller, core)
            elif isinstance(core, LmsCore):
                hook = partial(log_events, core)
            driver = UdpDriver(core, on_pump=hook,
                               trace=self.trace.messages(name) if self.trace else None)
            if isinstance(core, ControllerCore):
                self.events.pump_controller = driver.pump
            bound = await driver.start(host, port)
            self.drivers[name] = driver
            lines.append(f"{name} {bound[0]} {bound[1]}")
        lms, store = cores.get("lms"), self._stores.get("lms")
        if lms is not None and isinstance(lms[0], LmsCore) and isinstance(store, EtcdStore):
            self._store_watch = StoreWatch(lms[0], store, self.drivers["lms"].pump).start()
        fd = self.dataplane.fileno() if self.dataplane is not None else None
        if fd is not None:
            # The hold device: end markers release holds as they arrive.
            asyncio.get_running_loop().add_reader(fd, self._on_hold_device)
        if cfg.access_links and self.anchor is not None:
            pd = self.pd
            self.access = AccessLinks(
                cfg.access_links, self.anchor, self.drivers["anchor"].pump,
                PrefixAllocator(cfg.mn_pool, cfg.mn_state) if cfg.mn_pool is not None else None,
                cfg.ra_interval, pd.core.held if pd is not None else None,
                self.dataplane if cfg.source_validation else None)
            self.access.start()
        charged = cfg.access_links if cfg.charged_links is None else cfg.charged_links
        if charged and self.anchor is not None and self.dataplane is not None:
            # Flows from the kernel's connection tracking, charged per flow.
            self.flows = FlowWatch(self.anchor, self.drivers["anchor"].pump,
                                   self.dataplane.charging, charged, cfg.udp_idle,
                                   cfg.flow_sweep)
            self.flows.start()
        if self.mn_agent is not None and cfg.mn is not None and self.dataplane is not None:
            mn_driver = self.drivers["mn"]

            def source(address: IPv6Address) -> None:
                mn_driver.source = str(address)
            self.host = HostMobility(self.mn_agent, self.dataplane, cfg.mn[2],
                                     mn_driver.pump, source)
            self.host.start()
        if cfg.control is not None:
            self._control = ControlServer(cfg.control, self.command, cfg.control_group)
            await self._control.start()
        if self.metrics is not None and cfg.metrics is not None:
            self._metrics_server = MetricsServer(cfg.metrics, self.metrics)
            bound = await self._metrics_server.start()
            lines.append(f"metrics {bound[0]} {bound[1]}")
        return lines

    def _on_pd(self, ev: DelegationEvent) -> None:
        """A DHCPv6-PD client event: logged; the anchor agent answers the
        lease moves (FM:3-2) waiting for it."""
        self.events.pd(ev)
        if self.anchor is not None and "anchor" in self.drivers:
            self.anchor.lease_event(ev, clock.now())
            self.drivers["anchor"].pump()

    def _on_bgp(self, ev: BgpEvent) -> None:
        """A BGP session event: logged; routes heard go to the anchor agent."""
        self.events.bgp(ev)
        if self.anchor is None or "anchor" not in self.drivers:
            return
        if isinstance(ev, RoutesReceived):
            self.anchor.routes_heard(ev.announced, ev.withdrawn, clock.now())
        elif isinstance(ev, SessionDown):
            # The peer's routes went with the session.
            self.anchor.routes_heard((), tuple(self.anchor.routed_away()), clock.now())
        else:
            return
        self.drivers["anchor"].pump()

    def _after_anchor(self) -> None:
        """After the anchor agent ran: carry out its effects."""
        assert self.anchor is not None
        anchor_effects(self.anchor, self.pd, self.access, self.bgp, self.trace,
                       self._take_charges)

    def _take_charges(self, effect: TakeCharges) -> None:
        """FM:2 at the previous point: its flows' charges, read and cleared
        off the kernel without holding the event loop (by nft processes,
        which a loaded host may keep waiting), then handed to the agent."""
        task = asyncio.get_running_loop().create_task(self._hand_charges(effect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hand_charges(self, effect: TakeCharges) -> None:
        assert self.anchor is not None and self.dataplane is not None
        try:
            usage = await self.dataplane.charging.take_async(effect.prefix)
        except DataPlaneError as exc:
            # The flows known open still move; their charges are lost, said so.
            log.error("FM:2: charges of %s: %s", effect.prefix, exc,
                      extra={"prefix": effect.prefix, "label": "FM:2"})
            usage = {}
        self.anchor.charges_taken(effect.prefix, effect.to, usage, clock.now())
        self.drivers["anchor"].pump()

    def _on_hold_device(self) -> None:
        assert self.dataplane is not None
        now = clock.now()
        try:
            self.dataplane.on_readable(now)
        except DataPlaneError as exc:
            log.error("hold device: %s", exc)
        if self.anchor is not None:
            self.anchor.process(now)
            self.drivers["anchor"].pump()

    def command(self, line: bytes) -> dict[str, Any]:
        """Run one control-socket command (:mod:`.nodecmd`); never raises on bad input."""
        result = run_command(self, line, clock.now())
        if self.anchor is not None:
            now = clock.now()
            self.anchor.process(now)
            self.drivers["anchor"].pump()
        return result

    async def stop(self) -> None:
        """Stop what needs a goodbye on the wire (BGP Cease), then :meth:`close`."""
        if self.bgp is not None:
            await self.bgp.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.events.stop()
        self.close()

    def close(self) -> None:
        """Stop every function (kernel forwarding state stays, by design)."""
        fd = self.dataplane.fileno() if self.dataplane is not None else None
        if fd is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(fd)
        if self._control is not None:
            self._control.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self.access is not None:
            self.access.close()
        if self.flows is not None:
            self.flows.close()
        if self.host is not None:
            self.host.close()
        if self._store_watch is not None:
            self._store_watch.stop()
        for driver in self.drivers.values():
            driver.close()
        for store in self._stores.values():
            store.close()
        if self.pd is not None:
            self.pd.close()
        if self.dataplane is not None:
            self.dataplane.close()
        if self.trace is not None:
            self.trace.close()


def main(path: str, log_level: str | None = None, log_format: str | None = None) -> int:
    """Entry point of ``dmanchor node --config PATH [--log-level L] [--log-format F]``."""
    try:
        cfg = load_node_config(path)
        logs.setup(log_level or cfg.log_level, log_format or cfg.log_format, cfg.node_id)
    except (ConfigError, ValueError) as exc:  # (an unknown --log-level)
        print(f"dmanchor node: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        node = Node(cfg)
        try:
            for line in await node.start():
                print(f"ready {line}", flush=True)
            print("ready", flush=True)
            await stop.wait()
        finally:
            await node.stop()

    try:
        asyncio.run(run())
    except (DataPlaneError, OSError, StateError, StoreError) as exc:
        print(f"dmanchor node: {exc}", file=sys.stderr)
        return 1
    return 0

