"""Privileged tier: real namespaces, real kernel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dmanchor.emulation.lab import Lab, can_run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = can_run()
    for item in items:
        if "tests/netns" in str(item.fspath):
            item.add_marker(pytest.mark.netns)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        left = lab.cleanup()
        assert not left, f"namespaces left behind: {left}"
