"""The MN's own FM and LMc: host-based placements (draft Fig 2a/2b), sans-IO.

The MN, not a CPN/DPN, performs the mobility functions: after a move it
finds the anchor of each prefix its flows still use (FM:4-3), tells it where
to send their packets - its new care-of address, where the MN itself ends
the SRv6 tunnel (FM:6-2, which also releases what the anchor buffered) -
and updates the location binding (LM:1-4).  The anchor side is the
ordinary anchor agent in tunnel mode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address

from ..transport.policy import MN_SENDERS
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
from ..wire.types import Cause, Prefix

CARE_OF_LIFETIME = 5
"""Seconds a previous care-of prefix stays claimed: long enough for what
was tunnelled to it to follow the MN, not a session's lifetime."""


@dataclass(frozen=True, slots=True)
class MnAgentSettings:
    """An MN that performs its own mobility signalling."""

    node_id: str
    """The MN's node id."""
    controller: Addr
    """Mobility controller (FM:4 discovery)."""
    lms: Addr
    """LMs or LMp (LM:1-4); Fig 2b puts an LMp here."""
    port: int = 5400
    """Signalling port of anchors at their CPA."""
    lifetime: int = 600
    """Lifetime of the bindings it updates, seconds."""
    sid_suffix: int = 5
    """Its care-of SID in each network it visits: that network's /64 plus
    this (``<prefix>::5``) - an address of the network, not one of its own,
    so the kernel does not take tunnelled packets as local."""


class MnAgentCore(ServiceCore):
    """FM + LMc on the MN."""

    SENDERS = MN_SENDERS

    def __init__(self, settings: MnAgentSettings, endpoint: Endpoint | None = None) -> None:
        super().__init__(endpoint or Endpoint())
        self.s = settings
        self.coa: IPv6Address | None = None
        self.counters: Counter[str] = Counter()
        self._discovering: dict[int, Prefix] = {}
        self._passing: set[Prefix] = set()
        """Previous care-of prefixes being claimed (short-lived bindings)."""
        self.network: Prefix | None = None
        """The /64 of the network it is in (its newest preferred address's)."""

    def addresses(self, held: Sequence[tuple[IPv6Address, bool]],
                  in_use: Collection[IPv6Address], now: float) -> IPv6Address | None:
        """What its own stack holds changed: ``held`` its global addresses,
        each with whether it is preferred, the one a router advertised most
        recently last; ``in_use`` the local addresses of its open sessions.

        Another network's prefix there (the last preferred address in
        another /64) is a move: the sessions on other prefixes are kept
        reachable (:meth:`moved`).  That network may be one it was in before:
        back home, it claims only what was in flight to its last care-of
        address.  Returns the new care-of SID to set up, if it moved.
        """
        preferred = [a for a, ok in held if ok]
        if not preferred:
            return None
        network = _slash64(preferred[-1])
        if network == self.network:
            return None
        first = self.network is None
        self.network = network
        if first:
            return None  # where it starts: nothing to keep yet
        keep = sorted({_slash64(a) for a in in_use} - {network},
                      key=lambda p: p.network)
        coa = network.address + self.s.sid_suffix
        self.counters["moves"] += 1
        self.moved(coa, keep, now)
        return coa

    def moved(self, coa: IPv6Address, keep: Sequence[Prefix], now: float) -> None:
        """The MN has a care-of address in its new network; keep ``keep`` reachable.

        The previous care-of address's /64 is kept too: what the anchors
        had already tunnelled there when the MN left is held at that
        network's router under that prefix, which no session of the MN's
        uses - claimed, it follows the MN (its care-of SIDs stay up).
        """
        old = self.coa
        self.coa = coa
        if old is not None and _slash64(old) != _slash64(coa) and _slash64(old) not in keep:
            self._passing.add(_slash64(old))
            keep = [*keep, _slash64(old)]
        for prefix in keep:
            rid = self.endpoint.request(m.AnchorDiscovery(prefix), self.s.controller, now)
            self._discovering[rid] = prefix

    def on_event(self, event: Event, now: float) -> None:
        if isinstance(event, MessageReceived):
            msg = event.message
            if isinstance(msg, m.FlowStateTransfer):
                # Charging stays with the network; the MN acknowledges the state.
                self.endpoint.reply(event, m.FlowStateAck(msg.prefix, len(msg.states)), now)
            elif event.expects_reply:
                self.endpoint.reject(event, Cause.UNSUPPORTED, "MN agent", now)
            return
        prefix = self._discovering.pop(event.request_id, None)
        if isinstance(event, ReplyReceived) and isinstance(event.reply, m.DiscoveryAnswer):
            answer = event.reply
            if prefix is None or self.coa is None:
                return
            # FM:6-2: send the packets of this prefix (held ones first) to me.
            self.endpoint.request(m.BufferReady(prefix, self.coa),
                                  (str(answer.cpa_address), self.s.port), now)
            # A care-of prefix is claimed only for what is in flight to it.
            lifetime = CARE_OF_LIFETIME if prefix in self._passing else self.s.lifetime
            self._passing.discard(prefix)
            self.endpoint.request(m.LocationUpdate(prefix, self.coa, lifetime),
                                  self.s.lms, now)
            self.counters["claimed"] += 1
        elif isinstance(event, NegativeReply | RequestTimedOut):
            if prefix is not None:
                self._passing.discard(prefix)  # (no claim: nothing to remember)
            self.counters[f"failed:{event.request.TYPE.name}"] += 1

    def on_timer(self, name: Hashable, now: float) -> None:
        pass


def _slash64(address: IPv6Address) -> Prefix:
    """The /64 an address is in (SLAAC's prefix length)."""
    return Prefix(int(address) & ~((1 << 64) - 1), 64)
