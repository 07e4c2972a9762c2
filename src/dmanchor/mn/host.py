"""A host-based MN's own data plane (Fig 2a/2b): ending its anchors' tunnels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import Callable
from ipaddress import IPv6Address
from pathlib import Path

from ..dataplane.api import DataPlane
from ..dataplane.netlink import AddressMonitor, Netlink
from ..fm.mn_agent import CARE_OF_LIFETIME, MnAgentCore
from ..runtime import clock
from ..wire.types import EntryKind, ForwardingEntry, Prefix

log = logging.getLogger("dmanchor.node")


def _sid_entry(sid: IPv6Address) -> ForwardingEntry:
    return ForwardingEntry(EntryKind.DECAP, Prefix.host(sid), link="local")


def take_sid(dp: DataPlane, sid: IPv6Address, dev: str, now: float) -> None:
    """Make ``sid`` a care-of SID of the MN's on ``dev``.

    The SID (an address of the new network, not one of the MN's own, so
    the kernel does not take its packets as local) decapsulates into the
    local table (End.DT6): the inner packets are for the MN - or for its
    previous SID, which stays up while what was in flight to it follows
    the MN (:func:`drop_sid`).  The MN answers neighbour solicitations
    for it (proxy ND).
    """
    dp.apply([_sid_entry(sid)], (), now)
    # Ending tunnels makes the MN a router for its SID: the kernel takes
    # packets to a non-local address only when forwarding (and proxy ND
    # answers only then); accept_ra=2 keeps it autoconfiguring from RAs.
    Path("/proc/sys/net/ipv6/conf/all/forwarding").write_text("1")
    conf = Path(f"/proc/sys/net/ipv6/conf/{dev}")
    (conf / "accept_ra").write_text("2")
    (conf / "proxy_ndp").write_text("1")
    # Answer at once: proxied answers to multicast solicitations are
    # otherwise delayed at random by up to 0.8 s (RFC 4861 anycast rule).
    Path(f"/proc/sys/net/ipv6/neigh/{dev}/proxy_delay").write_text("0")
    subprocess.run(["ip", "-6", "neigh", "replace", "proxy", str(sid), "dev", dev],
                   check=True, capture_output=True, timeout=10)


def drop_sid(dp: DataPlane, sid: IPv6Address, dev: str, now: float) -> None:
    """Take down a care-of SID nothing is tunnelled to any more."""
    dp.apply((), [_sid_entry(sid)], now)
    subprocess.run(["ip", "-6", "neigh", "del", "proxy", str(sid), "dev", dev],
                   check=False, capture_output=True, timeout=10)


TCP_LISTEN, TCP_TIME_WAIT, TCP_CLOSE = 0x0A, 0x06, 0x07


def sessions_in_use(proc: Path = Path("/proc/net")) -> set[IPv6Address]:
    """The local IPv6 addresses of this namespace's open sessions: TCP
    connections not closing, and UDP sockets bound to an address."""
    used: set[IPv6Address] = set()
    for table, tcp in (("tcp6", True), ("udp6", False)):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            if len(raw) != 16:
                continue
            # Four 32-bit words, each in host (little-endian) order.
            address = IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            state = int(fields[3], 16)
            if tcp and state in (TCP_LISTEN, TCP_TIME_WAIT, TCP_CLOSE):
                continue
            if not (address.is_unspecified or address.is_loopback or address.is_link_local
                    or address.is_multicast):
                used.add(address)
    return used


class StackWatch:
    """What the MN's own stack holds on its interface, and when it changes."""

    def __init__(self, dev: str) -> None:
        self.dev = dev
        self.monitor = AddressMonitor()
        self._nl = Netlink()
        self._index = self._nl.ifindex(dev)

    def fileno(self) -> int:
        """For event loops: readable when an address changed."""
        return self.monitor.fileno()

    def held(self) -> list[tuple[IPv6Address, bool]]:
        """Its global addresses, each with whether it is preferred, the one
        a router advertised most recently last.

        Each router advertisement refreshes the lifetimes of the addresses
        of its prefixes, so the last one is of the network the MN is in -
        also when it comes back to a network whose address it kept, which
        creation order would not show (a return home)."""
        self.monitor.changed()  # (drained: what follows is read fresh)
        addrs = [a for a in self._nl.addresses(self._index) if a.scope == 0]
        # The kernel lists a link's addresses newest first: reversed and
        # sorted stably, of two refreshed in the same 10 ms the newer wins.
        ordered = sorted(reversed(addrs), key=lambda a: a.updated)
        return [(a.address, not a.deprecated) for a in ordered if not a.tentative]

    def close(self) -> None:
        """Close the sockets."""
        self.monitor.close()
        self._nl.close()



class HostMobility:
    """A host-based MN's agent (Fig 2a/2b) wired to its own stack.

    The MN sees its own moves: an address from a new network's RA.  Then
    its anchors' tunnels must end at its SID there (End.DT6 on its link)
    before the agent claims its prefixes from their anchors.
    """

    def __init__(self, agent: MnAgentCore, dataplane: DataPlane, link: str,
                 pump: Callable[[], None],
                 source: Callable[[IPv6Address], None] | None = None) -> None:
        """``pump``: runs the agent's driver after an input; ``source``: sets
        the address its signalling goes out from (of the network it is in)."""
        self.agent = agent
        self.dataplane = dataplane
        self.link = link
        self.pump = pump
        self.source = source
        self.sid: IPv6Address | None = None
        """The care-of SID, once it has one."""
        self._stack: StackWatch | None = None

    def start(self) -> None:
        """Watch the stack's addresses, and act on what it holds now."""
        self._stack = StackWatch(self.link)
        asyncio.get_running_loop().add_reader(self._stack.fileno(), self._on_stack)
        self._on_stack()

    def _on_stack(self) -> None:
        assert self._stack is not None
        now = clock.now()
        held = self._stack.held()
        sid = self.agent.addresses(held, sessions_in_use(), now)
        if sid is not None and self.source is not None:
            # Answers must come back here, not to the network it left.
            self.source(next(a for a, ok in reversed(held) if ok))
        if sid is not None:
            take_sid(self.dataplane, sid, self.link, now)
            old, self.sid = self.sid, sid
            if old is not None and old != sid:
                # Up as long as the agent claims its prefix (for what was
                # in flight to it), unless the MN is back there by then.
                asyncio.get_running_loop().call_later(
                    CARE_OF_LIFETIME, self._retire, old)
            log.info("moved: care-of SID %s", sid)
        self.agent.process(now)
        self.pump()

    def _retire(self, sid: IPv6Address) -> None:
        if sid != self.sid:
            drop_sid(self.dataplane, sid, self.link, clock.now())

    def close(self) -> None:
        """Stop watching."""
        if self._stack is not None:
            with contextlib.suppress(RuntimeError):  # (no loop running any more)
                asyncio.get_running_loop().remove_reader(self._stack.fileno())
            self._stack.close()
