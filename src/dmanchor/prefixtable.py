"""Longest-prefix-match table keyed by :class:`~dmanchor.wire.types.Prefix`.

One dict per prefix length in use: a lookup costs one dict probe per
distinct length (a handful in practice), insertion and deletion O(1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from .wire.types import Prefix

V = TypeVar("V")
_ALL = (1 << 128) - 1
_MASKS = tuple((_ALL << (128 - n)) & _ALL for n in range(129))


class PrefixTable(Generic[V]):
    """Map of prefixes to values with longest-prefix match."""

    def __init__(self) -> None:
        self._by_len: dict[int, dict[int, V]] = {}
        self._lengths: list[int] = []  # descending

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_len.values())

    def __contains__(self, prefix: Prefix) -> bool:
        d = self._by_len.get(prefix.length)
        return d is not None and prefix.network in d

    def __iter__(self) -> Iterator[Prefix]:
        for length, d in self._by_len.items():
            for network in d:
                yield Prefix(network, length)

    def items(self) -> Iterator[tuple[Prefix, V]]:
        """Every (prefix, value)."""
        for length, d in self._by_len.items():
            for network, v in d.items():
                yield Prefix(network, length), v

    def get(self, prefix: Prefix) -> V | None:
        """Exact-match lookup."""
        d = self._by_len.get(prefix.length)
        return None if d is None else d.get(prefix.network)

    def set(self, prefix: Prefix, value: V) -> None:
        """Insert or replace."""
        d = self._by_len.get(prefix.length)
        if d is None:
            d = self._by_len[prefix.length] = {}
            self._lengths = sorted(self._by_len, reverse=True)
        d[prefix.network] = value

    def pop(self, prefix: Prefix) -> V | None:
        """Remove and return the exact entry, if any."""
        d = self._by_len.get(prefix.length)
        if d is None:
            return None
        value = d.pop(prefix.network, None)
        if not d:
            del self._by_len[prefix.length]
            self._lengths = sorted(self._by_len, reverse=True)
        return value

    def longest(self, address: int, max_length: int = 128) -> tuple[Prefix, V] | None:
        """Longest entry covering ``address`` with length <= ``max_length``."""
        for length in self._lengths:
            if length > max_length:
                continue
            d = self._by_len[length]
            network = address & _MASKS[length]
            if network in d:
                return Prefix(network, length), d[network]
        return None

    def covering(self, prefix: Prefix) -> Iterator[tuple[Prefix, V]]:
        """Every entry equal to or less specific than ``prefix``, longest first."""
        for length in self._lengths:
            if length > prefix.length:
                continue
            network = prefix.network & _MASKS[length]
            d = self._by_len[length]
            if network in d:
                yield Prefix(network, length), d[network]

    def covered(self, prefix: Prefix) -> Iterator[tuple[Prefix, V]]:
        """Every entry equal to or more specific than ``prefix`` (a scan)."""
        for length, d in self._by_len.items():
            if length < prefix.length:
                continue
            for network, v in d.items():
                if network & _MASKS[prefix.length] == prefix.network:
                    yield Prefix(network, length), v
