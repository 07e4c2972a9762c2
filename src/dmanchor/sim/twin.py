"""A scenario's twin in virtual time: ``dmanchor sim SCENARIO``.

The same scenario file as ``dmanchor run``, played with the same cores the
nodes run - built from the very node configs the emulator writes
(:func:`~dmanchor.scenario.plan.make_plan`) - on memory data planes in a
:class:`~.fabric.Fabric` wired like the scenario's namespaces: the plan's
links and static routes.  What a node's I/O would do is modelled:

* the access layer: the old router's link goes (``detach``; with
  ``predictive``, its L2 named the new router first: ``leaving``), the MN
  comes up on the new one and solicits (``heard``: the router gives it a /64 of
  its pool and asks the LMs for the rest, as for a stock host);
* connection tracking: a router that forwards a flow's plain (or
  decapsulated) packet for the first time reports it NEW; one idle past
  the nodes' UDP timeout is reported gone, a TCP flow closed as closing,
  then over (ctnetlink's updates of its state);
* traffic: every flow of the timeline is a paced stream through the fabric
  (TCP as a stream of segments, no congestion control);
* BGP routers (BIRD in the emulator): :class:`~.bgp.BgpModel`, each
  router forwarding an anchor's announcements along its static routes;
* Kea and the routers' DHCPv6-PD clients: :class:`~.pd.PdServer` (also
  the controller's ``lease6-update``);
* the charging counters, read by the sweep when a flow needs them (a kept
  prefix's flows end by them, as on the nodes);
* a node killed (``kill -9``: its cores go, its kernel forwards on; an
  access router's hold device goes with its process, and what it held)
  and restarted (after :data:`STARTUP`, with what a node keeps: its
  kernel's state - forwarding, connection tracking, charging - the LMs's
  store, the controller's state file); a restarted access router asks its
  links who is there and reads its kernel's connections, as a node does
  at start;
* the harness's steps of one instant run in turn, a move's until the new
  router answered the MN (a kill "at the move" comes after that);
* a control node's own link cut and healed: the control messages whose
  path crosses it are lost;
* control-message loss: each lost with the scenario's chance, drawn from
  the twin's seeded generator (:func:`end_state_only`: not the kernel
  run's draws, so only the end state compares).

* a host-based MN (Fig 2a/2b): its agent (:class:`~dmanchor.fm.mn_agent.MnAgentCore`)
  sees its stack's addresses change, signals from its newest address, and
  ends its anchors' tunnels at its care-of SID; its routers' charging
  tables count its signalling's UDP flows as any other.

Not modelled (such a scenario is refused with the reason): a cut of a
link flows may cross.

What it did (:class:`~.runs.TwinRun`), and how it is compared with the
kernel runs: :mod:`.runs`.
"""

from __future__ import annotations

import tempfile
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv6Address
from itertools import pairwise
from pathlib import Path
from typing import Any

from ..access.alloc import PrefixAllocator
from ..dataplane.api import FlowUsage
from ..dataplane.conntrack import Change, Conn, ConnEvent, TcpState
from ..dataplane.memory import Packet
from ..fm.anchor import AnchorAgentCore
from ..fm.controller import ControllerCore
from ..fm.controller_lease import MoveLease
from ..fm.fib import DesiredFib
from ..fm.flows import flow_of
from ..fm.fmdp import FmDpCore
from ..fm.mn_agent import CARE_OF_LIFETIME, MnAgentCore
from ..lm.daemon import build_core
from ..lm.store import Store
from ..nodeconf import NodeConfig, load_node_config
from ..runtime.virtual import LinkProfile, VirtualNetwork
from ..scenario.attacks import forge
from ..scenario.converge import mobile_state
from ..scenario.model import Scenario
from ..scenario.plan import Plan, agent_name, filled, make_plan, mn_link_address
from ..transport.reliable import Addr, Endpoint
from ..transport.service import ServiceCore
from ..wire.auth import Drop, Security
from ..wire.codec import decode
from ..wire.errors import WireError
from ..wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix
from .bgp import BgpModel
from .fabric import Fabric, HostSpec, LinkSpec, RouterSpec, TopologySpec
from .pd import PdServer, drain
from .runs import Move, Sent, TwinRun
from .traffic import Flow, report, start_flow

LINK_DELAY = 0.0001
"""One-way delay of a link between two namespaces (a veth pair), seconds."""
RADIO_GAP = 0.0015
"""Seconds from the old link's loss to the MN's solicitation at the new
router (the emulator's measured radio phase, p50)."""
KEA_CONTROL = 0.003
"""Seconds a ``lease6-update`` through Kea's control channel takes."""
CUT = LinkProfile(loss=1.0)
"""What a path across a cut link does to a datagram."""
STARTUP = 0.3
"""Seconds a restarted node process takes to serve (Python's start, its
cores built, its sockets bound: ~0.3 s measured on the emulator's nodes)."""
EVERYTHING = Prefix(0, 0)


class Unsupported(ValueError):
    """The scenario uses something the twin does not model."""


def unsupported(sc: Scenario) -> str | None:
    """Why ``sc`` cannot run in virtual time (None: it can)."""
    for step in sc.timeline:
        if step.action == "cut" and not _control_only(sc, step.args["a"], step.args["b"]):
            return (f"the cut of {step.args['a']}-{step.args['b']}: a link that may carry "
                    "the flows (only a control node's own link is modelled)")
    return None


def iid(mac: str) -> int:
    """The modified EUI-64 interface identifier of a MAC (RFC 4291 App. A)."""
    b = bytes.fromhex(mac.replace(":", ""))
    return int.from_bytes(bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:6], "big")


@dataclass(slots=True)
class _Mn:
    name: str
    mac: str
    router: str | None = None
    prefixes: list[Prefix] = field(default_factory=list)
    left: float = 0.0  # when it last left a router
    agent: MnAgentCore | None = None  # a host-based MN's own (Fig 2a/2b)
    port: int = 0  # its agent's
    at: Addr | None = None  # where its agent signals from: its newest address
    sid: int | None = None  # its care-of SID
    kept: str | None = None  # the router its old radio still hears (make-before-break)


@dataclass(slots=True)
class _Conntrack:
    """One router's connection table: flow -> last packet time."""

    seen: dict[Conn, float] = field(default_factory=dict)
    closed: set[Conn] = field(default_factory=set)


class Twin:
    """A scenario built in virtual time (see the module)."""

    def __init__(self, sc: Scenario, seed: int = 1, predictive: bool = False) -> None:
        """``predictive``: each move's L2 hint names the new router (as
        ``dmanchor run --predictive``): the old one sends it a HI first."""
        why = unsupported(sc)
        if why is not None:
            raise Unsupported(f"{sc.name}: {why}")
        self.sc = sc
        self.predictive = predictive
        # Signed, as on the kernels, when someone forges: what the nodes
        # drop or refuse is then compared too.  (Else unsigned: faster.)
        self.signed = any(step.action == "attack" for step in sc.timeline)
        self.plan = make_plan(sc, signed=self.signed)
        self.net = VirtualNetwork(seed=seed)
        self.fab = Fabric(_topology(self.plan), self.net)
        self.names = self.plan.names()
        self.run = TwinRun(sc.name)
        self.anchors: dict[str, AnchorAgentCore] = {}
        self._addr_of: dict[str, Addr] = {}
        self._alloc: dict[str, PrefixAllocator] = {}
        self._udp_idle: dict[str, float] = {}
        self._conntrack: dict[str, _Conntrack] = {}
        self.mns = {m: _Mn(m, mn_link_address(sc, m)) for m in sc.of_kind("mn")}
        self._mn_at: dict[str, str] = {}  # an MN agent's addresses -> the MN
        self._flows: dict[str, Flow] = {}
        self._closes: dict[str, float] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="dmanchor-twin-")
        self._configs: dict[str, NodeConfig] = {}
        self._listens: dict[str, list[Addr]] = {}  # node -> its cores' addresses
        self._cores: dict[str, list[ServiceCore]] = {}  # node -> its (last started) cores
        self._stores: dict[str, Store] = {}  # an LMs's bindings (they outlive it)
        self._controllers: dict[str, ControllerCore] = {}  # (its state file: the last one's)
        self._cuts: set[frozenset[str]] = set()  # links cut (node pairs)
        self._loss = LinkProfile(loss=0.0)  # every control message's chance of loss
        self._paths: dict[tuple[str, str], list[str]] = {}  # (from, to) -> nodes on the way
        self.bgp = _bgp(self.plan, self.fab)
        self.pd = PdServer(self.net, lease_cmds=any(n.lease_cmds for n in sc.nodes.values()))
        """Kea and the routers' PD clients (a router without one asks nothing)."""
        for name, np in self.plan.nodes.items():
            if np.config and np.spec.kind != "mn":
                self._place(name, self._config(name, np.config))
            elif np.config:
                mn = self._config(name, np.config).mn
                assert mn is not None  # (an MN's config is its agent's)
                self.mns[name].agent = MnAgentCore(mn[1], Endpoint())
                self.mns[name].port = mn[0][1]
        self.net.sent_taps.append(self._tap)  # (sent, as the nodes' traces say, lost or not)
        if any(st.agent for st in self.mns.values()):
            self.net.taps.append(self._charge_signalling)
        self.fab.observers.append(self._forwarded)

    # -- Building ------------------------------------------------------------------------

    def _config(self, name: str, text: str) -> NodeConfig:
        d = Path(self._tmp.name)
        path = d / f"{name}.toml"
        # (Bindings in memory; Kea's control socket is never opened: the
        # controller's lease moves go to the PD model, see _controller.)
        path.write_text(filled(text, name, d, kea_socket=d / "kea.sock", lms_state=False))
        return load_node_config(path)

    def _place(self, name: str, cfg: NodeConfig) -> None:
        """Start node ``name``'s cores - anew after a restart, from what a
        node keeps across one: its kernel's forwarding (the FIB is seeded
        from it), the LMs's store, the controller's state file, the
        prefixes its pool gave."""
        now = self.net.now
        self._configs[name] = cfg
        fib = DesiredFib(self.fab.routers[name]) if name in self.fab.routers else None
        at: list[Addr] = []
        sm = self._security(cfg)
        cores: list[ServiceCore] = []
        for lm in (cfg.lms, cfg.lmp):
            if lm is not None:
                core, store = build_core(lm, now, self._stores.get(name), sm)
                if store is not None:
                    self._stores[name] = store
                self.net.add(lm.listen, core)
                at.append(lm.listen)
                cores.append(core)
        if cfg.controller is not None:
            listen, settings = cfg.controller
            kept = self._controllers.get(name)
            ctrl = ControllerCore(settings, Endpoint(security=sm), now) if kept is None else \
                ControllerCore(settings, Endpoint(security=sm), now, restored=kept.moved,
                               registered=kept.registered, tunnelled=kept.tunnelled)
            self._controllers[name] = ctrl
            self.net.add(listen, ctrl, partial(self._controller, ctrl, listen))
            at.append(listen)
            cores.append(ctrl)
        if cfg.fmdp is not None and fib is not None:
            listen, fsettings = cfg.fmdp
            fmdp = FmDpCore(fsettings, fib, Endpoint(security=sm), now)
            self.net.add(listen, fmdp)
            cores.append(fmdp)
            at.append(listen)
        self._listens[name] = at
        self._cores[name] = cores
        if cfg.anchor is not None and fib is not None:
            listen, asettings = cfg.anchor
            agent = AnchorAgentCore(asettings, fib, Endpoint(security=sm), now)
            cores.append(agent)
            poll = partial(self.net.poll, listen)
            # Its PD client asks Kea for what it delegates (draft 4.2.1).
            take = self.pd.client(name, agent, poll) if cfg.pd is not None else None
            if cfg.bgp is not None and self.bgp is not None:
                # Draft 4.2 without a controller: its announcements reach
                # the routers, and it hears theirs from its peer.
                self.net.add(listen, agent, self.bgp.hook(agent, take))
                self.bgp.listen(self.names[str(cfg.bgp[0])], agent, poll)
            else:
                self.net.add(listen, agent, partial(drain, agent, take))
            self.anchors[name] = agent
            self._addr_of[name] = listen
            at.append(listen)
            if cfg.mn_pool is not None:
                self._alloc[name] = PrefixAllocator(cfg.mn_pool)
            self._udp_idle[name] = float(cfg.udp_idle or 30)
            self._conntrack.setdefault(name, _Conntrack())  # (the kernel's: it outlives the agent)
            self.net.call_later(cfg.flow_sweep, partial(self._sweep, name, agent, cfg.flow_sweep))

    def _security(self, cfg: NodeConfig) -> Security | None:
        """One SM state for all of a node's cores (as a node process keeps),
        on the virtual clock; None unsigned."""
        if not self.signed:
            return None
        s = cfg.security
        return Security(s.keys, send_key_id=s.send_key, require_auth=not s.insecure)

    def _forge(self, args: dict[str, object]) -> None:
        """An ``attack`` step: the forged datagram, from its host (no core
        of the twin's sends it), to the attacked node's function."""
        flow = self._flows[str(args["flow"])]
        forged = forge(self.plan, args, Prefix(flow.dst & ~((1 << 64) - 1), 64), self.net.now)
        self.net.inject((self.plan.nodes[str(args["from"])].control, 40000), forged.data,
                        forged.dest)

    def security(self) -> dict[str, int]:
        """What the nodes' cores dropped in SM or refused, by node and reason
        (:attr:`TwinRun.security`)."""
        sm = {d.value for d in Drop}
        out: Counter[str] = Counter()
        for name, cores in self._cores.items():
            if name not in self._listens:
                continue  # (killed, not restarted: as a kernel run reads no dead node)
            for core in cores:
                out.update({f"{name} {k}": n for k, n in core.endpoint.stats.drops.items()
                            if k in sm})
                out.update({f"{name} {k}": n for k, n in core.refused.items()})
        return dict(out)

    # -- Faults --------------------------------------------------------------------------

    def _cut(self, a: str, b: str, on: bool) -> None:
        """The link a-b cut (or healed): every control message whose path
        crosses it is lost (a control node's own link: no flow crosses it)."""
        if on:
            self._cuts.add(frozenset((a, b)))
        else:
            self._cuts.discard(frozenset((a, b)))
        self._faulty()

    def _lose(self, percent: float) -> None:
        """Each control message is lost with this chance (drawn from the
        twin's seeded generator), as the nodes' ``loss`` rules drop them."""
        self._loss = LinkProfile(self.net.default.delay, percent / 100)
        self._faulty()

    def _faulty(self) -> None:
        faulty = self._cuts or self._loss.loss
        self.net.profile_of = self._profile if faulty else None

    def _profile(self, src: str, dst: str) -> LinkProfile:
        u, v = self.names.get(src), self.names.get(dst)
        if u is None or v is None:
            return self.net.default
        if self._cuts:
            path = self._paths.get((u, v))
            if path is None:  # (each datagram during a cut asks: once per pair)
                path = self._paths[(u, v)] = _path(self.sc, u, v)
            if any(frozenset(hop) in self._cuts for hop in pairwise(path)):
                return CUT
        return self._loss if self._loss.loss else self.net.default

    def _kill(self, name: str) -> None:
        """``kill -9`` of node ``name``'s process: its cores are gone (what is
        sent to them is lost, and what its links and conntrack report); its
        kernel keeps forwarding - but an access router's hold device went
        with the process, and what it held."""
        for addr in self._listens.pop(name, ()):
            self.net.remove(addr)
        if name in self.anchors:
            self.fab.routers[name].lose_holds()

    def _restart(self, name: str) -> None:
        """The node process started again, with what it keeps (:meth:`_place`).
        An access router then asks its links who is there (every MN's MLD
        report, or its neighbour entry, is heard as it arrives), and reads
        its kernel's connections (:class:`~dmanchor.access.links.AccessLinks`,
        :class:`~dmanchor.access.flowwatch.FlowWatch` at start)."""
        self._place(name, self._configs[name])
        if name not in self.anchors:
            return
        for st in self.mns.values():
            if st.router == name:
                self._advertised(st, name)
                self._input(name, lambda a, now, st=st: a.heard(st.mac, st.name, (), (), False,
                                                                now))
        self._sweep(name, self.anchors[name], 0.0)

    # -- Inputs the nodes' I/O would give -----------------------------------------------

    def _input(self, router: str, fn: Any) -> None:
        if router not in self._listens:
            return  # its agent is down: the event is lost with it
        fn(self.anchors[router], self.net.now)
        self.net.poll(self._addr_of[router])

    def _attach(self, mn: str, to: str, overlap: float | None = None) -> None:
        st = self.mns[mn]
        old = st.router
        if overlap is not None and old is not None:
            # Make-before-break: the new radio comes up while the old one
            # stays, listening only, until the move's leave.
            st.kept = old
            self._arrive(st, to, old, keep=True)
            return
        if old is not None:
            st.left = self.net.now
            self.fab.detach(mn)
            target = agent_name(self.plan, to)
            if self.predictive and target is not None:
                self._input(old, lambda a, now: a.leaving(st.mac, target, now))
            self._input(old, lambda a, now: a.detach(st.mac, now))
        st.router = None
        self.net.call_later(RADIO_GAP if old is not None else 0.0,
                            lambda: self._arrive(st, to, old))

    def _arrive(self, st: _Mn, to: str, old: str | None, keep: bool = False) -> None:
        st.router = to
        self.fab.attach(st.name, to, st.name, keep=keep)
        self.run.moves.append(Move(st.name, old, to, self.net.now,
                                   None if old is None or keep else st.left))
        if to not in self._listens:
            return  # its agent is down: no RA (the restarted one finds the MN)
        given = self._advertised(st, to)
        self._input(to, lambda a, now: a.heard(st.mac, st.name, (given,), (), True, now))

    def _leave(self, mn: str) -> None:
        """A make-before-break move's old radio goes (its overlap is over)."""
        st = self.mns[mn]
        old, st.kept = st.kept, None
        if old is not None:
            self.fab.drop_link(mn, old, mn)
            self._input(old, lambda a, now: a.detach(st.mac, now))

    def _advertised(self, st: _Mn, to: str) -> Prefix:
        """Router ``to`` advertised the MN its /64: the MN's stack takes an
        address in it (SLAAC)."""
        given = self._alloc[to].get(st.mac)
        if given not in st.prefixes:
            st.prefixes.append(given)
            self.fab.add_address(st.name, given.network | iid(st.mac))
        if st.agent is not None:
            # It sees it after the router's answer (the RA) arrives.
            self.net.call_later(LINK_DELAY, partial(self._host_moved, st, st.agent, given))
        return given

    def _host_moved(self, st: _Mn, agent: MnAgentCore, given: Prefix) -> None:
        """A host-based MN's agent sees its stack's addresses change
        (:class:`~dmanchor.mn.host.HostMobility`): ``given``'s was advertised
        last; its sessions are the flows to it still open.  Moved, it ends
        its anchors' tunnels at a care-of SID of the network it is in, and
        signals from its address there."""
        now = self.net.now
        held = [(IPv6Address(p.network | iid(st.mac)), True) for p in st.prefixes if p != given]
        here = IPv6Address(given.network | iid(st.mac))
        in_use = {IPv6Address(f.dst) for f in self._flows.values()
                  if f.receiver == st.name and f.start <= now < f.stop}
        sid = agent.addresses([*held, (here, True)], in_use, now)
        if sid is not None or st.at is None:
            if st.at is not None:
                self.net.remove(st.at)
            st.at = (str(here), st.port)
            self._mn_at[str(here)] = st.name
            self.net.add(st.at, agent)
        if sid is not None:
            self.fab.add_sid(st.name, int(sid))
            old, st.sid = st.sid, int(sid)
            if old is not None and old != st.sid:
                # Up as long as the agent claims its prefix (what was in
                # flight to it follows the MN), unless it is back by then.
                self.net.call_later(CARE_OF_LIFETIME, partial(self._retire, st, old))
        agent.process(now)
        self.net.poll(st.at)

    def _charge_signalling(self, at: float, src: Addr, dst: Addr, data: bytes) -> None:
        """A host-based MN's agent signals over its link (``data`` delivered
        from ``src`` to ``dst``): the charging table of the router it is at
        counts those UDP flows like any other (FM:2 hands them on)."""
        for mn_at, peer, up in ((src, dst, True), (dst, src, False)):
            name = self._mn_at.get(mn_at[0])
            router = self.mns[name].router if name is not None else None
            if router is not None:
                size = len(data) + 48  # (the IPv6 and UDP headers: nft counts packets)
                flow = FlowFilter(Prefix.host(IPv6Address(mn_at[0])),
                                  Prefix.host(IPv6Address(peer[0])), 17, mn_at[1], peer[1])
                self.fab.routers[router].add_usage(
                    flow, FlowUsage(size, 0, 1, 0) if up else FlowUsage(0, size, 0, 1))

    def _retire(self, st: _Mn, sid: int) -> None:
        if sid != st.sid:
            self.fab.remove_sid(st.name, sid)

    def _start_flow(self, name: str) -> None:
        spec = self.sc.flows[name]
        st = self.mns[spec.dst]
        dst = st.prefixes[-1].network | iid(st.mac)  # its newest address
        src = self.plan.nodes[spec.src].control
        k = len(self._flows)
        tcp = spec.kind == "tcp"
        flow = Flow(name, spec.src, spec.dst, int(IPv6Address(src)), dst,
                    rate=1000.0 if tcp else spec.rate, start=self.net.now,
                    stop=self.net.now + spec.duration, proto=6 if tcp else 17,
                    sport=40000 + k, dport=5001 + k)
        flow = replace(flow, stop=min(flow.stop, self._closes.get(name, flow.stop)))
        self._flows[name] = flow
        start_flow(self.fab, flow)
        if tcp and name not in self._closes:
            # A stream that ends sends its FIN: conntrack sees it over at once.
            self.net.call_at(flow.stop, partial(self._close, [name]))

    def _close(self, names: Sequence[str]) -> None:
        for name in names:
            flow = self._flows[name]
            if flow.proto == 6:
                # FIN one way, then both: every router tracking it reports
                # it closing, then over (ctnetlink's updates of its TCP state;
                # a restarted agent that lost the flow learns it so).
                for router, ct in self._conntrack.items():
                    conn = _conn(flow)
                    if ct.seen.pop(conn, None) is not None:
                        ct.closed.add(conn)
                        self._input(router, lambda a, now, c=conn: a.conn_events(
                            [ConnEvent(Change.UPDATE, c, TcpState.FIN_WAIT),
                             ConnEvent(Change.UPDATE, c, TcpState.TIME_WAIT)], now))

    def _forwarded(self, router: str, p: Packet) -> None:
        """The fabric's observer: ``router`` forwarded a plain packet."""
        ct = self._conntrack.get(router)
        if ct is None or p.outer is not None or p.marker:
            return
        conn = Conn(IPv6Address(p.src), IPv6Address(p.dst), p.proto, p.sport, p.dport)
        if conn in ct.closed:
            return
        fresh = conn not in ct.seen
        ct.seen[conn] = self.net.now
        if fresh:
            found = flow_of(conn, self._mn_prefix)
            cfg = self._configs[router]
            if found is not None and (cfg.access_links if cfg.charged_links is None
                                      else cfg.charged_links):
                # The charging table (on a router with access links)
                # counts every flow it delivers to (or takes from) an MN
                # from its first packet, known to the agent or not (a
                # host-based MN's): the model counts the flows it is told
                # to track.
                self.fab.routers[router].track(found[0])
            self._input(router, lambda a, now: a.conn_events([ConnEvent(Change.NEW, conn)], now))

    def _mn_prefix(self, address: IPv6Address) -> Prefix | None:
        """The prefix of an MN's ``address`` is in (None: no MN's)."""
        for st in self.mns.values():
            for p in st.prefixes:
                if p.contains(address):
                    return p
        return None

    def _sweep(self, router: str, agent: AnchorAgentCore, every: float) -> None:
        """The agent's periodic read of its kernel's connections (and, when
        ``every``, the next one; none once it is not the router's agent)."""
        if self.anchors.get(router) is not agent or router not in self._listens:
            return
        ct = self._conntrack[router]
        idle = self._udp_idle[router]
        gone = [c for c, t in ct.seen.items() if c.proto == 17 and self.net.now - t > idle]
        for c in gone:
            del ct.seen[c]
        if gone:
            self._input(router, lambda a, now: a.conn_events(
                [ConnEvent(Change.GONE, c) for c in gone], now))
        # The charging counters, when some flow needs them (as the node's
        # sweep reads them): a kept prefix's flows end by them.
        dp = self.fab.routers[router]
        self._input(router, lambda a, now: a.conn_present(
            list(ct.seen), now, now, dp.charges(EVERYTHING) if a.flows.watched() else None))
        if every:
            self.net.call_later(every, partial(self._sweep, router, agent, every))

    def _controller(self, core: ControllerCore, listen: Addr) -> None:
        """The controller's events: a lease it moves through Kea
        (``lease6-update``, :class:`MoveLease`) is moved in the PD model,
        answered after a control round trip; the rest have no I/O here."""
        for ev in core.drain_events():
            if isinstance(ev, MoveLease):
                why = self.pd.move(ev.prefix, self.names.get(str(ev.dpa)))
                self.net.call_later(KEA_CONTROL, partial(self._lease_moved, core, listen, ev, why))

    def _lease_moved(self, core: ControllerCore, listen: Addr, ev: MoveLease,
                     why: str | None) -> None:
        core.lease_moved(ev.prefix, ev.dpa, why is None, why or "", self.net.now)
        self.net.poll(listen)

    def _tap(self, at: float, src: Addr, dst: Addr, data: bytes) -> None:
        try:
            kind = decode(data).message.TYPE.name
        except WireError:
            return
        self.run.sent.append(Sent(at, self.names.get(src[0], self._mn_at.get(src[0], src[0])),
                                  self.names.get(dst[0], dst[0]), kind))

    # -- Running -------------------------------------------------------------------------

    def play(self, settle: float | None = None, *, until: float | None = None) -> TwinRun:
        """Play the timeline, then ``settle`` seconds more (reverts, cleanups;
        default: the scenario's timeout for them) - or, given ``until``, up
        to that many seconds after the timeline's start (the moment a kernel
        run read its final state: :attr:`~dmanchor.scenario.report.Report.final_at`)."""
        end = 0.0
        t0 = self.net.now + 0.1
        for step in self.sc.timeline:
            if step.action == "close":
                # (Flows are scheduled whole: each stops at its close.)
                self._closes.update(dict.fromkeys(step.args["flows"], t0 + step.at))
        done: dict[float, float] = {}  # a move step's instant -> when the harness is done with it
        where: dict[str, bool] = {}  # MN -> attached somewhere yet
        for step in self.sc.timeline:
            # The harness runs the steps of one instant in turn, and a move
            # step lasts until the new router answered the MN (its RA): a
            # kill "at the move" finds the router has heard the MN.
            at = max(t0 + step.at, done.get(step.at, 0.0))
            a = step.args
            if step.action in ("attach", "move"):
                self.net.call_at(at, partial(self._attach, a["mn"], a["to"], a.get("overlap")))
                gap = RADIO_GAP if where.get(a["mn"]) and "overlap" not in a else 0.0
                where[a["mn"]] = True
                done[step.at] = at + gap + 2 * LINK_DELAY
            elif step.action == "leave":
                self.net.call_at(at, partial(self._leave, a["mn"]))
            elif step.action == "flow":
                self.net.call_at(at, partial(self._start_flow, a["flow"]))
                end = max(end, at + self.sc.flows[a["flow"]].duration)
            elif step.action == "close":
                self.net.call_at(at, partial(self._close, a["flows"]))
            elif step.action in ("cut", "heal"):
                self.net.call_at(at, partial(self._cut, a["a"], a["b"], step.action == "cut"))
            elif step.action == "loss":
                self.net.call_at(at, partial(self._lose, float(a["percent"])))
            elif step.action == "kill":
                self.net.call_at(at, partial(self._kill, a["node"]))
            elif step.action == "restart":
                self.net.call_at(at + STARTUP, partial(self._restart, a["node"]))
            elif step.action == "attack":
                self.net.call_at(at, partial(self._forge, a))
            end = max(end, at)
        self.net.run(until=t0 + until if until is not None else
                     end + (self.sc.timeout if settle is None else settle))
        self.run.flows = {n: report(self.fab, f) for n, f in self._flows.items()}
        networks = [s.anchor.prefix for s in self.sc.anchors()
                    if s.anchor is not None and s.anchor.prefix is not None]
        self.run.security = self.security()
        self.run.final = mobile_state({name: dp.entries() for name, dp in self.fab.routers.items()},
                                      networks)
        self._tmp.cleanup()
        return self.run


def _control_only(sc: Scenario, a: str, b: str) -> bool:
    """Whether the link a-b carries control messages only: one end is a
    leaf (its only link) that no flow starts or ends at."""
    ends = {n for f in sc.flows.values() for n in (f.src, f.dst)}
    degree = Counter(n for link in sc.links for n in (link.a, link.b))
    return any(degree[n] == 1 and n not in ends for n in (a, b))


def _path(sc: Scenario, u: str, v: str) -> list[str]:
    """The nodes from ``u`` to ``v`` by fewest hops (as the plan's static
    routes go), MNs' radios left out."""
    nbrs: dict[str, list[str]] = {}
    for link in sc.links:
        if sc.nodes[link.b].kind != "mn" and sc.nodes[link.a].kind != "mn":
            nbrs.setdefault(link.a, []).append(link.b)
            nbrs.setdefault(link.b, []).append(link.a)
    back: dict[str, str] = {u: u}
    todo = deque([u])
    while todo:
        n = todo.popleft()
        for m in sorted(nbrs.get(n, ())):
            if m not in back:
                back[m] = n
                todo.append(m)
    if v not in back:
        return []
    out = [v]
    while out[-1] != u:
        out.append(back[out[-1]])
    return out[::-1]


def _bgp(plan: Plan, fab: Fabric) -> BgpModel | None:
    """The scenario's BGP routers (BIRD in the emulator) as a
    :class:`~.bgp.BgpModel`: each forwards an anchor's announcements the way
    its static routes lead to that anchor's DPA.  None without any."""
    routers = [n for n, np in plan.nodes.items() if np.spec.bgp is not None]
    if not routers:
        return None
    dpas = [np.dpa for np in plan.nodes.values() if np.dpa is not None]
    hops = {r: {dpa: IPv6Address(nh) for p, nh in plan.nodes[r].routes for dpa in dpas
                if p.contains(int(dpa))} for r in routers}
    return BgpModel(fab, hops)


def _conn(flow: Flow) -> Conn:
    return Conn(IPv6Address(flow.src), IPv6Address(flow.dst), flow.proto, flow.sport,
                flow.dport)


def _topology(plan: Plan) -> TopologySpec:
    """The plan's namespaces as a fabric: routers with their addresses and
    static routes (anchors: a default route upstream), hosts, links."""
    routers, hosts, links = [], [], []
    for name, np in plan.nodes.items():
        addrs = [i.address.split("/")[0] for i in np.ifaces
                 if i.address and not i.address.startswith("fe80")]
        if np.spec.kind == "host":
            hosts.append(HostSpec(name, tuple(addrs), gateway=np.ifaces[0].peer))
            continue
        if np.spec.kind == "mn":
            hosts.append(HostSpec(name))
            continue
        if np.dpa is not None:
            addrs += [str(np.dpa), str(np.dpa + 1)]
        entries = [ForwardingEntry(EntryKind.ROUTE, p, IPv6Address(nh)) for p, nh in np.routes]
        if np.uplink:
            entries.append(ForwardingEntry(EntryKind.ROUTE, Prefix.parse("::/0"),
                                           IPv6Address(np.uplink)))
        routers.append(RouterSpec(name, tuple(addrs), tuple(entries)))
    for link in plan.scenario.links:
        if plan.scenario.nodes[link.b].kind != "mn":
            links.append(LinkSpec(link.a, link.b, LINK_DELAY))
    return TopologySpec(tuple(routers), tuple(hosts), tuple(links), access_delay=LINK_DELAY)
