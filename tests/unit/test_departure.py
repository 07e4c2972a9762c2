"""Departure without help: the old router learns the MN left from the network.

On a shared access link (no carrier event) and with no L2 trigger, nothing
tells the old router that its MN went.  Before, in switch mode its own
binding refresh then flipped HNP1 back to itself and black-holed it (1063 of
2900 packets dropped).  Now it learns the departure from the draft's own
mechanism - the LM:1-3 inform it gets when the new router updates the MN's
location - or, at the latest, from the FM:6-2 that hands the prefix on.
"""

from __future__ import annotations

import pytest

from dmanchor.sim.traffic import report, start_flow
from dmanchor.wire.types import EntryKind
from tests.unit.test_fm import HNP1, HNP2, IP1, downlink, filter_of, world


def move_unannounced(w: object, t: float, gap: float) -> None:
    """The MN goes from AR1 to AR2; AR1 is told nothing."""
    from tests.unit.test_fm import World

    assert isinstance(w, World)
    w.net.call_at(t, lambda: w.fab.detach("mn"))

    def up() -> None:
        w.fab.attach("mn", "ar2", "mn2")
        w.fab.add_address("mn", HNP2.network + 0x10)
    w.net.call_at(t + gap, up)


@pytest.mark.parametrize("mode", ["switch", "tunnel", "bgp"])
def test_the_old_router_learns_the_departure_and_never_takes_the_prefix_back(mode: str) -> None:
    w = world(mode, lifetime=2, hold_timeout=0.05)  # its binding refresh: every second
    flow = downlink("f", IP1, 0.2, 3.0)
    flt = filter_of(flow)
    start_flow(w.fab, flow)
    move_unannounced(w, 0.5, 0.02)
    w.at(0.52, 2, lambda a, now: a.attach("mn", "mn2", [HNP2], {HNP1: [flt]}, now))
    w.net.run(until=3.5)
    rep = report(w.fab, flow)
    # What went to AR1's link between the MN leaving and AR1 learning of it
    # is lost (the radio is gone); from then on, nothing - also across two
    # rounds of AR1's binding refresh (at 1 s and 2 s).
    got = {d.packet.seq for d in w.fab.received("mn") if d.packet.flow == "f"}
    assert rep.duplicates == 0 and rep.lost <= 40, rep
    assert set(range(400, rep.sent)) <= got, sorted(set(range(400, rep.sent)) - got)[:10]
    assert "mn" not in w.ar[1].attached
    assert not [e for e in w.fab.routers["ar1"].entries()
                if e.prefix == HNP1 and e.kind is EntryKind.ANCHOR]
    assert w.ar[1].stats.counters["departed"] == 1


def test_an_inform_about_a_visiting_prefix_does_not_end_the_visit() -> None:
    """An older point's last refresh of the prefix can cross the new router's
    claim: only informs about a router's own prefixes are taken as news of a
    departure (only their MN may move them, SM)."""
    from ipaddress import IPv6Address as A

    from dmanchor.wire import messages as m
    from tests.helpers import Collector

    w = world("tunnel", hold_timeout=0.05)
    flow = downlink("f", IP1, 0.2, 1.5)
    flt = filter_of(flow)
    start_flow(w.fab, flow)
    w.move(0.5, 0.02, HNP2, {HNP1: [flt]})
    probe = Collector()
    w.net.add(("fc00::99", 5400), probe)

    def stale() -> None:
        probe.ep.request(m.LocationInform(HNP1, A("fc00::1:0"), 600), ("fc00::2:0", 5400),
                         w.net.now)
        w.net.poll(("fc00::99", 5400))
    w.net.call_at(0.8, stale)
    w.net.run(until=2.0)
    assert "mn" in w.ar[2].attached and HNP1 in w.ar[2].attached["mn"].visiting
    assert w.ar[2].stats.counters["departed"] == 0
    assert report(w.fab, flow).lost == 0


def test_an_inform_from_anyone_but_the_lms_is_refused() -> None:
    """A forged LM:1-3 push saying the MN's own prefix is served elsewhere
    would make its router hold it: only the LMs subscribed at is heard."""
    from ipaddress import IPv6Address as A

    from dmanchor.transport.reliable import NegativeReply
    from dmanchor.wire import messages as m
    from tests.helpers import Collector

    w = world("switch", hold_timeout=0.05)
    flow = downlink("f", IP1, 0.2, 1.0)
    start_flow(w.fab, flow)
    attacker = Collector()
    w.net.add(("fc00::99", 5401), attacker)

    def forge() -> None:
        attacker.ep.request(m.LocationInform(HNP1, A("fc00::2:0"), 600), ("fc00::1:0", 5400),
                            w.net.now)
        w.net.poll(("fc00::99", 5401))
    w.net.call_at(0.5, forge)
    w.net.run(until=1.5)
    assert [e for e in attacker.events if isinstance(e, NegativeReply)]
    assert w.ar[1].stats.counters["inform-refused"] == 1
    assert "mn" in w.ar[1].attached and w.ar[1].stats.counters["departed"] == 0
    assert report(w.fab, flow).lost == 0


def test_the_central_fm_cp_tells_the_old_anchor_to_hold_fm6_1() -> None:
    """Switch mode, unannounced, and AR1 hears no LM:1-3 (lost on the way):
    the central FM-CP, which saw the binding move, tells AR1 the MN left
    (FM:6-1) before it hands the prefix on (FM:6-2) - AR1 holds from then."""
    from dmanchor.fm.anchor_model import PrefixEvent as Ev
    from dmanchor.fm.anchor_model import PrefixState as St
    from dmanchor.runtime.virtual import LinkProfile
    from tests.unit.test_call_flows import Trace, life_of, record_lives

    w = world("switch", hold_timeout=0.05)
    w.net.links[("fc00::d", "fc00::1:0")] = LinkProfile(loss=1.0)  # LMs -> AR1
    record_lives(w)
    trace = Trace(w.net)
    flow = downlink("f", IP1, 0.2, 1.5)
    start_flow(w.fab, flow)
    move_unannounced(w, 0.5005, 0.02)
    w.at(0.5205, 2, lambda a, now: a.attach("mn", "mn2", [HNP2], {HNP1: [filter_of(flow)]},
                                            now))
    w.net.run(until=2.0)
    trace.assert_order([("ctrl", "ar1", "BUFFER_REQUEST"), ("ar1", "ctrl", "BUFFER_ACK"),
                        ("ctrl", "ar1", "BUFFER_READY")], since=0.5)
    assert trace.count("LOCATION_INFORM", since=0.5) >= 1  # to the controller, not AR1
    assert life_of(w.ar[1], HNP1) == [(Ev.LEFT, St.HELD), (Ev.READY, St.HANDED)]
    assert w.ar[1].stats.counters["buffer-request"] == 1
    rep = report(w.fab, flow)
    assert rep.duplicates == 0 and rep.reordered == 0 and rep.lost <= 40, rep
