"""What one DHCPv6 datagram costs a router's Delegations, as the number of IAs grows.

No kernel, no server process: a stand-in server answers every Solicit with a
rapid-commit Reply for the hinted prefix.  For each size, every prefix is
held, and the time spent in ``receive`` plus ``get_timer`` (what the driver
calls per datagram) is measured per datagram, outside the stand-in's own
work.  The baseline is the smallest size in the same run: a router holding
many MN prefixes should pay the same per datagram as one holding a few.

Ends with one JSON line; ``ratio`` = cost at the smallest size / cost at the
largest (1.0: flat; the walk of every IA it replaced was about 1/50 at 2000).
"""

from __future__ import annotations

import json
import statistics
import time

from dmanchor.access.delegation import Delegations
from dmanchor.access.dhcpv6 import (
    Dhcp6Message,
    IaPd,
    IaPrefix,
    MsgType,
    decode,
    duid_ll,
    encode,
)
from dmanchor.wire.types import Prefix

SIZES = (10, 100, 1000, 10_000)
SERVER_ID = b"\x00\x01\x00\x01bench"
ROUTER = duid_ll(bytes.fromhex("020000000001"))
SRC = ("fe80::1", 547)


def answer(data: bytes) -> bytes:
    """A rapid-commit Reply delegating the hinted prefix (T1 30 s, valid 120 s)."""
    m = decode(data)
    ia = m.ia_pd[0]
    return encode(Dhcp6Message(MsgType.REPLY, m.xid, m.client_id, SERVER_ID,
                               (IaPd(ia.iaid, 30, 48,
                                     (IaPrefix(ia.prefixes[0].prefix, 60, 120),)),)))


def per_datagram(n: int) -> float:
    """Microseconds per answered datagram with ``n`` delegations held."""
    d = Delegations(ROUTER)
    for i in range(n):
        d.hold(Prefix.parse(f"2001:db8:{i // 65536:x}:{i % 65536:x}::/64"), 0.0)
    spent, count = 0.0, 0
    while out := d.datagrams_to_send():
        for data, _ in out:
            reply = answer(data)
            t0 = time.perf_counter()
            d.receive(reply, SRC, 0.001)
            d.get_timer()
            spent += time.perf_counter() - t0
            count += 1
    assert d.counters["delegated"] == n, d.counters
    return spent / count * 1e6


def main() -> None:
    figures: dict[str, float] = {}
    for n in SIZES:
        runs = [per_datagram(n) for _ in range(3)]
        figures[f"us_per_datagram_{n}"] = round(statistics.median(runs), 2)
        print(f"{n:>6} delegations: {figures[f'us_per_datagram_{n}']:8.2f} us per datagram",
              flush=True)
    figures["ratio"] = round(figures[f"us_per_datagram_{SIZES[0]}"]
                             / figures[f"us_per_datagram_{SIZES[-1]}"], 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
