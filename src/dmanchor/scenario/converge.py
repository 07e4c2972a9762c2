"""Whether the network's forwarding state has settled where its MNs are.

After faults (a node killed mid-move, a lossy or cut control network) the
sessions may survive while some node keeps state for a place the MN has
left: a hold nobody lifts, a prefix still served on a link its MN is not
on, a tunnel or route leading nowhere or round in a loop.  :func:`stale`
reads every node's entries (as the nodes read them back from their
kernels) and names each such leftover; none means converged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv6Address

from ..wire.types import EntryKind, ForwardingEntry, Prefix

MAX_HOPS = 8
"""Longest chain of tunnels and routes followed before calling it a loop."""

Resolve = Callable[[IPv6Address], str | None]
"""A next hop (a DPA or flush SID, an interface address, an MN's SID) ->
the node it leads to (None: no node known)."""


def stale(entries: Mapping[str, Sequence[ForwardingEntry]], where: Mapping[Prefix, str],
          owner: Mapping[Prefix, str], resolve: Resolve) -> list[str]:
    """Every leftover in ``entries`` (node -> its entries) for the MNs'
    prefixes: ``where`` maps each to the router its MN is on now, ``owner``
    to the MN itself.  Entries of other prefixes are not judged."""
    out = []
    for node, mine in entries.items():
        for e in mine:
            p = e.prefix
            if p not in where or e.flow is not None:
                continue
            if e.kind is EntryKind.BUFFER:
                out.append(f"{node}: {p} still held")
            elif e.kind is EntryKind.ANCHOR and node != where[p]:
                out.append(f"{node}: {p} on its access link, its MN is at {where[p]}")
            elif e.kind in (EntryKind.TUNNEL, EntryKind.ROUTE):
                end = _follow(node, e, entries, where, owner, resolve)
                if end:
                    out.append(f"{node}: {p} {e.kind.name.lower()} {end}")
    return out


def _follow(node: str, first: ForwardingEntry, entries: Mapping[str, Sequence[ForwardingEntry]],
            where: Mapping[Prefix, str], owner: Mapping[Prefix, str],
            resolve: Resolve) -> str:
    """'' if the path ``first`` starts reaches the MN; else where it ends."""
    p, e, seen = first.prefix, first, [node]
    for _ in range(MAX_HOPS):
        assert e.next_hop is not None
        nxt = resolve(e.next_hop)
        if nxt is None:
            return f"towards {e.next_hop}, no node"
        if nxt == owner[p]:
            return ""  # the MN's own SID (host-based: it ends the tunnel)
        if nxt in seen:
            return "loops: " + " -> ".join([*seen, nxt])
        seen.append(nxt)
        there = [x for x in entries.get(nxt, ()) if x.prefix == p and x.flow is None
                 and x.kind in (EntryKind.ANCHOR, EntryKind.TUNNEL, EntryKind.ROUTE)]
        if any(x.kind is EntryKind.ANCHOR for x in there):
            return "" if nxt == where[p] else f"leads to {nxt}, its MN is at {where[p]}"
        if not there:
            if nxt not in entries:
                return ""  # a plain router: its own routes carry the prefix on
            return f"leads to {nxt}, which has no path for it"
        e = there[0]
    return "loops: " + " -> ".join(seen)


def mobile_state(entries: Mapping[str, Sequence[ForwardingEntry]],
                 networks: Sequence[Prefix]) -> dict[str, list[str]]:
    """Each node's entries for MN prefixes (the /64s of ``networks``), as
    sorted text: what a run leaves in the forwarding state, comparable
    between the kernels and the simulator.  Nodes with none are left out."""
    out: dict[str, list[str]] = {}
    for node, mine in entries.items():
        lines = sorted(_text(e) for e in mine
                       if e.prefix.length == 64 and any(n.covers(e.prefix) for n in networks))
        if lines:
            out[node] = lines
    return out


def _text(e: ForwardingEntry) -> str:
    return (f"{e.kind.name} {e.prefix}" + (f" -> {e.next_hop}" if e.next_hop else "")
            + (f" on {e.link}" if e.link else "") + (f" for {e.flow}" if e.flow else ""))
