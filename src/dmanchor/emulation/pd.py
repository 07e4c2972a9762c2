"""The access routers' DHCPv6-PD client side, driven inside their namespaces.

Runs our sans-IO :class:`~dmanchor.access.dhcpv6.PdClient` over a socket
created in an access router's namespace and bound to its DHCP link, until
the awaited event.  The emulator uses it to move a prefix by DHCPv6-PD
(draft 4.2.1): the previous router releases, the new one requests the
prefix as a hint.
"""

from __future__ import annotations

import socket
import time

from ..access.dhcpv6 import CLIENT_PORT, PdClient, PdEvent, duid_ll
from .lab import Lab


class PdRouter:
    """A requesting router's PD client in ``node``'s namespace, on ``link``."""

    def __init__(self, lab: Lab, node: str, link: str, mac: str, iaid: int = 1) -> None:
        self.sock = lab.socket(node)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.encode())
        self.sock.bind(("::", CLIENT_PORT))
        self.ifindex = int(lab.run(node, "cat", f"/sys/class/net/{link}/ifindex"))
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        self.client = PdClient(duid_ll(bytes.fromhex(mac)), iaid=iaid, initial_rt=0.3,
                               max_rc=6)

    def run_until(self, kind: type, timeout: float = 5.0) -> PdEvent:
        """Exchange messages until an event of ``kind``; any other is an error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data, (host, port) in self.client.datagrams_to_send():
                self.sock.sendto(data, (host, port, 0, self.ifindex))
            timer = self.client.get_timer()
            wait = 0.05 if timer is None else max(0.001, min(0.05, timer - time.time()))
            self.sock.settimeout(wait)
            try:
                data, addr = self.sock.recvfrom(2048)
                self.client.receive(data, (addr[0], addr[1]), time.time())
            except TimeoutError:
                self.client.handle_timer(time.time())
            event = self.client.next_event()
            if event is not None:
                if not isinstance(event, kind):
                    raise RuntimeError(f"DHCPv6-PD: {event}")
                return event
        raise RuntimeError(f"DHCPv6-PD: no {kind.__name__} within {timeout} s")

    def close(self) -> None:
        """Close the socket (the lease stays with the server)."""
        self.sock.close()
