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
