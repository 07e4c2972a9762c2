"""``dmanchor run SCENARIO``: emulate a scenario on real kernels and report."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from .fields import ScenarioError
from .model import Scenario, load
from .plan import make_plan
from .report import Report, print_report


def shipped() -> dict[str, Path]:
    """The scenarios that ship with dmanchor, by name."""
    root = resources.files("dmanchor") / "scenarios"
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith(".yaml"):
            out[entry.name[:-5]] = Path(str(entry))
    return dict(sorted(out.items()))


def find(name_or_path: str) -> Scenario:
    """Load a scenario file, or a shipped scenario by name (``4.1.2``, ``fig1a``)."""
    if os.path.exists(name_or_path):
        return load(name_or_path)
    known = shipped()
    if name_or_path in known:
        return load(known[name_or_path])
    raise ScenarioError(f"{name_or_path}: no such file, and no shipped scenario of that name "
                        f"(shipped: {', '.join(known)})")


def _progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def run(sc: Scenario, out: Path | None = None, log_level: str = "info",
        quiet: bool = False, l2_trigger: bool = True, signed: bool = True,
        pcap: Path | None = None, predictive: bool = False) -> Report:
    """Run ``sc``; keep node logs, traces and report.json in ``out`` if given.

    ``l2_trigger``: moves are announced by the old router's L2 before the
    link goes; without, routers learn them from the links.  ``predictive``
    (with ``l2_trigger``): the hint names the new router, which the old
    one tells first (HI).
    ``signed``: every node signs (as deployed); else all run insecure.
    ``pcap``: write the nodes' control traffic there (pcapng).
    """
    from .emulator import Emulation

    workdir = Path(tempfile.mkdtemp(prefix="dmanchor-run-")) if out is None else out
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return Emulation(sc, workdir, log_level, None if quiet else _progress,
                         l2_trigger, signed, pcap, predictive).run()
    finally:
        if out is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(target: str, as_json: bool, out: str | None, plan_only: bool = False,
         log_level: str = "info", l2_trigger: bool = True, signed: bool = True,
         plots: bool = False, pcap: str | None = None, predictive: bool = False) -> int:
    """Entry point of ``dmanchor run`` (and of ``dmanchor demo``)."""
    try:
        sc = find(target)
    except ScenarioError as exc:
        print(f"dmanchor run: {exc}", file=sys.stderr)
        return 2
    if plan_only:
        plan = make_plan(sc, signed)
        for name, np in plan.nodes.items():
            print(f"# {name} ({np.spec.kind})")
            for i in np.ifaces:
                print(f"#   {i.name}: {i.address or '(bridged radio)'} mtu {i.mtu} -> {i.peer}")
            for p, nh in np.routes:
                print(f"#   route {p} via {nh}")
            if np.config:
                print(np.config)
        return 0
    if os.geteuid() != 0:
        print("dmanchor run: needs root to build network namespaces; run it as root "
              "(e.g. sudo make demo)", file=sys.stderr)
        return 1
    faulty = any(st.action in ("cut", "heal", "loss") for st in sc.timeline)
    for tool in ("ip", "nft", *(("ip6tables",) if faulty else ())):
        if shutil.which(tool) is None:
            print(f"dmanchor run: {tool} is missing; make demo installs it", file=sys.stderr)
            return 1
    print(f"dmanchor run {sc.name} - {sc.title}, on real kernels", file=sys.stderr)
    try:
        report = run(sc, Path(out) if out else None, log_level, l2_trigger=l2_trigger,
                     signed=signed, pcap=Path(pcap).resolve() if pcap else None,
                     predictive=predictive)
    except KeyboardInterrupt:
        print("dmanchor run: interrupted; everything it built was removed", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:
        print(f"dmanchor run: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(report.as_json()))
    else:
        print_report(report)
    if pcap:
        print(f"  capture: {pcap} (read it with tshark -X "
              "lua_script:contrib/wireshark/dmanchor.lua)", file=sys.stderr)
    if plots and out:
        from .plots import draw

        for path in draw(Path(out)):
            print(f"  plot: {path}", file=sys.stderr)
    if out:
        from .page import write

        print(f"  page: {write(Path(out))}", file=sys.stderr)
    return 0 if report.passed else 1
