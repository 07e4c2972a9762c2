"""The control socket's commands: one handler each, in a registry keyed by name.

A node's ``control`` UNIX socket takes JSON lines and answers each with one
line, ``{"ok": ...}`` or ``{"error": "..."}``.  The access router needs none
of them to work (it hears its MNs on its access links); they are the
operator's and the test harness's handles::

    {"cmd": "attach", "mn": "02:00:00:00:00:01", "link": "mn2", "own": ["2001:db8:2:1::/64"],
     "previous": {"2001:db8:1:1::/64": [{"src": "...", "dst": "...", "proto": 17,
                                          "sport": 5001, "dport": 40000}]}}
    {"cmd": "detach", "mn": "02:00:00:00:00:01"}
    {"cmd": "link_going_down", "link": "mn1"}   (an L2 trigger, RFC 5184)
    {"cmd": "link_going_down", "link": "mn1", "target": "ar2"}   (predictive)
    {"cmd": "entries"}                  -> the kernel's dmanchor entries (read back)
    {"cmd": "usage", "flows": [...]}    -> FM:2 charging counters (open and ended flows)
    {"cmd": "stats"}                    -> signalling counters of every function
    {"cmd": "counters"}                 -> the data plane's counters (drops, markers, flow watch)
    {"cmd": "delegations"}              -> DHCPv6-PD: prefix -> seconds left
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .dataplane.api import DataPlaneError
from .transport.reliable import Endpoint
from .transport.service import ServiceCore
from .wire.errors import WireError
from .wire.types import Prefix, entry_to_json, flow_from_json

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("dmanchor.node")

Handler = Callable[["Node", dict[str, Any], float], Any]


@dataclass(frozen=True, slots=True)
class Command:
    """A registered command."""

    handler: Handler
    anchor: bool
    """It drives the anchor agent: refused without one, and the agent is
    pumped after it."""


COMMANDS: dict[str, Command] = {}
"""Command name -> handler (filled by :func:`command`)."""


def command(name: str, anchor: bool = True) -> Callable[[Handler], Handler]:
    """Register the decorated function as command ``name``."""
    def register(fn: Handler) -> Handler:
        if name in COMMANDS:
            raise RuntimeError(f"command {name!r} registered twice")
        COMMANDS[name] = Command(fn, anchor)
        return fn
    return register


def run_command(node: Node, line: bytes, now: float) -> dict[str, Any]:
    """One JSON line: ``{"ok": result}`` or ``{"error": why}``; never raises
    on bad input."""
    log.debug("command %s", line[:80])
    try:
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise ValueError("a command is a JSON object")
        name = doc.get("cmd")
        cmd = COMMANDS.get(name) if isinstance(name, str) else None
        if cmd is None:
            raise ValueError(f"unknown command {name!r}")
        if cmd.anchor and node.anchor is None:
            raise ValueError("this node hosts no anchor")
        return {"ok": cmd.handler(node, doc, now)}
    except (ValueError, KeyError, TypeError, WireError, DataPlaneError) as exc:
        log.warning("command refused: %s", exc)
        return {"error": str(exc)}


def _access_link(node: Node, link: object) -> str:
    if link not in node.cfg.access_links:
        raise ValueError(f"{link!r} is not an access link of this node")
    return str(link)


@command("attach")
def _attach(node: Node, doc: dict[str, Any], now: float) -> Any:
    assert node.anchor is not None
    prev = {Prefix.parse(p): [flow_from_json(f) for f in flows]
            for p, flows in doc.get("previous", {}).items()}
    own = [Prefix.parse(p) for p in doc.get("own", [])]
    link = str(doc["link"])
    node.anchor.attach(str(doc["mn"]), link, own, prev, now)
    # Tell the MN (SLAAC): its own prefixes preferred, the previous ones
    # kept valid but deprecated - new flows take the new prefix.
    if node.access is not None and link in node.cfg.access_links:
        node.access.advertise_mns(link)
    return True


@command("detach")
def _detach(node: Node, doc: dict[str, Any], now: float) -> Any:
    assert node.anchor is not None
    node.anchor.detach(str(doc["mn"]), now)
    return True


@command("link_going_down")
def _link_going_down(node: Node, doc: dict[str, Any], now: float) -> Any:
    # An L2 trigger (RFC 5184's Link Going Down, e.g. a station's
    # disassociation): hold before the link is gone, so nothing in flight
    # is lost; the link event that follows finds no one.
    # With ``target`` (the router the L2 names, e.g. the BSS a station
    # transitions to), that router is told first (a HI: predictive).
    link = _access_link(node, doc["link"])
    target = doc.get("target")
    assert node.access is not None and node.anchor is not None
    if target is not None and (not isinstance(target, str)
                               or node.anchor.router_dpa(target) is None):
        raise ValueError(f"{target!r} is not an access router this node knows")
    return node.access.going_down(link, target)


@command("entries", anchor=False)
def _entries(node: Node, doc: dict[str, Any], now: float) -> Any:
    # What the kernel has (read back), not what the cores asked for: an
    # anchor's data plane, or an FM-DP's only.
    if node.dataplane is None:
        raise ValueError("this node runs no data plane")
    return [entry_to_json(e) for e in node.dataplane.entries()]


@command("counters", anchor=False)
def _counters(node: Node, doc: dict[str, Any], now: float) -> Any:
    # The data plane's (an anchor's, or an FM-DP's only), and the access side's.
    if node.dataplane is None:
        return {}
    out = dict(node.dataplane.counters())
    if node.flows is not None:
        # Conntrack events the kernel dropped (a sweep makes up for them),
        # and sweeps that failed.
        out["conntrack-overruns"] = node.flows.overruns
        out["flow-sweep-failed"] = node.flows.failures
    if node.access is not None:
        out["heard-while-leaving"] = node.access.stale
        out["unreachable"] = node.access.unreachable  # departures found by NUD
    return out


@command("delegations")
def _delegations(node: Node, doc: dict[str, Any], now: float) -> Any:
    # Prefix -> seconds its DHCPv6-PD lease has left (none without [anchor.pd]).
    held = node.pd.core.held(now) if node.pd is not None else {}
    return {str(p): round(left, 1) for p, left in held.items()}


@command("usage")
def _usage(node: Node, doc: dict[str, Any], now: float) -> Any:
    assert node.anchor is not None
    return [node.anchor.usage(flow_from_json(f))._asdict() for f in doc.get("flows", [])]


@command("stats", anchor=False)
def _stats_cmd(node: Node, doc: dict[str, Any], now: float) -> Any:
    out = {name: stats(driver.core) for name, driver in node.drivers.items()}
    if node.pd is not None:
        out["pd"] = {"counters": dict(node.pd.core.counters)}
    ctrl = node.controller
    if ctrl is not None and "controller" in out:
        # FM:5-2 as last reported by each data plane, and the fallback's counts.
        out["controller"]["counters"] = {**ctrl.counters, **ctrl.access.counters}
        out["controller"]["dataplanes"] = {
            name: {"age": round(now - r.seen, 3), "down": name in ctrl.down,
                   "active": r.load.active, "load": r.load.percent,
                   "state": r.state._asdict() if r.state is not None else None}
            for name, r in ctrl.status.items()}
    if node.cfg.kea is not None:
        done = node.events.kea_done
        out["kea"] = {"sent": {"lease6-update": done["lease6-update"]}, "counters": dict(done)}
    return out


def stats(core: object) -> dict[str, Any]:
    """Signalling counters of one function (by message type name)."""
    ep = getattr(core, "endpoint", None)
    if not isinstance(ep, Endpoint):
        return {}
    st = ep.stats
    return {
        "sent": {t.name: n for t, n in st.sent.items()},
        "bytes_sent": {t.name: n for t, n in st.bytes_sent.items()},
        "received": {t.name: n for t, n in st.received.items()},
        "drops": dict(st.drops),
        "refused": dict(core.refused) if isinstance(core, ServiceCore) else {},
        "failed": dict(core.failed) if isinstance(core, ServiceCore) else {},
        "retransmissions": st.retransmissions,
    }
