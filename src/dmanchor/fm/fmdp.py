"""FM-DP: applies FM:5-1 updates to a data plane, buffers (FM:6-1), reports FM:5-2.

:class:`DpFunction` is the FM-DP behaviour on one data plane, shared by the
stand-alone :class:`FmDpCore` (a router driven by a central FM-CP) and by
anchor agents that host FM-CP and FM-DP together (Fig 1a/1b).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from ..dataplane.api import BufferSpec, DataPlane, DataPlaneError, FlowUsage
from ..transport.policy import FMDP_SENDERS
from ..transport.reliable import Addr, Endpoint, Event, MessageReceived
from ..transport.service import ServiceCore
from ..wire import messages as m
from ..wire.types import (
    Cause,
    DpState,
    EntryKind,
    FlowFilter,
    ForwardingEntry,
    Load,
    Prefix,
)
from .fib import DesiredFib

MAX_BUFFERS = 4096
"""Prefixes one node holds packets for at once, at most (FM:6-1)."""


class DpFunction:
    """FM-DP message handling over one :class:`DataPlane`."""

    def __init__(self, dataplane: DataPlane, default_buffer: BufferSpec | None = None,
                 max_buffers: int = MAX_BUFFERS) -> None:
        """``default_buffer`` is also the most a peer may ask for (FM:6-1
        limit and timeout); ``max_buffers``: prefixes held at once, at most."""
        self.dp = dataplane
        self.default_buffer = default_buffer or BufferSpec()
        self.max_buffers = max_buffers
        self.updates_applied = 0
        self.buffers_refused = 0
        """FM:6-1 requests refused: this node already held ``max_buffers``."""
        self.errors = 0
        """FM:5-1 updates the data plane refused (reported in FM:5-2)."""
        self.active = True
        """Whether forwarding is active: False from an FM:5-1 update the data
        plane refused until the next one it takes (reported in FM:5-2)."""

    def handle(self, ep: Endpoint, ev: MessageReceived, now: float) -> bool:
        """Serve an FM-DP request; False if ``ev`` is not one."""
        msg = ev.message
        if isinstance(msg, m.ForwardingUpdate):
            try:
                self.dp.apply(msg.add, msg.delete, now)
            except DataPlaneError as exc:
                self.errors += 1
                self.active = False
                ep.reject(ev, Cause.INVALID_STATE, str(exc), now)
                return True
            self.active = True
            self.updates_applied += 1
            ep.reply(ev, m.ForwardingUpdateAck(len(msg.add) + len(msg.delete)), now)
        elif isinstance(msg, m.BufferRequest):
            held = sum(1 for e in self.dp.entries() if e.kind is EntryKind.BUFFER)
            if held >= self.max_buffers:
                self.buffers_refused += 1
                ep.reject(ev, Cause.RESOURCE_EXHAUSTED, "too many holds", now, msg.prefix)
                return True
            # What a peer asks for is capped by what this node is configured
            # to hold: a hold is memory, and the traffic of someone's session.
            d = self.default_buffer
            limit = min(msg.limit, d.limit) if msg.limit is not None else None
            timeout = (min(msg.timeout_ms, int(d.timeout * 1000))
                       if msg.timeout_ms is not None else None)
            self.start_buffer(msg.prefix, now, limit, timeout)
            ep.reply(ev, m.BufferAck(msg.prefix), now)
        elif isinstance(msg, m.FlowStateTransfer):
            for st in msg.states:
                self.merge_usage(st.flow, FlowUsage(st.bytes_up, st.bytes_down,
                                                   st.packets_up, st.packets_down))
            ep.reply(ev, m.FlowStateAck(msg.prefix, len(msg.states)), now)
        else:
            return False
        return True

    def report(self, node_id: str, anchored: int = 0, visiting: int = 0,
               errors: int = 0) -> m.DataPlaneStatus:
        """FM:5-2 as this data plane stands now.

        The load is the share of the node's hold capacity (``max_buffers``
        prefixes) in use: holding is what a mobility event costs a data
        plane, forwarding itself is the kernel's.  ``errors``: failures the
        caller counted besides refused FM:5-1 updates.
        """
        holds = self.dp.holds()
        held = sum(self.dp.buffered(p) for p in holds)
        entries = sum(1 for e in self.dp.entries() if e.kind is not EntryKind.BUFFER)
        percent = min(100, -(-100 * len(holds) // max(1, self.max_buffers)))
        return m.DataPlaneStatus(node_id, Load(self.active, percent),
                                 DpState(anchored, visiting, entries, held, self.errors + errors))

    def start_buffer(self, prefix: Prefix, now: float, limit: int | None = None,
                     timeout_ms: int | None = None) -> None:
        """FM:6-1: hold packets to ``prefix`` (idempotent)."""
        entry = ForwardingEntry(EntryKind.BUFFER, prefix)
        if entry in self.dp.entries():
            return
        spec = BufferSpec(
            limit if limit is not None else self.default_buffer.limit,
            timeout_ms / 1000 if timeout_ms is not None else self.default_buffer.timeout,
        )
        self.dp.apply((entry,), (), now, {prefix: spec})

    def merge_usage(self, flow: FlowFilter, moved: FlowUsage) -> None:
        """FM:2: add counters moved in from the previous anchor.

        Added, not overwritten: this anchor may already have counted packets
        of the flow before the transfer arrived, and each packet must be
        charged exactly once.
        """
        self.dp.add_usage(flow, moved)


@dataclass(frozen=True, slots=True)
class FmDpSettings:
    """A stand-alone FM-DP."""

    node_id: str
    """Name reported in FM:5-2."""
    control: Addr | None = None
    """FM-CP to report FM:5-2 status to."""
    status_interval: float = 0.5
    """Seconds between FM:5-2 reports."""


class FmDpCore(ServiceCore):
    """A router's FM-DP agent: FM:5-1, FM:6-1, FM:2 in; FM:5-2 out."""

    SENDERS = FMDP_SENDERS
    FAILURES = (DataPlaneError,)

    def __init__(self, settings: FmDpSettings, dataplane: DataPlane,
                 endpoint: Endpoint | None = None, now: float = 0.0) -> None:
        super().__init__(endpoint or Endpoint())
        self.settings = settings
        self.fn = DpFunction(
            dataplane if isinstance(dataplane, DesiredFib) else DesiredFib(dataplane))
        if settings.control is not None:
            self.set_timer("status", now)
        self._arm_expiry()

    def on_event(self, event: Event, now: float) -> None:
        if isinstance(event, MessageReceived):
            if not self.fn.handle(self.endpoint, event, now) and event.expects_reply:
                self.endpoint.reject(event, Cause.UNSUPPORTED, "FM-DP", now)
            self._arm_expiry()

    def on_timer(self, name: Hashable, now: float) -> None:
        if name == "status" and self.settings.control is not None:
            report = self.fn.report(self.settings.node_id, errors=sum(self.failed.values()))
            self.endpoint.request(report, self.settings.control, now)
            self.set_timer("status", now + self.settings.status_interval)
        elif name == "expire":
            self.fn.dp.expire(now)
            self._arm_expiry()

    def _arm_expiry(self) -> None:
        deadline = self.fn.dp.next_deadline()
        if deadline is not None:
            self.set_timer("expire", deadline)
