"""Routers that learn anchors' BGP announcements, for the virtual-time fabric.

A model of the routing daemons of draft 4.2 (BIRD on the emulator's
routers): what an anchor agent announces (its :class:`Announce` effects)
reaches each router's forwarding table after that router's propagation
delay, as a route towards the announcing anchor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from ipaddress import IPv6Address

from ..fm.anchor import AnchorAgentCore
from ..fm.anchor_model import Announce, Effect
from ..wire.types import EntryKind, ForwardingEntry, Prefix
from .fabric import Fabric


class BgpModel:
    """Routers' FIBs following announcements, each after its own delay."""

    def __init__(self, fabric: Fabric, next_hops: Mapping[str, Mapping[IPv6Address, IPv6Address]],
                 delays: Mapping[str, float] | None = None) -> None:
        """``next_hops[router][anchor DPA]``: that router's next hop towards
        the anchor; ``delays[router]``: seconds from announcement to its FIB
        (default 1 ms)."""
        self.fabric = fabric
        self.next_hops = next_hops
        self.delays = dict(delays or {})
        self.updates = 0
        """Route changes installed, all routers together."""
        self.effects: list[Effect] = []
        """Every effect the hooked agents asked for (announcements and others)."""
        self._speakers: dict[str, list[tuple[AnchorAgentCore, Callable[[], None]]]] = {}

    def listen(self, router: str, agent: AnchorAgentCore, poll: Callable[[], None]) -> None:
        """``agent`` has a BGP session with ``router``: it hears each route
        ``router`` installs towards another anchor once it is installed (as
        BIRD writes its FIB before its UPDATEs go out); ``poll`` runs the
        agent afterwards."""
        self._speakers.setdefault(router, []).append((agent, poll))

    def hook(self, agent: AnchorAgentCore,
             also: Callable[[Effect], None] | None = None) -> Callable[[], None]:
        """The ``on_poll`` hook taking ``agent``'s announcements to the
        routers; ``also`` is given every effect too (e.g. a PD server's)."""
        def run() -> None:
            while (effect := agent.next_event()) is not None:
                self.effects.append(effect)
                if also is not None:
                    also(effect)
                if not isinstance(effect, Announce):
                    continue
                on, prefix = effect.on, effect.prefix
                for router, hops in self.next_hops.items():
                    nh = hops.get(agent.s.dpa)
                    if nh is None:
                        continue
                    entry = ForwardingEntry(EntryKind.ROUTE, prefix, nh)
                    self.fabric.clock.call_later(self.delays.get(router, 0.001),
                                                 partial(self._fib, router, entry, on))
        return run

    def _fib(self, router: str, entry: ForwardingEntry, on: bool) -> None:
        dp = self.fabric.routers[router]
        now = self.fabric.clock.now
        before = self._in_use(router, entry.prefix)
        present = entry in dp.entries()
        if on and not present:
            dp.apply([entry], [], now)
            self.updates += 1
        elif not on and present:
            dp.apply([], [entry], now)
            self.updates += 1
        after = self._in_use(router, entry.prefix)
        if after == before:
            return  # its best route stayed: nothing to tell its peers
        for agent, poll in self._speakers.get(router, ()):
            if after is not None and self.next_hops[router].get(agent.s.dpa) != after:
                heard: tuple[tuple[Prefix, ...], tuple[Prefix, ...]] = ((entry.prefix,), ())
            else:
                # None left, or the agent's own (not announced back to it).
                heard = ((), (entry.prefix,))
            # The UPDATE crosses the link to the agent's router behind what
            # the router forwarded there before its FIB changed.
            self.fabric.clock.call_later(
                self.fabric.adjacent[router].get(agent.s.node_id, 0.0),
                partial(self._hear, agent, poll, *heard))

    def _hear(self, agent: AnchorAgentCore, poll: Callable[[], None],
              announced: tuple[Prefix, ...], withdrawn: tuple[Prefix, ...]) -> None:
        agent.routes_heard(announced, withdrawn, self.fabric.clock.now)
        poll()

    def _in_use(self, router: str, prefix: Prefix) -> IPv6Address | None:
        """The next hop ``router`` forwards ``prefix`` to (its best route:
        the lowest metric, the oldest of equals, as the memory FIB picks)."""
        routes = [e for e in self.fabric.routers[router].entries()
                  if e.kind is EntryKind.ROUTE and e.prefix == prefix and e.flow is None]
        return min(routes, key=lambda e: e.metric).next_hop if routes else None
