"""The flat network of the draft's examples on real namespaces.

CN - R - AR1 / AR2 - MN, with the same addressing as
:func:`dmanchor.sim.topologies.flat`: ARi owns ``2001:db8:i::/48`` and the
DPA address (End.DT6 SID) ``fc00::i:0``; core links have MTU 1600 so that SRv6-encapsulated
full-size packets fit (the access links stay at 1500).
"""

from __future__ import annotations

from ipaddress import IPv6Address as A

from ..dataplane.linux import LinuxDataPlane
from ..wire.types import EntryKind, ForwardingEntry, Prefix
from .lab import Lab, Veth

P = Prefix.parse
E = ForwardingEntry
K = EntryKind
HNP1, HNP2 = P("2001:db8:1:1::/64"), P("2001:db8:2:1::/64")
IP1, IP2 = "2001:db8:1:1::10", "2001:db8:2:1::10"
CN = "2001:db8:99::1"
SID1, SID2 = A("fc00::1:0"), A("fc00::2:0")
"""DPA addresses (End.DT6 SIDs) of AR1 and AR2; each flush SID is the DPA + 1."""

NODES = ("cn", "r", "ar1", "ar2", "mn")
LINKS = (
    Veth("cn", "cn0", f"{CN}/64", "r", "r-cn", "2001:db8:99::ff/64", 1600),
    Veth("r", "r-ar1", "fd00:1::1/64", "ar1", "ar1-r", "fd00:1::2/64", 1600),
    Veth("r", "r-ar2", "fd00:2::1/64", "ar2", "ar2-r", "fd00:2::2/64", 1600),
    Veth("ar1", "mn1", "fe80::1/64", "mn", "eth1", "", 1500),
    Veth("ar2", "mn2", "fe80::1/64", "mn", "eth2", "", 1500),
)


def flat(lab: Lab) -> dict[str, LinuxDataPlane]:
    """CN - R - AR1/AR2 - MN, static routing installed through the data plane."""
    lab.build(NODES, LINKS, hosts=("cn", "mn"))
    lab.run("cn", "ip", "-6", "route", "add", "default", "via", "2001:db8:99::ff")
    # The MN has one L3 interface (br0) over its two radios: moving is a
    # layer-2 change (one radio down, the other up), its addresses stay.
    # Both radios stay up; which one is bridged to br0 is the attachment.
    # (Toggling a veth's carrier instead costs ~1 s of linkwatch delay
    # before the kernel transmits on it again: an emulation artifact that
    # would swamp the handover being measured.)
    for radio in ("eth1", "eth2"):  # layer-2 ports: only br0 speaks IPv6
        lab.run("mn", "sysctl", "-qw", f"net.ipv6.conf.{radio}.disable_ipv6=1")
    # A fixed MAC: a bridge otherwise takes its lowest port's, and the MN -
    # known to its routers by its MAC - would change identity as it moves.
    lab.run("mn", "ip", "link", "add", "br0", "address", "02:00:00:00:00:01", "type", "bridge")
    lab.run("mn", "ip", "link", "set", "eth1", "master", "br0")
    lab.run("mn", "ip", "link", "set", "br0", "up")
    for addr in (IP1, IP2, "2001:db8:1:1::66"):
        lab.run("mn", "ip", "-6", "addr", "add", f"{addr}/128", "dev", "br0", "nodad")
    lab.wait_up("mn", "br0")
    lab.run("mn", "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "br0")
    dps = {n: LinuxDataPlane(lab.ns(n)) for n in ("r", "ar1", "ar2")}
    dps["r"].apply([
        E(K.ROUTE, P("2001:db8:1::/48"), A("fd00:1::2")),
        E(K.ROUTE, P("2001:db8:2::/48"), A("fd00:2::2")),
        E(K.ROUTE, P("fc00::1:0/127"), A("fd00:1::2")),
        E(K.ROUTE, P("fc00::2:0/127"), A("fd00:2::2")),
    ], [], 0.0)
    for i, dp in ((1, dps["ar1"]), (2, dps["ar2"])):
        dp.apply([E(K.ROUTE, P("::/0"), A(f"fd00:{i}::1")),
                  E(K.DECAP, Prefix.host(A(f"fc00::{i}:0")))], [], 0.0)
    return dps


def move_mn_to_ar2(lab: Lab) -> None:
    """The MN's layer-2 attachment changes from AR1's link to AR2's."""
    lab.run("mn", "ip", "link", "set", "eth1", "nomaster")
    lab.run("mn", "ip", "link", "set", "eth2", "master", "br0")
    lab.run("mn", "ip", "-6", "neigh", "flush", "dev", "br0")
