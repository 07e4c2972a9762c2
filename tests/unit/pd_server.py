"""A scripted DHCPv6-PD server for virtual-time worlds (:mod:`tests.unit.test_fm`):
the access routers' PD clients ask it as their agents' ``Delegate`` effects
say, and hear back through ``AnchorAgentCore.lease_event``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from dmanchor.access.delegation import Delegated, Refused, Returned
from dmanchor.fm.anchor_model import Announce, Delegate, Effect
from dmanchor.wire.types import Prefix

if TYPE_CHECKING:
    from dmanchor.fm.anchor import AnchorAgentCore
    from tests.unit.test_fm import World

DELAY = 0.004
"""Seconds the scripted server takes to answer (a DHCPv6 exchange)."""
RETRY = 0.02
PATIENCE = 3.0


@dataclass
class Server:
    """A scripted DHCPv6-PD server and the routers' PD clients: a prefix is
    delegated to a router asking for it once no other router holds it; a
    router in ``refuse`` is never delegated anything."""

    w: World
    refuse: set[int] = field(default_factory=set)
    owner: dict[Prefix, int] = field(default_factory=dict)
    wanted: dict[tuple[int, Prefix], float] = field(default_factory=dict)  # -> since
    log: list[tuple[float, str, int, Prefix]] = field(default_factory=list)
    """(time, what, router, prefix): the server's Delegated / Returned /
    Refused, and (BGP) the routers' Announced / Withdrawn."""

    def start(self) -> Server:
        for i, agent in self.w.ar.items():
            if self.w.bgp is None:
                self.w.net.on_poll(self._addr(i), partial(self._effects, i))
                self._effects(i)  # what it asked for before the server was up
                continue
            # The routers' BGP takes the announcements, and hands us the rest;
            # what the agent asked for before the server was up is in its book.
            self.w.net.on_poll(self._addr(i), self.w.bgp.hook(agent, partial(self._effect, i)))
            for p in sorted(agent.delegated, key=str):
                self._effect(i, Delegate(p, True))
        return self

    @staticmethod
    def _addr(i: int) -> tuple[str, int]:
        return (f"fc00::{i}:0", 5400)

    def _effects(self, i: int) -> None:
        agent = self.w.ar[i]
        while (effect := agent.next_event()) is not None:
            self._effect(i, effect)

    def _effect(self, i: int, effect: Effect) -> None:
        if isinstance(effect, Announce):
            # Logged beside the leases: an anchor announces only with one.
            kind = "Announced" if effect.on else "Withdrawn"
            self.log.append((self.w.net.now, kind, i, effect.prefix))
        if not isinstance(effect, Delegate):
            return
        p = effect.prefix
        if effect.on:
            self.wanted.setdefault((i, p), self.w.net.now)
            self.w.net.call_later(DELAY, partial(self._ask, i, p))
        else:
            self.wanted.pop((i, p), None)
            if self.owner.get(p) == i:
                self.w.net.call_later(DELAY, partial(self._release, i, p))

    def _tell(self, i: int, ev: Delegated | Returned | Refused) -> None:
        self.log.append((self.w.net.now, type(ev).__name__, i, ev.prefix))
        agent: AnchorAgentCore = self.w.ar[i]
        agent.lease_event(ev, self.w.net.now)
        self.w.net.poll(self._addr(i))

    def _ask(self, i: int, p: Prefix) -> None:
        since = self.wanted.get((i, p))
        if since is None or self.owner.get(p) == i:
            return  # let go meanwhile, or a second ask of one bound already
        if i not in self.refuse and self.owner.get(p) is None:
            self.owner[p] = i
            self._tell(i, Delegated(p, 120))
        elif self.w.net.now - since >= PATIENCE:
            del self.wanted[(i, p)]
            self._tell(i, Refused(p, "no such prefix free"))
        else:
            self.w.net.call_later(RETRY, partial(self._ask, i, p))

    def _release(self, i: int, p: Prefix) -> None:
        if self.owner.get(p) == i:
            del self.owner[p]
            self._tell(i, Returned(p))
