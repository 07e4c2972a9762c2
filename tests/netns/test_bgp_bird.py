"""Draft 4.2 with BGP: dmanchor's speaker at the anchors, real BIRD 2 routers.

``ar1 - r1 - r2 - r3 - r4 - ar2``.  Moving HNP1's anchoring to ar2 is ar2
announcing HNP1's /64; every BIRD router must then forward IP1 to ar2 (its
kernel FIB, checked with real packets); withdrawing sends IP1 home to ar1.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from dmanchor.access.bgp import BgpEvent, SessionDown, SessionUp
from dmanchor.dataplane.netlink import Netlink
from dmanchor.emulation.bgplab import BgpChain
from dmanchor.emulation.bird import BirdRouter
from dmanchor.emulation.lab import Lab
from dmanchor.wire.types import Prefix

pytestmark = pytest.mark.skipif(not BirdRouter.available(), reason="bird2 not installed")

HNP1 = Prefix.parse("2001:db8:1:1::/64")
IP1 = "2001:db8:1:1::10"


@pytest.fixture
def chain(lab: Lab, tmp_path: Path) -> Iterator[BgpChain]:
    c = BgpChain(lab, tmp_path, routers=4)
    try:
        c.build()
        yield c
    finally:
        c.stop()


def direction(lab: Lab, router: str, prefix: Prefix) -> str | None:
    """'left' (towards ar1), 'right' (towards ar2) or None: where ``router``
    sends ``prefix`` by an exact route."""
    nl = Netlink(lab.ns(router))
    try:
        for r in nl.routes():
            if (r.dst, r.dst_len) == (prefix.address, prefix.length) and r.gateway:
                return "left" if str(r.gateway).endswith("::1") else "right"
        return None
    finally:
        nl.close()


async def until(check: object, timeout: float = 10.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.02)


def who_gets(lab: Lab, receivers: dict[str, socket.socket]) -> str:
    """Send one datagram to IP1 from r2; return the anchor that received it."""
    tx = lab.socket("r2")
    tx.sendto(b"probe", (IP1, 7000))
    tx.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for name, rx in receivers.items():
            try:
                rx.recv(100)
                return name
            except BlockingIOError:
                pass
        time.sleep(0.01)
    return "nobody"


def test_anchor_switch_by_bgp_through_real_bird_routers(lab: Lab, chain: BgpChain) -> None:
    receivers = {}
    for anchor in ("ar1", "ar2"):
        lab.run(anchor, "ip", "-6", "addr", "add", f"{IP1}/128", "dev", "lo", "nodad")
        rx = lab.socket(anchor)
        rx.bind((IP1, 7000))
        rx.setblocking(False)
        receivers[anchor] = rx
    events: dict[str, list[BgpEvent]] = {"ar1": [], "ar2": []}

    async def main() -> None:
        sp = {a: chain.speaker(a) for a in ("ar1", "ar2")}
        for name, s in sp.items():
            s.on_event = events[name].append
            s.change([], [chain.anchors[name].owned])
            s.start()
        await asyncio.wait_for(asyncio.gather(sp["ar1"].up.wait(), sp["ar2"].up.wait()), 20)
        home, visited = chain.anchors["ar1"].owned, chain.anchors["ar2"].owned
        await until(lambda: all(direction(lab, r, home) == "left"
                                and direction(lab, r, visited) == "right"
                                for r in chain.routers))
        assert who_gets(lab, receivers) == "ar1"
        # The move (draft 4.2): ar2 announces HNP1; every router follows.
        sp["ar2"].change([], [HNP1])
        await until(lambda: all(direction(lab, r, HNP1) == "right" for r in chain.routers))
        assert who_gets(lab, receivers) == "ar2"
        # BIRD's UPDATEs decoded by our speaker: ar1 learned ar2's /48 and
        # HNP1 across the four router ASes.
        rib = sp["ar1"].session.rib_in
        await until(lambda: HNP1 in rib)  # r1's UPDATE may still be on its way
        assert rib[HNP1][1] == (65101, 65102, 65103, 65104, 65002)
        assert rib[visited][0] == IPv6Address("fd00:1::2")
        # FM:3-3: the flows closed and the lifetime ended: HNP1 goes home.
        sp["ar2"].change([HNP1], [])
        await until(lambda: all(direction(lab, r, HNP1) is None for r in chain.routers))
        assert who_gets(lab, receivers) == "ar1"
        await until(lambda: HNP1 not in sp["ar1"].session.rib_in)  # r1's withdrawal
        # A dead peer: r1's BIRD stops; our session notices and, when r1
        # is back, comes up again and re-announces ar1's prefix.
        chain.birds["r1"].stop()
        await until(lambda: any(isinstance(e, SessionDown) for e in events["ar1"]))
        chain.birds["r1"].start()
        await until(lambda: sum(isinstance(e, SessionUp) for e in events["ar1"]) == 2, 20)
        await until(lambda: direction(lab, "r1", home) == "left")
        for s in sp.values():
            await s.stop()

    try:
        asyncio.run(main())
    finally:
        for rx in receivers.values():
            rx.close()
    # Every session ended cleanly: no decode errors either way.
    for name in ("ar1", "ar2"):
        assert not [e for e in events[name] if isinstance(e, SessionDown)
                    and e.notification is not None and e.notification.code != 6], events[name]
