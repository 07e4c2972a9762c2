"""Checks after every virtual-time test of the anchor agents."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.unit.test_fm import AGENTS


@pytest.fixture(autouse=True)
def prefix_life_stays_in_the_table() -> Generator[None, None, None]:
    """No agent a test built made a prefix transition its table forbids
    (fm/anchor_model.py TRANSITIONS): the life cycle is the whole truth."""
    AGENTS.clear()
    yield
    wrong = [(a.s.node_id, t) for a in AGENTS for t in a.life.invalid]
    AGENTS.clear()
    assert not wrong, f"transitions outside the table: {wrong}"
