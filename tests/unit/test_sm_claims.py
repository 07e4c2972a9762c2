"""SM: a host cannot claim another MN's prefix, in every anchoring mode.

Reproduces the attack found in review, in virtual time with the real cores:
while the MN on AR1 receives a flow on HNP1, a second host attaches at AR2
and names HNP1 as its previous prefix (as the RS option lets any host do).
Before, AR2 claimed HNP1 for it and the victim lost 400 of 1400 packets.
Now the location binding names the MN that uses HNP1 (its identity at the
access link); the claim is refused, counted, and the victim loses nothing.
"""

from __future__ import annotations

import pytest

from dmanchor.sim.traffic import report, start_flow
from dmanchor.wire.types import EntryKind
from tests.unit.test_fm import HNP1, HNP2, IP1, assert_lossless, downlink, filter_of, world

MODES = ["tunnel", "switch", "bgp"]


@pytest.mark.parametrize("mode", MODES)
def test_a_host_naming_another_mns_prefix_gets_nothing(mode: str) -> None:
    w = world(mode, hold_timeout=0.05)
    flow = downlink("victim", IP1, 0.2, 1.6)
    start_flow(w.fab, flow)
    w.fab.add_host("evil")

    def evil_arrives() -> None:
        w.fab.attach("evil", "ar2", "ev2")
        w.fab.add_address("evil", IP1)  # it would take the victim's packets
    w.net.call_at(0.5, evil_arrives)
    w.at(0.5, 2, lambda a, now: a.attach("02:00:00:00:0e:01", "ev2", [HNP2],
                                         {HNP1: [filter_of(flow)]}, now))
    w.net.run_for(2.0 - w.net.now)
    assert_lossless(report(w.fab, flow))
    assert not [d for d in w.fab.received("evil") if d.packet.flow == "victim"]
    assert w.ar[2].stats.counters["claim-refused"] == 1
    assert HNP1 not in w.ar[2].visiting
    assert not [e for e in w.fab.routers["ar2"].entries() if e.prefix == HNP1]
    # The victim's anchoring is as it was: at AR1, on its link.
    assert any(e.kind is EntryKind.ANCHOR and e.prefix == HNP1 and e.link == "mn1"
               for e in w.fab.routers["ar1"].entries())
    if mode == "switch":
        assert w.lms.counters["update-refused:other-mn"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_the_mn_itself_still_keeps_its_prefix_when_it_moves(mode: str) -> None:
    """The same check lets the MN the binding names take its prefix along."""
    w = world(mode, hold_timeout=0.05)
    flow = downlink("f", IP1, 0.2, 1.2)
    start_flow(w.fab, flow)
    w.move(0.5, 0.02, HNP2, {HNP1: [filter_of(flow)]})
    w.net.run_for(1.6 - w.net.now)
    assert_lossless(report(w.fab, flow))
    assert w.ar[2].stats.counters["claim-refused"] == 0
