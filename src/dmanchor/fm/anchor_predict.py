"""Predictive handover: the MN's router tells the router it goes to.

When the old router's L2 names the target of a move before the link goes
(a station's BSS transition, 802.21's MIH Link Going Down with a candidate,
3GPP handover preparation), the old router sends the target the context a
reactive move would have to fetch on the MN's arrival - the prefixes it
serves the MN and how many flows needing continuity each carries - as
FMIPv6's Handover Initiate does (RFC 5568 6.2.1; our HI, answered by HAck).
The target keeps it for the MN (:class:`ExpectedMns`).  In tunnel mode,
a prefix the sender anchors itself (its anchor known here, FM:4-4) is
*prepared*: held here and claimed at once (FM:6-2), so the old router
tunnels what it held, and all that follows, into this hold before the MN
comes (FMIPv6's buffering at the new router); the MN's arrival only puts
the prefix on its link and lifts the hold.  Any other prefix is claimed at
the arrival (FM:6-2, or the binding update under the anchor switch),
without waiting for LM:1-1's answer; its anchor is asked for (FM:4-3)
ahead.  (A prefix anchored elsewhere reaches the new router partly through
its flush SID, which delivers past holds onto the MN's link: without the
link there is nowhere to deliver, so it is not prepared.)

What the HI may say is bounded by what its sender already carries: only
prefixes served at the sender (its own DPA, under its own key when
signed), and it is used only for the MN it names, if that MN arrives
within :data:`PREPARED_FOR`.  The LMs's answer still comes, and SM still
applies to the binding update the claim sends.

The methods belong to :class:`~.anchor.AnchorAgentCore` (a mixin).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..dataplane.api import BufferSpec
from ..transport.reliable import Addr, Endpoint, MessageReceived
from ..wire import messages as m
from ..wire.types import EntryKind, ForwardingEntry, MnBinding, Prefix
from .anchor_handover import MIN_MOBILE_PREFIX, dpa_of
from .anchor_model import (
    Advertise,
    AnchorCache,
    AnchorSettings,
    AnchorStats,
    Attached,
    Effect,
    Join,
    Mode,
    PrefixEvent,
    PrefixLife,
    PrefixState,
    VisitCheck,
    Visiting,
)
from .flows import FlowBook

PREPARED_FOR = 2.0
"""Seconds a target keeps a HI's context for its MN.  A move announced by
L2 completes within tens of ms; an MN that has not come by then went
elsewhere (or back), and its next router learns everything from the LMs."""

MAX_HI_PREFIXES = 64
"""Prefixes one HI is acted on for at most (an MN uses a handful; the rest
of a longer list is ignored, counted ``hi-truncated``)."""

MAX_EXPECTED = 4096
"""MNs a router expects at once at most: beyond, the oldest expectation is
forgotten (counted) - a flood of HIs cannot grow its memory."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Timer: the HI's context for ``mn`` expires unused; what was prepared
    for it (``prepared``) stops being held."""

    mn: str
    until: float
    prepared: tuple[Prefix, ...] = ()


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a HI said of one MN."""

    bindings: tuple[MnBinding, ...]
    """Prefixes to claim when it arrives (as if the LMs had answered)."""
    prepared: tuple[Prefix, ...]
    """Prefixes claimed already, held here: put on its link when it arrives."""
    until: float
    """When the expectation ends."""


class ExpectedMns:
    """MNs announced by a HI, oldest first."""

    def __init__(self, limit: int = MAX_EXPECTED) -> None:
        self.limit = limit
        self._mns: OrderedDict[str, Expectation] = OrderedDict()

    def put(self, mn: str, expectation: Expectation) -> int:
        """Expect ``mn``; returns how many older expectations were forgotten."""
        self._mns.pop(mn, None)
        self._mns[mn] = expectation
        evicted = 0
        while len(self._mns) > self.limit:
            self._mns.popitem(last=False)
            evicted += 1
        return evicted

    def take(self, mn: str, now: float) -> Expectation | None:
        """What ``mn`` is expected with (None if not, or no longer)."""
        entry = self._mns.pop(mn, None)
        return entry if entry is not None and entry.until > now else None

    def forget(self, mn: str, until: float) -> bool:
        """Drop the expectation that ends at ``until`` (not a newer one)."""
        entry = self._mns.get(mn)
        if entry is None or entry.until != until:
            return False
        del self._mns[mn]
        return True

    def newer(self, mn: str, until: float) -> bool:
        """Whether ``mn`` is expected by a later HI than the one ending at ``until``."""
        entry = self._mns.get(mn)
        return entry is not None and entry.until > until

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
    life: PrefixLife
    attached: dict[str, Attached]
    visiting: dict[Prefix, Visiting]
    anchors: AnchorCache
    expected: ExpectedMns
    _joins: dict[int, Join]
    _effects: deque[Effect]

    if TYPE_CHECKING:
        def set_timer(self, name: Hashable, at: float) -> None: ...
        def cancel_timer(self, name: Hashable) -> None: ...
        def refuse(self, ev: MessageReceived, why: str, now: float) -> None: ...
        def _agent_of(self, sid: IPv6Address) -> Addr: ...
        def _speaks_for(self, ev: MessageReceived, sid: IPv6Address) -> bool: ...
        def _keep_busy(self, mn: str, link: str, bindings: Sequence[MnBinding],
                       now: float) -> int: ...
        def _step(self, prefix: Prefix, event: PrefixEvent) -> None: ...
        def _claim(self, p: Prefix, mn: str, served: Mapping[Prefix, IPv6Address],
                   now: float) -> None: ...
        def _apply_new(self, add: list[ForwardingEntry], now: float,
                       buffers: Mapping[Prefix, BufferSpec] | None = None) -> None: ...
        def _replace(self, prefix: Prefix, new: list[ForwardingEntry], now: float,
                     keep_buffer: bool = False, spec: BufferSpec | None = None) -> None: ...
        def _drop_reverse(self, v: Visiting | None, now: float) -> None: ...
        def _rejoin(self, p: Prefix, here: list[ForwardingEntry], spec: BufferSpec | None,
                    now: float) -> None: ...

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
        busy = [b for b in msg.bindings if b.flows]
        if len(busy) > MAX_HI_PREFIXES:
            self.stats.counters["hi-truncated"] += 1
            busy = busy[:MAX_HI_PREFIXES]
        prepared: list[Prefix] = []
        try:
            for b in busy:
                if self._prepare(msg.mn, b, now):
                    prepared.append(b.prefix)
        finally:
            # (Also when a hold could not be made - the data plane's limit:
            # what was prepared before it still ends with this HI.)
            done = tuple(prepared)
            later = tuple(b for b in busy if b.prefix not in done)
            self.stats.counters["hi-forgotten"] += self.expected.put(
                msg.mn, Expectation(later, done, until))
            self.set_timer(Forget(msg.mn, until, done), until)
        self.stats.counters["hi-expected"] += 1
        self._ask_anchors(later, now)

    def _ask_anchors(self, bindings: Sequence[MnBinding], now: float) -> None:
        """Tunnel mode: FM:4-3 for these prefixes now, not at the arrival -
        the answer is kept (:class:`AnchorCache`) for the claim to find.  A
        join that no MN waits on ends with its answer."""
        if self.s.mode is not Mode.TUNNEL or self.s.controller is None:
            return
        for b in bindings:
            own = any(o.covers(b.prefix) for o in self.s.prefixes)  # (coming home)
            if not own and self.anchors.get(b.prefix, now) is None:
                rid = self.endpoint.request(m.AnchorDiscovery(b.prefix), self.s.controller, now)
                self._joins[rid] = Join(b.prefix)

    def _prepare(self, mn: str, b: MnBinding, now: float) -> bool:
        """Draw ``b``'s prefix here ahead of its MN, if it can be (see the
        module): hold it, and claim it from its anchor - the sender."""
        p = b.prefix
        answer = self.anchors.get(p, now)
        state = self.life.of(p)
        if (self.s.mode is not Mode.TUNNEL or self.s.parent is not None or answer is None
                or answer.dpa_address != b.forwarding_address
                or state not in (None, PrefixState.HANDED)
                or any(o.covers(p) for o in self.s.prefixes)):
            return False
        # Held until the MN comes, and a while more: until then its packets
        # have nowhere else to go here (see _on_forget).
        hold = [ForwardingEntry(EntryKind.BUFFER, p)]
        spec = BufferSpec(self.s.buffer.limit, PREPARED_FOR + self.s.hold_timeout)
        if state is PrefixState.HANDED:
            # Back at a point it had left (a ping-pong): its leftover path
            # towards the point it went to goes, or the two would loop.
            self._rejoin(p, hold, spec, now)
        else:
            self._apply_new(hold, now, {p: spec})
        self._step(p, PrefixEvent.KEPT)
        self.visiting[p] = Visiting("", (), mn, expires=now + self.s.lifetime)
        self.set_timer(VisitCheck(p), now + self.s.lifetime / 2)
        self._claim(p, mn, {p: b.forwarding_address}, now)  # FM:6-2 at once (anchor known)
        self.stats.counters["hi-prepared"] += 1
        return True

    def waiting_for(self, prefix: Prefix) -> str | None:
        """The MN a prefix prepared here waits for (not on a link yet), if any."""
        v = self.visiting.get(prefix)
        return v.mn if v is not None and not v.link else None

    def _come_in(self, mn: str, link: str, prefixes: Sequence[Prefix], now: float) -> None:
        """``mn`` is on ``link``: the prefixes prepared for it go there (their
        holds lift onto the link)."""
        st = self.attached.get(mn)
        if st is None or st.link != link:
            return
        came = [p for p in prefixes if self.waiting_for(p) == mn]
        for p in came:
            self.visiting[p].link = link
            self._replace(p, [ForwardingEntry(EntryKind.ANCHOR, p, link=link)], now)
        if came:
            st.visiting = tuple(dict.fromkeys((*st.visiting, *came)))
            self._effects.append(Advertise(link))
            self.stats.counters["prepared-used"] += len(came)

    def _unprepare(self, prefix: Prefix, now: float) -> None:
        """A prefix prepared here goes on elsewhere before its MN came (FM:6-2
        from where it went): nothing waits for it here any more."""
        if self.waiting_for(prefix) is None:
            return
        self._drop_reverse(self.visiting.pop(prefix), now)
        self.cancel_timer(VisitCheck(prefix))
        self.stats.counters["prepared-passed-on"] += 1

    def _initiate_refusal(self, ev: MessageReceived, msg: m.HandoverInitiate) -> str | None:
        """Whether a HI names only what its sender may: prefixes it serves
        (each binding's address is its own DPA - not a flush SID, not ours),
        none shorter than an MN's."""
        for b in msg.bindings:
            if b.prefix.length < MIN_MOBILE_PREFIX:
                return "refused:HANDOVER_INITIATE:prefix-too-short"
            if dpa_of(b.forwarding_address) != b.forwarding_address:
                return "refused:HANDOVER_INITIATE:not-a-dpa"  # (a flush SID)
            if not self._speaks_for(ev, b.forwarding_address) or \
                    b.forwarding_address == self.s.dpa:
                return "refused:HANDOVER_INITIATE:not-its-prefix"
        return None

    def _expected_here(self, mn: str, link: str, expected: Expectation,
                       given: Sequence[Prefix], now: float) -> None:
        """``mn`` arrived on ``link`` as ``expected``: what its HI prepared
        goes on the link; the rest it said the MN uses is claimed - but not
        what this router gives it (``given``: back at a prefix's anchor)."""
        self.stats.counters["hi-used"] += 1
        self._come_in(mn, link, expected.prepared, now)
        self.stats.counters["kept-by-hi"] += self._keep_busy(
            mn, link, [b for b in expected.bindings if b.prefix not in given], now)

    def _on_forget(self, t: Forget, now: float) -> None:
        if self.expected.forget(t.mn, t.until):
            self.stats.counters["hi-unused"] += 1
        if self.expected.newer(t.mn, t.until):
            return  # a later HI prepared what waits now (a ping-pong)
        for p in t.prepared:
            if self.waiting_for(p) == t.mn:
                # Its MN did not come (yet): what was held is dropped, as the
                # old router's hold would have been.  The prefix stays served
                # here - the binding says so - for wherever the MN shows up:
                # here (the LMs's answer puts it on the link), or elsewhere
                # (that router's FM:6-2 takes it on).
                self._replace(p, [ForwardingEntry(EntryKind.DROP, p)], now)
                self.stats.counters["prepared-dropped"] += 1
