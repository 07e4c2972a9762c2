"""Host-based placements (draft Fig 2a/2b): the MN holds FM and LMc.

After the move the MN itself claims HNP1 from its anchor and ends the SRv6
tunnel on its care-of address; the new access router does nothing for HNP1.
"""

from __future__ import annotations

from ipaddress import IPv6Address as A
from pathlib import Path

import pytest

from dmanchor.fm.mn_agent import MnAgentCore, MnAgentSettings
from dmanchor.lm.lmp import LmpCore
from dmanchor.mn.host import sessions_in_use
from dmanchor.sim.traffic import report, start_flow
from dmanchor.transport.reliable import Addr
from dmanchor.wire.messages import MsgType
from dmanchor.wire.types import EntryKind, ForwardingEntry, Prefix
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


def test_the_agent_sees_its_own_moves_from_what_its_stack_holds() -> None:
    """No one tells a host-based MN it moved: a preferred address in a new
    /64 is a new network; the prefixes of its open sessions are claimed to
    its SID there (<new prefix>::5); the first network is just where it is."""
    agent = MnAgentCore(MnAgentSettings("mn", CTRL, LMS))
    ip1, ip2, ip3 = A(IP1), A(IP2), A("2001:db8:3:1::10")
    assert agent.addresses([], set(), 0.0) is None  # not attached yet
    assert agent.addresses([(ip1, True)], {ip1}, 0.1) is None  # its first network
    assert agent.addresses([(ip1, True)], {ip1}, 0.2) is None  # nothing new
    sent_before = agent.endpoint.stats.sent[MsgType.ANCHOR_DISCOVERY]
    sid = agent.addresses([(ip1, False), (ip2, True)], {ip1}, 0.3)
    assert sid == A("2001:db8:2:1::5") and agent.coa == sid
    # FM:4-3 for HNP1 only: the session on it needs it; HNP2 is where it is.
    assert agent.endpoint.stats.sent[MsgType.ANCHOR_DISCOVERY] == sent_before + 1
    # A session-less old prefix is not claimed - but the last care-of
    # prefix (HNP2) is, briefly: what was tunnelled to it follows the MN.
    assert agent.addresses([(ip1, False), (ip2, False), (ip3, True)], set(), 0.4) == \
        A("2001:db8:3:1::5")
    assert agent.endpoint.stats.sent[MsgType.ANCHOR_DISCOVERY] == sent_before + 2
    assert list(agent._discovering.values())[-1] == Prefix.parse("2001:db8:2:1::/64")


def test_back_home_the_agent_claims_only_its_last_care_of_prefix() -> None:
    """A return home shows as the home address heard of last (its router's
    RA refreshed it), not as a new address: the MN's SID moves into the
    home prefix, HNP1 itself is not claimed (its anchor serves it on its
    link again), and the last care-of prefix (HNP2) is, briefly."""
    agent = MnAgentCore(MnAgentSettings("mn", CTRL, LMS))
    ip1, ip2 = A(IP1), A(IP2)
    agent.addresses([(ip1, True)], {ip1}, 0.1)
    assert agent.addresses([(ip1, True), (ip2, True)], {ip1}, 0.2) == A("2001:db8:2:1::5")
    sent = agent.endpoint.stats.sent[MsgType.ANCHOR_DISCOVERY]
    assert agent.addresses([(ip2, True), (ip1, True)], {ip1}, 0.3) == A("2001:db8:1:1::5")
    assert agent.endpoint.stats.sent[MsgType.ANCHOR_DISCOVERY] == sent + 1
    assert list(agent._discovering.values())[-1] == Prefix.parse("2001:db8:2:1::/64")
    assert agent.counters["moves"] == 2


def test_sessions_in_use_are_read_from_the_kernels_tables(tmp_path: Path) -> None:
    """/proc/net/tcp6 and udp6: an established TCP connection and a bound
    UDP socket count; listening, closing and wildcard sockets do not."""
    head = "  sl  local_address                         remote_address  st\n"
    ip = "B80D0120010001000000000010000000"  # 2001:db8:1:1::10, in 32-bit host order
    ip2 = "B80D0120010002000000000010000000"  # 2001:db8:2:1::10
    anyone = "00000000000000000000000000000000"
    (tmp_path / "tcp6").write_text(head + f"   0: {ip}:1F90 {anyone}:0000 01\n"
                                   f"   1: {ip2}:1F91 {anyone}:0000 0A\n")
    (tmp_path / "udp6").write_text(head + f"   0: {ip2}:1388 {anyone}:0000 07\n"
                                   f"   1: {anyone}:0035 {anyone}:0000 07\n")
    assert sessions_in_use(tmp_path) == {A(IP1), A(IP2)}
    assert sessions_in_use(tmp_path / "missing") == set()
