"""Reading YAML with the line of every field, and the typed field readers.

The scenario format (:mod:`.model`) and its compact parts (:mod:`.walk`)
read their fields through :class:`Table`: a wrong or unknown field is an
error naming the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from ..wire.errors import WireError
from ..wire.types import Prefix

T = TypeVar("T")
PathKey = tuple[str | int, ...]


class ScenarioError(Exception):
    """A scenario file is unreadable or wrong (file, line and field named)."""


class Doc:
    """A YAML document with the line of every field."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines: dict[PathKey, int] = {}
        self._loader = yaml.SafeLoader("")  # constructs scalars: ints, floats, bools
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{source}: not valid YAML: {exc}") from exc
        if root is None:
            raise ScenarioError(f"{source}: empty file")
        self.data = self._build(root, ())

    def _build(self, node: yaml.Node, path: PathKey) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                key = str(k.value)
                if key in out:
                    raise ScenarioError(f"{self.source}:{k.start_mark.line + 1}: "
                                        f"field '{dotted((*path, key))}' appears twice")
                out[key] = self._build(v, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(v, (*path, i)) for i, v in enumerate(node.value)]
        return self._loader.construct_object(node, deep=True)

    def error(self, path: PathKey, what: str) -> ScenarioError:
        probe = path
        while probe not in self.lines and probe:
            probe = probe[:-1]
        line = self.lines.get(probe, 0)
        return ScenarioError(f"{self.source}:{line}: field '{dotted(path)}': {what}")


def dotted(path: PathKey) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "(top)"


class Table:
    """Typed reads of one mapping; unknown fields are errors."""

    def __init__(self, doc: Doc, path: PathKey, value: Any) -> None:
        if not isinstance(value, dict):
            raise doc.error(path, "expected a mapping")
        self.doc, self.path, self.value = doc, path, value
        self.used: set[str] = set()

    def get(self, name: str, conv: Callable[[Any], T], default: T | None = None,
            required: bool = False) -> T:
        self.used.add(name)
        if name not in self.value:
            if required or default is None:
                raise self.doc.error((*self.path, name), "is required")
            return default
        try:
            return conv(self.value[name])
        except (ValueError, TypeError, WireError) as exc:
            raise self.doc.error((*self.path, name), str(exc)) from exc

    def opt(self, name: str, conv: Callable[[Any], T]) -> T | None:
        if name not in self.value:
            self.used.add(name)
            return None
        return self.get(name, conv)

    def sub(self, name: str) -> Table:
        self.used.add(name)
        return Table(self.doc, (*self.path, name), self.value.get(name, {}))

    def finish(self) -> None:
        extra = sorted(set(self.value) - self.used)
        if extra:
            raise self.doc.error((*self.path, extra[0]), "unknown field")


def as_str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {v!r}")
    return v


def as_num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ValueError(f"expected a number >= 0, got {v!r}")
    return float(v)


@dataclass(frozen=True, slots=True)
class Share:
    """A limit relative to what a flow sent: ``reordered: 0.1%``."""

    percent: float
    """Share of the packets sent, in percent (0 to 100)."""

    def of(self, sent: int) -> int:
        """The limit, in packets, for a flow that sent ``sent``."""
        return int(sent * self.percent / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%"


def count_or_share(v: Any) -> int | Share:
    """A packet count (``0``) or a share of the packets sent (``"0.1%"``)."""
    if isinstance(v, str) and v.endswith("%"):
        try:
            pct = float(v[:-1])
        except ValueError:
            pct = -1.0
        if not 0 <= pct <= 100:
            raise ValueError(f"expected a percentage from 0% to 100%, got {v!r}")
        return Share(pct)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a count >= 0 or a percentage like '0.1%', got {v!r}")
    return v


def as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"expected a positive integer, got {v!r}")
    return v


def as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def as_prefix(v: Any) -> Prefix:
    return Prefix.parse(as_str(v))


def one_of(*choices: str) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {v!r}")
        return str(v)
    return conv


def as_list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise ValueError(f"expected a list, got {v!r}")
    return v


def as_mapping(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"expected a mapping, got {v!r}")
    return v
