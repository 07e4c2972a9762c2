"""Reliable delivery in virtual time: retransmission, duplicates, timeouts, SM."""

from __future__ import annotations

from dataclasses import dataclass, field

from dmanchor.runtime.virtual import LinkProfile, VirtualNetwork
from dmanchor.transport.reliable import (
    Addr,
    Endpoint,
    Event,
    MessageReceived,
    NegativeReply,
    ReplyReceived,
    RequestTimedOut,
    RetransmitPolicy,
)
from dmanchor.wire.auth import Key, Security
from dmanchor.wire.codec import Flags
from dmanchor.wire.messages import (
    DataPlaneStatus,
    LocationQuery,
    LocationReply,
    LocationUpdate,
    LocationUpdateAck,
    MsgType,
)
from dmanchor.wire.types import Cause, Load
from tests.examples import DPA1, HNP1, HNP2

A: Addr = ("2001:db8::a", 7000)
B: Addr = ("2001:db8::b", 7000)


@dataclass
class Node:
    """An endpoint plus a tiny server: counts executions, answers queries."""

    ep: Endpoint
    executed: int = 0
    events: list[Event] = field(default_factory=list)
    serve: bool = True

    def receive_datagram(
        self, data: bytes, source: Addr, now: float, local: Addr | None = None
    ) -> None:
        self.ep.receive_datagram(data, source, now, local)
        self._drain(now)

    def handle_timer(self, now: float) -> None:
        self.ep.handle_timer(now)
        self._drain(now)

    def get_timer(self) -> float | None:
        return self.ep.get_timer()

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        return self.ep.datagrams_to_send()

    def _drain(self, now: float) -> None:
        while (ev := self.ep.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, MessageReceived) and self.serve:
                msg = ev.message
                if isinstance(msg, LocationUpdate):
                    self.executed += 1
                    self.ep.reply(ev, LocationUpdateAck(msg.prefix, msg.lifetime), now)
                elif isinstance(msg, LocationQuery):
                    self.executed += 1
                    if msg.prefix == HNP1:
                        self.ep.reply(ev, LocationReply(msg.prefix, DPA1, 60), now)
                    else:
                        self.ep.reject(ev, Cause.UNKNOWN_PREFIX, "none", now, msg.prefix)


def pair(
    seed: int = 1, loss: float = 0.0, sec_a: Security | None = None,
    sec_b: Security | None = None, policy: RetransmitPolicy | None = None,
) -> tuple[VirtualNetwork, Node, Node]:
    net = VirtualNetwork(seed, LinkProfile(delay=0.001, loss=loss))
    a = Node(Endpoint(security=sec_a, policy=policy))
    b = Node(Endpoint(security=sec_b, policy=policy))
    net.add(A, a)
    net.add(B, b)
    return net, a, b


def test_request_gets_reply_event() -> None:
    net, a, _b = pair()
    rid = a.ep.request(LocationQuery(HNP1), B, net.now)
    net.poll(A)
    net.run_for(1)
    [ev] = a.events
    assert isinstance(ev, ReplyReceived) and ev.request_id == rid
    assert ev.reply == LocationReply(HNP1, DPA1, 60)
    assert a.ep.pending_count == 0


def test_error_reply_gives_negative_event() -> None:
    net, a, _b = pair()
    a.ep.request(LocationQuery(HNP2), B, net.now)
    net.poll(A)
    net.run_for(1)
    [ev] = a.events
    assert isinstance(ev, NegativeReply) and ev.status.code is Cause.UNKNOWN_PREFIX


def test_lossy_link_retransmits_and_executes_once() -> None:
    # 40 % loss each way: most requests need retransmissions, some replies
    # are lost so the server sees duplicates and must answer from its cache.
    policy = RetransmitPolicy(initial_rto=0.01, attempts=12, max_rto=0.05)
    net, a, b = pair(seed=7, loss=0.4, policy=policy)
    for _ in range(50):
        a.ep.request(LocationUpdate(HNP1, DPA1, 60), B, net.now)
    net.poll(A)
    net.run_for(10)
    replies = [e for e in a.events if isinstance(e, ReplyReceived)]
    assert len(replies) == 50
    assert b.executed == 50
    assert a.ep.stats.retransmissions > 0
    assert b.ep.stats.duplicates_answered > 0


def test_a_duplicate_read_is_served_afresh_and_no_answer_is_kept() -> None:
    """A query (IDEMPOTENT) asked again is answered again - the same or a
    fresher answer - so the server keeps no answer for it."""
    policy = RetransmitPolicy(initial_rto=0.01, attempts=12, max_rto=0.05)
    net, a, b = pair(seed=7, loss=0.4, policy=policy)
    for _ in range(50):
        a.ep.request(LocationQuery(HNP1), B, net.now)
    net.poll(A)
    net.run_for(10)
    replies = [e for e in a.events if isinstance(e, ReplyReceived)]
    assert len(replies) == 50
    assert b.executed > 50  # the lost answers' duplicates were served again
    assert b.ep.stats.duplicates_answered == 0
    assert not b.ep._cache


def test_dead_peer_times_out_after_the_configured_attempts() -> None:
    policy = RetransmitPolicy(initial_rto=0.1, backoff=2, max_rto=1, attempts=4)
    net, a, _b = pair(policy=policy)
    net.down.add(B[0])
    a.ep.request(LocationQuery(HNP1), B, net.now)
    net.poll(A)
    net.run_for(5)
    [ev] = a.events
    assert isinstance(ev, RequestTimedOut)
    assert a.ep.stats.sent[MsgType.LOCATION_QUERY] == 4
    assert abs(net.now - 5) < 1e-9 and policy.total() == 0.1 + 0.2 + 0.4 + 0.8


def test_duplicate_in_progress_is_not_executed_twice() -> None:
    net, a, b = pair(policy=RetransmitPolicy(initial_rto=0.01, attempts=3))
    b.serve = False  # the server sits on the request (e.g. waiting for a peer)
    a.ep.request(LocationQuery(HNP1), B, net.now)
    net.poll(A)
    net.run_for(0.5)
    received = [e for e in b.events if isinstance(e, MessageReceived)]
    assert len(received) == 1
    assert b.ep.stats.drops["duplicate-in-progress"] == 2


def test_notification_needs_no_reply() -> None:
    net, a, b = pair()
    a.ep.request(DataPlaneStatus("p-ar", Load(True, 10)), B, net.now)
    net.poll(A)
    net.run_for(1)
    assert a.ep.pending_count == 0
    [ev] = b.events
    assert isinstance(ev, MessageReceived) and not ev.expects_reply


def test_malformed_datagrams_are_counted_by_reason() -> None:
    ep = Endpoint()
    ep.receive_datagram(b"\x01\x02garbage", B, 0.0)
    good = Security().encode(LocationQuery(HNP1), 1, Flags.NONE, 0.0, B)
    ep.receive_datagram(good[:2] + b"\x40\x00" + good[4:], B, 0.0)  # unknown flag
    ep.receive_datagram(good[:-1], B, 0.0)
    assert ep.stats.drops == {
        "malformed:truncated": 1, "malformed:bad-length": 1, "malformed:bad-header": 1,
    }
    assert ep.next_event() is None


def test_unexpected_reply_is_dropped() -> None:
    a = Endpoint()
    data = Security().encode(LocationReply(HNP1, DPA1, 1), 99, Flags.RESPONSE, 0.0, A)
    a.receive_datagram(data, B, 0.0)
    assert a.stats.drops["unexpected-reply"] == 1
    assert a.next_event() is None


def test_authenticated_pair_and_forged_sender() -> None:
    k = Key(1, b"s" * 32, "a")
    now0 = 1_800_000_000.0
    net, a, b = pair(
        sec_a=Security([k], send_key_id=1),
        sec_b=Security([k], require_auth=True),
        policy=RetransmitPolicy(initial_rto=0.05, attempts=2),
    )
    net.now = now0
    a.ep.request(LocationQuery(HNP1), B, net.now)
    net.poll(A)
    net.run_for(1)
    ok = [e for e in b.events if isinstance(e, MessageReceived)]
    assert len(ok) == 1 and ok[0].sender == "a"
    # An unsigned intruder is dropped and counted; nothing reaches the app.
    intruder = Endpoint()
    intruder.request(LocationQuery(HNP1), B, net.now)
    (data, _), = intruder.datagrams_to_send()
    b.receive_datagram(data, ("2001:db8::66", 1), net.now, B)
    assert b.ep.stats.drops["unauthenticated"] == 1
    assert len([e for e in b.events if isinstance(e, MessageReceived)]) == 1


def test_virtual_runs_are_deterministic() -> None:
    def run(seed: int) -> tuple[int, int]:
        policy = RetransmitPolicy(initial_rto=0.01, attempts=12, max_rto=0.05)
        net, a, _b = pair(seed=seed, loss=0.3, policy=policy)
        for _ in range(20):
            a.ep.request(LocationQuery(HNP1), B, net.now)
        net.poll(A)
        net.run_for(5)
        return a.ep.stats.retransmissions, net.counters["lost"]

    assert run(3) == run(3)


def test_a_signed_duplicate_answer_is_signed_afresh_not_a_replay() -> None:
    # The reply cache answers a retransmitted request again: with the same
    # signed bytes the requester would count an honest duplicate as a replay.
    k = Key(1, b"s" * 32, "a")
    now = 1_800_000_000.0
    a = Endpoint(security=Security([k], send_key_id=1, require_auth=True))
    b = Endpoint(security=Security([k], send_key_id=1, require_auth=True))
    a.request(LocationUpdate(HNP1, DPA1, 60), B, now)
    [(first, _)] = a.datagrams_to_send()
    b.receive_datagram(first, A, now, B)
    ev = b.next_event()
    assert isinstance(ev, MessageReceived)
    b.reply(ev, LocationUpdateAck(HNP1, 60), now)
    [(answer, _)] = b.datagrams_to_send()
    a.handle_timer(now + 1)  # no answer yet: retransmitted
    [(again, _)] = a.datagrams_to_send()
    b.receive_datagram(again, A, now + 1, B)
    [(answer2, _)] = b.datagrams_to_send()
    assert b.stats.duplicates_answered == 1 and b.next_event() is None
    assert answer2 != answer
    a.receive_datagram(answer, B, now + 1, A)
    a.receive_datagram(answer2, B, now + 1, A)
    assert isinstance(a.next_event(), ReplyReceived)
    assert a.stats.drops == {"unexpected-reply": 1}  # late, but honest
