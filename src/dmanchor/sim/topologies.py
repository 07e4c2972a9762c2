"""Topologies of the draft's examples, as data."""

from __future__ import annotations

from ipaddress import IPv6Address

from ..wire.types import EntryKind, ForwardingEntry, Prefix
from .fabric import HostSpec, LinkSpec, RouterSpec, TopologySpec

P = Prefix.parse


def _route(prefix: str, via: str) -> ForwardingEntry:
    return ForwardingEntry(EntryKind.ROUTE, P(prefix), IPv6Address(via))


def _drop(prefix: str) -> ForwardingEntry:
    return ForwardingEntry(EntryKind.DROP, P(prefix))


CN_ADDR = "2001:db8:99::1"


def flat(n_access: int = 2, delay: float = 0.001) -> TopologySpec:
    """CN - R - {AR1 .. ARn}: the flat network of draft Figures 3-8.

    ARi owns Net i: ``2001:db8:i::/48`` (unassigned addresses dropped); its
    DPA address (End.DT6 SID, where its agent listens) is ``fc00::i:0`` and
    its flush SID ``fc00::i:1``; R is ``fc00::ff``.
    """
    core_entries = [_route(f"{CN_ADDR}/128", CN_ADDR)]
    routers = []
    links = [LinkSpec("cn", "r", delay)]
    for i in range(1, n_access + 1):
        core_entries += [_route(f"2001:db8:{i:x}::/48", f"fc00::{i:x}:0"),
                         _route(f"fc00::{i:x}:0/127", f"fc00::{i:x}:0")]
        routers.append(RouterSpec(
            f"ar{i}", (f"fc00::{i:x}:0", f"fc00::{i:x}:1"),
            (_route("::/0", "fc00::ff"), _drop(f"2001:db8:{i:x}::/48")),
        ))
        links.append(LinkSpec("r", f"ar{i}", delay))
    routers.insert(0, RouterSpec("r", ("fc00::ff",), tuple(core_entries)))
    hosts = (HostSpec("cn", (CN_ADDR,), gateway="r"), HostSpec("mn"))
    return TopologySpec(tuple(routers), hosts, tuple(links))


def hierarchical(n_fw: int = 2, delay: float = 0.001) -> TopologySpec:
    """CN - R - AR1 - {FW11 .. FW1n} and AR2 - FW21: draft Figures 9-10.

    The ARs are DPAs anchoring the prefixes (AR a owns ``2001:db8:a::/48``,
    DPA ``fc00::a:0``); the forwarding switches (FW, DPN) serve the MN and
    are reached by SRv6 tunnels: FW f under AR a has DPA ``fc00:a::f:0``
    (flush SID ``fc00:a::f:1``) and access link ``fwaf``.
    """
    core = [_route(f"{CN_ADDR}/128", CN_ADDR)]
    routers = []
    links = [LinkSpec("cn", "r", delay)]
    for a, fws in ((1, n_fw), (2, 1)):
        core += [_route(f"2001:db8:{a}::/48", f"fc00::{a}:0"),
                 _route(f"fc00::{a}:0/127", f"fc00::{a}:0"),
                 _route(f"fc00:{a}::/32", f"fc00::{a}:0")]
        ar_entries = [_route("::/0", "fc00::ff"), _drop(f"2001:db8:{a}::/48")]
        links.append(LinkSpec("r", f"ar{a}", delay))
        for f in range(1, fws + 1):
            sid = f"fc00:{a}::{f:x}:0"
            ar_entries.append(_route(f"{sid}/127", sid))
            routers.append(RouterSpec(f"fw{a}{f}", (sid, f"fc00:{a}::{f:x}:1"),
                                      (_route("::/0", f"fc00::{a}:0"),)))
            links.append(LinkSpec(f"ar{a}", f"fw{a}{f}", delay))
        routers.append(RouterSpec(f"ar{a}", (f"fc00::{a}:0", f"fc00::{a}:1"), tuple(ar_entries)))
    routers.insert(0, RouterSpec("r", ("fc00::ff",), tuple(core)))
    hosts = (HostSpec("cn", (CN_ADDR,), gateway="r"), HostSpec("mn"))
    return TopologySpec(tuple(routers), hosts, tuple(links))
