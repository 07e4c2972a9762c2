"""MN prefix allocations: one /64 per MN, the same on return, durable."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmanchor.access.alloc import PoolExhausted, PrefixAllocator, StateError
from dmanchor.wire.types import Prefix

POOL = Prefix.parse("2001:db8:2::/48")


def test_each_mn_gets_its_own_64_and_the_same_one_again() -> None:
    a = PrefixAllocator(POOL)
    one, two = a.get("02:00:00:00:00:01"), a.get("02:00:00:00:00:02")
    assert (one, two) == (Prefix.parse("2001:db8:2:1::/64"), Prefix.parse("2001:db8:2:2::/64"))
    assert a.get("02:00:00:00:00:01") == one


def test_allocations_survive_a_restart_and_are_never_given_twice(tmp_path: Path) -> None:
    state = tmp_path / "mns.json"
    before = PrefixAllocator(POOL, state)
    first = before.get("mn-a")
    second = before.get("mn-b")
    # A restarted node (a new allocator from the same file): the prefixes in
    # use stay with their MNs; a new MN gets a free one.
    after = PrefixAllocator(POOL, state)
    assert after.get("mn-b") == second and after.get("mn-a") == first
    assert after.get("mn-c") not in (first, second)


def test_a_full_pool_is_an_error() -> None:
    a = PrefixAllocator(Prefix.parse("2001:db8:2::/62"))
    for i in range(3):  # /62: four /64s, the first kept by the router
        a.get(f"mn-{i}")
    with pytest.raises(PoolExhausted):
        a.get("one-too-many")


@pytest.mark.parametrize("text", ["not json", '{"mns": {"x": "2001:db8:9::/64"}}', "[]"])
def test_a_bad_state_file_is_refused_not_reset(tmp_path: Path, text: str) -> None:
    state = tmp_path / "mns.json"
    state.write_text(text)
    with pytest.raises(StateError, match=r"mns\.json"):
        PrefixAllocator(POOL, state)
