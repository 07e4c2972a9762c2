"""Who subscribed to which prefixes (LM:1-3), bounded and expiring.

Subscribers choose how many prefixes they name and for how long, so the
table has a cap on (prefix, subscriber) pairs, a longest lifetime, and a
sweep that forgets what expired even when no change was ever pushed.
Shared by the LMs and the LMp.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..prefixtable import PrefixTable
from ..transport.reliable import Addr
from ..wire.types import Prefix


class Subscriptions:
    """(prefix, subscriber) -> expiry, at most ``cap`` pairs."""

    def __init__(self, cap: int = 100_000, max_lifetime: float = 3600.0) -> None:
        """``cap``: pairs held at most (a subscribe that would pass it is
        refused whole); ``max_lifetime``: the longest a subscription is
        kept without being renewed, seconds."""
        self.cap = cap
        self.max_lifetime = max_lifetime
        self.refused = 0
        """Subscribe requests refused because the table was full."""
        self._by_prefix: PrefixTable[dict[Addr, float]] = PrefixTable()
        self._pairs = 0

    def __len__(self) -> int:
        """(prefix, subscriber) pairs held (expired ones until swept)."""
        return self._pairs

    def add(self, prefixes: Iterable[Prefix], client: Addr, lifetime: float,
            now: float) -> list[Prefix] | None:
        """Subscribe ``client``; the prefixes nobody subscribed to before,
        or None (and nothing changed) if the table would overflow."""
        prefixes = list(dict.fromkeys(prefixes))
        added = sum(1 for p in prefixes
                    if client not in (self._by_prefix.get(p) or {}))
        if self._pairs + added > self.cap:
            self.refused += 1
            return None
        expires = now + min(lifetime, self.max_lifetime)
        new = []
        for p in prefixes:
            subs = self._by_prefix.get(p)
            if subs is None:
                subs = {}
                self._by_prefix.set(p, subs)
                new.append(p)
            subs[client] = expires
        self._pairs += added
        return new

    def remove(self, prefixes: Iterable[Prefix], client: Addr) -> list[Prefix]:
        """Unsubscribe ``client``; the prefixes nobody subscribes to now."""
        gone = []
        for p in prefixes:
            subs = self._by_prefix.get(p)
            if subs is not None and subs.pop(client, None) is not None:
                self._pairs -= 1
                if not subs:
                    self._by_prefix.pop(p)
                    gone.append(p)
        return gone

    def drop_client(self, client: Addr) -> None:
        """Forget every subscription of ``client`` (it stopped answering)."""
        for p, subs in list(self._by_prefix.items()):
            if subs.pop(client, None) is not None:
                self._pairs -= 1
                if not subs:
                    self._by_prefix.pop(p)

    def live(self, prefix: Prefix, now: float) -> list[Addr]:
        """The live subscribers of prefixes covering ``prefix`` (each once);
        expired ones met on the way are forgotten."""
        out: dict[Addr, None] = {}
        for p, subs in list(self._by_prefix.covering(prefix)):
            for client, expires in list(subs.items()):
                if expires <= now:
                    del subs[client]
                    self._pairs -= 1
                else:
                    out[client] = None
            if not subs:
                self._by_prefix.pop(p)
        return list(out)

    def sweep(self, now: float) -> int:
        """Forget every expired subscription; returns how many."""
        before = self._pairs
        for p, subs in list(self._by_prefix.items()):
            for client, expires in list(subs.items()):
                if expires <= now:
                    del subs[client]
                    self._pairs -= 1
            if not subs:
                self._by_prefix.pop(p)
        return before - self._pairs
