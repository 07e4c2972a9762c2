"""Generated topologies for large simulations: a tree of core, aggregation
and access routers, with the routing tables a real network would hold.

Access router ``ar{i}`` (i from 1) anchors a /40 of the unique local
range, ``fd00:0:0::/40`` plus ``i`` in bits 24-39 (room for 2^24 MN /64s
each, where the draft examples' ``2001:db8:{i}::/48`` hold 65535 - too few
for 100k MNs walking), has DPA ``fc00::{i}:0`` and
flush SID ``fc00::{i}:1``; aggregation router ``g{j}`` is ``fc00:1::{j}``;
the core ``r0`` is ``fc00::ff``.  A correspondent ``cn{c}`` is
``2001:db8:ffff::{c}``, wired to the core or to an access router.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from ..wire.types import EntryKind, ForwardingEntry, Prefix
from .fabric import HostSpec, LinkSpec, RouterSpec, TopologySpec

CORE = "r0"
CORE_ADDR = "fc00::ff"
MAX_ACCESS = 0xFFFE
"""Access routers a tree may have (one /40 and one DPA each)."""
MAX_MNS = 0xFFFFFE
"""MNs a simulation may have (one /64 of each router's /40 each)."""


def ar_name(i: int) -> str:
    """The name of access router ``i`` (from 1)."""
    return f"ar{i}"


def ar_dpa(i: int) -> str:
    """Access router ``i``'s DPA (End.DT6 SID); its flush SID is one above."""
    return f"fc00::{i:x}:0"


def ar_net(i: int) -> Prefix:
    """The /40 access router ``i`` anchors."""
    return Prefix(int(IPv6Address("fd00::")) | (i << 88), 40)


def cn_addr(c: int) -> str:
    """Correspondent ``c``'s address."""
    return f"2001:db8:ffff::{c + 1:x}"


@dataclass(frozen=True, slots=True)
class Network:
    """A generated network and what the simulator needs to know about it."""

    spec: TopologySpec
    access: tuple[str, ...]
    """Access routers, in index order (``access[i - 1]`` is ``ar{i}``)."""
    cns: tuple[tuple[str, str], ...]
    """(correspondent, the router it is wired to)."""
    neighbours: dict[str, tuple[str, ...]]
    """Router adjacency (for hop counts); each router's first neighbour is
    its next hop towards the core."""
    address: dict[str, str]
    """Each router's own address (the next hop others route to)."""
    walk: dict[int, tuple[int, ...]]
    """Access router index -> the access routers an MN there may walk to."""
    is_tree: bool = True
    """Hop counts from the shape (up and down); else breadth first, cached."""
    _dist: dict[str, dict[str, int]] = field(default_factory=dict)

    def hops(self, a: str, b: str) -> int:
        """Hop count between routers ``a`` and ``b``."""
        if not self.is_tree:
            if a not in self._dist:
                self._dist[a] = self.hops_from(a)
            return self._dist[a][b]
        # Up to their lowest common ancestor and down: no search.
        up_a = self._ancestors(a)
        depth_in_a = {r: i for i, r in enumerate(up_a)}
        for j, r in enumerate(self._ancestors(b)):
            if r in depth_in_a:
                return depth_in_a[r] + j
        raise ValueError(f"{a} and {b} are not in one network")

    def _ancestors(self, router: str) -> list[str]:
        out = [router]
        while out[-1] != CORE:
            out.append(self.neighbours[out[-1]][0])  # (a router's first neighbour is its parent)
        return out

    def hops_from(self, router: str) -> dict[str, int]:
        """Hop count from ``router`` to every router (breadth first)."""
        dist = {router: 0}
        todo = deque([router])
        while todo:
            x = todo.popleft()
            for y in self.neighbours[x]:
                if y not in dist:
                    dist[y] = dist[x] + 1
                    todo.append(y)
        return dist


def tree(aggregations: int, access_per_aggregation: int, *, cns: int = 1,
         cn_at_edge: bool = False, delay: float = 0.001) -> Network:
    """Core ``r0`` - ``aggregations`` routers - ``access_per_aggregation``
    access routers under each.  ``cns`` correspondents are wired to the
    core, or (``cn_at_edge``) to access routers spread evenly (local
    content, where the draft expects distributed anchoring to pay off)."""
    n = aggregations * access_per_aggregation
    if not 1 <= n <= MAX_ACCESS:
        raise ValueError(f"a tree has 1 to {MAX_ACCESS} access routers, not {n}")
    if cns < 1:
        raise ValueError("a tree needs at least one correspondent")
    entries: dict[str, list[ForwardingEntry]] = {CORE: []}
    links: list[LinkSpec] = []
    neighbours: dict[str, list[str]] = {CORE: []}
    address = {CORE: CORE_ADDR}
    access: list[str] = []
    for j in range(1, aggregations + 1):
        g = f"g{j}"
        address[g] = f"fc00:1::{j:x}"
        entries[g] = [_route("::/0", CORE_ADDR)]
        links.append(LinkSpec(CORE, g, delay))
        neighbours[CORE].append(g)
        neighbours[g] = [CORE]
        for k in range(access_per_aggregation):
            i = (j - 1) * access_per_aggregation + k + 1
            ar = ar_name(i)
            address[ar] = ar_dpa(i)
            for x, via in ((CORE, address[g]), (g, ar_dpa(i))):
                entries[x] += [ForwardingEntry(EntryKind.ROUTE, ar_net(i), IPv6Address(via)),
                               _route(f"{ar_dpa(i)}/127", via)]
            entries[ar] = [_route("::/0", address[g]), ForwardingEntry(EntryKind.DROP, ar_net(i))]
            links.append(LinkSpec(g, ar, delay))
            neighbours[g].append(ar)
            neighbours[ar] = [g]
            access.append(ar)

    def towards(x: str, at: str) -> str | None:
        # Down from the core to a correspondent's router (up: default routes).
        path = [CORE] if at == CORE else [CORE, neighbours[at][0], at]
        return path[path.index(x) + 1] if x in path[:-1] else None
    hosts, wired = _wire_cns(cns, cn_at_edge, access, entries, links, address, towards, delay)
    routers = [RouterSpec(x, (address[x], f"fc00::{access.index(x) + 1:x}:1")
                          if x in access else (address[x],), tuple(e))
               for x, e in entries.items()]
    # MNs walk to the access routers on either side by index: mostly
    # under the same aggregation router, now and then under the next one.
    walk: dict[int, tuple[int, ...]] = {i: ((i % n) + 1, (i - 2) % n + 1)
                                        for i in range(1, n + 1)}
    return Network(TopologySpec(tuple(routers), tuple(hosts), tuple(links)), tuple(access),
                   tuple(wired), {k: tuple(v) for k, v in neighbours.items()}, address, walk)


def _wire_cns(cns: int, cn_at_edge: bool, access: list[str],
              entries: dict[str, list[ForwardingEntry]], links: list[LinkSpec],
              address: dict[str, str], towards: Callable[[str, str], str | None],
              delay: float) -> tuple[list[HostSpec], list[tuple[str, str]]]:
    """Wire the correspondents to the core or (``cn_at_edge``) to access
    routers spread evenly, and route to each: a router ``x`` forwards to
    the correspondent's router ``at`` via ``towards(x, at)`` (None: it
    needs no route, its default route leads there)."""
    hosts: list[HostSpec] = []
    wired: list[tuple[str, str]] = []
    for c in range(cns):
        name, addr = f"cn{c}", cn_addr(c)
        at = access[(c * len(access)) // cns] if cn_at_edge else CORE
        wired.append((name, at))
        hosts.append(HostSpec(name, (addr,), gateway=at))
        links.append(LinkSpec(name, at, delay))
        for x in entries:
            nxt = name if x == at else towards(x, at)
            if nxt is not None:
                entries[x].append(_route(f"{addr}/128", addr if nxt == name else address[nxt]))
    return hosts, wired


def grid(rows: int, cols: int, *, cns: int = 1, cn_at_edge: bool = False,
         delay: float = 0.001) -> Network:
    """``rows`` x ``cols`` access routers, each linked to its four
    neighbours (a metro mesh with no hierarchy), the core ``r0`` hanging off
    the middle one.  Every router routes each access network along a
    shortest path (breadth first; ties broken by router order).  MNs walk
    to a neighbouring router of the grid."""
    n = rows * cols
    if rows < 1 or cols < 1 or n > MAX_ACCESS:
        raise ValueError(f"a grid has 1 to {MAX_ACCESS} access routers, not {rows}x{cols}")
    pairs = [(r * cols + c, rr * cols + cc) for r in range(rows) for c in range(cols)
             for rr, cc in ((r, c + 1), (r + 1, c)) if rr < rows and cc < cols]
    return _mesh(n, pairs, (rows // 2) * cols + cols // 2, cns, cn_at_edge, delay)


def geometric(aggregations: int, access_per_aggregation: int, *, cns: int = 1,
              cn_at_edge: bool = False, delay: float = 0.001, seed: int = 1,
              degree: float = 5.0) -> Network:
    """A random geometric graph of ``aggregations * access_per_aggregation``
    access routers: placed uniformly in the unit square (``seed``), each
    linked to every router within the radius that gives a mean of about
    ``degree`` neighbours (sites whose coverage overlaps).  A part left
    apart is linked to the nearest router of the rest, so the network is
    one.  The core hangs off the router nearest the centre; routes and
    walks as in :func:`grid`."""
    n = aggregations * access_per_aggregation
    if not 1 <= n <= MAX_ACCESS:
        raise ValueError(f"a geometric graph has 1 to {MAX_ACCESS} access routers, not {n}")
    rng = random.Random(seed)
    at = [(rng.random(), rng.random()) for _ in range(n)]
    radius = math.sqrt(degree / (math.pi * max(n - 1, 1)))
    cell: dict[tuple[int, int], list[int]] = {}  # radius-sized cells: O(n) pairs, not O(n^2)
    for i, (x, y) in enumerate(at):
        cell.setdefault((int(x / radius), int(y / radius)), []).append(i)
    pairs = []
    for i, (x, y) in enumerate(at):
        cx, cy = int(x / radius), int(y / radius)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in cell.get((cx + dx, cy + dy), ()):
                    if j > i and math.dist(at[i], at[j]) <= radius:
                        pairs.append((i, j))
    pairs += _join_parts(n, pairs, at)
    centre = min(range(n), key=lambda i: math.dist(at[i], (0.5, 0.5)))
    return _mesh(n, pairs, centre, cns, cn_at_edge, delay)


def _join_parts(n: int, pairs: list[tuple[int, int]],
                at: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Links that make one network of ``pairs``: each part apart from the
    first is linked, nearest router to nearest router, to those before it."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for i, j in pairs:
        parent[root(i)] = root(j)
    parts: dict[int, list[int]] = {}
    for i in range(n):
        parts.setdefault(root(i), []).append(i)
    groups = sorted(parts.values(), key=lambda g: g[0])
    joined, extra = list(groups[0]), []
    for g in groups[1:]:
        extra.append(min(((a, b) for a in g for b in joined),
                         key=lambda ab: math.dist(at[ab[0]], at[ab[1]])))
        joined += g
    return extra


def _mesh(n: int, pairs: list[tuple[int, int]], core_at: int, cns: int, cn_at_edge: bool,
          delay: float) -> Network:
    """``n`` access routers linked in ``pairs`` (indexes from 0), the core
    off router ``core_at``; every router routes each access network along
    a shortest path, and MNs walk to a linked router."""
    if cns < 1:
        raise ValueError("a network needs at least one correspondent")
    access = [ar_name(i) for i in range(1, n + 1)]
    address = {CORE: CORE_ADDR, **{ar: ar_dpa(i) for i, ar in enumerate(access, start=1)}}
    adj: dict[str, list[str]] = {r: [] for r in (CORE, *access)}
    links: list[LinkSpec] = []
    for a, b in pairs:
        here, there = access[a], access[b]
        adj[here].append(there)
        adj[there].append(here)
        links.append(LinkSpec(here, there, delay))
    middle = access[core_at]
    adj[CORE].append(middle)
    adj[middle].append(CORE)
    links.append(LinkSpec(CORE, middle, delay))
    first_hop = {x: _first_hops(adj, x) for x in adj}
    # Each router's first neighbour is its next hop towards the core.
    neighbours = {x: tuple(sorted(adj[x], key=lambda y: y != first_hop[x].get(CORE)))
                  for x in adj}
    entries: dict[str, list[ForwardingEntry]] = {x: [] for x in adj}
    for x in adj:
        for i, ar in enumerate(access, start=1):
            if ar == x:
                entries[x].append(ForwardingEntry(EntryKind.DROP, ar_net(i)))
                continue
            via = address[first_hop[x][ar]]
            entries[x] += [ForwardingEntry(EntryKind.ROUTE, ar_net(i), IPv6Address(via)),
                           _route(f"{ar_dpa(i)}/127", via)]
    hosts, wired = _wire_cns(cns, cn_at_edge, access, entries, links, address,
                             lambda x, at: first_hop[x][at], delay)
    routers = [RouterSpec(CORE, (CORE_ADDR,), tuple(entries[CORE]))] + [
        RouterSpec(ar, (ar_dpa(i), f"fc00::{i:x}:1"), tuple(entries[ar]))
        for i, ar in enumerate(access, start=1)]
    index = {ar: i for i, ar in enumerate(access, start=1)}
    walk = {i: tuple(index[y] for y in adj[ar] if y != CORE)
            for i, ar in enumerate(access, start=1)}
    return Network(TopologySpec(tuple(routers), tuple(hosts), tuple(links)), tuple(access),
                   tuple(wired), neighbours, address, walk, is_tree=False)


def _first_hops(adj: dict[str, list[str]], source: str) -> dict[str, str]:
    """For every router, the neighbour of ``source`` a shortest path to it
    starts with (breadth first, neighbours in order)."""
    first: dict[str, str] = {}
    todo: deque[str] = deque()
    for y in adj[source]:
        first[y] = y
        todo.append(y)
    first[source] = source
    while todo:
        x = todo.popleft()
        for y in adj[x]:
            if y not in first:
                first[y] = first[x]
                todo.append(y)
    return first


def _route(prefix: str, via: str) -> ForwardingEntry:
    return ForwardingEntry(EntryKind.ROUTE, Prefix.parse(prefix), IPv6Address(via))
