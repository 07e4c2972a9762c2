"""Binding stores for the LMs.

The interface is a handful of calls; a networked store (etcd, a SQL server ...)
only has to implement them.  ``put`` and ``delete`` must be durable when
they return: the LMs acknowledges an update (LM:1-4 ack) right after.

* :class:`MemoryStore` - for the simulator and tests; not durable.
* :class:`SqliteStore` - the embedded default: SQLite in WAL mode in the
  node's state directory.  With ``synchronous=NORMAL`` a committed update
  survives a crash of the process (``kill -9``) but not necessarily a power
  loss; ``synchronous=FULL`` also survives the latter, at an fsync per
  update.
* :class:`~.etcd.EtcdStore` - etcd, shared by several LMs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from ipaddress import IPv6Address
from pathlib import Path
from typing import NamedTuple, Protocol

from ..wire.types import Prefix, address_from_packed


class Binding(NamedTuple):
    """One location record: prefix -> forwarding address, until ``expires``."""

    prefix: Prefix
    """The MN's prefix (HNP)."""
    forwarding_address: IPv6Address
    """Address of the FM-DP/DPA/DPN that forwards packets to the MN."""
    expires: float
    """Absolute expiry time (seconds, same clock as the core's ``now``; a
    store may persist it on another: :class:`SqliteStore`)."""
    updated_by: str = ""
    """Node that made the last update (authenticated owner or origin)."""
    mn: str = ""
    """The MN the prefix is bound to ("": none named).  Updates naming
    another MN are refused: one host cannot take over another's prefix."""
    flows: int = 0
    """Flows needing continuity its serving point last reported active on
    it: a router the MN moves to keeps the prefix only if some are."""


class StoreError(Exception):
    """The store could not make a change durable."""


class Store(Protocol):
    """What the LMs needs from a store."""

    def put(self, binding: Binding) -> None:
        """Insert or replace the binding of ``binding.prefix``; durable on return."""

    def put_many(self, bindings: Iterable[Binding]) -> None:
        """Insert or replace several bindings in one durable transaction."""

    def delete(self, prefix: Prefix) -> None:
        """Remove the binding of ``prefix``; durable on return."""

    def expire(self, binding: Binding) -> bool:
        """Remove ``binding`` at the end of its lifetime, unless the store
        holds a newer one (written by another LMs sharing it): True when
        it is gone."""

    def load(self) -> Iterator[Binding]:
        """Every stored binding (used once, at start)."""

    def close(self) -> None:
        """Release resources."""


class MemoryStore:
    """A dict; what the simulator uses."""

    def __init__(self) -> None:
        self.data: dict[Prefix, Binding] = {}

    def put(self, binding: Binding) -> None:
        self.data[binding.prefix] = binding

    def put_many(self, bindings: Iterable[Binding]) -> None:
        for b in bindings:
            self.data[b.prefix] = b

    def delete(self, prefix: Prefix) -> None:
        self.data.pop(prefix, None)

    def expire(self, binding: Binding) -> bool:
        self.delete(binding.prefix)
        return True

    def load(self) -> Iterator[Binding]:
        return iter(list(self.data.values()))

    def close(self) -> None:
        pass


class SqliteStore:
    """SQLite (WAL) store in ``state_dir/lms.sqlite3``."""

    def __init__(self, state_dir: str | Path, synchronous: str = "NORMAL", *,
                 to_disk: Callable[[float], float] | None = None,
                 from_disk: Callable[[float], float] | None = None) -> None:
        """``to_disk``/``from_disk``: convert an expiry between the core's
        clock and the one stored (the daemon stores wall time, its core runs
        on the monotonic clock; default: stored as given)."""
        self._to_disk = to_disk or _same
        self._from_disk = from_disk or _same
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        path = Path(state_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "lms.sqlite3"
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            # Addresses as 16-byte blobs: compact (1M bindings fit easily)
            # and cheap to convert back.
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS binding ("
                " network BLOB NOT NULL, length INTEGER NOT NULL,"
                " address BLOB NOT NULL, expires REAL NOT NULL,"
                " updated_by TEXT NOT NULL, mn TEXT NOT NULL DEFAULT '',"
                " flows INTEGER NOT NULL DEFAULT 0,"
                " PRIMARY KEY (network, length)) WITHOUT ROWID"
            )
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(binding)")}
            if "mn" not in columns:  # a store written before bindings named MNs
                self.db.execute("ALTER TABLE binding ADD COLUMN mn TEXT NOT NULL DEFAULT ''")
            if "flows" not in columns:  # ... or counted their flows
                self.db.execute("ALTER TABLE binding ADD COLUMN flows INTEGER NOT NULL DEFAULT 0")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc

    def _row(self, b: Binding) -> tuple[bytes, int, bytes, float, str, str, int]:
        return (
            b.prefix.network.to_bytes(16, "big"), b.prefix.length,
            b.forwarding_address.packed, self._to_disk(b.expires), b.updated_by, b.mn, b.flows,
        )

    def put(self, binding: Binding) -> None:
        try:
            self.db.execute(
                "INSERT OR REPLACE INTO binding"
                " (network, length, address, expires, updated_by, mn, flows)"
                " VALUES (?,?,?,?,?,?,?)", self._row(binding)
            )
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc

    def put_many(self, bindings: Iterable[Binding]) -> None:
        try:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany(
                    "INSERT OR REPLACE INTO binding"
                " (network, length, address, expires, updated_by, mn, flows)"
                " VALUES (?,?,?,?,?,?,?)",
                    (self._row(b) for b in bindings),
                )
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc

    def delete(self, prefix: Prefix) -> None:
        try:
            self.db.execute(
                "DELETE FROM binding WHERE network=? AND length=?",
                (prefix.network.to_bytes(16, "big"), prefix.length),
            )
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc

    def expire(self, binding: Binding) -> bool:
        self.delete(binding.prefix)  # (one writer: nobody else changed it)
        return True

    def load(self) -> Iterator[Binding]:
        rows = self.db.execute(
            "SELECT network, length, address, expires, updated_by, mn, flows FROM binding"
        ).fetchall()
        # One comprehension over fetched rows: a million bindings load in a
        # few seconds.  Forwarding addresses are few (one per anchor): the
        # memoized constructor shares one object per address.
        frm = int.from_bytes
        addr = address_from_packed
        back = self._from_disk
        return iter([Binding(Prefix(frm(n, "big"), ln), addr(a), back(e), by, mn, fl)
                     for n, ln, a, e, by, mn, fl in rows])

    def close(self) -> None:
        self.db.close()


def _same(at: float) -> float:
    return at
