"""From a scenario to what the emulator builds: addresses, routes, node configs.

Pure functions of the scenario (no kernel, no processes), so the plan can be
checked in unit tests and printed (``dmanchor run --plan``).

Addressing, all derived from the order of the file:

* link ``i`` (1-based, routers and hosts): ``fd00:i::1`` at end a,
  ``fd00:i::2`` at end b; a host's link puts the host in
  ``2001:db8:99:i::/64`` (``::1``, the router ``::ff``) so it looks like a CN;
* access links (router - MN): every router shows one gateway, MAC
  :data:`GATEWAY_MAC` and its link-local address :data:`GATEWAY_LL`, on its
  side; nothing on the MN's (its radios are bridged; see the emulator);
* anchor ``k``: DPA (End.DT6 SID) ``fc00::k:0``, flush SID ``fc00::k:1``;
* each node's control address is its first link address; the controller
  listens on 5400, an LMs on 5401, an FM-DP on 5402, an LMp on 5403, an
  anchor agent on 5400 (never on the controller's node as well).

Static routes follow shortest paths (fewest hops) between routers; the
anchors' own prefixes are routed statically unless they are announced by
BGP (then BIRD routes them).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path

from ..access.dhcpv6 import duid_ll
from ..config import key_toml, new_key
from ..wire.auth import Key, Role
from ..wire.types import Prefix
from .model import NodeSpec, Scenario

CTRL_PORT, LMS_PORT, FMDP_PORT, LMP_PORT, ANCHOR_PORT = 5400, 5401, 5402, 5403, 5400
METRICS_PORT = 9464
"""Where every router serves ``GET /metrics`` (Prometheus), on its control address."""


@dataclass(frozen=True, slots=True)
class Iface:
    """One end of a link."""

    name: str
    address: str
    """With its length (``fd00:1::1/64``); empty for an MN's radio."""
    mtu: int
    peer: str


@dataclass(slots=True)
class NodePlan:
    """Everything about one node."""

    spec: NodeSpec
    ifaces: list[Iface] = field(default_factory=list)
    routes: list[tuple[Prefix, str]] = field(default_factory=list)
    """Static routes: (destination, next-hop address)."""
    control: str = ""
    """Its control address (first link address), without length."""
    dpa: IPv6Address | None = None
    anchor_index: int = 0
    uplink: str = ""
    """Next hop towards the core (anchors)."""
    access: list[str] = field(default_factory=list)
    """Its access links (router side)."""
    config: str = ""
    """``dmanchor node`` config (TOML); empty if it runs no dmanchor function."""


@dataclass(slots=True)
class Plan:
    """The whole emulated network."""

    scenario: Scenario
    nodes: dict[str, NodePlan]
    hops: dict[tuple[str, str], int]
    """Shortest path length in links between two nodes."""
    next_hop: dict[tuple[str, str], str]
    """(from, to) -> the neighbour on a shortest path."""
    keys: dict[str, Key] = field(default_factory=dict)
    """Node -> the key it signs with (empty: the nodes run insecure)."""

    def path(self, a: str, b: str) -> list[str]:
        """A shortest path from ``a`` to ``b``, both included."""
        out = [a]
        while out[-1] != b:
            out.append(self.next_hop[(out[-1], b)])
        return out

    def names(self) -> dict[str, str]:
        """Every address a node signals from or is reached at -> the node."""
        out: dict[str, str] = {}
        for name, np in self.nodes.items():
            for iface in np.ifaces:
                if iface.address and not iface.address.startswith("fe80:"):
                    out[iface.address.split("/")[0]] = name
            if np.dpa is not None:
                out[str(np.dpa)] = name
                out[str(np.dpa + 1)] = name  # its flush SID
        return out

    def address_towards(self, node: str, neighbour: str) -> str:
        """``neighbour``'s address on its link with ``node``."""
        for i in self.nodes[neighbour].ifaces:
            if i.peer == node:
                return i.address.split("/")[0]
        raise KeyError(f"{node} and {neighbour} are not linked")


def _bfs(adj: dict[str, list[str]], src: str) -> tuple[dict[str, int], dict[str, str]]:
    dist = {src: 0}
    first: dict[str, str] = {}
    q = deque([src])
    while q:
        u = q.popleft()
        for v in adj[u]:
            if v not in dist:
                dist[v] = dist[u] + 1
                first[v] = v if u == src else first[u]
                q.append(v)
    return dist, first


def make_plan(sc: Scenario, signed: bool = True) -> Plan:
    """Addresses, shortest-path routes and node configs of ``sc``.

    ``signed``: every node gets its own fresh key and every peer's, and
    signs all it sends (the default, as deployed); else they run
    ``insecure`` (to measure what signing costs).
    """
    nodes = {n: NodePlan(spec) for n, spec in sc.nodes.items()}
    subnets: list[tuple[Prefix, str, str]] = []  # (subnet, end a, end b)
    for i, link in enumerate(sc.links, start=1):
        a, b = sc.nodes[link.a], sc.nodes[link.b]
        if b.kind == "mn":
            nodes[a.name].ifaces.append(Iface(b.name, f"{GATEWAY_LL}/64", link.mtu, b.name))
            nodes[a.name].access.append(b.name)
            nodes[b.name].ifaces.append(Iface(f"r-{a.name}", "", link.mtu, a.name))
            continue
        if "host" in (a.kind, b.kind):
            host, router = (a, b) if a.kind == "host" else (b, a)
            net = f"2001:db8:99:{i:x}::"
            nodes[host.name].ifaces.append(Iface(router.name, f"{net}1/64", link.mtu, router.name))
            nodes[router.name].ifaces.append(Iface(host.name, f"{net}ff/64", link.mtu, host.name))
            subnets.append((Prefix.parse(f"{net}/64"), host.name, router.name))
            continue
        nodes[a.name].ifaces.append(Iface(b.name, f"fd00:{i:x}::1/64", link.mtu, b.name))
        nodes[b.name].ifaces.append(Iface(a.name, f"fd00:{i:x}::2/64", link.mtu, a.name))
        subnets.append((Prefix.parse(f"fd00:{i:x}::/64"), a.name, b.name))
    for np in nodes.values():
        routed = [i for i in np.ifaces if i.address and not i.address.startswith("fe80")]
        np.control = routed[0].address.split("/")[0] if routed else ""
    # Shortest paths over router/host links (MNs move; they route nothing).
    adj: dict[str, list[str]] = {n: [] for n in nodes}
    for link in sc.links:
        if sc.nodes[link.b].kind != "mn":
            adj[link.a].append(link.b)
            adj[link.b].append(link.a)
    hops: dict[tuple[str, str], int] = {}
    nxt: dict[tuple[str, str], str] = {}
    for n in nodes:
        if sc.nodes[n].kind == "mn":
            continue
        dist, first = _bfs(adj, n)
        for m, d in dist.items():
            hops[(n, m)] = d
            if m != n:
                nxt[(n, m)] = first[m]
    plan = Plan(sc, nodes, hops, nxt)
    # Anchors: DPAs, and which networks they own.
    owned: list[tuple[Prefix, str]] = []
    bgp = any(s.anchor is not None and s.anchor.mode == "bgp" for s in sc.nodes.values())
    for k, spec in enumerate(sc.anchors(), start=1):
        np = nodes[spec.name]
        np.anchor_index = k
        np.dpa = IPv6Address(f"fc00::{k:x}:0")
        owned.append((Prefix.make(np.dpa, 127), spec.name))
        assert spec.anchor is not None
        if spec.anchor.prefix is not None and not bgp:
            owned.append((spec.anchor.prefix, spec.name))
    for name, np in nodes.items():
        if np.spec.kind != "router":
            continue  # hosts have a default route; MNs route nothing
        attached = {p for p, ea, eb in subnets if name in (ea, eb)}
        for prefix, ea, eb in subnets:
            if prefix in attached:
                continue
            owner = ea if hops.get((name, ea), 1 << 30) <= hops.get((name, eb), 1 << 30) else eb
            if (name, owner) in nxt:
                np.routes.append((prefix, plan.address_towards(name, nxt[(name, owner)])))
        for prefix, owner in owned:
            if owner != name and (name, owner) in nxt:
                np.routes.append((prefix, plan.address_towards(name, nxt[(name, owner)])))
    core = _core_node(sc)
    for spec in sc.anchors():
        np = nodes[spec.name]
        target = spec.anchor.parent if spec.anchor and spec.anchor.parent else core
        if target and (spec.name, target) in nxt:
            np.uplink = plan.address_towards(spec.name, nxt[(spec.name, target)])
    for np in nodes.values():
        if np.uplink:
            # Access routers and switches route everything upstream by their
            # default route, as deployed ones do.  (A specific route towards
            # the core would also make them send end markers down a path
            # no packet of the prefix took.)
            np.routes = [(p, nh) for p, nh in np.routes if nh != np.uplink]
    plan.keys = _node_keys(sc) if signed else {}
    for name, np in nodes.items():
        np.config = _config(plan, name)
    return plan


def filled(config: str, name: str, workdir: Path, log_level: str = "info",
           kea_socket: Path | None = None, lms_state: bool = True) -> str:
    """A node's config (:attr:`NodePlan.config`) with its run's paths in:
    control socket, trace, state files in ``workdir``; ``lms_state=False``
    keeps an LMs' bindings in memory (no ``state_dir``)."""
    text = config if lms_state else config.replace('state_dir = "@LMSTATE@"', "")
    return (text.replace("@CONTROL@", str(workdir / f"{name}.sock"))
            .replace("@TRACE@", str(workdir / f"{name}.trace.jsonl"))
            .replace("@STATE@", str(workdir / f"{name}.state.json"))
            .replace("@LMSTATE@", str(workdir / f"{name}.lms"))
            .replace("@LOG@", log_level)
            .replace("@KEA@", str(kea_socket) if kea_socket is not None else ""))


def _node_keys(sc: Scenario) -> dict[str, Key]:
    """A fresh key per node that runs daemons, with the roles it runs."""
    keys: dict[str, Key] = {}
    for spec in sc.nodes.values():
        apart = spec.anchor is not None and spec.anchor.cp is not None
        roles = {r for r, on in ((Role.ANCHOR, spec.anchor is not None and not apart),
                                 (Role.CONTROLLER, spec.controller), (Role.LMS, spec.lms),
                                 (Role.LMP, spec.lmp), (Role.FMDP, spec.fmdp or apart),
                                 (Role.MN, spec.kind == "mn" and spec.agent)) if on}
        if roles:
            keys[spec.name] = new_key(len(keys) + 1, spec.name, frozenset(roles))
    return keys


def _security(plan: Plan, name: str) -> list[str]:
    """The ``[security]`` table of node ``name``: its own key signs; every
    other node's verifies (each function's policy judges the roles)."""
    own = plan.keys.get(name)
    if own is None:
        return ["[security]", "insecure = true", ""]
    return ["[security]", f"send_key = {own.key_id}", ""] + [
        key_toml(k) for k in plan.keys.values()]


def _core_node(sc: Scenario) -> str:
    for n in sc.nodes.values():
        if n.controller:
            return n.name
    return ""


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}"


def _pool(plan: Plan) -> list[str]:
    """The LMs endpoints of the scenario (an LM:2 pool when more than one)."""
    return [_endpoint(plan.nodes[n.name].control, LMS_PORT)
            for n in plan.scenario.nodes.values() if n.lms]


def _lm_of(plan: Plan, name: str) -> str:
    """The LMs/LMp endpoint an anchor uses."""
    sc = plan.scenario
    spec = sc.nodes[name]
    assert spec.anchor is not None
    if spec.anchor.lm is not None:
        target = plan.nodes[spec.anchor.lm]
        port = LMP_PORT if target.spec.lmp else LMS_PORT
        return _endpoint(target.control, port)
    if spec.lms:
        return _endpoint(plan.nodes[name].control, LMS_PORT)  # its own pool member
    return _lm_of_controller(plan)


def _config(plan: Plan, name: str) -> str:
    """The ``dmanchor node`` config of node ``name`` (TOML), or ''."""
    sc = plan.scenario
    np = plan.nodes[name]
    spec = np.spec
    if spec.kind == "mn" and spec.agent:
        return _mn_config(plan, name) + "\n".join(_security(plan, name))
    if spec.kind != "router" or not (spec.anchor or spec.controller or spec.lms or spec.lmp
                                     or spec.fmdp):
        return ""
    lines = ["[node]", f'id = "{name}"', 'control = "@CONTROL@"', 'trace = "@TRACE@"',
             'log_level = "@LOG@"', f'metrics = "{_endpoint(np.control, METRICS_PORT)}"', ""]
    anchors = [plan.nodes[a.name] for a in sc.anchors()]
    if spec.controller:
        lines += ["[controller]", f'listen = "{_endpoint(np.control, CTRL_PORT)}"']
        lines.append('state = "@STATE@"')  # what it moved, for a restart (fault scenarios)
        apart = [a for a in anchors if a.spec.anchor and a.spec.anchor.cp == name]
        if apart:
            # Fig 1c/1d with the CPA apart: this controller is these ARs' FM-CP.
            lines.append(f'cpa = "{np.control}"')
        # Anchor switching, or a hierarchy (4.2.2/4.2.3): the controller
        # follows the bindings and re-routes the core when anchoring moves.
        central = any(a.spec.anchor is not None and (a.spec.anchor.mode == "switch"
                                                     or a.spec.anchor.parent is not None)
                      for a in anchors)
        if any(a.spec.anchor is not None and a.spec.anchor.pd and a.spec.anchor.mode == "switch"
               for a in anchors) and not any(n.lease_cmds for n in sc.nodes.values()):
            # Draft 4.2.1 with the routers' own PD clients: the controller
            # has a lease released and taken before it switches (FM:3-2).
            lines.append('leases = "routers"')
        lms = _lm_of_controller(plan)
        if central and lms:
            lines += [f'lms = "{lms}"', 'watch = ["2001:db8::/32"]']
            others = [e for e in _pool(plan) if e != lms]
            if lms in _pool(plan) and others:
                # The rest of its LM:2 pool, subscribed at too; a silent
                # member is found within a second.
                lines += ["lms_pool = [" + ", ".join(f'"{e}"' for e in others) + "]",
                          "lms_check = 1"]
            for r in plan.nodes.values():
                if not r.spec.fmdp:
                    continue
                lines += ["[[controller.routers]]", f'name = "{r.spec.name}"',
                          f'address = "{_endpoint(r.control, FMDP_PORT)}"',
                          "[controller.routers.next_hops]"]
                for a in anchors:
                    if a.spec.anchor and a.spec.anchor.parent is None and \
                            (r.spec.name, a.spec.name) in plan.next_hop:
                        hop = plan.address_towards(r.spec.name,
                                                   plan.next_hop[(r.spec.name, a.spec.name)])
                        lines.append(f'"{a.dpa}" = "{hop}"')
        for a in apart:
            assert a.spec.anchor is not None and a.spec.anchor.prefix is not None
            lines += ["[[controller.access]]", f'name = "{a.spec.name}"',
                      f'address = "{_endpoint(a.control, FMDP_PORT)}"', f'dpa = "{a.dpa}"',
                      f'prefixes = ["{a.spec.anchor.prefix}"]', "[controller.access.children]"]
            lines += [f'"{fw.dpa}" = "{fw.spec.name}"' for fw in anchors
                      if fw.spec.anchor and fw.spec.anchor.parent == a.spec.name]
        fws = [a for a in anchors if a.spec.anchor and a.spec.anchor.parent]
        if fws:
            lines.append("[controller.dpn_parent]")
            for a in fws:
                assert a.spec.anchor is not None and a.spec.anchor.parent is not None
                lines.append(f'"{a.dpa}" = "{plan.nodes[a.spec.anchor.parent].dpa}"')
        if any(n.lease_cmds for n in sc.nodes.values()):
            # Draft 4.2.1 driven centrally: the FM-CP moves a prefix's
            # DHCPv6-PD lease itself (Kea lease_cmds) as it switches it.
            lines += ["[controller.kea]", 'socket = "@KEA@"', "[controller.kea.duids]"]
            lines += [f'"{a.dpa}" = "{pd_duid(a.anchor_index).hex()}"' for a in anchors
                      if a.spec.anchor is not None and a.spec.anchor.pd]
        lines.append("")
    if spec.lms:
        members = [n for n in sc.nodes.values() if n.lms]
        lines += ["[lms]", f'listen = "{_endpoint(np.control, LMS_PORT)}"',
                  # Its bindings survive a restart, as deployed (SQLite).
                  'state_dir = "@LMSTATE@"']
        if len(members) > 1:
            # An LM:2 pool (Fig 1a): each member is primary for its own
            # anchor's prefix, and for those of the anchors that name it
            # as their ``lm``.
            own = [n.anchor.prefix for n in sc.nodes.values()
                   if n.anchor is not None and n.anchor.prefix is not None
                   and (n.name == name or n.anchor.lm == name)]
            lines.append("primary = [" + ", ".join(f'"{p}"' for p in own) + "]")
            peers = [_endpoint(plan.nodes[m.name].control, LMS_PORT)
                     for m in members if m.name < name]
            lines.append("peers = [" + ", ".join(f'"{p}"' for p in peers) + "]")
        lines.append("")
    if spec.lmp:
        upstream = [_endpoint(plan.nodes[n.name].control, LMS_PORT)
                    for n in sc.nodes.values() if n.lms]
        lines += ["[lmp]", f'listen = "{_endpoint(np.control, LMP_PORT)}"',
                  "upstream = [" + ", ".join(f'"{u}"' for u in upstream) + "]", ""]
    if spec.anchor is not None and spec.anchor.cp is not None:
        # Its control plane is the controller's: an FM-DP only (Fig 1c/1d).
        cp = plan.nodes[spec.anchor.cp]
        lines += ["[fmdp]", f'listen = "{_endpoint(np.control, FMDP_PORT)}"',
                  f'control = "{_endpoint(cp.control, CTRL_PORT)}"', ""]
        return "\n".join(lines + _security(plan, name))
    if spec.fmdp:
        core = _core_node(sc)
        lines += ["[fmdp]", f'listen = "{_endpoint(np.control, FMDP_PORT)}"']
        if core:
            lines.append(f'control = "{_endpoint(plan.nodes[core].control, CTRL_PORT)}"')
        lines.append("")
    if spec.anchor is not None:
        asp = spec.anchor
        core = _core_node(sc)
        assert np.dpa is not None
        lines += ["[anchor]", f'listen = "{_endpoint(np.control, ANCHOR_PORT)}"',
                  f'dpa = "{np.dpa}"',
                  "prefixes = [" + (f'"{asp.prefix}"' if asp.prefix else "") + "]",
                  f'uplink = "{np.uplink}"', f'mode = "{asp.mode}"',
                  f"lifetime = {asp.lifetime}", f"hold_timeout = {asp.hold_timeout}",
                  f"buffer_timeout = {asp.buffer_timeout}"]
        if asp.reverse_tunnel:
            lines.append("reverse_tunnel = true")
        if core:
            lines.append(f'controller = "{_endpoint(plan.nodes[core].control, CTRL_PORT)}"')
        lm = _lm_of(plan, name)
        if lm:
            lines.append(f'lms = "{lm}"')
            others = [e for e in _pool(plan) if e != lm]
            if lm in _pool(plan) and others:
                # The rest of its LM:2 pool, asked when its member is silent.
                lines.append("lms_pool = [" + ", ".join(f'"{e}"' for e in others) + "]")
        if asp.parent is not None:
            lines.append(f'parent = "{plan.nodes[asp.parent].dpa}"')
        if np.access:
            lines.append("access_links = [" + ", ".join(f'"{x}"' for x in np.access) + "]")
            hosted = [m for m in np.access if sc.nodes[m].agent]
            if hosted:
                # A host-based MN sends from its kept addresses on a link
                # where the network does not serve them (no reverse tunnel),
                # and keeps its sessions itself.
                lines.append("source_validation = false")
                # MN-ID -> its agent's node id (whose key signs its FM:6-2).
                lines.append("host_based = {" + ", ".join(
                    f'"{mn_link_address(sc, m)}" = "{m}"' for m in hosted) + "}")
            # A UDP flow ends when idle past this (the kernel's conntrack
            # timeout), swept for twice a second: scenario flows are short.
            lines += [f"udp_idle = {UDP_IDLE}", "flow_sweep = 0.5"]
            pool = asp.prefix if asp.prefix is not None else _fw_pool(plan, name)
            lines.append(f'mn_pool = "{pool}"')
        if asp.pd:
            lines += ["[anchor.pd]", 'link = "dhcp0"',
                      f'duid = "{pd_duid(np.anchor_index).hex()}"']
        if asp.mode == "bgp":
            peer = next(i.peer for i in np.ifaces if sc.nodes[i.peer].bgp is not None)
            lines += ["[anchor.bgp]", f"local_as = {65000 + np.anchor_index}",
                      f'peer = "{plan.address_towards(name, peer)}"',
                      f"peer_as = {sc.nodes[peer].bgp}",
                      f'router_id = "10.0.1.{np.anchor_index}"',
                      f'next_hop = "{plan.address_towards(peer, name)}"', "hold_time = 9",
                      "connect_retry = 0.2"]
        lines.append("[anchor.agents]")
        for other in anchors:
            if other.spec.name != name:
                agent = _agent_node(plan, other)
                lines.append(f'"{other.dpa}" = "{_endpoint(agent.control, ANCHOR_PORT)}"')
        lines.append("[anchor.agent_ids]")  # whose key may name each DPA (FM:6-2)
        lines += [f'"{other.dpa}" = "{_agent_node(plan, other).spec.name}"'
                  for other in anchors if other.spec.name != name]
        lines.append("")
    return "\n".join(lines + _security(plan, name))


GATEWAY_MAC = "02:00:00:00:ff:01"
"""The MAC every access router shows its MNs (so one gateway: the same
neighbour entry, and the same default router, at every router)."""
GATEWAY_LL = "fe80::ff:fe00:ff01"
"""Its link-local address (the modified EUI-64 of :data:`GATEWAY_MAC`): what
the kernel gives the link again each time it comes up."""
def mn_link_address(sc: Scenario, mn: str) -> str:
    """An MN's link-layer address (its bridge's, fixed at creation): its
    MN-ID at the routers.  The k-th MN of the file has ``02:00:00:00:00:k``."""
    k = sc.of_kind("mn").index(mn) + 1
    return f"02:00:00:00:{k >> 8:02x}:{k & 0xFF:02x}"
UDP_IDLE = 1
"""Seconds a scenario's UDP flow may be idle before the routers take it as ended."""


def pd_duid(anchor_index: int) -> bytes:
    """The DUID (DUID-LL) an anchor takes its DHCPv6-PD delegations with."""
    return duid_ll(bytes.fromhex(f"0200000000{anchor_index:02x}"))


def _lm_of_controller(plan: Plan) -> str:
    """The first LMs of the scenario (the controller's, and the default)."""
    for n in plan.scenario.nodes.values():
        if n.lms:
            return _endpoint(plan.nodes[n.name].control, LMS_PORT)
    return ""


def agent_name(plan: Plan, router: str) -> str | None:
    """The node id of router ``router``'s anchor agent (as ``agent_ids``
    lists it), None if it runs no anchor."""
    np = plan.nodes[router]
    return _agent_node(plan, np).spec.name if np.spec.anchor is not None else None


def _agent_node(plan: Plan, anchor: NodePlan) -> NodePlan:
    """The node whose agent is ``anchor``'s CPA: itself, or its controller's
    when its control plane is apart (Fig 1c/1d)."""
    cp = anchor.spec.anchor.cp if anchor.spec.anchor is not None else None
    return plan.nodes[cp] if cp is not None else anchor


def _fw_pool(plan: Plan, name: str) -> Prefix:
    """A forwarding switch's share of its AR's network: the j-th /56 of it,
    j counting the AR's switches from 1 in file order."""
    spec = plan.scenario.nodes[name].anchor
    assert spec is not None and spec.parent is not None
    parent = plan.scenario.nodes[spec.parent].anchor
    assert parent is not None and parent.prefix is not None
    siblings = [n.name for n in plan.scenario.anchors()
                if n.anchor is not None and n.anchor.parent == spec.parent]
    j = siblings.index(name) + 1
    return Prefix(parent.prefix.network | (j << 72), 56)


def _mn_config(plan: Plan, name: str) -> str:
    """An MN's own mobility agent (host-based, Fig 2a/2b)."""
    sc = plan.scenario
    spec = sc.nodes[name]
    core = _core_node(sc)
    if spec.agent_lm is not None:
        target = plan.nodes[spec.agent_lm]
        lm = _endpoint(target.control, LMP_PORT if target.spec.lmp else LMS_PORT)
    else:
        lm = _lm_of_controller(plan)
    return "\n".join([
        "[node]", f'id = "{name}"', 'control = "@CONTROL@"', 'trace = "@TRACE@"',
        'log_level = "@LOG@"', "", "[mn]", 'listen = "[::]:5400"',
        f'controller = "{_endpoint(plan.nodes[core].control, CTRL_PORT)}"',
        f'lms = "{lm}"', 'sid_dev = "br0"', "",
    ])
