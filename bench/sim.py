"""Simulator benchmark (issue 17 item 2): the virtual-time event loop against
SimPy on the same pure-timer workload, in the same run; then the cost per
handover of ``dmanchor sim`` as the network grows.

The timer workload: ``PROCESSES`` chains, each waiting a pseudo-random
delay and scheduling its next wait, ``EVENTS`` waits in all - for us
:meth:`VirtualNetwork.call_later`, for SimPy a process yielding
``env.timeout``.  Best of ``ROUNDS`` rounds each, alternated.

The curve: ``dmanchor sim`` with MNs and access routers in proportion (10
MNs a router), sessions off (the control plane's cost; probes cost per
packet, not per handover), wall seconds per handover once every MN has
attached (their first attachments are not handovers), over the same
:data:`MOVES` virtual seconds of moves at every size.  (The attachments
take longer the more MNs there are; with one fixed duration the moves
window shrank as the network grew, and the work each MN costs once after
attaching was spread over fewer handovers.)

Prints a table, then one JSON line (``ratio`` = our events/s / SimPy's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Generator
from typing import Any

from dmanchor.runtime.virtual import VirtualNetwork
from dmanchor.sim.simulate import SimConfig, Simulation, warmup_of

MOVES = 20.0
"""Virtual seconds of moves after every MN attached, at each size."""
PROCESSES = 1000
EVENTS = 300_000
ROUNDS = 3


def _delays(n: int) -> list[float]:
    # The same delays for both (a linear congruential sequence, 1-100 ms).
    x, out = 12345, []
    for _ in range(n):
        x = (1103515245 * x + 12345) & 0x7FFFFFFF
        out.append(0.001 + (x % 1000) / 10_000)
    return out


def ours(delays: list[float]) -> float:
    """Events per second of the virtual network's loop."""
    net = VirtualNetwork()
    per = len(delays) // PROCESSES

    def chain(k: int, i: int) -> Callable[[], None]:
        def step() -> None:
            if i + 1 < per:
                net.call_later(delays[k * per + i + 1], chain(k, i + 1))
        return step
    for k in range(PROCESSES):
        net.call_later(delays[k * per], chain(k, 0))
    t0 = time.perf_counter()
    n = net.run()
    return n / (time.perf_counter() - t0)


def simpy_rate(delays: list[float]) -> float:
    """Events per second of SimPy on the same waits."""
    import simpy

    env = simpy.Environment()
    per = len(delays) // PROCESSES

    def proc(k: int) -> Generator[Any, Any, None]:
        for i in range(per):
            yield env.timeout(delays[k * per + i])
    for k in range(PROCESSES):
        env.process(proc(k))
    t0 = time.perf_counter()
    env.run()
    return per * PROCESSES / (time.perf_counter() - t0)


def curve(sizes: list[int]) -> list[dict[str, float]]:
    """Wall time per handover of ``dmanchor sim`` at each number of MNs."""
    out = []
    for mns in sizes:
        routers = max(4, mns // 10)
        aggs = max(2, int(routers ** 0.5))
        cfg = SimConfig(aggregations=aggs, access_per_aggregation=routers // aggs, mns=mns,
                        duration=warmup_of(mns) + MOVES, continuity=0.0)
        r = Simulation(cfg).run()
        per = r.wall_moves_s / max(1, r.handovers)
        out.append({"mns": mns, "routers": aggs * (routers // aggs), "handovers": r.handovers,
                    "wall_s": r.wall_s, "ms_per_handover": round(per * 1e3, 4)})
        print(f"{mns:7} MNs {aggs * (routers // aggs):5} routers {r.handovers:8} handovers "
              f"{r.wall_s:8.2f} s  {per * 1e3:.3f} ms/handover", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,4000,16000",
                    help="numbers of MNs for the cost-per-handover curve")
    args = ap.parse_args()
    delays = _delays(EVENTS)
    best_ours = best_simpy = 0.0
    for _ in range(ROUNDS):
        best_ours = max(best_ours, ours(delays))
        best_simpy = max(best_simpy, simpy_rate(delays))
    print(f"timers: ours {best_ours:,.0f}/s  SimPy {best_simpy:,.0f}/s  "
          f"ratio {best_ours / best_simpy:.2f}", file=sys.stderr)
    points = curve([int(s) for s in args.sizes.split(",")])
    costs = [p["ms_per_handover"] for p in points]
    print(json.dumps({"bench": "sim", "ours_events_per_s": round(best_ours),
                      "simpy_events_per_s": round(best_simpy), "curve": points,
                      "cost_growth": round(max(costs) / min(costs), 2) if costs else None,
                      "ratio": round(best_ours / best_simpy, 3), "target": 1.0}))


if __name__ == "__main__":
    main()
