"""Which MNs on a router's access links the kernel found unreachable (sans-IO).

The third way an old router learns that its MN left (after the LM:1-3
inform and the carrier loss of a per-MN link): on a shared access link,
the kernel's Neighbor Unreachability Detection ends in FAILED for the MN's
addresses once nothing answers (:mod:`dmanchor.dataplane.neigh`).

A host is known by its link-layer address (its MN-ID, as in
:mod:`.sniff`); a FAILED entry no longer carries it, so the tracker
remembers the last one each address had.  One address failing is not the
host leaving - a temporary address it dropped fails too - so a host is
unreachable only when none of its addresses on that link is still usable.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv6Address

from ..dataplane.neigh import VALID, NeighEvent, Nud

MAX_NEIGHBOURS = 4096
"""Entries remembered per access link, at most (the oldest go first)."""


class Reachability:
    """Neighbour events in, hosts that became unreachable out."""

    def __init__(self, links: Mapping[int, str], cap: int = MAX_NEIGHBOURS) -> None:
        """``links``: interface index -> name of each access link watched."""
        self.links = dict(links)
        self.cap = cap
        self._seen: dict[str, dict[IPv6Address, tuple[bytes | None, Nud]]] = {
            name: {} for name in self.links.values()}
        self._gone: set[tuple[bytes, str]] = set()  # (host, link) said unreachable

    def feed(self, ev: NeighEvent) -> list[tuple[str, str]]:
        """Take one event; returns the (MN-ID, link) of a host it made
        unreachable - once, until one of its addresses is usable again."""
        link = self.links.get(ev.ifindex)
        if link is None:
            return []
        seen = self._seen[link]
        before = seen.pop(ev.address, None)
        if ev.deleted:
            return []
        mac = ev.lladdr if ev.lladdr is not None else (before[0] if before else None)
        seen[ev.address] = (mac, ev.state)  # (re)inserted last: the newest
        if len(seen) > self.cap:
            del seen[next(iter(seen))]
        if mac is None:
            return []
        if ev.state & VALID:
            self._gone.discard((mac, link))
            return []
        if (not ev.state & Nud.FAILED or (mac, link) in self._gone
                or any(m == mac and state & VALID for m, state in seen.values())):
            return []
        if len(self._gone) >= self.cap:
            self._gone.clear()  # forgetting only risks saying one twice
        self._gone.add((mac, link))
        return [(mac.hex(":"), link)]
