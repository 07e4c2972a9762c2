"""``dmanchor sim``: many MNs moving over a generated network, in virtual time,
with the project's own cores - and a centralized baseline beside them.

Every access router runs the real anchor agent (4.1.2, tunnel mode) on a
memory data plane; one LMs and the controller (FM:4 registry) sit at the
core.  Their messages go through the real codec over a
:class:`~..runtime.virtual.VirtualNetwork` whose delay between two nodes is
their hop count times the link delay.  MNs walk between neighbouring
access routers (or follow a trace of (time, MN, router) rows).  An MN with a
session that outlives its moves (draft 4.1: not every flow needs mobility)
keeps its first prefix; its correspondent probes it, and each probe goes
hop by hop through the routers' forwarding state, so path stretch is
measured on the real tunnels.  Signalling is counted from the wire, except
the periodic refreshes no handover causes.

The centralized baseline (PMIPv6-like: every MN's prefix anchored at an
LMA at the core, tunnelled to the serving router) is computed over the
same topology and the same moves: its path goes through the core, and each
handover costs a proxy binding update and acknowledgement at the new MAG
and a deregistration pair at the old one.
"""

from __future__ import annotations

import csv
import gc
import random
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv6Address
from pathlib import Path

from ..dataplane.conntrack import Change, Conn, ConnEvent
from ..dataplane.memory import Packet
from ..fm.anchor import AnchorAgentCore
from ..fm.anchor_model import AnchorSettings, Mode
from ..fm.controller import ControllerCore, ControllerSettings
from ..lm.lms import LmsCore, LmsSettings
from ..runtime.virtual import LinkProfile, VirtualNetwork
from ..transport.reliable import Addr, Endpoint
from ..wire.codec import decode
from ..wire.errors import WireError
from ..wire.messages import BufferReady, MsgType
from ..wire.types import EntryKind, FlowFilter, Prefix
from .fabric import Fabric
from .graph import (
    CORE,
    CORE_ADDR,
    MAX_MNS,
    Network,
    ar_dpa,
    ar_net,
    cn_addr,
    geometric,
    grid,
    tree,
)

TOPOLOGIES: dict[str, Callable[..., Network]] = {"tree": tree, "grid": grid,
                                                 "geometric": geometric}
"""The generated topologies, by name (``dmanchor sim --topology``)."""
SEEDED = frozenset({"geometric"})
"""Topologies drawn at random (from the simulation's seed)."""
MOBILITY = ("walk", "waypoint")
"""Mobility models (``dmanchor sim --mobility``)."""
PERIODIC = frozenset({MsgType.ANCHOR_REGISTRATION, MsgType.REGISTRATION_REPLY,
                      MsgType.DATAPLANE_STATUS, MsgType.HEARTBEAT, MsgType.HEARTBEAT_ACK})
"""Message types no handover causes (refreshes, reports, keep-alives)."""
PMIP_MESSAGES = 4
"""Centralized handover: PBU + PBA at the new MAG, deregistration PBU + PBA
at the old one (RFC 5213)."""
PMIP_BYTES = 4 * 92
"""Their size on the wire: IPv6 header + mobility header with the MN
identifier, home network prefix, handoff and access type and timestamp
options (RFC 5213), about 92 bytes each."""
CTRL: Addr = (CORE_ADDR, 5400)
LMS: Addr = (CORE_ADDR, 5401)
PORT = 5400
GAP = 0.03
"""Seconds from leaving one access router to coming up on the next (L2)."""
START_SPACING = 0.0005
"""Seconds between two MNs' first attachments (their start is not a move)."""


def warmup_of(mns: int) -> float:
    """Virtual seconds until ``mns`` MNs have all attached (moves start then)."""
    return 0.5 + START_SPACING * mns


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulation (``dmanchor sim`` options)."""

    aggregations: int = 4
    """Aggregation routers under the core (a grid: its rows)."""
    access_per_aggregation: int = 4
    """Access routers under each aggregation router (a grid: its columns)."""
    topology: str = "tree"
    """``tree`` (core, aggregation, access), ``grid`` (access routers in a
    mesh, the core off its middle) or ``geometric`` (access routers placed
    at random, linked to those within reach; ``aggregations *
    access_per_aggregation`` of them): :data:`TOPOLOGIES`."""
    mobility: str = "walk"
    """``walk``: each move to a neighbouring router, at random; ``waypoint``:
    towards a router picked at random anywhere, hop by hop along a shortest
    path, then a new one (random waypoint over the network's graph)."""
    mns: int = 50
    """Mobile nodes."""
    duration: float = 30.0
    """Virtual seconds simulated."""
    dwell: float = 5.0
    """Mean seconds an MN stays at an access router (exponential)."""
    continuity: float = 0.5
    """Share of MNs with a session that outlives their moves."""
    probe_interval: float = 0.1
    """Seconds between probes of such a session."""
    cns: int = 1
    """Correspondents."""
    cn_at_edge: bool = False
    """Correspondents at access routers (local content) instead of the core."""
    delay: float = 0.001
    """One-way delay of each link, seconds."""
    seed: int = 1
    """Random seed: the same seed gives the same run."""
    trace: Path | None = None
    """CSV of (time, MN index, access router index) rows instead of the walk."""


@dataclass(slots=True)
class DesignReport:
    """One design's figures."""

    stretch_mean: float
    """Path length over the shortest, for the sessions kept across moves."""
    stretch_p99: float
    stretch_all_mean: float
    """Over every flow: a flow that starts after a move uses the MN's new
    prefix, direct in the distributed design (draft 4.1); through the LMA
    in the centralized one.  Weighted by the share of MNs with a kept
    session."""
    messages_per_handover: float
    bytes_per_handover: float
    latency_ms_p50: float
    """From the MN's arrival to its anchor sending down the new path."""
    latency_ms_p99: float
    tunnels_max: int
    """Most tunnel entries one router held at once (sampled each second)."""
    tunnels_mean: float
    """Mean tunnel entries per access router (sampled each second)."""


@dataclass(slots=True)
class SimReport:
    """What ``dmanchor sim`` prints (``--json``: this, as a dict)."""

    config: dict[str, object]
    handovers: int
    probes_sent: int
    probes_delivered: int
    distributed: DesignReport
    centralized: DesignReport
    wall_s: float
    wall_moves_s: float
    """Of ``wall_s``, the time after every MN had attached (what the
    handovers cost)."""
    events: int
    """Virtual-network events processed (messages, timers, packets)."""
    drops: dict[str, int] = field(default_factory=dict)
    """Probe drops by reason (in flight at a move, mostly)."""


@dataclass(slots=True)
class _Mn:
    index: int
    at: int  # access router index (from 1) it is on, 0 while between two
    home: int
    session: FlowFilter | None
    cn: int
    arrived: float = 0.0


class Simulation:
    """The network, its cores and its MNs; :meth:`run` plays it out."""

    def __init__(self, cfg: SimConfig) -> None:
        self.check(cfg)
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        drawn = {"seed": cfg.seed} if cfg.topology in SEEDED else {}
        self.network: Network = TOPOLOGIES[cfg.topology](
            cfg.aggregations, cfg.access_per_aggregation, cns=cfg.cns,
            cn_at_edge=cfg.cn_at_edge, delay=cfg.delay, **drawn)
        self.n = len(self.network.access)
        self.net = VirtualNetwork(seed=cfg.seed)
        self.net.profile_of = self._profile
        self.fab = Fabric(self.network.spec, self.net)
        self._router_of = {ar_dpa(i): ar for i, ar in enumerate(self.network.access, start=1)}
        self._router_of[CORE_ADDR] = CORE
        self.lms = LmsCore(LmsSettings("lms"), Endpoint())
        self.net.add(LMS, self.lms)
        self.net.add(CTRL, ControllerCore(ControllerSettings(), Endpoint()))
        self.ar: dict[int, AnchorAgentCore] = {}
        for i, name in enumerate(self.network.access, start=1):
            up = self.network.address[self.network.neighbours[name][0]]
            s = AnchorSettings(
                name, IPv6Address(ar_dpa(i)), IPv6Address(ar_dpa(i)), (ar_net(i),),
                uplink=IPv6Address(up), controller=CTRL, lms=LMS,
                mode=Mode.TUNNEL, status_interval=0,
                # Sessions last the whole run: no conntrack sweep ends them.
                flow_idle=cfg.duration + 3600)
            self.ar[i] = AnchorAgentCore(s, self.fab.routers[name], Endpoint())
            self.net.add((ar_dpa(i), PORT), self.ar[i])
        self._cn_addr = [int(IPv6Address(cn_addr(c))) for c in range(cfg.cns)]
        self.mns: list[_Mn] = []
        self.moves: list[tuple[float, int, int]] = []
        self.cycles = 0
        """Objects in reference cycles the run left (collected at its end)."""
        """The moves played, (time, MN, access router), in time order."""
        self.handovers = 0
        self.signalling: Counter[str] = Counter()  # "messages", "bytes"
        self.latency: list[float] = []
        self.central_latency: list[float] = []
        self.central_stretch: list[float] = []
        self.stretch: list[float] = []
        """Each kept session's probe: its path over the shortest (distributed)."""
        self.tunnels_at: dict[str, int] = {}
        """TUNNEL entries per access router at the last sample."""
        self.tunnel_samples: list[int] = []
        self.tunnel_max = 0
        self.probes_sent = 0
        self.wall_warmup = 0.0
        self._waiting: dict[Prefix, float] = {}  # home prefix -> its MN's arrival
        self.net.taps.append(self._tap)

    # -- Topology facts ----------------------------------------------------------------

    @staticmethod
    def check(cfg: SimConfig) -> None:
        """Raise ValueError for a config no simulation can run (cheap: the
        network is not built)."""
        if not 1 <= cfg.mns <= MAX_MNS:
            raise ValueError(f"1 to {MAX_MNS} MNs, not {cfg.mns}")
        if cfg.topology not in TOPOLOGIES:
            raise ValueError(f"topology {cfg.topology!r}: expected one of {', '.join(TOPOLOGIES)}")
        if cfg.duration <= 0 or cfg.dwell <= 0 or cfg.probe_interval <= 0:
            raise ValueError("duration, dwell and probe_interval must be above 0")
        if cfg.mobility not in MOBILITY:
            raise ValueError(f"mobility {cfg.mobility!r}: expected one of {', '.join(MOBILITY)}")
        if not 0 <= cfg.continuity <= 1:
            raise ValueError(f"continuity is a share (0 to 1), not {cfg.continuity}")

    def hops(self, a: str, b: str) -> int:
        """Router hops between routers ``a`` and ``b``."""
        return self.network.hops(a, b)

    def _profile(self, a: str, b: str) -> LinkProfile:
        ra, rb = self._router_of.get(a, CORE), self._router_of.get(b, CORE)
        return LinkProfile(delay=max(1, self.hops(ra, rb)) * self.cfg.delay)

    # -- The MNs -----------------------------------------------------------------------

    def _prefix(self, mn: int, ar: int) -> Prefix:
        return Prefix(ar_net(ar).network + ((mn + 1) << 64), 64)

    def _input(self, ar: int, fn: Callable[[AnchorAgentCore, float], None]) -> None:
        fn(self.ar[ar], self.net.now)
        self.net.poll((ar_dpa(ar), PORT))

    def _start(self, mn: _Mn) -> None:
        name, own = f"mn{mn.index}", self._prefix(mn.index, mn.home)
        self.fab.attach(name, self.network.access[mn.home - 1], f"m{mn.index}")
        self.fab.add_address(name, own.network + 0x10)
        self._input(mn.home, lambda a, now: a.attach(name, f"m{mn.index}", [own], {}, now))
        if mn.session is not None:
            conn = Conn(IPv6Address(cn_addr(mn.cn)), IPv6Address(own.network + 0x10), 17,
                        5001, 40000 + mn.index)
            self._input(mn.home, lambda a, now: a.conn_events(
                [ConnEvent(Change.NEW, conn)], now))
            self.net.call_later(self.cfg.probe_interval, lambda: self._probe(mn, 0))

    def _probe(self, mn: _Mn, seq: int) -> None:
        assert mn.session is not None
        dst = self._prefix(mn.index, mn.home).network + 0x10
        self.fab.send(f"cn{mn.cn}", Packet(self._cn_addr[mn.cn], dst, 17, 5001,
                                           40000 + mn.index, f"s{mn.index}", seq))
        self.probes_sent += 1
        if self.net.now + self.cfg.probe_interval < self.cfg.duration:
            self.net.call_later(self.cfg.probe_interval, lambda: self._probe(mn, seq + 1))

    def _leave(self, mn: _Mn, to: int) -> None:
        """The MN's radio moves from its router to access router ``to``."""
        name, old = f"mn{mn.index}", mn.at
        self.fab.detach(name)
        self._input(old, lambda a, now: a.detach(name, now))
        mn.at = 0
        self.net.call_later(GAP, lambda: self._arrive(mn, to, old))

    def _arrive(self, mn: _Mn, to: int, old: int) -> None:
        name, link = f"mn{mn.index}", f"m{mn.index}"
        home = self._prefix(mn.index, mn.home)
        self.fab.attach(name, self.network.access[to - 1], link)
        mn.at, mn.arrived = to, self.net.now
        self.handovers += 1
        self._central(mn, to, old)
        if to == mn.home:
            self._input(to, lambda a, now: a.attach(name, link, [home], {}, now))
            return
        own = self._prefix(mn.index, to)
        self.fab.add_address(name, own.network + 0x10)
        kept = {home: [mn.session]} if mn.session is not None else {}
        if mn.session is not None:
            self._waiting[home] = self.net.now
        self._input(to, lambda a, now: a.attach(name, link, [own], kept, now))

    def _central(self, mn: _Mn, to: int, old: int) -> None:
        """The PMIPv6-like baseline's cost of the same move."""
        new = self.network.access[to - 1]
        self.central_latency.append(self.hops(new, CORE) * self.cfg.delay)

    def _walk(self) -> Iterable[tuple[float, int, int]]:
        """(time, MN, router) moves of the mobility model: each to a
        neighbouring router, after an exponential dwell."""
        out = []
        waypoint = self.cfg.mobility == "waypoint"
        for mn in self.mns:
            t, at = self.warmup, mn.home
            path: list[int] = []
            while True:
                t += max(GAP * 2, self.rng.expovariate(1 / self.cfg.dwell))
                if t >= self.cfg.duration:
                    break
                if not waypoint:
                    at = self.rng.choice(self.network.walk[at])
                else:
                    if not self.network.walk[at]:
                        break  # nowhere to go (a network of one router)
                    while not path:
                        path = self._path(at, self.rng.randint(1, self.n))
                    at = path.pop(0)
                out.append((t, mn.index, at))
        return out

    def _path(self, a: int, b: int) -> list[int]:
        """The access routers after ``a`` on a shortest walk to ``b``
        (breadth first over the routers MNs walk between)."""
        before: dict[int, int] = {a: a}
        todo = deque([a])
        while todo and b not in before:
            x = todo.popleft()
            for y in self.network.walk[x]:
                if y not in before:
                    before[y] = x
                    todo.append(y)
        out = []
        while b != a and b in before:
            out.append(b)
            b = before[b]
        return out[::-1]

    # -- Measuring -----------------------------------------------------------------------

    @property
    def warmup(self) -> float:
        """Every MN has attached by then; moves (and their count) start."""
        return warmup_of(self.cfg.mns)

    def _tap(self, at: float, src: Addr, dst: Addr, data: bytes) -> None:
        if at < self.warmup or len(data) < 12 or data[1] in PERIODIC:
            return  # (the MNs' first attachments; refreshes)
        self.signalling["messages"] += 1
        self.signalling["bytes"] += len(data)
        if data[1] == MsgType.BUFFER_READY:  # (the header's type: decoded only then)
            try:
                msg = decode(data).message
            except WireError:
                return
            assert isinstance(msg, BufferReady)
            since = self._waiting.pop(msg.prefix, None)
            if since is not None:
                self.latency.append(at - since)

    def _sample(self) -> None:
        counts = [sum(1 for e in self.fab.routers[ar].entries() if e.kind is EntryKind.TUNNEL)
                  for ar in self.network.access]
        self.tunnels_at = dict(zip(self.network.access, counts, strict=True))
        self.tunnel_samples.append(sum(counts))
        self.tunnel_max = max(self.tunnel_max, *counts)
        if self.net.now + 1 < self.cfg.duration:
            self.net.call_later(1.0, self._sample)

    # -- Running --------------------------------------------------------------------------

    def run(self, progress: Callable[[float, int], None] | None = None) -> SimReport:
        """Play the configured moves out; the report of both designs.

        ``progress`` is called after each virtual second with the virtual
        time reached and the handovers so far."""
        cfg = self.cfg
        t0 = time.monotonic()
        for k in range(cfg.mns):
            session = None
            cn = self.rng.randrange(cfg.cns)
            home = self.rng.randrange(1, self.n + 1)
            if self.rng.random() < cfg.continuity:
                addr = self._prefix(k, home).network + 0x10
                session = FlowFilter(Prefix(addr, 128), Prefix(int(IPv6Address(cn_addr(cn))), 128),
                                     17, 40000 + k, 5001)
            mn = _Mn(k, home, home, session, cn)
            self.mns.append(mn)
            self.fab.add_host(f"mn{k}")
            self.net.call_at(0.01 + START_SPACING * k,
                             lambda mn=mn: self._start(mn))  # type: ignore[misc]
        moves = load_trace(cfg.trace) if cfg.trace is not None else self._walk()
        self.moves = sorted(moves)
        for t, k, to in self.moves:
            if not (0 <= k < cfg.mns and 1 <= to <= self.n):
                raise ValueError(f"trace: MN {k} or router {to} is not in this network")
            if t < self.warmup:
                raise ValueError(f"trace: a move at {t} s, before every MN attached "
                                 f"({self.warmup} s)")
        if self.moves:
            # One move in the event queue at a time, each scheduling the
            # next: the queue holds what the network does, not a million
            # moves to come.
            self.net.call_at(self.moves[0][0], lambda: self._play(0))
        self.net.call_at(1.0, self._sample)
        # The MNs' first attachments, then a virtual second at a time: each
        # step's events stay far below the loop's bound, and the caller can
        # show how far it got.
        events = self.net.run(until=min(self.warmup, cfg.duration))
        self.wall_warmup = time.monotonic() - t0
        # The cyclic garbage collector is off while the moves play: the
        # cores make no reference cycles as they run (a 16k-MN run's 650
        # collections found none), and each full collection walks every
        # object of the network - millions at 100k MNs.  What a run did
        # leave is collected at its end.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while self.net.now < cfg.duration:
                events += self.net.run(until=min(cfg.duration, self.net.now + 1.0))
                if progress is not None:
                    progress(self.net.now, self.handovers)
        finally:
            if collecting:
                gc.enable()
        self.cycles = gc.collect()
        return self._report(time.monotonic() - t0, events)

    def _play(self, i: int) -> None:
        """Move ``i`` of :attr:`moves` (in time order), then schedule the next."""
        _, k, to = self.moves[i]
        if i + 1 < len(self.moves):
            self.net.call_at(self.moves[i + 1][0], lambda: self._play(i + 1))
        self._move(self.mns[k], to)

    def _move(self, mn: _Mn, to: int) -> None:
        if mn.at in (0, to):
            return  # (still between two routers, or already there)
        self._leave(mn, to)

    def _report(self, wall: float, events: int) -> SimReport:
        stretch = self.stretch
        delivered = 0
        for mn in self.mns:
            if mn.session is None:
                continue
            for d in self.fab.received(f"mn{mn.index}"):
                if d.link:
                    delivered += 1
                    cn_router = self.network.cns[mn.cn][1]
                    served = d.packet.hops[-2]
                    shortest = self.hops(cn_router, served) + 2  # (+ the CN's and MN's links)
                    stretch.append((len(d.packet.hops) - 1) / shortest)
                    # The same probe through an LMA at the core.
                    via_core = self.hops(cn_router, CORE) + self.hops(CORE, served) + 2
                    self.central_stretch.append(via_core / shortest)
        ho = max(1, self.handovers)
        kept = sum(1 for mn in self.mns if mn.session is not None) / len(self.mns)
        dist = DesignReport(
            _mean(stretch), _pct(stretch, 99), round(kept * _mean(stretch) + 1 - kept, 3),
            self.signalling["messages"] / ho,
            self.signalling["bytes"] / ho, _pct(self.latency, 50) * 1000,
            _pct(self.latency, 99) * 1000, self.tunnel_max,
            _mean([s / self.n for s in self.tunnel_samples]))
        cent = DesignReport(
            _mean(self.central_stretch), _pct(self.central_stretch, 99),
            _mean(self.central_stretch), PMIP_MESSAGES,
            PMIP_BYTES, _pct(self.central_latency, 50) * 1000,
            _pct(self.central_latency, 99) * 1000,
            # The LMA tunnels every MN's prefix; a MAG one per MN on it.
            self.cfg.mns, self.cfg.mns / self.n)
        cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.cfg).items()}
        return SimReport(cfg, self.handovers, self.probes_sent, delivered, dist, cent,
                         round(wall, 3), round(wall - self.wall_warmup, 3), events,
                         dict(self.fab.drop_reasons))


def load_trace(path: Path) -> list[tuple[float, int, int]]:
    """Moves from a CSV of ``time,mn,router`` rows (MN from 0, router from 1)."""
    out = []
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].startswith("#") or row[0] == "time":
                continue
            try:
                out.append((float(row[0]), int(row[1]), int(row[2])))
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{n}: expected time,mn,router: {row}") from exc
    return sorted(out)


def _mean(xs: list[float]) -> float:
    return round(statistics.fmean(xs), 3) if xs else 0.0


def _pct(xs: list[float], p: int) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return round(s[min(len(s) - 1, (len(s) * p) // 100)], 4)


def format_report(r: SimReport) -> str:
    """The report as a table: both designs side by side."""
    c = r.config
    rows = [("path stretch (kept sessions), mean", "stretch_mean", "{:.3f}"),
            ("path stretch (kept sessions), p99", "stretch_p99", "{:.3f}"),
            ("path stretch, every flow, mean", "stretch_all_mean", "{:.3f}"),
            ("messages per handover", "messages_per_handover", "{:.1f}"),
            ("bytes per handover", "bytes_per_handover", "{:.0f}"),
            ("handover latency p50, ms", "latency_ms_p50", "{:.1f}"),
            ("handover latency p99, ms", "latency_ms_p99", "{:.1f}"),
            ("tunnels at one router, max", "tunnels_max", "{}"),
            ("tunnels per access router, mean", "tunnels_mean", "{:.2f}")]
    a, b = c['aggregations'], c['access_per_aggregation']
    n = a * b if isinstance(a, int) and isinstance(b, int) else f"{a}x{b}"
    shape = (f"geometric graph of {n}" if c['topology'] == "geometric"
             else f"{c['topology']} of {a}x{b}")
    out = [f"{shape} access routers, {c.get('mobility', 'walk')} mobility, {c['mns']} MNs, "
           f"{c['duration']} virtual s, seed {c['seed']}: {r.handovers} handovers, "
           f"{r.wall_s} s wall ({r.events} events)",
           f"sessions kept across moves: {r.probes_delivered} of {r.probes_sent} probes "
           f"delivered" + (f" (dropped: {r.drops})" if r.drops else ""),
           "", f"{'':36}{'distributed':>14}{'centralized':>14}"]
    for label, key, fmt in rows:
        d, z = getattr(r.distributed, key), getattr(r.centralized, key)
        out.append(f"{label:36}{fmt.format(d):>14}{fmt.format(z):>14}")
    return "\n".join(out)
