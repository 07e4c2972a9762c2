"""The BGP anchor-switching topology of draft 4.2, as data, on real kernels.

``ar1 - r1 - r2 - ... - rN - ar2``: every ``r`` runs BIRD 2 (its own AS,
eBGP to both neighbours, FIB export); each anchor runs dmanchor's
:class:`~dmanchor.access.bgp.BgpSession` towards its router, announcing its
own /48.  Moving HNP1's anchoring to ar2 is ar2 announcing HNP1's /64 (and
ar1, if it had announced it, withdrawing it).

Link ``i`` (``i`` = 1..N+1, from ar1 rightwards) is ``fd00:i::/64``; the
left end is ``::1``, the right end ``::2``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path

from ..access.bgp import BgpSession, BgpSettings
from ..access.bgp_aio import BgpSpeaker
from ..wire.types import Prefix
from .bird import BgpNeighbor, BirdRouter
from .lab import Lab, Veth


@dataclass(frozen=True, slots=True)
class AnchorEnd:
    """An anchor at one end of the chain."""

    name: str
    asn: int
    address: IPv6Address
    """Its address on the link to its router (the next hop it announces)."""
    peer: IPv6Address
    """Its router's address on that link."""
    peer_asn: int
    owned: Prefix
    """Its own /48."""


def router_asn(i: int) -> int:
    """AS of router ``r<i>``."""
    return 65100 + i


class BgpChain:
    """Builds the chain in ``lab``, runs BIRD on every router."""

    def __init__(self, lab: Lab, workdir: Path, routers: int = 4) -> None:
        if routers < 1:
            raise ValueError("at least one router")
        self.lab, self.workdir, self.n = lab, workdir, routers
        self.routers = [f"r{i}" for i in range(1, routers + 1)]
        nodes = ["ar1", *self.routers, "ar2"]
        self.links = [Veth(nodes[i], f"e{i + 1}r", f"fd00:{i + 1}::1/64",
                           nodes[i + 1], f"e{i + 1}l", f"fd00:{i + 1}::2/64")
                      for i in range(len(nodes) - 1)]
        last = routers + 1
        self.anchors = {
            "ar1": AnchorEnd("ar1", 65001, IPv6Address("fd00:1::1"), IPv6Address("fd00:1::2"),
                             router_asn(1), Prefix.parse("2001:db8:1::/48")),
            "ar2": AnchorEnd("ar2", 65002, IPv6Address(f"fd00:{last:x}::2"),
                             IPv6Address(f"fd00:{last:x}::1"), router_asn(routers),
                             Prefix.parse("2001:db8:2::/48")),
        }
        self.birds: dict[str, BirdRouter] = {}

    def build(self) -> None:
        """Namespaces, links, BIRD on each router, sessions between routers up."""
        self.lab.build(["ar1", *self.routers, "ar2"], self.links)
        for i, name in enumerate(self.routers, start=1):
            left = (f"fd00:{i:x}::1", router_asn(i - 1) if i > 1 else 65001)
            right = (f"fd00:{i + 1:x}::2", router_asn(i + 1) if i < self.n else 65002)
            neigh = [BgpNeighbor("left", left[0], left[1]),
                     BgpNeighbor("right", right[0], right[1])]
            bird = BirdRouter(self.lab, name, self.workdir / name, router_asn(i),
                              f"10.0.0.{i}", neigh)
            self.birds[name] = bird
            bird.start()
        for i, name in enumerate(self.routers, start=1):
            # Router-to-router sessions: all but the ends' anchor sessions.
            want = (1 if i > 1 else 0) + (1 if i < self.n else 0)
            if want:
                self.birds[name].wait_established(want)

    def speaker(self, anchor: str, hold_time: int = 9) -> BgpSpeaker:
        """A (not yet started) speaker for ``anchor``, connecting from its namespace."""
        a = self.anchors[anchor]
        session = BgpSession(BgpSettings(a.asn, a.peer_asn, 0x0A00_0100 + a.asn % 256,
                                         a.address, hold_time=hold_time, connect_retry=0.2))
        return BgpSpeaker(session, a.peer,
                          connect=lambda: self.lab.socket(anchor, socket.SOCK_STREAM))

    def stop(self) -> None:
        """Stop every BIRD this chain started (by PID)."""
        for bird in self.birds.values():
            bird.stop()
