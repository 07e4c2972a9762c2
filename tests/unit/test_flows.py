"""Flows from the kernel: ctnetlink parsing, the flow book, the anchor's verdicts."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv6Address as A
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmanchor.dataplane.api import FlowUsage
from dmanchor.dataplane.conntrack import Change, Conn, ConnEvent, TcpState, encode, parse
from dmanchor.fm.flows import FlowBook, flow_of
from dmanchor.wire import messages as m
from dmanchor.wire.types import FlowFilter, Prefix
from tests.unit.test_fm import HNP1, HNP2, IP1, world

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "kernel" /
                      "conntrack_events.json").read_text())
CN = A("2001:db8:99::2")
MN1 = A(IP1)


def _parsed(hexbytes: str) -> ConnEvent | None:
    data = bytes.fromhex(hexbytes)
    length = int.from_bytes(data[0:4], "little")
    mtype = int.from_bytes(data[4:6], "little")
    flags = int.from_bytes(data[6:8], "little")
    return parse(mtype, flags, data[16:length])


# -- ctnetlink ------------------------------------------------------------------------


def test_kernel_messages_parse_as_captured() -> None:
    """Messages a 6.18 kernel sent for a TCP connection's life and a UDP
    flow that went idle."""
    for vec in VECTORS["messages"]:
        ev = _parsed(vec["hex"])
        want = vec["event"]
        assert ev is not None
        assert (ev.change.value, str(ev.conn.src), str(ev.conn.dst), ev.conn.proto,
                ev.conn.sport, ev.conn.dport, ev.tcp.name if ev.tcp else None) == (
            want["change"], want["src"], want["dst"], want["proto"], want["sport"],
            want["dport"], want["tcp"])
    kinds = [(v["event"]["change"], v["event"]["tcp"]) for v in VECTORS["messages"]]
    assert ("update", "TIME_WAIT") in kinds and ("gone", None) in kinds


def test_ended_means_destroyed_or_closed_both_ways() -> None:
    conn = Conn(CN, MN1, 6, 40000, 80)
    assert ConnEvent(Change.GONE, conn).ended
    assert ConnEvent(Change.UPDATE, conn, TcpState.TIME_WAIT).ended
    assert ConnEvent(Change.UPDATE, conn, TcpState.CLOSE).ended
    assert not ConnEvent(Change.UPDATE, conn, TcpState.FIN_WAIT).ended
    assert not ConnEvent(Change.NEW, conn, TcpState.SYN_SENT).ended


@given(st.sampled_from(list(Change)), st.sampled_from([6, 17, 58]),
       st.integers(0, 65535), st.integers(0, 65535),
       st.one_of(st.none(), st.sampled_from(list(TcpState))))
def test_encode_then_parse_round_trips(change: Change, proto: int, sport: int, dport: int,
                                       tcp: TcpState | None) -> None:
    ev = ConnEvent(change, Conn(CN, MN1, proto, sport, dport), tcp)
    assert _parsed(encode(ev).hex()) == ev


@given(st.binary(max_size=300), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_garbage_never_raises(body: bytes, mtype: int, flags: int) -> None:
    parse(mtype, flags, body)  # a bad message is None or an event, never an exception


def test_other_families_and_subsystems_are_ignored() -> None:
    raw = encode(ConnEvent(Change.NEW, Conn(CN, MN1, 17, 1, 2)))
    body = bytearray(raw[16:])
    body[0] = 2  # AF_INET
    assert parse(int.from_bytes(raw[4:6], "little"), 0, bytes(body)) is None
    assert parse(0x0200, 0, raw[16:]) is None  # not ctnetlink (an expectation)
    assert parse(0x0100, 0, raw[16:20]) is None  # no attributes at all


# -- The flow book --------------------------------------------------------------------


def _side(addr: A) -> Prefix | None:
    return HNP1 if HNP1.contains(addr) else None


def test_a_flow_is_oriented_mn_side_first() -> None:
    down = flow_of(Conn(CN, MN1, 17, 40000, 5001), _side)
    up = flow_of(Conn(MN1, CN, 6, 5001, 443), _side)
    want = FlowFilter(Prefix.host(MN1), Prefix.host(CN), 17, 5001, 40000)
    assert down == (want, HNP1)
    assert up == (FlowFilter(Prefix.host(MN1), Prefix.host(CN), 6, 5001, 443), HNP1)
    assert flow_of(Conn(CN, A("2001:db8:7::1"), 17, 1, 2), _side) is None  # no MN
    assert flow_of(Conn(CN, MN1, 58, 0, 0), _side) is None  # ICMPv6: no end to see


def test_the_book_knows_the_last_flow_of_a_prefix() -> None:
    book = FlowBook()
    a = FlowFilter(Prefix.host(MN1), Prefix.host(CN), 17, 1, 2)
    b = a._replace(sport=3)
    assert book.count(HNP1) is None
    assert book.add(HNP1, [a, b, a]) == (a, b)
    assert book.add(HNP1, [a]) == ()
    assert not book.end(HNP1, a)
    assert book.end(HNP1, b)
    assert book.count(HNP1) == 0 and book.prefix_of(a) is None


def test_the_book_is_bounded_per_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dmanchor.fm.flows.MAX_FLOWS_PER_PREFIX", 3)
    book = FlowBook()
    flows = [FlowFilter(Prefix.host(MN1), Prefix.host(CN), 17, i, 2) for i in range(5)]
    assert book.add(HNP1, flows) == tuple(flows[:3])
    assert book.count(HNP1) == 3 and book.over_cap == 2


def test_a_watched_flow_ends_only_once_its_counters_stop() -> None:
    book = FlowBook()
    f = FlowFilter(Prefix.host(MN1), Prefix.host(CN), 17, 1, 2)
    book.add(HNP1, [f])  # handed over: conntrack here never saw it
    assert book.watched() == [(HNP1, f)]
    used = FlowUsage(packets_down=10)
    assert book.idle({f: used}, 0.0, 1.0) == []
    assert book.idle({f: used._replace(packets_down=20)}, 0.9, 1.0) == []  # still going
    assert book.idle({f: used._replace(packets_down=20)}, 1.5, 1.0) == []  # 0.6 s quiet
    assert book.idle({f: used._replace(packets_down=20)}, 2.0, 1.0) == [(HNP1, f)]


def test_a_dump_only_judges_flows_seen_before_it() -> None:
    book = FlowBook()
    old = FlowFilter(Prefix.host(MN1), Prefix.host(CN), 17, 1, 2)
    new = old._replace(sport=9)
    book.add(HNP1, [old, new])
    book.seen[old] = 1.0
    book.seen[new] = 2.5  # reported while the dump (taken at 2.0) ran
    assert book.vanished(set(), taken=2.0) == [old]


def test_charging_records_are_bounded() -> None:
    book = FlowBook()
    for i in range(5000):
        book.record(FlowFilter(Prefix.host(MN1), Prefix.host(CN), 17, i, 2),
                    FlowUsage(packets_down=1))
    assert len(book.charged) == 4096
    assert book.recorded(FlowFilter(Prefix.host(MN1))).packets_down == 4096


# -- The anchor's verdicts ------------------------------------------------------------


def _ev(change: Change, sport: int = 40000, tcp: TcpState | None = None) -> list[ConnEvent]:
    return [ConnEvent(change, Conn(CN, MN1, 17 if tcp is None else 6, sport, 5001), tcp)]


def test_an_anchored_prefix_reports_its_flows_coming_and_going() -> None:
    """On a prefix anchored here conntrack sees every packet: its word is
    final.  The binding hears when the prefix starts and stops carrying flows."""
    w = world("tunnel")
    ar1 = w.ar[1]
    sent = ar1.endpoint.stats.sent.copy()
    ar1.conn_events(_ev(Change.NEW), 0.2)
    ar1.conn_events(_ev(Change.NEW, 40001, TcpState.SYN_SENT), 0.2)  # no new report
    assert ar1.flows.count(HNP1) == 2
    ar1.conn_events(_ev(Change.GONE), 0.3)  # the UDP flow went idle
    assert ar1.flows.count(HNP1) == 1
    ar1.conn_events(_ev(Change.UPDATE, 40001, TcpState.FIN_WAIT), 0.3)  # half closed
    assert ar1.flows.count(HNP1) == 1
    ar1.conn_events(_ev(Change.UPDATE, 40001, TcpState.TIME_WAIT), 0.4)
    assert ar1.flows.count(HNP1) == 0
    assert ar1.stats.counters["flow-ended"] == 2
    reports = ar1.endpoint.stats.sent - sent
    assert reports[m.MsgType.LOCATION_UPDATE] == 2  # 0 -> flows, flows -> 0


def test_events_of_strangers_are_ignored() -> None:
    w = world("tunnel")
    ar1 = w.ar[1]
    ar1.conn_events([ConnEvent(Change.NEW, Conn(CN, A("2001:db8:7::1"), 17, 1, 2))], 0.2)
    ar1.conn_events([ConnEvent(Change.NEW, Conn(CN, A(IP1 + (1 << 64)), 17, 1, 2))], 0.2)
    assert ar1.flows.open == {}


def test_a_host_based_mn_keeps_its_own_sessions() -> None:
    """Fig 2a/2b: the network keeps none of its prefixes, so it reports none
    of its flows (a router it moves to would keep them otherwise)."""
    w = world("tunnel")
    ar1 = w.ar[1]
    ar1.s = replace(ar1.s, host_based={"mn": "mn"})
    ar1.conn_events(_ev(Change.NEW), 0.2)
    assert ar1.flows.open == {}


def test_a_kept_prefix_waits_for_its_counters() -> None:
    """On a kept prefix conntrack may see only part of a flow (decapsulated
    packets skip it): its GONE makes a candidate, the counters decide."""
    w = world("tunnel", flow_idle=0.5)
    ar2 = w.ar[2]
    ar2.attach("mn", "mn2", [HNP2], {HNP1: []}, 0.2)
    assert ar2.attached["mn"].visiting == (HNP1,)
    ar2.conn_events(_ev(Change.NEW), 0.3)
    ar2.conn_events(_ev(Change.GONE), 0.4)
    assert ar2.flows.count(HNP1) == 1  # not yet
    flow = FlowFilter(Prefix.host(MN1), Prefix.host(CN), 17, 5001, 40000)
    ar2.conn_present([], 0.5, 0.5, {flow: FlowUsage(packets_down=100)})
    ar2.conn_present([], 0.8, 0.8, {flow: FlowUsage(packets_down=150)})  # still going
    ar2.conn_present([], 1.2, 1.2, {flow: FlowUsage(packets_down=150)})
    assert ar2.flows.count(HNP1) == 1
    ar2.conn_present([], 1.4, 1.4, {flow: FlowUsage(packets_down=150)})
    assert ar2.flows.count(HNP1) == 0
    assert ar2.flows.recorded(flow) == FlowUsage()  # the memory plane charged nothing
