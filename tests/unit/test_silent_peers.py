"""Silent peers (issue 16 item 3): a claim whose peer stays silent is
retried, in virtual time, with the project's cores."""

from __future__ import annotations

from dmanchor.sim.traffic import report, start_flow
from tests.unit.test_fm import HNP1, HNP2, IP1, World, downlink, filter_of, world

AR1_CTL = "fc00::1:0"
"""AR1's agent (its CPA is its DPA in the flat network)."""


def _received_after(w: World, flow: str, t: float) -> int:
    return sum(1 for d in w.fab.received("mn") if d.packet.flow == flow and d.at >= t)


def test_a_claim_the_home_anchor_missed_is_retried_when_it_answers_again() -> None:
    """4.1.2: HNP1's anchor (AR1) is unreachable for its signalling from
    just before the move until 3 s, so AR2's FM:6-2 to it times out.  AR2
    tries again, later each time, while the MN is still there; once AR1
    answers, its tunnel is re-pointed and the session is served again.
    (Before, the failure was counted and the session never came back.)"""
    w = world("tunnel")
    cont = downlink("cont", IP1, 0.1, 6.0)
    start_flow(w.fab, cont)
    w.net.call_at(0.49, lambda: w.net.down.add(AR1_CTL))
    w.move(0.5, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.net.call_at(3.0, lambda: w.net.down.discard(AR1_CTL))
    w.net.run(until=6.5)
    counters = w.ar[2].stats.counters
    assert counters["claim-retry"] >= 1 and counters["claim-abandoned"] == 0, counters
    # Served again well before the flow ends (the retries back off to 4 s at most).
    assert _received_after(w, cont.name, 5.5) >= 0.4 * cont.rate
    assert report(w.fab, cont).duplicates == 0


def test_a_claim_is_abandoned_and_counted_after_its_last_retry() -> None:
    """An anchor that never answers: the retries end (not one a second
    forever) and the abandoned claim is counted, for the operator."""
    w = world("tunnel", lifetime=600)
    cont = downlink("cont", IP1, 0.1, 1.0)
    start_flow(w.fab, cont)
    w.net.call_at(0.49, lambda: w.net.down.add(AR1_CTL))
    w.move(0.5, 0.03, HNP2, previous={HNP1: [filter_of(cont)]})
    w.net.run(until=60.0)
    counters = w.ar[2].stats.counters
    assert counters["claim-abandoned"] == 1, counters
    assert 1 <= counters["claim-retry"] <= 6, counters
