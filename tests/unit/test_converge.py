"""The convergence check's judgement (scenario/converge.py), on entries as
the nodes read them back."""

from __future__ import annotations

from ipaddress import IPv6Address as A

from dmanchor.scenario.converge import stale
from dmanchor.wire.types import EntryKind as K
from dmanchor.wire.types import FlowFilter, Prefix
from dmanchor.wire.types import ForwardingEntry as E

HNP1 = Prefix.parse("2001:db8:1:1::/64")
NODES = {"fc00::1:0": "ar1", "fc00::2:0": "ar2", "fc00::3:0": "ar3", "fd00:1::2": "ar2",
         "2001:db8:2:1::5": "mn"}


def resolve(hop: A) -> str | None:
    return NODES.get(str(hop))


def judge(entries: dict[str, list[E]], at: str = "ar2") -> list[str]:
    return stale(entries, {HNP1: at}, {HNP1: "mn"}, resolve)


def test_a_tunnel_to_where_the_mn_is_has_settled() -> None:
    assert judge({"ar1": [E(K.TUNNEL, HNP1, A("fc00::2:0"))],
                  "ar2": [E(K.ANCHOR, HNP1, link="mn")]}) == []
    # A switched core route, followed by next hop (FM:5-1, 4.2.1).
    assert judge({"r": [E(K.ROUTE, HNP1, A("fd00:1::2"))],
                  "ar2": [E(K.ANCHOR, HNP1, link="mn")]}) == []
    # Host-based (Fig 2a): the tunnel ends at the MN's own SID.
    assert judge({"ar1": [E(K.TUNNEL, HNP1, A("2001:db8:2:1::5"))], "ar2": []}) == []


def test_leftovers_are_named() -> None:
    assert judge({"ar1": [E(K.BUFFER, HNP1)], "ar2": [E(K.ANCHOR, HNP1, link="mn")]}) == [
        "ar1: 2001:db8:1:1::/64 still held"]
    assert judge({"ar1": [E(K.ANCHOR, HNP1, link="mn")], "ar2": [E(K.ANCHOR, HNP1, link="mn")]}) \
        == ["ar1: 2001:db8:1:1::/64 on its access link, its MN is at ar2"]
    # Through a router the MN has left (A -> B -> C: B kept its path).
    got = judge({"ar1": [E(K.TUNNEL, HNP1, A("fc00::2:0"))],
                 "ar2": [E(K.TUNNEL, HNP1, A("fc00::3:0"))],
                 "ar3": [E(K.ANCHOR, HNP1, link="mn")]}, at="ar3")
    assert got == []
    got = judge({"ar1": [E(K.TUNNEL, HNP1, A("fc00::2:0"))], "ar2": []}, at="ar3")
    assert got == ["ar1: 2001:db8:1:1::/64 tunnel leads to ar2, which has no path for it"]
    got = judge({"ar1": [E(K.TUNNEL, HNP1, A("fc00::2:0"))],
                 "ar2": [E(K.TUNNEL, HNP1, A("fc00::1:0"))]})
    assert got[0] == "ar1: 2001:db8:1:1::/64 tunnel loops: ar1 -> ar2 -> ar1"
    assert judge({"ar1": [E(K.TUNNEL, HNP1, A("fc00::9:0"))]}) == [
        "ar1: 2001:db8:1:1::/64 tunnel towards fc00::9:0, no node"]


def test_other_prefixes_and_per_flow_entries_are_not_judged() -> None:
    other = Prefix.parse("2001:db8:7::/48")
    uplink = FlowFilter(HNP1, Prefix(0, 0), 0, 0, 0)  # a reverse tunnel's selector
    assert judge({"ar1": [E(K.BUFFER, other), E(K.ANCHOR, other, link="x"),
                          E(K.TUNNEL, HNP1, A("fc00::9:0"), uplink)],
                  "ar2": [E(K.ANCHOR, HNP1, link="mn")]}) == []
