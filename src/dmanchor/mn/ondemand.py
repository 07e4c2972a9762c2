"""On-demand mobility for MN applications (RFC 8653 in spirit; draft 4.1).

An application asks for the kind of source address it needs, and gets a
socket bound to it:

* ``SESSION_LASTING`` - an address the network keeps reachable across moves
  (the anchoring follows it, or the old anchor tunnels to the new one).  A
  *new* session gets the address of the network the MN is in now (the
  newest preferred one): it needs mobility support only if the MN moves
  while it runs (draft 4.1.2: new sessions use the new prefix; a previous
  network's deprecated address is kept for the sessions already on it).
  Given the address a session uses (``current``), the library keeps
  returning it while it stays valid.
* ``NONPERSISTENT`` - always the address from the network the MN is in now
  (the newest *preferred* address), whatever the session used before: no
  mobility support needed, the cheapest path (draft 4.1.1).

Addresses are read from the kernel (``ip -j addr``) in the caller's network
namespace; the choice itself is a pure function, tested without a kernel.
"""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv6Address


class AddressKind(Enum):
    """What an application needs from its source address."""

    SESSION_LASTING = "session-lasting"
    NONPERSISTENT = "nonpersistent"


@dataclass(frozen=True, slots=True)
class HostAddress:
    """A global IPv6 address of the MN, as the kernel reports it."""

    address: IPv6Address
    preferred: bool
    """False once deprecated (preferred lifetime 0)."""
    valid_left: int
    """Seconds of valid lifetime left (0xFFFFFFFF: forever)."""
    age: int
    """Order of appearance: higher is newer."""


class NoAddressError(RuntimeError):
    """No global address fits the request."""


def choose(addresses: list[HostAddress], kind: AddressKind,
           current: IPv6Address | None = None) -> IPv6Address:
    """Pick the source address for ``kind`` (``current``: the one used so far)."""
    valid = [a for a in addresses if a.valid_left > 0]
    if kind is AddressKind.SESSION_LASTING:
        if current is not None and any(a.address == current for a in valid):
            return current  # an ongoing session keeps its address
        if not valid:
            raise NoAddressError("no valid global address")
    preferred = [a for a in valid if a.preferred]
    if not preferred:
        raise NoAddressError("no preferred global address (not attached?)")
    return max(preferred, key=lambda a: a.age).address


def host_addresses(device: str | None = None) -> list[HostAddress]:
    """The global IPv6 addresses of this host (namespace), oldest first."""
    argv = ["ip", "-j", "-6", "addr", "show"] + (["dev", device] if device else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout
    found: list[HostAddress] = []
    # The kernel lists an interface's addresses newest first.
    for link in json.loads(out or "[]"):
        infos = [i for i in link.get("addr_info", []) if i.get("scope") == "global"]
        for n, info in enumerate(reversed(infos)):
            found.append(HostAddress(
                IPv6Address(info["local"]),
                not info.get("deprecated", False),
                int(info.get("valid_life_time", 0xFFFFFFFF)),
                n,
            ))
    return found


def open_socket(kind: AddressKind, sock_type: int = socket.SOCK_STREAM,
                device: str | None = None,
                current: IPv6Address | None = None) -> socket.socket:
    """A socket bound to a source address of ``kind`` (port chosen by the kernel)."""
    address = choose(host_addresses(device), kind, current)
    s = socket.socket(socket.AF_INET6, sock_type)
    try:
        s.bind((str(address), 0))
    except OSError:
        s.close()
        raise
    return s
