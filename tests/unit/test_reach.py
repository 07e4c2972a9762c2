"""Departure by neighbour unreachability (NUD) on a shared access link."""

from __future__ import annotations

from ipaddress import IPv6Address as A

from dmanchor.access.reach import Reachability
from dmanchor.dataplane.neigh import NeighEvent, Nud, encode, parse

MAC1, MAC2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
LL1, IP1, TMP1 = A("fe80::1"), A("2001:db8:1:1::10"), A("2001:db8:1:1::77")
IP2 = A("2001:db8:1:2::10")


def ev(addr: A, state: Nud, mac: bytes | None = None, ifindex: int = 7,
       deleted: bool = False) -> NeighEvent:
    return NeighEvent(ifindex, addr, state, mac, deleted)


def test_events_round_trip_through_the_kernel_message_format() -> None:
    for e in (ev(IP1, Nud.REACHABLE, MAC1), ev(IP1, Nud.FAILED), ev(LL1, Nud.STALE, MAC1,
                                                                      deleted=True)):
        raw = encode(e)
        assert parse(int.from_bytes(raw[4:6], "little"), raw[16:]) == e
    assert parse(28, b"\x02" + bytes(11)) is None  # IPv4: not ours


def test_a_host_is_unreachable_once_none_of_its_addresses_answers() -> None:
    r = Reachability({7: "mn1"})
    assert r.feed(ev(LL1, Nud.REACHABLE, MAC1)) == []
    assert r.feed(ev(IP1, Nud.STALE, MAC1)) == []
    assert r.feed(ev(IP2, Nud.REACHABLE, MAC2)) == []  # another host on the link
    # The MN left: probes to its global address go unanswered ...
    assert r.feed(ev(IP1, Nud.PROBE, MAC1)) == []
    # ... but its link-local entry is still usable: not gone yet.
    assert r.feed(ev(IP1, Nud.FAILED)) == []
    assert r.feed(ev(LL1, Nud.FAILED)) == [("02:00:00:00:00:01", "mn1")]
    assert r.feed(ev(LL1, Nud.FAILED)) == []  # said once
    assert r.feed(ev(IP1, Nud.INCOMPLETE)) == []


def test_a_dropped_temporary_address_is_not_a_departure() -> None:
    r = Reachability({7: "mn1"})
    r.feed(ev(IP1, Nud.REACHABLE, MAC1))
    r.feed(ev(TMP1, Nud.STALE, MAC1))
    assert r.feed(ev(TMP1, Nud.FAILED)) == []  # IP1 still answers
    # It comes back, leaves again: said again.
    assert r.feed(ev(IP1, Nud.FAILED)) == [("02:00:00:00:00:01", "mn1")]
    r.feed(ev(IP1, Nud.REACHABLE, MAC1))
    assert r.feed(ev(IP1, Nud.FAILED)) == [("02:00:00:00:00:01", "mn1")]


def test_other_links_and_unknown_hosts_are_ignored_and_memory_is_bounded() -> None:
    r = Reachability({7: "mn1"}, cap=8)
    assert r.feed(ev(IP1, Nud.FAILED, ifindex=9)) == []
    assert r.feed(ev(IP1, Nud.FAILED)) == []  # never seen with an address: whose?
    for i in range(100):
        r.feed(ev(A(f"2001:db8:1:1::{i + 100:x}"), Nud.STALE, MAC2))
    assert len(r._seen["mn1"]) == 8
    r.feed(ev(IP2, Nud.DELAY, MAC2, deleted=True))
    assert IP2 not in r._seen["mn1"]
