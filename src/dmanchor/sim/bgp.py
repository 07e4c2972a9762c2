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
from ..wire.types import EntryKind, ForwardingEntry
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

    def hook(self, agent: AnchorAgentCore) -> Callable[[], None]:
        """The ``on_poll`` hook taking ``agent``'s announcements to the routers."""
        def run() -> None:
            while (effect := agent.next_event()) is not None:
                self.effects.append(effect)
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
        present = entry in dp.entries()
        if on and not present:
            dp.apply([entry], [], self.fabric.clock.now)
            self.updates += 1
        elif not on and present:
            dp.apply([], [entry], self.fabric.clock.now)
            self.updates += 1
