"""Per-flow charging (FM:2) on Linux, with ip6tables counters.

A flow is counted by two rules in a ``DMANCHOR-CHARGE`` chain of the mangle
table's FORWARD hook: its packets leaving on the access link that anchors
the MN's address (downlink) and entering from it (uplink).  Each packet is
charged once, by the access router that serves the MN.  Counters moved in
from another anchor (FM:2 state transfer) are kept as offsets: the nf_tables
backend ignores counters given at insertion, and a read-then-write would
lose what is counted in between.

ip6tables is spawned, ~10 ms a call: a flow is tracked when it is set up or
ahead of a move (handover preparation), and read at FM:2, never on the
handover path.
"""

from __future__ import annotations

import subprocess

from ..wire.types import FlowFilter
from .api import DataPlaneError, FlowUsage

CHARGE_CHAIN = "DMANCHOR-CHARGE"
"""mangle-table chain holding the per-flow charging rules."""


def _charge_key(f: FlowFilter) -> str:
    return f"{f.src}-{f.dst}-{f.proto}-{f.sport}-{f.dport}".replace(":", ".")


def _match(f: FlowFilter) -> str:
    """ip6tables match of a flow in its own direction."""
    parts = []
    if f.src.length:
        parts.append(f"-s {f.src}")
    if f.dst.length:
        parts.append(f"-d {f.dst}")
    if f.proto:
        name = {6: "tcp", 17: "udp"}.get(f.proto, str(f.proto))
        parts.append(f"-p {name}")
        if name in ("tcp", "udp"):
            if f.sport:
                parts.append(f"--sport {f.sport}")
            if f.dport:
                parts.append(f"--dport {f.dport}")
    return " ".join(parts)


class Charging:
    """The charged flows of one namespace: flow -> (access link, moved-in offset)."""

    def __init__(self, netns: str | None) -> None:
        """``netns``: namespace name (``ip netns``), None for the current one."""
        self.netns = netns
        self._charged: dict[FlowFilter, tuple[str, FlowUsage]] = {}
        self._ready = False

    def tracked(self, flow: FlowFilter) -> bool:
        """Whether ``flow`` is being counted here."""
        return flow in self._charged

    def ensure_chain(self) -> None:
        """Create (or reset) the chain and hook it into FORWARD, once."""
        if self._ready:
            return
        self._run(["ip6tables", "-t", "mangle", "-N", CHARGE_CHAIN], check=False)
        # Counters of a previous run died with its process (their offsets
        # were in memory): a restarted agent starts from a clean chain
        # rather than leaking rules nobody reads.
        self._run(["ip6tables", "-t", "mangle", "-F", CHARGE_CHAIN])
        self._run(["ip6tables", "-t", "mangle", "-D", "FORWARD", "-j", CHARGE_CHAIN],
                  check=False)
        self._run(["ip6tables", "-t", "mangle", "-I", "FORWARD", "-j", CHARGE_CHAIN])
        self._ready = True

    def track(self, flow: FlowFilter, link: str) -> None:
        """Start counting ``flow`` on access link ``link`` (idempotent)."""
        if flow in self._charged:
            return
        key = _charge_key(flow)
        self._batch([
            f"-A {CHARGE_CHAIN} -i {link} {_match(flow)} -m comment "
            f"--comment dmanchor:{key}:up -j RETURN",
            f"-A {CHARGE_CHAIN} -o {link} {_match(flow.reversed())} -m comment "
            f"--comment dmanchor:{key}:down -j RETURN",
        ])
        self._charged[flow] = (link, FlowUsage())

    def untrack(self, flow: FlowFilter) -> FlowUsage:
        """Stop counting ``flow``; its final usage (offset included)."""
        final = self.usage(flow)
        entry = self._charged.pop(flow, None)
        if entry is not None:
            link, _ = entry
            key = _charge_key(flow)
            self._batch([
                f"-D {CHARGE_CHAIN} -i {link} {_match(flow)} -m comment "
                f"--comment dmanchor:{key}:up -j RETURN",
                f"-D {CHARGE_CHAIN} -o {link} {_match(flow.reversed())} -m comment "
                f"--comment dmanchor:{key}:down -j RETURN",
            ])
        return final

    def usage(self, flow: FlowFilter) -> FlowUsage:
        """What ``flow`` used so far (kernel counters plus the moved-in offset)."""
        entry = self._charged.get(flow)
        if entry is None:
            return FlowUsage()
        _, offset = entry
        counts = self._counters().get(_charge_key(flow), {})
        up = counts.get("up", (0, 0))
        down = counts.get("down", (0, 0))
        return FlowUsage(offset.bytes_up + up[1], offset.bytes_down + down[1],
                         offset.packets_up + up[0], offset.packets_down + down[0])

    def add_usage(self, flow: FlowFilter, moved: FlowUsage) -> None:
        """Add usage moved in from another anchor to a tracked flow's offset."""
        link, offset = self._charged[flow]
        self._charged[flow] = (link, FlowUsage(*(
            a + b for a, b in zip(offset, moved, strict=True))))

    def _batch(self, rules: list[str]) -> None:
        self.ensure_chain()
        text = "*mangle\n" + "\n".join(rules) + "\nCOMMIT\n"
        self._run(["ip6tables-restore", "--noflush"], stdin=text)

    def _counters(self) -> dict[str, dict[str, tuple[int, int]]]:
        out: dict[str, dict[str, tuple[int, int]]] = {}
        text = self._run(["ip6tables-save", "-c", "-t", "mangle"])
        for line in text.splitlines():
            if "dmanchor:" not in line or not line.startswith("["):
                continue
            counters, _, rest = line.partition("]")
            pkts, _, nbytes = counters[1:].partition(":")
            tag = rest.split("dmanchor:", 1)[1].split()[0].strip('"')
            key, _, direction = tag.rpartition(":")
            out.setdefault(key, {})[direction] = (int(pkts), int(nbytes))
        return out

    def _run(self, argv: list[str], check: bool = True, stdin: str | None = None) -> str:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns is not None else []
        try:
            done = subprocess.run(prefix + argv, input=stdin, capture_output=True, text=True,
                                  timeout=30)
        except FileNotFoundError as exc:
            raise DataPlaneError(f"{argv[0]} is missing (install the iptables package)") from exc
        except subprocess.TimeoutExpired as exc:
            raise DataPlaneError(f"{self.netns or 'host'}: {argv[0]} did not finish") from exc
        if check and done.returncode != 0:
            raise DataPlaneError(f"{self.netns or 'host'}: {' '.join(argv)}: "
                                 f"{done.stderr.strip()}")
        return done.stdout
