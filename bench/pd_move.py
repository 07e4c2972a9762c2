"""Moving a delegated prefix between access routers: DHCPv6-PD exchange vs Kea lease_cmds.

Needs root, kea-dhcp6-server and its lease_cmds hook.  Two access routers
share a DHCP link with a real Kea; HNP1 moves back and forth between them,
alternating the two ways in one run (draft 4.2.1):

* **pd**: the previous router releases HNP1 (Release/Reply), the new one
  asks for it as a hint (Solicit with rapid commit/Reply);
* **lease_cmds**: a controller sends Kea one ``lease6-update`` giving the
  lease to the new router's DUID/IAID, and the new router then takes the
  lease up (its own Solicit/Reply), as it must before it may anchor HNP1.

Both are timed over the same span - from the move's first message to the
new router holding HNP1 (``Bound``) - so the new router's Solicit/Reply is
inside both.  The controller's part of lease_cmds alone is reported too.

Ends with one JSON line; ``ratio`` = pd p50 / lease_cmds p50 (above 1:
lease_cmds is faster).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dmanchor.access.delegation import iaid_for
from dmanchor.access.dhcpv6 import Bound, PdClient, Released
from dmanchor.access.kea_ctrl import KeaControl, move_delegation
from dmanchor.emulation.kea import KeaServer, lease_cmds_library
from dmanchor.emulation.lab import Lab, Veth, can_run
from dmanchor.emulation.pd import PdRouter
from dmanchor.wire.types import Prefix

MOVES = 50


async def timed_move(ctl: KeaControl, prefix: Prefix, duid: bytes) -> float:
    """Seconds one lease6-update takes, from the running event loop."""
    t0 = time.perf_counter()
    await move_delegation(ctl, prefix, duid)
    return time.perf_counter() - t0


def main() -> None:
    why = can_run() or (None if KeaServer.available() and lease_cmds_library() else
                        "needs kea-dhcp6-server with its lease_cmds hook")
    if why:
        print(f"pd_move: {why}", file=sys.stderr)
        sys.exit(2)
    lab = Lab()
    tmp = Path(tempfile.mkdtemp(prefix="dmanchor-pd-"))
    kea = None
    routers: dict[int, PdRouter] = {}
    try:
        lab.build(["kea", "ar1", "ar2"], [Veth("kea", "p1", "", "ar1", "dhcp0", ""),
                                          Veth("kea", "p2", "", "ar2", "dhcp0", "")])
        lab.run("kea", "ip", "link", "add", "br0", "type", "bridge")
        for port in ("p1", "p2"):
            lab.run("kea", "ip", "link", "set", port, "master", "br0")
        lab.run("kea", "ip", "link", "set", "br0", "up")
        lab.wait_up("kea", "br0")
        for node, ifname in (("kea", "br0"), ("ar1", "dhcp0"), ("ar2", "dhcp0")):
            lab.wait_link_local(node, ifname)
        kea = KeaServer(lab, "kea", "br0", Prefix.parse("2001:db8:1::/48"), 64, tmp / "kea",
                        lease_cmds=True)
        kea.start()
        # Each router holds HNP1 on the IAID derived from it, as the node's
        # delegations do: the IA a controller's lease6-update names.
        hnp1 = Prefix.parse("2001:db8:1::/64")
        routers = {i: PdRouter(lab, f"ar{i}", "dhcp0", f"0200000000{i:02x}",
                               iaid=iaid_for(hnp1)) for i in (1, 2)}
        ctl = KeaControl(kea.socket, valid=kea.valid, preferred=kea.preferred)
        loop = asyncio.new_event_loop()
        routers[1].client.request(time.time(), hint=hnp1)
        got = routers[1].run_until(Bound)
        assert isinstance(got, Bound) and got.prefix == hnp1
        times: dict[str, list[float]] = {"pd": [], "lease_cmds": []}
        controller: list[float] = []  # lease6-update alone
        holder = 1
        for move in range(MOVES):
            # Alternate which goes first, so neither always follows the other.
            for how in ("pd", "lease_cmds") if move % 2 == 0 else ("lease_cmds", "pd"):
                old, new = routers[holder], routers[3 - holder]
                t0 = time.perf_counter()
                if how == "pd":
                    old.client.release(time.time())
                    old.run_until(Released)
                    new.client.request(time.time(), hint=hnp1)
                    moved = new.run_until(Bound)
                    times[how].append(time.perf_counter() - t0)
                    assert isinstance(moved, Bound) and moved.prefix == hnp1
                else:
                    # The update is timed inside the running loop, as in the
                    # controller's node (not the cost of starting a loop).
                    update = loop.run_until_complete(timed_move(ctl, hnp1, new.client.duid))
                    # The new router takes the lease up: on the clock, as
                    # the pd way's Solicit/Reply is.
                    new.client.request(time.time(), hint=hnp1)
                    took = new.run_until(Bound)
                    times[how].append(time.perf_counter() - t0)
                    controller.append(update)
                    assert isinstance(took, Bound) and took.prefix == hnp1
                    # The old one forgets it had it (off the clock).
                    old.client = PdClient(old.client.duid, iaid=old.client.iaid,
                                          initial_rt=0.3, max_rc=6)
                holder = 3 - holder
        figures: dict[str, object] = {"moves": MOVES}
        p50 = {how: statistics.median(xs) * 1e3 for how, xs in times.items()}
        for how, xs in times.items():
            figures[f"{how}_p50_ms"] = round(p50[how], 3)
            figures[f"{how}_p99_ms"] = round(sorted(xs)[int(0.99 * len(xs))] * 1e3, 3)
        figures["lease6_update_alone_p50_ms"] = round(statistics.median(controller) * 1e3, 3)
        figures["ratio"] = round(p50["pd"] / p50["lease_cmds"], 2)
        loop.close()
    finally:
        for r in routers.values():
            r.close()
        if kea is not None:
            kea.stop()
        left = lab.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        if left:
            print(f"left behind: {left}", file=sys.stderr)
    for k, v in figures.items():
        print(f"{k:>18}: {v}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
