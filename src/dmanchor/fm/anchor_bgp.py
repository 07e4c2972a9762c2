"""An anchor agent under BGP (draft 4.2 with routing, mode ``bgp``): the
new anchor claims a prefix by announcing it, once its lease is here where
prefixes are delegated (FM:3-2, :mod:`.anchor_lease`).  The methods belong
to :class:`~.anchor.AnchorAgentCore` (a mixin: they use its state)."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..wire import messages as m
from ..wire.types import Prefix
from .anchor_model import Announce, Join, Mode, PrefixEvent

if TYPE_CHECKING:
    from collections import deque

    from ..transport.reliable import Addr, Endpoint
    from .anchor_lease import LeaseBook
    from .anchor_model import AnchorSettings, Effect, Visiting


class AnchorBgp:
    """Claims and announcements under BGP (mixin of the agent)."""

    if TYPE_CHECKING:
        s: AnchorSettings
        endpoint: Endpoint
        visiting: dict[Prefix, Visiting]
        leases: LeaseBook
        announced: set[Prefix]
        _effects: deque[Effect]

        def _step(self, prefix: Prefix, event: PrefixEvent) -> None: ...
        def _refuse_claim(self, prefix: Prefix, now: float) -> None: ...
        def _move_lease(self, prefix: Prefix, previous: IPv6Address, now: float) -> None: ...
        def _agent_of(self, sid: IPv6Address) -> Addr: ...
        def _lm_update(self, prefix: Prefix, address: IPv6Address, now: float,
                       lifetime: int | None = None, mn: str | None = None) -> None: ...

    def _joined_bgp(self, join: Join, now: float) -> None:
        prefix = join.prefix
        v = self.visiting.get(prefix)
        if v is None or not join.lm_done:
            return
        if join.bound_to and join.bound_to != v.mn:
            self._refuse_claim(prefix, now)
            return
        if prefix in self.leases.moving or prefix in self.leases.stayed:
            return  # (a claim asked again) its lease decides already
        self._step(prefix, PrefixEvent.CLAIMED)
        if self.s.pd and join.previous is not None and prefix not in self.leases.leased:
            # FM:3-2, delegation first: announced only once the lease is here.
            self._move_lease(prefix, join.previous, now)
            return
        self._anchor_bgp(prefix, join.previous, join.previous, now)

    def _anchor_bgp(self, prefix: Prefix, previous: IPv6Address | None,
                    anchor: IPv6Address | None, now: float) -> None:
        """Anchor ``prefix`` here and announce it; the point it was served at
        (and its anchor, if another) send what they held or still get."""
        v = self.visiting.get(prefix)
        if v is None:
            return  # the MN left before its lease came
        self._announce((prefix,), True)
        for point in dict.fromkeys(p for p in (previous, anchor) if p is not None):
            # Leftovers and stragglers (until the routers converge) come
            # through the flush SID, past the hold of the new direct path.
            self.endpoint.request(m.BufferReady(prefix, self.s.flush_sid),
                                  self._agent_of(point), now)
        self._lm_update(prefix, self.s.dpa, now, mn=v.mn)

    def _announce(self, prefixes: Sequence[Prefix], on: bool) -> None:
        if self.s.mode is not Mode.BGP:
            return
        for p in prefixes:
            if on and p not in self.announced:
                self.announced.add(p)
                self._effects.append(Announce(p, True))
            elif not on and p in self.announced:
                self.announced.discard(p)
                self._effects.append(Announce(p, False))
