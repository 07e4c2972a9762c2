"""Sequenced probe flows over a :class:`~dmanchor.sim.fabric.Fabric`, and their report."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import partial

from ..dataplane.memory import Packet
from ..reordering import measure
from .fabric import Fabric


@dataclass(frozen=True, slots=True)
class Flow:
    """A constant-rate sequenced flow from one host to an address."""

    name: str
    sender: str
    receiver: str
    src: int
    dst: int
    rate: float = 1000.0
    """Packets per second."""
    start: float = 0.0
    stop: float = 1.0
    proto: int = 17
    sport: int = 40000
    dport: int = 5001
    size: int = 100


def start_flow(fabric: Fabric, flow: Flow) -> None:
    """Schedule every packet of ``flow`` on the fabric's clock."""
    interval = 1.0 / flow.rate
    count = int((flow.stop - flow.start) * flow.rate)
    for seq in range(count):
        pkt = Packet(flow.src, flow.dst, flow.proto, flow.sport, flow.dport,
                     flow.name, seq, flow.size)
        fabric.clock.call_at(flow.start + seq * interval, partial(fabric.send, flow.sender, pkt))


@dataclass(frozen=True, slots=True)
class FlowReport:
    """What happened to one flow's packets."""

    sent: int
    delivered: int
    lost: int
    duplicates: int
    reordered: int
    """RFC 4737: arrivals below the highest sequence number seen before."""
    max_gap: float
    """Longest time between two consecutive deliveries, seconds."""
    paths: tuple[tuple[str, ...], ...]
    """Distinct paths taken, in order of first use."""


def report(fabric: Fabric, flow: Flow) -> FlowReport:
    """Loss, duplicates, reordering and delivery gap of ``flow``."""
    got = [d for d in fabric.received(flow.receiver) if d.packet.flow == flow.name]
    sent = int((flow.stop - flow.start) * flow.rate)
    seqs = [d.packet.seq for d in got]
    distinct = set(seqs)
    reordered = measure(seqs).reordered
    times = [d.at for d in got]
    gap = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    paths: list[tuple[str, ...]] = []
    for d in got:
        if d.packet.hops not in paths:
            paths.append(d.packet.hops)
    return FlowReport(sent, len(got), sent - len(distinct), len(seqs) - len(distinct),
                      reordered, gap, tuple(paths))
