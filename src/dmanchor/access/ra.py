"""Unsolicited Router Advertisements on access links (RFC 4861 6.2.4), sans-IO.

A stock host keeps an address only while RAs refresh its prefix's lifetimes:
an access router must advertise on its own, not only in answer to a
solicitation.  :class:`RaSchedule` says when each access link is due; what
an RA carries for the MNs on a link is :func:`link_advertisement`'s.

RFC 4861's defaults: an RA every ``MinRtrAdvInterval`` to
``MaxRtrAdvInterval`` seconds, uniformly at random (so routers on a link do
not synchronise); the first ``MAX_INITIAL_RTR_ADVERTISEMENTS`` after a link
comes up at most ``MAX_INITIAL_RTR_ADVERT_INTERVAL`` apart; and no two RAs
on a link closer than ``MIN_DELAY_BETWEEN_RAS`` (solicited ones go at
once here: an MN arriving must not wait - they only push the schedule on).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Mapping

from ..wire.types import Prefix
from .nd import PrefixInfo, RouterAdvertisement

MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS = 3.0


class RaSchedule:
    """When each access link's next unsolicited RA is due."""

    def __init__(self, links: Iterable[str], now: float, max_interval: float = 600.0,
                 min_interval: float | None = None, rng: random.Random | None = None) -> None:
        """``max_interval``: MaxRtrAdvInterval, 4..1800 s; ``min_interval``:
        MinRtrAdvInterval, 3 s .. 0.75 x max (default: a third of max, at
        least 3 s)."""
        if not 4.0 <= max_interval <= 1800.0:
            raise ValueError("MaxRtrAdvInterval must be 4 to 1800 seconds (RFC 4861)")
        low = max(MIN_DELAY_BETWEEN_RAS, max_interval / 3) if min_interval is None \
            else min_interval
        if not MIN_DELAY_BETWEEN_RAS <= low <= 0.75 * max_interval:
            raise ValueError("MinRtrAdvInterval must be 3 s to 0.75 x MaxRtrAdvInterval")
        self.max_interval, self.min_interval = max_interval, low
        self._rng = rng or random.Random()
        self._initial: dict[str, int] = {}  # link -> initial RAs still to send
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        for link in links:
            self._initial[link] = MAX_INITIAL_RTR_ADVERTISEMENTS
            self._set(link, now)  # the link is up: advertise at once

    def _interval(self, link: str) -> float:
        gap = self._rng.uniform(self.min_interval, self.max_interval)
        if self._initial.get(link, 0) > 0:
            gap = min(gap, MAX_INITIAL_RTR_ADVERT_INTERVAL)
        return gap

    def _set(self, link: str, at: float) -> None:
        self._due[link] = at
        heapq.heappush(self._heap, (at, link))

    def next_deadline(self) -> float | None:
        """When the next RA is due on some link (None: no link)."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # superseded by a later _set
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[str]:
        """The links to advertise on now; each is rescheduled."""
        out = []
        while (at := self.next_deadline()) is not None and at <= now:
            _, link = heapq.heappop(self._heap)
            out.append(link)
            self.sent(link, now)
        return out

    def sent(self, link: str, now: float) -> None:
        """An RA went out on ``link`` (solicited or not): the next is an interval on."""
        if link not in self._due:
            raise KeyError(f"{link!r} is not an access link")
        gap = self._interval(link)  # capped while this is one of the first few
        if self._initial.get(link, 0) > 0:
            self._initial[link] -= 1
        self._set(link, now + gap)

    def lifetimes(self, link: str, now: float, shortest_valid: float | None) -> None:
        """The RA just sent on ``link`` gave some prefix only ``shortest_valid``
        seconds: the next comes within a third of that, so a host's address
        never lapses between RAs - also where lifetimes are shorter than
        RFC 4861's intervals (a DHCPv6-PD lease nearly run out, or a short
        anchoring lifetime)."""
        if shortest_valid is None or link not in self._due:
            return
        by = now + shortest_valid / 3
        if self._due[link] > by:
            self._set(link, by)


def shortest_valid(ra: RouterAdvertisement) -> float | None:
    """The shortest non-zero valid lifetime ``ra`` advertises (None: none)."""
    lives = [p.valid for p in ra.prefixes if p.valid > 0]
    return float(min(lives)) if lives else None


def link_advertisement(own: Iterable[Prefix], kept: Iterable[Prefix], lifetime: int,
                       lease_left: Mapping[Prefix, float] | None = None,
                       router_lifetime: int = 1800) -> RouterAdvertisement:
    """The RA for the MNs on one access link (draft 4.1).

    ``own``: prefixes this router gives them, preferred; ``kept``: prefixes
    from earlier networks still kept for their flows, valid but deprecated
    (preferred 0), so new flows take the new prefix.  Lifetimes are
    ``lifetime`` (the anchoring's), capped by what each prefix's DHCPv6-PD
    lease has left where ``lease_left`` knows it: a host must not keep an
    address longer than the network can route it.  A lease that has run
    out gives 0: the host stops using the address.
    """
    def valid(p: Prefix) -> int:
        if lease_left is None or p not in lease_left:
            return lifetime
        return max(0, min(lifetime, int(lease_left[p])))

    own = tuple(dict.fromkeys(own))
    kept = tuple(p for p in dict.fromkeys(kept) if p not in own)
    return RouterAdvertisement(
        router_lifetime=router_lifetime,
        prefixes=tuple(PrefixInfo(p, valid(p), valid(p)) for p in own)
        + tuple(PrefixInfo(p, valid(p), 0) for p in kept),
    )
