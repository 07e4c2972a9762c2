"""SM on the wire: forged, unauthenticated and replayed messages are dropped."""

from __future__ import annotations

import pytest

from dmanchor.wire import decode
from dmanchor.wire.auth import Drop, Key, Security
from dmanchor.wire.codec import Flags
from dmanchor.wire.messages import LocationQuery
from tests.examples import HNP1

K1 = Key(1, b"k" * 32, "n-ar")
K2 = Key(2, b"q" * 32, "p-ar")
NOW = 1_800_000_000.0


def sender(key: Key = K1) -> Security:
    return Security([key], send_key_id=key.key_id)


def receiver(**kw: object) -> Security:
    return Security([K1, K2], require_auth=True, **kw)  # type: ignore[arg-type]


def check(rx: Security, data: bytes, now: float = NOW) -> Drop | None:
    return rx.check(data, decode(data), "2001:db8::1", now).drop


def test_signed_message_is_accepted_with_its_owner() -> None:
    rx = receiver()
    data = sender().encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)
    verdict = rx.check(data, decode(data), "h", NOW)
    assert verdict.drop is None and verdict.owner == "n-ar"


def test_unsigned_is_dropped_when_required() -> None:
    rx = receiver()
    data = Security().encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)
    assert check(rx, data) is Drop.UNAUTHENTICATED
    assert rx.drops == {"unauthenticated": 1}


def test_unsigned_is_accepted_when_policy_allows_except_from_listed_hosts() -> None:
    rx = Security([K1], require_auth_from=frozenset({"2001:db8::bad"}))
    data = Security().encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)
    assert rx.check(data, decode(data), "2001:db8::1", NOW).drop is None
    assert rx.check(data, decode(data), "2001:db8::bad", NOW).drop is Drop.UNAUTHENTICATED


def test_forged_mac_is_dropped() -> None:
    rx = receiver()
    data = bytearray(sender().encode(LocationQuery(HNP1), 1, Flags.NONE, NOW))
    data[-1] ^= 0x01
    assert check(rx, bytes(data)) is Drop.BAD_MAC


def test_tampered_body_is_dropped() -> None:
    rx = receiver()
    data = bytearray(sender().encode(LocationQuery(HNP1), 1, Flags.NONE, NOW))
    data[20] ^= 0x10  # inside the prefix
    assert check(rx, bytes(data)) is Drop.BAD_MAC


def test_wrong_key_secret_is_dropped_and_unknown_key_is_counted() -> None:
    rx = receiver()
    impostor = Security([Key(1, b"x" * 32, "evil")], send_key_id=1)
    assert check(rx, impostor.encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)) is Drop.BAD_MAC
    stranger = Security([Key(9, b"x" * 32, "evil")], send_key_id=9)
    data = stranger.encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)
    assert check(rx, data) is Drop.UNKNOWN_KEY
    assert rx.drops == {"bad-mac": 1, "unknown-key": 1}


def test_exact_replay_is_dropped() -> None:
    rx = receiver()
    data = sender().encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)
    assert check(rx, data) is None
    assert check(rx, data, NOW + 0.5) is Drop.REPLAY
    assert rx.drops == {"replay": 1}


def test_retransmission_is_a_fresh_message_not_a_replay() -> None:
    tx, rx = sender(), receiver()
    first = tx.encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)
    again = tx.encode(LocationQuery(HNP1), 1, Flags.RETRANSMIT, NOW)  # same clock reading
    assert check(rx, first) is None
    assert check(rx, again) is None


def test_stale_timestamp_is_dropped() -> None:
    rx = receiver(clock_window=5.0)
    data = sender().encode(LocationQuery(HNP1), 1, Flags.NONE, NOW - 6)
    assert check(rx, data) is Drop.STALE


def test_reordered_messages_within_window_pass_older_ones_do_not() -> None:
    tx, rx = sender(), receiver(reorder_window=1.0)
    old = tx.encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)
    mid = tx.encode(LocationQuery(HNP1), 2, Flags.NONE, NOW + 0.5)
    new = tx.encode(LocationQuery(HNP1), 3, Flags.NONE, NOW + 2.0)
    assert check(rx, mid, NOW + 2) is None
    assert check(rx, old, NOW + 2) is None  # 0.5 s behind the newest: reordering
    assert check(rx, new, NOW + 2) is None
    assert check(rx, old, NOW + 2) is Drop.REPLAY


def test_replay_state_is_per_peer() -> None:
    rx = receiver()
    a = sender(K1).encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)
    b = sender(K2).encode(LocationQuery(HNP1), 1, Flags.NONE, NOW)
    assert check(rx, a) is None
    assert check(rx, b) is None


def test_key_validation() -> None:
    with pytest.raises(ValueError):
        Key(1, b"short", "x")
    with pytest.raises(ValueError):
        Security([K1], send_key_id=5)
