"""The asyncio driver of an access router's DHCPv6-PD delegations.

Pumps a sans-IO :class:`~.delegation.Delegations` over one UDP socket on the
link towards the delegating router (port 546, bound to that device), with
wall-clock time.  What the server sends that no transaction awaits is
counted by the core and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from ..runtime import clock
from ..wire.types import Prefix
from .delegation import DelegationEvent, Delegations
from .dhcpv6 import CLIENT_PORT, duid_ll

log = logging.getLogger("dmanchor.pd")


def link_duid(link: str) -> bytes:
    """DUID-LL from ``link``'s MAC address (RFC 8415 11.4)."""
    try:
        mac = Path(f"/sys/class/net/{link}/address").read_text().strip()
    except OSError as exc:
        raise OSError(f"DHCPv6-PD link {link!r}: {exc.strerror}") from exc
    return duid_ll(bytes.fromhex(mac.replace(":", "")))


class PdDriver:
    """Runs ``delegations`` on ``link`` in the running event loop."""

    def __init__(self, delegations: Delegations, link: str,
                 on_event: Callable[[DelegationEvent], None]) -> None:
        self.core = delegations
        self.link = link
        self.on_event = on_event
        self._sock: socket.socket | None = None
        self._ifindex = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Open the client socket on the link (raises OSError naming it)."""
        try:
            self._ifindex = socket.if_nametoindex(self.link)
        except OSError as exc:
            raise OSError(f"DHCPv6-PD link {self.link!r}: no such interface") from exc
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.link.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self._ifindex)
            sock.bind(("::", CLIENT_PORT))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)

    def hold(self, prefix: Prefix, moving: bool = False) -> None:
        """Have ``prefix`` delegated here (see :meth:`Delegations.hold`)."""
        self.core.hold(prefix, clock.now(), moving=moving)
        self.pump()

    def let_go(self, prefix: Prefix) -> None:
        """Give ``prefix`` back (see :meth:`Delegations.let_go`)."""
        self.core.let_go(prefix, clock.now())
        self.pump()

    def pump(self) -> None:
        """Send what the core has to send, hand on its events, re-arm its timer."""
        sock = self._sock
        for data, (host, port) in self.core.datagrams_to_send():
            if sock is None:
                continue
            try:
                # ALL_SERVERS is link-scoped multicast: the link's index scopes it.
                sock.sendto(data, (host, port, 0, self._ifindex))
            except OSError as exc:  # the link went down: the client retransmits
                log.warning("DHCPv6-PD on %s: %s", self.link, exc)
        while (ev := self.core.next_event()) is not None:
            self.on_event(ev)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.get_timer()
        if deadline is not None and sock is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - clock.now())
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(clock.now())
        self.pump()

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, addr = self._sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("DHCPv6-PD on %s: %s", self.link, exc)
                break
            self.core.receive(data, (addr[0], addr[1]), clock.now())
        self.pump()

    def close(self) -> None:
        """Stop (leases stay with the server: a restarted router asks for them again)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
