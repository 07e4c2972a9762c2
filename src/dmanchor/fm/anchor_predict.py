"""Predictive handover: the MN's router tells the router it goes to.

When the old router's L2 names the target of a move before the link goes
(a station's BSS transition, 802.21's MIH Link Going Down with a candidate,
3GPP handover preparation), the old router sends the target the context a
reactive move would have to fetch on the MN's arrival - the prefixes it
serves the MN and how many flows needing continuity each carries - as
FMIPv6's Handover Initiate does (RFC 5568 6.2.1; our HI, answered by HAck).
The target keeps it for the MN (:class:`ExpectedMns`) and asks the
controller for the prefixes' anchors (FM:4-3) ahead; when the MN solicits,
the claims go out at once (FM:6-2), without waiting for LM:1-1's answer.

What the HI may say is bounded by what its sender already carries: only
prefixes served at the sender (its own DPA, under its own key when
signed), and it is used only for the MN it names, if that MN arrives
within :data:`PREPARED_FOR`.  The LMs's answer still comes, and SM still
applies to the binding update the claim sends.

The methods belong to :class:`~.anchor.AnchorAgentCore` (a mixin).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..transport.policy import same_address
from ..transport.reliable import Addr, Endpoint, MessageReceived
from ..wire import messages as m
from ..wire.types import MnBinding
from .anchor_handover import MIN_MOBILE_PREFIX, dpa_of
from .anchor_model import AnchorCache, AnchorSettings, AnchorStats, Attached, Join, Mode
from .flows import FlowBook

PREPARED_FOR = 2.0
"""Seconds a target keeps a HI's context for its MN.  A move announced by
L2 completes within tens of ms; an MN that has not come by then went
elsewhere (or back), and its next router learns everything from the LMs."""

MAX_EXPECTED = 4096
"""MNs a router expects at once at most: beyond, the oldest expectation is
forgotten (counted) - a flood of HIs cannot grow its memory."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Timer: the HI's context for ``mn`` expires unused."""

    mn: str
    until: float


class ExpectedMns:
    """MNs announced by a HI, with the bindings it gave, oldest first."""

    def __init__(self, limit: int = MAX_EXPECTED) -> None:
        self.limit = limit
        self._mns: OrderedDict[str, tuple[tuple[MnBinding, ...], float]] = OrderedDict()

    def put(self, mn: str, bindings: tuple[MnBinding, ...], until: float) -> int:
        """Expect ``mn`` until ``until``; returns how many older ones were forgotten."""
        self._mns.pop(mn, None)
        self._mns[mn] = (bindings, until)
        evicted = 0
        while len(self._mns) > self.limit:
            self._mns.popitem(last=False)
            evicted += 1
        return evicted

    def take(self, mn: str, now: float) -> tuple[MnBinding, ...]:
        """The bindings ``mn`` is expected with (none if not or no longer)."""
        entry = self._mns.pop(mn, None)
        return entry[0] if entry is not None and entry[1] > now else ()

    def forget(self, mn: str, until: float) -> bool:
        """Drop the expectation that ends at ``until`` (not a newer one)."""
        entry = self._mns.get(mn)
        if entry is None or entry[1] != until:
            return False
        del self._mns[mn]
        return True

    def __len__(self) -> int:
        return len(self._mns)


class AnchorPredict:
    """Predictive handovers of the anchor agent (mixed into it: the state
    below is the agent's, and so are the methods declared for the type
    checker)."""

    s: AnchorSettings
    stats: AnchorStats
    endpoint: Endpoint
    flows: FlowBook
    attached: dict[str, Attached]
    anchors: AnchorCache
    expected: ExpectedMns
    _joins: dict[int, Join]

    if TYPE_CHECKING:
        def set_timer(self, name: Hashable, at: float) -> None: ...
        def refuse(self, ev: MessageReceived, why: str, now: float) -> None: ...
        def _agent_of(self, sid: IPv6Address) -> Addr: ...
        def _keep_busy(self, mn: str, link: str, bindings: Sequence[MnBinding],
                       now: float) -> int: ...

    def router_dpa(self, node_id: str) -> IPv6Address | None:
        """The DPA of the access router ``node_id`` (``agent_ids``), if known."""
        for dpa, owner in self.s.agent_ids.items():
            if owner == node_id:
                return dpa
        return None

    def leaving(self, mn: str, target: str, now: float) -> bool:
        """``mn``'s L2 says it moves to router ``target`` (a node id): send
        that router a HI with the prefixes served here for the MN that
        carry flows needing continuity.  Called before the MN is detached;
        returns whether a HI went (nothing to send: no such flows)."""
        st = self.attached.get(mn)
        dpa = self.router_dpa(target)
        if st is None or dpa is None or dpa == self.s.dpa or mn in self.s.host_based:
            return False  # (a host-based MN's own agent keeps its prefixes)
        bindings = tuple(MnBinding(p, self.s.dpa, self.s.lifetime, n)
                         for p in (*st.own, *st.visiting) if (n := self.flows.count(p)))
        if not bindings:
            return False
        self.endpoint.request(m.HandoverInitiate(mn, bindings), self._agent_of(dpa), now)
        self.stats.counters["hi-sent"] += 1
        return True

    def _on_initiate(self, ev: MessageReceived, msg: m.HandoverInitiate, now: float) -> None:
        """HI at the target: expect the MN with these bindings."""
        why = self._initiate_refusal(ev, msg)
        if why is not None:
            self.refuse(ev, why, now)
            return
        self.endpoint.reply(ev, m.HandoverAck(msg.mn), now)
        st = self.attached.get(msg.mn)
        if st is not None:
            # It came before its HI (the radio was quicker than the
            # signalling): still sooner than the LMs's answer.
            self.stats.counters["hi-late"] += 1
            self.stats.counters["kept-by-hi"] += self._keep_busy(msg.mn, st.link, msg.bindings,
                                                                 now)
            return
        until = now + PREPARED_FOR
        self.stats.counters["hi-forgotten"] += self.expected.put(msg.mn, msg.bindings, until)
        self.set_timer(Forget(msg.mn, until), until)
        self.stats.counters["hi-expected"] += 1
        if self.s.mode is Mode.TUNNEL and self.s.controller is not None:
            # FM:4-3 now, not at the arrival: the answer is kept
            # (:class:`AnchorCache`) for the claim to find.  A join that
            # no MN waits on ends with its answer.
            for b in msg.bindings:
                own = any(o.covers(b.prefix) for o in self.s.prefixes)  # (coming home)
                if not own and self.anchors.get(b.prefix, now) is None:
                    rid = self.endpoint.request(m.AnchorDiscovery(b.prefix),
                                                self.s.controller, now)
                    self._joins[rid] = Join(b.prefix)

    def _initiate_refusal(self, ev: MessageReceived, msg: m.HandoverInitiate) -> str | None:
        """Whether a HI names only what its sender may: prefixes it serves
        (each binding's address is its own DPA - not a flush SID, not ours),
        none shorter than an MN's."""
        for b in msg.bindings:
            if b.prefix.length < MIN_MOBILE_PREFIX:
                return "refused:HANDOVER_INITIATE:prefix-too-short"
            if dpa_of(b.forwarding_address) != b.forwarding_address:
                return "refused:HANDOVER_INITIATE:not-a-dpa"  # (a flush SID)
            owner = self.s.agent_ids.get(b.forwarding_address)
            mine = (owner == ev.sender if ev.sender is not None and owner is not None
                    else same_address(self._agent_of(b.forwarding_address), ev.source))
            if not mine or b.forwarding_address == self.s.dpa:
                return "refused:HANDOVER_INITIATE:not-its-prefix"
        return None

    def _expected_here(self, mn: str, link: str, now: float) -> None:
        """``mn`` arrived on ``link``: claim what its HI said it uses."""
        bindings = self.expected.take(mn, now)
        if bindings:
            self.stats.counters["hi-used"] += 1
            self.stats.counters["kept-by-hi"] += self._keep_busy(mn, link, bindings, now)

    def _on_forget(self, t: Forget, now: float) -> None:
        if self.expected.forget(t.mn, t.until):
            self.stats.counters["hi-unused"] += 1
