"""Wire protocol: golden vectors, round trips, fuzzing, strictness."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmanchor.wire import REGISTRY, Packet, WireError, decode, encode, from_json, to_json
from dmanchor.wire.auth import receiver_id
from dmanchor.wire.codec import HEADER, Flags, compute_mac
from dmanchor.wire.ie import IE
from dmanchor.wire.messages import DataPlaneStatus, LocationQuery, LocationUpdate, Message
from dmanchor.wire.types import Load, Prefix
from tests.examples import EXAMPLES, HNP1
from tests.strategies import message_strategy, messages

VECTORS = Path(__file__).parent.parent / "vectors"
VECTOR_FILES = sorted(VECTORS.glob("*.json"))


def test_every_message_type_has_an_example_and_a_vector() -> None:
    assert {type(m).TYPE for m in EXAMPLES} == {s.cls.TYPE for s in REGISTRY.values()}
    names = {p.stem for p in VECTOR_FILES}
    assert names == {s.cls.TYPE.name.lower() for s in REGISTRY.values()}


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_golden_vector_both_ways(path: Path) -> None:
    vec = json.loads(path.read_text())
    # bytes -> JSON
    assert to_json(decode(bytes.fromhex(vec["hex"]))) == vec["json"]
    assert to_json(decode(bytes.fromhex(vec["signed_hex"]))) == vec["signed_json"]
    # JSON -> bytes
    packet = from_json(vec["json"])
    assert encode(packet.message, packet.seq, packet.flags).hex() == vec["hex"]
    auth = vec["signed_json"]["auth"]
    host, _, port = vec["receiver"].rpartition(":")
    signed = encode(
        packet.message, packet.seq, packet.flags, key_id=auth["key_id"],
        secret=bytes(range(32)), timestamp_us=auth["timestamp_us"],
        receiver=receiver_id((host.strip("[]"), int(port))),
    )
    assert signed.hex() == vec["signed_hex"]
    # The MAC covers the receiver: the same bytes verify there, nowhere else.
    pkt = decode(signed)
    assert pkt.auth is not None
    assert compute_mac(signed, pkt.auth, bytes(range(32)),
                       receiver_id((host.strip("[]"), int(port)))) == pkt.auth.mac
    assert compute_mac(signed, pkt.auth, bytes(range(32)),
                       receiver_id((host.strip("[]"), int(port) + 1))) != pkt.auth.mac


@pytest.mark.parametrize("code", sorted(REGISTRY), ids=lambda c: REGISTRY[c].cls.__name__)
def test_round_trip_each_type(code: int) -> None:
    @settings(max_examples=60, deadline=None)
    @given(message_strategy(code), st.integers(0, 0xFFFFFFFF))
    def check(msg: Message, seq: int) -> None:
        packet = decode(encode(msg, seq))
        assert packet.message == msg
        assert packet.seq == seq
        again = from_json(json.loads(json.dumps(to_json(packet))))
        assert again.message == msg

    check()


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(data)


@settings(max_examples=800, deadline=None)
@given(messages, st.data())
def test_mutated_messages_raise_only_wire_error(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(encode(msg, 1))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(WireError):
            decode(candidate)


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
))
def test_arbitrary_json_raises_only_wire_error(doc: object) -> None:
    with contextlib.suppress(WireError):
        from_json(doc)


def _query_bytes() -> bytes:
    return encode(LocationQuery(HNP1), 5)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:5], "truncated"),
        (lambda b: bytes([2]) + b[1:], "bad-version"),
        (lambda b: b + b"\0", "bad-length"),
        (lambda b: b[:1] + bytes([200]) + b[2:], "unknown-type"),
        (lambda b: b[:2] + b"\x80\x00" + b[4:], "bad-header"),
    ],
)
def test_header_errors_name_their_reason(mutate: object, reason: str) -> None:
    assert callable(mutate)
    with pytest.raises(WireError) as info:
        decode(mutate(_query_bytes()))
    assert info.value.reason == reason


def test_missing_required_ie_is_rejected() -> None:
    head = HEADER.pack(1, int(LocationQuery.TYPE), 0, 1, HEADER.size, 0)
    with pytest.raises(WireError) as info:
        decode(head)
    assert info.value.reason == "missing-ie"


def test_duplicate_single_ie_is_rejected() -> None:
    raw = _query_bytes()
    ie = raw[HEADER.size:]
    body = raw[:HEADER.size] + ie + ie
    body = body[:8] + len(body).to_bytes(2, "big") + body[10:]
    with pytest.raises(WireError) as info:
        decode(body)
    assert info.value.reason == "duplicate-ie"


def test_unknown_ie_rejected_unless_optional_to_understand() -> None:
    raw = _query_bytes()
    for code, ok in ((0x0777, False), (0x8777, True)):
        extra = code.to_bytes(2, "big") + (3).to_bytes(2, "big") + b"abc"
        body = raw + extra
        body = body[:8] + len(body).to_bytes(2, "big") + body[10:]
        if ok:
            assert decode(body).message == LocationQuery(HNP1)
        else:
            with pytest.raises(WireError):
                decode(body)


def test_fm5_2_report_without_state_still_decodes() -> None:
    """A report from a sender that predates DP_STATE (the previous golden
    vector) is still an FM:5-2 report; DP_STATE itself is skippable."""
    old = bytes.fromhex("01130000000003fb001a0000000a0004702d6172000900020125")
    msg = decode(old).message
    assert isinstance(msg, DataPlaneStatus) and msg.state is None
    assert msg.load == Load(True, 37)
    assert IE.DP_STATE & 0x8000


def test_prefix_with_host_bits_is_rejected_both_ways() -> None:
    with pytest.raises(WireError):
        Prefix.parse("2001:db8::1/64")
    with pytest.raises(WireError):
        encode(LocationQuery(Prefix(1, 64)), 1)
    raw = bytearray(_query_bytes())
    raw[-1] = 1  # last byte of the prefix address
    with pytest.raises(WireError) as info:
        decode(bytes(raw))
    assert info.value.reason == "bad-prefix"


def test_out_of_range_values_are_refused_at_encode() -> None:
    from ipaddress import IPv6Address

    with pytest.raises(WireError):
        encode(LocationUpdate(HNP1, IPv6Address(1), 1 << 32), 1)
    with pytest.raises(WireError):
        encode(LocationQuery(HNP1), 1 << 32)


def test_flags_survive() -> None:
    p = decode(encode(LocationQuery(HNP1), 9, Flags.RESPONSE | Flags.RETRANSMIT))
    assert p.flags == Flags.RESPONSE | Flags.RETRANSMIT
    assert to_json(p)["flags"] == ["RESPONSE", "RETRANSMIT"]
    assert from_json(to_json(p)) == Packet(p.message, 9, p.flags)


def test_labels_cover_every_draft_behaviour() -> None:
    labels = {s.cls.LABEL for s in REGISTRY.values()}
    draft = {
        "LM:1-1", "LM:1-2", "LM:1-3", "LM:1-4", "LM:2-1", "LM:2-2", "LM:2-3",
        "FM:1", "FM:2", "FM:4-1", "FM:4-2", "FM:4-3", "FM:4-4",
        "FM:5-1", "FM:5-2", "FM:6-1", "FM:6-2",
    }
    assert draft <= labels


def test_fm6_2_may_name_the_anchor_that_keeps_the_prefix() -> None:
    """BUFFER_READY's optional NODE_ID (a switch whose lease could not move,
    FM:3-2): round-trips when present, and leaves the bytes of a message
    without it as they were (the golden vector)."""
    from ipaddress import IPv6Address

    from dmanchor.wire.messages import BufferReady

    p = HNP1
    kept = BufferReady(p, IPv6Address("2001:db8:ff::2"), "ar1")
    assert decode(encode(kept, 7)).message == kept
    plain = json.loads((VECTORS / "buffer_ready.json").read_text())["hex"]
    assert encode(BufferReady(p, IPv6Address("2001:db8:ff::2")), 1022).hex() == plain
    assert len(encode(kept, 1022)) > len(bytes.fromhex(plain))
