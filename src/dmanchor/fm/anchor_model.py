"""What an access router's anchor agent is configured with, keeps, and asks.

* :class:`Mode` - the draft's solutions as strategies: how the prefixes of
  a moving MN stay reachable.
* :class:`AnchorSettings` - one router's configuration.
* The life cycle of an MN prefix at a router: every state and every
  transition in one table, :data:`TRANSITIONS` (in the manner of h11's
  ``_state.py``), kept per prefix by :class:`PrefixLife`.
* The effects the agent asks of its host (:data:`Effect`) and the data it
  keeps per MN, per visiting prefix and per pending claim.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv6Address
from typing import NamedTuple

from ..dataplane.api import BufferSpec
from ..transport.reliable import Addr
from ..wire import messages as m
from ..wire.types import Cause, FlowFilter, ForwardingEntry, Prefix


class Mode(Enum):
    """How the prefixes of an MN that moves stay reachable."""

    TUNNEL = "tunnel"
    """Draft 4.1.2: the previous anchor keeps anchoring the prefix and
    tunnels it (SRv6) to the router the MN is at."""
    SWITCH = "switch"
    """Draft 4.2.1: the anchoring moves to the new router; a central FM-CP
    re-routes the core (FM:5-1) when the binding changes."""
    BGP = "bgp"
    """Draft 4.2: the anchoring moves; the new router announces the prefix
    by BGP and the previous one withdraws it."""

    @property
    def moves_anchoring(self) -> bool:
        """Whether the new router anchors (and delegates) the prefix itself."""
        return self is not Mode.TUNNEL


MODES = tuple(mode.value for mode in Mode)
"""The modes as configuration spells them."""


class PrefixState(Enum):
    """Where an MN prefix stands at one router (absent: not in use here)."""

    ANCHORED = "anchored"
    """One of this router's prefixes, used by an MN attached here."""
    HELD = "held"
    """Its MN left; packets to it are held (FM:6-1) until told where."""
    HANDED = "handed"
    """Its MN is served elsewhere: what still arrives here is tunnelled
    there (FM:6-2 done); an own prefix stays ours to take back."""
    RETURNING = "returning"
    """Its MN is back with it; the direct path holds until the point it was
    handed to has sent what it had (FM:6-2 answered, or an end marker)."""
    JOINING = "joining"
    """A prefix from elsewhere kept for an arriving MN, anchored here while
    the answers (LM:1-1, FM:4-3) that let it be claimed are awaited."""
    VISITING = "visiting"
    """A prefix from elsewhere anchored here for its MN's flows."""
    SERVING = "serving"
    """Draft 4.2.3: anchored here for a forwarding switch below."""


class PrefixEvent(Enum):
    """What moves a prefix from one :class:`PrefixState` to another."""

    GIVEN = "given"
    """An MN attached here was given one of our prefixes."""
    KEPT = "kept"
    """An arriving MN keeps a prefix from elsewhere (the LMs said it carries
    flows, or its RS named it); in switch mode it is claimed at once."""
    CLAIMED = "claimed"
    """The answers are in: the prefix was claimed from its previous point."""
    REFUSED = "refused"
    """SM: the binding names another MN - the claim is dropped."""
    LEFT = "left"
    """Its MN left (a link event, an L2 trigger, or news from the network)."""
    READY = "ready"
    """FM:6-2: another point is ready for it - send what we hold there."""
    BACK = "back"
    """Its MN came back with one of our prefixes."""
    SETTLED = "settled"
    """Nothing is left to wait for on the way home: the hold is lifted."""
    REVERTED = "reverted"
    """FM:3-3: its flows ended and its lifetime ran out - it goes home."""
    TAKEN_OVER = "taken-over"
    """Draft 4.2.3: a forwarding switch below hands us a prefix anchored at
    another access router, whose anchoring moves here."""
    RELEASED = "released"
    """FM:1 took it back, or a leftover tunnel was cleaned up."""
    DROPPED = "dropped"
    """A claim that never drew the prefix's traffic here ends: its MN left
    while the lease (BGP mode with DHCPv6-PD) was still awaited."""
    ADOPTED = "adopted"
    """A restarted agent finds a prefix from elsewhere still served here for
    an MN on its link (its kernel kept the route; the LMs binds it here,
    busy): claimed again, without a hold (its anchor sends it here
    already), to learn the anchor it answers to."""


_ = PrefixState
TRANSITIONS: dict[tuple[PrefixState | None, PrefixEvent], PrefixState | None] = {
    # Given to an MN here; or given again on its return, nothing to wait for.
    (None, PrefixEvent.GIVEN): _.ANCHORED,
    (_.ANCHORED, PrefixEvent.GIVEN): _.ANCHORED,
    (_.HELD, PrefixEvent.GIVEN): _.ANCHORED,
    (_.HANDED, PrefixEvent.GIVEN): _.ANCHORED,
    # Back home while it is served elsewhere: held until that point's leftovers are in.
    (_.HANDED, PrefixEvent.BACK): _.RETURNING,
    (None, PrefixEvent.BACK): _.RETURNING,  # its leftover tunnel was already cleaned up
    (_.HELD, PrefixEvent.BACK): _.RETURNING,
    (_.RETURNING, PrefixEvent.SETTLED): _.ANCHORED,
    # A prefix from elsewhere, kept for an arriving MN.
    (None, PrefixEvent.KEPT): _.JOINING,
    (_.HANDED, PrefixEvent.KEPT): _.JOINING,
    (_.HELD, PrefixEvent.KEPT): _.JOINING,
    (_.JOINING, PrefixEvent.KEPT): _.JOINING,
    (_.VISITING, PrefixEvent.KEPT): _.VISITING,
    (_.JOINING, PrefixEvent.CLAIMED): _.VISITING,
    (None, PrefixEvent.ADOPTED): _.JOINING,
    (_.JOINING, PrefixEvent.REFUSED): None,
    (_.VISITING, PrefixEvent.REFUSED): None,
    # Its MN leaves.
    (_.ANCHORED, PrefixEvent.LEFT): _.HELD,
    (_.JOINING, PrefixEvent.LEFT): _.HELD,
    (_.VISITING, PrefixEvent.LEFT): _.HELD,
    (_.RETURNING, PrefixEvent.LEFT): _.HELD,
    (_.HELD, PrefixEvent.LEFT): _.HELD,
    (_.HELD, PrefixEvent.DROPPED): None,
    # FM:6-2: another point is ready - what arrives here goes there.
    (_.HELD, PrefixEvent.READY): _.HANDED,
    (_.ANCHORED, PrefixEvent.READY): _.HANDED,
    (_.JOINING, PrefixEvent.READY): _.HANDED,
    (_.VISITING, PrefixEvent.READY): _.HANDED,
    (_.RETURNING, PrefixEvent.READY): _.HANDED,
    (_.HANDED, PrefixEvent.READY): _.HANDED,
    (None, PrefixEvent.READY): _.HANDED,
    (None, PrefixEvent.TAKEN_OVER): _.SERVING,
    (_.HANDED, PrefixEvent.TAKEN_OVER): _.SERVING,
    (_.SERVING, PrefixEvent.TAKEN_OVER): _.SERVING,
    # 4.2.3: the anchoring taken over for a switch below moves to another AR.
    (_.SERVING, PrefixEvent.READY): _.HANDED,
    # Its life here ends.
    (_.VISITING, PrefixEvent.REVERTED): None,
    (_.HANDED, PrefixEvent.RELEASED): None,
    (_.SERVING, PrefixEvent.RELEASED): None,
}
"""(state, event) -> next state; ``None`` is "not in use here".  A pair not
in the table is a transition the agent must never make."""
del _


class Heard(Enum):
    """What hearing a host on an access link came to."""

    ARRIVED = "arrived"
    """A host not attached on that link: it is now (and asked about)."""
    NAMED_MORE = "named more"
    """An attached MN's RS named prefixes not kept for it yet: kept now."""
    ANSWERED = "answered"
    """An attached MN solicited: it is advertised to again."""
    KNOWN = "known"
    """An attached MN, talking: nothing to do."""


class Transition(NamedTuple):
    """One step of a prefix's life at a router."""

    prefix: Prefix
    before: PrefixState | None
    event: PrefixEvent
    after: PrefixState | None


class PrefixLife:
    """The state of every MN prefix at one router, moved only by :data:`TRANSITIONS`."""

    def __init__(self, keep_history: bool = False) -> None:
        self.state: dict[Prefix, PrefixState] = {}
        self.history: list[Transition] | None = [] if keep_history else None
        """Every transition, in order (tests and traces; off by default)."""
        self.invalid: list[Transition] = []
        """Steps the table does not allow (the agent's own error, counted)."""

    def of(self, prefix: Prefix) -> PrefixState | None:
        """The state of ``prefix`` here (None: not in use here)."""
        return self.state.get(prefix)

    def step(self, prefix: Prefix, event: PrefixEvent) -> PrefixState | None:
        """Move ``prefix`` on ``event``; returns its new state.  A step the
        table does not allow leaves the state as it was and is recorded in
        :attr:`invalid`."""
        before = self.state.get(prefix)
        key = (before, event)
        if key not in TRANSITIONS:
            self.invalid.append(Transition(prefix, before, event, before))
            return before
        after = TRANSITIONS[key]
        if after is None:
            self.state.pop(prefix, None)
        else:
            self.state[prefix] = after
        if self.history is not None:
            self.history.append(Transition(prefix, before, event, after))
        return after


@dataclass(frozen=True, slots=True)
class AnchorSettings:
    """One access router's anchor agent."""

    node_id: str
    """Node id (FM:4-1 registration, FM:1)."""
    dpa: IPv6Address
    """Data-plane address: the SRv6 SID (End.DT6) tunnels are sent to."""
    cpa: IPv6Address
    """Control-plane address (host of this agent's endpoint)."""
    prefixes: tuple[Prefix, ...]
    """Prefixes anchored here (registered with the controller)."""
    uplink: IPv6Address
    """Next hop towards the core (used when the prefix anchoring moves away)."""
    controller: Addr | None = None
    """Mobility controller (FM:4 registry; central FM-CP in switch mode)."""
    lms: Addr | None = None
    """LMs or LMp receiving LM:1-4 updates."""
    lms_pool: tuple[Addr, ...] = ()
    """The other members of ``lms``'s LM:2 pool (Fig 1a): an LM request that
    ``lms`` leaves unanswered goes on to them in turn."""
    mode: Mode = Mode.TUNNEL
    """How a moving MN's prefixes stay reachable (:class:`Mode`)."""
    port: int = 5400
    """Signalling port of peer anchors (at their CPA)."""
    lifetime: int = 600
    """Lifetime of registrations and bindings, seconds."""
    buffer: BufferSpec = BufferSpec()
    """FM:6 buffer limits."""
    hold_timeout: float = 1.0
    """Longest wait for the old path's end marker at a new point, seconds."""
    parent: IPv6Address | None = None
    """For a forwarding switch (DPN, draft 4.2.2/4.2.3): the DPA of the access
    router above it.  A prefix anchored at another AR is then asked of this
    parent, so its anchoring moves there (4.2.3); one anchored at the parent
    only changes the parent's tunnel (4.2.2)."""
    reverse_tunnel: bool = False
    """Tunnel mode (4.1.2): also send the MN's uplink from a visiting prefix
    back to its anchor (a source-prefix rule into SRv6 towards the anchor's
    DPA), which forwards it from the network that owns the prefix.  Needed
    where the network filters sources by ingress (BCP 38) or a firewall must
    see both directions; otherwise the uplink leaves directly."""
    pd: bool = False
    """The MN prefixes anchored here are DHCPv6-PD delegations (draft 4.2.1):
    :class:`Delegate` effects tell the PD client side when
    this router starts anchoring one (request it, as a hint) and when it
    stops (release it, so it can go to the next anchor or back to the pool)."""
    flow_idle: float = 30.0
    """Seconds without a charged packet after which a flow conntrack cannot
    judge here has ended (one seen one way, or not at all: its packets come
    decapsulated); the routers' UDP timeout."""
    defer_charges: bool = False
    """FM:2 at the previous point: ask the host for the flows' charges
    (:class:`TakeCharges`, answered by ``charges_taken``) instead of reading
    them from the data plane inline - a host whose data plane reads and
    clears counters by spawning processes (nft) must not block its event
    loop on them."""
    host_based: Mapping[str, str] = field(default_factory=dict)
    """MN-ID (link-layer address) -> node id of its own mobility agent, for
    MNs running one (Fig 2a/2b; "" if not said): the network keeps none of
    their prefixes for them, so their flows are not reported to the LMs; and
    an agent's FM:6-2 is believed only for prefixes given to its MN-ID."""
    agents: Mapping[IPv6Address, Addr] = field(default_factory=dict)
    """DPA address -> signalling endpoint of the agent serving it.  Peers not
    listed are assumed to listen on their DPA address (co-located CPA/DPA
    with the agent bound there, as in the simulator)."""
    agent_ids: Mapping[IPv6Address, str] = field(default_factory=dict)
    """DPA address -> node id of the anchor it belongs to: a signed FM:6-2
    naming that DPA (or its flush SID) is believed only from that node's key.
    DPAs not listed: only from the agent's endpoint (:attr:`agents`)."""
    status_interval: float = 1.0
    """Seconds between FM:5-2 reports of this router's data plane to the
    controller (0: none).  The controller declares the data plane down after
    its ``dead_after`` without one."""

    @property
    def flush_sid(self) -> IPv6Address:
        """Where previous points send leftovers: the DPA address + 1.

        Packets decapsulated there pass the hold of their prefix (see
        docs/protocol.md, FM:6); packets to the DPA address itself do not.
        """
        return self.dpa + 1


@dataclass(frozen=True, slots=True)
class Announce:
    """BGP (mode ``bgp``): start (``on``) or stop announcing ``prefix``."""

    prefix: Prefix
    on: bool


@dataclass(frozen=True, slots=True)
class Delegate:
    """DHCPv6-PD (``pd``): hold (``on``: ask for it, as a hint) or release ``prefix``."""

    prefix: Prefix
    on: bool


@dataclass(frozen=True, slots=True)
class Advertise:
    """Send a Router Advertisement on the access ``link`` now: the prefixes
    kept for an MN there changed (new ones deprecated, to stay valid)."""

    link: str


@dataclass(frozen=True, slots=True)
class TakeCharges:
    """FM:2 (``defer_charges``): take the charges of ``prefix``'s flows off
    the data plane (``DataPlane.take_charges``) and hand them to
    ``AnchorAgentCore.charges_taken``; they go to the point ``to``."""

    prefix: Prefix
    to: IPv6Address


@dataclass(frozen=True, slots=True)
class LeaseStayed:
    """BGP mode with DHCPv6-PD (FM:3-2): ``prefix``'s lease could not come
    here (``reason``), so it stays anchored at the router of DPA ``anchor``,
    tunnelled here (4.1.2).  For the host's log and the report."""

    prefix: Prefix
    anchor: IPv6Address
    reason: str


Effect = Announce | Delegate | Advertise | TakeCharges | LeaseStayed
"""What the agent asks of its host besides messages and forwarding."""


# -- Timers: one type per kind, the key carrying what it is about -------------------
# (Dataclasses, not named tuples: two keys of different kinds must never be
# equal, as tuples with equal fields would be.)


@dataclass(frozen=True, slots=True)
class Expire:
    """The data plane's next hold deadline."""


@dataclass(frozen=True, slots=True)
class Register:
    """Refresh the registration and the attached MNs' bindings."""


@dataclass(frozen=True, slots=True)
class Status:
    """Send the next FM:5-2 report."""


@dataclass(frozen=True, slots=True)
class Cleanup:
    """Remove a handed prefix's leftover tunnel once leftovers have drained."""

    prefix: Prefix
    target: IPv6Address


@dataclass(frozen=True, slots=True)
class Reverse:
    """Install a visiting prefix's uplink reverse tunnel (after FM:6-2 went)."""

    prefix: Prefix
    dpa: IPv6Address


@dataclass(frozen=True, slots=True)
class VisitCheck:
    """Refresh a visiting prefix while flows need it; revert it after (FM:3-3)."""

    prefix: Prefix


@dataclass(frozen=True, slots=True)
class HandFlows:
    """FM:2 to the point a prefix was handed to - after the FM:6-2 answer
    went, since reading the counters may take the host a while."""

    prefix: Prefix
    to: IPv6Address


@dataclass(frozen=True, slots=True)
class Settle:
    """Lift the hold of a prefix taken back home if the end marker of the
    tunnel it came back from has not (lost, or eaten by a point that still
    thought its MN was there)."""

    prefix: Prefix
    link: str


@dataclass(frozen=True, slots=True)
class Reclaim:
    """Ask again for a kept prefix whose claim met a silent peer: its anchor
    (FM:4-3 or FM:6-2 unanswered) - while its MN is still here."""

    prefix: Prefix
    discover: bool
    """Whether the discovery failed (the claim starts over), or the FM:6-2
    to the anchor found (only that is sent again)."""


@dataclass(frozen=True, slots=True)
class Requery:
    """Ask the LMs again where an MN's prefixes are served (LM:1-1 by MN),
    its last query having timed out - while the MN is still on ``link``."""

    mn: str
    link: str
    tries: int
    """Queries that timed out so far."""


@dataclass(frozen=True, slots=True)
class Resend:
    """Send FM:2's state again: its transfer timed out (``tries`` so far).
    The receiver takes a repeat of a transfer it applied as answered.  (Or
    a home anchor's FM:6-2 to the point that had its prefix, for the
    flows' charges it holds.)"""

    message: m.FlowStateTransfer | m.BufferReady
    to: Addr
    tries: int


MAX_SEEN_TRANSFERS = 4096
"""FM:2 transfers a point remembers having applied (to take a repeat as
answered): older ones are forgotten first."""

CLAIM_RETRIES = 4
"""Retries of a claim (or of an MN's LM:1-1 query) after its request timed
out (the transport's own retransmissions having failed), before it is
abandoned and counted."""
CLAIM_BACKOFF = 0.5
"""Seconds before the first retry; each next one waits twice as long
(0.5, 1, 2, 4 s: with the transport's ~1.5 s a try, ~15 s in all)."""

TRANSIENT = frozenset({Cause.UNKNOWN_PREFIX, Cause.NOT_PRIMARY, Cause.PEER_UNREACHABLE,
                       Cause.RESOURCE_EXHAUSTED, Cause.INTERNAL, Cause.STORE_FAILURE})
"""Negative answers that may change if asked again: a controller or LMs
just restarted knows no registration yet (the anchors refresh theirs within
half a lifetime), a store or a peer was down.  The rest (refused, malformed)
are final."""

SETTLE_GRACE = 0.05
"""Seconds a returned prefix's hold may outlast the visited point's FM:6-2
answer: what was in flight towards that point when the prefix came home
follows the answer, ended by the end marker, which lifts the hold sooner."""

Timer = Expire | Register | Cleanup | Reverse | VisitCheck | HandFlows | Settle
"""The anchor agent's timer keys."""


@dataclass(slots=True)
class Visiting:
    """A prefix from another network anchored here for an MN's flows."""

    link: str
    flows: tuple[FlowFilter, ...]
    mn: str = ""  # the MN that claimed it (its identity at the access link)
    home_cpa: IPv6Address | None = None
    home_node: str = ""
    parent: Addr | None = None  # the AR that took the anchoring over (4.2.3)
    reverse: ForwardingEntry | None = None  # uplink reverse tunnel to the anchor, once installed
    expires: float = 0.0
    flows_closed: bool = False
    claim_retries: int = 0  # retries of its claim so far (:class:`Reclaim`)


@dataclass(slots=True)
class Join:
    """A visiting prefix waiting for its previous point (LM) and anchor (FM:4)."""

    prefix: Prefix
    previous: IPv6Address | None = None
    lm_done: bool = False
    anchor: m.DiscoveryAnswer | None = None
    bound_to: str | None = None  # the MN the location binding names, if any


ANCHOR_CACHE_MAX = 10_000
"""FM:4-4 answers an anchor agent keeps at most (the oldest go first)."""


class AnchorCache:
    """FM:4-4 answers by prefix, each believed ``ttl`` seconds.

    The controller answers FM:4-3 from the anchors' registrations, which
    change only when an anchor registers anew (a restart with another
    address) - and a registration lives a lifetime.  Kept for that long, a
    prefix's anchor is asked for once, not at every move of its MN (one
    round trip off each later handover); an answer whose anchor then fails
    to respond is forgotten, so the next claim asks again.
    """

    def __init__(self, ttl: float, limit: int = ANCHOR_CACHE_MAX) -> None:
        self.ttl = ttl
        self.limit = limit
        self._entries: OrderedDict[Prefix, tuple[m.DiscoveryAnswer, float]] = OrderedDict()

    def get(self, prefix: Prefix, now: float) -> m.DiscoveryAnswer | None:
        """The answer kept for ``prefix``, if still believed."""
        entry = self._entries.get(prefix)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[prefix]
            return None
        return entry[0]

    def put(self, answer: m.DiscoveryAnswer, now: float) -> None:
        self._entries[answer.prefix] = (answer, now + self.ttl)
        self._entries.move_to_end(answer.prefix)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def forget(self, prefix: Prefix) -> None:
        self._entries.pop(prefix, None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True)
class Attached:
    """An MN on one of this router's access links, and the prefixes it uses here."""

    link: str
    own: tuple[Prefix, ...]
    visiting: tuple[Prefix, ...] = ()


@dataclass(slots=True)
class AnchorStats:
    """What the agent did (signalling per draft label is in the endpoint)."""

    counters: Counter[str] = field(default_factory=Counter)
    flushed: int = 0
