"""The ``dmanchor`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .wire import WireError, decode, encode, from_json, to_json
from .wire.auth import receiver_id


def _cmd_decode(args: argparse.Namespace) -> int:
    if args.file:
        with open(args.file, "rb") as fh:
            data = fh.read()
    elif args.hex is not None:
        text = "".join(args.hex.split())
        try:
            data = bytes.fromhex(text)
        except ValueError:
            print("dmanchor decode: argument is not hexadecimal", file=sys.stderr)
            return 2
    else:
        print("dmanchor decode: give HEX or --file FILE", file=sys.stderr)
        return 2
    try:
        packet = decode(data)
    except WireError as exc:
        print(f"dmanchor decode: malformed message: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(to_json(packet), indent=2 if args.pretty else None))
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.json in (None, "-") else args.json
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        print(f"dmanchor encode: bad JSON: {exc}", file=sys.stderr)
        return 2
    try:
        packet = from_json(doc)
        secret = bytes.fromhex(args.secret_hex) if args.secret_hex else None
        receiver = b""
        if args.receiver:
            host, _, port = args.receiver.rpartition(":")
            receiver = receiver_id((host.strip("[]"), int(port)))
        data = encode(
            packet.message, packet.seq, packet.flags,
            key_id=args.key_id, secret=secret, timestamp_us=args.timestamp_us,
            receiver=receiver,
        )
    except (WireError, ValueError) as exc:
        print(f"dmanchor encode: {exc}", file=sys.stderr)
        return 1
    if args.raw:
        sys.stdout.buffer.write(data)
    else:
        print(data.hex())
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from .config import as_role, key_toml, new_key

    try:
        roles = frozenset(as_role(r.strip()) for r in args.roles.split(",") if r.strip())
        key = new_key(args.id, args.owner, roles)
    except ValueError as exc:
        print(f"dmanchor keygen: {exc}", file=sys.stderr)
        return 2
    if not roles:
        print("dmanchor keygen: --roles names none", file=sys.stderr)
        return 2
    # The same entry goes into the config of the owner (with send_key = id)
    # and of every node that must verify the owner's messages.
    print(f"# {args.owner}: put this in its own config (send_key = {args.id}) and in\n"
          "# the config of every node that verifies its messages.  Keep it secret.")
    print(key_toml(key), end="")
    return 0


def _cmd_messages(args: argparse.Namespace) -> int:
    from .wire.messages import REGISTRY

    for code, spec in sorted(REGISTRY.items()):
        fields = ", ".join(
            f.name + ("[]" if f.kind.name == "MANY" else "?" if f.kind.name == "OPTIONAL" else "")
            for f in spec.fields
        )
        print(f"{code:3}  {spec.cls.LABEL:22} {spec.cls.TYPE.name:22} {fields}")
    return 0


def _cmd_dissector(args: argparse.Namespace) -> int:
    from .wire.dissector import lua

    text = lua()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .scenario.run import main as run_main

    return run_main(args.scenario, args.json, args.out, l2_trigger=not args.no_l2_trigger)


def _cmd_run(args: argparse.Namespace) -> int:
    from .scenario.run import main as run_main

    if args.plots and not args.out:
        print("dmanchor run: --plots needs --out DIR (where the plots go)", file=sys.stderr)
        return 2
    return run_main(args.scenario, args.json, args.out, args.plan, args.log_level,
                    l2_trigger=not args.no_l2_trigger, signed=not args.insecure,
                    plots=args.plots, pcap=args.pcap, predictive=args.predictive)


def _cmd_trace(args: argparse.Namespace) -> int:
    from .scenario.callflow import write

    try:
        written = write(Path(args.dir))
    except (OSError, ValueError) as exc:
        print(f"dmanchor trace: {args.dir}: {exc}", file=sys.stderr)
        return 2
    if (Path(args.dir) / "arrivals.json").exists():
        from .scenario.plots import draw

        written += draw(Path(args.dir))
    if written:
        from .scenario.page import write as write_page

        written.append(write_page(Path(args.dir)))
    for path in written:
        print(path)
    if not written:
        print(f"dmanchor trace: {args.dir}: no move to draw", file=sys.stderr)
    return 0


def _lm_command(kind: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from .lm.daemon import main as lm_main

        return lm_main(kind, args.config, args.worker, args.port)

    return run


def _node_command(args: argparse.Namespace) -> int:
    from .node import main as node_main

    return node_main(args.config, args.log_level, args.log_format)


class _Bar:
    """A progress bar (rich) on a terminal's stderr, shown once a run has
    taken 2 s: short runs print nothing but their result."""

    def __init__(self, what: str, total: float, unit: str) -> None:
        import time

        self.what, self.total, self.unit = what, total, unit
        self._start = time.monotonic()
        self._clock = time.monotonic
        self._bar: Any = None
        self._task: Any = None

    def update(self, done: float, extra: str = "") -> None:
        """``done`` of the total so far; ``extra``: shown beside it."""
        if self._bar is None:
            if not sys.stderr.isatty() or self._clock() - self._start < 2:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn(f"  {self.what}"), BarColumn(),
                TextColumn("{task.completed:.0f} of {task.total:.0f} " + self.unit),
                TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total, extra=extra)
        self._bar.update(self._task, completed=done, extra=extra)

    def close(self) -> None:
        """Leave the bar as it ended (if it was shown)."""
        if self._bar is not None:
            self._bar.stop()


def _cmd_sim(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from .sim.simulate import SimConfig, Simulation, format_report

    if args.scenario:
        return _cmd_twin(args)
    try:
        cfg = SimConfig(aggregations=args.aggregations, access_per_aggregation=args.access,
                        topology=args.topology, mobility=args.mobility, mns=args.mns,
                        duration=args.duration,
                        dwell=args.dwell, continuity=args.continuity, cns=args.cns,
                        cn_at_edge=args.cn_at_edge, seed=args.seed,
                        trace=Path(args.trace) if args.trace else None)
        simulation = Simulation(cfg)
        bar = _Bar("sim", cfg.duration, "virtual s")
        try:
            report = simulation.run(
                lambda now, handovers: bar.update(now, f"{handovers} handovers"))
        finally:
            bar.close()
        if args.out:
            from .sim.plots import write

            write(simulation, report, Path(args.out))
    except (ValueError, OSError) as exc:
        print(f"dmanchor sim: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(report)) if args.json else format_report(report))
    return 0


def _cmd_twin(args: argparse.Namespace) -> int:
    from .scenario.fields import ScenarioError
    from .scenario.run import find
    from .sim.runs import format_run, run_json
    from .sim.twin import Twin, Unsupported

    try:
        run = Twin(find(args.scenario), seed=args.seed).play()
    except (ScenarioError, Unsupported) as exc:
        print(f"dmanchor sim: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(run_json(run)) if args.json else format_run(run))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from .sim.sweep import SweepError, format_sweep, load_spec, run_sweep, write_outputs

    try:
        spec = load_spec(Path(args.spec))
        if args.workers < 1:
            raise SweepError(f"--workers {args.workers}: at least 1")
        bar = _Bar("sweep", len(spec.points()), "simulations")
        try:
            result = run_sweep(spec, scheduler=args.scheduler, workers=args.workers,
                               progress=lambda done, _: bar.update(done))
        finally:
            bar.close()
        written = write_outputs(result, Path(args.out)) if args.out else []
    except (SweepError, OSError) as exc:
        print(f"dmanchor sweep: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"spec": dataclasses.asdict(result.spec), "rows": result.rows,
                          "groups": result.groups, "wall_s": result.wall_s,
                          "workers": result.workers}))
    else:
        print(format_sweep(result))
        for path in written:
            print(f"  wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dmanchor`` command."""
    p = argparse.ArgumentParser(prog="dmanchor", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("decode", help="decode a message (hex or raw file) to JSON")
    d.add_argument("hex", nargs="?", help="the message in hexadecimal")
    d.add_argument("--file", help="read raw message bytes from FILE")
    d.add_argument("--pretty", action="store_true", help="indent the JSON")
    d.set_defaults(func=_cmd_decode)

    e = sub.add_parser("encode", help="encode a message from JSON to hex")
    e.add_argument("json", nargs="?", help="the JSON document ('-' or absent: stdin)")
    e.add_argument("--raw", action="store_true", help="write raw bytes, not hex")
    e.add_argument("--key-id", type=int, help="sign with this key id")
    e.add_argument("--secret-hex", help="HMAC secret in hex (signs the message)")
    e.add_argument("--timestamp-us", type=int, default=0, help="AUTH timestamp")
    e.add_argument("--receiver", metavar="[HOST]:PORT",
                   help="the address the message is sent to (covered by the MAC)")
    e.set_defaults(func=_cmd_encode)

    k = sub.add_parser("keygen", help="make a signing key for a node ([[security.keys]])")
    k.add_argument("owner", help="the node id the key authenticates")
    k.add_argument("--id", type=int, required=True, help="key id (0..65535, unique)")
    k.add_argument("--roles", required=True,
                   help="comma-separated: anchor, fmdp, controller, lms, lmp, mn")
    k.set_defaults(func=_cmd_keygen)

    m = sub.add_parser("messages", help="list message types and their draft labels")
    m.set_defaults(func=_cmd_messages)

    w = sub.add_parser("dissector", help="print the Wireshark Lua dissector of the protocol "
                                         "(contrib/wireshark/dmanchor.lua)")
    w.add_argument("-o", "--output", help="write it to FILE")
    w.set_defaults(func=_cmd_dissector)

    demo = sub.add_parser("demo", help="run the demo: a move on real kernels, measured")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.add_argument("--out", help="keep the node logs and report.json in this directory")
    demo.add_argument("--scenario", default="4.2.1",
                      help="shipped scenario (or file) to run (default 4.2.1)")
    demo.set_defaults(func=_cmd_demo)

    r = sub.add_parser("run", help="emulate a scenario (file or shipped name) on real kernels")
    r.add_argument("scenario", help="a scenario file, or the name of a shipped one (4.1.2 ...)")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--out", help="keep node logs, traces and report.json in this directory")
    r.add_argument("--plan", action="store_true",
                   help="print the addressing, routes and node configs; run nothing")
    r.add_argument("--log-level", default="info", help="node log level (debug, info ...)")
    r.add_argument("--plots", action="store_true",
                   help="with --out: plot each flow over time, moves and interruptions "
                        "marked (DIR/flow-NAME.png, matplotlib)")
    r.add_argument("--pcap", metavar="FILE",
                   help="capture every node's control traffic into FILE (pcapng; dumpcap "
                        "and mergecap from Debian's tshark)")
    r.add_argument("--predictive", action="store_true",
                   help="the L2 hint names the router the MN goes to; the old router "
                        "tells it first (HI), so the move needs no LM:1-1 wait there")
    r.add_argument("--insecure", action="store_true",
                   help="nodes run unsigned (insecure = true), to measure what signing costs")
    for parser in (demo, r):
        parser.add_argument("--no-l2-trigger", action="store_true",
                            help="moves are unannounced breaks: no L2 'link going down' hint "
                                 "reaches the old router; it learns from the link itself")
    r.set_defaults(func=_cmd_run)

    sim = sub.add_parser("sim", help="many MNs over a generated tree in virtual time, with "
                                     "the project's cores, beside a centralized baseline; or "
                                     "a scenario file's twin")
    sim.add_argument("scenario", nargs="?",
                     help="a scenario (file or shipped name) to play in virtual time with the "
                          "cores its nodes run: each move's signalling, the flows, the end "
                          "state (the generated-network options below do not apply)")
    sim.add_argument("--topology", choices=("tree", "grid", "geometric"), default="tree",
                     help="tree: core, aggregation and access routers; grid: access "
                          "routers in a mesh, the core off its middle; geometric: "
                          "aggregations x access routers placed at random, linked to "
                          "those within reach")
    sim.add_argument("--mobility", choices=("walk", "waypoint"), default="walk",
                     help="walk: each move to a random neighbouring router; waypoint: "
                          "hop by hop towards a router picked at random anywhere")
    sim.add_argument("--aggregations", type=int, default=4,
                     help="routers under the core (grid: rows)")
    sim.add_argument("--access", type=int, default=4,
                     help="access routers under each aggregation router (grid: columns)")
    sim.add_argument("--mns", type=int, default=50, help="mobile nodes")
    sim.add_argument("--duration", type=float, default=30.0, help="virtual seconds")
    sim.add_argument("--dwell", type=float, default=5.0,
                     help="mean seconds an MN stays at a router")
    sim.add_argument("--continuity", type=float, default=0.5,
                     help="share of MNs with a session that outlives its moves")
    sim.add_argument("--cns", type=int, default=1, help="correspondents")
    sim.add_argument("--cn-at-edge", action="store_true",
                     help="correspondents at access routers (local content), not the core")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--trace", help="CSV of time,mn,router moves instead of the random walk")
    sim.add_argument("--json", action="store_true", help="print the report as JSON")
    sim.add_argument("--out", help="write report.json and CDF plots of both designs here "
                                   "(stretch, latency, tunnel state; matplotlib)")
    sim.set_defaults(func=_cmd_sim)

    sw = sub.add_parser("sweep", help="a parameter sweep of simulations (seeds x sizes x "
                                      "...) on a Dask cluster, gathered into one table")
    sw.add_argument("spec", help="YAML: 'base' simulation options and the lists to 'vary'")
    sw.add_argument("--scheduler", help="a Dask scheduler's address (tcp://host:8786); "
                                        "default: a local cluster")
    sw.add_argument("--workers", type=int, default=2,
                    help="processes of the local cluster (without --scheduler)")
    sw.add_argument("--json", action="store_true", help="print every row and group as JSON")
    sw.add_argument("--out", help="write sweep.csv (and sweep.png) here")
    sw.set_defaults(func=_cmd_sweep)

    t = sub.add_parser("trace", help="draw the call flow of each move of a run kept by --out "
                                     "(callflow-N.svg and .mmd)")
    t.add_argument("dir", help="the --out directory of a run")
    t.set_defaults(func=_cmd_trace)

    n = sub.add_parser("node", help="run a node hosting anchor/controller/lms/fmdp functions")
    n.add_argument("--config", required=True, help="TOML or YAML config file")
    n.add_argument("--log-level", help="debug, info, warning or error (overrides the config)")
    n.add_argument("--log-format", choices=("text", "json"),
                   help="json: one JSON object per line (node, function, MN, prefix, draft "
                        "label); overrides the config")
    n.set_defaults(func=_node_command)

    for kind in ("lms", "lmp"):
        s = sub.add_parser(kind, help=f"run the {kind.upper()} daemon")
        s.add_argument("--config", required=True, help="TOML or YAML config file")
        # Set by an LMs's supervisor for its workers (dmanchor.lm.workers).
        s.add_argument("--worker", type=int, help=argparse.SUPPRESS)
        s.add_argument("--port", type=int, help=argparse.SUPPRESS)
        s.set_defaults(func=_lm_command(kind))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dmanchor`` console script."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
