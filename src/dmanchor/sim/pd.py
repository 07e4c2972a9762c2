"""A DHCPv6-PD server and the routers' PD clients, for virtual-time worlds.

A model of Kea and of each access router's PD client (``access/delegation``
on the nodes): a router's agent asks for a prefix or lets it go through its
:class:`~dmanchor.fm.anchor_model.Delegate` effects, and hears the outcome
through :meth:`~dmanchor.fm.anchor.AnchorAgentCore.lease_event`, as from its
client.  A prefix is delegated to a router asking for it once no other
router holds it; a router in ``refuse`` is never delegated anything (a Kea
client class without a pool), and one that asked for ``patience`` seconds
in vain is refused.  With ``lease_cmds``, the controller's
:class:`~dmanchor.fm.controller_lease.MoveLease` (Kea's ``lease6-update``)
gives a lease to another router's client at once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from ..access.delegation import Delegated, Refused, Returned
from ..fm.anchor import AnchorAgentCore
from ..fm.anchor_model import Announce, Delegate, Effect
from ..wire.types import Prefix

DELAY = 0.004
"""Seconds a DHCPv6 exchange takes (a Solicit/Request or a Release)."""
RETRY = 0.02
"""Seconds between a client's asks for a prefix another router holds."""
PATIENCE = 3.0
"""Seconds a client asks for a prefix before it is refused."""
VALID = 120
"""Valid lifetime of a delegation, seconds."""


class Clock(Protocol):
    """The virtual clock the model schedules on."""

    @property
    def now(self) -> float: ...

    def call_later(self, delay: float, fn: Callable[[], None]) -> object: ...


@dataclass(slots=True)
class _Client:
    agent: AnchorAgentCore
    poll: Callable[[], None]


@dataclass
class PdServer:
    """The server and its clients (see the module)."""

    clock: Clock
    refuse: set[Hashable] = field(default_factory=set)
    """Routers never delegated anything."""
    lease_cmds: bool = False
    """Kea's lease_cmds hook: the controller may move a lease (``lease6-update``)."""
    owner: dict[Prefix, Hashable] = field(default_factory=dict)
    """Which router each delegated prefix is delegated to."""
    log: list[tuple[float, str, Hashable, Prefix]] = field(default_factory=list)
    """(time, what, router, prefix): the server's Delegated / Returned /
    Refused / Moved, and the routers' Announced / Withdrawn (BGP)."""
    _clients: dict[Hashable, _Client] = field(default_factory=dict)
    _wanted: dict[tuple[Hashable, Prefix], float] = field(default_factory=dict)  # -> since
    _bound: set[tuple[Hashable, Prefix]] = field(default_factory=set)  # the client knows

    def client(self, router: Hashable, agent: AnchorAgentCore,
               poll: Callable[[], None]) -> Callable[[Effect], None]:
        """Give ``router`` (its agent ``agent``; ``poll`` runs it after an
        input) a PD client; returns what takes the agent's effects.  What it
        asked for before (its book) is asked for now."""
        self._clients[router] = _Client(agent, poll)
        for p in sorted(agent.delegated, key=str):
            self.effect(router, Delegate(p, True))
        return partial(self.effect, router)

    def effect(self, router: Hashable, effect: Effect) -> None:
        """One effect of ``router``'s agent (others than delegations are
        logged if announcements, else ignored)."""
        if isinstance(effect, Announce):
            # Logged beside the leases: an anchor announces only with one.
            self.log.append((self.clock.now, "Announced" if effect.on else "Withdrawn",
                             router, effect.prefix))
        if not isinstance(effect, Delegate):
            return
        p = effect.prefix
        if effect.on:
            self._wanted.setdefault((router, p), self.clock.now)
            self.clock.call_later(DELAY, partial(self._ask, router, p))
        else:
            self._wanted.pop((router, p), None)
            if (router, p) in self._bound:
                self.clock.call_later(DELAY, partial(self._release, router, p))

    def move(self, prefix: Prefix, to: Hashable | None) -> str | None:
        """``lease6-update``: give ``prefix``'s lease to router ``to``'s
        client (None: a router without one).  Returns why not, or None."""
        if not self.lease_cmds:
            return "Kea: lease_cmds not loaded"
        if to is None or to not in self._clients:
            return "no DUID known for the anchor"
        self.owner[prefix] = to
        self.log.append((self.clock.now, "Moved", to, prefix))
        if (to, prefix) in self._wanted:
            self.clock.call_later(DELAY, partial(self._ask, to, prefix))
        return None

    def _tell(self, router: Hashable, ev: Delegated | Returned | Refused) -> None:
        self.log.append((self.clock.now, type(ev).__name__, router, ev.prefix))
        c = self._clients[router]
        c.agent.lease_event(ev, self.clock.now)
        c.poll()

    def _ask(self, router: Hashable, p: Prefix) -> None:
        since = self._wanted.get((router, p))
        if since is None or (router, p) in self._bound:
            return  # let go meanwhile, or a second ask of one bound already
        if router not in self.refuse and self.owner.get(p) in (None, router):
            self.owner[p] = router
            self._bound.add((router, p))
            self._tell(router, Delegated(p, VALID))
        elif self.clock.now - since >= PATIENCE:
            del self._wanted[(router, p)]
            self._tell(router, Refused(p, "no such prefix free"))
        else:
            self.clock.call_later(RETRY, partial(self._ask, router, p))

    def _release(self, router: Hashable, p: Prefix) -> None:
        if (router, p) not in self._bound:
            return
        self._bound.discard((router, p))
        if self.owner.get(p) == router:
            del self.owner[p]
        # (A lease moved away meanwhile: the server answers NoBinding, and
        # the client forgets it all the same.)
        self._tell(router, Returned(p))


def drain(agent: AnchorAgentCore, take: Callable[[Effect], None] | None) -> None:
    """An agent's ``on_poll`` hook without BGP: each of its effects to its PD
    client (``take``, from :meth:`PdServer.client`); the others (RAs) have
    no I/O in virtual time."""
    while (effect := agent.next_event()) is not None:
        if take is not None:
            take(effect)
