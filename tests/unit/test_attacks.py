"""Issue 15's attacks against the real cores, in virtual time.

Every node signs with its own key (the default, as deployed).  During a
session to the MN at ar1 (a 1000 pps downlink), an attacker sends one
message; each test checks that the victim's flow loses nothing and keeps
its path, that the message changed nothing, and that it was dropped or
refused and counted by reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv6Address as A

import pytest

from dmanchor.dataplane.api import BufferSpec, DataPlaneError
from dmanchor.fm.controller import DpReport
from dmanchor.lm.lmp import LmpCore
from dmanchor.lm.lms import LmsCore, LmsSettings
from dmanchor.lm.subscriptions import Subscriptions
from dmanchor.runtime.virtual import VirtualNetwork
from dmanchor.sim.traffic import Flow, report, start_flow
from dmanchor.transport.reliable import Addr, Endpoint, MessageReceived, NegativeReply
from dmanchor.wire import messages as m
from dmanchor.wire.auth import Key, Role, Security
from dmanchor.wire.types import Cause, EntryKind, ForwardingEntry, Load, Prefix
from tests.helpers import Collector
from tests.unit.test_fm import (
    CTRL,
    HNP1,
    IP1,
    LMS,
    R_CTL,
    World,
    assert_lossless,
    downlink,
    world,
)

EVIL: Addr = ("fc00::66", 5400)
"""Where the attacker sends from (a host on the correspondent's side)."""
AR1: Addr = ("fc00::1:0", 5400)
THIRD_SID = A("fc00::9:1")
"""A router that has nothing to do with the MN (where traffic would go)."""


@dataclass
class Scene:
    """The signed network, the victim's session, ar1's forwarding before."""

    w: World
    flow: Flow
    before: frozenset[ForwardingEntry]


class Raw:
    """A host that sends bytes it captured, as they are."""

    def __init__(self) -> None:
        self.out: list[tuple[bytes, Addr]] = []

    def receive_datagram(self, data: bytes, source: Addr, now: float,
                         local: Addr | None = None) -> None:
        pass

    def handle_timer(self, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self.out = self.out, []
        return out


def attacker(w: World, key: Key | None) -> Collector:
    """A host on the network, signing with ``key`` (stolen, or its own)."""
    return attacker_at(w, key, EVIL)


def attacker_at(w: World, key: Key | None, at: Addr) -> Collector:
    keys = tuple(w.keys.values())
    sec = Security(keys, send_key_id=key.key_id) if key is not None else Security()
    evil = Collector(Endpoint(security=sec))
    w.net.add(at, evil)
    return evil


def attack(w: World, evil: Collector, msg: m.Message, dest: Addr, at: float = 0.3) -> None:
    def go() -> None:
        evil.ep.request(msg, dest, w.net.now)
        w.net.poll(EVIL)
    w.net.call_at(at, go)


def victim_unharmed(sc: Scene) -> None:
    """The MN's session at ar1 ran to its end, every packet, by ar1 only,
    and ar1 forwards as it did before the attack."""
    rep = report(sc.w.fab, sc.flow)
    assert_lossless(rep)
    assert rep.paths == (("cn", "r", "ar1", "mn"),)
    assert frozenset(sc.w.ar[1].dp.entries()) == sc.before


def refused(evil: Collector) -> list[Cause]:
    return [e.status.code for e in evil.events if isinstance(e, NegativeReply)]


@pytest.fixture
def sc() -> Scene:
    w = world("tunnel", signed=True)
    flow = downlink("victim", IP1, 0.1, 1.0)
    start_flow(w.fab, flow)
    w.net.run(until=0.2)
    return Scene(w, flow, frozenset(w.ar[1].dp.entries()))


def test_unsigned_buffer_ready_and_forwarding_update_are_dropped(sc: Scene) -> None:
    w = sc.w
    # The attacks that cost 4772 and 5892 of 6000 packets on real kernels.
    evil = attacker(w, None)
    attack(w, evil, m.BufferReady(HNP1, A("fc00::2:1")), AR1, 0.3)
    attack(w, evil, m.ForwardingUpdate(
        (), (ForwardingEntry(EntryKind.ANCHOR, HNP1, link="mn1"),)), AR1, 0.35)
    w.net.run(until=1.5)
    victim_unharmed(sc)
    assert w.ar[1].endpoint.stats.drops["unauthenticated"] >= 2
    assert not any(isinstance(e, MessageReceived) for e in evil.events)


def test_mn_agent_key_cannot_install_a_default_tunnel(sc: Scene) -> None:
    w = sc.w
    evil = attacker(w, w.keys["mn"])
    attack(w, evil, m.BufferReady(Prefix.parse("::/0"), THIRD_SID), AR1)
    attack(w, evil, m.BufferReady(Prefix.parse("2001:db8:2:1::/64"), THIRD_SID), AR1, 0.35)
    # HNP1 is ar1's, but its MN runs no agent bound to this key.
    attack(w, evil, m.BufferReady(HNP1, THIRD_SID), AR1, 0.4)
    w.net.run(until=1.5)
    victim_unharmed(sc)
    assert refused(evil) == [Cause.NOT_AUTHORIZED] * 3
    assert w.ar[1].refused == {"refused:BUFFER_READY:prefix-too-short": 1,
                               "refused:BUFFER_READY:not-our-prefix": 1,
                               "refused:BUFFER_READY:not-its-prefix": 1}


def test_a_host_based_mn_s_own_agent_may_claim_its_prefix() -> None:
    # Fig 2a: the MN's own agent (its key bound to its MN-ID) sends FM:6-2
    # for the prefix the anchor gave it: believed (another MN's: see above).
    w = world("tunnel", signed=True, host_based={"mn": "mn"})
    agent = attacker(w, w.keys["mn"])
    coa = A("2001:db8:2:1::5")
    attack(w, agent, m.BufferReady(HNP1, coa), AR1, 0.2)
    w.net.run(until=0.5)
    assert not w.ar[1].refused
    assert ForwardingEntry(EntryKind.TUNNEL, HNP1, coa) in w.ar[1].dp.entries()


def test_another_anchor_may_draw_traffic_only_to_itself(sc: Scene) -> None:
    w = sc.w
    evil = attacker(w, w.keys["ar2"])  # ar2's key, from another host
    attack(w, evil, m.BufferReady(HNP1, THIRD_SID), AR1)
    attack(w, evil, m.BufferReady(HNP1, A("fc00::2:1")), AR1, 0.35)  # ar2, but not from ar2
    w.net.run(until=1.5)
    victim_unharmed(sc)
    assert refused(evil) == [Cause.NOT_AUTHORIZED] * 2
    assert w.ar[1].refused == {"refused:BUFFER_READY:not-its-address": 2}


def test_only_the_controller_sends_forwarding_updates(sc: Scene) -> None:
    w = sc.w
    evil = attacker(w, w.keys["ar2"])
    attack(w, evil, m.ForwardingUpdate(
        (ForwardingEntry(EntryKind.TUNNEL, Prefix.parse("::/0"), THIRD_SID),), ()), AR1)
    w.net.run(until=1.5)
    victim_unharmed(sc)
    assert refused(evil) == [Cause.NOT_AUTHORIZED]
    assert w.ar[1].refused == {"refused:FORWARDING_UPDATE:role": 1}
    # FM:5-1 at the core router: only from the controller too.
    attack(w, evil, m.ForwardingUpdate((), ()), ("fc00::ff", 5400), 1.6)
    w.net.run(until=2.0)
    assert w.r.refused == {"refused:FORWARDING_UPDATE:role": 1}


def test_a_forged_registration_does_not_move_an_anchor(sc: Scene) -> None:
    w = sc.w
    evil = attacker(w, w.keys["ar2"])
    attack(w, evil, m.AnchorRegistration("ar1", A("fc00::9:0"), A("fc00::9:0"), 600,
                                         (Prefix.parse("2001:db8:1::/48"),)), CTRL)
    attack(w, evil, m.DataPlaneStatus("r", Load(False, 100)), CTRL, 0.35)
    w.net.run(until=1.5)
    victim_unharmed(sc)
    reg = w.ctrl.discover(HNP1, w.net.now)
    assert reg is not None and reg.dpa == A("fc00::1:0")
    assert w.ctrl.refused == {"refused:ANCHOR_REGISTRATION:not-own-id": 1,
                              "refused:DATAPLANE_STATUS:not-own-id": 1}
    assert "r" not in w.ctrl.down


def test_forged_location_informs_are_refused(sc: Scene) -> None:
    w = sc.w
    evil = attacker(w, w.keys["ar2"])
    # LM:1-3 only from the LMs: an anchor's key will not do, at an anchor or
    # at the controller (which would re-route the core and move the lease).
    attack(w, evil, m.LocationInform(HNP1, THIRD_SID, 4_294_967_295), AR1)
    attack(w, evil, m.LocationInform(HNP1, THIRD_SID, 600), CTRL, 0.35)
    w.net.run(until=1.5)
    victim_unharmed(sc)
    assert w.ar[1].refused == {"refused:LOCATION_INFORM:role": 1}
    assert w.ctrl.refused == {"refused:LOCATION_INFORM:role": 1}


def test_pool_membership_needs_an_lms_key(sc: Scene) -> None:
    w = sc.w
    evil = attacker(w, w.keys["ar2"])
    attack(w, evil, m.PoolJoin("ar2", A("fc00::66"), (Prefix.parse("2001:db8::/32"),)), LMS)
    w.net.run(until=1.5)
    victim_unharmed(sc)
    assert w.lms.refused == {"refused:POOL_JOIN:role": 1}
    assert not w.lms.members


def test_a_captured_message_is_refused_from_anywhere_else_and_at_any_other_node(
        sc: Scene) -> None:
    w = sc.w
    # Capture the signed LM:1-4 ar1 sends the LMs, replay it from the
    # attacker's address to the LMs, and to the controller.
    captured: list[bytes] = []
    w.net.taps.append(lambda t, src, dst, data: captured.append(data)
                      if src == AR1 and dst == LMS else None)
    w.move(0.4, 0.02, Prefix.parse("2001:db8:2:1::/64"), previous={HNP1: []})
    w.net.run(until=0.5)
    assert captured
    replays = Raw()
    w.net.add(EVIL, replays)

    def replay() -> None:
        for data in captured:
            replays.out += [(data, LMS), (data, CTRL)]
        w.net.poll(EVIL)
    w.net.call_at(0.6, replay)
    w.net.run(until=1.5)
    assert w.lms.endpoint.stats.drops["replay"] == len(captured)
    assert w.lms.lookup(HNP1, w.net.now) is not None
    assert w.ctrl.endpoint.stats.drops["bad-mac"] == len(captured)


def endpoints(**roles: Role) -> Callable[[str], Endpoint]:
    """Signed endpoints for nodes named with their role, each its own key."""
    keys = {name: Key(k, bytes([k]) * 32, name, frozenset({role}))
            for k, (name, role) in enumerate(roles.items(), start=1)}

    def endpoint(name: str) -> Endpoint:
        return Endpoint(security=Security(tuple(keys.values()), send_key_id=keys[name].key_id,
                                          require_auth=True))
    return endpoint


def test_pool_origin_is_trusted_only_from_members() -> None:
    # A non-member's update naming another node as ORIGIN is judged on its
    # own key: it may not update the prefix that node is authorized for.
    ep = endpoints(lms=Role.LMS, ar1=Role.ANCHOR, ar2=Role.ANCHOR)
    net = VirtualNetwork(seed=1)
    lms = LmsCore(LmsSettings("lms", authorization={"ar1": (HNP1,), "ar2": ()}), ep("lms"))
    net.add(LMS, lms)
    evil = Collector(ep("ar2"))
    net.add(EVIL, evil)
    evil.ep.request(m.LocationUpdate(HNP1, THIRD_SID, 600, origin="ar1"), LMS, net.now)
    net.poll(EVIL)
    net.run_for(1)
    assert refused(evil) == [Cause.NOT_AUTHORIZED]
    assert lms.lookup(HNP1, net.now) is None


# -- Bounded state --------------------------------------------------------------------


def test_subscriptions_are_capped_expire_and_are_swept() -> None:
    subs = Subscriptions(cap=3, max_lifetime=10)
    a, b = ("fc00::a", 1), ("fc00::b", 1)
    p1, p2, p3 = (Prefix.parse(f"2001:db8:{i}::/48") for i in (1, 2, 3))
    assert subs.add([p1, p2], a, 1e9, 0) == [p1, p2]  # lifetime capped at 10 s
    assert subs.add([p1, p2], b, 5, 0) is None  # 4 pairs > 3: refused whole
    assert subs.refused == 1 and len(subs) == 2
    assert subs.add([p1], b, 5, 0) == []
    assert sorted(subs.live(Prefix.parse("2001:db8:1:1::/64"), 1)) == [a, b]
    assert subs.live(Prefix.parse("2001:db8:1:1::/64"), 6) == [a]  # b's expired
    assert subs.sweep(11) == 2 and len(subs) == 0
    assert subs.add([p1, p2, p3], b, 5, 11) == [p1, p2, p3]


def test_lms_refuses_subscriptions_beyond_its_cap(sc: Scene) -> None:
    w = sc.w
    w.lms.subs.cap = len(w.lms.subs) + 1
    evil = attacker(w, w.keys["ar2"])
    many = tuple(Prefix.parse(f"2001:db8:{i:x}::/48") for i in range(0x100, 0x110))
    attack(w, evil, m.Subscribe(many, 4_294_967_295), LMS)
    w.net.run(until=1.5)
    victim_unharmed(sc)
    assert refused(evil) == [Cause.RESOURCE_EXHAUSTED]
    assert w.lms.counters["subscribe-refused-full"] == 1


def test_registry_and_status_tables_are_capped(sc: Scene) -> None:
    w = sc.w
    w.ctrl.s = replace(w.ctrl.s, max_registered=len(w.ctrl.registry))
    evil = attacker(w, w.keys["ar2"])
    attack(w, evil, m.AnchorRegistration(
        "ar2", A("fc00::2:0"), A("fc00::2:0"), 600,
        tuple(Prefix.parse(f"2001:db8:{i:x}::/48") for i in range(0x100, 0x140))), CTRL)
    w.net.run(until=1.5)
    victim_unharmed(sc)
    assert refused(evil) == [Cause.RESOURCE_EXHAUSTED]
    assert w.ctrl.counters["registration-refused-full"] == 1
    # The table is full with the data planes already reporting: one more
    # (here ar2's, forgotten) is refused, whoever sends it.
    w.ctrl.status.pop("ar2", None)
    w.ctrl.s = replace(w.ctrl.s, max_dataplanes=len(w.ctrl.status))
    stranger = attacker_at(w, w.keys["ar2"], ("fc00::67", 5400))
    stranger.ep.request(m.DataPlaneStatus("ar2", Load(True, 1)), CTRL, w.net.now)
    w.net.poll(("fc00::67", 5400))
    w.net.run(until=2.0)
    assert w.ctrl.counters["status-refused-full"] >= 1 and "ar2" not in w.ctrl.status


def test_a_peer_cannot_ask_for_a_bigger_or_longer_hold_than_configured(sc: Scene) -> None:
    w = sc.w
    evil = attacker(w, w.keys["ctrl"])  # even the controller's key
    held = Prefix.parse("2001:db8:1:99::/64")
    attack(w, evil, m.BufferRequest(held, 10**9, 10**9), R_CTL)
    # An anchor takes FM:6-1 as the news that an attached MN left: for a
    # prefix no MN of it uses, nothing is held at all.
    attack(w, evil, m.BufferRequest(held, 10**9, 10**9), AR1)
    w.net.run(until=0.5)
    spec = w.fab.routers["r"].buffer_spec(held)
    assert spec is not None
    assert spec.limit == BufferSpec().limit and spec.timeout == w.r.fn.default_buffer.timeout
    assert w.fab.routers["ar1"].buffer_spec(held) is None
    assert w.ar[1].stats.counters["buffer-request"] == 1


def test_lmp_believes_only_its_lms_and_caches_for_a_bounded_time() -> None:
    ep = endpoints(lms=Role.LMS, lmp=Role.LMP, evil=Role.LMS)
    net = VirtualNetwork(seed=1)
    lmp_at: Addr = ("fc00::e", 5400)
    lmp = LmpCore([LMS], ep("lmp"), max_cache_age=30)
    net.add(lmp_at, lmp)
    evil = Collector(ep("evil"))  # an LMs key, not its LMs
    net.add(EVIL, evil)
    evil.ep.request(m.LocationInform(HNP1, THIRD_SID, 4_294_967_295), lmp_at, net.now)
    net.poll(EVIL)
    net.run_for(1)
    assert refused(evil) == [Cause.NOT_AUTHORIZED] and HNP1 not in lmp.cache
    lms = Collector(ep("lms"))
    net.add(LMS, lms)
    lms.ep.request(m.LocationInform(HNP1, A("fc00::1:0"), 4_294_967_295), lmp_at, net.now)
    net.poll(LMS)
    net.run_for(1)
    assert lmp.cache[HNP1].expires <= net.now + 30


def test_a_data_plane_failure_is_a_negative_reply_not_a_request_left_in_progress(
        sc: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 16: a handler that met a data-plane error left the request "in
    # progress": the peer's retransmissions were dropped as duplicates.
    w = sc.w

    def refuse(*_: object, **__: object) -> None:
        raise DataPlaneError("RTM_NEWROUTE: No such device")
    monkeypatch.setattr(w.ar[1].dp, "apply", refuse)
    peer = attacker(w, w.keys["ctrl"])
    attack(w, peer, m.BufferReady(HNP1, A("fc00::2:1")), AR1)
    w.net.run(until=0.5)
    [nack] = [e for e in peer.events if isinstance(e, NegativeReply)]
    assert nack.status.code is Cause.INVALID_STATE and "No such device" in nack.status.message
    assert w.ar[1].failed == {"BUFFER_READY": 1}


def test_the_key_not_the_address_says_whose_sid_a_buffer_ready_names() -> None:
    # With agent_ids the anchor judges the named DPA by the signer's key:
    # ar2's key may name ar2 (from wherever it is sent), never ar3.
    ids = {A("fc00::2:0"): "ar2", A("fc00::3:0"): "ar3"}
    w = world("tunnel", n=3, signed=True, agent_ids=ids)
    evil = attacker(w, w.keys["ar2"])
    attack(w, evil, m.BufferReady(HNP1, A("fc00::3:1")), AR1, 0.2)
    w.net.run(until=0.5)
    assert w.ar[1].refused == {"refused:BUFFER_READY:not-its-address": 1}
    attack(w, evil, m.BufferReady(HNP1, A("fc00::2:1")), AR1, 0.6)
    w.net.run(until=0.9)
    assert w.ar[1].refused == {"refused:BUFFER_READY:not-its-address": 1}
    assert ForwardingEntry(EntryKind.TUNNEL, HNP1, A("fc00::2:1")) in w.ar[1].dp.entries()


def test_a_data_plane_long_silent_is_forgotten(sc: Scene) -> None:
    # The FM:5-2 table holds data planes still heard: one silent for ten
    # minutes is forgotten (a forged or departed node does not stay for ever).
    w = sc.w
    w.ctrl.status["ghost"] = DpReport(w.net.now, Load(True, 0), None)
    w.net.run(until=w.net.now + 700)
    assert "ghost" not in w.ctrl.status and "ghost" not in w.ctrl.down
    assert w.ctrl.counters["dataplane-forgotten"] == 1
    assert "r" in w.ctrl.status and "r" not in w.ctrl.down  # still reporting


def test_the_central_fm_cp_moves_an_access_routers_tunnel_only_for_its_switches() -> None:
    """Fig 1c with the CPA apart: the controller re-points an access router's
    tunnel only to the DPA of a switch below it, only when that switch asks
    (its own key), never for the router's whole network; and only the switch
    a prefix is tunnelled to may hand it back."""
    from dmanchor.fm.central_cp import AccessControl
    from dmanchor.fm.controller import ControllerCore, ControllerSettings

    ep = endpoints(ctrl=Role.CONTROLLER, fw11=Role.ANCHOR, fw12=Role.ANCHOR, ar1=Role.FMDP)
    net = VirtualNetwork(seed=1)
    fw11, fw12 = A("fc00:1::1:0"), A("fc00:1::2:0")
    ar1: Addr = ("fc00::1:0", 5402)
    ctrl = ControllerCore(ControllerSettings(cpa=A("fc00::c"), access=(
        AccessControl("ar1", ar1, A("fc00::1:0"), (Prefix.parse("2001:db8:1::/48"),),
                      {fw11: "fw11", fw12: "fw12"}),)), ep("ctrl"))
    net.add(CTRL, ctrl)
    dp = Collector(ep("ar1"))
    net.add(ar1, dp)
    evil, honest = Collector(ep("fw12")), Collector(ep("fw11"))
    net.add(EVIL, evil)
    net.add(("fc00:1::1:0", 5400), honest)

    def ask(who: Collector, at: Addr, msg: m.Message) -> None:
        who.ep.request(msg, CTRL, net.now)
        net.poll(at)
        net.run_for(0.2)
    ask(evil, EVIL, m.BufferReady(HNP1, fw11))                    # another switch's DPA
    ask(evil, EVIL, m.BufferReady(HNP1, A("fc00:9::1:0")))        # no switch below AR1
    ask(evil, EVIL, m.BufferReady(Prefix.parse("2001:db8:1::/48"), fw12))  # the whole network
    assert refused(evil) == [Cause.NOT_AUTHORIZED] * 3
    assert not [e for e in dp.events if isinstance(e, MessageReceived)]  # AR1 untouched
    ask(honest, ("fc00:1::1:0", 5400), m.BufferReady(HNP1, fw11))  # FW11 serves HNP1
    [update] = [e for e in dp.events if isinstance(e, MessageReceived)]
    assert isinstance(update.message, m.ForwardingUpdate)
    dp.ep.reply(update, m.ForwardingUpdateAck(1), net.now)
    net.poll(ar1)
    net.run_for(0.2)
    assert ctrl.access.tunnels == {HNP1: fw11}
    ask(evil, EVIL, m.FmHandoff(HNP1, "ar1", A("fc00::1:0")))     # not served at FW12
    assert refused(evil)[-1] is Cause.NOT_AUTHORIZED and ctrl.access.tunnels == {HNP1: fw11}
    assert ctrl.access.counters["refused:BUFFER_READY:not-its-address"] == 1


def test_only_the_controller_may_tell_an_anchor_its_mn_left(sc: Scene) -> None:
    """FM:6-1 makes an anchor hold an attached MN's own prefix: from another
    anchor's key it is refused, and the session runs on."""
    evil = attacker(sc.w, sc.w.keys["ar2"])
    attack(sc.w, evil, m.BufferRequest(HNP1), AR1)
    sc.w.net.run(until=1.5)
    victim_unharmed(sc)
    assert refused(evil) == [Cause.NOT_AUTHORIZED]
    assert sc.w.ar[1].refused == {"refused:BUFFER_REQUEST:role": 1}
