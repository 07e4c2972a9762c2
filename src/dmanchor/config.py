"""Config files (TOML or YAML) read into validated settings.

Every error names the file and the field (``lms.peers[1]``) and says what
was expected, so a wrong config stops a daemon with one clear line.
"""

from __future__ import annotations

import logging
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .dataplane.markers import MarkerAuth
from .runtime import clock
from .transport.reliable import Addr
from .wire.auth import Key, Role, Security
from .wire.errors import WireError
from .wire.types import Prefix, parse_address

T = TypeVar("T")


class ConfigError(Exception):
    """A config file is unreadable or a field is wrong."""


def load_file(path: str | Path) -> dict[str, Any]:
    """Parse ``path`` as TOML (``.toml``) or YAML (anything else)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    try:
        doc = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: not valid {'TOML' if p.suffix == '.toml' else 'YAML'}: "
                          f"{exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: the top level must be a table/mapping")
    return doc


class Fields:
    """Typed access to one table of a config, with errors naming the field."""

    def __init__(self, source: str, path: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: field '{path}': expected a table")
        self.source = source
        self.path = path
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def _err(self, name: str, what: str) -> ConfigError:
        full = f"{self.path}.{name}" if self.path else name
        return ConfigError(f"{self.source}: field '{full}': {what}")

    def get(self, name: str, conv: Callable[[Any], T], default: T | None = None,
            required: bool = False) -> T:
        """Field ``name`` converted by ``conv`` (which may raise ValueError)."""
        self.used.add(name)
        if name not in self.table:
            if required or default is None:
                raise self._err(name, "is required")
            return default
        try:
            return conv(self.table[name])
        except (ValueError, TypeError, WireError) as exc:
            raise self._err(name, str(exc)) from exc

    def get_list(self, name: str, conv: Callable[[Any], T]) -> tuple[T, ...]:
        """List field (absent = empty); items named ``name[i]`` in errors."""
        self.used.add(name)
        raw = self.table.get(name, [])
        if not isinstance(raw, list):
            raise self._err(name, "expected a list")
        out = []
        for i, item in enumerate(raw):
            try:
                out.append(conv(item))
            except (ValueError, TypeError, WireError) as exc:
                raise self._err(f"{name}[{i}]", str(exc)) from exc
        return tuple(out)

    def sub(self, name: str) -> Fields:
        """A nested table (absent = empty)."""
        self.used.add(name)
        path = f"{self.path}.{name}" if self.path else name
        return Fields(self.source, path, self.table.get(name, {}))

    def finish(self) -> None:
        """Reject fields nobody asked for (typos must not pass silently)."""
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self._err(unknown[0], "unknown field")


def as_str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {v!r}")
    return v


def as_int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"expected an integer, got {v!r}")
    return v


def as_float(v: Any) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
        raise ValueError(f"expected a non-negative number, got {v!r}")
    return float(v)


def as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def as_prefix(v: Any) -> Prefix:
    return Prefix.parse(as_str(v))


def as_address(v: Any) -> IPv6Address:
    return parse_address(as_str(v))


def as_bind(v: Any) -> Addr:
    """Like :func:`as_endpoint`, port 0 allowed (any free port)."""
    return _endpoint(v, allow_zero=True)


def as_endpoint(v: Any) -> Addr:
    """``[2001:db8::1]:5400``, ``127.0.0.1:5400`` or ``host:port``."""
    return _endpoint(v, allow_zero=False)


def _endpoint(v: Any, allow_zero: bool) -> Addr:
    text = as_str(v)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    low = 0 if allow_zero else 1
    if not sep or not host or not port.isdigit() or not low <= int(port) < 65536:
        raise ValueError(f"expected host:port or [v6addr]:port, got {text!r}")
    return (host, int(port))


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """The ``[security]`` table shared by every daemon.

    Secure by default: a node signs everything it sends and drops every
    unsigned message.  It starts without keys only when the table says
    ``insecure = true`` (and then says so loudly in its log).
    """

    keys: tuple[Key, ...] = ()
    """Known keys (``[[security.keys]]`` with id, secret_hex, owner, roles):
    this node's own and those of every peer whose messages it verifies."""
    send_key: int | None = None
    """Key id that signs this node's messages (required with keys)."""
    insecure: bool = False
    """Accept unsigned messages (and start with no keys at all).  For
    laboratories only: anyone who can reach the node can then redirect
    sessions through it."""
    authorization: Mapping[str, tuple[Prefix, ...]] | None = None
    """Node id -> prefixes it may update (``[security.authorization]``)."""

    def build(self) -> Security:
        """The SM state for an endpoint."""
        return Security(self.keys, send_key_id=self.send_key, require_auth=not self.insecure,
                        wall=clock.wall)

    def markers(self) -> MarkerAuth:
        """End-marker signing and checking for this node's data plane."""
        return MarkerAuth(self.keys, self.send_key, require=not self.insecure, wall=clock.wall)

    def warn(self, log: logging.Logger) -> None:
        """Say loudly, at start, that this node runs insecure."""
        if self.insecure:
            log.warning("INSECURE: [security] insecure = true - unsigned messages are "
                        "accepted%s; anyone who can reach this node can redirect "
                        "sessions through it", "" if self.send_key is not None
                        else " and this node signs nothing")


def read_security(f: Fields) -> SecuritySettings:
    """Parse the ``[security]`` table; refuses a node with no keys unless
    it is explicitly ``insecure``."""
    def key(item: Any) -> Key:
        k = Fields(f.source, f"{f.path}.keys", item)
        secret_hex = k.get("secret_hex", as_str, required=True)
        try:
            secret = bytes.fromhex(secret_hex)
        except ValueError as exc:
            raise ValueError("secret_hex is not hexadecimal") from exc
        out = Key(k.get("id", as_int, required=True), secret,
                  k.get("owner", as_str, required=True),
                  frozenset(k.get_list("roles", as_role)))
        if not out.roles:
            raise k._err("roles", "required: what the owner may act as "
                         f"({', '.join(r.value for r in Role)})")
        k.finish()
        return out

    keys = f.get_list("keys", key)
    insecure = f.get("insecure", as_bool, False)
    send_key = f.get("send_key", as_int, -1)
    if send_key != -1 and send_key not in {k.key_id for k in keys}:
        raise ConfigError(f"{f.source}: field '{f.path}.send_key': no key with id {send_key}")
    if send_key == -1 and not insecure:
        raise f._err("send_key", "required: without a key this node would accept and "
                     "send unsigned messages anyone can forge. Make keys with `dmanchor "
                     "keygen` (docs/operations.md), or set insecure = true in a laboratory")
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{f.source}: field '{f.path}.keys': a key id is listed twice")
    authz = None
    if "authorization" in f.table:
        a = f.sub("authorization")
        authz = {node: a.get_list(node, as_prefix) for node in list(a.table)}
    out = SecuritySettings(keys, None if send_key == -1 else send_key, insecure, authz)
    f.finish()
    return out


def new_key(key_id: int, owner: str, roles: frozenset[Role]) -> Key:
    """A fresh key with a random 32-byte secret (``dmanchor keygen``)."""
    return Key(key_id, secrets.token_bytes(32), owner, roles)


def key_toml(key: Key) -> str:
    """A ``[[security.keys]]`` entry for ``key``, as a config file holds it."""
    roles = ", ".join(f'"{r.value}"' for r in sorted(key.roles, key=lambda r: r.value))
    return (f'[[security.keys]]\nid = {key.key_id}\nowner = "{key.owner}"\n'
            f'roles = [{roles}]\nsecret_hex = "{key.secret.hex()}"\n')


def as_role(value: Any) -> Role:
    """A role name (anchor, fmdp, controller, lms, lmp, mn)."""
    try:
        return Role(as_str(value))
    except ValueError:
        raise ValueError(
            f"expected one of {', '.join(r.value for r in Role)}, got {value!r}") from None
