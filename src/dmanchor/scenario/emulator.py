"""Runs a scenario on real kernels: namespaces, node processes, traffic, moves.

The emulator builds what the :mod:`.plan` says (namespaces with a unique run
prefix, veths, static routes), starts Kea and BIRD where the scenario uses
them and one ``dmanchor node`` process per node, then plays the timeline:

* an MN is a namespace whose radios (one veth per access router) are
  bridged to one interface ``br0``; attaching is bridging that radio, after
  the previous router's side of the old radio went down (the router's node
  sees the link event and detaches the MN: FM:6-1 holds start), and then
  soliciting with a plain RS, as a stock host does: the router attaches it,
  advertises (RA) and asks the LMs which prefixes the MN used elsewhere
  (LM:1-1 by MN), keeping those whose serving point reports flows needing
  continuity on them; a move with ``overlap`` makes before it breaks: the
  new radio attaches while the old one stays up, listening only, until the
  parser's ``leave`` step;
* flows are a sequenced UDP probe and a checked TCP stream from a host;
* faults kill or restart a node process, or cut a link.

Everything built is removed at the end, on success, failure or Ctrl-C;
only processes it started are stopped, by PID.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from ..access.nd import RouterSolicitation, decode_ra, encode_rs, encode_unsolicited_na
from ..dataplane.netlink import Netlink, open_in_netns
from ..emulation.bird import BgpNeighbor, BirdRouter
from ..emulation.capture import Capture
from ..emulation.kea import KeaServer
from ..emulation.lab import Lab, Veth, run_all, sigint_deferred
from ..emulation.nodes import NodeProcesses, command, wait_for_messages
from ..mn.ondemand import AddressKind, HostAddress, choose
from ..wire.auth import Drop
from ..wire.types import Prefix, entry_from_json
from . import attacks, breakdown, callflow, faults, plots
from .checks import EmulationChecks
from .converge import mobile_state
from .model import Scenario, Step
from .plan import (
    GATEWAY_LL,
    GATEWAY_MAC,
    Plan,
    agent_name,
    filled,
    make_plan,
    mn_link_address,
    pd_duid,
)
from .report import FlowResult, MoveRecord, Report, build_report
from .settle import SettleWatch
from .traffic import TcpStream, UdpProbe

ROUTER_ADVERTISEMENT = 134


@dataclass(slots=True)
class _Mn:
    """What the emulator knows of one MN."""

    router: str | None = None
    prefixes: list[Prefix] = field(default_factory=list)
    """Its own prefixes, oldest first (the newest is where new flows go)."""
    continuity: dict[Prefix, list[str]] = field(default_factory=dict)
    """Prefixes still used by continuity flows -> those flows."""
    addresses: dict[Prefix, str] = field(default_factory=dict)
    """The address its stack configured in each prefix (SLAAC)."""


@dataclass(slots=True)
class _Flow:
    name: str
    prefix: Prefix
    address: str
    runner: UdpProbe | TcpStream
    started: float


@dataclass(frozen=True, slots=True)
class _RadioBreak:
    """An access link taken down as its MN left, and its counters then.

    What the old router had already sent towards the MN as the radio went
    is lost on the radio: dropped by the router's kernel on the downed link
    (its tx_dropped), or delivered to the MN's side of it after the MN had
    moved its bridge off that radio, where it is another host's frame (that
    side's rx_otherhost_dropped: the kernel's backlog still held it)."""

    move: int
    """Index the departing move gets in ``Emulation.moves``."""
    tx_dropped: int
    """The router side's tx_dropped just before the link went down."""
    rx_otherhost: int
    """The MN side's rx_otherhost_dropped then."""


MBB_TABLE = "dmanchor_mbb"
"""The nft table (family bridge) in an MN's namespace during a
make-before-break move's overlap: its old radio only listens."""
RESOLICIT = 0.1
"""Seconds without an RA after which the runner solicits again.  Its RS
stands in for the stack's first one; under load one was lost in the
namespaces' own plumbing (2 CPU hogs: the router heard the MN 467 ms
later, by the kernel's MLD report), and that wait was the emulator's, not
the handover's.  (A stock host would wait its router_solicitation_interval,
4 s, with its MLD report and DAD as the router's other cues.)"""


class Emulation(EmulationChecks):
    """One run of one scenario."""

    def __init__(self, sc: Scenario, workdir: Path, log_level: str = "info",
                 progress: Callable[[str], None] | None = None,
                 l2_trigger: bool = True, signed: bool = True,
                 pcap: Path | None = None, predictive: bool = False) -> None:
        """``l2_trigger``: before a move, the old router's L2 announces the
        link going down (a predictive hint, RFC 5184 style); without it the
        router learns of the departure only from the link itself.
        ``predictive`` (with ``l2_trigger``): the hint names the router the
        MN goes to, which the old router tells first (HI).
        ``signed``: every node signs with its own key (else all insecure).
        ``pcap``: capture the nodes' control traffic into this file."""
        self.sc = sc
        self.l2_trigger = l2_trigger
        self.predictive = predictive and l2_trigger
        self.plan: Plan = make_plan(sc, signed)
        self.workdir = workdir
        self.log_level = log_level
        self.progress = progress or (lambda _: None)
        self.lab = Lab()
        self.procs = NodeProcesses(self.lab, workdir)
        self.capture = Capture(self.lab, list(sc.nodes), pcap, workdir) if pcap else None
        self.birds: list[BirdRouter] = []
        self.kea: KeaServer | None = None
        self.mns = {name: _Mn() for name in sc.of_kind("mn")}
        self._loss: faults.ControlLoss | None = None
        self.flows: dict[str, _Flow] = {}
        self.moves: list[MoveRecord] = []
        self.checks: dict[str, bool] = {}
        self._port = 7000
        self._netlinks: dict[str, Netlink] = {}
        self._ifindex: dict[tuple[str, str], int] = {}
        self._down: set[tuple[str, str]] = set()  # access links taken down (router, mn)
        self._kept: dict[str, str] = {}  # MN -> the router its old radio still hears (MBB)
        self._radio: dict[tuple[str, str], _RadioBreak] = {}  # (router, mn): open break
        self._t0 = time.monotonic()
        self.settle = SettleWatch(self._stale, lambda: time.monotonic() - self._t0)

    # -- The run -------------------------------------------------------------------------

    def run(self) -> Report:
        """Build, play the timeline, measure, and always tear down."""
        try:
            self._build()
            if self.capture is not None:
                self.progress("capturing the control traffic (dumpcap in every node)")
                self.capture.start()
            self._start_nodes()
            t0 = self._t0 = time.monotonic()
            for step in self.sc.timeline:
                delay = t0 + step.at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._do(step)
            self.progress("waiting for the flows to end")
            for f in self.flows.values():
                f.runner.join()
            report = self._report()
            if self.capture is not None:
                self.capture.stop()
            return report
        finally:
            self.close()

    def close(self) -> None:
        """Remove everything this run created (idempotent; a Ctrl-C waits for it).

        Every step runs even when an earlier one fails: a teardown that
        stopped at its first error would leave the node processes and the
        namespaces after it behind.  The first error is raised at the end."""
        with sigint_deferred():
            errors = run_all([
                self.settle.finish, self._close_netlinks, self._stop_capture,
                self._stop_kea, self.procs.stop, self._stop_birds,
            ])
            left = self.lab.cleanup()
        if left:
            errors.append(RuntimeError(f"could not remove namespaces {left}"))
        if errors:
            raise errors[0]

    def _close_netlinks(self) -> None:
        for nl in self._netlinks.values():
            nl.close()
        self._netlinks.clear()

    def _stop_capture(self) -> None:
        if self.capture is not None:
            self.capture.stop(merge=False)  # (a failed run: what it had is dropped)

    def _stop_kea(self) -> None:
        if self.kea is not None:
            kea, self.kea = self.kea, None
            kea.stop()

    def _stop_birds(self) -> None:
        birds, self.birds = self.birds, []
        errors = run_all([b.stop for b in birds])
        if errors:
            raise errors[0]

    # -- Building ------------------------------------------------------------------------

    def _build(self) -> None:
        sc, plan, lab = self.sc, self.plan, self.lab
        self.progress(f"namespaces {lab.prefix}*: {', '.join(sc.nodes)}")
        veths = []
        for link in sc.links:
            ia = next(i for i in plan.nodes[link.a].ifaces if i.peer == link.b)
            ib = next(i for i in plan.nodes[link.b].ifaces if i.peer == link.a)
            veths.append(Veth(link.a, ia.name, ia.address, link.b, ib.name, ib.address,
                              link.mtu))
        hosts = [n for n, s in sc.nodes.items() if s.kind != "router"]
        lab.build(list(sc.nodes), veths, hosts=hosts)
        for name, np in plan.nodes.items():
            if np.spec.kind == "host":
                gw = np.ifaces[0].address.split("/")[0].rsplit(":", 1)[0] + ":ff"
                lab.run(name, "ip", "-6", "route", "add", "default", "via", gw)
            elif np.spec.kind == "mn":
                self._mn_setup(name)
            else:
                for iface in np.ifaces:
                    if sc.nodes[iface.peer].kind == "mn":
                        lab.run(name, "ip", "link", "set", iface.name, "address", GATEWAY_MAC)
                        # Its link-local address too (the one its RAs come
                        # from): the one its first MAC gave would vanish when
                        # the link next goes down, and an MN coming back
                        # would keep a default route through a router that
                        # no longer answers.
                        lab.run(name, "ip", "-6", "addr", "flush", "dev", iface.name,
                                "scope", "link")
                        lab.run(name, "ip", "-6", "addr", "add", f"{GATEWAY_LL}/64", "dev",
                                iface.name, "nodad")
                lines = [f"route add {p} via {nh}" for p, nh in np.routes]
                if np.uplink:
                    lines.append(f"route add default via {np.uplink}")
                if lines:
                    batch = self.workdir / f"{name}.routes"
                    batch.write_text("\n".join(lines) + "\n")
                    lab.run(name, "ip", "-6", "-batch", str(batch))
        if any(s.dhcp is not None for s in sc.nodes.values()):
            self._kea()
        if any(s.bgp is not None for s in sc.nodes.values()):
            self._bird()

    def _mn_setup(self, name: str) -> None:
        lab = self.lab
        radios = [i.name for i in self.plan.nodes[name].ifaces]
        for radio in radios:  # layer-2 ports: only br0 speaks IPv6
            lab.run(name, "sysctl", "-qw", f"net.ipv6.conf.{radio}.disable_ipv6=1")
        # A fixed MAC: a bridge otherwise takes its lowest port's, and the
        # MN's link-local identity would change with each move.
        lab.run(name, "ip", "link", "add", "br0", "address", mn_link_address(self.sc, name),
                "mtu", "1500", "type", "bridge")
        # A stock host configured by SLAAC, with two settings of a mobile
        # host (docs/operations.md): no DAD (its /64 is its alone) - else
        # every move makes its kept addresses tentative, unreachable, for a
        # second - and no delay before soliciting.  Its default route
        # comes from the RAs.
        lab.run(name, "sysctl", "-qw", "net.ipv6.conf.br0.accept_dad=0",
                "net.ipv6.conf.br0.router_solicitation_delay=0")
        lab.run(name, "ip", "link", "set", "br0", "up")
        if self.sc.nodes[name].agent:
            # A host-based MN ends tunnels, so its agent turns forwarding on,
            # and the kernel then drops the default routes RAs gave it: its
            # gateway is configured - at another metric than the RA's route
            # through the same gateway, which the kernel could not add
            # beside it (and would then skip the RA's prefixes: no SLAAC).
            lab.run(name, "ip", "-6", "route", "add", "default", "via", GATEWAY_LL, "dev", "br0",
                    "metric", "2048")

    def _kea(self) -> None:
        sc, lab = self.sc, self.lab
        server = next(s for s in sc.nodes.values() if s.dhcp is not None)
        assert server.dhcp is not None
        anchors = [s.name for s in sc.anchors() if s.anchor is not None and s.anchor.pd]
        self.progress(f"Kea DHCPv6 on {server.name}, PD pool {server.dhcp}, "
                      f"for {', '.join(anchors)}")
        dns = server.name
        lab.run(dns, "ip", "link", "add", "dhcpbr", "type", "bridge")
        for i, a in enumerate(anchors, start=1):
            lab.veth(Veth(dns, f"pd{i}", "", a, "dhcp0", ""))
            lab.run(dns, "ip", "link", "set", f"pd{i}", "master", "dhcpbr")
        lab.run(dns, "ip", "link", "set", "dhcpbr", "up")
        lab.wait_up(dns, "dhcpbr")
        lab.wait_link_local(dns, "dhcpbr")  # Kea and the clients speak from them
        for a in anchors:
            lab.wait_link_local(a, "dhcp0")
        # lease_cmds: the checks read Kea's own lease table (lease6-get).
        self.kea = KeaServer(lab, dns, "dhcpbr", server.dhcp, 64, self.workdir / "kea",
                             lease_cmds=True)
        self.kea.start()

    def _bird(self) -> None:
        sc, plan = self.sc, self.plan
        self.progress("BIRD 2 on the routers: eBGP, FIB export")
        for i, (name, spec) in enumerate(sc.nodes.items(), start=1):
            if spec.bgp is None:
                continue
            neigh = []
            for iface in plan.nodes[name].ifaces:
                peer = sc.nodes[iface.peer]
                asn = peer.bgp
                if peer.anchor is not None and peer.anchor.mode == "bgp":
                    asn = 65000 + plan.nodes[peer.name].anchor_index
                if asn is not None:
                    neigh.append(BgpNeighbor(f"n_{peer.name}",
                                             plan.address_towards(name, peer.name), asn))
            bird = BirdRouter(self.lab, name, self.workdir / f"bird-{name}", spec.bgp,
                              f"10.0.0.{i}", neigh)
            bird.start()
            self.birds.append(bird)

    def _start_nodes(self) -> None:
        sc, plan = self.sc, self.plan
        order = sorted((n for n, p in plan.nodes.items() if p.config),
                       key=lambda n: (sc.nodes[n].anchor is not None, sc.nodes[n].fmdp
                                      and not sc.nodes[n].controller, n))
        self.progress(f"node processes: {', '.join(order)}")
        for name in order:
            cfg = filled(plan.nodes[name].config, name, self.workdir, self.log_level,
                         self.kea.socket if self.kea is not None else None)
            self.procs.start(name, name, cfg)
        core = next((n for n, s in sc.nodes.items() if s.controller), None)
        # ARs whose control plane is the controller's register nothing.
        anchors = [a for a in sc.anchors() if a.anchor is None or a.anchor.cp is None]
        if core is not None and anchors:
            ready = {"REGISTRATION_REPLY": len(anchors)}
            if "watch =" in plan.nodes[core].config:
                ready["SUBSCRIBE_ACK"] = 1
            wait_for_messages(self._sock(core), ready, timeout=20)
        for bird in self.birds:
            bird.wait_established(len([line for line in bird.config.read_text().splitlines()
                                       if line.startswith("protocol bgp")]), timeout=30)

    def _sock(self, name: str) -> Path:
        return self.workdir / f"{name}.sock"

    # -- Timeline -----------------------------------------------------------------------

    def _do(self, step: Step) -> None:
        a = step.args
        if step.action in ("attach", "move"):
            self._attach(a["mn"], a["to"], a.get("overlap"))
        elif step.action == "leave":
            self._leave(a["mn"])
        elif step.action == "flow":
            self._start_flow(a["flow"])
        elif step.action == "close":
            self._close(a["flows"])
        elif step.action == "kill":
            self.progress(f"fault: {a['node']}'s node process killed")
            self.procs.kill(a["node"])
            self.settle.fault(a["node"], f"{a['node']} killed")
        elif step.action == "restart":
            self.progress(f"fault: {a['node']}'s node process restarted")
            self.procs.restart(a["node"], a["node"])
            self.settle.recovered(a["node"], f"{a['node']} restarted")
        elif step.action == "attack":
            self.progress(attacks.send(self.lab, self.plan, a, self.flows[a["flow"]].prefix))
        elif step.action in ("cut", "heal"):
            self.progress(f"fault: link {a['a']}-{a['b']} {step.action}")
            faults.cut(self.lab, self.plan, a["a"], a["b"], step.action == "cut")
            link = f"link {a['a']}-{a['b']}"
            if step.action == "cut":
                self.settle.fault(link, f"{link} cut")
            else:
                self.settle.recovered(link, f"{link} healed")
        elif step.action == "loss":
            self.progress(f"fault: {a['percent']:g}% of control messages lost at every node")
            if self._loss is None:
                self._loss = faults.ControlLoss(self.lab, [n for n, p in self.plan.nodes.items()
                                                           if p.config])
            self._loss.set(a["percent"])
            if a["percent"]:
                self.settle.fault("loss", f"{a['percent']:g}% control loss")
            else:
                self.settle.recovered("loss", "control loss stopped")
        else:
            self._check(a)

    def _attach(self, mn: str, to: str, overlap: float | None = None) -> None:
        st = self.mns[mn]
        old = st.router
        keep = overlap is not None and old is not None
        self.progress(f"{mn}: {'move ' + old + ' -> ' if old else 'attach at '}{to}")
        host_based = self.sc.nodes[mn].agent
        # Host-based (Fig 2a/2b): the network does nothing for the kept
        # prefixes; the MN's own agent claims them (below).  Network-based:
        # the routers keep them (recorded to report; the RS names nothing).
        previous = () if host_based else tuple(st.continuity)
        if (to, mn) in self._down:
            # Back to a router it left: that router's radio is on again
            # before the MN leaves the one it is at - an access point does
            # not power up as a station arrives - so the kernel's carrier
            # delay (linkwatch: up to 1.3 s seen under CPU load) is not
            # part of the move.  The MN's end stays out of its bridge
            # until it gets there: the router hears nothing from it before.
            self._close_radio_break(to, mn)
            self._nl(to).set_link(self._index(to, mn), up=True)
            self._down.discard((to, mn))
            # Both ends: the MN's end gets its carrier a moment after the
            # router's, and a bridge port without carrier forwards nothing
            # (an RS sent through it then is lost: measured, 1 in ~50
            # returns, the MN found 200-600 ms later by its MLD report).
            self._wait_running(to, mn)
            self._wait_running(mn, f"r-{to}")
        # Link operations go over netlink sockets kept open in the
        # namespaces: spawning ``ip`` for each would put tens of ms of
        # emulator overhead into the handover being measured.
        t_left = None
        if keep:
            assert old is not None
            self._listen_only(mn, old)  # make-before-break: the old radio stays up
        elif old is not None:
            # The MN leaves the old router: its L2 announces the link going
            # down (a disassociation; RFC 5184's Link Going Down), and the
            # node holds the MN's prefixes (FM:6-1); then the link goes.
            # (Without the trigger the node detaches on the link event, and
            # its standby hold routes catch what follows; what the kernel
            # had already sent into the dying link is lost, as on a radio.)
            if self.l2_trigger:
                hint: dict[str, Any] = {"cmd": "link_going_down", "link": mn}
                target = agent_name(self.plan, to)
                if self.predictive and target is not None:
                    # The router the L2 names (a station's BSS transition
                    # target), by its agent's node id.
                    hint["target"] = target
                command(self._sock(old), hint)
            # What the router had sent into the radio as it went is lost
            # there: counted from here (see _RadioBreak).
            self._radio[(old, mn)] = _RadioBreak(
                len(self.moves), self._nl(old).link_tx_dropped(self._index(old, mn)),
                self._nl(mn).link_rx_otherhost_dropped(self._index(mn, f"r-{old}")))
            t_left = time.monotonic()
            self._nl(old).set_link(self._index(old, mn), up=False)
            self._down.add((old, mn))
            self._nl(mn).set_master(self._index(mn, f"r-{old}"), 0)
        # Every access router shows the same gateway (one MAC, so one
        # link-local address): the MN's neighbour entry stays right across
        # moves.  The radio moves; the MN's stack solicits and announces
        # its addresses as it comes up (see _solicit), the router hears it
        # and advertises, and the stack configures its addresses (SLAAC).
        ra = self._ra_socket(mn)
        try:
            self._nl(mn).set_master(self._index(mn, f"r-{to}"), self._index(mn, "br0"))
            t_attach = time.monotonic()
            own = self._solicit(mn, ra)
        finally:
            ra.close()
        st.router = to
        fresh = [p for p in own if p not in st.prefixes]
        st.prefixes.extend(fresh)
        st.addresses.update(self._autoconfigured(mn, own))
        # (A stock host with ndisc_notify=1 announces its addresses as its
        # carrier comes up, on its own kernel at once: see _solicit.)
        self._announce(mn, list(st.addresses.values()))
        anchor = self.sc.nodes[to].anchor
        moves = anchor is not None and anchor.mode in ("switch", "bgp")
        # Draft 4.2.1: the new router holds the MN's new prefixes, and those
        # whose anchoring moved to it, as delegations.
        self._delegated(to, [*(st.continuity if moves else ()), *fresh], t_attach)
        # (A host-based MN's own agent sees the new prefix and claims its
        # prefixes itself: nothing to tell it.)
        held = [f"{a.address} ({'deprecated' if a.deprecated else 'preferred'})"
                for a in self._nl(mn).addresses(self._index(mn, "br0")) if a.scope == 0]
        self.progress(f"{mn}: its stack holds {', '.join(held)}")
        self.moves.append(MoveRecord(mn, old, to, t_attach, [str(p) for p in previous],
                                     [str(p) for p in fresh], addresses=held, left=t_left))

    def _listen_only(self, mn: str, old: str) -> None:
        """Make-before-break: the MN's old radio stays associated, and only
        listens, while the new one attaches.  What the old router delivers
        still arrives (the radio stays a port of the MN's bridge); the MN
        sends on its new radio only - nft drops its frames to the old one
        (else the old router would hear it still, and take a solicitation
        there for a return); the bridge passes nothing from the old radio
        on to the new one (no frame of one router's link reaches the
        other's); and the old port does not teach it where the gateway is
        (every router shows the same MAC)."""
        port = f"r-{old}"
        self.lab.run(mn, "nft", (
            f"add table bridge {MBB_TABLE}; "
            f"add chain bridge {MBB_TABLE} out {{ type filter hook postrouting priority 0; }}; "
            f"add rule bridge {MBB_TABLE} out oifname {port} drop; "
            f"add chain bridge {MBB_TABLE} onward {{ type filter hook forward priority 0; }}; "
            f"add rule bridge {MBB_TABLE} onward iifname {port} drop"))
        self.lab.run(mn, "bridge", "link", "set", "dev", port, "learning", "off")
        self._kept[mn] = old

    def _leave(self, mn: str) -> None:
        """The end of a make-before-break move's overlap: the old radio goes
        (its L2 announces it first, as any departure; the router should
        have nothing left to hold for the MN)."""
        old = self._kept.pop(mn)
        self.progress(f"{mn}: its radio on {old} goes (make-before-break)")
        if self.l2_trigger:
            command(self._sock(old), {"cmd": "link_going_down", "link": mn})
        move = max(i for i, m in enumerate(self.moves) if m.mn == mn)
        self._radio[(old, mn)] = _RadioBreak(
            move, self._nl(old).link_tx_dropped(self._index(old, mn)),
            self._nl(mn).link_rx_otherhost_dropped(self._index(mn, f"r-{old}")))
        self._nl(old).set_link(self._index(old, mn), up=False)
        self._down.add((old, mn))
        # (Out of the bridge, the port's flags go with it: a port is made anew.)
        self._nl(mn).set_master(self._index(mn, f"r-{old}"), 0)
        self.lab.run(mn, "nft", f"delete table bridge {MBB_TABLE}")

    def _wait_running(self, node: str, link: str) -> None:
        """Wait for a link set up to carry traffic (its carrier comes up
        asynchronously), over the kept netlink socket: a process per check
        (``lab.wait_up``) put ~5 ms of the emulator into every return's
        measured interruption."""
        deadline = time.monotonic() + 5.0
        index = self._index(node, link)
        while not self._nl(node).link_running(index):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node}/{link} has no carrier after 5 s")
            time.sleep(0.0002)

    def _close_radio_break(self, router: str, mn: str) -> None:
        """Charge the drops on a downed access link to the move that downed it.

        Closed when the link comes up again (a return: later drops belong
        to the next departure) or at the report."""
        brk = self._radio.pop((router, mn), None)
        if brk is None:
            return
        dropped = (self._nl(router).link_tx_dropped(self._index(router, mn)) - brk.tx_dropped
                   + self._nl(mn).link_rx_otherhost_dropped(self._index(mn, f"r-{router}"))
                   - brk.rx_otherhost)
        self.moves[brk.move] = replace(self.moves[brk.move], radio_drops=dropped)

    def _mac(self, mn: str) -> bytes:
        """The MN's link-layer address, as frames carry it."""
        return bytes.fromhex(mn_link_address(self.sc, mn).replace(":", ""))

    def _nl(self, node: str) -> Netlink:
        """A netlink socket in ``node``'s namespace (kept for the run)."""
        if node not in self._netlinks:
            self._netlinks[node] = Netlink(self.lab.ns(node))
        return self._netlinks[node]

    def _index(self, node: str, ifname: str) -> int:
        key = (node, ifname)
        if key not in self._ifindex:
            self._ifindex[key] = self._nl(node).ifindex(ifname)
        return self._ifindex[key]

    def _ra_socket(self, mn: str) -> socket.socket:
        """A socket in the MN's namespace hearing the RAs on its bridge."""
        sock = open_in_netns(self.lab.ns(mn), socket.AF_INET6, socket.SOCK_RAW,
                             socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"br0")
            blocked = [0xFFFFFFFF] * 8  # ICMP6_FILTER: receive RAs only
            blocked[ROUTER_ADVERTISEMENT >> 5] &= ~(1 << (ROUTER_ADVERTISEMENT & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, 1, struct.pack("=8I", *blocked))
        except OSError:
            sock.close()
            raise
        return sock

    def _solicit(self, mn: str, sock: socket.socket) -> list[Prefix]:
        """The MN's stack solicits (a stock RS, naming nothing); returns the
        preferred prefixes of the first RA that comes back.

        On its own kernel an MN with ``router_solicitation_delay=0`` and
        no DAD sends its MLD report and RS as soon as the radio's carrier
        comes up.  Here every namespace shares one kernel, whose carrier
        events are rate-limited to about one a second across all of them
        (linkwatch): with the old router's link just gone down, the MN's
        stack would hear of its new carrier up to a second late.  So the
        runner sends the RS the stack would send, at once.
        """
        index = self._index(mn, "br0")
        rs = encode_rs(RouterSolicitation((), self._mac(mn)))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        deadline = time.monotonic() + 3.0
        sent = False
        while (left := deadline - time.monotonic()) > 0:
            if not sent:
                try:
                    sock.sendto(rs, ("ff02::2", 0, 0, index))
                    sent = True
                except OSError as exc:
                    # The bridge just got its carrier: its link-local address
                    # (the RS's source) and multicast route appear a moment
                    # later.
                    if exc.errno not in (errno.EADDRNOTAVAIL, errno.ENETUNREACH):
                        raise
                    time.sleep(0.002)
                    continue
            sock.settimeout(min(left, RESOLICIT))
            try:
                data = sock.recv(1500)
            except TimeoutError:
                sent = False  # solicit again
                continue
            with contextlib.suppress(ValueError):
                ra = decode_ra(data)
                preferred = [p.prefix for p in ra.prefixes if p.preferred > 0]
                if preferred:
                    return preferred
        raise RuntimeError(f"{mn}: no router advertisement after soliciting")

    def _stack_addresses(self, mn: str) -> list[HostAddress]:
        """The MN's global addresses as its stack holds them, oldest first."""
        held = [a for a in self._nl(mn).addresses(self._index(mn, "br0")) if a.scope == 0]
        # (The kernel lists a link's addresses newest first.)
        return [HostAddress(a.address, not a.deprecated, 0xFFFFFFFF, age)
                for age, a in enumerate(reversed(held))]

    def _autoconfigured(self, mn: str, prefixes: list[Prefix]) -> dict[Prefix, str]:
        """Wait until the MN's stack has an address in each of ``prefixes``
        (SLAAC, RFC 4862); returns them."""
        nl, index = self._nl(mn), self._index(mn, "br0")
        deadline = time.monotonic() + 3.0
        while True:
            have = {p: str(a.address) for a in nl.addresses(index)
                    for p in prefixes if p.covers(Prefix.host(a.address)) and not a.tentative}
            if len(have) == len(prefixes):
                return have
            if time.monotonic() > deadline:
                missing = [str(p) for p in prefixes if p not in have]
                raise RuntimeError(f"{mn}: no address configured in {', '.join(missing)}")
            time.sleep(0.002)

    def _announce(self, mn: str, addresses: list[str]) -> None:
        """The MN's unsolicited NAs for its addresses on its new link."""
        sock = open_in_netns(self.lab.ns(mn), socket.AF_INET6, socket.SOCK_RAW,
                             socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"br0")
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            index = self._index(mn, "br0")
            for addr in addresses:
                sock.sendto(encode_unsolicited_na(IPv6Address(addr), self._mac(mn)),
                            ("ff02::1", 0, 0, index))
        finally:
            sock.close()

    def _delegated(self, router: str, prefixes: list[Prefix], since: float) -> None:
        """Check that Kea delegated ``prefixes`` to ``router`` (its node's PD
        client asks; the previous router may take a moment to release);
        ``since``: the attach (monotonic), to report how long it took."""
        anchor = self.sc.nodes[router].anchor
        if self.kea is None or anchor is None or not anchor.pd:
            return
        want = pd_duid(self.plan.nodes[router].anchor_index)
        for p in prefixes:
            deadline = time.monotonic() + 3.0
            holder = self._lease_holder(p)
            while holder != want and time.monotonic() < deadline:
                time.sleep(0.002)
                holder = self._lease_holder(p)
            if holder == want:
                self.progress(f"{p} delegated to {router} "
                              f"{(time.monotonic() - since) * 1e3:.0f} ms after the attach")
            self.checks[f"{p} delegated to {router} by Kea (DHCPv6-PD)"] = holder == want

    def _lease_holder(self, prefix: Prefix) -> bytes | None:
        """The DUID Kea's lease of ``prefix`` names (None: not leased)."""
        assert self.kea is not None
        answer = self.kea.command("lease6-get", {"ip-address": str(prefix.address),
                                                 "type": "IA_PD"})
        lease = answer.get("arguments")
        if answer.get("result") != 0 or not isinstance(lease, dict):
            return None
        return bytes.fromhex(str(lease.get("duid", "")).replace(":", ""))

    def _flow_json(self, name: str) -> dict[str, Any]:
        f = self.flows[name]
        spec = self.sc.flows[name]
        src = self.plan.nodes[spec.src].control
        sport, dport = (f.runner.port, 0) if isinstance(f.runner, TcpStream) else \
            (f.runner.port, 40000 + list(self.flows).index(name))
        return {"src": f"{f.address}/128", "dst": f"{src}/128",
                "proto": 6 if spec.kind == "tcp" else 17, "sport": sport, "dport": dport}

    def _start_flow(self, name: str) -> None:
        spec = self.sc.flows[name]
        st = self.mns[spec.dst]
        if not st.prefixes or st.router is None:
            raise RuntimeError(f"flow {name}: {spec.dst} is not attached")
        # The address a new session takes (RFC 8653 on-demand semantics,
        # dmanchor.mn.ondemand): the newest preferred one of the MN's stack.
        chosen = choose(self._stack_addresses(spec.dst), AddressKind.NONPERSISTENT)
        prefix = next((p for p in st.prefixes if p.covers(Prefix.host(chosen))), None)
        if prefix is None:
            raise RuntimeError(f"flow {name}: {spec.dst}'s stack chose {chosen}, in no prefix "
                               "a router gave it")
        address = str(chosen)
        self._port += 1
        runner: UdpProbe | TcpStream
        if spec.kind == "udp":
            runner = UdpProbe(self.lab, spec.src, spec.dst, address, self._port, spec.rate,
                              spec.duration, sport=40000 + len(self.flows))
        else:
            runner = TcpStream(self.lab, spec.src, spec.dst, address, self._port, spec.duration)
        self.flows[name] = _Flow(name, prefix, address, runner, time.monotonic())
        self.progress(f"flow {name}: {spec.kind} {spec.src} -> {address}"
                      + (f" at {spec.rate:.0f} pps" if spec.kind == "udp" else "")
                      + (" (needs continuity)" if spec.continuity else ""))
        if spec.continuity:
            # (Recorded for the report; the routers learn the flow from
            # their connection tracking as its packets pass.)
            st.continuity.setdefault(prefix, []).append(name)
        runner.start()

    def _close(self, names: list[str]) -> None:
        """The flows end for real (a TCP FIN, a UDP sender falling silent):
        the routers see it in their connection tracking (FM:3-3)."""
        for name in names:
            f = self.flows[name]
            st = self.mns[self.sc.flows[name].dst]
            f.runner.stop()
            users = st.continuity.get(f.prefix, [])
            if name in users:
                users.remove(name)
            if not users and f.prefix in st.continuity:
                del st.continuity[f.prefix]
            self.progress(f"flow {name} closed")

    # -- Report -------------------------------------------------------------------------

    def _report(self) -> Report:
        signalling: dict[str, dict[str, int]] = {}
        security: Counter[str] = Counter()
        sm_drops = {d.value for d in Drop}
        for name, np in self.plan.nodes.items():
            if not np.config or self.procs.procs[name].poll() is not None:
                continue
            for fn in command(self._sock(name), {"cmd": "stats"}).values():
                for t, n in fn.get("sent", {}).items():
                    row = signalling.setdefault(t, {"messages": 0, "bytes": 0})
                    row["messages"] += n
                    row["bytes"] += fn.get("bytes_sent", {}).get(t, 0)
                security.update({f"{name} {k}": n for k, n in fn.get("drops", {}).items()
                                 if k in sm_drops})
                security.update({f"{name} {k}": n for k, n in fn.get("refused", {}).items()})
        results = []
        for name, f in self.flows.items():
            spec = self.sc.flows[name]
            st = self.mns[spec.dst]
            charged = None
            if spec.continuity and spec.kind == "udp" and st.router is not None \
                    and not self.sc.nodes[spec.dst].agent:
                usage = command(self._sock(st.router), {"cmd": "usage",
                                                        "flows": [self._flow_json(name)]})
                charged = int(usage[0]["packets_down"])
            results.append(FlowResult.measure(spec, f.address, str(f.prefix), f.runner,
                                              self._stretch(name), charged))
        for router, mn in list(self._radio):
            self._close_radio_break(router, mn)
        report = build_report(self.sc, results, self.moves, signalling, self.checks,
                              unannounced=not self.l2_trigger, security=dict(security))
        report.faults = [rec.as_json() for rec in self.settle.finish()]
        report.final_at = time.monotonic() - self._t0
        report.final = self._final()
        arrivals: dict[str, list[float]] = {}
        for name, f in self.flows.items():
            arrivals.setdefault(self.sc.flows[name].dst, []).extend(
                t for _, t in f.runner.arrivals)
        records = callflow.traces(self.workdir)
        # FM:3-2 fallbacks: the controller's (4.2.1) and the routers' own (BGP).
        report.tunnelled = [{k: r[k] for k in ("prefix", "dpa", "reason", "anchor") if k in r}
                            for r in records if r.get("event") == "tunnelled"
                            and r.get("fn") in ("controller", "anchor")]
        report.breakdown = breakdown.compute(
            records, [asdict(m) for m in self.moves],
            {mn: sorted(ts) for mn, ts in arrivals.items()})
        if report.breakdown:
            report.summary["phases_p50_ms"] = breakdown.medians(report.breakdown)
        (self.workdir / "report.json").write_text(json.dumps(report.as_json(), indent=2))
        (self.workdir / "nodes.json").write_text(json.dumps(self.plan.names(), indent=1))
        plots.save_arrivals(self.workdir, {
            name: {"kind": self.sc.flows[name].kind, "mn": self.sc.flows[name].dst,
                   "times": [t for _, t in f.runner.arrivals],
                   **({"bytes": [b for b, _ in f.runner.arrivals]}
                      if isinstance(f.runner, TcpStream) else {})}
            for name, f in self.flows.items()}, [asdict(m) for m in self.moves])
        try:
            callflow.write(self.workdir)
        except (OSError, ValueError, KeyError) as exc:  # a diagram never fails a run
            self.progress(f"call-flow diagrams not drawn: {exc}")
        return report

    def _final(self) -> dict[str, list[str]]:
        """What the kernels hold for MN prefixes as the run ends."""
        networks = [s.anchor.prefix for s in self.sc.anchors()
                    if s.anchor is not None and s.anchor.prefix is not None]
        entries = {}
        for node, spec in self.sc.nodes.items():
            if (spec.anchor is not None or spec.fmdp) and \
                    self.procs.procs[node].poll() is None:
                entries[node] = [entry_from_json(e)
                                 for e in command(self._sock(node), {"cmd": "entries"})]
        return mobile_state(entries, networks)

    def _home_of(self, prefix: Prefix) -> str | None:
        """The anchor whose network ``prefix`` belongs to."""
        return next((s.name for s in self.sc.anchors() if s.anchor is not None
                     and s.anchor.prefix is not None and s.anchor.prefix.covers(prefix)), None)

    def _stretch(self, name: str) -> float:
        """Hops via the anchoring over the shortest path, for this flow at the end."""
        spec = self.sc.flows[name]
        f = self.flows[name]
        st = self.mns[spec.dst]
        here = st.router
        home = self._home_of(f.prefix)
        if here is None or home is None or home == here:
            return 1.0
        serving = self.sc.nodes[here].anchor
        if serving is not None and serving.parent is not None:
            # Under an AR: its own AR's tunnel is on the shortest path (4.2.2),
            # or the anchoring moved to that AR (4.2.3).
            return 1.0
        mode = serving.mode if serving is not None else "tunnel"
        direct = self.plan.hops.get((spec.src, here), 0)
        if mode != "tunnel" or not spec.continuity or direct == 0:
            return 1.0
        via = self.plan.hops[(spec.src, home)] + self.plan.hops[(home, here)]
        return round(via / direct, 2)

