"""The /64s an access router gives the MNs that attach, durable across restarts.

Each MN (by its identity at the access link) gets one /64 of the router's
``mn_pool``, the same one every time it comes back.  With a state file the
allocations survive a restart of the node (``kill -9`` included: the file is
replaced atomically, written before the prefix is handed out), so a prefix
an MN still uses is never given to another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..wire.types import Prefix


class PoolExhausted(Exception):
    """No /64 of the pool is left."""


class StateError(ValueError):
    """The allocation file cannot be used (unreadable, foreign, outside the pool)."""


class PrefixAllocator:
    """MN identity -> its /64 of ``pool``."""

    def __init__(self, pool: Prefix, state: Path | None = None) -> None:
        """``state``: JSON file holding the allocations (None: memory only).
        An unreadable or foreign file is an error, not a silent reset."""
        if pool.length > 64:
            raise ValueError(f"MN prefix pool {pool} is longer than /64")
        self.pool = pool
        self.state = state
        self._by_mn: dict[str, Prefix] = {}
        if state is not None and state.exists():
            try:
                doc = json.loads(state.read_text())
                loaded = {str(mn): Prefix.parse(str(p)) for mn, p in doc["mns"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise StateError(f"{state}: not a prefix allocation file ({exc})") from exc
            stray = [p for p in loaded.values() if not pool.covers(p)]
            if stray:
                raise StateError(f"{state}: {stray[0]} is outside the pool {pool}")
            self._by_mn = loaded
        self._used = {p.network for p in self._by_mn.values()}

    def peek(self, mn: str) -> Prefix | None:
        """The /64 of ``mn`` if it has one (nothing is allocated)."""
        return self._by_mn.get(mn)

    def get(self, mn: str) -> Prefix:
        """The /64 of ``mn`` (allocated, and made durable, on first use)."""
        have = self._by_mn.get(mn)
        if have is not None:
            return have
        size = 1 << (64 - self.pool.length)
        # Index 0 (the pool's own first /64) stays the router's.
        for index in range(1, size):
            network = self.pool.network | (index << 64)
            if network not in self._used:
                break
        else:
            raise PoolExhausted(f"MN prefix pool {self.pool} exhausted")
        prefix = Prefix(network, 64)
        self._by_mn[mn] = prefix
        self._used.add(network)
        self._save()
        return prefix

    def _save(self) -> None:
        if self.state is None:
            return
        tmp = self.state.with_name(self.state.name + ".tmp")
        doc = {"pool": str(self.pool), "mns": {mn: str(p) for mn, p in self._by_mn.items()}}
        with open(tmp, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state)
