"""What a node does with its functions' upward events, and its trace file.

The controller's events (logged; before an anchor switch the prefix's
DHCPv6-PD lease moves with Kea's ``lease6-update`` when ``[controller.kea]``
says how, and the controller hears how that went), the DHCPv6-PD client's
and the BGP speaker's (logged), and the JSON lines trace of messages,
data-plane changes and hold lifts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from .access.bgp import BgpEvent, SessionDown, SessionUp
from .access.bgp_aio import BgpSpeaker
from .access.delegation import Delegated, DelegationEvent, Refused, Returned
from .access.kea_ctrl import KeaError, move_delegation
from .access.links import AccessLinks
from .access.pd_aio import PdDriver
from .dataplane.tunbuffer import Lift
from .fm.anchor import AnchorAgentCore
from .fm.anchor_model import Announce, Delegate, LeaseStayed, TakeCharges
from .fm.controller import (
    AnchorMoved,
    AnchorRegistered,
    AnchorSwitching,
    ControllerCore,
    DataPlaneDown,
    DataPlaneUp,
    Registration,
)
from .fm.controller_lease import MoveLease, SwitchTunnelled
from .nodeconf import KeaMoves
from .runtime import clock
from .transport.reliable import Addr
from .wire.codec import peek_type
from .wire.errors import WireError
from .wire.types import ForwardingEntry, Prefix, entry_to_json

log = logging.getLogger("dmanchor.node")


class Trace:
    """A node's trace: one JSON object per line, each with time and node."""

    def __init__(self, path: Path, node_id: str) -> None:
        self.file: TextIO = path.open("a")
        self.node_id = node_id

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        record["t"] = round(time.monotonic(), 6)
        record["node"] = self.node_id
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def messages(self, function: str) -> Callable[[str, bytes, Addr], None]:
        """A UDP driver's trace hook for ``function``'s datagrams."""
        def trace(direction: str, data: bytes, peer: Addr) -> None:
            mtype = peek_type(data)
            self.write({"fn": function, "dir": direction,
                        "type": mtype.name if mtype else "?", "bytes": len(data),
                        "peer": [peer[0], peer[1]]})
        return trace

    def change(self, added: Sequence[ForwardingEntry],
               deleted: Sequence[ForwardingEntry]) -> None:
        """A data-plane change."""
        self.write({"fn": "dataplane", "add": [entry_to_json(e) for e in added],
                    "delete": [entry_to_json(e) for e in deleted]})

    def lift(self, prefix: Prefix, lift: Lift, cause: str) -> None:
        """A hold lifted (docs/protocol.md section 7)."""
        self.write({"fn": "lift", "prefix": str(prefix), "cause": cause,
                    "released": lift.released, "stragglers": lift.stragglers,
                    "forced": lift.forced, "guarded": lift.guarded, "cut": lift.cut,
                    "steps": lift.steps, "longest_step_ms": round(lift.longest * 1e3, 3),
                    "waited_ms": round(lift.waited * 1e3, 3)})

    def close(self) -> None:
        """Close the file."""
        self.file.close()


class ControllerState(NamedTuple):
    """What a controller keeps across a restart."""

    moved: dict[Prefix, IPv6Address]
    """Prefixes it had moved -> their DPA."""
    registered: dict[Prefix, Registration]
    """The anchors' FM:4-1 registrations (their expiry is not kept)."""
    tunnelled: dict[Prefix, IPv6Address]
    """Prefixes whose lease could not move -> the DPA their home tunnels to."""


def load_state(path: Path | None) -> ControllerState:
    """What a controller kept when it last ran (empty if nothing was kept,
    or if the file is unreadable: said in the log, never fatal)."""
    empty = ControllerState({}, {}, {})
    if path is None or not path.exists():
        return empty
    try:
        doc = json.loads(path.read_text())
        moved = {Prefix.parse(p): IPv6Address(a) for p, a in doc["moved"].items()}
        registered = {Prefix.parse(p): Registration(str(n), IPv6Address(d), IPv6Address(c), 0.0)
                      for p, (n, d, c) in doc.get("registered", {}).items()}
        tunnelled = {Prefix.parse(p): IPv6Address(a)
                     for p, a in doc.get("tunnelled", {}).items()}
        return ControllerState(moved, registered, tunnelled)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, WireError) as exc:
        log.error("controller state %s unreadable, starting without it: %s", path, exc)
        return empty


def save_state(path: Path, moved: Mapping[Prefix, IPv6Address],
               registered: Mapping[Prefix, Registration],
               tunnelled: Mapping[Prefix, IPv6Address] | None = None) -> None:
    """Keep what the controller has moved (or left tunnelled from home) and
    who registered what (atomically: a crash leaves the old file or the new
    one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({
        "moved": {str(p): str(a) for p, a in moved.items()},
        "tunnelled": {str(p): str(a) for p, a in (tunnelled or {}).items()},
        "registered": {str(p): [r.node_id, str(r.dpa), str(r.cpa)]
                       for p, r in registered.items()}}))
    os.replace(tmp, path)


class NodeEvents:
    """The upward events of a node's controller, PD client and BGP speaker."""

    def __init__(self, kea: KeaMoves | None, trace: Trace | None,
                 controller_state: Path | None = None) -> None:
        """``controller_state``: where the controller's moves are kept."""
        self.kea = kea
        self.trace = trace
        self.controller_state = controller_state
        self.kea_done: Counter[str] = Counter()
        """Lease moves: ``lease6-update`` done, ``failed``, ``no-duid``."""
        self.pump_controller: Callable[[], None] = lambda: None
        """Runs the controller's driver (after its answer to a lease move)."""
        self._tasks: set[asyncio.Task[None]] = set()

    def _keep(self, core: ControllerCore) -> None:
        if self.controller_state is not None:
            try:
                save_state(self.controller_state, core.moved, core.registered, core.tunnelled)
            except OSError as exc:
                log.error("controller state %s: %s", self.controller_state, exc)

    def controller(self, core: ControllerCore) -> None:
        """Drain the controller's events (its driver's pump hook)."""
        for ev in core.drain_events():
            if isinstance(ev, DataPlaneDown):
                log.warning("FM-DP %s stopped reporting (FM:5-2)", ev.node_id)
            elif isinstance(ev, DataPlaneUp):
                log.info("FM-DP %s reports", ev.node_id)
            elif isinstance(ev, AnchorRegistered | AnchorSwitching):
                self._keep(core)
            elif isinstance(ev, MoveLease):
                task = asyncio.get_running_loop().create_task(self._move_lease(core, ev))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(ev, SwitchTunnelled):
                self._keep(core)
                log.warning("%s stays anchored at home, tunnelled to %s (4.1.2): its lease "
                            "did not move: %s", ev.prefix, ev.dpa, ev.reason,
                            extra={"prefix": ev.prefix, "label": "FM:3-2",
                                   "function": "controller"})
                if self.trace is not None:
                    self.trace.write({"fn": "controller", "event": "tunnelled",
                                      "prefix": str(ev.prefix), "dpa": str(ev.dpa),
                                      "reason": ev.reason})
            elif isinstance(ev, AnchorMoved):
                log.info("%s anchored at %s now (4.2.1)", ev.prefix, ev.dpa,
                         extra={"prefix": ev.prefix, "label": "FM:5-1", "function": "controller"})
            else:
                self._keep(core)  # (a tunnelled prefix's revert changes no route)
                log.info("%s routed home again (FM:3-3)", ev.prefix,
                         extra={"prefix": ev.prefix, "label": "FM:3-3", "function": "controller"})

    async def _move_lease(self, core: ControllerCore, ev: MoveLease) -> None:
        """FM:3-2 before FM:5-1: move the lease, then tell the controller."""
        duid = self.kea.duids.get(ev.dpa) if self.kea is not None else None
        ok, reason = False, f"no DUID known for anchor {ev.dpa}"
        if self.kea is None or duid is None:
            self.kea_done["no-duid"] += 1
        else:
            try:
                await move_delegation(self.kea.control, ev.prefix, duid)
            except KeaError as exc:
                self.kea_done["failed"] += 1
                reason = f"Kea: {exc}"
            else:
                ok, reason = True, ""
                self.kea_done["lease6-update"] += 1
                log.info("%s's DHCPv6-PD lease given to %s (lease6-update)", ev.prefix,
                         duid.hex(), extra={"prefix": ev.prefix, "label": "FM:3-2",
                                            "function": "controller"})
        if not ok:
            log.error("moving %s's lease: %s", ev.prefix, reason)
        core.lease_moved(ev.prefix, ev.dpa, ok, reason, clock.now())
        self.pump_controller()

    def pd(self, ev: DelegationEvent) -> None:
        """A DHCPv6-PD client event."""
        if isinstance(ev, Delegated):
            if not ev.renewed:
                log.info("DHCPv6-PD: %s delegated here (valid %d s)", ev.prefix, ev.valid,
                         extra={"prefix": ev.prefix, "label": "FM:3-2", "function": "pd"})
        elif isinstance(ev, Returned):
            log.info("DHCPv6-PD: %s given back", ev.prefix,
                     extra={"prefix": ev.prefix, "label": "FM:3-2", "function": "pd"})
        elif isinstance(ev, Refused):
            log.warning("DHCPv6-PD: %s not delegated here: %s", ev.prefix, ev.reason,
                        extra={"prefix": ev.prefix, "label": "FM:3-2", "function": "pd"})
        else:
            log.error("DHCPv6-PD: the lease of %s ended unrenewed", ev.prefix)
        if self.trace is not None:
            self.trace.write({"fn": "pd", "event": type(ev).__name__.lower(),
                              "prefix": str(ev.prefix)})

    @staticmethod
    def bgp(ev: BgpEvent) -> None:
        """A BGP session event."""
        if isinstance(ev, SessionUp):
            log.info("BGP session up (AS %d, hold %d s)", ev.peer_as, ev.hold_time)
        elif isinstance(ev, SessionDown):
            log.warning("BGP session down: %s", ev.reason)

    async def stop(self) -> None:
        """Cancel lease moves under way (each is bounded by its timeout)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def anchor_effects(agent: AnchorAgentCore, pd: PdDriver | None, access: AccessLinks | None,
                   bgp: BgpSpeaker | None, trace: Trace | None,
                   take_charges: Callable[[TakeCharges], None]) -> None:
    """Carry out the anchor agent's effects - BGP announcements, DHCPv6-PD
    delegations, Router Advertisements, FM:2 charges (``take_charges``
    starts taking them) - then let the access links' source filters follow
    its MNs."""
    while (effect := agent.next_event()) is not None:
        if isinstance(effect, Announce):
            if bgp is None:
                continue
            on, prefix = effect.on, effect.prefix
            bgp.change([] if on else [prefix], [prefix] if on else [])
            if trace is not None:
                trace.write({"fn": "bgp", "dir": "announce" if on else "withdraw",
                             "prefix": str(prefix)})
        elif isinstance(effect, Delegate):
            if pd is None:
                continue
            if effect.on:
                # A prefix visiting from another network is still delegated
                # there: ask for it without taking another.
                pd.hold(effect.prefix, moving=agent.moving_in(effect.prefix))
            else:
                pd.let_go(effect.prefix)
        elif isinstance(effect, TakeCharges):
            take_charges(effect)
        elif isinstance(effect, LeaseStayed):
            log.warning("%s stays anchored at %s, tunnelled here (4.1.2): its lease did not "
                        "move: %s", effect.prefix, effect.anchor, effect.reason,
                        extra={"prefix": effect.prefix, "label": "FM:3-2", "function": "anchor"})
            if trace is not None:
                trace.write({"fn": "anchor", "event": "tunnelled", "prefix": str(effect.prefix),
                             "dpa": str(agent.s.dpa), "anchor": str(effect.anchor),
                             "reason": effect.reason})
        elif access is not None:
            access.advertise_mns(effect.link)
    if access is not None:
        access.sync_sources()
