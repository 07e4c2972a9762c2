"""Scenario files: the draft's configurations and solutions as data.

A scenario (YAML) names its nodes and the functions each hosts, the links
between them, a timeline of what happens (attach, move, flows, faults) and
what the report must show.  :func:`load` validates it whole; every error
names the file, the line and the field, and says what was expected.

The format is documented field by field on the dataclasses below and in
``docs/scenarios.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fm.anchor_model import MODES
from ..wire.types import Prefix
from . import walk
from .fields import (
    Doc,
    PathKey,
    ScenarioError,
    Table,
    as_bool,
    as_int,
    as_list,
    as_mapping,
    as_num,
    as_prefix,
    as_str,
    count_or_share,
    one_of,
)

# -- The model ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnchorSpec:
    """An anchor agent (FM-CP + FM-DP + LMc of an access router or FW)."""

    prefix: Prefix | None = None
    """The network it anchors (its own /48; None for a forwarding switch)."""
    mode: str = "tunnel"
    """``tunnel`` (4.1.2), ``switch`` (4.2.1) or ``bgp`` (4.2 by routing)."""
    parent: str | None = None
    """For a forwarding switch (4.2.2/4.2.3): the AR above it."""
    lifetime: int = 600
    """Lifetime of its bindings and of a visiting prefix, seconds."""
    hold_timeout: float = 1.0
    """Longest hold of a new path waiting for the old one's end marker, seconds."""
    buffer_timeout: float = 2.0
    """Longest hold of a departed MN's packets (FM:6-1) before they are dropped, seconds."""
    lm: str | None = None
    """Node whose LMs or LMp it uses (default: the scenario's LMs)."""
    pd: bool = False
    """Takes its MN prefixes by DHCPv6-PD from the scenario's Kea (draft 4.2.1)."""
    reverse_tunnel: bool = False
    """Tunnel mode: send an MN's uplink from a visiting prefix back through its anchor."""
    cp: str | None = None
    """An AR whose control plane is apart (Fig 1c/1d as drawn): the node
    whose controller is its FM-CP; this node then runs an FM-DP only, and
    serves MNs through its forwarding switches."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One namespace and the functions it hosts."""

    name: str
    kind: str
    """``router``, ``host`` (a correspondent node) or ``mn`` (a mobile node)."""
    anchor: AnchorSpec | None = None
    controller: bool = False
    """Hosts the mobility controller (FM:4 registry; central FM-CP)."""
    lms: bool = False
    """Hosts an LMs.  Several LMs form an LM:2 pool (Fig 1a)."""
    lmp: bool = False
    """Hosts an LMp in front of the scenario's LMs (Fig 1d)."""
    fmdp: bool = False
    """Runs an FM-DP the central FM-CP programs (FM:5-1)."""
    bgp: int | None = None
    """Runs BIRD 2 with this AS number (draft 4.2 with BGP)."""
    dhcp: Prefix | None = None
    """Runs Kea serving this PD pool on the DHCP link of the ``pd`` anchors."""
    lease_cmds: bool = False
    """With ``dhcp``: the controller moves delegations itself through this
    Kea's lease_cmds (``lease6-update``) when it switches a prefix."""
    agent: bool = False
    """An MN doing its own mobility signalling (host-based, Fig 2a/2b)."""
    agent_lm: str | None = None
    """Node whose LMs or LMp the MN's agent updates (Fig 2b: an LMp)."""


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A link between two nodes (a veth pair)."""

    a: str
    b: str
    mtu: int = 1600
    """MTU; core links default to 1600 so SRv6-encapsulated 1500-byte packets fit."""


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """Traffic from a host to an MN (downlink), started by the timeline."""

    name: str
    kind: str
    """``udp`` (sequenced probe) or ``tcp`` (a stream whose bytes are checked)."""
    src: str
    dst: str
    duration: float
    rate: float = 1000.0
    """UDP packets per second."""
    continuity: bool = False
    """Needs session continuity: keeps its address across moves (FM:3-1)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One timeline entry: at ``at`` seconds, do ``action`` with ``args``."""

    at: float
    action: str
    """``attach``, ``move`` (with ``overlap``: make-before-break - the MN's
    new radio attaches while its old one stays up that many seconds more,
    then goes: a ``leave`` step, added by the parser), ``flow``, ``close``,
    ``kill``, ``restart``, ``cut``, ``attack`` (a host sends one forged message: :mod:`.attacks`) or
    ``check`` (``route``: ``node`` forwards ``flow``'s address towards node
    ``towards``, or with ``uplink: true`` what the MN sends from that address
    (a reverse tunnel); ``reverted``: within the scenario's timeout no router nor
    anchor keeps any state for ``flow``'s prefix (FM:3-3); ``counter``:
    anchor ``node``'s data-plane counter ``name`` is at least ``min``;
    ``messages``: node ``node`` has sent at least ``min`` messages of ``type``
    since its process started; ``metrics``: the samples of Prometheus metric
    ``name`` that ``node`` serves (matching ``labels``) add up to at least
    ``min``, or at most ``max``)."""
    args: dict[str, Any]
    line: int


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole scenario."""

    name: str
    title: str
    covers: tuple[str, ...]
    """Draft labels it exercises (``4.1.2``, ``Fig 1b``, ``FM:6-2`` ...)."""
    nodes: dict[str, NodeSpec]
    links: tuple[LinkSpec, ...]
    timeline: tuple[Step, ...]
    flows: dict[str, FlowSpec]
    expect: dict[str, dict[str, Any]]
    """Per flow: outcomes the report must show (``lost: 0``, ``tcp: unbroken``,
    ``address: kept|new``); ``checks``: named checks that must hold."""
    source: str = ""
    timeout: float = 10.0
    """Longest wait for an expected end state (e.g. the FM:3-3 revert)."""

    def anchors(self) -> list[NodeSpec]:
        """Nodes hosting an anchor agent, in file order."""
        return [n for n in self.nodes.values() if n.anchor is not None]

    def of_kind(self, kind: str) -> list[str]:
        """Names of the nodes of one kind."""
        return [n.name for n in self.nodes.values() if n.kind == kind]


MAX_OVERLAP = 10.0
"""Seconds a make-before-break move keeps the old radio at most."""
ACTIONS = ("attach", "move", "flow", "close", "kill", "restart", "cut", "heal", "loss",
           "attack", "check")
CHECKS = ("route", "reverted", "counter", "messages", "metrics", "converged", "lease")
FUNCTIONS = ("anchor", "controller", "lms", "lmp", "fmdp", "bgp", "dhcp")


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror}") from exc
    return parse(text, str(p))


def parse(text: str, source: str = "<scenario>") -> Scenario:
    """Validate scenario text (``source`` names it in errors)."""
    doc = Doc(source, text)
    if isinstance(doc.data, dict) and "walk" in doc.data:
        walk.expand(doc)
    top = Table(doc, (), doc.data)
    name = top.get("scenario", lambda v: str(v), required=True)
    title = top.get("title", as_str, required=True)
    covers: tuple[str, ...] = top.get("covers", lambda v: tuple(str(x) for x in as_list(v)), ())
    nodes = _nodes(doc, top)
    links = _links(doc, top, nodes)
    flows: dict[str, FlowSpec] = {}
    steps = _timeline(doc, top, nodes, flows)
    expect = _expect(doc, top, flows)
    timeout = top.get("timeout", as_num, 10.0)
    top.finish()
    _check_topology(doc, nodes, links)
    return Scenario(name, title, covers, nodes, links, steps, flows, expect, source,
                    timeout)




def _nodes(doc: Doc, top: Table) -> dict[str, NodeSpec]:
    table = top.sub("nodes")
    nodes: dict[str, NodeSpec] = {}
    for name in table.value:
        table.used.add(name)
        if not name.isidentifier() or len(name) > 8:
            raise doc.error(("nodes", name), "node names are identifiers of at most 8 characters")
        f = Table(doc, ("nodes", name), table.value[name] or {})
        kind = f.get("kind", one_of("router", "host", "mn"), "router")
        anchor = None
        if "anchor" in f.value:
            a = f.sub("anchor")
            anchor = AnchorSpec(
                prefix=a.opt("prefix", as_prefix),
                mode=a.get("mode", one_of(*MODES), "tunnel"),
                parent=a.opt("parent", as_str),
                lifetime=int(a.get("lifetime", as_int, 600)),
                hold_timeout=a.get("hold_timeout", as_num, 1.0),
                buffer_timeout=a.get("buffer_timeout", as_num, 2.0),
                lm=a.opt("lm", as_str),
                pd=a.get("pd", as_bool, False),
                reverse_tunnel=a.get("reverse_tunnel", as_bool, False),
                cp=a.opt("cp", as_str),
            )
            a.finish()
            if anchor.prefix is None and anchor.parent is None:
                raise doc.error(("nodes", name, "anchor"),
                                "an anchor needs its prefix, or a parent if it is a FW")
        agent, agent_lm = False, None
        if "agent" in f.value:
            g = f.sub("agent")
            agent, agent_lm = True, g.opt("lm", as_str)
            g.finish()
            if kind != "mn":
                raise doc.error(("nodes", name, "agent"), "only an MN runs a mobility agent")
        spec = NodeSpec(
            name, kind, anchor,
            controller=f.get("controller", as_bool, False),
            lms=f.get("lms", as_bool, False),
            lmp=f.get("lmp", as_bool, False),
            fmdp=f.get("fmdp", as_bool, False),
            bgp=f.opt("bgp", as_int),
            dhcp=f.opt("dhcp", as_prefix),
            lease_cmds=f.get("lease_cmds", as_bool, False),
            agent=agent,
            agent_lm=agent_lm,
        )
        f.finish()
        if spec.lease_cmds and spec.dhcp is None:
            raise doc.error(("nodes", name, "lease_cmds"), "needs dhcp on the same node (Kea)")
        hosted = [fn for fn in FUNCTIONS if getattr(spec, fn) not in (None, False)]
        if kind != "router" and hosted:
            raise doc.error(("nodes", name, hosted[0]), f"a {kind} hosts no network function")
        nodes[name] = spec
    if not nodes:
        raise doc.error(("nodes",), "at least one node is required")
    for n in nodes.values():
        if n.agent_lm is not None and n.agent_lm not in nodes:
            raise doc.error(("nodes", n.name, "agent", "lm"), f"no node {n.agent_lm!r}")
        spec_a = n.anchor
        if spec_a is None:
            continue
        for fld, target in (("parent", spec_a.parent), ("lm", spec_a.lm), ("cp", spec_a.cp)):
            if target is not None and target not in nodes:
                raise doc.error(("nodes", n.name, "anchor", fld), f"no node {target!r}")
        if spec_a.cp is not None and (not nodes[spec_a.cp].controller or spec_a.prefix is None
                                      or spec_a.parent is not None or spec_a.mode != "tunnel"):
            raise doc.error(("nodes", n.name, "anchor", "cp"),
                            "cp names the controller's node, for an AR (a prefix, no "
                            "parent) of the hierarchy (4.2.2)")
        if spec_a.parent is not None:
            up = nodes[spec_a.parent].anchor
            if up is None or up.prefix is None:
                raise doc.error(("nodes", n.name, "anchor", "parent"),
                                "the parent must be an AR anchor")
    return nodes


def _links(doc: Doc, top: Table, nodes: dict[str, NodeSpec]) -> tuple[LinkSpec, ...]:
    raw = top.get("links", as_list, required=True)
    out = []
    seen: set[frozenset[str]] = set()
    for i, item in enumerate(raw):
        f = Table(doc, ("links", i), item)
        a, b = f.get("a", as_str, required=True), f.get("b", as_str, required=True)
        for end, n in (("a", a), ("b", b)):
            if n not in nodes:
                raise doc.error(("links", i, end), f"no node {n!r}")
        if a == b or frozenset((a, b)) in seen:
            raise doc.error(("links", i), f"link {a}-{b} is a loop or a duplicate")
        seen.add(frozenset((a, b)))
        mtu = int(f.get("mtu", as_int, 1500 if "mn" in (nodes[a].kind, nodes[b].kind) else 1600))
        if not 1280 <= mtu <= 9000:
            raise doc.error(("links", i, "mtu"), "expected 1280..9000")
        f.finish()
        if nodes[a].kind == "mn":
            a, b = b, a  # access links are written router -> MN
        out.append(LinkSpec(a, b, mtu))
    return tuple(out)


def _timeline(doc: Doc, top: Table, nodes: dict[str, NodeSpec],
              flows: dict[str, FlowSpec]) -> tuple[Step, ...]:
    raw = top.get("timeline", as_list, required=True)
    steps: list[Step] = []
    leaving: list[tuple[Step, float]] = []  # make-before-break: each old radio's end
    last = 0.0
    for i, item in enumerate(raw):
        f = Table(doc, ("timeline", i), item)
        at = f.get("at", as_num, required=True)
        if at < last:
            raise doc.error(("timeline", i, "at"), f"steps go in time order ({at} < {last})")
        last = at
        actions = [k for k in item if k != "at"]
        if len(actions) != 1 or actions[0] not in ACTIONS:
            raise doc.error(("timeline", i), f"expected 'at' and one of {', '.join(ACTIONS)}")
        action = actions[0]
        args = Table(doc, ("timeline", i, action), item[action])
        f.used.add(action)
        f.finish()
        line = doc.lines.get(("timeline", i), 0)
        if action in ("attach", "move"):
            mn, to = args.get("mn", as_str, required=True), args.get("to", as_str, required=True)
            if nodes.get(mn) is None or nodes[mn].kind != "mn":
                raise doc.error(("timeline", i, action, "mn"), f"{mn!r} is not an MN node")
            if nodes.get(to) is None or nodes[to].anchor is None:
                raise doc.error(("timeline", i, action, "to"), f"{to!r} is not an anchor node")
            overlap = args.opt("overlap", as_num) if action == "move" else None
            if overlap is not None and not 0 < overlap <= MAX_OVERLAP:
                raise doc.error(("timeline", i, action, "overlap"),
                                f"expected seconds, more than 0 and at most {MAX_OVERLAP}")
            if overlap is not None and nodes[mn].agent:
                raise doc.error(("timeline", i, action, "overlap"),
                                "a host-based MN's moves break before they make")
            moved: dict[str, Any] = {"mn": mn, "to": to}
            if overlap is not None:
                moved["overlap"] = overlap
                leaving.append((Step(at + overlap, "leave", {"mn": mn}, line), at))
            steps.append(Step(at, action, moved, line))
        elif action == "flow":
            name = args.get("name", as_str, required=True)
            if name in flows:
                raise doc.error(("timeline", i, action, "name"), f"flow {name!r} defined twice")
            spec = FlowSpec(
                name, args.get("kind", one_of("udp", "tcp"), required=True),
                args.get("from", as_str, required=True), args.get("to", as_str, required=True),
                args.get("duration", as_num, required=True), args.get("rate", as_num, 1000.0),
                args.get("continuity", as_bool, False))
            if nodes.get(spec.src) is None or nodes[spec.src].kind != "host":
                raise doc.error(("timeline", i, action, "from"), f"{spec.src!r} is not a host")
            if nodes.get(spec.dst) is None or nodes[spec.dst].kind != "mn":
                raise doc.error(("timeline", i, action, "to"), f"{spec.dst!r} is not an MN")
            flows[name] = spec
            steps.append(Step(at, action, {"flow": name}, line))
        elif action == "close":
            names = args.get("flows", as_list, required=True)
            for n in names:
                if n not in flows:
                    raise doc.error(("timeline", i, action, "flows"), f"no flow {n!r} yet")
            steps.append(Step(at, action, {"flows": list(names)}, line))
        elif action in ("kill", "restart"):
            node = args.get("node", as_str, required=True)
            if node not in nodes or nodes[node].kind != "router":
                raise doc.error(("timeline", i, action, "node"), f"{node!r} is not a router")
            steps.append(Step(at, action, {"node": node}, line))
        elif action == "loss":
            percent = args.get("percent", as_num, required=True)
            if not 0 <= percent <= 100:
                raise doc.error(("timeline", i, action, "percent"), "expected 0..100")
            steps.append(Step(at, action, {"percent": percent}, line))
        elif action in ("cut", "heal"):
            a, b = args.get("a", as_str, required=True), args.get("b", as_str, required=True)
            for end, n in (("a", a), ("b", b)):
                if n not in nodes:
                    raise doc.error(("timeline", i, action, end), f"no node {n!r}")
            steps.append(Step(at, action, {"a": a, "b": b}, line))
        elif action == "attack":
            steps.append(Step(at, action, _attack(doc, args, ("timeline", i, action), nodes,
                                                  flows), line))
        else:  # check
            kind = [k for k in args.value if k in CHECKS]
            if len(kind) != 1 or len(args.value) != 1:
                raise doc.error(("timeline", i, action), f"expected one of {', '.join(CHECKS)}")
            c = args.sub(kind[0])
            chk: dict[str, Any] = {"check": kind[0]}
            if kind[0] in ("route", "reverted", "lease"):
                chk["flow"] = c.get("flow", as_str, required=True)
                if chk["flow"] not in flows:
                    raise doc.error(("timeline", i, action, kind[0], "flow"),
                                    f"no flow {chk['flow']!r} yet")
            if kind[0] in ("route", "counter", "messages", "metrics"):
                chk["node"] = c.get("node", as_str, required=True)
                if chk["node"] not in nodes:
                    raise doc.error(("timeline", i, action, kind[0], "node"),
                                    f"no node {chk['node']!r}")
            if kind[0] == "route":
                chk["uplink"] = c.get("uplink", as_bool, False)
                chk["towards"] = c.get("towards", as_str, required=True)
                if chk["towards"] not in nodes:
                    raise doc.error(("timeline", i, action, kind[0], "towards"),
                                    f"no node {chk['towards']!r}")
            if kind[0] == "lease":
                chk["at"] = c.get("at", as_str, required=True)
                holder = nodes.get(chk["at"])
                if holder is None or holder.anchor is None or not holder.anchor.pd:
                    raise doc.error(("timeline", i, action, kind[0], "at"),
                                    f"{chk['at']!r} is no anchor with pd")
            if kind[0] == "counter":
                chk["name"] = c.get("name", as_str, required=True)
                chk["min"] = int(c.get("min", as_num, 1.0))
            if kind[0] == "messages":
                chk["type"] = c.get("type", as_str, required=True)
                chk["min"] = int(c.get("min", as_num, 1.0))
            if kind[0] == "metrics":
                chk["name"] = c.get("name", as_str, required=True)
                labels: dict[str, Any] = c.get("labels", as_mapping, {})
                chk["labels"] = {k: str(v) for k, v in labels.items()}
                chk["max"] = c.opt("max", as_num)
                chk["min"] = c.get("min", as_num, 1.0) if chk["max"] is None else None
            c.finish()
            steps.append(Step(at, action, chk, line))
        args.finish()
    return _with_leaves(doc, steps, leaving)


def _with_leaves(doc: Doc, steps: list[Step], leaving: list[tuple[Step, float]]
                 ) -> tuple[Step, ...]:
    """The timeline with each overlapping move's ``leave`` (and the instant
    of its move) in its place, after the other steps of its instant."""
    for leave, made in leaving:
        mn = leave.args["mn"]
        if any(s.action in ("attach", "move") and s.args["mn"] == mn
               and made < s.at <= leave.at for s in steps):
            raise doc.error(("timeline",), f"{mn} moves again at most {leave.at - made} s "
                            f"after its move at {made}: its old radio is still up then")
    return tuple(sorted([*steps, *(leave for leave, _ in leaving)], key=lambda s: s.at))


def _expect(doc: Doc, top: Table, flows: dict[str, FlowSpec]) -> dict[str, dict[str, Any]]:
    table = top.sub("expect")
    out: dict[str, dict[str, Any]] = {}
    for name, value in table.value.items():
        table.used.add(name)
        f = Table(doc, ("expect", name), value)
        if name == "signalling":
            # At most this many messages of each type, all nodes together.
            out["signalling"] = {k: int(f.get(k, lambda v: int(as_num(v)))) for k in value}
        elif name == "security":
            # Exactly these SM drops and policy refusals ("node reason": n).
            out["security"] = {k: int(f.get(k, lambda v: int(as_num(v)))) for k in value}
        elif name not in flows:
            raise doc.error(("expect", name), f"no flow {name!r} in the timeline")
        else:
            e: dict[str, Any] = {}
            for k in ("lost", "duplicates", "reordered"):
                if k in value:
                    e[k] = f.get(k, count_or_share)
            if "max_interruption_ms" in value:
                e["max_interruption_ms"] = f.get("max_interruption_ms", as_num)
            if "address" in value:
                e["address"] = f.get("address", one_of("kept", "new"))
            if "tcp" in value:
                e["tcp"] = f.get("tcp", one_of("unbroken"))
            if "charged" in value:
                e["charged"] = f.get("charged", one_of("exact"))
            out[name] = e
        f.finish()
    table.finish()
    return out


def _attack(doc: Doc, args: Table, path: PathKey, nodes: dict[str, NodeSpec],
            flows: dict[str, FlowSpec]) -> dict[str, Any]:
    """An ``attack`` step's arguments, checked."""
    from .attacks import ATTACKS  # the builders need the plan, which needs this module

    out = {"from": args.get("from", as_str, required=True),
           "to": args.get("to", as_str, required=True),
           "send": args.get("send", one_of(*ATTACKS), required=True),
           "flow": args.get("flow", as_str, required=True),
           "via": args.get("via", as_str, required=True),
           "key": args.get("key", as_str, "none")}
    if nodes.get(out["from"]) is None or nodes[out["from"]].kind != "host":
        raise doc.error((*path, "from"), f"{out['from']!r} is not a host")
    for field_ in ("to", "via"):
        if nodes.get(out[field_]) is None or nodes[out[field_]].kind != "router":
            raise doc.error((*path, field_), f"{out[field_]!r} is not a router")
    if out["key"] != "none" and out["key"] not in nodes:
        raise doc.error((*path, "key"), f"'none' or a node whose key is stolen, "
                                        f"not {out['key']!r}")
    if out["flow"] not in flows:
        raise doc.error((*path, "flow"), f"no flow {out['flow']!r} yet")
    args.finish()
    return out


def _check_topology(doc: Doc, nodes: dict[str, NodeSpec], links: tuple[LinkSpec, ...]) -> None:
    linked = {end for link in links for end in (link.a, link.b)}
    for name in nodes:
        if name not in linked:
            raise doc.error(("nodes", name), "is linked to nothing")
    for fn in ("controller",):
        hosts = [n.name for n in nodes.values() if getattr(n, fn)]
        if len(hosts) > 1:
            raise doc.error(("nodes", hosts[1], fn), f"only one {fn} per scenario")
    anchors = [n for n in nodes.values() if n.anchor is not None]
    for n in anchors:
        if n.controller:
            # Both would listen on the CPA's port 5400 (where FM:6-2 and FM:1
            # from the controller reach an anchor).
            raise doc.error(("nodes", n.name, "controller"),
                            "the controller cannot share a node with an anchor")
    if anchors and not any(n.controller for n in nodes.values()):
        raise doc.error(("nodes",), "anchors need a controller node (FM:4 registry)")
    if any(n.anchor is not None and n.anchor.mode == "bgp" for n in nodes.values()):
        for n in nodes.values():
            if n.anchor is not None and n.anchor.prefix is not None:
                peers = [lk for lk in links if n.name in (lk.a, lk.b)
                         and nodes[lk.b if lk.a == n.name else lk.a].bgp is not None]
                if not peers:
                    raise doc.error(("nodes", n.name, "anchor", "mode"),
                                    "a bgp anchor needs a link to a router with bgp")
    if any(n.anchor is not None and n.anchor.pd for n in nodes.values()) and \
            not any(n.dhcp is not None for n in nodes.values()):
        raise doc.error(("nodes",), "anchors with pd need a node with dhcp (Kea)")
