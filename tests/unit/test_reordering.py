"""Reordering counted as RFC 4737 does (section 3: below NextExp; 4.2: extent)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmanchor.reordering import Reordering, measure


def test_in_order_stream_has_no_reordering() -> None:
    assert measure(list(range(100))) == Reordering()


def test_rfc4737_example_counts_each_packet_below_next_expected() -> None:
    # 5 overtakes 3 and 4: both arrive below NextExp = 6.  Extent of 4: it
    # arrived at position 5, the earliest larger number (5) at position 3.
    got = measure([0, 1, 2, 5, 3, 4, 6])
    assert (got.reordered, got.extent) == (2, 2)


def test_a_late_burst_counts_every_packet_not_one_descent() -> None:
    seqs = [0, *range(10, 20), *range(1, 10)]
    descents = sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    got = measure(seqs)
    assert descents == 1
    assert got.reordered == 9
    assert got.extent == 18  # packet 9 arrived 18 positions after 10


def test_late_time_is_from_the_first_packet_that_overtook() -> None:
    seqs = [0, 2, 3, 1]
    times = [0.0, 0.010, 0.011, 0.0135]
    got = measure(seqs, times)
    assert got.reordered == 1 and got.extent == 2
    assert got.late_ms == pytest.approx(3.5)


def test_duplicates_are_counted_apart_not_as_reordered() -> None:
    got = measure([0, 1, 2, 1, 3, 3])
    assert (got.reordered, got.duplicates) == (0, 2)


def test_times_must_match_the_arrivals() -> None:
    with pytest.raises(ValueError):
        measure([0, 1], [0.0])


@given(st.permutations(list(range(30))))
def test_counts_match_the_definition_by_brute_force(seqs: list[int]) -> None:
    got = measure(seqs)
    late = [i for i, s in enumerate(seqs) if any(p > s for p in seqs[:i])]
    assert got.reordered == len(late)
    extents = [i - next(j for j in range(i) if seqs[j] > seqs[i]) for i in late]
    assert got.extent == max(extents, default=0)
