"""One representative instance of every message type (for vectors and tests)."""

from __future__ import annotations

from ipaddress import IPv6Address as A

from dmanchor.wire import messages as m
from dmanchor.wire.types import (
    Cause,
    DpState,
    EntryKind,
    FlowFilter,
    FlowState,
    ForwardingEntry,
    Load,
    MnBinding,
    Prefix,
    Status,
)

HNP1 = Prefix.parse("2001:db8:1:1::/64")
HNP2 = Prefix.parse("2001:db8:2:1::/64")
DPA1 = A("2001:db8:ff::1")
DPA2 = A("2001:db8:ff::2")
CPA = A("2001:db8:fe::1")
FLOW = FlowFilter(
    Prefix.parse("2001:db8:1:1::10/128"), Prefix.parse("2001:db8:99::1/128"), 6, 40000, 443
)
ENTRIES = (
    ForwardingEntry(EntryKind.ANCHOR, HNP2, link="mn0"),
    ForwardingEntry(EntryKind.TUNNEL, HNP1, DPA2, metric=10),
    ForwardingEntry(EntryKind.ROUTE, HNP1, DPA2, FLOW, metric=5),
)

EXAMPLES: list[m.Message] = [
    m.LocationQuery(HNP1),
    m.LocationReply(HNP1, DPA1, 3600),
    m.LocationInform(HNP1, DPA2, 3600),
    m.LocationInformAck(HNP1),
    m.LocationUpdate(HNP1, DPA2, 3600, origin="n-ar", mn="02:00:00:00:00:01"),
    m.LocationUpdateAck(HNP1, 3600),
    m.PoolJoin("lms-a", A("2001:db8:fd::1"), (HNP1, HNP2)),
    m.PoolJoinAck("lms-b", (HNP1, HNP2)),
    m.PeerQuery(HNP1),
    m.PeerReply(HNP1, DPA1, 1200),
    m.FlowStateTransfer(HNP1, (FlowState(FLOW, 9, 1500, 90000, 10, 60, b"\x01\x02"),)),
    m.FlowStateAck(HNP1, 1),
    m.AnchorRegistration("p-ar", DPA1, CPA, 600, (HNP1,)),
    m.RegistrationReply("p-ar", DPA1, CPA, 600, (HNP1,)),
    m.AnchorDiscovery(HNP1),
    m.DiscoveryAnswer(HNP1, DPA1, CPA, "p-ar"),
    m.ForwardingUpdate(add=ENTRIES, delete=(ForwardingEntry(EntryKind.ANCHOR, HNP1, link="mn0"),)),
    m.ForwardingUpdateAck(4),
    m.DataPlaneStatus("p-ar", Load(True, 37), DpState(2, 1, 9, 120, 0)),
    m.BufferRequest(HNP1, 10000, 500),
    m.BufferAck(HNP1),
    m.BufferReady(HNP1, DPA2),
    m.BufferReadyAck(HNP1, 123),
    m.FmHandoff(HNP1, "n-ar", DPA2, (FLOW,)),
    m.FmHandoffAck(HNP1),
    m.Subscribe((HNP1,), 300),
    m.SubscribeAck((HNP1,)),
    m.Unsubscribe((HNP1,)),
    m.UnsubscribeAck((HNP1,)),
    m.Heartbeat("lms-a"),
    m.HeartbeatAck("lms-b"),
    m.Error(Status(Cause.UNKNOWN_PREFIX, "no binding"), HNP1),
    m.MnQuery("02:00:00:00:00:01"),
    m.MnReply("02:00:00:00:00:01", (MnBinding(HNP1, DPA2, 3600, 2), MnBinding(HNP2, DPA2, 3600))),
    m.LeaseRelease(HNP1),
    m.LeaseReleaseAck(HNP1, "n-ar", DPA2),  # (BGP: the anchor to ask instead)
    m.LeaseTake(HNP1),
    m.LeaseTakeAck(HNP1),
    m.HandoverInitiate("02:00:00:00:00:01", (MnBinding(HNP1, DPA1, 3600, 1),)),
    m.HandoverAck("02:00:00:00:00:01"),
]
