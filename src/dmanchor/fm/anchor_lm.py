"""The anchor agent's LM client: LM:1 requests over an LMs pool.

The anchor asks its LMs where an MN's prefixes were served (LM:1-1),
registers the prefixes it anchors (LM:1-4) and subscribes to their changes
(LM:1-3).  With an LM:2 pool (Fig 1a) any member will do, since members
relay what another is primary for; so a request that times out at one
member is sent again to the next (:class:`~..lm.pool.PoolRequests`, the
LMc's own failover).  A member that answers after a failover is used from
then on, and the anchor then subscribes and registers again there: subscriptions
live at the member that took them, and the dead one's are gone.

Answers are not cached here, unlike the LMc's: an anchor asks at a move,
when only the freshest binding will do, and pushes (LM:1-3) tell it the
rest.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..dataplane.api import BufferSpec
from ..lm.pool import PoolRequests
from ..transport.reliable import Addr, NegativeReply, ReplyReceived, RequestTimedOut
from ..wire import messages as m
from ..wire.types import EntryKind, ForwardingEntry, Prefix
from .anchor_model import (
    AnchorSettings,
    AnchorStats,
    Attached,
    Join,
    PrefixEvent,
    Requery,
    VisitCheck,
    Visiting,
)
from .flows import FlowBook


class AnchorLocation:
    """The anchor agent's use of its LMs (mixed into it: the state below is
    the agent's)."""

    s: AnchorSettings
    lm: PoolRequests | None
    flows: FlowBook
    stats: AnchorStats
    attached: dict[str, Attached]
    _joins: dict[int, Join]
    _mn_queries: dict[int, Requery]
    _sweeping: dict[int, Prefix]
    visiting: dict[Prefix, Visiting]

    if TYPE_CHECKING:
        def set_timer(self, name: Hashable, at: float) -> None: ...
        def _step(self, prefix: Prefix, event: PrefixEvent) -> None: ...
        def _claim(self, p: Prefix, mn: str, served: Mapping[Prefix, IPv6Address],
                   now: float) -> None: ...
        def _apply_new(self, add: list[ForwardingEntry], now: float,
                       buffers: Mapping[Prefix, BufferSpec] | None = None) -> None: ...

    def _subscribe(self, prefixes: Sequence[Prefix], now: float) -> None:
        """LM:1-3: be told when these prefixes' bindings change (a departure)."""
        if self.lm is not None and prefixes:
            self.lm.request(m.Subscribe(tuple(prefixes), self.s.lifetime), now)

    def _lm_update(self, prefix: Prefix, address: IPv6Address, now: float,
                   lifetime: int | None = None, mn: str | None = None) -> None:
        """LM:1-4 for ``prefix``, naming the MN using it when known (SM)."""
        if self.lm is None:
            return
        life = self.s.lifetime if lifetime is None else lifetime
        flows = self.flows.count(prefix) if mn and life else None
        self.lm.request(m.LocationUpdate(prefix, address, life, mn=mn or None, flows=flows),
                        now)

    def _register_bindings(self, now: float) -> None:
        """LM:1-4 and LM:1-3 for the prefixes of the MNs attached here."""
        for mn, st in self.attached.items():
            for p in st.own:
                self._lm_update(p, self.s.dpa, now, mn=mn)
            self._subscribe(st.own, now)

    def _lm_outcome(self, event: ReplyReceived | NegativeReply | RequestTimedOut,
                    now: float) -> bool:
        """An LM request's answer or timeout; True if it was sent again to the
        next pool member (then there is nothing more to do with it yet)."""
        assert self.lm is not None
        out = self.lm.outcome(event, now)
        if out.again is not None:
            self.stats.counters["lms-failover"] += 1
            # What waited on the answer waits on the one sent again.
            if event.request_id in self._joins:
                self._joins[out.again] = self._joins.pop(event.request_id)
            if event.request_id in self._mn_queries:
                self._mn_queries[out.again] = self._mn_queries.pop(event.request_id)
            if event.request_id in self._sweeping:
                self._sweeping[out.again] = self._sweeping.pop(event.request_id)
            return True
        if out.switched:
            # Subscriptions lived at the member that stopped answering.
            self.stats.counters["lms-switched"] += 1
            self._register_bindings(now)
        return False

    def _adopt(self, mn: str, link: str, prefixes: Sequence[Prefix], now: float) -> None:
        """Restart = reconcile: ``prefixes`` from elsewhere were served here
        for ``mn`` before this agent restarted (its kernel kept their
        routes; the LMs still binds them here, busy).  Served again as
        before - visiting, refreshed, their flows relearned from conntrack
        - and claimed again from their anchor, which sends them here
        already (no hold: nothing is in flight elsewhere), so that their
        revert (FM:3-3) reaches it when those flows end."""
        st = self.attached[mn]
        # Their routes, should the kernel have lost them (a reboot).
        self._apply_new([ForwardingEntry(EntryKind.ANCHOR, p, link=link) for p in prefixes],
                        now)
        for p in prefixes:
            self._step(p, PrefixEvent.ADOPTED)
            self.visiting[p] = Visiting(link, (), mn, expires=now + self.s.lifetime)
            self.set_timer(VisitCheck(p), now + self.s.lifetime / 2)
            self._lm_update(p, self.s.dpa, now, mn=mn)
        self.attached[mn] = Attached(link, st.own, (*st.visiting, *prefixes))
        self._subscribe(prefixes, now)
        for p in prefixes:
            self._claim(p, mn, {}, now)
        self.stats.counters["adopted"] += len(prefixes)

    def _from_lms(self, source: Addr) -> bool:
        """Whether ``source`` is the LMs (or LMp) this agent subscribes at
        (or another member of its pool)."""
        return self.lm is not None and self.lm.is_member(source)
