"""Source validation (SM) on Linux: forged sources dropped, and counted per link.

Per access link with an MN on it, as FIB rules (checked after the local table,
so packets for the router's own addresses, RS and ND included, are delivered
as always):

========  ===================================================================
500       ``rule iif LINK from PREFIX lookup main``, one per prefix of the MN
501       ``rule iif LINK lookup TRAP``; table TRAP holds one route,
          ``default encap seg6local action End.T table SINK count dev LINK``
502       ``rule iif LINK blackhole``: fails closed should TRAP ever be empty
========  ===================================================================

Why a seg6local trap: a blackhole rule or route drops without counting, this
kernel has no dummy device to route into, and a ``prohibit`` rule (counted in
Ip6InNoRoutes) would answer every forged packet with an ICMPv6 error to
whoever's address was forged.  A seg6local route counts what it takes, per
route: End.T on a packet with no segment left fails (an *error*, dropped
silently), and one with a segment left is looked up in SINK, whose only
route is a blackhole (a *packet*, dropped).  Either way nothing is forwarded
and nothing is sent back; the link's drops are packets + errors.

These objects carry protocol :data:`RTPROT_SOURCE`, not the forwarding
entries' tag: reconciliation of forwarding entries never sees them, and a
restarted agent learns them back from the kernel's rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from ..wire.types import Prefix
from .api import DataPlaneError
from .netlink import FR_ACT_BLACKHOLE, Netlink, Request, route, rule

RTPROT_SOURCE = 78
"""Protocol tag of source-validation rules and routes."""
ALLOW_PRIORITY = 500
"""``iif LINK from PREFIX lookup main`` (before flow rules at 1000)."""
TRAP_PRIORITY = ALLOW_PRIORITY + 1
CLOSED_PRIORITY = ALLOW_PRIORITY + 2
SINK_TABLE = 0x4CFC
"""Holds only ``blackhole default``: where End.T sends what it takes."""
TRAP_TABLE_BASE = 0x4A00
"""Trap tables (one per validated link) are allocated from here..."""
TRAP_TABLE_LIMIT = 0x4C00
"""... up to here (exclusive): 512 validated links per namespace."""
COUNTER = "spoofed-source"
"""Counter name: the total; ``spoofed-source:LINK`` per access link."""

_DEFAULT = bytes(16)


class SourceFilters:
    """The source filters of one namespace, kept equal to the kernel's."""

    def __init__(self, nl: Netlink, ifindex: Callable[[str], int]) -> None:
        """``ifindex`` resolves a link name (the trap route is bound to the link)."""
        self._nl = nl
        self._ifindex = ifindex
        self._allowed: dict[str, set[Prefix]] = {}
        self._trap: dict[str, int] = {}  # link -> its trap table
        self._retired: Counter[str] = Counter()  # drops of traps since removed
        self._sink_ready = False
        self._learn()

    def _learn(self) -> None:
        """Adopt what a previous agent left: its rules say which links and prefixes."""
        for r in self._nl.rules():
            if r.protocol != RTPROT_SOURCE or not r.iif:
                continue
            if r.priority == ALLOW_PRIORITY and r.src is not None:
                self._allowed.setdefault(r.iif, set()).add(Prefix.make(*r.src))
            elif r.priority == TRAP_PRIORITY and r.action != FR_ACT_BLACKHOLE:
                self._trap[r.iif] = r.table
        self._sink_ready = bool(self._nl.routes(SINK_TABLE))

    def filters(self) -> dict[str, tuple[Prefix, ...]]:
        """Link -> the source prefixes it accepts (links without a filter absent)."""
        return {link: tuple(_ordered(ps)) for link, ps in self._allowed.items() if ps}

    def set(self, link: str, prefixes: Sequence[Prefix]) -> None:
        """Accept only ``prefixes`` from ``link``; none: no filter on it.

        New prefixes are allowed before old ones are withdrawn, in one netlink
        batch, so an MN's own packets are never caught in between.
        """
        new = set(prefixes)
        old = self._allowed.get(link, set())
        reqs: list[Request] = []
        if new and not self._sink_ready:
            reqs.append(route(True, _DEFAULT, 0, table=SINK_TABLE, blackhole=True,
                              protocol=RTPROT_SOURCE))
        reqs += [self._allow(link, p, True) for p in _ordered(new - old)]
        table = self._trap.get(link)
        trap_at = -1
        if new and table is None:
            table = self._free_table()
            trap_at = len(reqs)
            reqs += [
                route(True, _DEFAULT, 0, table=table, oif=self._ifindex(link),
                      trap_into=SINK_TABLE, protocol=RTPROT_SOURCE, replace=True),
                rule(True, TRAP_PRIORITY, table, iif=link, protocol=RTPROT_SOURCE),
                rule(True, CLOSED_PRIORITY, 0, iif=link, blackhole=True,
                     protocol=RTPROT_SOURCE),
            ]
        reqs += [self._allow(link, p, False) for p in _ordered(old - new)]
        retiring = not new and table is not None
        if retiring:
            assert table is not None
            # Its drops outlive the trap: read them before it goes.
            self._retired[link] += self._count(table)
            reqs += [
                rule(False, TRAP_PRIORITY, table, iif=link, protocol=RTPROT_SOURCE),
                rule(False, CLOSED_PRIORITY, 0, iif=link, blackhole=True,
                     protocol=RTPROT_SOURCE),
                route(False, _DEFAULT, 0, table=table, protocol=RTPROT_SOURCE),
            ]
        if not reqs:
            return
        failures = self._nl.batch(reqs)
        if failures and any(i != trap_at for i, _ in failures):
            raise DataPlaneError(f"source filter on {link}: {failures[0][1]}")
        if new:
            self._sink_ready = True
            self._allowed[link] = new
            assert table is not None
            self._trap[link] = table
        else:
            self._allowed.pop(link, None)
            self._trap.pop(link, None)
        if failures:
            # Only the counting trap failed (a kernel without seg6local
            # counters): the filter holds, by the blackhole rule behind it.
            raise DataPlaneError(f"source filter on {link} is in force but does not count "
                                 f"its drops: {failures[0][1]}")

    def counters(self) -> dict[str, int]:
        """Dropped forged packets: per link (``spoofed-source:LINK``) and in all."""
        per = Counter(self._retired)
        for link, table in self._trap.items():
            per[link] += self._count(table)
        out = {f"{COUNTER}:{link}": n for link, n in sorted(per.items())}
        out[COUNTER] = sum(per.values())
        return out

    def _count(self, table: int) -> int:
        return sum(r.counters[0] + r.counters[2] for r in self._nl.routes(table)
                   if r.counters is not None)

    def _allow(self, link: str, p: Prefix, add: bool) -> Request:
        return rule(add, ALLOW_PRIORITY, 254, iif=link, src=(p.address, p.length),
                    protocol=RTPROT_SOURCE)

    def _free_table(self) -> int:
        used = set(self._trap.values())
        for table in range(TRAP_TABLE_BASE, TRAP_TABLE_LIMIT):
            if table not in used:
                return table
        raise DataPlaneError(f"more than {TRAP_TABLE_LIMIT - TRAP_TABLE_BASE} "
                             "source-validated links in one namespace")


def _ordered(ps: Iterable[Prefix]) -> list[Prefix]:
    return sorted(ps, key=lambda p: (p.network, p.length))
