"""The central FM-CP of access routers that run only an FM-DP (sans-IO).

Fig 1c and 1d as the draft draws them may put the CPA apart from the DPA:
the access router (AR) anchoring a network forwards (FM-DP), while its
control plane - FM-CP, with the LMs - is central.  The forwarding switches
(DPNs) below it keep their own FM-CP and LMc (draft 4.2.2).  Then the
central FM-CP does what the AR's own agent does when co-located:

* a switch that serves a prefix of the AR's network (an MN attached, or
  moved to it) tells the prefix's CPA - the controller - it is ready
  (FM:6-2, BUFFER_READY naming its DPA), exactly as it would tell a
  co-located AR;
* the controller re-points the AR's tunnel for that prefix to the switch
  with one FM:5-1 to the AR's FM-DP (add the new TUNNEL, delete the old,
  atomically: the AR's data plane marks the old path's end), and answers
  the switch once the AR has applied it;
* FM:1 from the switch (the prefix reverted, FM:3-3) removes the tunnel.

The controller registers the AR's prefixes itself (FM:4), naming the AR's
DPA and its own address as the CPA, so discovery (FM:4-3/4-4) sends the
switches here.  Only a switch below the AR may draw a prefix to itself,
and only to its own DPA; only the switch a prefix is tunnelled to may hand
it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address

from ..prefixtable import PrefixTable
from ..transport.reliable import Addr, Endpoint, Event, MessageReceived, ReplyReceived
from ..wire import messages as m
from ..wire.auth import Role
from ..wire.types import Cause, EntryKind, ForwardingEntry, Prefix


@dataclass(frozen=True, slots=True)
class AccessControl:
    """An access router whose FM-CP is the controller (it runs an FM-DP only)."""

    name: str
    """Its node id (the FM:4 registration and FM:5-2 reports name it)."""
    address: Addr
    """Its FM-DP endpoint (FM:5-1 goes there)."""
    dpa: IPv6Address
    """Its DPA: what discovery (FM:4-4) answers for its prefixes."""
    prefixes: tuple[Prefix, ...]
    """The networks it anchors (registered by the controller on its behalf)."""
    children: Mapping[IPv6Address, str]
    """The forwarding switches below it: DPA -> node id (whose key must sign
    an FM:6-2 naming that DPA)."""


@dataclass(frozen=True, slots=True)
class _Ask:
    """An FM:5-1 in flight on behalf of a switch's FM:6-2 or FM:1."""

    event: MessageReceived
    prefix: Prefix
    target: IPv6Address | None  # None: the tunnel removed (FM:1)
    before: IPv6Address | None


class AccessFmCp:
    """FM-CP of the access routers in ``routers``, hosted by the controller."""

    def __init__(self, routers: Sequence[AccessControl], cap: int = 100_000) -> None:
        """``cap``: prefixes tunnelled to switches at most, all routers together."""
        self.routers = tuple(routers)
        self.cap = cap
        self._of: PrefixTable[AccessControl] = PrefixTable()
        for r in self.routers:
            for p in r.prefixes:
                self._of.set(p, r)
        self.tunnels: dict[Prefix, IPv6Address] = {}
        """Prefix -> the switch DPA its AR was last told to tunnel it to."""
        self._asks: dict[int, _Ask] = {}
        self.counters: dict[str, int] = {}

    def router_of(self, prefix: Prefix) -> AccessControl | None:
        """The access router anchoring ``prefix``, if this FM-CP is its."""
        for _, r in self._of.covering(prefix):
            return r
        return None

    def handle(self, ep: Endpoint, ev: MessageReceived, now: float) -> bool:
        """Serve a switch's FM:6-2 or FM:1; False if ``ev`` is neither, or
        is about a prefix of no access router of ours."""
        msg = ev.message
        if not isinstance(msg, m.BufferReady | m.FmHandoff):
            return False
        r = self.router_of(msg.prefix)
        if r is None:
            return False
        if any(msg.prefix.length <= p.length for p in r.prefixes if p.covers(msg.prefix)):
            # A switch serves MNs' prefixes, never the AR's whole network.
            self._count(f"refused:{msg.TYPE.name}:not-an-mn-prefix")
            ep.reject(ev, Cause.NOT_AUTHORIZED, "not an MN prefix", now, msg.prefix)
            return True
        target = msg.dpa_address if isinstance(msg, m.BufferReady) else None
        current = self.tunnels.get(msg.prefix)
        why = self._refusal(ev, r, target, current)
        if why is not None:
            self._count(f"refused:{msg.TYPE.name}:{why}")
            ep.reject(ev, Cause.NOT_AUTHORIZED, why, now, msg.prefix)
            return True
        if current == target:
            self._answer(ep, ev, now)
            return True
        if current is None and len(self.tunnels) >= self.cap:
            self._count("refused-full")
            ep.reject(ev, Cause.RESOURCE_EXHAUSTED, "too many tunnelled prefixes", now,
                      msg.prefix)
            return True
        add = (ForwardingEntry(EntryKind.TUNNEL, msg.prefix, target),) if target else ()
        delete = (ForwardingEntry(EntryKind.TUNNEL, msg.prefix, current),) if current else ()
        rid = ep.request(m.ForwardingUpdate(add, delete), r.address, now)
        self._asks[rid] = _Ask(ev, msg.prefix, target, current)
        # Told at once: a next change for the prefix builds on this one.
        self._set(msg.prefix, target)
        return True

    def answered(self, ep: Endpoint, event: Event, now: float) -> bool:
        """An answer to one of our FM:5-1 (False: not ours)."""
        ask = self._asks.pop(getattr(event, "request_id", -1), None)
        if ask is None:
            return False
        if isinstance(event, ReplyReceived):
            self._count("fm5-1-applied")
            self._answer(ep, ask.event, now)
            return True
        # Refused or unanswered: an atomic update changed nothing (if it was
        # applied unanswered, the switch's next FM:6-2 finds it so).
        self._count("fm5-1-failed")
        if self.tunnels.get(ask.prefix) == ask.target:
            self._set(ask.prefix, ask.before)
        ep.reject(ask.event, Cause.INVALID_STATE, "the access router did not apply it", now,
                  ask.prefix)
        return True

    def _refusal(self, ev: MessageReceived, r: AccessControl, target: IPv6Address | None,
                 current: IPv6Address | None) -> str | None:
        if target is not None:
            owner = r.children.get(target)
            if owner is None:
                return "not-a-switch-below"
            if ev.sender is not None and owner != ev.sender and Role.CONTROLLER not in ev.roles:
                return "not-its-address"
            return None
        # FM:1 hands a prefix back: only from the switch it is tunnelled to.
        if current is not None and ev.sender is not None and \
                r.children.get(current) != ev.sender:
            return "not-served-there"
        return None

    @staticmethod
    def _answer(ep: Endpoint, ev: MessageReceived, now: float) -> None:
        msg = ev.message
        if isinstance(msg, m.BufferReady):
            ep.reply(ev, m.BufferReadyAck(msg.prefix, 0), now)  # it held nothing itself
        else:
            assert isinstance(msg, m.FmHandoff)
            ep.reply(ev, m.FmHandoffAck(msg.prefix), now)

    def _set(self, prefix: Prefix, target: IPv6Address | None) -> None:
        if target is None:
            self.tunnels.pop(prefix, None)
        else:
            self.tunnels[prefix] = target

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
