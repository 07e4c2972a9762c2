"""End markers are signed: a forged, replayed, stale or misdirected marker
does not lift a hold (issue 15 item 5)."""

from __future__ import annotations

import struct

from dmanchor.dataplane.markers import MARKER_PORT, Forged, MarkerAuth, is_marker
from dmanchor.wire.auth import Key, Role
from dmanchor.wire.types import Prefix

R = Key(1, b"r" * 32, "r", frozenset({Role.FMDP}))
AR = Key(2, b"a" * 32, "ar1", frozenset({Role.ANCHOR}))
MN = Key(3, b"m" * 32, "mn", frozenset({Role.MN}))
HNP = Prefix.parse("2001:db8:1:1::/64")
NOW = 1_800_000_000.0


def packet(payload: bytes, dst: Prefix = HNP) -> bytes:
    """An IPv6/UDP packet carrying ``payload`` to MARKER_PORT."""
    udp = struct.pack("!HHHH", 40000, MARKER_PORT, 8 + len(payload), 0)
    ip6 = (b"\x60\0\0\0" + struct.pack("!HBB", 8 + len(payload), 17, 64)
           + bytes(16) + (dst.network + 1).to_bytes(16, "big"))
    return ip6 + udp + payload


def node(key: Key) -> MarkerAuth:
    return MarkerAuth([R, AR, MN], key.key_id)


def test_a_router_s_marker_is_believed_once() -> None:
    m = packet(node(R).payload(HNP, NOW))
    rx = node(AR)
    assert is_marker(m)
    assert rx.check(m, HNP, NOW + 0.01) is None
    assert rx.check(m, HNP, NOW + 0.02) is Forged.REPLAY


def test_forged_markers_do_not_end_a_hold() -> None:
    rx = node(AR)
    unsigned = packet(MarkerAuth([], None).payload(HNP, NOW))
    assert is_marker(unsigned)
    assert rx.check(unsigned, HNP, NOW) is Forged.UNSIGNED
    tampered = bytearray(packet(node(R).payload(HNP, NOW)))
    tampered[-1] ^= 1
    assert rx.check(bytes(tampered), HNP, NOW) is Forged.BAD_MAC
    # An MN's key does not make markers (only routers' data planes send them).
    assert rx.check(packet(node(MN).payload(HNP, NOW)), HNP, NOW) is Forged.UNKNOWN_KEY
    # Another prefix's marker, sent to this one's address.
    other = node(R).payload(Prefix.parse("2001:db8:1:2::/64"), NOW)
    assert rx.check(packet(other), HNP, NOW) is Forged.WRONG_PREFIX
    assert rx.check(packet(node(R).payload(HNP, NOW - 60)), HNP, NOW) is Forged.STALE


def test_an_insecure_node_believes_unsigned_markers() -> None:
    lab = MarkerAuth([], None, require=False)
    assert lab.check(packet(lab.payload(HNP, NOW)), HNP, NOW) is None
