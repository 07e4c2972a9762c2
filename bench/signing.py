"""What signing costs a handover: interruption with and without keys.

Needs root.  Runs shipped scenarios on real kernels, alternating signed
(every node its own key, signed signalling and end markers - the default)
and insecure (``insecure = true``) in one run, so both see the same
machine.  The interruption is the receiver's longest gap in the UDP probe
across each move.  Ends with one JSON line; ``ratio`` = signed p50 /
insecure p50 (above 1: signing is slower).

    python bench/signing.py [ROUNDS] [SCENARIO ...]
"""

from __future__ import annotations

import json
import statistics
import sys

from dmanchor.emulation.lab import can_run
from dmanchor.scenario.run import find, run

DEFAULT = ("4.1.2", "4.2.1")


def main() -> None:
    why = can_run()
    if why:
        print(f"signing: {why}", file=sys.stderr)
        sys.exit(2)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    names = sys.argv[2:] or list(DEFAULT)
    gaps: dict[bool, list[float]] = {True: [], False: []}
    failed = 0
    for i in range(rounds):
        for name in names:
            for signed in ((True, False) if i % 2 == 0 else (False, True)):
                report = run(find(name), quiet=True, signed=signed)
                failed += not report.passed
                for f in report.flows:
                    if f.name == "probe":
                        gaps[signed] += [m.interruption_ms for m in f.moves]
                print(f"{name} {'signed' if signed else 'insecure'}: "
                      f"{'pass' if report.passed else report.failures}", file=sys.stderr)
    p50 = {k: statistics.median(v) for k, v in gaps.items()}
    print(f"interruption p50: signed {p50[True]:.2f} ms, insecure {p50[False]:.2f} ms "
          f"({len(gaps[True])} moves each)", file=sys.stderr)
    print(json.dumps({"bench": "signing", "scenarios": names, "moves": len(gaps[True]),
                      "signed_p50_ms": round(p50[True], 3),
                      "insecure_p50_ms": round(p50[False], 3), "failed_runs": failed,
                      "ratio": round(p50[True] / p50[False], 3)}))


if __name__ == "__main__":
    main()
