"""Route/rule programming: dmanchor's pipelined netlink against ``ip -batch``.

Needs root.  In a scratch namespace (removed at the end), for each case the
same objects are installed and removed by ``ip -batch`` and by dmanchor,
alternating which goes first, ``ROUNDS`` times; medians are reported.  Each
way turns its description into requests on the clock (ip parses its batch
file; dmanchor builds netlink messages from entries):

* N plain routes (add, then delete), N = 10k and 100k;
* N SRv6-tunnelled prefixes sharing one seg6 nexthop object (LinuxDataPlane);
* 10k 5-tuple rules (netlink layer);
* the latency of one typical handover batch (ANCHOR -> TUNNEL plus a
  per-flow rule, and back) with 100k tunnelled prefixes installed.

Ends with one JSON line of figures; ``ratio`` = the lowest of dmanchor's
rate / ip's rate over the cases.
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from ipaddress import IPv6Address
from pathlib import Path

from dmanchor.dataplane.linux import LinuxDataPlane
from dmanchor.dataplane.netlink import rule
from dmanchor.wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix

ROUNDS = 3
"""Rounds per case; the median is reported."""
NH = IPv6Address("fd00::2")
SEG = IPv6Address("fc00::2")
BATCHES: list[Path] = []


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=600)


def prefix(i: int) -> Prefix:
    return Prefix((0x20010DB8 << 96) | (i << 64), 64)


def ip_batch(ns: str, lines: list[str]) -> Callable[[], None]:
    """``ip -batch`` of ``lines`` (written out now, run when called)."""
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    path = Path(f.name)
    BATCHES.append(path)
    return lambda: sh("ip", "-6", "-n", ns, "-batch", str(path))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


Way = tuple[Callable[[], object], Callable[[], object]]
"""Install, then remove, the same objects."""


def compare(ip: Way, ours: Way, rounds: int = ROUNDS) -> dict[str, tuple[float, float]]:
    """Median seconds of install and removal, ``ip -batch`` and ours.

    The two alternate which goes first in each round, so that neither
    always runs on a cache (or a kernel) the other warmed.
    """
    took: dict[str, list[tuple[float, float]]] = {"ip": [], "ours": []}
    for r in range(rounds):
        order = (("ip", ip), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("ip", ip))
        for name, (install, remove) in order:
            took[name].append((timed(install), timed(remove)))
    return {name: (statistics.median(a for a, _ in xs), statistics.median(d for _, d in xs))
            for name, xs in took.items()}


def main() -> None:
    ns = f"dmb{secrets.token_hex(3)}"
    sh("ip", "netns", "add", ns)
    out: dict[str, object] = {"bench": "netlink"}
    ratios = []
    try:
        sh("ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        sh("ip", "-n", ns, "-6", "addr", "add", "fd00::1/64", "dev", "v0", "nodad")
        for d in ("lo", "v0", "v1"):
            sh("ip", "-n", ns, "link", "set", d, "up")
        time.sleep(1.5)  # carrier
        dp = LinuxDataPlane(ns, sid_dev="v0")
        # Each way turns its own description into netlink requests on the
        # clock: ip parses its batch file, ours builds from the entries.
        for n in (10_000, 100_000):
            routes = [ForwardingEntry(EntryKind.ROUTE, prefix(i), NH) for i in range(n)]
            got = compare(
                (ip_batch(ns, [f"route add {prefix(i)} via {NH}" for i in range(n)]),
                 ip_batch(ns, [f"route del {prefix(i)} via {NH}" for i in range(n)])),
                (partial(dp.apply, routes, [], 0.0), partial(dp.apply, [], routes, 0.0)))
            for i, what in enumerate(("add", "del")):
                theirs, ours = got["ip"][i], got["ours"][i]
                out[f"routes_{what}_{n // 1000}k"] = {
                    "ours_per_s": round(n / ours), "ip_batch_per_s": round(n / theirs),
                    "ratio": round(theirs / ours, 2)}
                ratios.append(theirs / ours)
        # SRv6: 100k prefixes through one shared nexthop object.
        n = 100_000
        tun = [ForwardingEntry(EntryKind.TUNNEL, prefix(i), SEG) for i in range(n)]
        got = compare(
            (ip_batch(ns, [f"nexthop add id 77 encap seg6 mode encap segs {SEG} dev v0"]
                      + [f"route add {prefix(i)} nhid 77" for i in range(n)]),
             ip_batch(ns, [f"route del {prefix(i)}" for i in range(n)] + ["nexthop del id 77"])),
            (lambda: dp.apply(tun, [], 0.0), lambda: dp.apply([], tun, 0.0)))
        seg_ip, seg_us = got["ip"][0], got["ours"][0]
        out["seg6_100k"] = {"ours_s": round(seg_us, 3), "ip_batch_s": round(seg_ip, 3),
                            "ratio": round(seg_ip / seg_us, 2)}
        ratios.append(seg_ip / seg_us)
        dp.apply(tun, [], 0.0)  # the background of what follows
        # Handover batch latency with the 100k tunnelled prefixes installed:
        # (a) routes only - the flow's rule was installed when the flow was
        # declared, the move changes routes; (b) the rule itself added and
        # removed in the batch, which the kernel makes cost ~O(routes).
        hnp = Prefix.parse("2001:db9:1:1::/64")
        flow = FlowFilter(Prefix.parse("2001:db8:99::1/128"), Prefix.parse("2001:db9:1:1::10/128"),
                          17, 0, 5001)
        anchor = ForwardingEntry(EntryKind.ANCHOR, hnp, link="v0")
        variants = {
            "handover_batch_ms": [ForwardingEntry(EntryKind.TUNNEL, hnp, SEG)],
            "handover_batch_with_rule_change_ms": [
                ForwardingEntry(EntryKind.TUNNEL, hnp, SEG),
                ForwardingEntry(EntryKind.TUNNEL, hnp, SEG, flow=flow)],
        }
        for key, moved in variants.items():
            dp.apply([anchor], [], 0.0)
            lat = []
            for _ in range(200):
                lat.append(timed(partial(dp.apply, moved, [anchor], 0.0)))
                lat.append(timed(partial(dp.apply, [anchor], moved, 0.0)))
            lat.sort()
            out[key] = {"p50": round(statistics.median(lat) * 1e3, 3),
                        "p99": round(lat[int(len(lat) * 0.99)] * 1e3, 3),
                        "objects": 1 + len(moved) + sum(1 for e in moved if e.flow),
                        "background_routes": n}
            dp.apply([], [anchor], 0.0)
        dp.apply([], tun, 0.0)
        # Rules: the netlink layer against ip -batch.
        n = 10_000
        src = (IPv6Address("2001:db8:99::1"), 128)
        got = compare(
            (ip_batch(ns, [f"rule add pref {2000 + i} from 2001:db8:99::1 ipproto udp "
                           f"dport {1024 + i} lookup 100" for i in range(n)]),
             ip_batch(ns, [f"rule del pref {2000 + i}" for i in range(n)])),
            (lambda: dp.nl.batch([rule(True, 2000 + i, 100, src=src, proto=17, dport=1024 + i)
                                  for i in range(n)]),
             lambda: dp.nl.batch([rule(False, 2000 + i, 100, src=src, proto=17, dport=1024 + i)
                                  for i in range(n)])))
        rule_ip, rule_us = got["ip"][0], got["ours"][0]
        out["rules_add_10k"] = {"ours_per_s": round(n / rule_us),
                                "ip_batch_per_s": round(n / rule_ip),
                                "ratio": round(rule_ip / rule_us, 2)}
        ratios.append(rule_ip / rule_us)
        dp.close()
    finally:
        sh("ip", "netns", "del", ns)
        for path in BATCHES:
            path.unlink(missing_ok=True)
    out["ratio"] = round(min(ratios), 2)
    out["targets"] = {"ratio": 1.0, "handover_p50_ms": 0.5}
    for k, v in out.items():
        print(f"{k:22} {v}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
