"""Who may send what to a function: one table per function core.

Rule 1: a request a function's table lists is served only when it is
signed by a key one of whose roles the table names for it.  Anything else
is answered NOT_AUTHORIZED (or, for a notification, dropped), counted by
message type and reason, and changes nothing.

Rule 2: unsigned messages reach a function only on a node that runs
``insecure = true`` (a node with keys drops them in SM, before any
function sees them); there the table cannot judge them and the function's
own checks (source addresses) are all there is.

Rule 3: message types a table does not list are open to every
authenticated sender (queries, acknowledgements); a function refuses the
types it does not serve as UNSUPPORTED anyway.

Checks that need the message's content (the registration names its own
sender, a BUFFER_READY names a target its sender may name) are the
function's, after these tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_address

from ..wire import messages as m
from ..wire.auth import Role
from .reliable import Addr, MessageReceived

Senders = Mapping[type[m.Message], frozenset[Role]]
"""A function's table: request type -> roles that may send it."""

A, F, C = Role.ANCHOR, Role.FMDP, Role.CONTROLLER
S, P, N = Role.LMS, Role.LMP, Role.MN


def roles(*r: Role) -> frozenset[Role]:
    """A set of roles (reads better in the tables)."""
    return frozenset(r)


ANCHOR_SENDERS: Senders = {
    # FM:6-2 from the new anchor, from the controller that moves anchoring,
    # and from a host-based MN's own agent (then only for this anchor's
    # prefixes: checked by the anchor).
    m.BufferReady: roles(A, C, N),
    # FM:1 (FM:3-3 revert): anchors of the prefix and the controller.
    m.FmHandoff: roles(A, C),
    # FM:2: the previous anchor's flow state and counters.
    m.FlowStateTransfer: roles(A),
    # FM:5-1 and FM:6-1 are the controller's: another anchor's FM:6-1 would
    # make this one hold (and so cut) an MN's own prefix.
    m.ForwardingUpdate: roles(C),
    m.BufferRequest: roles(C),
    # FM:3-2's lease moves are the controller's: anyone else could make
    # this router give up (or take) an MN's prefix.  Under BGP (no
    # controller) the anchor its MN moved to asks for the release; the
    # anchor refuses it for an MN on its own links.
    m.LeaseRelease: roles(C, A),
    m.LeaseTake: roles(C),
    # LM:1-3: the LMs (or LMp) this anchor subscribed at.
    m.LocationInform: roles(S, P),
    # A predictive move's context, from the MN's router (it names only
    # prefixes served there: checked by the anchor).
    m.HandoverInitiate: roles(A),
}
"""The anchor agent (:class:`~dmanchor.fm.anchor.AnchorAgentCore`)."""

FMDP_SENDERS: Senders = {
    m.ForwardingUpdate: roles(C),
    m.BufferRequest: roles(C),
    m.FlowStateTransfer: roles(C, A),
}
"""A stand-alone FM-DP (:class:`~dmanchor.fm.fmdp.FmDpCore`)."""

CONTROLLER_SENDERS: Senders = {
    m.AnchorRegistration: roles(A),
    # As the FM-CP of access routers running an FM-DP only (Fig 1c/1d):
    # FM:6-2 and FM:1 from the forwarding switches below them.
    m.BufferReady: roles(A),
    m.FmHandoff: roles(A),
    m.AnchorDiscovery: roles(A, N),
    m.DataPlaneStatus: roles(F, A),
    m.LocationInform: roles(S, P),
}
"""The mobility controller (:class:`~dmanchor.fm.controller.ControllerCore`)."""

LMS_SENDERS: Senders = {
    m.LocationUpdate: roles(A, C, S, P, N),
    m.Subscribe: roles(A, C, P),
    m.Unsubscribe: roles(A, C, P),
    m.MnQuery: roles(A, S, P),
    # LM:2: pool membership and what only members ask each other.
    m.PoolJoin: roles(S),
    m.PeerQuery: roles(S),
    m.Heartbeat: roles(S),
    m.LocationInform: roles(S),
}
"""An LMs pool member (:class:`~dmanchor.lm.lms.LmsCore`)."""

LMP_SENDERS: Senders = {
    m.LocationUpdate: roles(A, C, N),
    m.Subscribe: roles(A, C),
    m.Unsubscribe: roles(A, C),
    m.MnQuery: roles(A),
    m.LocationInform: roles(S),
}
"""An LM proxy (:class:`~dmanchor.lm.lmp.LmpCore`)."""

LMC_SENDERS: Senders = {m.LocationInform: roles(S, P)}
"""An LM client (:class:`~dmanchor.lm.lmc.LmcCore`)."""

MN_SENDERS: Senders = {m.FlowStateTransfer: roles(A)}
"""An MN's agent (:class:`~dmanchor.fm.mn_agent.MnAgentCore`)."""


def refusal(table: Senders, ev: MessageReceived) -> str | None:
    """Why ``ev`` is refused under ``table`` (a counter key), or None."""
    allowed = table.get(type(ev.message))
    if allowed is None or ev.sender is None:
        return None  # rule 3 / rule 2
    if allowed & ev.roles:
        return None
    return f"refused:{ev.message.TYPE.name}:role"


def not_own_id(ev: MessageReceived, node_id: str) -> bool:
    """Whether a signed message names a node id other than its signer's
    (a registration, a status report, a pool join speak for the sender)."""
    return ev.sender is not None and ev.sender != node_id


def from_controller(ev: MessageReceived, controller: Addr | None) -> bool:
    """Whether the controller sent ``ev``: its key's role when signed (an
    address can be borrowed), its address only on an insecure deployment."""
    if ev.sender is not None:
        return Role.CONTROLLER in ev.roles
    return controller is not None and ev.source == controller


def same_address(a: Addr, b: Addr) -> bool:
    """Whether two transport addresses are the same (however spelt)."""
    if a[1] != b[1]:
        return False
    try:
        return ip_address(a[0]) == ip_address(b[0])
    except ValueError:
        return a[0] == b[0]
