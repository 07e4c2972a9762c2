"""A node's config file (``dmanchor node --config FILE``): parsed and checked.

The format is described in :mod:`dmanchor.node` and docs/operations.md; every
error names the file and the field.
"""

from __future__ import annotations

import grp
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from .access.bgp import BgpSettings
from .access.kea_ctrl import KeaControl
from .config import (
    ConfigError,
    Fields,
    SecuritySettings,
    as_address,
    as_bind,
    as_bool,
    as_endpoint,
    as_float,
    as_int,
    as_prefix,
    as_str,
    load_file,
    read_security,
)
from .dataplane.api import BufferSpec
from .fm.anchor_model import MODES, AnchorSettings, Mode
from .fm.central_cp import AccessControl
from .fm.controller import ControllerSettings, RouterControl
from .fm.controller_lease import LeaseMoves
from .fm.fmdp import FmDpSettings
from .fm.mn_agent import MnAgentSettings
from .lm.daemon import LmDaemonConfig, read_lm_table
from .logs import FORMATS
from .transport.reliable import Addr
from .wire.types import Prefix


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A parsed node config."""

    node_id: str
    """The node's id."""
    log_level: str
    """Logging level."""
    control: Path | None
    """UNIX socket for access-layer commands (anchor only)."""
    security: SecuritySettings
    """SM settings of every function."""
    anchor: tuple[Addr, AnchorSettings] | None = None
    """The anchor agent: endpoint and settings."""
    controller: tuple[Addr, ControllerSettings] | None = None
    """The mobility controller: endpoint and settings."""
    lms: LmDaemonConfig | None = None
    """A location server."""
    fmdp: tuple[Addr, FmDpSettings] | None = None
    """A stand-alone FM-DP: endpoint and settings."""
    access_links: tuple[str, ...] = ()
    """Access links on which MNs solicit (RS) and are advertised to (RA)."""
    source_validation: bool = True
    """Drop packets entering an access link from a source outside the
    prefixes of the MNs attached there (SM).  Off where MNs send from
    addresses the network does not serve on that link (host-based, Fig 2a/2b,
    without a reverse tunnel)."""
    mn_pool: Prefix | None = None
    """Where this router takes the /64 it delegates to each MN that attaches by RS."""
    mn_state: Path | None = None
    """JSON file keeping which MN has which /64 of ``mn_pool`` across restarts
    (without it a restarted node may give a prefix still in use to another MN)."""
    trace: Path | None = None
    """JSON-lines trace: every message sent and received, every data-plane change."""
    bgp: tuple[IPv6Address, BgpSettings] | None = None
    """The anchor's BGP peer (its router) and session (anchor mode ``bgp``)."""
    lmp: LmDaemonConfig | None = None
    """A location proxy (LMp, Fig 1d) in front of LMs."""
    mn: tuple[Addr, MnAgentSettings, str] | None = None
    """Host-based mobility (Fig 2a/2b) on an MN: endpoint, settings, and the
    device its SRv6 SID (where its anchors tunnel to it) is served on."""
    pd: PdConfig | None = None
    """The anchor's DHCPv6-PD client side (draft 4.2.1)."""
    kea: KeaMoves | None = None
    """The controller moves DHCPv6-PD leases itself through Kea (draft 4.2.1)."""
    control_group: str | None = None
    """A group whose members may use the control socket too (mode 0660;
    without it, 0600: root and the node's own user only)."""
    ra_interval: float = 600.0
    """MaxRtrAdvInterval of the unsolicited RAs on the access links, seconds
    (RFC 4861: 4 to 1800); they go out every third of it to all of it."""
    charged_links: tuple[str, ...] | None = None
    """Links whose MN traffic is charged per flow (FM:2); None: the access
    links.  (Links MNs are attached on by the ``attach`` command only.)"""
    udp_idle: int | None = None
    """A UDP flow idle this long (seconds) has ended: written to the
    namespace's ``nf_conntrack_udp_timeout`` and ``_stream`` at start
    (None: the kernel's, 30 and 120)."""
    flow_sweep: float = 1.0
    """How often the conntrack table is walked, seconds: the kernel only
    reports an idle flow's end when something finds it expired."""
    controller_state: Path | None = None
    """Where the controller keeps the prefixes it moved (``[controller]
    state``), so that a restart reverts them in time (FM:3-3)."""
    log_format: str = "text"
    """``text`` or ``json``: one JSON object per line with node, function, MN,
    prefix and draft label (:mod:`.logs`)."""
    metrics: Addr | None = None
    """Where ``GET /metrics`` is served (Prometheus, :mod:`.metrics`;
    ``[node] metrics = "[::1]:9464"``); None: off."""


@dataclass(frozen=True, slots=True)
class KeaMoves:
    """``[controller.kea]``: when the FM-CP switches a prefix's anchoring, it
    gives the prefix's lease to the new anchor's PD client (lease6-update)."""

    control: KeaControl
    """Kea's control socket and the moved lease's subnet and lifetimes."""
    duids: dict[IPv6Address, bytes]
    """Anchor DPA -> the DUID its PD client uses (``[controller.kea.duids]``)."""


@dataclass(frozen=True, slots=True)
class PdConfig:
    """``[anchor.pd]``: the MN prefixes this router anchors are delegated to it."""

    link: str
    """Interface on the delegating router's (or relay's) link."""
    duid: bytes | None = None
    """This router's DUID (hex in the file); default DUID-LL of ``link``'s MAC."""
    retry: float = 0.02
    """Seconds between asks for a prefix still leased to the previous router."""
    patience: float = 3.0
    """Seconds after which a prefix not delegated is reported refused."""


def as_hex(value: Any) -> bytes:
    """Bytes written in hex ("000300010200..."; colons allowed)."""
    try:
        out = bytes.fromhex(str(value).replace(":", ""))
    except ValueError as exc:
        raise ValueError(f"expected hex bytes, got {value!r}") from exc
    if not out:
        raise ValueError("expected hex bytes, got none")
    return out


def as_asn(value: Any) -> int:
    """An AS number (1 .. 2^32-1)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1 << 32:
        raise ValueError(f"expected an AS number, got {value!r}")
    return value


def as_router_id(value: Any) -> int:
    """A BGP identifier written as an IPv4 address ("10.0.0.1")."""
    try:
        n = int(IPv4Address(value))
    except (AddressValueError, ValueError) as exc:
        raise ValueError(f"expected a router id like 10.0.0.1, got {value!r}") from exc
    if n == 0:
        raise ValueError("router id 0.0.0.0 is not allowed")
    return n


def _lms_pool(a: Fields, path: object, table: str = "anchor") -> tuple[Addr, ...]:
    """``TABLE.lms_pool``: the other members of ``TABLE.lms``'s pool."""
    pool = a.get_list("lms_pool", as_endpoint)
    if pool and "lms" not in a.table:
        raise ConfigError(f"{path}: field '{table}.lms_pool': needs '{table}.lms' (the "
                          "member asked first)")
    return pool


def _optional_endpoint(f: Fields, name: str) -> Addr | None:
    """An optional host:port field (absent: None)."""
    return f.get(name, as_endpoint, required=True) if name in f.table else None


def _agent_ids(a: Fields) -> dict[IPv6Address, str]:
    """``[anchor.agent_ids]``: DPA -> node id of the anchor it belongs to."""
    t = a.sub("agent_ids")
    return {as_address(k): t.get(k, as_str, required=True) for k in list(t.table)}


def _host_based(a: Fields) -> dict[str, str]:
    """``host_based``: a list of MN-IDs, or a table MN-ID -> its agent's node id."""
    if isinstance(a.table.get("host_based"), dict):
        t = a.sub("host_based")
        return {mn.lower(): t.get(mn, as_str, required=True) for mn in list(t.table)}
    return dict.fromkeys((x.lower() for x in a.get_list("host_based", as_str)), "")


def load_node_config(path: str | Path) -> NodeConfig:
    """Read and validate a node config; errors name the file and field."""
    doc = load_file(path)
    top = Fields(str(path), "", doc)
    node = top.sub("node")
    node_id = node.get("id", as_str, required=True)
    level = node.get("log_level", as_str, "info")
    if level.upper() not in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"{path}: field 'node.log_level': expected debug, info, warning, "
                          f"error or critical, got {level!r}")
    log_format = node.get("log_format", as_str, "text")
    if log_format not in FORMATS:
        raise ConfigError(f"{path}: field 'node.log_format': expected text or json, "
                          f"got {log_format!r}")
    control = node.get("control", as_str, "")
    control_group = node.get("control_group", as_str, "")
    if control_group:
        try:
            grp.getgrnam(control_group)
        except KeyError:
            raise ConfigError(f"{path}: field 'node.control_group': no group "
                              f"{control_group!r} on this host") from None
    trace = node.get("trace", as_str, "")
    metrics = node.get("metrics", as_bind, ("", -1))
    node.finish()
    sec = read_security(top.sub("security"))
    anchor = controller = fmdp = None
    validate = True
    bgp: tuple[IPv6Address, BgpSettings] | None = None
    lms = None
    access_links: tuple[str, ...] = ()
    charged_links: tuple[str, ...] | None = None
    mn_pool = None
    mn_state = ""
    ra_interval = 600.0
    udp_idle: int | None = None
    flow_sweep = 1.0
    pd = None
    kea = None
    controller_state = None
    if "anchor" in doc:
        a = top.sub("anchor")
        listen = a.get("listen", as_bind, required=True)
        agents_f = a.sub("agents")
        agents = {as_address(k): agents_f.get(k, as_endpoint, required=True)
                  for k in list(agents_f.table)}
        mode = a.get("mode", as_str, "tunnel")
        if mode not in MODES:
            raise ConfigError(f"{path}: field 'anchor.mode': expected one of {', '.join(MODES)}")
        if "udp_idle" in a.table:
            udp_idle = a.get("udp_idle", as_int, required=True)
            if not 1 <= udp_idle <= 86400:
                raise ConfigError(f"{path}: field 'anchor.udp_idle': expected 1 to 86400 "
                                  "seconds")
        anchor = (listen, AnchorSettings(
            node_id=node_id,
            dpa=a.get("dpa", as_address, required=True),
            cpa=a.get("cpa", as_address, as_address(listen[0]) if ":" in listen[0]
                      else as_address("::1")),
            prefixes=a.get_list("prefixes", as_prefix),
            uplink=a.get("uplink", as_address, required=True),
            controller=_optional_endpoint(a, "controller"),
            lms=_optional_endpoint(a, "lms"),
            lms_pool=_lms_pool(a, path),
            mode=Mode(mode),
            port=a.get("peer_port", as_int, 5400),
            lifetime=a.get("lifetime", as_int, 600),
            buffer=BufferSpec(a.get("buffer_limit", as_int, 10_000),
                              a.get("buffer_timeout", as_float, 2.0)),
            hold_timeout=a.get("hold_timeout", as_float, 1.0),
            parent=a.get("parent", as_address) if "parent" in a.table else None,
            reverse_tunnel=a.get("reverse_tunnel", as_bool, False),
            pd="pd" in a.table,
            flow_idle=float(udp_idle if udp_idle is not None else 30),
            host_based=_host_based(a),
            agents=agents,
            agent_ids=_agent_ids(a),
            status_interval=a.get("status_interval", as_float, 1.0),
        ))
        if "pd" in a.table:
            f = a.sub("pd")
            pd = PdConfig(f.get("link", as_str, required=True),
                          f.get("duid", as_hex) if "duid" in f.table else None,
                          f.get("retry", as_float, 0.02), f.get("patience", as_float, 3.0))
            f.finish()
        if "bgp" in a.table:
            b = a.sub("bgp")
            peer = b.get("peer", as_address, required=True)
            bgp = (peer, BgpSettings(
                local_as=b.get("local_as", as_asn, required=True),
                peer_as=b.get("peer_as", as_asn, required=True),
                router_id=b.get("router_id", as_router_id, required=True),
                next_hop=b.get("next_hop", as_address, required=True),
                hold_time=b.get("hold_time", as_int, 9),
                connect_retry=b.get("connect_retry", as_float, 1.0),
            ))
            b.finish()
        if (bgp is None) != (mode != "bgp"):
            raise ConfigError(f"{path}: field 'anchor.bgp': "
                              "required with mode = \"bgp\", and only then")
        access_links = a.get_list("access_links", as_str)
        if "charged_links" in a.table:
            charged_links = a.get_list("charged_links", as_str)
        validate = a.get("source_validation", as_bool, True)
        ra_interval = a.get("ra_interval", as_float, 600.0)
        if not 4.0 <= ra_interval <= 1800.0:
            raise ConfigError(f"{path}: field 'anchor.ra_interval': expected 4 to 1800 "
                              "seconds (RFC 4861 MaxRtrAdvInterval)")
        flow_sweep = a.get("flow_sweep", as_float, 1.0)
        if not 0.05 <= flow_sweep <= 3600:
            raise ConfigError(f"{path}: field 'anchor.flow_sweep': expected 0.05 to 3600 "
                              "seconds")
        mn_pool = a.get("mn_pool", as_prefix, required=True) if "mn_pool" in a.table else None
        mn_state = a.get("mn_state", as_str, "")
        if access_links and mn_pool is None and anchor[1].parent is None:
            raise ConfigError(f"{path}: field 'anchor.mn_pool': required with access_links "
                              "(except on a forwarding switch, which has a parent)")
        a.finish()
    if "controller" in doc:
        c = top.sub("controller")
        listen = c.get("listen", as_bind, required=True)

        def router(item: Any) -> RouterControl:
            r = Fields(str(path), "controller.routers", item)
            hops_f = r.sub("next_hops")
            hops = {as_address(k): hops_f.get(k, as_address, required=True)
                    for k in list(hops_f.table)}
            out = RouterControl(r.get("name", as_str, required=True),
                                r.get("address", as_endpoint, required=True), hops)
            r.finish()
            return out

        def access(item: Any) -> AccessControl:
            r = Fields(str(path), "controller.access", item)
            kids = r.sub("children")
            out = AccessControl(
                r.get("name", as_str, required=True),
                r.get("address", as_endpoint, required=True),
                r.get("dpa", as_address, required=True),
                tuple(r.get_list("prefixes", as_prefix)),
                {as_address(k): kids.get(k, as_str, required=True) for k in list(kids.table)})
            r.finish()
            return out

        if "kea" in c.table:
            k = c.sub("kea")
            duids_f = k.sub("duids")
            kea = KeaMoves(
                KeaControl(Path(k.get("socket", as_str, required=True)),
                           k.get("subnet_id", as_int, 1), k.get("valid", as_int, 120),
                           k.get("preferred", as_int, 60), k.get("timeout", as_float, 2.0)),
                {as_address(d): duids_f.get(d, as_hex, required=True)
                 for d in list(duids_f.table)})
            k.finish()
        dp_f = c.sub("dpn_parent")
        controller = (listen, ControllerSettings(
            node_id=node_id,
            lms=_optional_endpoint(c, "lms"),
            lms_pool=_lms_pool(c, path, "controller"),
            lms_check=c.get("lms_check", as_float) if "lms_check" in c.table else None,
            watch=c.get_list("watch", as_prefix),
            routers=c.get_list("routers", router),
            dead_after=c.get("dead_after", as_float, 1.5),
            max_registered=c.get("max_registered", as_int, 100_000),
            max_dataplanes=c.get("max_dataplanes", as_int, 10_000),
            dpn_parent={as_address(k): dp_f.get(k, as_address, required=True)
                        for k in list(dp_f.table)},
            access=tuple(c.get_list("access", access)),
            cpa=c.get("cpa", as_address) if "cpa" in c.table else None,
            reconcile_grace=c.get("reconcile_grace", as_float, 30.0),
            leases=_lease_moves(c, path, kea is not None),
        ))
        if controller[1].lms_check == 0:
            raise ConfigError(f"{path}: field 'controller.lms_check': must be above 0 "
                              "(seconds between subscription renewals)")
        if "state" in c.table:
            controller_state = Path(c.get("state", as_str, required=True))
        if controller[1].access and controller[1].cpa is None:
            raise ConfigError(f"{path}: field 'controller.cpa': required with "
                              "[[controller.access]] (the address switches send FM:6-2 to)")
        c.finish()
    if "lms" in doc:
        lms = read_lm_table("lms", top.sub("lms"), sec, node_id)
    lmp = read_lm_table("lmp", top.sub("lmp"), sec) if "lmp" in doc else None
    mn = None
    if "mn" in doc:
        f = top.sub("mn")
        mn = (f.get("listen", as_bind, required=True), MnAgentSettings(
            node_id, f.get("controller", as_endpoint, required=True),
            f.get("lms", as_endpoint, required=True), f.get("peer_port", as_int, 5400),
            f.get("lifetime", as_int, 600)), f.get("sid_dev", as_str, "br0"))
        f.finish()
    if "fmdp" in doc:
        d = top.sub("fmdp")
        fmdp = (d.get("listen", as_bind, required=True), FmDpSettings(
            node_id, _optional_endpoint(d, "control"),
            d.get("status_interval", as_float, 0.5)))
        d.finish()
    top.finish()
    if not (anchor or controller or lms or lmp or fmdp or mn):
        raise ConfigError(f"{path}: the node hosts no function "
                          "(add [anchor], [controller], [lms], [lmp], [fmdp] or [mn])")
    return NodeConfig(
        node_id, level, Path(control) if control else None, sec,
        anchor=anchor, controller=controller, lms=lms, fmdp=fmdp,
        access_links=access_links, source_validation=validate, mn_pool=mn_pool,
        mn_state=Path(mn_state) if mn_state else None,
        trace=Path(trace) if trace else None, bgp=bgp, lmp=lmp, mn=mn, pd=pd, kea=kea,
        control_group=control_group or None, ra_interval=ra_interval, udp_idle=udp_idle,
        charged_links=charged_links,
        flow_sweep=flow_sweep, controller_state=controller_state, log_format=log_format,
        metrics=metrics if metrics[1] >= 0 else None)


def _lease_moves(c: Fields, path: str | Path, kea: bool) -> LeaseMoves:
    """``controller.leases``: who moves a prefix's DHCPv6-PD lease before its
    anchoring (FM:3-2).  ``[controller.kea]`` is the controller itself (Kea's
    ``lease6-update``); ``"routers"`` the access routers' own PD clients."""
    def as_moves(v: Any) -> LeaseMoves:
        try:
            return LeaseMoves(as_str(v))
        except ValueError:
            raise ValueError("expected one of " + ", ".join(
                repr(x.value) for x in LeaseMoves)) from None
    moves = c.get("leases", as_moves, LeaseMoves.KEA if kea else LeaseMoves.NONE)
    if (moves is LeaseMoves.KEA) != kea:
        raise ConfigError(f"{path}: field 'controller.leases': "
                          + ("the controller moves leases with [controller.kea]: "
                             "leave it out or say \"kea\"" if kea
                             else "\"kea\" needs [controller.kea]"))
    return moves
