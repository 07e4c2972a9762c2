"""The scenario runner's checks: what a ``check`` step and the expectations read
back from the running lab (routes, counters, metrics, the way home).

A mixin of :class:`~.emulator.Emulation` (the state below is the run's).
Every check waits for what it checks, up to the scenario's timeout: on a
loaded machine the timeline runs late, and a check times nothing.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from ipaddress import IPv6Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from ..dataplane.netlink import Netlink
from ..emulation.kea import KeaServer
from ..emulation.lab import Lab
from ..emulation.nodes import command
from ..wire.types import Prefix, entry_from_json
from .converge import stale
from .model import Scenario
from .plan import METRICS_PORT, Plan, pd_duid

if TYPE_CHECKING:
    from .emulator import _Flow, _Mn


class EmulationChecks:
    """Checks of a run (mixed into the emulator)."""

    sc: Scenario
    plan: Plan
    lab: Lab
    kea: KeaServer | None
    flows: dict[str, _Flow]
    mns: dict[str, _Mn]
    checks: dict[str, bool]
    progress: Callable[[str], None]

    if TYPE_CHECKING:
        def _sock(self, name: str) -> Path: ...
        def _nl(self, node: str) -> Netlink: ...
        def _index(self, node: str, ifname: str) -> int: ...
        def _lease_holder(self, prefix: Prefix) -> bytes | None: ...

    def _at_least(self, count: Callable[[], int], want: int) -> int:
        """``count()`` once it reaches ``want``, or at the scenario's timeout:
        a check waits for what it checks (a loaded machine is slower), it
        does not time it."""
        deadline = time.monotonic() + self.sc.timeout
        got = count()
        while got < want and time.monotonic() < deadline:
            time.sleep(0.05)
            got = count()
        return got

    def _until(self, read: Callable[[], str | None], want: set[str | None]) -> str | None:
        """``read()`` once it is one of ``want``, or at the scenario's timeout
        (as :meth:`_at_least`: under load the timeline runs late, and a
        route checked at 1.6 s may follow a move the emulator made at 1.5 s)."""
        deadline = time.monotonic() + self.sc.timeout
        got = read()
        while got not in want and time.monotonic() < deadline:
            time.sleep(0.05)
            got = read()
        return got

    def _check(self, a: dict[str, Any]) -> None:
        kind = a["check"]
        if kind == "route":
            f = self.flows[a["flow"]]
            node, towards = a["node"], a["towards"]
            if a.get("uplink"):
                got = self._until(lambda: self._uplink(node, f.prefix), {towards})
                self.checks[f"{node} sends the uplink from {f.prefix} towards {towards} "
                            f"(it does: {got or 'directly'})"] = got == towards
                return
            want = {towards, self.plan.next_hop.get((node, towards))}
            got = self._until(lambda: self._forwarding(node, f.prefix), want)
            self.checks[f"{node} sends {a['flow']}'s {f.prefix} towards {towards} "
                        f"(it does: {got or 'nowhere'})"] = got in want
        elif kind == "messages":
            def sent() -> int:
                return sum(fn.get("sent", {}).get(a["type"], 0) for fn in
                           command(self._sock(a["node"]), {"cmd": "stats"}).values())
            n = self._at_least(sent, a["min"])
            said = ""
            if n < a["min"]:
                # What else the function counted (a failed or skipped send).
                said = "; " + json.dumps([
                    fn["counters"] for fn in command(self._sock(a["node"]),
                                                     {"cmd": "stats"}).values()
                    if a["type"] in fn.get("sent", {}) and fn.get("counters")])
            self.checks[f"{a['node']} sent {a['type']} >= {a['min']} (it did: {n}{said})"] = \
                n >= a["min"]
        elif kind == "metrics":
            self._check_metrics(a)
        elif kind == "converged":
            left = self._until(lambda: "; ".join(self._stale()) or None, {None})
            self.checks["every node's state settled where the MNs are"
                        + (f" (left: {left})" if left else "")] = left is None
        elif kind == "lease":
            self._check_lease(a)
        elif kind == "counter":
            n = self._at_least(lambda: int(command(self._sock(a["node"]), {
                "cmd": "counters"}).get(a["name"], 0)), a["min"])
            self.checks[f"{a['node']} counted {a['name']} >= {a['min']}"] = n >= a["min"]
        else:
            f = self.flows[a["flow"]]
            self.progress(f"waiting for {f.prefix} to return home (FM:3-3)")
            deadline = time.monotonic() + self.sc.timeout
            back = pooled = False
            while not (back and pooled) and time.monotonic() < deadline:
                time.sleep(0.2)
                back = back or self._forgotten(f.prefix)
                pooled = self.kea is None or self._lease_holder(f.prefix) is None
            self.checks[f"{f.prefix} back to its home network (FM:3-3)"] = back
            if self.kea is not None:
                self.checks[f"{f.prefix} released to Kea's pool (FM:3-3)"] = pooled
            if back:
                self._let_go(self.sc.flows[a["flow"]].dst, f.prefix)

    def _stale(self) -> list[str]:
        """What the nodes' kernels still hold for places their MNs left."""
        where = {p: st.router for st in self.mns.values() if st.router is not None
                 for p in (*st.prefixes, *st.continuity)}
        owner = {p: mn for mn, st in self.mns.items() for p in (*st.prefixes, *st.continuity)}
        names = self.plan.names()

        def resolve(hop: IPv6Address) -> str | None:
            return names.get(str(hop)) or next(
                (mn for p, mn in owner.items() if p.contains(int(hop))), None)
        entries = {node: [entry_from_json(e) for e in command(self._sock(node), {"cmd": "entries"})]
                   for node, spec in self.sc.nodes.items()
                   if spec.anchor is not None or spec.fmdp}  # (the nodes with a data plane)
        return stale(entries, where, owner, resolve)

    def _check_lease(self, a: dict[str, Any]) -> None:
        """Kea's lease of the flow's prefix names node ``at`` (FM:3-2)."""
        f, at = self.flows[a["flow"]], a["at"]
        want = pd_duid(self.plan.nodes[at].anchor_index).hex()
        def holder() -> str | None:
            h = self._lease_holder(f.prefix)
            return h.hex() if h is not None else None
        got = self._until(holder, {want}) if self.kea is not None else None
        self.checks[f"{f.prefix}'s DHCPv6-PD lease is {at}'s (FM:3-2)"] = got == want

    def _check_metrics(self, a: dict[str, Any]) -> None:
        """A Prometheus metric the node serves, scraped as Prometheus would."""
        def value() -> int:
            return int(sum(s.value for fam in text_string_to_metric_families(
                self._scrape(a["node"])) for s in fam.samples
                if s.name == a["name"] and all(s.labels.get(k) == v
                                              for k, v in a["labels"].items())))
        labels = ",".join(f'{k}="{v}"' for k, v in a["labels"].items())
        what = f"{a['node']} serves {a['name']}{{{labels}}}"
        if a["max"] is not None:
            n = value()
            self.checks[f"{what} <= {a['max']:g} (it does: {n})"] = n <= a["max"]
        else:
            n = self._at_least(value, int(a["min"]))
            self.checks[f"{what} >= {a['min']:g} (it does: {n})"] = n >= a["min"]

    def _scrape(self, node: str) -> str:
        """GET /metrics from ``node`` (its control address, inside the lab)."""
        with contextlib.closing(self.lab.socket(node, socket.SOCK_STREAM)) as sock:
            sock.settimeout(5.0)
            sock.connect((self.plan.nodes[node].control, METRICS_PORT))
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode().partition("\r\n\r\n")[2]

    def _let_go(self, mn: str, prefix: Prefix) -> None:
        """After a revert: the MN's stack drops its address in ``prefix`` once
        the valid lifetime the last RA gave it has run out (no RA names it
        any more); the check says how long after the revert that was."""
        reverted = time.monotonic()
        deadline = reverted + self.sc.timeout
        index = self._index(mn, "br0")
        held = True
        while held and time.monotonic() < deadline:
            held = any(prefix.covers(Prefix.host(x.address))
                       for x in self._nl(mn).addresses(index))
            if held:
                time.sleep(0.05)
        took = f"{time.monotonic() - reverted:.1f} s after the revert" if not held else \
            f"still there after {self.sc.timeout:.0f} s"
        self.checks[f"{mn} stopped using {prefix} ({took})"] = not held

    def _forwarding(self, node: str, prefix: Prefix) -> str:
        """Where ``node``'s FIB sends ``prefix``: the anchor an SRv6 tunnel
        ends at, the neighbour a route leads to, or the node at the other
        end of the link it is on ('' if none of these)."""
        shown = self.lab.run(node, "ip", "-6", "route", "show", "exact", str(prefix),
                             check=False).split()
        if not shown:  # no route of its own: the covering route the FIB would use
            shown = self.lab.run(node, "ip", "-6", "route", "get", str(prefix.address + 1),
                                 check=False).split()
        if "segs" in shown:
            sid = IPv6Address(shown[shown.index("segs") + 3])
            dpa = sid - 1 if int(sid) & 1 else sid  # a flush SID is its DPA + 1
            anchor = next((n for n, np in self.plan.nodes.items() if np.dpa == dpa), "")
            # Or a host-based MN's own SID, in one of its prefixes.
            return anchor or next((n for n, st in self.mns.items()
                                   if any(p.contains(int(sid)) for p in st.prefixes)), "")
        if "via" in shown:
            via = shown[shown.index("via") + 1]
            return next((i.peer for i in self.plan.nodes[node].ifaces
                         if self.plan.address_towards(node, i.peer) == via), "")
        if "dev" in shown:  # on a link (an access link: its MN)
            dev = shown[shown.index("dev") + 1]
            return next((i.peer for i in self.plan.nodes[node].ifaces if i.name == dev), "")
        return ""

    def _uplink(self, node: str, prefix: Prefix) -> str:
        """The anchor ``node`` reverse-tunnels packets from ``prefix`` to, read
        back from its kernel by the node ('' if none: they leave directly)."""
        for e in command(self._sock(node), {"cmd": "entries"}):
            src = Prefix.parse(e["flow"]["src"]) if "flow" in e else None
            if e["kind"] == "TUNNEL" and src is not None and src.length and src.covers(prefix):
                dpa = IPv6Address(e["next_hop"])
                return next((n for n, np in self.plan.nodes.items() if np.dpa == dpa), "")
        return ""

    def _forgotten(self, prefix: Prefix) -> bool:
        """No router's FIB has a route for exactly ``prefix``; no anchor an entry."""
        for name, np in self.plan.nodes.items():
            if np.spec.kind != "router":
                continue
            if self.lab.run(name, "ip", "-6", "route", "show", "exact", str(prefix)).strip():
                return False
            if np.spec.anchor is not None:
                entries = command(self._sock(name), {"cmd": "entries"})
                if any(e["prefix"] == str(prefix) for e in entries):
                    return False
        return True
