"""Host-based placements (draft Fig 2a/2b): the MN holds FM and LMc.

After the move the MN itself claims HNP1 from its anchor and ends the SRv6
tunnel on its care-of address; the new access router does nothing for HNP1.
"""

from __future__ import annotations

from ipaddress import IPv6Address as A

import pytest

from dmanchor.fm.mn_agent import MnAgentCore, MnAgentSettings
from dmanchor.lm.lmp import LmpCore
from dmanchor.sim.traffic import report, start_flow
from dmanchor.transport.reliable import Addr
from dmanchor.wire.types import EntryKind, ForwardingEntry
from tests.unit.test_fm import CTRL, HNP1, HNP2, IP1, IP2, LMS, assert_lossless, downlink, world

LMP: Addr = ("fc00::e", 5400)


@pytest.mark.parametrize("proxy", [False, True], ids=["fig2a", "fig2b-lmp"])
def test_mn_claims_its_prefix_and_ends_the_tunnel_itself(proxy: bool) -> None:
    w = world("tunnel")
    if proxy:
        w.net.add(LMP, LmpCore([LMS]))
    coa = A(IP2)
    mn = MnAgentCore(MnAgentSettings("mn", CTRL, LMP if proxy else LMS))
    w.net.add((str(coa), 5400), mn)
    cont = downlink("cont", IP1, 0.1, 1.2)
    start_flow(w.fab, cont)

    def leave() -> None:
        w.fab.detach("mn")
    w.net.call_at(0.5005, leave)
    w.at(0.5005, 1, lambda a, now: a.detach("mn", now))

    def arrive() -> None:
        w.fab.attach("mn", "ar2", "mn2")
        w.fab.add_address("mn", IP2)
        w.fab.add_sid("mn", IP2)  # the MN decapsulates on its care-of address
        mn.moved(coa, [HNP1], w.net.now)
        w.net.poll((str(coa), 5400))
    w.net.call_at(0.53, arrive)
    # AR2 only serves the MN its own prefix: nothing about HNP1.
    w.at(0.53, 2, lambda a, now: a.attach("mn", "mn2", [HNP2], {}, now))
    w.net.run(until=2.0)
    rep = report(w.fab, cont)
    assert_lossless(rep)
    assert ("cn", "r", "ar1", "r", "ar2", "mn") in rep.paths
    assert not [e for e in w.fab.routers["ar2"].entries() if e.prefix == HNP1]
    assert ForwardingEntry(EntryKind.TUNNEL, HNP1, coa) in w.fab.routers["ar1"].entries()
    b = w.lms.lookup(HNP1, w.net.now)
    assert b is not None and b.forwarding_address == coa
    assert mn.counters["claimed"] == 1 and w.ar[1].stats.flushed > 0
