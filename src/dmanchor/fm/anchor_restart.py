"""Restart = reconcile, for what no MN on this router's links explains.

A restarted agent finds its kernel's forwarding state (the
:class:`~.fib.DesiredFib` is seeded from it) but none of its own: no MN, no
timer.  The MNs still on its links are heard again and their prefixes taken
back (:meth:`~.anchor_lm.AnchorLocation._adopt`).  What is left after
:data:`SWEEP_AFTER` - a tunnel or an access route of an MN prefix this agent
has no state for - is asked about at the LMs (LM:1-1) and judged by the
binding:

* a prefix of this router's networks tunnelled to where its binding is: the
  home's tunnel to its MN's current point; kept (the revert, FM:1, ends it);
* a prefix from elsewhere tunnelled to the DPA of where its binding is: a
  switch below that this router serves it for (4.2.3); kept;
* a prefix from elsewhere tunnelled to the flush SID of where its binding
  is: a leftover tunnel of a move made before the restart (in-flight
  packets follow the MN on it); ended as the agent would have, after
  twice ``hold_timeout``;
* a binding that names this router: its MN is silent, not gone; kept;
* anything else - the binding ended, or is elsewhere than the tunnel leads,
  or an access route of an MN that is not here: stale, removed now.

Each is counted (``sweep-kept``, ``sweep-leftover``, ``sweep-removed``);
an LMs that cannot say (a timeout, another refusal) leaves the entry as is
(``sweep-unknown``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..transport.reliable import NegativeReply, ReplyReceived, RequestTimedOut
from ..wire import messages as m
from ..wire.types import Cause, EntryKind, ForwardingEntry, Prefix
from .anchor_model import Cleanup

if TYPE_CHECKING:
    from collections.abc import Hashable

    from ..lm.pool import PoolRequests
    from .anchor_model import AnchorSettings, AnchorStats, PrefixLife
    from .fib import DesiredFib

SWEEP_AFTER = 2.0
"""Seconds after a start before the kernel's unexplained entries are asked
about: time for the access links to report the MNs still on them and for
their prefixes to be taken back."""

_SWEPT = (EntryKind.TUNNEL, EntryKind.ANCHOR)


@dataclass(frozen=True, slots=True)
class Sweep:
    """Timer: ask about the entries the kernel kept that nothing here explains."""


class AnchorRestart:
    """The restart sweep (mixin of the agent)."""

    if TYPE_CHECKING:
        s: AnchorSettings
        dp: DesiredFib
        lm: PoolRequests | None
        life: PrefixLife
        stats: AnchorStats
        _sweeping: dict[int, Prefix]

        def set_timer(self, name: Hashable, at: float) -> None: ...

    def _start_sweep(self, found: list[ForwardingEntry], now: float) -> None:
        """At start: ``found`` is what the kernel kept from before."""
        if self.lm is not None and any(e.kind in _SWEPT for e in found):
            self.set_timer(Sweep(), now + SWEEP_AFTER)

    def _unexplained(self) -> list[Prefix]:
        """MN prefixes with a tunnel or an access route here and no state."""
        own = self.s.prefixes
        out: dict[Prefix, None] = {}
        for e in self.dp.entries():
            if e.kind not in _SWEPT or self.life.of(e.prefix) is not None:
                continue
            if e.kind is EntryKind.ANCHOR and any(o.covers(e.prefix) for o in own):
                continue  # this router's own /64 on its link: its network's
            out[e.prefix] = None
        return list(out)

    def _on_sweep(self, _: Sweep, now: float) -> None:
        assert self.lm is not None
        for p in self._unexplained():
            self._sweeping[self.lm.request(m.LocationQuery(p), now)] = p

    def _on_swept(self, event: ReplyReceived | NegativeReply | RequestTimedOut,
                  now: float) -> None:
        """The LMs' answer about one unexplained prefix."""
        p = self._sweeping.pop(event.request_id)
        if self.life.of(p) is not None:
            return  # explained meanwhile (its MN was heard)
        reply = event.reply if isinstance(event, ReplyReceived) else None
        if not isinstance(reply, m.LocationReply):
            reply = None
        gone = isinstance(event, NegativeReply) and event.status.code is Cause.UNKNOWN_PREFIX
        if reply is None and not gone:
            self.stats.counters["sweep-unknown"] += 1
            return
        entries = [e for e in self.dp.entries_of(p) if e.kind in _SWEPT]
        at = reply.forwarding_address if reply is not None and reply.lifetime else None
        if at is not None and at in (self.s.dpa, self.s.flush_sid):
            self.stats.counters["sweep-kept"] += 1  # its MN is silent, not gone
            return
        tunnels = [e for e in entries if e.kind is EntryKind.TUNNEL]
        to = {e.next_hop for e in tunnels}
        leads = at is not None and bool(to & {at, at + 1})
        if leads and (any(o.covers(p) for o in self.s.prefixes) or at in to):
            # The home's tunnel to its MN's point, or one to the DPA of a
            # switch below that this router serves the prefix for (4.2.3).
            self.stats.counters["sweep-kept"] += 1
            return
        if leads:  # to the point's flush SID: what a move left behind
            self.stats.counters["sweep-leftover"] += 1
            for e in tunnels:
                assert e.next_hop is not None
                self.set_timer(Cleanup(p, e.next_hop), now + 2 * self.s.hold_timeout)
            stale = [e for e in entries if e.kind is not EntryKind.TUNNEL]
        else:
            stale = entries
        if stale:
            self.stats.counters["sweep-removed"] += len(stale)
            self.dp.apply((), stale, now)
