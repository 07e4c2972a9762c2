"""The kernel's view of an access router's flows, fed to its anchor agent (I/O half).

Which flows need continuity and when they end the agent decides in its
core (:meth:`~dmanchor.fm.anchor.AnchorAgentCore.conn_events`); this
module wires the kernel to it: the charging table that also turns
connection tracking on (:mod:`..dataplane.charging`), the ctnetlink event
socket, a periodic walk of the conntrack table (the kernel only reports
an idle UDP flow's end once something finds it expired), and the UDP
idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ..dataplane.api import DataPlaneError
from ..dataplane.charging import Charging
from ..dataplane.conntrack import ConntrackMonitor
from ..fm.anchor import AnchorAgentCore
from ..runtime import clock

log = logging.getLogger("dmanchor.node")

SYSCTL = Path("/proc/sys/net/netfilter")


class FlowWatch:
    """Conntrack events and sweeps, into one anchor agent."""

    def __init__(self, agent: AnchorAgentCore, pump: Callable[[], None], charging: Charging,
                 links: Sequence[str], udp_idle: int | None, sweep: float) -> None:
        """``pump``: runs the agent's driver after an input; ``links``: the
        access links whose flows are charged; ``udp_idle``: the UDP timeout
        to set (None: leave the kernel's); ``sweep``: seconds between walks."""
        self.agent = agent
        self.pump = pump
        self.charging = charging
        self.links = tuple(links)
        self.udp_idle = udp_idle
        self.sweep = sweep
        self._monitor: ConntrackMonitor | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.failures = 0
        """Sweeps that failed (the kernel or ``nft`` refused)."""

    def start(self) -> None:
        """Count and track flows from now on; an error here stops the node."""
        self.charging.start(self.links)
        if self.udp_idle is not None:
            for knob in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
                (SYSCTL / knob).write_text(str(self.udp_idle))
        self._monitor = ConntrackMonitor()
        asyncio.get_running_loop().add_reader(self._monitor.fileno(), self._on_events)
        self._on_sweep()

    def _on_events(self) -> None:
        assert self._monitor is not None
        events = self._monitor.read()
        if log.isEnabledFor(logging.DEBUG):
            for ev in events:
                log.debug("conntrack %s %s %s", ev.change.value, ev.conn,
                          ev.tcp.name if ev.tcp is not None else "")
        if events:
            now = clock.now()
            self.agent.conn_events(events, now)
            self.agent.process(now)
            self.pump()

    def _on_sweep(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        try:
            assert self._monitor is not None
            taken = clock.now()
            present = self._monitor.dump()
            # What the walk destroyed arrives as events first.
            self._on_events()
            # Counters only when some flow needs them; the nft call runs
            # beside the event loop, not in it (a move may be under way).
            counted = await self.charging.counted_async() if self.agent.flows.watched() \
                else None
            now = clock.now()
            self.agent.conn_present(present, taken, now, counted)
            self.agent.process(now)
            self.pump()
        except (OSError, DataPlaneError) as exc:  # counted, and the next sweep retries
            self.failures += 1
            log.warning("conntrack sweep: %s", exc)
        finally:
            if not self._closed:
                self._timer = asyncio.get_running_loop().call_later(self.sweep,
                                                                    self._on_sweep)

    @property
    def overruns(self) -> int:
        """Times conntrack events were lost (the next sweep makes up for them)."""
        return self._monitor.overruns if self._monitor is not None else 0

    def close(self) -> None:
        """Stop watching."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
        if self._monitor is not None:
            with contextlib.suppress(RuntimeError):  # no loop any more
                asyncio.get_running_loop().remove_reader(self._monitor.fileno())
            self._monitor.close()
