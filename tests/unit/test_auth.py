"""SM on the wire: forged, unauthenticated and replayed messages are dropped."""

from __future__ import annotations

import pytest

from dmanchor.wire import decode
from dmanchor.wire.auth import Drop, Key, Security, receiver_id
from dmanchor.wire.codec import Flags
from dmanchor.wire.messages import LocationQuery
from tests.examples import HNP1

K1 = Key(1, b"k" * 32, "n-ar")
K2 = Key(2, b"q" * 32, "p-ar")
NOW = 1_800_000_000.0
RX = ("2001:db8::10", 4800)
"""The receiver every message here is addressed to."""


def sender(key: Key = K1) -> Security:
    return Security([key], send_key_id=key.key_id)


def receiver(**kw: object) -> Security:
    return Security([K1, K2], require_auth=True, **kw)  # type: ignore[arg-type]


def check(rx: Security, data: bytes, now: float = NOW, source: str = "2001:db8::1",
          local: tuple[str, int] = RX) -> Drop | None:
    return rx.check(data, decode(data), source, now, local).drop


def signed(tx: Security, seq: int = 1, now: float = NOW, flags: Flags = Flags.NONE,
           dest: tuple[str, int] = RX) -> bytes:
    return tx.encode(LocationQuery(HNP1), seq, flags, now, dest)


def test_signed_message_is_accepted_with_its_owner() -> None:
    rx = receiver()
    data = signed(sender())
    verdict = rx.check(data, decode(data), "h", NOW, RX)
    assert verdict.drop is None and verdict.owner == "n-ar"


def test_unsigned_is_dropped_when_required() -> None:
    rx = receiver()
    data = signed(Security())
    assert check(rx, data) is Drop.UNAUTHENTICATED
    assert rx.drops == {"unauthenticated": 1}


def test_unsigned_is_accepted_when_policy_allows_except_from_listed_hosts() -> None:
    rx = Security([K1], require_auth_from=frozenset({"2001:db8::bad"}))
    data = signed(Security())
    assert check(rx, data) is None
    assert check(rx, data, source="2001:db8::bad") is Drop.UNAUTHENTICATED


def test_forged_mac_is_dropped() -> None:
    rx = receiver()
    data = bytearray(signed(sender()))
    data[-1] ^= 0x01
    assert check(rx, bytes(data)) is Drop.BAD_MAC


def test_tampered_body_is_dropped() -> None:
    rx = receiver()
    data = bytearray(signed(sender()))
    data[20] ^= 0x10  # inside the prefix
    assert check(rx, bytes(data)) is Drop.BAD_MAC


def test_wrong_key_secret_is_dropped_and_unknown_key_is_counted() -> None:
    rx = receiver()
    impostor = Security([Key(1, b"x" * 32, "evil")], send_key_id=1)
    assert check(rx, signed(impostor)) is Drop.BAD_MAC
    stranger = Security([Key(9, b"x" * 32, "evil")], send_key_id=9)
    data = signed(stranger)
    assert check(rx, data) is Drop.UNKNOWN_KEY
    assert rx.drops == {"bad-mac": 1, "unknown-key": 1}


def test_exact_replay_is_dropped() -> None:
    rx = receiver()
    data = signed(sender())
    assert check(rx, data) is None
    assert check(rx, data, NOW + 0.5) is Drop.REPLAY
    assert rx.drops == {"replay": 1}


def test_retransmission_is_a_fresh_message_not_a_replay() -> None:
    tx, rx = sender(), receiver()
    first = signed(tx)
    again = signed(tx, flags=Flags.RETRANSMIT)  # same clock reading
    assert check(rx, first) is None
    assert check(rx, again) is None


def test_stale_timestamp_is_dropped() -> None:
    rx = receiver(clock_window=5.0)
    data = signed(sender(), now=NOW - 6)
    assert check(rx, data) is Drop.STALE


def test_reordered_messages_within_window_pass_older_ones_do_not() -> None:
    tx, rx = sender(), receiver(reorder_window=1.0)
    old = signed(tx, 1, NOW)
    mid = signed(tx, 2, NOW + 0.5)
    new = signed(tx, 3, NOW + 2.0)
    assert check(rx, mid, NOW + 2) is None
    assert check(rx, old, NOW + 2) is None  # 0.5 s behind the newest: reordering
    assert check(rx, new, NOW + 2) is None
    assert check(rx, old, NOW + 2) is Drop.REPLAY


@pytest.mark.parametrize("step", [3600.0, -3600.0], ids=["forward", "back"])
def test_a_wall_clock_step_on_both_ends_stalls_nothing_and_opens_no_replay(
        step: float) -> None:
    """The machines' wall clocks step by an hour (NTP, ``date -s``): signed
    messages keep flowing at once; what was signed before the step is not
    accepted again."""
    wall = [NOW]
    tx = Security([K1], send_key_id=1, wall=lambda: wall[0])
    rx = Security([K1, K2], require_auth=True, wall=lambda: wall[0])
    before = [signed(tx, i) for i in range(3)]
    assert [check(rx, d) for d in before] == [None] * 3
    wall[0] += step
    after = [signed(tx, 10 + i) for i in range(3)]
    assert [check(rx, d) for d in after] == [None] * 3
    assert check(rx, before[0]) in (Drop.STALE, Drop.REPLAY)
    assert check(rx, after[0]) is Drop.REPLAY
    assert rx.clock_steps == (1 if step < 0 else 0)


def test_replay_state_is_per_key() -> None:
    rx = receiver()
    a = signed(sender(K1))
    b = signed(sender(K2))
    assert check(rx, a) is None
    assert check(rx, b) is None  # same timestamp, another key: not a replay


def test_replay_from_another_source_address_is_dropped() -> None:
    # Issue 15: the window was per (key, source), so the same signed bytes
    # were accepted once from each of several addresses.
    rx = receiver()
    data = signed(sender())
    assert check(rx, data, source="2001:db8::1") is None
    assert check(rx, data, source="2001:db8::66") is Drop.REPLAY
    assert check(rx, data, source="10.0.0.9") is Drop.REPLAY
    assert rx.drops == {"replay": 2}


def test_message_for_one_receiver_is_refused_by_every_other() -> None:
    # Two receivers sharing the sender's key: bytes captured on their way to
    # one fail the MAC at the other (and at another port of the same host).
    data = signed(sender(), dest=RX)
    other = receiver()
    assert check(other, data, local=("2001:db8::20", 4800)) is Drop.BAD_MAC
    assert check(other, data, local=("2001:db8::10", 4801)) is Drop.BAD_MAC
    assert check(other, data, local=RX) is None


def test_receiver_unknown_to_the_driver_cannot_verify() -> None:
    rx = receiver()
    data = signed(sender())
    assert rx.check(data, decode(data), "h", NOW, None).drop is Drop.BAD_MAC


def test_receiver_id_maps_ipv4_and_ignores_scope() -> None:
    assert receiver_id(("127.0.0.1", 1)) == receiver_id(("::ffff:127.0.0.1", 1))
    assert receiver_id(("fe80::1%eth0", 7)) == receiver_id(("fe80::1", 7))
    assert len(receiver_id(RX)) == 18


def test_key_validation() -> None:
    with pytest.raises(ValueError):
        Key(1, b"short", "x")
    with pytest.raises(ValueError):
        Security([K1], send_key_id=5)
