"""A Ctrl-C during cleanup waits for the cleanup, then interrupts."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from dmanchor.emulation.lab import sigint_deferred


@pytest.fixture(autouse=True)
def ctrl_c_interrupts() -> Iterator[None]:
    """Python's own SIGINT handler for each test, whatever the process had:
    a run started in the background (nohup, ``&``) inherits SIGINT ignored,
    and Python then leaves it so."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_inside_waits_for_the_block_then_interrupts() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("cleanup finished")  # not cut short
    assert done == ["cleanup finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_ctrl_c_no_interrupt_and_the_handler_is_restored() -> None:
    with sigint_deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_of_the_block_is_not_replaced_by_the_interrupt() -> None:
    with pytest.raises(RuntimeError, match="namespaces left"), sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        raise RuntimeError("namespaces left")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
