"""Unsolicited RAs (RFC 4861 6.2.4) and what they carry."""

from __future__ import annotations

import itertools
import random

import pytest

from dmanchor.access.ra import (
    MAX_INITIAL_RTR_ADVERT_INTERVAL,
    MAX_INITIAL_RTR_ADVERTISEMENTS,
    RaSchedule,
    link_advertisement,
    shortest_valid,
)
from dmanchor.wire.types import Prefix

HNP1, HNP2 = Prefix.parse("2001:db8:1:1::/64"), Prefix.parse("2001:db8:2:1::/64")


def run(schedule: RaSchedule, until: float) -> list[tuple[float, str]]:
    """Every (time, link) RA the schedule asks for up to ``until``."""
    sent: list[tuple[float, str]] = []
    while (at := schedule.next_deadline()) is not None and at <= until:
        sent.extend((at, link) for link in schedule.due(at))
    return sent


def test_links_advertise_at_once_then_at_random_intervals_within_bounds() -> None:
    s = RaSchedule(["mn1", "mn2"], now=100.0, max_interval=600, rng=random.Random(7))
    sent = run(s, 100.0 + 7200)
    for link in ("mn1", "mn2"):
        times = [t for t, x in sent if x == link]
        assert times[0] == 100.0  # the link is up: advertise at once
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # The first few no more than 16 s apart, then 200-600 s (MinRtrAdvInterval
        # defaults to a third of the maximum).
        initial = gaps[:MAX_INITIAL_RTR_ADVERTISEMENTS]
        assert all(g <= MAX_INITIAL_RTR_ADVERT_INTERVAL for g in initial)
        assert all(200 <= g <= 600 for g in gaps[MAX_INITIAL_RTR_ADVERTISEMENTS:])
        later = gaps[MAX_INITIAL_RTR_ADVERTISEMENTS:]
        assert len(set(later)) == len(later)  # random, not a fixed period


def test_a_solicited_ra_pushes_the_next_unsolicited_one_on() -> None:
    s = RaSchedule(["mn1"], now=0.0, max_interval=4, rng=random.Random(1))
    run(s, 100.0)
    before = s.next_deadline()
    assert before is not None
    s.sent("mn1", before - 1.0)  # an RS was answered just before it was due
    after = s.next_deadline()
    assert after is not None and after >= before - 1.0 + 3.0
    with pytest.raises(KeyError):
        s.sent("eth9", 0.0)


def test_short_lifetimes_bring_the_next_ra_forward_so_addresses_never_lapse() -> None:
    """A prefix advertised for 2 s (a short anchoring lifetime, or a lease
    nearly run out) is advertised again within a third of that: a host's
    address is refreshed long before it expires."""
    s = RaSchedule(["mn1"], now=0.0, max_interval=600, rng=random.Random(3))
    run(s, 1000.0)
    ra = link_advertisement([HNP1], [HNP2], 600, {HNP1: 2.0})
    assert shortest_valid(ra) == 2.0
    for step in range(20):
        now = 1000.0 + step * 0.5
        s.lifetimes("mn1", now, shortest_valid(ra))
        due = s.next_deadline()
        assert due is not None and due <= now + 2.0 / 3
    s.lifetimes("mn1", 2000.0, None)  # nothing advertised: the schedule stands
    assert shortest_valid(link_advertisement([], [], 600)) is None


@pytest.mark.parametrize(("maximum", "minimum"), [(3, None), (2000, None), (10, 8), (10, 2)])
def test_intervals_outside_rfc_4861_are_refused(maximum: float, minimum: float | None) -> None:
    with pytest.raises(ValueError):
        RaSchedule(["mn1"], 0.0, maximum, minimum)


def test_lifetimes_follow_the_delegation_and_previous_prefixes_are_deprecated() -> None:
    ra = link_advertisement((HNP2,), (HNP1, HNP2), 600, lease_left={HNP2: 90.7, HNP1: -3})
    assert [(p.prefix, p.valid, p.preferred) for p in ra.prefixes] == [
        (HNP2, 90, 90),   # no longer than its lease has left
        (HNP1, 0, 0),     # its lease ran out: the host stops using it
    ]
    plain = link_advertisement((HNP2,), (HNP1,), 600)
    assert [(p.prefix, p.valid, p.preferred) for p in plain.prefixes] == [
        (HNP2, 600, 600), (HNP1, 600, 0)]
