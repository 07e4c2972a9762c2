"""Every message of the protocol, one class per draft behaviour.

Messages are frozen, slotted dataclasses.  Each field is carried as one IE
(or, for tuple fields, zero or more IEs of the same type); the field's IE
code is in its metadata.  :data:`REGISTRY` maps type codes to classes and is
what the decoder uses.  Names of draft behaviours (``LM:1-1`` ...) are kept
in ``LABEL`` so users can find a message by the draft's label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from enum import IntEnum
from ipaddress import IPv6Address
from typing import Any, ClassVar

from .ie import CODECS, IE
from .types import (
    DpState,
    FlowFilter,
    FlowState,
    ForwardingEntry,
    Load,
    MnBinding,
    Prefix,
    Status,
)


class MsgType(IntEnum):
    """Message type codes (docs/protocol.md, section 4)."""

    LOCATION_QUERY = 1
    LOCATION_REPLY = 2
    LOCATION_INFORM = 3
    LOCATION_INFORM_ACK = 4
    LOCATION_UPDATE = 5
    LOCATION_UPDATE_ACK = 6
    POOL_JOIN = 7
    POOL_JOIN_ACK = 8
    PEER_QUERY = 9
    PEER_REPLY = 10
    FLOW_STATE_TRANSFER = 11
    FLOW_STATE_ACK = 12
    ANCHOR_REGISTRATION = 13
    REGISTRATION_REPLY = 14
    ANCHOR_DISCOVERY = 15
    DISCOVERY_ANSWER = 16
    FORWARDING_UPDATE = 17
    FORWARDING_UPDATE_ACK = 18
    DATAPLANE_STATUS = 19
    BUFFER_REQUEST = 20
    BUFFER_ACK = 21
    BUFFER_READY = 22
    BUFFER_READY_ACK = 23
    FM_HANDOFF = 24
    FM_HANDOFF_ACK = 25
    SUBSCRIBE = 26
    SUBSCRIBE_ACK = 27
    UNSUBSCRIBE = 28
    UNSUBSCRIBE_ACK = 29
    HEARTBEAT = 30
    HEARTBEAT_ACK = 31
    ERROR = 32
    MN_QUERY = 33
    MN_REPLY = 34
    LEASE_RELEASE = 35
    LEASE_RELEASE_ACK = 36
    LEASE_TAKE = 37
    LEASE_TAKE_ACK = 38
    HANDOVER_INITIATE = 39
    HANDOVER_ACK = 40


class Kind(IntEnum):
    """How a message field maps onto IEs."""

    ONE = 1
    OPTIONAL = 2
    MANY = 3


def ie(code: IE, *, optional: bool = False, many: bool = False) -> Any:
    """Declare a message field carried as IE ``code``."""
    if many:
        return field(default=(), metadata={"ie": code, "kind": Kind.MANY})
    if optional:
        return field(default=None, metadata={"ie": code, "kind": Kind.OPTIONAL})
    return field(metadata={"ie": code, "kind": Kind.ONE})


class Message:
    """Base of all messages: class attributes describe the type."""

    __slots__ = ()
    TYPE: ClassVar[MsgType]
    LABEL: ClassVar[str]
    """The draft behaviour this message realizes, e.g. ``"LM:1-1"``."""
    REPLY: ClassVar[type[Message] | None] = None
    """Positive reply type; None means the message is not acknowledged."""
    IDEMPOTENT: ClassVar[bool] = False
    """A read: served again, a duplicate gets the same answer or a fresher
    one, so its answer is not kept for duplicates (the reply cache holds
    it only while it is being served)."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One message field as the codec sees it."""

    name: str
    code: IE
    kind: Kind
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """The codec's view of one message class."""

    cls: type[Message]
    type_code: int
    fields: tuple[FieldSpec, ...]
    by_code: dict[int, tuple[int, bool, Callable[[bytes], Any]]]
    """IE code -> (position among the fields, repeated?, value decoder)."""
    defaults: tuple[Any, ...]
    """Per position: the default, or :data:`REQUIRED`."""


REQUIRED: Any = object()
"""Marks a field with no default in :attr:`MessageSpec.defaults`."""


REGISTRY: dict[int, MessageSpec] = {}
"""Message type code -> spec; filled by :func:`register`."""


def register(cls: type[Message]) -> type[Message]:
    """Add a message class to :data:`REGISTRY` (once per type code)."""
    code = int(cls.TYPE)
    if code in REGISTRY:
        raise RuntimeError(f"type code {code} registered twice")
    specs = []
    for f in fields(cls):  # type: ignore[arg-type]
        meta = f.metadata
        codec = CODECS[meta["ie"]]
        specs.append(
            FieldSpec(f.name, meta["ie"], meta["kind"], codec.encode, codec.decode)
        )
        assert f.default is not MISSING or meta["kind"] is Kind.ONE
    defaults = tuple(
        REQUIRED if s.kind is Kind.ONE else (() if s.kind is Kind.MANY else None)
        for s in specs
    )
    REGISTRY[code] = MessageSpec(
        cls, code, tuple(specs), {
            int(s.code): (i, s.kind is Kind.MANY, s.decode)
            for i, s in enumerate(specs)
        },
        defaults,
    )
    return cls


# -- Location management (draft 3.2.1) -------------------------------------


@register
@dataclass(frozen=True, slots=True)
class LocationReply(Message):
    """LM:1-2: LMs answers a query: the prefix and where to forward."""

    TYPE = MsgType.LOCATION_REPLY
    LABEL = "LM:1-2"
    prefix: Prefix = ie(IE.PREFIX)
    forwarding_address: IPv6Address = ie(IE.FORWARDING_ADDRESS)
    lifetime: int = ie(IE.LIFETIME)
    mn: str | None = ie(IE.MN_ID, optional=True)
    """The MN the prefix is bound to, if the binding names one."""


@register
@dataclass(frozen=True, slots=True)
class LocationQuery(Message):
    """LM:1-1: LMc (or LMp) asks LMs where a prefix of an MN is (pull)."""

    TYPE = MsgType.LOCATION_QUERY
    LABEL = "LM:1-1"
    REPLY = LocationReply
    IDEMPOTENT = True
    prefix: Prefix = ie(IE.PREFIX)


@register
@dataclass(frozen=True, slots=True)
class MnReply(Message):
    """LM:1-2 by MN: every live binding naming the MN (none: an empty list)."""

    TYPE = MsgType.MN_REPLY
    LABEL = "LM:1-2"
    mn: str = ie(IE.MN_ID)
    bindings: tuple[MnBinding, ...] = ie(IE.BINDING, many=True)


@register
@dataclass(frozen=True, slots=True)
class MnQuery(Message):
    """LM:1-1 by MN: where are the prefixes of this MN served?

    Draft 3.2: the LM maps an MN and its prefixes to anchors.  A router an
    MN attaches to asks this with the MN's identity at the access link to
    learn the prefixes it used elsewhere - a stock host names none.
    """

    TYPE = MsgType.MN_QUERY
    LABEL = "LM:1-1"
    REPLY = MnReply
    IDEMPOTENT = True
    mn: str = ie(IE.MN_ID)


@register
@dataclass(frozen=True, slots=True)
class LocationInformAck(Message):
    """Acknowledges an LM:1-3 push."""

    TYPE = MsgType.LOCATION_INFORM_ACK
    LABEL = "LM:1-3 ack"
    prefix: Prefix = ie(IE.PREFIX)


@register
@dataclass(frozen=True, slots=True)
class LocationInform(Message):
    """LM:1-3: LMs pushes a binding to a subscribed LMc/LMp.

    A lifetime of 0 says the binding is gone (expired or deleted).
    """

    TYPE = MsgType.LOCATION_INFORM
    LABEL = "LM:1-3"
    REPLY = LocationInformAck
    prefix: Prefix = ie(IE.PREFIX)
    forwarding_address: IPv6Address = ie(IE.FORWARDING_ADDRESS)
    lifetime: int = ie(IE.LIFETIME)
    mn: str | None = ie(IE.MN_ID, optional=True)


@register
@dataclass(frozen=True, slots=True)
class LocationUpdateAck(Message):
    """Acknowledges an LM:1-4 update once it is durable."""

    TYPE = MsgType.LOCATION_UPDATE_ACK
    LABEL = "LM:1-4 ack"
    prefix: Prefix = ie(IE.PREFIX)
    lifetime: int = ie(IE.LIFETIME)


@register
@dataclass(frozen=True, slots=True)
class LocationUpdate(Message):
    """LM:1-4: LMc tells LMs the new forwarding address of a prefix.

    Lifetime 0 deletes the binding.  ``origin`` names the original sender
    when a proxy or pool member relays the update.
    """

    TYPE = MsgType.LOCATION_UPDATE
    LABEL = "LM:1-4"
    REPLY = LocationUpdateAck
    prefix: Prefix = ie(IE.PREFIX)
    forwarding_address: IPv6Address = ie(IE.FORWARDING_ADDRESS)
    lifetime: int = ie(IE.LIFETIME)
    origin: str | None = ie(IE.ORIGIN, optional=True)
    mn: str | None = ie(IE.MN_ID, optional=True)
    """The MN using the prefix (its link-layer identity at the access
    router).  A binding that names an MN is refused to an update naming
    another: one host cannot take over another's prefix."""
    flows: int | None = ie(IE.COUNT, optional=True)
    """Flows needing continuity active on the prefix at the sender (None:
    not reported; the binding keeps what its MN's last report said)."""


@register
@dataclass(frozen=True, slots=True)
class PoolJoinAck(Message):
    """Accepts an LM:2-1 join: the acceptor's id and the prefixes it took."""

    TYPE = MsgType.POOL_JOIN_ACK
    LABEL = "LM:2-1 ack"
    node_id: str = ie(IE.NODE_ID)
    prefixes: tuple[Prefix, ...] = ie(IE.PREFIX, many=True)


@register
@dataclass(frozen=True, slots=True)
class PoolJoin(Message):
    """LM:2-1: an LMs joins the pool, naming the prefixes it is primary for."""

    TYPE = MsgType.POOL_JOIN
    LABEL = "LM:2-1"
    REPLY = PoolJoinAck
    node_id: str = ie(IE.NODE_ID)
    lms_address: IPv6Address = ie(IE.LMS_ADDRESS)
    prefixes: tuple[Prefix, ...] = ie(IE.PREFIX, many=True)


@register
@dataclass(frozen=True, slots=True)
class PeerReply(Message):
    """LM:2-3: the primary LMs answers a peer's query."""

    TYPE = MsgType.PEER_REPLY
    LABEL = "LM:2-3"
    prefix: Prefix = ie(IE.PREFIX)
    forwarding_address: IPv6Address = ie(IE.FORWARDING_ADDRESS)
    lifetime: int = ie(IE.LIFETIME)
    mn: str | None = ie(IE.MN_ID, optional=True)


@register
@dataclass(frozen=True, slots=True)
class PeerQuery(Message):
    """LM:2-2: an LMs asks the primary peer for a prefix's binding."""

    TYPE = MsgType.PEER_QUERY
    LABEL = "LM:2-2"
    REPLY = PeerReply
    IDEMPOTENT = True
    prefix: Prefix = ie(IE.PREFIX)


# -- Forwarding management (draft 3.2.2) -----------------------------------


@register
@dataclass(frozen=True, slots=True)
class FlowStateAck(Message):
    """Acknowledges FM:2: how many flow states were installed."""

    TYPE = MsgType.FLOW_STATE_ACK
    LABEL = "FM:2 ack"
    prefix: Prefix = ie(IE.PREFIX)
    count: int = ie(IE.COUNT)


@register
@dataclass(frozen=True, slots=True)
class FlowStateTransfer(Message):
    """FM:2: per-flow QoS/charging state moves from old to new anchor."""

    TYPE = MsgType.FLOW_STATE_TRANSFER
    LABEL = "FM:2"
    REPLY = FlowStateAck
    prefix: Prefix = ie(IE.PREFIX)
    states: tuple[FlowState, ...] = ie(IE.FLOW_STATE, many=True)
    transfer: int | None = ie(IE.TRANSFER_ID, optional=True)
    """Names this transfer among its sender's: sent again (its answer lost),
    it is recognized and not counted twice (optional to understand)."""


@register
@dataclass(frozen=True, slots=True)
class RegistrationReply(Message):
    """FM:4-2: acknowledges a registration, echoing its parameters."""

    TYPE = MsgType.REGISTRATION_REPLY
    LABEL = "FM:4-2"
    node_id: str = ie(IE.NODE_ID)
    dpa_address: IPv6Address = ie(IE.DPA_ADDRESS)
    cpa_address: IPv6Address = ie(IE.CPA_ADDRESS)
    lifetime: int = ie(IE.LIFETIME)
    prefixes: tuple[Prefix, ...] = ie(IE.PREFIX, many=True)


@register
@dataclass(frozen=True, slots=True)
class AnchorRegistration(Message):
    """FM:4-1: an anchor registers its DPA, CPA and anchored prefixes."""

    TYPE = MsgType.ANCHOR_REGISTRATION
    LABEL = "FM:4-1"
    REPLY = RegistrationReply
    node_id: str = ie(IE.NODE_ID)
    dpa_address: IPv6Address = ie(IE.DPA_ADDRESS)
    cpa_address: IPv6Address = ie(IE.CPA_ADDRESS)
    lifetime: int = ie(IE.LIFETIME)
    prefixes: tuple[Prefix, ...] = ie(IE.PREFIX, many=True)


@register
@dataclass(frozen=True, slots=True)
class DiscoveryAnswer(Message):
    """FM:4-4: the DPA a prefix is anchored to and its CPA."""

    TYPE = MsgType.DISCOVERY_ANSWER
    LABEL = "FM:4-4"
    prefix: Prefix = ie(IE.PREFIX)
    dpa_address: IPv6Address = ie(IE.DPA_ADDRESS)
    cpa_address: IPv6Address = ie(IE.CPA_ADDRESS)
    node_id: str | None = ie(IE.NODE_ID, optional=True)


@register
@dataclass(frozen=True, slots=True)
class AnchorDiscovery(Message):
    """FM:4-3: which anchor holds this prefix?"""

    TYPE = MsgType.ANCHOR_DISCOVERY
    LABEL = "FM:4-3"
    REPLY = DiscoveryAnswer
    IDEMPOTENT = True
    prefix: Prefix = ie(IE.PREFIX)


@register
@dataclass(frozen=True, slots=True)
class ForwardingUpdateAck(Message):
    """Acknowledges FM:5-1 once every entry is applied (atomically)."""

    TYPE = MsgType.FORWARDING_UPDATE_ACK
    LABEL = "FM:5-1 ack"
    count: int = ie(IE.COUNT)


@register
@dataclass(frozen=True, slots=True)
class ForwardingUpdate(Message):
    """FM:5-1: FM-CP tells FM-DP which entries to add and which to delete.

    The FM-DP applies deletions then additions as one atomic batch.
    """

    TYPE = MsgType.FORWARDING_UPDATE
    LABEL = "FM:5-1"
    REPLY = ForwardingUpdateAck
    add: tuple[ForwardingEntry, ...] = ie(IE.ENTRY_ADD, many=True)
    delete: tuple[ForwardingEntry, ...] = ie(IE.ENTRY_DELETE, many=True)


@register
@dataclass(frozen=True, slots=True)
class DataPlaneStatus(Message):
    """FM:5-2: FM-DP reports whether it forwards and its load (periodic),
    and what it carries (``state``; absent from older senders)."""

    TYPE = MsgType.DATAPLANE_STATUS
    LABEL = "FM:5-2"
    node_id: str = ie(IE.NODE_ID)
    load: Load = ie(IE.LOAD)
    state: DpState | None = ie(IE.DP_STATE, optional=True)


@register
@dataclass(frozen=True, slots=True)
class BufferAck(Message):
    """Acknowledges FM:6-1: buffering has started."""

    TYPE = MsgType.BUFFER_ACK
    LABEL = "FM:6-1 ack"
    prefix: Prefix = ie(IE.PREFIX)


@register
@dataclass(frozen=True, slots=True)
class BufferRequest(Message):
    """FM:6-1: FM-CP tells FM-DP to buffer packets to a prefix."""

    TYPE = MsgType.BUFFER_REQUEST
    LABEL = "FM:6-1"
    REPLY = BufferAck
    prefix: Prefix = ie(IE.PREFIX)
    limit: int | None = ie(IE.BUFFER_LIMIT, optional=True)
    timeout_ms: int | None = ie(IE.TIMEOUT_MS, optional=True)


@register
@dataclass(frozen=True, slots=True)
class BufferReadyAck(Message):
    """Acknowledges FM:6-2 with the number of packets flushed."""

    TYPE = MsgType.BUFFER_READY_ACK
    LABEL = "FM:6-2 ack"
    prefix: Prefix = ie(IE.PREFIX)
    count: int = ie(IE.COUNT)


@register
@dataclass(frozen=True, slots=True)
class BufferReady(Message):
    """FM:6-2: the new DPA is ready for the buffered packets of a prefix."""

    TYPE = MsgType.BUFFER_READY
    LABEL = "FM:6-2"
    REPLY = BufferReadyAck
    prefix: Prefix = ie(IE.PREFIX)
    dpa_address: IPv6Address = ie(IE.DPA_ADDRESS)
    anchor: str | None = ie(IE.NODE_ID, optional=True)
    """The node that anchors the prefix from now on, when that is the one
    told (a switch whose lease could not move, FM:3-2: the home anchor
    keeps the prefix, and its delegation, and tunnels it to the DPA)."""


@register
@dataclass(frozen=True, slots=True)
class FmHandoffAck(Message):
    """Acknowledges FM:1: the new FM has taken the role."""

    TYPE = MsgType.FM_HANDOFF_ACK
    LABEL = "FM:1 ack"
    prefix: Prefix = ie(IE.PREFIX)


@register
@dataclass(frozen=True, slots=True)
class FmHandoff(Message):
    """FM:1: the FM role for a prefix (or some of its flows) passes on."""

    TYPE = MsgType.FM_HANDOFF
    LABEL = "FM:1"
    REPLY = FmHandoffAck
    prefix: Prefix = ie(IE.PREFIX)
    node_id: str = ie(IE.NODE_ID)
    fm_address: IPv6Address = ie(IE.FM_ADDRESS)
    flows: tuple[FlowFilter, ...] = ie(IE.FLOW, many=True)


@register
@dataclass(frozen=True, slots=True)
class LeaseReleaseAck(Message):
    """Acknowledges FM:3-2's release: the DHCPv6-PD server took the lease
    back (or this router held none for the prefix)."""

    TYPE = MsgType.LEASE_RELEASE_ACK
    LABEL = "FM:3-2 release ack"
    prefix: Prefix = ie(IE.PREFIX)
    anchor: str | None = ie(IE.NODE_ID, optional=True)
    """The node anchoring the prefix: the replier, which released its lease;
    or (BGP mode) the node the prefix is only tunnelled from to the
    replier, its lease having stayed there - ask that one."""
    anchor_dpa: IPv6Address | None = ie(IE.DPA_ADDRESS, optional=True)
    """With ``anchor`` naming another node: that node's DPA address."""


@register
@dataclass(frozen=True, slots=True)
class LeaseRelease(Message):
    """FM:3-2, the anchoring moving from this router: give the prefix's
    DHCPv6-PD lease back to the server, so that the new anchor can have it.
    Answered once the server confirmed the release.  Sent by the controller
    (4.2.1), or under BGP (4.2, no controller) by the router the prefix's
    MN moved to."""

    TYPE = MsgType.LEASE_RELEASE
    LABEL = "FM:3-2 release"
    REPLY = LeaseReleaseAck
    prefix: Prefix = ie(IE.PREFIX)


@register
@dataclass(frozen=True, slots=True)
class LeaseTakeAck(Message):
    """Acknowledges FM:3-2's take: the prefix is delegated to this router."""

    TYPE = MsgType.LEASE_TAKE_ACK
    LABEL = "FM:3-2 take ack"
    prefix: Prefix = ie(IE.PREFIX)


@register
@dataclass(frozen=True, slots=True)
class LeaseTake(Message):
    """FM:3-2, the anchoring moving to this router: have the server delegate
    the prefix here (asked as a hint).  Answered once delegated, or refused
    (an ERROR) when the server will not, so the move can fall back to a
    tunnel from the anchor that keeps it (4.1.2)."""

    TYPE = MsgType.LEASE_TAKE
    LABEL = "FM:3-2 take"
    REPLY = LeaseTakeAck
    prefix: Prefix = ie(IE.PREFIX)


@register
@dataclass(frozen=True, slots=True)
class HandoverAck(Message):
    """Acknowledges a handover initiate (FMIPv6's HAck)."""

    TYPE = MsgType.HANDOVER_ACK
    LABEL = "HAck"
    mn: str = ie(IE.MN_ID)


@register
@dataclass(frozen=True, slots=True)
class HandoverInitiate(Message):
    """Predictive handover: the MN's router tells the router its L2 names as
    the target that the MN is coming, with the prefixes it serves for it
    (FMIPv6's HI, RFC 5568 6.2.1; 3GPP's handover request carries the
    same context).  The target keeps this until the MN arrives, so the
    move need not wait on LM:1-1: each binding is what the LMs would
    answer, and names only prefixes served at the sender."""

    TYPE = MsgType.HANDOVER_INITIATE
    LABEL = "HI"
    REPLY = HandoverAck
    mn: str = ie(IE.MN_ID)
    bindings: tuple[MnBinding, ...] = ie(IE.BINDING, many=True)


# -- Housekeeping -----------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class SubscribeAck(Message):
    """Acknowledges a subscription."""

    TYPE = MsgType.SUBSCRIBE_ACK
    LABEL = "LM:1-3 subscribe ack"
    prefixes: tuple[Prefix, ...] = ie(IE.PREFIX, many=True)


@register
@dataclass(frozen=True, slots=True)
class Subscribe(Message):
    """Ask for LM:1-3 pushes about these prefixes (and more specifics)."""

    TYPE = MsgType.SUBSCRIBE
    LABEL = "LM:1-3 subscribe"
    REPLY = SubscribeAck
    prefixes: tuple[Prefix, ...] = ie(IE.PREFIX, many=True)
    lifetime: int | None = ie(IE.LIFETIME, optional=True)


@register
@dataclass(frozen=True, slots=True)
class UnsubscribeAck(Message):
    """Acknowledges an unsubscription."""

    TYPE = MsgType.UNSUBSCRIBE_ACK
    LABEL = "LM:1-3 unsubscribe ack"
    prefixes: tuple[Prefix, ...] = ie(IE.PREFIX, many=True)


@register
@dataclass(frozen=True, slots=True)
class Unsubscribe(Message):
    """Stop LM:1-3 pushes about these prefixes."""

    TYPE = MsgType.UNSUBSCRIBE
    LABEL = "LM:1-3 unsubscribe"
    REPLY = UnsubscribeAck
    prefixes: tuple[Prefix, ...] = ie(IE.PREFIX, many=True)


@register
@dataclass(frozen=True, slots=True)
class HeartbeatAck(Message):
    """Answers a heartbeat."""

    TYPE = MsgType.HEARTBEAT_ACK
    LABEL = "heartbeat ack"
    node_id: str = ie(IE.NODE_ID)


@register
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Liveness probe between peers (pool members, CP and DP)."""

    TYPE = MsgType.HEARTBEAT
    LABEL = "heartbeat"
    REPLY = HeartbeatAck
    node_id: str = ie(IE.NODE_ID)


@register
@dataclass(frozen=True, slots=True)
class Error(Message):
    """Negative reply to any request, with a cause code."""

    TYPE = MsgType.ERROR
    LABEL = "error"
    status: Status = ie(IE.STATUS)
    prefix: Prefix | None = ie(IE.PREFIX, optional=True)


def message_class(code: int) -> type[Message]:
    """The class registered for a type code (KeyError if none)."""
    return REGISTRY[code].cls
