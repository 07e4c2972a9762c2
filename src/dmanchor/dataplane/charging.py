"""Per-flow charging (FM:2) on Linux, counted by nftables from a flow's first packet.

The ``ip6 dmanchor`` table's forward-hook chain puts every TCP or UDP
packet leaving on an access link in the ``downlink`` set and every one
entering from an access link in ``uplink``: a dynamic set adds an element
per 5-tuple at the flow's first packet, and the element's counter counts
from there, in the kernel.  So no flow has to be named ahead of time and
none is missed while a rule is being installed.  Each packet is charged
once, by the access router that delivers it to the MN (or receives it
from the MN): a packet only passing through, or tunnelled on, is not
counted.  Packets decapsulated from a tunnel are counted too - the
forward hook sees them even where conntrack does not.

Elements are keyed MN side first (MN address, peer address, protocol, MN
port, peer port) in both sets, the orientation of an uplink
:class:`FlowFilter`.  Counters moved in from another anchor (FM:2 state
transfer) are kept here as offsets - in memory for reading, and in the
``moved_up``/``moved_down`` sets (elements whose counters are set, never
counting traffic), so that with the kernel's own counters they outlive the
agent: a restarted agent keeps a table it finds built for its links.

The same table's ``ct state`` rule turns conntrack on in this namespace
(it stays off until a ruleset needs it), so ctnetlink reports the flows
(:mod:`.conntrack`).

``nft`` is spawned, ~10 ms a call: counters are read at FM:2 and on
request, never on the handover path.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Sequence
from ipaddress import IPv6Address
from typing import Any

from ..wire.types import FlowFilter, Prefix
from .api import DataPlaneError, FlowUsage

TABLE = "dmanchor"
"""The nftables table (family ip6) this module owns."""
KEY = "ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service"
SET_SIZE = 65535
"""Flows counted at once per direction; a packet of a flow beyond it is
forwarded but not charged."""
PROTOS = {"tcp": 6, "udp": 17}


def ruleset(links: Sequence[str]) -> str:
    """The whole table, replacing any earlier one (an ``nft -f`` script)."""
    access = ", ".join(json.dumps(x) for x in links)
    sets = "".join(
        f"  set {name} {{ type {KEY}; flags dynamic; counter; size {SET_SIZE}; }}\n"
        for name in ("uplink", "downlink"))
    sets += "".join(f"  set {name} {{ type {KEY}; counter; size {MAX_OFFSETS}; }}\n"
                    for name in MOVED)
    return (
        f"table ip6 {TABLE}\n"
        f"delete table ip6 {TABLE}\n"
        f"table ip6 {TABLE} {{\n"
        "  set access { type ifname; "
        + (f"elements = {{ {access} }}; " if links else "") + "}\n"
        + sets +
        "  chain charging {\n"
        "    type filter hook forward priority mangle; policy accept;\n"
        "    meta l4proto { tcp, udp } iifname @access update @uplink"
        " { ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport }\n"
        "    meta l4proto { tcp, udp } oifname @access update @downlink"
        " { ip6 daddr . ip6 saddr . meta l4proto . th dport . th sport }\n"
        # Any ct expression makes the kernel track connections here.
        "    ct state new counter\n"
        "  }\n"
        "}\n")


def _flow_of(val: list[Any]) -> FlowFilter:
    mn, peer, proto, mport, pport = val
    number = PROTOS.get(proto, proto) if isinstance(proto, str) else int(proto)
    return FlowFilter(Prefix(int(IPv6Address(mn)), 128), Prefix(int(IPv6Address(peer)), 128),
                      int(number), int(mport), int(pport))


def _delete_script(counted: dict[FlowFilter, FlowUsage],
                   sets: tuple[str, str] = ("uplink", "downlink")) -> str:
    """The nft script removing these flows' counters ('' if none counted)."""
    script = []
    for f, u in counted.items():
        for name, n in ((sets[0], u.packets_up), (sets[1], u.packets_down)):
            if n:
                script.append(f"delete element ip6 {TABLE} {name} {{ {_element(f)} }}")
    return "\n".join(script) + "\n" if script else ""


def _moved_script(flow: FlowFilter, old: FlowUsage | None, new: FlowUsage | None) -> str:
    """The nft script replacing ``flow``'s moved-in counters ``old`` by ``new``."""
    script = _delete_script({flow: old}, MOVED) if old is not None else ""
    if new is not None:
        for name, packets, nbytes in ((MOVED[0], new.packets_up, new.bytes_up),
                                      (MOVED[1], new.packets_down, new.bytes_down)):
            if packets:
                script += (f"add element ip6 {TABLE} {name} {{ {_element(flow)} "
                           f"counter packets {packets} bytes {nbytes} }}\n")
    return script


MOVED = ("moved_up", "moved_down")
"""The sets keeping FM:2 counters moved in from other anchors."""


def _parse_table(text: str, sets: tuple[str, str] = ("uplink", "downlink"),
                 ) -> dict[FlowFilter, FlowUsage]:
    """The flows counted in ``nft -j list table`` output (in ``sets``: up, down)."""
    out: dict[FlowFilter, FlowUsage] = {}
    for item in json.loads(text).get("nftables", []):
        st = item.get("set", {})
        up = st.get("name") == sets[0]
        if not up and st.get("name") != sets[1]:
            continue
        for e in st.get("elem", []):
            elem = e.get("elem", {})
            flow = _flow_of(elem["val"]["concat"])
            c = elem.get("counter", {})
            packets, nbytes = int(c.get("packets", 0)), int(c.get("bytes", 0))
            u = out.get(flow, FlowUsage())
            out[flow] = u._replace(
                **({"bytes_up": nbytes, "packets_up": packets} if up else
                   {"bytes_down": nbytes, "packets_down": packets}))
    return out


def _built_for(text: str, links: Sequence[str]) -> bool:
    """Whether a listed table is this version's, counting on ``links``."""
    sets: dict[str, Any] = {}
    for item in json.loads(text).get("nftables", []):
        if "set" in item:
            sets[item["set"].get("name")] = item["set"]
    if not {"access", "uplink", "downlink", *MOVED} <= set(sets):
        return False
    elements = sets["access"].get("elem", [])
    return sorted(str(e) for e in elements) == sorted(links)


def _element(flow: FlowFilter) -> str:
    return (f"{IPv6Address(flow.src.network)} . {IPv6Address(flow.dst.network)} . "
            f"{flow.proto} . {flow.sport} . {flow.dport}")


def _selects(want: FlowFilter, flow: FlowFilter) -> bool:
    return want.matches(flow.src.network, flow.dst.network, flow.proto, flow.sport, flow.dport)


MAX_OFFSETS = 65536
"""Flows whose counters moved in from other anchors (FM:2) are kept at most:
peers choose how many they send."""


class Charging:
    """The charged flows of one namespace: kernel counters plus moved-in offsets."""

    def __init__(self, netns: str | None) -> None:
        """``netns``: namespace name (``ip netns``), None for the current one."""
        self.netns = netns
        self._offsets: dict[FlowFilter, FlowUsage] = {}
        self._in_kernel: dict[FlowFilter, FlowUsage] = {}
        """The offsets as the kernel's ``moved`` sets hold them now: written
        behind the event loop's back (:meth:`_mirror`), never on its time."""
        self._mirroring: asyncio.Task[None] | None = None
        self.mirror_failures = 0
        """Writes of the offsets to the kernel that failed (retried at the next)."""
        self.offsets_refused = 0
        """FM:2 counters moved in for flows beyond :data:`MAX_OFFSETS`."""
        self.ready = False
        self.kept = False
        """Whether :meth:`start` kept a previous run's table (and charges)."""

    def start(self, links: Sequence[str]) -> None:
        """Load the table, counting on access ``links`` - or keep the one a
        previous run of the agent left, built for the same links: its
        counters and the offsets moved in go on (a restart loses no charge).
        """
        try:
            listed = self._run(["nft", "-j", "list", "table", "ip6", TABLE])
        except DataPlaneError:
            listed = ""  # (none yet)
        if listed and _built_for(listed, links):
            self._offsets = _parse_table(listed, MOVED)
            self._in_kernel = dict(self._offsets)
            self.kept = True
        else:
            self._run(["nft", "-f", "-"], stdin=ruleset(links))
        self.ready = True

    def counted(self) -> dict[FlowFilter, FlowUsage]:
        """Every flow the kernel counts now (no offsets); one ``nft`` call."""
        if not self.ready:
            return {}
        return _parse_table(self._run(["nft", "-j", "list", "table", "ip6", TABLE]))

    async def counted_async(self) -> dict[FlowFilter, FlowUsage]:
        """:meth:`counted` without blocking the event loop meanwhile."""
        if not self.ready:
            return {}
        return _parse_table(await self._run_async(["nft", "-j", "list", "table", "ip6", TABLE]))

    async def take_async(self, prefix: Prefix) -> dict[FlowFilter, FlowUsage]:
        """:meth:`take` without blocking the event loop meanwhile."""
        final, script = self._take_from(prefix, await self.counted_async())
        if script:
            await self._run_async(["nft", "-f", "-"], stdin=script)
        return final

    async def _run_async(self, argv: list[str], stdin: str | None = None) -> str:
        """:meth:`_run` as a coroutine (the process runs; the loop goes on)."""
        prefix = ["ip", "netns", "exec", self.netns] if self.netns is not None else []
        try:
            proc = await asyncio.create_subprocess_exec(
                *prefix, *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), 30)
        except FileNotFoundError as exc:
            raise DataPlaneError("nft is missing (install the nftables package)") from exc
        except TimeoutError as exc:
            proc.kill()
            raise DataPlaneError(f"{self.netns or 'host'}: nft did not finish") from exc
        if proc.returncode != 0:
            raise DataPlaneError(f"{self.netns or 'host'}: {' '.join(argv[:3])}: "
                                 f"{err.decode(errors='replace').strip()}")
        return out.decode()

    def of_prefix(self, prefix: Prefix, counted: dict[FlowFilter, FlowUsage] | None = None,
                  ) -> dict[FlowFilter, FlowUsage]:
        """The flows of MN addresses in ``prefix`` charged here (offsets
        included); ``counted``: the kernel's counters, if just read."""
        out = {f: u for f, u in (self.counted() if counted is None else counted).items()
               if prefix.covers(f.src)}
        for f, moved in self._offsets.items():
            if prefix.covers(f.src):
                have = out.get(f, FlowUsage())
                out[f] = FlowUsage(*(a + b for a, b in zip(have, moved, strict=True)))
        return out

    def take(self, prefix: Prefix) -> dict[FlowFilter, FlowUsage]:
        """Stop charging every flow of ``prefix`` here: their final usage
        (FM:2 moves it on); their counters go.  Two ``nft`` calls: one
        listing (its result serves both reads), one deleting."""
        final, script = self._take_from(prefix, self.counted())
        if script:
            self._run(["nft", "-f", "-"], stdin=script)
        return final

    def _take_from(self, prefix: Prefix, listed: dict[FlowFilter, FlowUsage],
                   ) -> tuple[dict[FlowFilter, FlowUsage], str]:
        """Of the kernel's counters ``listed``: ``prefix``'s flows' final
        usage, and the nft script clearing their counters (its offsets go)."""
        counted = {f: u for f, u in listed.items() if prefix.covers(f.src)}
        final = self.of_prefix(prefix, counted) if counted or self._offsets else {}
        for f in [f for f in self._offsets if prefix.covers(f.src)]:
            del self._offsets[f]
        self._mirror()
        return final, _delete_script(counted)

    def usage(self, want: FlowFilter) -> FlowUsage:
        """What the flows ``want`` selects used so far (counted plus moved in)."""
        total = [0, 0, 0, 0]
        for flow, u in (*self.counted().items(), *self._offsets.items()):
            if _selects(want, flow):
                total = [a + b for a, b in zip(total, u, strict=True)]
        return FlowUsage(*total)

    def untrack(self, flow: FlowFilter) -> FlowUsage:
        """Stop charging ``flow`` here: its final usage; its counters go."""
        counted = {f: u for f, u in self.counted().items() if _selects(flow, f)}
        total = [0, 0, 0, 0]
        for f, u in (*counted.items(), *self._offsets.items()):
            if _selects(flow, f):
                total = [a + b for a, b in zip(total, u, strict=True)]
        for f in [f for f in self._offsets if _selects(flow, f)]:
            del self._offsets[f]
        self._mirror()
        script = _delete_script(counted)
        if script:
            self._run(["nft", "-f", "-"], stdin=script)
        return FlowUsage(*total)

    def add_usage(self, flow: FlowFilter, moved: FlowUsage) -> None:
        """Add usage moved in from another anchor to ``flow``'s offset
        (at most :data:`MAX_OFFSETS` flows; more are counted, not kept)."""
        have = self._offsets.get(flow)
        if have is None and len(self._offsets) >= MAX_OFFSETS:
            self.offsets_refused += 1
            return
        total = FlowUsage(*(a + b for a, b in zip(have or FlowUsage(), moved, strict=True)))
        self._offsets[flow] = total
        self._mirror()

    def _mirror(self) -> None:
        """Write the offsets to the kernel (to outlive the agent): in a task
        beside the event loop when one runs - an nft process per FM:2 on the
        loop held a control command 0.5 s under load - else at once."""
        if not self.ready:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            script = self._moved_diff()
            if script:
                self._run(["nft", "-f", "-"], stdin=script)
            self._in_kernel = dict(self._offsets)
            return
        if self._mirroring is None or self._mirroring.done():
            self._mirroring = loop.create_task(self._mirror_async())

    def _moved_diff(self) -> str:
        """The nft script taking the kernel's offsets to the ones in memory."""
        return "".join(_moved_script(f, self._in_kernel.get(f), self._offsets.get(f))
                       for f in {*self._in_kernel, *self._offsets}
                       if self._in_kernel.get(f) != self._offsets.get(f))

    async def _mirror_async(self) -> None:
        while self._in_kernel != self._offsets:
            want = dict(self._offsets)
            script = self._moved_diff()
            try:
                await self._run_async(["nft", "-f", "-"], stdin=script)
            except DataPlaneError:
                self.mirror_failures += 1
                return
            self._in_kernel = want

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns is not None else []
        try:
            done = subprocess.run(prefix + argv, input=stdin, capture_output=True, text=True,
                                  timeout=30)
        except FileNotFoundError as exc:
            raise DataPlaneError(f"{argv[0]} is missing (install the nftables package)") from exc
        except subprocess.TimeoutExpired as exc:
            raise DataPlaneError(f"{self.netns or 'host'}: {argv[0]} did not finish") from exc
        if done.returncode != 0:
            raise DataPlaneError(f"{self.netns or 'host'}: {' '.join(argv)}: "
                                 f"{done.stderr.strip()}")
        return done.stdout
