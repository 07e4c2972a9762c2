"""Anchored-flow throughput: iperf3 TCP through the SRv6-anchored path vs plain routing.

Needs root and iperf3.  Same namespaces, same run, alternating: the MN sits behind AR2
and its address IP1 belongs to Net1.  Plain: R routes HNP1 straight to
AR2.  Anchored (draft 4.1.2): AR1 keeps anchoring HNP1 and tunnels it over
SRv6 to AR2, which decapsulates (End.DT6).  A third path takes the same
hops as the anchored one without encapsulation, to separate the cost of
SRv6 from the cost of the longer path.  Best of three rounds each.
Ends with one JSON line; ``ratio`` = anchored / plain throughput,
``ratio_same_path`` = anchored / same-hops throughput.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from ipaddress import IPv6Address as A

from dmanchor.emulation.flat import HNP1, IP1, SID2, E, K, flat, move_mn_to_ar2
from dmanchor.emulation.lab import Lab


def iperf(lab: Lab, seconds: int = 3) -> float:
    """Receiver-side TCP throughput CN -> MN, bits per second."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("mn"), "iperf3", "-s", "-1", "-B", IP1],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        out = lab.run("cn", "iperf3", "-c", IP1, "-t", str(seconds), "-J")
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)  # ours, by PID
        server.wait(10)


def main() -> None:
    lab = Lab()
    try:
        dps = flat(lab)
        move_mn_to_ar2(lab)
        dps["ar2"].apply([E(K.ANCHOR, HNP1, link="mn2")], [], 0.0)
        plain_route = E(K.ROUTE, HNP1, A("fd00:2::2"))
        tunnel = E(K.TUNNEL, HNP1, SID2)
        # The same hairpin as the anchored path (CN-R-AR1-R-AR2), routed
        # without encapsulation: R sends HNP1 to AR1, AR1 back to R, and R
        # forwards what comes back from AR1 to AR2 (policy routing on iif).
        back_to_r = E(K.ROUTE, HNP1, A("fd00:1::1"))
        plain = anchored = hairpin = 0.0
        # Alternate the paths, best of three each: a burst of load on this
        # noisy machine must not land on one side only.
        for _ in range(3):
            dps["r"].apply([plain_route], [], 0.0)
            plain = max(plain, iperf(lab))
            dps["r"].apply([], [plain_route], 0.0)
            dps["ar1"].apply([tunnel], [], 0.0)
            anchored = max(anchored, iperf(lab))
            dps["ar1"].apply([back_to_r], [tunnel], 0.0)
            lab.run("r", "ip", "-6", "route", "add", str(HNP1), "via", "fd00:2::2",
                    "table", "77")
            lab.run("r", "ip", "-6", "rule", "add", "iif", "r-ar1", "lookup", "77",
                    "pref", "77")
            hairpin = max(hairpin, iperf(lab))
            lab.run("r", "ip", "-6", "rule", "del", "pref", "77")
            lab.run("r", "ip", "-6", "route", "flush", "table", "77")
            dps["ar1"].apply([], [back_to_r], 0.0)
    finally:
        lab.cleanup()
    out = {
        "bench": "dataplane",
        "plain_gbps": round(plain / 1e9, 2),
        "srv6_anchored_gbps": round(anchored / 1e9, 2),
        "same_path_unencapsulated_gbps": round(hairpin / 1e9, 2),
        "ratio": round(anchored / plain, 3),
        "ratio_same_path": round(anchored / hairpin, 3),
        "target": 0.9,
    }
    print(f"plain {out['plain_gbps']} Gb/s, SRv6-anchored {out['srv6_anchored_gbps']} Gb/s "
          f"(ratio {out['ratio']}), same hops without SRv6 "
          f"{out['same_path_unencapsulated_gbps']} Gb/s (ratio {out['ratio_same_path']})",
          file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
