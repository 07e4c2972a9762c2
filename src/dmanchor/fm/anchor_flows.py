"""An anchor agent's flows, learned from its kernel's connection tracking.

Which flows an MN's prefix carries decides whether the next router keeps
it (the binding's count, LM:1-1 by MN) and when a kept prefix may revert
(FM:3-3); each is charged here while it runs (FM:2).  The methods belong to
:class:`~.anchor.AnchorAgentCore` (a mixin: they use its state).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..dataplane.api import FlowUsage
from ..dataplane.conntrack import CLOSING_TCP, Conn, ConnEvent
from ..transport.policy import same_address
from ..transport.reliable import Addr, Endpoint, MessageReceived, RequestTimedOut
from ..wire import messages as m
from ..wire.types import FlowFilter, FlowState, Prefix
from .anchor_model import (
    CLAIM_BACKOFF,
    CLAIM_RETRIES,
    MAX_SEEN_TRANSFERS,
    AnchorSettings,
    AnchorStats,
    Attached,
    Effect,
    HandFlows,
    PrefixLife,
    PrefixState,
    Resend,
    TakeCharges,
    Visiting,
)
from .fib import DesiredFib
from .flows import FlowBook, flow_of
from .fmdp import DpFunction


class AnchorFlows:
    """Flow tracking of the anchor agent (mixed into it: the state below is
    the agent's, and so are the three methods it calls back)."""

    s: AnchorSettings
    dp: DesiredFib
    flows: FlowBook
    stats: AnchorStats
    attached: dict[str, Attached]
    visiting: dict[Prefix, Visiting]
    life: PrefixLife
    _parent_asks: dict[int, Prefix]
    endpoint: Endpoint
    _effects: deque[Effect]
    _handing: dict[Prefix, tuple[FlowFilter, ...]]
    _seen_transfers: dict[tuple[str, int], None]
    _resends: dict[int, int]
    _came_back_from: dict[Prefix, IPv6Address]
    _handed: dict[Prefix, IPv6Address]
    fn: DpFunction

    _claimed_by_mn: dict[Prefix, Addr]

    if TYPE_CHECKING:
        def set_timer(self, name: Hashable, at: float) -> None: ...
        def _owner(self, prefix: Prefix) -> str | None: ...
        def _lm_update(self, prefix: Prefix, address: IPv6Address, now: float,
                       lifetime: int | None = None, mn: str | None = None) -> None: ...
        def _revert(self, prefix: Prefix, now: float) -> None: ...
        def _agent_of(self, sid: IPv6Address) -> Addr: ...

    def _on_flow_state(self, ev: MessageReceived, msg: m.FlowStateTransfer, now: float) -> None:
        """FM:2: these flows continue here; they move on with the prefix if
        the MN does (and their count goes in the binding).  A transfer this
        point already applied comes again when its answer was lost and the
        sender tried again (:class:`Resend`): answered, not added twice."""
        if msg.transfer is not None:
            key = (ev.sender or str(ev.source[0]), msg.transfer)
            if key in self._seen_transfers:
                self.stats.counters["flow-state-repeat"] += 1
                self.endpoint.reply(ev, m.FlowStateAck(msg.prefix, len(msg.states)), now)
                return
            self._seen_transfers[key] = None
            while len(self._seen_transfers) > MAX_SEEN_TRANSFERS:
                del self._seen_transfers[next(iter(self._seen_transfers))]
        point = self._came_back_from.get(msg.prefix)
        if point is not None and same_address(self._agent_of(point), ev.source):
            del self._came_back_from[msg.prefix]  # (only that point's FM:2 is the one due)
        # Where this point handed the prefix on last (forgotten when it
        # comes back here, so these never form a cycle): following them, a
        # transfer moves forward along the MN's path and ends where the MN
        # is - the sender itself, when the MN went back there.
        onward = self._handed.get(msg.prefix)
        owned = self._owner(msg.prefix) is not None
        if not owned and onward is not None:
            # The charges came after this point had handed the prefix on
            # (the MN left again before the previous point's FM:2 came):
            # merged here they would stay here, out of the MN's bill, once
            # this point's own hand-over had taken its charges.  They go on
            # as they came, to where the prefix went, never through this
            # kernel (a second take of the same prefix's charges would race
            # the first).
            self.stats.counters["flow-state-passed-on"] += 1
            self.endpoint.reply(ev, m.FlowStateAck(msg.prefix, len(msg.states)), now)
            self._hand_flows(msg.prefix, onward, (), {
                st.flow: FlowUsage(st.bytes_up, st.bytes_down, st.packets_up, st.packets_down)
                for st in msg.states}, now)
            return
        if owned:
            self._track(msg.prefix, [st.flow for st in msg.states], now, handed=True)
        self.fn.handle(self.endpoint, ev, now)

    def _retry_hand(self, event: RequestTimedOut, now: float, homecoming: bool = False) -> None:
        """FM:2's transfer timed out - or (``homecoming``) a home anchor's
        FM:6-2 asking the point it had handed its prefix to for it back
        (that point hands the flows' charges on when it answers): sent again
        later, a few times.  Charges are cumulative: one lost transfer loses
        every earlier move's.  (A claim's FM:6-2 has its own retries.)"""
        request = event.request
        tries = self._resends.pop(event.request_id, None)
        again = tries is not None or homecoming
        if not (isinstance(request, m.FlowStateTransfer)
                or (again and isinstance(request, m.BufferReady))):
            return
        tries = tries or 0
        if tries >= CLAIM_RETRIES:
            self.stats.counters["flow-state-abandoned"] += 1
            return
        self.set_timer(Resend(request, event.destination, tries + 1),
                       now + CLAIM_BACKOFF * 2 ** tries)

    def _on_resend(self, t: Resend, now: float) -> None:
        self._resends[self.endpoint.request(t.message, t.to, now)] = t.tries

    def conn_events(self, events: Sequence[ConnEvent], now: float) -> None:
        """What this router's connection tracking saw (ctnetlink events).

        A TCP or UDP flow on an attached MN's prefix is open from its first
        event until conntrack says it ended (FIN or RST both ways, or
        destroyed: idle past the UDP timeout).  On a kept prefix, whose
        packets conntrack may see only in part, that makes it a candidate:
        it has ended once no packet of it was charged for the idle time
        (:meth:`conn_present`).  The binding learns when a
        prefix starts and stops carrying open flows, and a kept prefix
        whose flows have all ended reverts once its lifetime is over (FM:3-3).
        """
        for ev in events:
            found = flow_of(ev.conn, self._mn_prefix)
            if found is None:
                continue
            flow, prefix = found
            if flow not in self.flows.seen and not ev.ended:
                self._track(prefix, [flow], now)
                if flow in self.flows.open.get(prefix, ()):  # (not over the cap)
                    self.flows.seen[flow] = now
            if self._trusted(prefix):
                if ev.ended:
                    self._flow_ended(prefix, flow, now)
            elif ev.ended or ev.tcp in CLOSING_TCP:
                self.flows.closing.add(flow)  # it ends once idle too

    def conn_present(self, present: Iterable[Conn], taken: float, now: float,
                     counted: Mapping[FlowFilter, FlowUsage] | None = None) -> None:
        """Every connection the kernel tracked at ``taken`` (a periodic
        dump; flows seen open before then and missing from it ended without
        an event reaching us), and ``counted``, the charging counters now:
        a flow that may have ended (:meth:`FlowBook.watched`) has, once they
        show it idle for ``flow_idle`` (:meth:`FlowBook.idle`).  The host
        reads the counters only when some flow is watched."""
        flows: dict[FlowFilter, Prefix] = {}
        for conn in present:
            found = flow_of(conn, self._mn_prefix)
            if found is not None:
                flows[found[0]] = found[1]
        # A held prefix's flows wait here for their MN: no packet of them is
        # charged, nor tracked as the MN's, until it is back or they move on
        # - not a sign they ended (a 2 s hold would end a busy flow, and its
        # charges stayed here, out of FM:2).
        held = set(self.dp.holds())
        self._relearn(flows, held, taken, now)
        for flow in self.flows.vanished(set(flows), taken):
            prefix = self.flows.prefix_of(flow)
            if prefix in held:
                continue
            if prefix is not None and self._trusted(prefix):
                self._flow_ended(prefix, flow, now)
            else:
                self.flows.closing.add(flow)
        if counted is not None:
            for prefix, flow in self.flows.idle(counted, now, self.s.flow_idle):
                if prefix not in held:
                    self._flow_ended(prefix, flow, now)

    def _relearn(self, present: Mapping[FlowFilter, Prefix], held: set[Prefix], taken: float,
                 now: float) -> None:
        """Open flows the kernel tracks on a prefix anchored here natively
        (:meth:`_trusted`: conntrack sees all of them) but unknown here are
        learned again: their state was lost - this agent restarted, or the
        point the prefix came home from died before its FM:2.  Not known,
        the binding would say the prefix carries nothing, and the next
        router would not keep it: the session would stall until the MN came
        back.  That point is then asked again (FM:6-2) for the charges it
        still counts in its kernel (a restarted agent hands them on)."""
        for flow, prefix in present.items():
            if prefix in held or flow in self.flows.open.get(prefix, ()) \
                    or not self._trusted(prefix):
                continue
            self._track(prefix, [flow], now)
            if flow not in self.flows.open.get(prefix, ()):
                continue  # (over the cap)
            self.flows.seen[flow] = taken
            self.stats.counters["flow-relearned"] += 1
            point = self._came_back_from.pop(prefix, None)
            if point is not None:
                self.stats.counters["flow-state-asked-again"] += 1
                # (With FM:2's resends if it times out: :meth:`_retry_hand`.)
                self._resends[self.endpoint.request(
                    m.BufferReady(prefix, self.s.flush_sid), self._agent_of(point), now)] = 0

    def usage(self, want: FlowFilter) -> FlowUsage:
        """FM:2: what the flows ``want`` selects were charged here, open or ended."""
        now_counted = self.dp.usage(want)
        ended = self.flows.recorded(want)
        return FlowUsage(*(a + b for a, b in zip(now_counted, ended, strict=True)))

    def _mn_prefix(self, address: IPv6Address) -> Prefix | None:
        """The prefix of an attached, network-based MN ``address`` is in."""
        for mn, st in self.attached.items():
            if mn in self.s.host_based:
                continue  # its own agent keeps its sessions (Fig 2a/2b)
            for p in (*st.own, *st.visiting):
                if p.contains(address):
                    return p
        return None

    def _trusted(self, prefix: Prefix) -> bool:
        """Whether conntrack here sees all of ``prefix``'s flows: those of a
        prefix anchored here, routed here natively.  A kept prefix's packets
        may come decapsulated (a tunnel, a flush), which conntrack misses."""
        return any(prefix in st.own for st in self.attached.values()) and \
            self.s.parent is None

    def _flow_ended(self, prefix: Prefix, flow: FlowFilter, now: float) -> None:
        if flow not in self.flows.open.get(prefix, ()):
            self.flows.seen.pop(flow, None)
            return
        last = self.flows.end(prefix, flow)
        self.flows.record(flow, self.dp.untrack(flow))
        self.stats.counters["flow-ended"] += 1
        if last:
            self.flows_closed(prefix, now)

    def _track(self, prefix: Prefix, flows: Sequence[FlowFilter], now: float,
               handed: bool = False) -> None:
        """Charge ``flows`` of an MN's ``prefix`` here; the binding learns
        when the prefix starts carrying flows that need continuity.
        ``handed``: they came with their state (FM:2) from the previous
        point, whose count the binding carries already."""
        before = self.flows.count(prefix)
        new = self.flows.add(prefix, flows)
        if new:
            v = self.visiting.get(prefix)
            if v is not None:
                v.flows_closed = False
        if handed:
            return
        for f in new:
            self.dp.track(f)
            self.stats.counters["flow-seen"] += 1
        mn = self._owner(prefix)
        if mn is not None and not before and self.flows.count(prefix) and \
                self._bound_here(prefix):
            self._lm_update(prefix, self.s.dpa, now, mn=mn)

    def _bound_here(self, prefix: Prefix) -> bool:
        """Whether the binding names this router for ``prefix`` already, so
        an update of its flow count moves nothing.  A claim still under way
        (an anchor or a parent AR not yet answered) carries the count itself
        when it goes: sent early, it would move the core's route here before
        this router can forward (4.2.3)."""
        return self.life.of(prefix) in (PrefixState.ANCHORED, PrefixState.VISITING) and \
            prefix not in self._parent_asks.values()

    def flows_closed(self, prefix: Prefix, now: float) -> None:
        """The flows using an MN's prefix have all ended (FM:3-3).

        A visiting prefix reverts once its lifetime is over too; for any,
        the binding learns that a router the MN moves to need not keep it.
        """
        mn = self._owner(prefix)
        if mn is None:
            return
        told = prefix in self.flows.closed  # the binding knows already
        self.flows.closed.add(prefix)
        v = self.visiting.get(prefix)
        if v is not None:
            v.flows_closed = True
            if now >= v.expires:
                self._revert(prefix, now)
                return
        if not told and self._bound_here(prefix):
            self._lm_update(prefix, self.s.dpa, now, mn=mn)

    def _on_hand_flows(self, t: HandFlows, now: float) -> None:
        """FM:2 at the previous point: the flows' QoS and charging state move
        with the prefix - those known open, and any charged here (conntrack
        may not have seen it)."""
        known = self.flows.drop(t.prefix)
        if self.s.defer_charges:
            self._handing[t.prefix] = (*self._handing.get(t.prefix, ()), *known)
            self._effects.append(TakeCharges(t.prefix, t.to))
            return
        self._hand_flows(t.prefix, t.to, known, self.dp.take_charges(t.prefix), now)

    def charges_taken(self, prefix: Prefix, to: IPv6Address,
                      charged: Mapping[FlowFilter, FlowUsage], now: float) -> None:
        """The host took ``prefix``'s charges off the data plane
        (:class:`TakeCharges`): FM:2 sends them on with the flows known open."""
        self._hand_flows(prefix, to, self._handing.pop(prefix, ()), charged, now)

    def _hand_flows(self, prefix: Prefix, to: IPv6Address, known: Sequence[FlowFilter],
                    charged: Mapping[FlowFilter, FlowUsage], now: float) -> None:
        if known or charged:
            states = [FlowState(f, 0, *charged.get(f, FlowUsage()))
                      for f in dict.fromkeys((*known, *charged))]
            # The new point's agent - or the MN's own, which ends the tunnel.
            peer = self._claimed_by_mn.get(prefix) or self._agent_of(to)
            self.endpoint.request(m.FlowStateTransfer(prefix, tuple(states),
                                                      self.endpoint.next_id()), peer, now)
