"""A host-based MN's own data plane (Fig 2a/2b): ending its anchors' tunnels."""

from __future__ import annotations

import subprocess
from ipaddress import IPv6Address
from pathlib import Path

from ..dataplane.api import DataPlane
from ..wire.types import EntryKind, ForwardingEntry, Prefix


def take_sid(dp: DataPlane, old: IPv6Address | None, sid: IPv6Address, dev: str,
             now: float) -> None:
    """Make ``sid`` the MN's care-of SID on ``dev`` (replacing ``old``).

    The SID (an address of the new network, not one of the MN's own, so
    the kernel does not take its packets as local) decapsulates into the
    local table (End.DT6): the inner packets are for the MN.  The MN
    answers neighbour solicitations for it (proxy ND).
    """
    stale = [ForwardingEntry(EntryKind.DECAP, Prefix.host(old), link="local")] if old else []
    new = ForwardingEntry(EntryKind.DECAP, Prefix.host(sid), link="local")
    dp.apply([new], [e for e in stale if e != new], now)
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
