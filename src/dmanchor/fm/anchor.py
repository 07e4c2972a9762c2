"""Anchor agent: the FM-CP and FM-DP of one access router, and its LMc role.

This is the distributed CPA co-located with its DPA (Fig 1a/1b): it owns the
router's data plane, delegates its own prefixes to the MNs that attach, and
keeps flows that need session continuity working when an MN moves:

* ``mode="tunnel"`` (draft 4.1.2): the previous anchor keeps anchoring the
  old prefix and tunnels (SRv6) it to the new one.  The new anchor finds the
  old one by FM:4-3/4-4 discovery, tells it it is ready (FM:6-2); the old
  one releases what it buffered since the MN left (FM:6-1) into the tunnel
  and hands the flows' QoS/charging state over (FM:2).
* ``mode="switch"`` (draft 4.2/4.2.1): the anchoring of the old prefix moves
  to the new router.  The new anchor updates the location binding (LM:1-4);
  a central FM-CP (:mod:`.controller`) re-routes the core (FM:5-1) and tells
  the old anchor (FM:6-2) to release its buffer towards the new one.
* ``mode="bgp"`` (draft 4.2 with routing): the anchoring moves too, but the
  new anchor announces the prefix itself (BGP: :class:`Announce` effects
  for a speaker) and, having found the previous point by LM:1-1, tells it
  (FM:6-2) to send what it holds and what still reaches it; that point
  withdraws its announcement and drops its tunnel once drained.  Once its
  own router announces the prefix's new path to it (its forwarding has
  moved), that point sends an end marker down the tunnel, which lifts the
  new path's hold (:meth:`routes_heard`; ``hold_timeout`` if it never comes).

Either way, when the continuity flows have closed and the prefix lifetime
has ended (FM:3-3), the visited anchor stops anchoring the prefix and the
binding is removed, so it goes back to its home network.

Access-layer inputs (an MN arriving or leaving, its flows) arrive as
method calls; everything else is messages.  What the host must do besides
sending messages and programming the data plane comes out of
:meth:`AnchorAgentCore.next_event` as typed effects.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from ipaddress import IPv6Address
from typing import Any, ClassVar

from ..dataplane.api import BufferSpec, DataPlane, DataPlaneError
from ..lm.pool import PoolRequests
from ..transport.policy import ANCHOR_SENDERS
from ..transport.reliable import (
    Addr,
    Endpoint,
    Event,
    MessageReceived,
    NegativeReply,
    ReplyReceived,
    RequestTimedOut,
)
from ..transport.service import ServiceCore
from ..wire import messages as m
from ..wire.types import (
    ANY_PREFIX,
    Cause,
    EntryKind,
    FlowFilter,
    ForwardingEntry,
    MnBinding,
    Prefix,
)
from .anchor_bgp import AnchorBgp
from .anchor_flows import AnchorFlows
from .anchor_handover import AnchorHandover
from .anchor_lease import AnchorLeases, LeaseBook, LeaseWait
from .anchor_lm import AnchorLocation
from .anchor_model import (
    CLAIM_BACKOFF,
    CLAIM_RETRIES,
    MODES,
    TRANSIENT,
    Advertise,
    AnchorCache,
    AnchorSettings,
    AnchorStats,
    Attached,
    Cleanup,
    Delegate,
    Effect,
    Expire,
    HandFlows,
    Heard,
    Join,
    Mode,
    PrefixEvent,
    PrefixLife,
    PrefixState,
    Reclaim,
    Register,
    Requery,
    Resend,
    Reverse,
    Settle,
    Status,
    VisitCheck,
    Visiting,
)
from .anchor_predict import AnchorPredict, ExpectedMns, Forget
from .anchor_restart import AnchorRestart, Sweep
from .fib import DesiredFib
from .flows import FlowBook
from .fmdp import DpFunction


class AnchorAgentCore(AnchorLocation, AnchorHandover, AnchorFlows, AnchorLeases, AnchorBgp,
                      AnchorRestart, AnchorPredict, ServiceCore):
    """FM-CP + FM-DP + LMc of one access router."""

    SENDERS = ANCHOR_SENDERS
    FAILURES = (DataPlaneError,)

    def __init__(self, settings: AnchorSettings, dataplane: DataPlane,
                 endpoint: Endpoint | None = None, now: float = 0.0) -> None:
        if not isinstance(settings.mode, Mode):
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {settings.mode!r}")
        super().__init__(endpoint or Endpoint())
        self.s = settings
        # Decisions read what this router's cores asked for, not the kernel.
        fib = dataplane if isinstance(dataplane, DesiredFib) else DesiredFib(dataplane)
        self.fn = DpFunction(fib, settings.buffer)
        self.dp = fib
        self.stats = AnchorStats()
        self.attached: dict[str, Attached] = {}
        # Own prefix -> node id of the agent of the host-based MN it was
        # given to (bounded by the configured host-based MNs' prefixes).
        self._agent_of_prefix: dict[Prefix, str] = {}
        self.visiting: dict[Prefix, Visiting] = {}
        self.away: dict[Prefix, str] = {}  # own prefix -> link it was on
        self._back: set[Prefix] = set()  # own prefixes taken back from a visited point
        self._handed: dict[Prefix, IPv6Address] = {}  # prefix -> the SID it was handed to
        # Prefixes held on news of a departure, their MN still on a link -> the link.
        self._held_on_link: dict[Prefix, str] = {}
        # Own prefixes a host-based MN claimed to itself -> its agent's address:
        # the tunnel ends at the MN, which is where FM:2's state goes too.
        self._claimed_by_mn: dict[Prefix, Addr] = {}
        self._routed_away: set[Prefix] = set()  # BGP: prefixes our router routes elsewhere
        self._unmarked: dict[Prefix, IPv6Address] = {}  # BGP: handed, no end marker yet
        # Own prefixes away: the point the LMs says serves each now (LM:1-3).
        # Under BGP the prefix moves on from point to point without us.
        self._served_at: dict[Prefix, IPv6Address] = {}
        # 4.2.3: prefixes we served for a switch below until the anchoring
        # moved to another AR (taken over again if a switch below asks).
        self._served_before: set[Prefix] = set()
        self._homecoming: dict[int, ForwardingEntry] = {}  # FM:6-2 request -> anchoring to lift
        # Own prefixes home again -> the point whose FM:2 (their flows'
        # state and charges) is still due: asked again if it never comes.
        self._came_back_from: dict[Prefix, IPv6Address] = {}
        self.flows = FlowBook()
        """Open flows per MN prefix, and charging records of ended ones."""
        self._joins: dict[int, Join] = {}  # request id -> join it serves
        self._parent_asks: dict[int, Prefix] = {}  # FM:6-2 to the parent AR (4.2.3)
        self.serving: dict[Prefix, IPv6Address] = {}  # 4.2.3: foreign prefix -> DPN
        self.registered = False
        self.announced: set[Prefix] = set()
        """Prefixes this anchor announces by BGP (mode ``bgp``)."""
        self.delegated: set[Prefix] = set()
        """MN prefixes this router holds delegations for (``pd``)."""
        self.leases = LeaseBook()
        """Leases bound here, and FM:3-2 lease moves waiting for the PD client."""
        self._effects: deque[Effect] = deque()
        self._handing: dict[Prefix, tuple[FlowFilter, ...]] = {}  # FM:2 awaiting charges
        # FM:2 transfers applied here, by sender and transfer id (oldest first).
        self._seen_transfers: dict[tuple[str, int], None] = {}
        self._resends: dict[int, int] = {}  # FM:2 sent again -> tries so far
        self._mn_queries: dict[int, Requery] = {}  # LM:1-1 by MN -> whom, where, tries
        self.lm = PoolRequests(self.endpoint, (settings.lms, *settings.lms_pool)) \
            if settings.lms is not None else None
        """LM:1 requests, over the LMs pool (None: no LMs configured)."""
        self.life = PrefixLife()
        """The state of every MN prefix here (:data:`~.anchor_model.TRANSITIONS`)."""
        self.anchors = AnchorCache(settings.lifetime)
        """FM:4-4 answers, kept (tunnel mode: a prefix's anchor stays its home)."""
        self.expected = ExpectedMns()
        """MNs another router said are coming (predictive HI), with their bindings."""
        if settings.mode is Mode.BGP:
            self._announce(settings.prefixes, True)
        sids = [ForwardingEntry(EntryKind.DECAP, Prefix.host(settings.dpa)),
                ForwardingEntry(EntryKind.DECAP, Prefix.host(settings.flush_sid), link="flush")]
        have = fib.entries()
        fib.apply([e for e in sids if e not in have], (), now)
        self._sweeping: dict[int, Prefix] = {}  # LM:1-1 about what the kernel kept
        self._start_sweep(have, now)
        self.set_timer(Register(), now)
        if settings.controller is not None and settings.status_interval > 0:
            self.set_timer(Status(), now)

    # -- Access-layer inputs -----------------------------------------------------------

    def heard(self, mn: str, link: str, given: Sequence[Prefix], named: Sequence[Prefix],
              solicited: bool, now: float) -> Heard:
        """A host spoke on access ``link`` (an MLD report, neighbour
        discovery, or an RS naming ``named``); ``mn`` is its identity there
        (its MAC), ``given`` the /64 this router gives it.

        The first thing heard from a host not attached on the link is its
        arrival (:meth:`arrive`); an RS is answered with an RA
        (:class:`Advertise`).  A forwarding switch (draft 4.2.2) hands out
        prefixes of its AR's network: the AR anchors them and tunnels them
        down, so to the switch they are kept prefixes, like named ones.
        """
        st = self.attached.get(mn)
        here = st is not None and st.link == link
        fw = self.s.parent is not None
        own = st.own if st is not None and here and not fw else tuple(given)
        known = set(own) | (set(st.visiting) if st is not None and here else set())
        kept = [p for p in dict.fromkeys(named) if p not in known]
        if fw and not here:
            kept += [p for p in given if p not in kept]
        if not here:
            self.arrive(mn, link, () if fw else own, kept, now)
            what = Heard.ARRIVED
        elif kept:
            self.attach(mn, link, (), {p: () for p in kept}, now)
            what = Heard.NAMED_MORE
        elif solicited:
            what = Heard.ANSWERED
        else:
            return Heard.KNOWN
        self._effects.append(Advertise(link))
        return what

    def arrive(self, mn: str, link: str, own: Sequence[Prefix], hinted: Sequence[Prefix],
               now: float) -> None:
        """An MN solicited on ``link`` (its first RS here): anchor ``own``.

        Which prefixes it used elsewhere comes from the LMs (LM:1-1 by MN:
        the binding maps the MN to its prefixes and their anchors), since a
        stock host names none; those its serving point reports flows
        needing continuity on are kept (:meth:`attach`), and the link is
        advertised again with them (:class:`Advertise`).  ``hinted``: what
        the RS itself names (an optional option), kept at once - and
        claimed only if the binding agrees the MN is theirs (SM).  A HI
        from the router it left (:mod:`.anchor_predict`) said what the LMs
        will: its prefixes are claimed at once, not on that answer.
        """
        if self.lm is not None:
            # Asked first: the move waits on its answer, and the LMs serves
            # requests in order (the new prefix's binding and subscription
            # below would go ahead of it).
            self._mn_queries[self.lm.request(m.MnQuery(mn), now)] = Requery(mn, link, 0)
        expected = self.expected.take(mn, now)
        if expected is not None and not hinted and mn not in self.attached:
            # Announced by the router it left (a HI): what was prepared here
            # and the claims go before the prefix given here, whose anchoring
            # (and, back at its anchor, the lift of its own hold) took ~1-2 ms
            # ahead of them, measured.
            self.attached[mn] = Attached(link, ())
            self._expected_here(mn, link, expected, own, now)
            expected = None
        self.attach(mn, link, own, {p: [] for p in hinted}, now)
        if expected is not None:  # (it names prefixes, or is here on another link)
            self._expected_here(mn, link, expected, (), now)

    def _on_requery(self, ask: Requery, now: float) -> None:
        st = self.attached.get(ask.mn)
        if self.lm is None or st is None or st.link != ask.link:
            return  # (gone again: nothing to keep here)
        self._mn_queries[self.lm.request(m.MnQuery(ask.mn), now)] = ask

    def _on_mn_reply(self, mn: str, link: str, reply: m.MnReply, now: float) -> None:
        """The LMs says where the MN's prefixes are served: keep the busy ones."""
        if reply.mn != mn:
            return  # (an answer about someone else)
        self.stats.counters["mn-query"] += 1
        self.stats.counters["kept-by-lm"] += self._keep_busy(mn, link, reply.bindings, now)

    def _keep_busy(self, mn: str, link: str, bindings: Sequence[MnBinding], now: float) -> int:
        """Keep the MN's prefixes served elsewhere that carry flows; returns
        how many were new here."""
        st = self.attached.get(mn)
        if st is None or st.link != link:
            return 0  # gone again
        keep: dict[Prefix, Sequence[FlowFilter]] = {}
        served: dict[Prefix, IPv6Address] = {}
        adopt: list[Prefix] = []
        prepared: list[Prefix] = []
        for b in bindings:
            here = b.forwarding_address in (self.s.dpa, self.s.flush_sid)
            if b.flows == 0 or b.prefix in st.own or b.prefix in st.visiting:
                continue
            if here:
                if self.life.of(b.prefix) is None:
                    adopt.append(b.prefix)  # served here before this agent restarted
                elif self.waiting_for(b.prefix) == mn:
                    prepared.append(b.prefix)  # (came after its HI's expectation)
                continue
            keep[b.prefix] = ()
            served[b.prefix] = b.forwarding_address
        if adopt:
            self._adopt(mn, link, adopt, now)
        self._come_in(mn, link, prepared, now)
        if keep:
            self.attach(mn, link, (), keep, now, served)
            self._effects.append(Advertise(link))
        return len(keep)

    def attach(self, mn: str, link: str, own: Sequence[Prefix],
               previous: Mapping[Prefix, Sequence[FlowFilter]], now: float,
               served: Mapping[Prefix, IPv6Address] | None = None) -> None:
        """The MN came up on ``link``: anchor ``own``; keep ``previous`` reachable.

        ``previous`` maps each prefix from an earlier network still used by
        flows needing continuity to those flows (FM:3-1 filters).
        ``served``: where the LMs already said each is served (no LM:1-1
        for it then).  Called again for the same MN and link, it adds.
        """
        served = served or {}
        # Back home with a prefix of ours that went elsewhere - named as a
        # previous prefix, or simply given again (the MN's /64 here).
        returning = [p for p in dict.fromkeys((*own, *previous)) if p in self.away]
        add = [ForwardingEntry(EntryKind.ANCHOR, p, link=link) for p in own
               if p not in returning]
        foreign = [p for p in previous if p not in self.away and p not in own]
        for p in returning:
            self._return_home(p, link, now)
        holds = {}
        for p in foreign:
            here = [ForwardingEntry(EntryKind.ANCHOR, p, link=link)]
            if self.s.mode.moves_anchoring:
                # Packets that take the new direct path wait until the old
                # anchor's leftovers (ended by an end marker) have arrived.
                here.append(ForwardingEntry(EntryKind.BUFFER, p))
                holds[p] = BufferSpec(self.s.buffer.limit, self.s.hold_timeout, True)
            if self.life.of(p) in (PrefixState.HANDED, PrefixState.HELD):
                # Back at a point it had left (A -> B -> C -> B): its path
                # towards the point it went to goes, or the two would loop.
                self._rejoin(p, here, holds.get(p), now)
            else:
                add.extend(here)
        self._apply_new(add, now, holds)
        agent = self.s.host_based.get(mn)
        for p in own:
            if p not in returning:
                self._step(p, PrefixEvent.GIVEN)
            if agent:
                self._agent_of_prefix[p] = agent
        for p in foreign:
            self._step(p, PrefixEvent.KEPT)
        self._delegate(own, True)
        if self.s.mode.moves_anchoring:
            self._delegate(foreign, True)  # the anchoring moves here
        for p, flows in previous.items():
            # Charging starts before any signalling of this move goes out:
            # once it does, the old point may release packets here at any
            # moment (in switch mode the controller triggers it), and each
            # must be counted.  (The MN is not attached yet: no binding
            # report from here.)
            if flows:
                self._track(p, flows, now)
        prior = self.attached.get(mn)
        same = prior is not None and prior.link == link
        kept = prior.visiting if prior is not None and same else ()
        had = prior.own if prior is not None and same else ()
        own = tuple(dict.fromkeys((*had, *own, *returning)))
        self.attached[mn] = Attached(link, own, tuple(dict.fromkeys((*kept, *foreign))))
        for p in own:
            if p not in had:
                self._lm_update(p, self.s.dpa, now, mn=mn)
        self._subscribe([p for p in own if p not in had], now)
        for p in foreign:
            self.visiting[p] = Visiting(link, tuple(previous[p]), mn,
                                         expires=now + self.s.lifetime)
            self.set_timer(VisitCheck(p), now + self.s.lifetime / 2)
            self._claim(p, mn, served, now)
        self.stats.counters["attach"] += 1

    def _claim(self, p: Prefix, mn: str, served: Mapping[Prefix, IPv6Address],
               now: float) -> None:
        """Start taking a kept prefix from where it was, as the mode does it."""
        if self.s.mode is Mode.BGP:
            # Routers learn the new anchor by BGP once the binding says the
            # prefix is this MN's; the previous point (LM:1-1) is told to
            # send its leftovers here.
            join = Join(p)
            if self.lm is None or self._known(join, served, mn):
                self._joined(join, now)
            else:
                self._joins[self.lm.request(m.LocationQuery(p), now)] = join
            return
        if self.s.mode is Mode.SWITCH or self.s.controller is None:
            # The central FM-CP reacts to the binding update (4.2.1).  The
            # LMs refuses it if the prefix is bound to another MN (SM).
            self._lm_update(p, self.s.dpa, now, mn=mn)
            self._step(p, PrefixEvent.CLAIMED)
            return
        # Tunnel mode: find where the prefix was served last (LM:1-1) and
        # which anchor holds it (FM:4-3), then ask both for it.
        join = Join(p)
        if self.lm is not None and not self._known(join, served, mn):
            self._joins[self.lm.request(m.LocationQuery(p), now)] = join
        else:
            join.lm_done = True
        join.anchor = self.anchors.get(p, now)
        if join.anchor is not None:
            self._joined(join, now)  # its anchor known already: one round trip less
            return
        self._joins[self.endpoint.request(m.AnchorDiscovery(p), self.s.controller, now)] = join

    def _known(self, join: Join, served: Mapping[Prefix, IPv6Address], mn: str) -> bool:
        """Fill ``join`` from what the LMs already said (LM:1-1 by MN)."""
        where = served.get(join.prefix)
        if where is None:
            return False
        join.lm_done = True
        join.bound_to = mn
        join.previous = None if where == self.s.dpa else where
        return True

    def moving_in(self, prefix: Prefix) -> bool:
        """Whether ``prefix`` is delegated elsewhere while it comes here (PD:
        ask for it as a hint, without taking another)."""
        state = self.life.of(prefix)
        return state in (PrefixState.JOINING, PrefixState.VISITING) or (
            state is PrefixState.RETURNING and self.s.mode.moves_anchoring)

    def _step(self, prefix: Prefix, event: PrefixEvent) -> None:
        """Move ``prefix`` through its life here (an invalid step is counted)."""
        wrong = len(self.life.invalid)
        self.life.step(prefix, event)
        if len(self.life.invalid) > wrong:
            self.stats.counters["invalid-transition"] += 1

    def detach(self, mn: str, now: float) -> None:
        """The MN's link went down: hold its packets (FM:6-1) until told where."""
        st = self.attached.pop(mn, None)
        if st is None:
            return
        for p in (*st.own, *st.visiting):
            self._leave(st, p, now, hold=True)
        self.stats.counters["detach"] += 1

    def _leave(self, st: Attached, p: Prefix, now: float, hold: bool) -> None:
        """The MN on ``st`` no longer uses ``p`` here (it left, or the prefix
        was handed on); ``hold``: keep its packets (FM:6-1) until told where."""
        if hold:
            self._replace(p, [ForwardingEntry(EntryKind.BUFFER, p)], now, keep_buffer=False)
        self._step(p, PrefixEvent.LEFT)
        if p in st.own:
            self.away[p] = st.link
            self._came_back_from.pop(p, None)
            self._abandon_homecoming(p)
            st.own = tuple(x for x in st.own if x != p)
        elif p in st.visiting:
            self._drop_reverse(self.visiting.pop(p, None), now)
            self.cancel_timer(VisitCheck(p))
            self._abandon_lease_move(p, now)
            st.visiting = tuple(x for x in st.visiting if x != p)

    def _departed(self, prefix: Prefix, now: float, hold: bool, own_only: bool = False) -> None:
        """The network says an attached MN's ``prefix`` is served elsewhere
        now: the MN left, though no link event said so (a shared access
        link, no L2 trigger).  Its other prefixes go as their own news comes.
        ``own_only``: only for a prefix this router gave the MN."""
        for mn, st in list(self.attached.items()):
            if prefix in st.own or (prefix in st.visiting and not own_only):
                if hold:
                    self._held_on_link[prefix] = st.link  # (for FM:6-2's marker)
                self._leave(st, prefix, now, hold)
                if not st.own and not st.visiting:
                    del self.attached[mn]
                    self.stats.counters["departed"] += 1
                return

    def next_event(self) -> Effect | None:
        """The next thing the host must do (announce, delegate, advertise), in order."""
        return self._effects.popleft() if self._effects else None

    def _delegate(self, prefixes: Sequence[Prefix], on: bool) -> None:
        if not self.s.pd:
            return
        for p in prefixes:
            if on != (p in self.delegated):
                (self.delegated.add if on else self.delegated.discard)(p)
                self._effects.append(Delegate(p, on))

    def _owner(self, prefix: Prefix) -> str | None:
        """The attached MN using ``prefix`` here, if any (or the one a prefix
        prepared here waits for: its flows' state comes before it)."""
        for mn, st in self.attached.items():
            if prefix in st.own or prefix in st.visiting:
                return mn
        return self.waiting_for(prefix)

    # -- Messages --------------------------------------------------------------------------

    def on_event(self, event: Event, now: float) -> None:
        if isinstance(event, MessageReceived):
            handler = self._MESSAGES.get(type(event.message))
            if handler is not None:
                handler(self, event, event.message, now)
            elif not self.fn.handle(self.endpoint, event, now) and event.expects_reply:
                self.endpoint.reject(event, Cause.UNSUPPORTED, "anchor agent", now)
            return
        if self.lm is not None and event.request_id in self.lm and self._lm_outcome(event, now):
            return  # sent again, to the next member of the LMs pool
        if event.request_id in self._sweeping:
            self._on_swept(event, now)
        elif event.request_id in self.leases.asks:
            self._on_release_answer(event, now)
        elif event.request_id in self._homecoming:
            self._on_homecoming_answer(event, now)
        elif isinstance(event, ReplyReceived):
            self._on_reply(event, now)
        else:
            self._on_failure(event, now)

    def _on_buffer_ready(self, ev: MessageReceived, msg: m.BufferReady, now: float) -> None:
        why = self._ready_refusal(ev, msg)
        if why is not None:
            self.refuse(ev, why, now)
            return
        self._on_ready(ev, msg, now)

    def _on_inform(self, ev: MessageReceived, msg: m.LocationInform, now: float) -> None:
        """LM:1-3: where a prefix we subscribed to is served now."""
        if not self._from_lms(ev.source):
            # Only the LMs we subscribed at pushes to us: anyone else could
            # make us hold an MN's prefix.
            self.endpoint.reject(ev, Cause.NOT_AUTHORIZED, "not our LMs", now, msg.prefix)
            self.stats.counters["inform-refused"] += 1
            return
        self.endpoint.reply(ev, m.LocationInformAck(msg.prefix), now)
        if msg.lifetime and msg.forwarding_address not in (self.s.dpa, self.s.flush_sid):
            # Another point serves the prefix now.  Believed for our own
            # prefixes only: only their MN may move them (SM), while a
            # visiting prefix's inform may be an older point's last
            # refresh, crossing our claim.
            self._departed(msg.prefix, now, hold=True, own_only=True)
            if msg.prefix in self.away and self.s.mode is Mode.BGP:
                # Under BGP nothing else tells us where it went on to.  (In
                # tunnel mode each new point re-points our tunnel, which is
                # surer: an older point's last refresh can reach the LMs
                # after the new claim - believed, a return asked the wrong
                # point and the right one's held packets were lost.)
                self._served_at[msg.prefix] = msg.forwarding_address

    def _on_reply(self, event: ReplyReceived, now: float) -> None:
        self._resends.pop(event.request_id, None)
        if event.request_id in self._mn_queries:
            ask = self._mn_queries.pop(event.request_id)
            mn, link = ask.mn, ask.link
            if isinstance(event.reply, m.MnReply):
                self._on_mn_reply(mn, link, event.reply, now)
            return
        reply = event.reply
        join = self._joins.pop(event.request_id, None)
        if join is not None:
            if isinstance(reply, m.DiscoveryAnswer):
                join.anchor = reply
                self.anchors.put(reply, now)
            elif isinstance(reply, m.LocationReply):
                join.lm_done = True
                join.bound_to = reply.mn
                if reply.forwarding_address != self.s.dpa:
                    join.previous = reply.forwarding_address
            self._joined(join, now)
        elif event.request_id in self._parent_asks:
            # The parent AR tunnels the prefix here now: only then may the
            # binding move the core's route to it (before, packets routed
            # to the parent would find no way on).
            asked = self._parent_asks.pop(event.request_id)
            self._lm_update(asked, self.s.dpa, now, mn=self._mn_of(asked))
        elif isinstance(reply, m.RegistrationReply):
            self.registered = True

    def _on_failure(self, event: NegativeReply | RequestTimedOut, now: float) -> None:
        ask = self._mn_queries.pop(event.request_id, None)
        if ask is not None:
            # No answer: the MN keeps what its RS named until one comes (an
            # LMs restarting), asked again later each time.
            self.stats.counters["mn-query-failed"] += 1
            transient = isinstance(event, RequestTimedOut) or event.status.code in TRANSIENT
            if transient and ask.tries < CLAIM_RETRIES:
                self.set_timer(Requery(ask.mn, ask.link, ask.tries + 1),
                               now + CLAIM_BACKOFF * 2 ** ask.tries)
            return
        join = self._joins.pop(event.request_id, None)
        request = event.request
        if join is not None and isinstance(request, m.LocationQuery):
            join.lm_done = True  # no binding yet: the MN was not served elsewhere
            self._joined(join, now)
        elif (isinstance(event, NegativeReply) and event.status.code is Cause.NOT_AUTHORIZED
              and isinstance(request, m.LocationUpdate) and request.prefix in self.visiting):
            # SM: the LMs binds the prefix to another MN (switch mode).
            self._refuse_claim(request.prefix, now)
        else:
            self.stats.counters[f"failed:{request.TYPE.name}"] += 1
            if isinstance(event, RequestTimedOut):
                self._retry_hand(event, now)
            else:
                self._resends.pop(event.request_id, None)  # (refused: no more tries)
            if isinstance(event, RequestTimedOut) or event.status.code in TRANSIENT:
                self._retry_claim(request, now)

    _MESSAGES: ClassVar[dict[type, Callable[[Any, MessageReceived, Any, float], None]]] = {
        m.BufferReady: _on_buffer_ready, m.LocationInform: _on_inform,
        m.BufferRequest: AnchorHandover._on_buffer_request,
        m.FmHandoff: AnchorHandover._on_handoff,
        m.FlowStateTransfer: AnchorFlows._on_flow_state,
        m.LeaseRelease: AnchorLeases._on_lease_release,
        m.LeaseTake: AnchorLeases._on_lease_take,
        m.HandoverInitiate: AnchorPredict._on_initiate,
    }
    """Signalling the anchor itself answers, by message type (the rest goes
    to its FM-DP function, :class:`~.fmdp.DpFunction`)."""

    def process(self, now: float) -> None:
        super().process(now)
        deadline = self.dp.next_deadline()
        if deadline is not None:
            self.set_timer(Expire(), deadline)

    def on_timer(self, name: Hashable, now: float) -> None:
        handler = self._TIMERS.get(type(name))
        if handler is not None:
            handler(self, name, now)

    def _on_expire(self, _: Expire, now: float) -> None:
        self.dp.expire(now)

    def _on_register(self, _: Register, now: float) -> None:
        # Registrations and the bindings of attached MNs live ``lifetime``;
        # refresh them at half of it.
        if self.s.controller is not None:
            self.endpoint.request(
                m.AnchorRegistration(self.s.node_id, self.s.dpa, self.s.cpa,
                                     self.s.lifetime, self.s.prefixes),
                self.s.controller, now,
            )
        self._register_bindings(now)
        self.set_timer(Register(), now + self.s.lifetime / 2)

    def _on_status(self, _: Status, now: float) -> None:
        """FM:5-2: this router's data plane, as its cores asked for it."""
        if self.s.controller is None:
            return
        anchored = sum(len(st.own) for st in self.attached.values())
        report = self.fn.report(self.s.node_id, anchored, len(self.visiting) + len(self.serving),
                                errors=sum(self.failed.values()))
        self.endpoint.request(report, self.s.controller, now)
        self.set_timer(Status(), now + self.s.status_interval)

    def _on_reverse(self, t: Reverse, now: float) -> None:
        v = self.visiting.get(t.prefix)
        if v is not None:
            v.reverse = ForwardingEntry(EntryKind.TUNNEL, ANY_PREFIX, t.dpa,
                                        FlowFilter(src=t.prefix))
            self._apply_new([v.reverse], now)

    def _on_visit_check(self, t: VisitCheck, now: float) -> None:
        prefix = t.prefix
        v = self.visiting.get(prefix)
        if v is None:
            return
        if not v.flows_closed:
            # Flows still need the prefix: keep its lease and binding.
            v.expires = now + self.s.lifetime
            self._lm_update(prefix, self.s.dpa, now, mn=v.mn)
            self.set_timer(VisitCheck(prefix), now + self.s.lifetime / 2)
        elif now >= v.expires:
            self._revert(prefix, now)
        else:
            self.set_timer(VisitCheck(prefix), v.expires)

    _TIMERS: ClassVar[dict[type, Callable[[Any, Any, float], None]]] = {
        Expire: _on_expire, Register: _on_register, Status: _on_status,
        Cleanup: AnchorHandover._on_cleanup,
        Reverse: _on_reverse, VisitCheck: _on_visit_check,
        Settle: AnchorHandover._on_settle,
        HandFlows: AnchorFlows._on_hand_flows, Reclaim: AnchorHandover._on_reclaim,
        Resend: AnchorFlows._on_resend,
        Requery: _on_requery, LeaseWait: AnchorLeases._on_lease_wait,
        Sweep: AnchorRestart._on_sweep, Forget: AnchorPredict._on_forget,
    }

    def _joined(self, join: Join, now: float) -> None:
        """Both answers are in: claim the prefix from its previous point and anchor."""
        if self.s.mode is Mode.BGP:
            self._joined_bgp(join, now)
            return
        if not join.lm_done or join.anchor is None:
            return
        prefix = join.prefix
        v = self.visiting.get(prefix)
        if v is None:
            return
        if join.bound_to and join.bound_to != v.mn:
            self._refuse_claim(prefix, now)
            return
        answer = join.anchor
        self._step(prefix, PrefixEvent.CLAIMED)
        v.home_cpa = answer.cpa_address
        v.home_node = answer.node_id or ""
        anchor_agent = (str(answer.cpa_address), self.s.port)
        previous = join.previous
        if previous is not None and previous != answer.dpa_address:
            # Two paths will briefly carry the prefix here: the previous
            # point's leftovers and the anchor's new tunnel.  Hold the new
            # path until the end marker says the old one has drained.
            self.dp.apply([ForwardingEntry(EntryKind.BUFFER, prefix)], (), now,
                          {prefix: BufferSpec(self.s.buffer.limit, self.s.hold_timeout, True)})
            self.endpoint.request(m.BufferReady(prefix, self.s.flush_sid),
                                  self._agent_of(previous), now)
        parent = self.s.parent
        if parent is not None and parent != answer.dpa_address:
            # 4.2.3: the prefix is anchored at another AR; its anchoring moves
            # to ours (the binding below makes the central FM-CP re-route the
            # core), and our AR reaches us by its tunnel as in 4.2.2.
            v.parent = self._agent_of(parent)
            rid = self.endpoint.request(m.BufferReady(prefix, self.s.dpa), v.parent, now)
            self._parent_asks[rid] = prefix
            return
        if self.s.reverse_tunnel and self.s.mode is Mode.TUNNEL:
            # Installed once FM:6-2 below has gone out: the uplink is not
            # what the move waits for, the downlink is.
            self.set_timer(Reverse(prefix, answer.dpa_address), now)
        # FM:6-2 to the anchor: the new point is ready (re-point the tunnel,
        # or release what the anchor held when the MN left it).
        self.endpoint.request(m.BufferReady(prefix, self.s.dpa), anchor_agent, now)
        self._lm_update(prefix, self.s.dpa, now, mn=v.mn)

    # -- Helpers -------------------------------------------------------------------------

    def _mn_of(self, prefix: Prefix) -> str | None:
        v = self.visiting.get(prefix)
        return v.mn if v is not None and v.mn else None

    def _refuse_claim(self, prefix: Prefix, now: float) -> None:
        """SM: an MN named a prefix bound to another MN: it gets nothing here.

        What attach set up for it goes (anchoring, hold, charging,
        delegation); nothing was sent that moves the prefix's traffic (the
        binding and the other anchors are left alone), so the MN it belongs
        to is undisturbed.
        """
        v = self.visiting.pop(prefix, None)
        if v is None:
            return
        self.cancel_timer(VisitCheck(prefix))
        self.leases.moving.pop(prefix, None)
        self.leases.stayed.pop(prefix, None)
        self._replace(prefix, [], now)
        self._step(prefix, PrefixEvent.REFUSED)
        self._delegate((prefix,), False)
        self._announce((prefix,), False)
        self.flows.drop(prefix)
        self.dp.take_charges(prefix)  # not ours to charge: another MN's prefix
        for st in self.attached.values():
            st.visiting = tuple(p for p in st.visiting if p != prefix)
        self.stats.counters["claim-refused"] += 1

    def _revert(self, prefix: Prefix, now: float) -> None:
        v = self.visiting.pop(prefix, None)
        if v is None:
            return
        self._drop_reverse(v, now)
        self._delegate((prefix,), False)  # FM:3-3: back to its network's pool
        self._replace(prefix, [], now)
        self._step(prefix, PrefixEvent.REVERTED)
        self._announce((prefix,), False)
        self.flows.drop(prefix)
        for f, used in self.dp.take_charges(prefix).items():
            self.flows.record(f, used)
        self._lm_update(prefix, self.s.dpa, now, lifetime=0)
        self.leases.moving.pop(prefix, None)
        self._end_stay(prefix, now)
        if self.s.mode is Mode.TUNNEL and v.home_cpa is not None:
            home = (str(v.home_cpa), self.s.port)
            self.endpoint.request(m.FmHandoff(prefix, v.home_node, v.home_cpa), home, now)
        if v.parent is not None and v.home_cpa is not None:
            self.endpoint.request(m.FmHandoff(prefix, v.home_node, v.home_cpa), v.parent, now)
        for st in self.attached.values():
            st.visiting = tuple(p for p in st.visiting if p != prefix)
        self.stats.counters["reverted"] += 1

    def _drop_reverse(self, v: Visiting | None, now: float) -> None:
        # A pending install finds the prefix no longer visiting and does nothing.
        if v is not None and v.reverse is not None:
            self.dp.apply((), [v.reverse], now)
            v.reverse = None

    def _apply_new(self, add: list[ForwardingEntry], now: float,
                   buffers: Mapping[Prefix, BufferSpec] | None = None) -> None:
        self.dp.apply([e for e in add if not self.dp.has(e)], (), now, buffers)

    def _replace(self, prefix: Prefix, new: list[ForwardingEntry], now: float,
                 keep_buffer: bool = False, spec: BufferSpec | None = None) -> None:
        """Swap every whole-prefix entry of ``prefix`` for ``new``, atomically.

        Removing a BUFFER entry releases its packets through ``new``.
        """
        old = [e for e in self.dp.entries_of(prefix)
               if e.flow is None and not (keep_buffer and e.kind is EntryKind.BUFFER)]
        add = [e for e in new if e not in old]
        delete = [e for e in old if e not in new]
        buffers = {prefix: spec or self.s.buffer} if any(
            e.kind is EntryKind.BUFFER for e in add) else None
        self.dp.apply(add, delete, now, buffers)
