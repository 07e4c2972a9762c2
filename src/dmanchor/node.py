"""``dmanchor node --config FILE``: one process hosting a node's functions.

A node is what runs on one router (or in one namespace of the emulator).
Its config names the functions it hosts, each on its own signalling
endpoint; they share the process, its event loop and its SM keys::

    [node]
    id = "ar1"                      # node id
    log_level = "info"
    control = "/run/dmanchor/ar1.sock"   # access-layer commands (see below); mode 0600
    control_group = "dmanchor"      # optional: this group may use it too (0660)
    trace = "/var/log/dmanchor/ar1.jsonl"   # optional: messages and data-plane changes

    [anchor]                        # FM-CP + FM-DP + LMc of an access router
    listen = "[fd00:1::2]:5400"
    dpa = "fc00::1:0"               # End.DT6 SID; its flush SID is dpa + 1
    prefixes = ["2001:db8:1::/48"]  # anchored here (FM:4-1)
    uplink = "fd00:1::1"
    controller = "[fd00:1::1]:5400"
    lms = "[fd00:1::1]:5401"
    mode = "tunnel"                 # or "switch"
    [anchor.agents]                 # DPA -> agent endpoint of the peers
    "fc00::2:0" = "[fd00:2::2]:5400"

    [anchor.pd]                     # MN prefixes delegated by DHCPv6-PD (4.2.1)
    link = "dhcp0"                  # towards the delegating router (Kea)

    [controller]                    # FM:4 registry (+ central FM-CP, FM:5-2)
    listen = "[::]:5400"
    lms = "[::1]:5401"
    watch = ["2001:db8::/32"]       # prefixes whose anchoring it switches

    [lms]                           # as for ``dmanchor lms`` (node_id defaults to node.id)
    listen = "[::]:5401"

    [fmdp]                          # a router's FM-DP driven by a central FM-CP
    listen = "[::]:5402"
    control = "[fd00:1::1]:5400"    # where FM:5-2 status goes

    [security]                      # as for ``dmanchor lms``

The access layer (link up/down at the access router, the MN's previous
prefixes and flows) reaches the anchor as JSON lines on the ``control``
UNIX socket - what the emulator uses, and what RS handling will feed.  On
``attach`` the node sends the MN a Router Advertisement: its own prefixes
preferred, the previous ones valid but deprecated (draft 4.1)::

    {"cmd": "attach", "mn": "mn", "link": "mn2", "own": ["2001:db8:2:1::/64"],
     "previous": {"2001:db8:1:1::/64": [{"src": "...", "dst": "...", "proto": 17,
                                          "sport": 5001, "dport": 40000}]}}
    {"cmd": "detach", "mn": "mn"}      (an RS on an access link also attaches)
    {"cmd": "track", "prefix": "...", "flows": [...]}
    {"cmd": "flows_closed", "prefix": "..."}
    {"cmd": "entries"}                  -> the data plane's entries
    {"cmd": "usage", "flows": [...]}    -> FM:2 charging counters
    {"cmd": "stats"}                    -> signalling counters of every function
    {"cmd": "counters"}                 -> the data plane's counters (drops, markers)
    {"cmd": "delegations"}              -> DHCPv6-PD: prefix -> seconds left

Each command gets one JSON line back: ``{"ok": ...}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from .access.alloc import PoolExhausted, PrefixAllocator, StateError
from .access.bgp import BgpEvent, BgpSession, SessionDown, SessionUp
from .access.bgp_aio import BgpSpeaker
from .access.delegation import Delegated, DelegationEvent, Delegations, Refused, Returned
from .access.kea_ctrl import KeaError, move_delegation
from .access.nd import encode_ra
from .access.pd_aio import PdDriver, link_duid
from .access.ra import RaSchedule, link_advertisement, shortest_valid
from .access.sniff import HostSeen, LinkListener
from .config import (
    ConfigError,
)
from .control import ControlServer
from .dataplane.api import DataPlaneError
from .dataplane.linux import LinuxDataPlane
from .dataplane.netlink import LinkMonitor
from .dataplane.tunbuffer import Lift
from .fm.anchor import AnchorAgentCore
from .fm.anchor_model import Announce, Delegate
from .fm.controller import (
    AnchorMoved,
    AnchorSwitching,
    ControllerCore,
    DataPlaneDown,
    DataPlaneUp,
)
from .fm.fib import DesiredFib
from .fm.fmdp import FmDpCore
from .fm.mn_agent import MnAgentCore
from .lm.daemon import build_core, log_events
from .lm.lms import LmsCore
from .nodeconf import NodeConfig, load_node_config
from .runtime.aio import UdpDriver
from .transport.reliable import Addr, Endpoint
from .transport.service import ServiceCore
from .wire.codec import peek_type
from .wire.errors import WireError
from .wire.types import (
    EntryKind,
    FlowFilter,
    ForwardingEntry,
    Prefix,
    entry_to_json,
    flow_from_json,
)

log = logging.getLogger("dmanchor.node")


class Node:
    """The running functions of one node."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.drivers: dict[str, UdpDriver] = {}
        self.anchor: AnchorAgentCore | None = None
        self.controller: ControllerCore | None = None
        self.dataplane: LinuxDataPlane | None = None
        self._control: ControlServer | None = None
        self._trace = cfg.trace.open("a") if cfg.trace is not None else None
        self._listeners: list[LinkListener] = []
        self._alloc = (PrefixAllocator(cfg.mn_pool, cfg.mn_state)
                       if cfg.mn_pool is not None else None)
        """The /64 each MN attaching by RS gets (durable with ``mn_state``)."""
        self._ra: RaSchedule | None = None  # unsolicited RAs on the access links
        self._ra_timer: asyncio.TimerHandle | None = None
        self.bgp: BgpSpeaker | None = None
        self.pd: PdDriver | None = None
        self._kea_done: Counter[str] = Counter()  # lease6-update: ok / failed
        self._tasks: set[asyncio.Task[None]] = set()
        self._link_monitor: LinkMonitor | None = None
        self.mn_agent: MnAgentCore | None = None
        self._sid: IPv6Address | None = None
        # Source filters in force; None until the first sync, which sets
        # every access link's (clearing what a previous run left).
        self._sources: dict[str, tuple[Prefix, ...]] | None = None

    def _endpoint(self) -> Endpoint:
        return Endpoint(security=self.cfg.security.build())

    async def start(self) -> list[str]:
        """Start every function; returns 'function host port' lines."""
        now = time.time()
        cfg = self.cfg
        cores: dict[str, tuple[ServiceCore, Addr]] = {}
        if cfg.mn is not None:
            # End.DT6 on the MN's own link: its anchors' tunnels end here.
            self.dataplane = LinuxDataPlane(sid_dev=cfg.mn[2])
            self.mn_agent = MnAgentCore(cfg.mn[1], self._endpoint())
            cores["mn"] = (self.mn_agent, cfg.mn[0])
        if cfg.anchor or cfg.fmdp:
            self.dataplane = LinuxDataPlane()
            if self._trace is not None:
                self.dataplane.on_change = self._trace_change
                self.dataplane.on_lift = self._trace_lift
        if cfg.lms is not None:
            core, _store = build_core(cfg.lms, now)
            cores["lms"] = (core, cfg.lms.listen)
        if cfg.lmp is not None:
            core, _ = build_core(cfg.lmp, now)
            cores["lmp"] = (core, cfg.lmp.listen)
        if cfg.controller is not None:
            listen, settings = cfg.controller
            self.controller = ControllerCore(settings, self._endpoint(), now)
            cores["controller"] = (self.controller, listen)
        # One desired state for the cores sharing this router's data plane.
        fib = DesiredFib(self.dataplane) if self.dataplane is not None else None
        if cfg.fmdp is not None:
            listen, fsettings = cfg.fmdp
            assert fib is not None
            cores["fmdp"] = (FmDpCore(fsettings, fib, self._endpoint(), now), listen)
        if cfg.anchor is not None:
            listen, asettings = cfg.anchor
            assert self.dataplane is not None and fib is not None
            self.dataplane.upstream = {asettings.uplink}
            self.anchor = AnchorAgentCore(asettings, fib, self._endpoint(), now)
            cores["anchor"] = (self.anchor, listen)
        if cfg.bgp is not None:
            peer, bsettings = cfg.bgp
            self.bgp = BgpSpeaker(BgpSession(bsettings), peer, on_event=self._bgp_event)
            self.bgp.start()
        if cfg.pd is not None:
            pc = cfg.pd
            delegations = Delegations(pc.duid or link_duid(pc.link), retry=pc.retry,
                                      patience=pc.patience)
            self.pd = PdDriver(delegations, pc.link, self._pd_event)
            self.pd.start()
        lines = []
        for name, (core, (host, port)) in cores.items():
            hook = {"anchor": self._after_anchor,
                    "controller": self._after_controller}.get(name)
            if isinstance(core, LmsCore):
                hook = partial(log_events, core)
            driver = UdpDriver(core, on_pump=hook,
                               trace=self._tracer(name) if self._trace else None)
            bound = await driver.start(host, port)
            self.drivers[name] = driver
            lines.append(f"{name} {bound[0]} {bound[1]}")
        fd = self.dataplane.fileno() if self.dataplane is not None else None
        if fd is not None:
            # The hold device: end markers release holds as they arrive.
            asyncio.get_running_loop().add_reader(fd, self._on_hold_device)
        for link in cfg.access_links:
            self._listen(link)
        if cfg.access_links and self.anchor is not None:
            self._ra = RaSchedule(cfg.access_links, time.time(), cfg.ra_interval)
            self._on_ra_timer()
        if cfg.access_links:
            # An MN's radio leaving: the access link loses its carrier.
            self._link_monitor = LinkMonitor()
            asyncio.get_running_loop().add_reader(self._link_monitor.fileno(), self._on_link)
        if cfg.control is not None:
            self._control = ControlServer(cfg.control, self.command, cfg.control_group)
            await self._control.start()
        return lines

    def _on_link(self) -> None:
        """Access links that went down: their MNs left (FM:6-1 holds start)."""
        assert self._link_monitor is not None
        self._links_down({name for name, up in self._link_monitor.read()
                          if not up and name in self.cfg.access_links}, "went down")

    def _links_down(self, down: set[str], why: str) -> int:
        """Detach the MNs on these access links; returns how many."""
        agent = self.anchor
        if agent is None or not down:
            return 0
        now = time.time()
        left = 0
        for mn, st in list(agent.attached.items()):
            if st.link in down:
                agent.detach(mn, now)
                left += 1
                log.info("MN %s detached: %s %s", mn, st.link, why)
        agent.process(now)
        self.drivers["anchor"].pump()
        return left

    def _after_anchor(self) -> None:
        """After the anchor agent ran: routes to BGP, delegations to DHCPv6-PD,
        source filters to the kernel."""
        agent = self.anchor
        assert agent is not None
        while (effect := agent.next_event()) is not None:
            if isinstance(effect, Announce):
                self._announce(effect.prefix, effect.on)
            elif isinstance(effect, Delegate):
                if self.pd is None:
                    continue
                if effect.on:
                    # A prefix visiting from another network is still
                    # delegated there: ask for it without taking another.
                    self.pd.hold(effect.prefix, moving=agent.moving_in(effect.prefix))
                else:
                    self.pd.let_go(effect.prefix)
            else:
                self._advertise_mns(effect.link)
        if self.cfg.source_validation:
            self._sync_sources()

    def _sync_sources(self) -> None:
        """SM: each access link accepts only the prefixes of the MNs on it."""
        agent, dp = self.anchor, self.dataplane
        if agent is None or dp is None:
            return
        want: dict[str, tuple[Prefix, ...]] = dict.fromkeys(self.cfg.access_links, ())
        for st in agent.attached.values():
            if st.link in want:
                want[st.link] = tuple(dict.fromkeys((*want[st.link], *st.own, *st.visiting)))
        first = self._sources is None
        sources = self._sources = self._sources or {}
        for link, prefixes in want.items():
            if first or sources.get(link, ()) != prefixes:
                try:
                    dp.set_source_filter(link, prefixes)
                    sources[link] = prefixes
                except DataPlaneError as exc:
                    log.error("source filter on %s: %s", link, exc)

    def _announce(self, prefix: Prefix, on: bool) -> None:
        """Hand an announcement or withdrawal to the BGP speaker."""
        if self.bgp is None:
            return
        self.bgp.change([] if on else [prefix], [prefix] if on else [])
        if self._trace is not None:
            self._write_trace({"fn": "bgp", "dir": "announce" if on else "withdraw",
                               "prefix": str(prefix)})

    def _after_controller(self) -> None:
        """The controller's upward events: logged; an anchor switch moves the
        prefix's DHCPv6-PD lease too when ``[controller.kea]`` says how."""
        assert self.controller is not None
        for ev in self.controller.drain_events():
            if isinstance(ev, DataPlaneDown):
                log.warning("FM-DP %s stopped reporting (FM:5-2)", ev.node_id)
            elif isinstance(ev, DataPlaneUp):
                log.info("FM-DP %s reports", ev.node_id)
            elif isinstance(ev, AnchorSwitching):
                if ev.dpa is not None and self.cfg.kea is not None:
                    duid = self.cfg.kea.duids.get(ev.dpa)
                    if duid is None:
                        self._kea_done["no-duid"] += 1
                        log.warning("no DUID for anchor %s: %s's lease stays", ev.dpa,
                                    ev.prefix)
                    else:
                        task = asyncio.get_running_loop().create_task(
                            self._move_lease(ev.prefix, duid))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
            elif isinstance(ev, AnchorMoved):
                log.info("%s anchored at %s now (4.2.1)", ev.prefix, ev.dpa)
            else:
                log.info("%s routed home again (FM:3-3)", ev.prefix)

    async def _move_lease(self, prefix: Prefix, duid: bytes) -> None:
        assert self.cfg.kea is not None
        try:
            await move_delegation(self.cfg.kea.control, prefix, duid)
        except KeaError as exc:
            self._kea_done["failed"] += 1
            log.error("moving %s's lease: %s", prefix, exc)
        else:
            self._kea_done["lease6-update"] += 1
            log.info("%s's DHCPv6-PD lease given to %s (lease6-update)", prefix, duid.hex())

    def _pd_event(self, ev: DelegationEvent) -> None:
        if isinstance(ev, Delegated):
            if not ev.renewed:
                log.info("DHCPv6-PD: %s delegated here (valid %d s)", ev.prefix, ev.valid)
        elif isinstance(ev, Returned):
            log.info("DHCPv6-PD: %s given back", ev.prefix)
        elif isinstance(ev, Refused):
            log.warning("DHCPv6-PD: %s not delegated here: %s", ev.prefix, ev.reason)
        else:
            log.error("DHCPv6-PD: the lease of %s ended unrenewed", ev.prefix)
        if self._trace is not None:
            self._write_trace({"fn": "pd", "event": type(ev).__name__.lower(),
                               "prefix": str(ev.prefix)})

    def _bgp_event(self, ev: BgpEvent) -> None:
        if isinstance(ev, SessionUp):
            log.info("BGP session up (AS %d, hold %d s)", ev.peer_as, ev.hold_time)
        elif isinstance(ev, SessionDown):
            log.warning("BGP session down: %s", ev.reason)

    def _on_hold_device(self) -> None:
        assert self.dataplane is not None
        now = time.time()
        try:
            self.dataplane.on_readable(now)
        except DataPlaneError as exc:
            log.error("hold device: %s", exc)
        if self.anchor is not None:
            self.anchor.process(now)
            self.drivers["anchor"].pump()

    def command(self, line: bytes) -> dict[str, Any]:
        """Run one access-layer command; never raises on bad input."""
        log.debug("command %s", line[:80])
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("a command is a JSON object")
            return {"ok": self._command(doc)}
        except (ValueError, KeyError, TypeError, WireError, DataPlaneError) as exc:
            log.warning("command refused: %s", exc)
            return {"error": str(exc)}

    def _command(self, doc: dict[str, Any]) -> Any:
        cmd = doc.get("cmd")
        if cmd == "stats":
            out = {name: _stats(driver.core) for name, driver in self.drivers.items()}
            if self.pd is not None:
                out["pd"] = {"counters": dict(self.pd.core.counters)}
            if self.cfg.kea is not None:
                out["kea"] = {"sent": {"lease6-update": self._kea_done["lease6-update"]},
                              "counters": dict(self._kea_done)}
            return out
        if cmd == "moved":
            return self._moved(doc)
        agent = self.anchor
        if agent is None:
            raise ValueError("this node hosts no anchor")
        now = time.time()
        result: Any = True
        if cmd == "attach":
            prev = {Prefix.parse(p): [flow_from_json(f) for f in flows]
                    for p, flows in doc.get("previous", {}).items()}
            own = [Prefix.parse(p) for p in doc.get("own", [])]
            agent.attach(str(doc["mn"]), str(doc["link"]), own, prev, now)
            # Tell the MN (SLAAC): its own prefixes preferred, the previous
            # ones kept valid but deprecated - new flows take the new prefix.
            self._advertise(str(doc["link"]), tuple(own), tuple(prev), agent.s.lifetime)
        elif cmd == "detach":
            agent.detach(str(doc["mn"]), now)
        elif cmd == "link_going_down":
            # An L2 trigger (RFC 5184's Link Going Down, e.g. a station's
            # disassociation): hold before the link is gone, so nothing in
            # flight is lost; the link event that follows finds no one.
            link = str(doc["link"])
            if link not in self.cfg.access_links:
                raise ValueError(f"{link!r} is not an access link of this node")
            result = self._links_down({link}, "going down (L2 trigger)")
        elif cmd == "track":
            on = doc.get("link")
            if on is not None and on not in self.cfg.access_links:
                raise ValueError(f"{on!r} is not an access link of this node")
            agent.track_flows(Prefix.parse(doc["prefix"]),
                              [flow_from_json(f) for f in doc.get("flows", [])], now,
                              None if on is None else str(on))
        elif cmd == "flows_closed":
            agent.flows_closed(Prefix.parse(doc["prefix"]), now)
        elif cmd == "entries":
            # What the kernel has (read back), not what the cores asked for.
            assert self.dataplane is not None
            result = [entry_to_json(e) for e in self.dataplane.entries()]
        elif cmd == "counters":
            result = dict(agent.dp.counters())
        elif cmd == "delegations":
            # Prefix -> seconds its DHCPv6-PD lease has left (none without [anchor.pd]).
            result = {str(p): round(left, 1) for p, left in
                      (self.pd.core.held(now).items() if self.pd is not None else ())}
        elif cmd == "usage":
            result = [agent.dp.usage(flow_from_json(f))._asdict() for f in doc.get("flows", [])]
        else:
            raise ValueError(f"unknown command {cmd!r}")
        agent.process(now)
        self.drivers["anchor"].pump()
        return result

    def _moved(self, doc: dict[str, Any]) -> Any:
        """Host-based (Fig 2a/2b): the MN has a care-of SID; claim ``keep`` to it.

        The SID (an address of the new network, not one of the MN's own,
        so the kernel does not take its packets as local) decapsulates
        (End.DT6); the MN answers neighbour solicitations for it (proxy ND).
        """
        agent, dp = self.mn_agent, self.dataplane
        if agent is None or dp is None:
            raise ValueError("this node hosts no MN agent")
        sid = IPv6Address(str(doc["sid"]))
        keep = [Prefix.parse(p) for p in doc.get("keep", [])]
        dev = self.cfg.mn[2] if self.cfg.mn is not None else "br0"
        # End.DT6 into the local table: the inner packets are for the MN.
        old = ([ForwardingEntry(EntryKind.DECAP, Prefix.host(self._sid), link="local")]
               if self._sid else [])
        new = ForwardingEntry(EntryKind.DECAP, Prefix.host(sid), link="local")
        dp.apply([new], [e for e in old if e != new], time.time())
        # Ending tunnels makes the MN a router for its SID: the kernel takes
        # packets to a non-local address only when forwarding (and proxy ND
        # answers only then); accept_ra=2 keeps it autoconfiguring from RAs.
        Path("/proc/sys/net/ipv6/conf/all/forwarding").write_text("1")
        conf = Path(f"/proc/sys/net/ipv6/conf/{dev}")
        (conf / "accept_ra").write_text("2")
        (conf / "proxy_ndp").write_text("1")
        # Answer at once: proxied answers to multicast solicitations are
        # otherwise delayed at random by up to 0.8 s (RFC 4861 anycast rule).
        Path(f"/proc/sys/net/ipv6/neigh/{dev}/proxy_delay").write_text("0")
        subprocess.run(["ip", "-6", "neigh", "replace", "proxy", str(sid), "dev", dev],
                       check=True, capture_output=True, timeout=10)
        self._sid = sid
        now = time.time()
        agent.moved(sid, keep, now)
        agent.process(now)
        self.drivers["mn"].pump()
        return True

    def _write_trace(self, record: dict[str, Any]) -> None:
        assert self._trace is not None
        record["t"] = round(time.monotonic(), 6)
        record["node"] = self.cfg.node_id
        self._trace.write(json.dumps(record) + "\n")
        self._trace.flush()

    def _tracer(self, function: str) -> Callable[[str, bytes, Addr], None]:
        def trace(direction: str, data: bytes, peer: Addr) -> None:
            mtype = peek_type(data)
            self._write_trace({"fn": function, "dir": direction,
                               "type": mtype.name if mtype else "?", "bytes": len(data),
                               "peer": [peer[0], peer[1]]})
        return trace

    def _trace_change(self, added: Sequence[ForwardingEntry],
                      deleted: Sequence[ForwardingEntry]) -> None:
        self._write_trace({"fn": "dataplane", "add": [entry_to_json(e) for e in added],
                           "delete": [entry_to_json(e) for e in deleted]})

    def _trace_lift(self, prefix: Prefix, lift: Lift, cause: str) -> None:
        self._write_trace({"fn": "lift", "prefix": str(prefix), "cause": cause,
                           "released": lift.released, "stragglers": lift.stragglers,
                           "forced": lift.forced, "guarded": lift.guarded,
                           "waited_ms": round(lift.waited * 1e3, 3)})

    def _listen(self, link: str) -> None:
        """Hear the hosts on an access link (:mod:`.access.sniff`): the first
        thing an MN sends there is its arrival; its RSs get RAs.

        Also makes the kernel skip routes through the link while it has no
        carrier: the MN's radio leaving then diverts its prefixes to the
        data plane's standby hold at once, not after this agent reacted.
        """
        for knob in ("ignore_routes_with_linkdown",
                     # An MN arriving announces its addresses (unsolicited
                     # NA): learning them then, not at the first packet,
                     # spares the move a resolution and its queue (whose
                     # flush can let a later packet overtake queued ones).
                     "accept_untracked_na"):
            try:
                Path(f"/proc/sys/net/ipv6/conf/{link}/{knob}").write_text("1")
            except OSError as exc:
                log.warning("%s: cannot set %s: %s", link, knob, exc)
        listener = LinkListener(link)
        self._listeners.append(listener)
        asyncio.get_running_loop().add_reader(listener.fileno(), self._on_heard, listener)

    def _on_heard(self, listener: LinkListener) -> None:
        try:
            heard = listener.read()
        except OSError as exc:
            log.warning("access link %s: %s", listener.link, exc)
            return
        for seen in heard:
            self._host_seen(listener.link, seen)

    def _host_seen(self, link: str, seen: HostSeen) -> None:
        """A host spoke on ``link``: attach it if it just arrived (its MN-ID
        is the frame's source MAC, which the LMs binding names: no other
        host can claim its prefixes); answer its solicitation."""
        agent = self.anchor
        assert agent is not None
        mn = seen.mn_id
        attached = agent.attached.get(mn)
        here = attached is not None and attached.link == link
        named = seen.rs.previous if seen.rs is not None else ()
        # A forwarding switch (4.2.2) hands out prefixes of its AR's network:
        # the AR anchors them and tunnels them down, so to the switch's
        # agent they are visiting prefixes, like those an RS names.
        fw = agent.s.parent is not None
        try:
            delegated = (self._alloc.get(mn),) if self._alloc is not None else ()
        except PoolExhausted as exc:
            log.error("MN %s on %s not attached: %s", mn, link, exc)
            return
        own = attached.own if here and attached is not None and not fw else delegated
        known = set(own) | (set(attached.visiting) if here and attached is not None else set())
        previous: dict[Prefix, list[FlowFilter]] = {p: [] for p in named if p not in known}
        if fw and not here:
            previous.update({p: [] for p in delegated})
        if here and not previous and seen.rs is None:
            return  # an MN we know, talking
        now = time.time()
        if not here:
            # Arrived: the LMs is asked which prefixes it used elsewhere.
            agent.arrive(mn, link, [] if fw else list(own), list(previous), now)
        elif previous:
            agent.attach(mn, link, (), previous, now)
        if not here or previous:
            agent.process(now)
            self.drivers["anchor"].pump()
            log.info("MN %s %s on %s (%s): own %s, named %s", mn,
                     "named more" if here else "arrived", link, seen.kind.name,
                     [str(p) for p in own], [str(p) for p in previous])
        self._advertise_mns(link)

    def _advertise(self, link: str, own: tuple[Prefix, ...], previous: tuple[Prefix, ...],
                   lifetime: int, solicited: bool = True) -> None:
        """Send one Router Advertisement on an access link: ``own`` preferred,
        ``previous`` deprecated; lifetimes capped by the PD leases.
        ``solicited``: an answer (RS, attach), which pushes the unsolicited
        schedule on (the schedule moves itself on for its own)."""
        now = time.time()
        lease_left = self.pd.core.held(now) if self.pd is not None else None
        ra = link_advertisement(own, previous, lifetime, lease_left)
        data = encode_ra(ra)
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.encode())
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                s.sendto(data, ("ff02::1", 0, 0, socket.if_nametoindex(link)))
        except OSError as exc:
            log.warning("router advertisement on %s: %s", link, exc)
            return
        if self._ra is not None and link in self.cfg.access_links:
            if solicited:
                self._ra.sent(link, now)  # the next unsolicited one is an interval on
            self._ra.lifetimes(link, now, shortest_valid(ra))
            self._arm_ra()

    def _on_ra_timer(self) -> None:
        """Unsolicited RAs (RFC 4861 6.2.4): each due access link advertises
        the prefixes of the MNs on it, so their hosts keep their addresses."""
        assert self._ra is not None and self.anchor is not None
        self._ra_timer = None
        for link in self._ra.due(time.time()):
            self._advertise_mns(link, solicited=False)
        self._arm_ra()

    def _advertise_mns(self, link: str, solicited: bool = True) -> None:
        """Advertise what the MNs on ``link`` use: the prefixes given here
        preferred, those kept from elsewhere deprecated."""
        assert self.anchor is not None
        own: tuple[Prefix, ...] = ()
        kept: tuple[Prefix, ...] = ()
        for mn, st in self.anchor.attached.items():
            if st.link == link:
                # The /64 given here is the MN's to prefer, even where (a
                # forwarding switch, 4.2.2) the anchor sees it as visiting.
                given = self._alloc.peek(mn) if self._alloc is not None else None
                own = (*own, *st.own, *((given,) if given is not None else ()))
                kept = (*kept, *st.visiting)
        self._advertise(link, own, kept, self.anchor.s.lifetime, solicited)

    def _arm_ra(self) -> None:
        assert self._ra is not None
        deadline = self._ra.next_deadline()
        if deadline is None:
            return
        if self._ra_timer is not None:
            self._ra_timer.cancel()
        self._ra_timer = asyncio.get_running_loop().call_later(
            max(0.0, deadline - time.time()), self._on_ra_timer)

    async def stop(self) -> None:
        """Stop what needs a goodbye on the wire (BGP Cease), then :meth:`close`."""
        if self.bgp is not None:
            await self.bgp.stop()
        for task in list(self._tasks):  # lease moves under way (bounded by their timeout)
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.close()

    def close(self) -> None:
        """Stop every function (kernel forwarding state stays, by design)."""
        fd = self.dataplane.fileno() if self.dataplane is not None else None
        if fd is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(fd)
        if self._ra_timer is not None:
            self._ra_timer.cancel()
        if self._control is not None:
            self._control.close()
        if self._link_monitor is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self._link_monitor.fileno())
            self._link_monitor.close()
        for listener in self._listeners:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(listener.fileno())
            listener.close()
        for driver in self.drivers.values():
            driver.close()
        if self.pd is not None:
            self.pd.close()
        if self.dataplane is not None:
            self.dataplane.close()
        if self._trace is not None:
            self._trace.close()


def _stats(core: object) -> dict[str, Any]:
    """Signalling counters of one function (by message type name)."""
    ep = getattr(core, "endpoint", None)
    if not isinstance(ep, Endpoint):
        return {}
    st = ep.stats
    return {
        "sent": {t.name: n for t, n in st.sent.items()},
        "bytes_sent": {t.name: n for t, n in st.bytes_sent.items()},
        "received": {t.name: n for t, n in st.received.items()},
        "drops": dict(st.drops),
        "retransmissions": st.retransmissions,
    }


def main(path: str) -> int:
    """Entry point of ``dmanchor node --config PATH``."""
    try:
        cfg = load_node_config(path)
    except ConfigError as exc:
        print(f"dmanchor node: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

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
    except (DataPlaneError, OSError, StateError) as exc:
        print(f"dmanchor node: {exc}", file=sys.stderr)
        return 1
    return 0

