"""The DHCPv6-PD model (:class:`~dmanchor.sim.pd.PdServer`) in the worlds of
:mod:`tests.unit.test_fm`: the access routers' PD clients ask it as their
agents' ``Delegate`` effects say, and hear back through
``AnchorAgentCore.lease_event``."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from dmanchor.sim.pd import PdServer, drain

if TYPE_CHECKING:
    from tests.unit.test_fm import World


def serve(w: World, refuse: set[int] | None = None) -> PdServer:
    """A server for ``w``'s access routers (numbered as in ``w.ar``); a router
    in ``refuse`` is never delegated anything."""
    server = PdServer(w.net, refuse=set(refuse or ()))
    for i, agent in w.ar.items():
        addr = (f"fc00::{i}:0", 5400)
        take = server.client(i, agent, partial(w.net.poll, addr))
        if w.bgp is None:
            w.net.on_poll(addr, partial(drain, agent, take))
        else:
            # The routers' BGP takes the announcements, and hands us the rest.
            w.net.on_poll(addr, w.bgp.hook(agent, take))
    return server
