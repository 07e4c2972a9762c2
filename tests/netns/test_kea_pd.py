"""DHCPv6-PD against a real Kea server (draft 4.2.1, FM:3-2): our client
(sans-IO PdClient) in two access-router namespaces sharing a link with Kea."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmanchor.access.delegation import iaid_for
from dmanchor.access.dhcpv6 import (
    Bound,
    Released,
)
from dmanchor.access.kea_ctrl import KeaControl, KeaError, command, move_delegation
from dmanchor.emulation.kea import KeaServer, lease_cmds_library
from dmanchor.emulation.lab import Lab, Veth
from dmanchor.emulation.pd import PdRouter
from dmanchor.wire.types import Prefix

POOL = Prefix.parse("2001:db8:1::/48")

pytestmark = pytest.mark.skipif(not KeaServer.available(), reason="kea-dhcp6 not installed")


@pytest.fixture
def kea(lab: Lab, tmp_path: Path) -> Iterator[KeaServer]:
    lab.build(["kea", "ar1", "ar2"], [
        Veth("kea", "p1", "", "ar1", "dhcp0", ""),
        Veth("kea", "p2", "", "ar2", "dhcp0", ""),
    ])
    # One link for DHCP: the ARs' requests reach one server and one pool.
    lab.run("kea", "ip", "link", "add", "br0", "type", "bridge")
    for port in ("p1", "p2"):
        lab.run("kea", "ip", "link", "set", port, "master", "br0")
    lab.run("kea", "ip", "link", "set", "br0", "up")
    lab.wait_up("kea", "br0")
    for node, ifname in (("kea", "br0"), ("ar1", "dhcp0"), ("ar2", "dhcp0")):
        lab.wait_link_local(node, ifname)  # Kea and its clients speak from them
    server = KeaServer(lab, "kea", "br0", POOL, 64, tmp_path / "kea", preferred=4, valid=6,
                       lease_cmds=lease_cmds_library() is not None)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def Router(lab: Lab, node: str, mac: str) -> PdRouter:
    return PdRouter(lab, node, "dhcp0", mac)


def test_prefix_released_by_one_router_is_delegated_to_the_other_as_a_hint(
        lab: Lab, kea: KeaServer) -> None:
    ar1 = Router(lab, "ar1", "020000000001")
    ar2 = Router(lab, "ar2", "020000000002")
    ar1.client.request(time.time())
    got = ar1.run_until(Bound)
    assert isinstance(got, Bound) and POOL.covers(got.prefix) and got.prefix.length == 64
    hnp1 = got.prefix
    # While AR1 holds HNP1, AR2's hint for it is not honoured.
    ar2.client.request(time.time(), hint=hnp1)
    other = ar2.run_until(Bound)
    assert isinstance(other, Bound) and other.prefix != hnp1
    ar2.client.release(time.time())
    ar2.run_until(Released)
    # The MN moves: p-AR releases HNP1, n-AR asks for it by hint and gets it.
    ar1.client.release(time.time())
    assert ar1.run_until(Released) == Released(hnp1)
    ar2.client.request(time.time(), hint=hnp1)
    moved = ar2.run_until(Bound)
    assert isinstance(moved, Bound) and moved.prefix == hnp1
    # Renewal keeps it while flows need it (T1 = 2 s with these lifetimes).
    renewed = ar2.run_until(Bound, timeout=6)
    assert isinstance(renewed, Bound) and renewed.renewed and renewed.prefix == hnp1
    # Kea's own lease file names AR2's DUID as HNP1's holder.
    rows = [line.split(",") for line in kea.leases.read_text().splitlines()[1:]]
    holders = {r[1] for r in rows if r[0] == str(hnp1.address) and r[2] != "0"}
    assert "00:03:00:01:02:00:00:00:00:02" in holders


@pytest.mark.skipif(lease_cmds_library() is None, reason="Kea's lease_cmds hook not installed")
def test_controller_moves_a_delegation_through_lease_cmds(lab: Lab, kea: KeaServer) -> None:
    """Draft 4.2.1 driven by the controller: one lease6-update on Kea's
    control socket hands HNP1 to n-AR - no Release from p-AR, no Solicit
    round for a prefix that is not free yet."""
    hnp1 = Prefix.parse("2001:db8:1::/64")
    # Both routers hold HNP1 on the IAID derived from it, as nodes do.
    ar1 = PdRouter(lab, "ar1", "dhcp0", "020000000001", iaid=iaid_for(hnp1))
    ar2 = PdRouter(lab, "ar2", "dhcp0", "020000000002", iaid=iaid_for(hnp1))
    ar1.client.request(time.time(), hint=hnp1)
    got = ar1.run_until(Bound)
    assert isinstance(got, Bound) and got.prefix == hnp1
    ctl = KeaControl(kea.socket)
    asyncio.run(move_delegation(ctl, hnp1, ar2.client.duid))
    lease = kea.command("lease6-get", {"ip-address": str(hnp1.address), "type": "IA_PD"})
    assert lease["result"] == 0
    args = lease["arguments"]
    assert isinstance(args, dict) and args["duid"] == "00:03:00:01:02:00:00:00:00:02"
    assert args["iaid"] == iaid_for(hnp1)
    # n-AR's client finds the lease its own: asked with HNP1 as a hint, it
    # gets it at once, though p-AR never released it.
    ar2.client.request(time.time(), hint=hnp1)
    moved = ar2.run_until(Bound)
    assert isinstance(moved, Bound) and moved.prefix == hnp1
    # The race of a loaded machine: the previous router's Release reaches
    # Kea before the controller's move.  The lease is gone, and the move
    # still gives it to the new router.
    ar2.client.release(time.time())
    ar2.run_until(Released)
    asyncio.run(move_delegation(ctl, hnp1, ar1.client.duid))
    lease = kea.command("lease6-get", {"ip-address": str(hnp1.address), "type": "IA_PD"})
    assert lease["result"] == 0
    args = lease["arguments"]
    assert isinstance(args, dict) and args["duid"] == "00:03:00:01:02:00:00:00:00:01"
    # A command Kea does not know, a prefix outside its subnet, or no Kea
    # at all is a KeaError, not a crash of either side.
    with pytest.raises(KeaError, match="no-such-command"):
        asyncio.run(command(ctl, "no-such-command"))
    with pytest.raises(KeaError, match="lease6-update"):
        asyncio.run(move_delegation(KeaControl(kea.socket, subnet_id=99),
                                    Prefix.parse("2001:db8:ffff::/64"), ar2.client.duid))
    with pytest.raises(KeaError, match="lease6-update"):
        asyncio.run(move_delegation(KeaControl(kea.socket.with_name("gone.ctl")), hnp1,
                                    ar2.client.duid))
