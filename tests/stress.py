"""The flaky-test hunt: run a test tier several times, optionally under CPU hogs.

``make stress`` (``RUNS=5 HOGS=0`` by default) runs the namespace tier
``--runs`` times in a row, with ``--hogs`` busy-looping processes beside it
the whole time (what a loaded 2-vCPU CI machine looks like), and prints per
test how many runs it passed, then each run's wall time.  Exits 1 if any test
failed in any run.  Not part of ``make test``.

The hogs are started here and stopped here, by PID.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

HOG = "while True: pass"


def outcomes(junit: Path) -> dict[str, str]:
    """Test id -> ``passed``/``failed``/``skipped`` from a JUnit XML report."""
    out: dict[str, str] = {}
    if not junit.exists():
        return out
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out[name] = "failed"
        elif case.find("skipped") is not None:
            out[name] = "skipped"
        else:
            out[name] = "passed"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hogs", type=int, default=0, help="busy-looping processes beside it")
    ap.add_argument("paths", nargs="*", default=["tests/netns"])
    args = ap.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    passed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    walls: list[tuple[float, int]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="dmanchor-stress-") as d:
            for i in range(args.runs):
                junit = Path(d) / f"run{i}.xml"
                t0 = time.monotonic()
                # Every scenario in both trigger modes (make test runs the
                # fault scenarios in one: tests/netns/test_scenarios.py).
                rc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                     f"--junitxml={junit}", *args.paths],
                                    env={**os.environ, "DMANCHOR_ALL_MODES": "1"}).returncode
                walls.append((time.monotonic() - t0, rc))
                for name, how in outcomes(junit).items():
                    seen[name] += 1
                    passed[name] += how == "passed"
                    failed[name] += how == "failed"
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print(f"\n{args.runs} runs of {' '.join(args.paths)} with {args.hogs} CPU hogs")
    width = max((len(n) for n in seen), default=10)
    for name in sorted(seen, key=lambda n: (-failed[n], n)):
        mark = "   <- FAILED" if failed[name] else ""
        skipped = seen[name] - passed[name] - failed[name]
        note = f" ({skipped} skipped)" if skipped else ""
        print(f"  {name:<{width}}  passed {passed[name]}/{seen[name]}{note}{mark}")
    for i, (wall, rc) in enumerate(walls):
        print(f"  run {i + 1}: {wall:.0f} s, exit {rc}")
    flaky = [n for n in seen if failed[n]]
    print(f"{len(seen) - len(flaky)} tests never failed, {len(flaky)} failed at least once")
    return 1 if flaky or any(rc for _, rc in walls) else 0


if __name__ == "__main__":
    sys.exit(main())
