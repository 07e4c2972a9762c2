"""Timeline ``attack`` steps: a host sends one forged signalling message.

Issue 15's attacks, on real kernels: from a host (typically the
correspondent), one datagram to a node's agent - unsigned, or signed with a
key the attacker stole from another node.  Each kind of message is built by
a function registered under its name (:data:`ATTACKS`), from the run's plan
and the victim flow's prefix.  The scenario then expects the victim's flow
to lose nothing and the node to count the drop (``expect: security``).

    - {at: 1.0, attack: {from: cn, to: ar1, send: buffer-ready, flow: probe,
                         via: ar2, key: none}}
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..wire import messages as m
from ..wire.auth import Security
from ..wire.types import EntryKind, ForwardingEntry, Prefix
from .plan import ANCHOR_PORT, CTRL_PORT, LMS_PORT, Plan

if TYPE_CHECKING:
    from ..emulation.lab import Lab
    from ..transport.reliable import Addr


@dataclass(frozen=True, slots=True)
class Target:
    """What an attack names: the victim's prefix and the node it pretends for."""

    prefix: Prefix
    """The victim flow's /64."""
    to: str
    """The node attacked."""
    via: str
    """Another node of the plan (whose address the attack names)."""
    plan: Plan


Builder = Callable[[Target], tuple[m.Message, str]]
"""Builds the message and says which function it goes to (anchor,
controller or lms)."""

ATTACKS: dict[str, Builder] = {}
"""Attack name -> builder."""


def attack(name: str) -> Callable[[Builder], Builder]:
    """Register a builder under ``name``."""
    def register(fn: Builder) -> Builder:
        ATTACKS[name] = fn
        return fn
    return register


def _dpa(t: Target) -> IPv6Address:
    dpa = t.plan.nodes[t.via].dpa
    return dpa if dpa is not None else IPv6Address("fc00::66:0")


@attack("buffer-ready")
def _buffer_ready(t: Target) -> tuple[m.Message, str]:
    """FM:6-2: send the victim's packets (held ones first) to ``via``."""
    return m.BufferReady(t.prefix, _dpa(t) + 1), "anchor"


@attack("buffer-ready-default")
def _buffer_ready_default(t: Target) -> tuple[m.Message, str]:
    """FM:6-2 for ::/0: every packet the router forwards, to ``via``."""
    return m.BufferReady(Prefix.parse("::/0"), _dpa(t) + 1), "anchor"


@attack("forwarding-delete")
def _forwarding_delete(t: Target) -> tuple[m.Message, str]:
    """FM:5-1: delete the delivery of the victim's prefix to its MN."""
    link = next(iter(t.plan.nodes[t.to].access), "")
    return m.ForwardingUpdate((), (ForwardingEntry(EntryKind.ANCHOR, t.prefix, link=link),)), \
        "anchor"


@attack("location-inform")
def _location_inform(t: Target) -> tuple[m.Message, str]:
    """LM:1-3: the victim's prefix is served at ``via`` now, for ever."""
    return m.LocationInform(t.prefix, _dpa(t), 0xFFFFFFFF), "anchor"


@attack("location-inform-controller")
def _location_inform_controller(t: Target) -> tuple[m.Message, str]:
    """LM:1-3 to the controller: re-route the core to ``via``."""
    return m.LocationInform(t.prefix, _dpa(t), 600), "controller"


@attack("registration")
def _registration(t: Target) -> tuple[m.Message, str]:
    """FM:4-1 in ``via``'s name, with another data-plane address."""
    covering = Prefix(t.prefix.network & ~((1 << 80) - 1), 48)
    return m.AnchorRegistration(t.via, IPv6Address("fc00::66:0"), IPv6Address("fc00::66:0"),
                                3600, (covering,)), "controller"


@attack("pool-join")
def _pool_join(t: Target) -> tuple[m.Message, str]:
    """LM:2-1: become an LM pool member primary for everything."""
    return m.PoolJoin("intruder", IPv6Address("fc00::66:0"),
                      (Prefix.parse("2001:db8::/32"),)), "lms"


def destination(plan: Plan, node: str, function: str) -> Addr:
    """Where ``function`` of ``node`` listens."""
    port = {"anchor": ANCHOR_PORT, "controller": CTRL_PORT, "lms": LMS_PORT}[function]
    return (plan.nodes[node].control, port)


@dataclass(frozen=True, slots=True)
class Forged:
    """One attack datagram, built (:func:`forge`)."""

    data: bytes
    dest: Addr
    """Where it goes: the attacked node's function."""
    text: str
    """What it is, for the run's progress."""


def forge(plan: Plan, args: dict[str, object], prefix: Prefix, now: float) -> Forged:
    """The datagram an ``attack`` step sends, signed at ``now`` (wall clock
    on kernels, virtual in the twin)."""
    kind, to, src = str(args["send"]), str(args["to"]), str(args["from"])
    key_of = str(args.get("key", "none"))
    msg, function = ATTACKS[kind](Target(prefix, to, str(args["via"]), plan))
    dest = destination(plan, to, function)
    stolen = plan.keys.get(key_of)
    sec = Security((stolen,), send_key_id=stolen.key_id) if stolen is not None else Security()
    # A fresh sequence number each: one seen from the same key would be
    # answered from the reply cache as a duplicate, never judged.
    data = sec.encode(msg, secrets.randbits(32), 0, now, dest)
    how = f"signed with {key_of}'s key" if stolen is not None else "unsigned"
    return Forged(data, dest,
                  f"attack: {src} sends {to}'s {function} a forged {msg.TYPE.name} ({how})")


def send(lab: Lab, plan: Plan, args: dict[str, object], prefix: Prefix) -> str:
    """Send one attack datagram as the step says; returns a description."""
    forged = forge(plan, args, prefix, time.time())
    sock = lab.socket(str(args["from"]))
    try:
        sock.sendto(forged.data, forged.dest)
    finally:
        sock.close()
    return forged.text
