"""Location management cores in virtual time: LMs, LMc, LMp, LM:2 pool, SM."""

from __future__ import annotations

from ipaddress import IPv6Address as A
from pathlib import Path

from dmanchor.lm.lmc import Done, LmcCore, Location, Pushed
from dmanchor.lm.lmp import LmpCore
from dmanchor.lm.lms import JoinRefused, LmsCore, LmsSettings, MemberDown, MemberUp
from dmanchor.lm.store import MemoryStore, SqliteStore, StoreError
from dmanchor.runtime.virtual import VirtualNetwork
from dmanchor.transport.reliable import Addr, Endpoint, NegativeReply, ReplyReceived
from dmanchor.wire import messages as m
from dmanchor.wire.auth import Key, Role, Security
from dmanchor.wire.messages import MsgType
from dmanchor.wire.types import Cause, Prefix
from tests.helpers import Collector

P = Prefix.parse
HNP1, HNP2 = P("2001:db8:1:1::/64"), P("2001:db8:2:1::/64")
DPA1, DPA2 = A("2001:db8:ff::1"), A("2001:db8:ff::2")
LMS: Addr = ("fd00::1", 5400)
C1: Addr = ("fd00::c1", 5500)
C2: Addr = ("fd00::c2", 5500)


def results(c: LmcCore) -> list[Done]:
    return [e for e in c.drain() if isinstance(e, Done)]


def ask(net: VirtualNetwork, addr: Addr, c: LmcCore, token_fn: object) -> Done:
    """Run a client command to completion and return its result."""
    assert callable(token_fn)
    token = token_fn()
    net.poll(addr)
    kept: list[object] = []
    for _ in range(500):  # at most 5 s of virtual time
        net.run_for(0.01)
        for e in c.drain():
            if isinstance(e, Done) and e.token == token:
                c._out.extend(kept)  # type: ignore[arg-type]
                return e
            kept.append(e)
    raise AssertionError("no answer within 5 s")


def single() -> tuple[VirtualNetwork, LmsCore, LmcCore]:
    net = VirtualNetwork(seed=1)
    lms = LmsCore(LmsSettings("lms"))
    lmc = LmcCore([LMS])
    net.add(LMS, lms)
    net.add(C1, lmc)
    return net, lms, lmc


def test_update_then_query_returns_the_binding() -> None:
    net, _lms, c = single()
    done = ask(net, C1, c, lambda: c.update(HNP1, DPA1, 600, net.now))
    assert isinstance(done.result, m.LocationUpdateAck) and done.result.lifetime == 600
    done = ask(net, C1, c, lambda: c.query(HNP1, net.now, use_cache=False))
    assert done.result == Location(HNP1, DPA1, 599)  # whole seconds left


def test_query_for_a_more_specific_prefix_finds_the_covering_binding() -> None:
    net, _lms, c = single()
    ask(net, C1, c, lambda: c.update(P("2001:db8:1::/48"), DPA1, 60, net.now))
    done = ask(net, C1, c, lambda: c.query(HNP1, net.now))
    assert isinstance(done.result, Location)
    assert done.result.prefix == P("2001:db8:1::/48")


def test_unknown_prefix_gets_a_negative_reply() -> None:
    net, _lms, c = single()
    done = ask(net, C1, c, lambda: c.query(HNP2, net.now))
    assert done.result is None and done.cause is Cause.UNKNOWN_PREFIX


def test_lifetime_is_capped_and_binding_expires() -> None:
    net = VirtualNetwork(seed=1)
    lms = LmsCore(LmsSettings("lms", max_lifetime=30))
    c = LmcCore([LMS])
    net.add(LMS, lms)
    net.add(C1, c)
    done = ask(net, C1, c, lambda: c.update(HNP1, DPA1, 3600, net.now))
    assert isinstance(done.result, m.LocationUpdateAck) and done.result.lifetime == 30
    net.run_for(29)
    assert lms.lookup(HNP1, net.now) is not None
    net.run_for(2)
    assert lms.lookup(HNP1, net.now) is None and lms.counters["expired"] == 1
    assert ask(net, C1, c, lambda: c.query(HNP1, net.now, False)).cause is Cause.UNKNOWN_PREFIX


def test_update_with_lifetime_zero_deletes() -> None:
    net, lms, c = single()
    ask(net, C1, c, lambda: c.update(HNP1, DPA1, 60, net.now))
    ask(net, C1, c, lambda: c.update(HNP1, DPA1, 0, net.now))
    assert lms.lookup(HNP1, net.now) is None


def test_ack_only_after_durable_store_failure_gives_negative_reply() -> None:
    class Failing(MemoryStore):
        def put(self, binding: object) -> None:
            raise StoreError("disk full")

    net = VirtualNetwork(seed=1)
    lms = LmsCore(LmsSettings("lms"), store=Failing())
    c = LmcCore([LMS])
    net.add(LMS, lms)
    net.add(C1, c)
    done = ask(net, C1, c, lambda: c.update(HNP1, DPA1, 60, net.now))
    assert done.cause is Cause.STORE_FAILURE
    assert lms.lookup(HNP1, net.now) is None  # not applied either


def test_store_is_reloaded_at_start() -> None:
    store = MemoryStore()
    net = VirtualNetwork(seed=1)
    lms = LmsCore(LmsSettings("lms"), store=store)
    c = LmcCore([LMS])
    net.add(LMS, lms)
    net.add(C1, c)
    ask(net, C1, c, lambda: c.update(HNP1, DPA1, 60, net.now))
    again = LmsCore(LmsSettings("lms"), store=store, now=net.now)
    assert again.lookup(HNP1, net.now) is not None


def test_push_reaches_subscribers_and_updates_their_cache() -> None:
    net, lms, c1 = single()
    c2 = LmcCore([LMS])
    net.add(C2, c2)
    ask(net, C1, c1, lambda: c1.update(HNP1, DPA1, 600, net.now))
    ask(net, C2, c2, lambda: c2.subscribe([P("2001:db8:1::/48")], net.now))
    assert ask(net, C2, c2, lambda: c2.query(HNP1, net.now)).result == Location(HNP1, DPA1, 599)
    ask(net, C1, c1, lambda: c1.update(HNP1, DPA2, 600, net.now))
    pushes = [e for e in c2.drain() if isinstance(e, Pushed)]
    assert pushes == [Pushed(HNP1, DPA2, 600)]
    # The cache answers with the pushed binding, without asking.
    sent = lms.endpoint.stats.received[MsgType.LOCATION_QUERY]
    done = ask(net, C2, c2, lambda: c2.query(HNP1, net.now))
    assert isinstance(done.result, Location) and done.result.forwarding_address == DPA2
    assert lms.endpoint.stats.received[MsgType.LOCATION_QUERY] == sent


def test_expiry_is_pushed_with_lifetime_zero_and_clears_cache() -> None:
    net, _lms, c = single()
    ask(net, C1, c, lambda: c.subscribe([HNP1], net.now))
    ask(net, C1, c, lambda: c.update(HNP1, DPA1, 5, net.now))
    ask(net, C1, c, lambda: c.query(HNP1, net.now))
    net.run_for(6)
    assert Pushed(HNP1, DPA1, 0) in c.drain()
    assert HNP1 not in c.cache


def test_client_cache_honours_lifetime() -> None:
    net, lms, c = single()
    ask(net, C1, c, lambda: c.update(HNP1, DPA1, 10, net.now))
    ask(net, C1, c, lambda: c.query(HNP1, net.now))
    asked = lms.endpoint.stats.received[MsgType.LOCATION_QUERY]
    ask(net, C1, c, lambda: c.query(HNP1, net.now))
    assert lms.endpoint.stats.received[MsgType.LOCATION_QUERY] == asked and c.cache_hits == 1
    net.run_for(9)  # past the lifetime the server gave
    ask(net, C1, c, lambda: c.query(HNP1, net.now))
    assert lms.endpoint.stats.received[MsgType.LOCATION_QUERY] == asked + 1


def test_unanswered_subscriber_is_dropped() -> None:
    net, lms, c = single()
    ask(net, C1, c, lambda: c.subscribe([HNP1], net.now))
    net.down.add(C1[0])
    u = LmcCore([LMS])
    net.add(C2, u)
    ask(net, C2, u, lambda: u.update(HNP1, DPA1, 60, net.now))
    net.run_for(5)
    assert lms.counters["subscriber-dropped"] == 1 and len(lms.subs) == 0


def test_client_fails_over_to_the_next_server() -> None:
    net = VirtualNetwork(seed=1)
    dead: Addr = ("fd00::dead", 5400)
    lms = LmsCore(LmsSettings("lms"))
    c = LmcCore([dead, LMS])
    net.add(LMS, lms)
    net.add(C1, c)
    done = ask(net, C1, c, lambda: c.update(HNP1, DPA1, 60, net.now))
    assert done.cause is Cause.OK and lms.lookup(HNP1, net.now) is not None
    # The server that answered is preferred from now on.
    before = c.endpoint.stats.retransmissions
    ask(net, C1, c, lambda: c.query(HNP1, net.now, False))
    assert c.endpoint.stats.retransmissions == before


# -- SM ------------------------------------------------------------------------------

KEYS = [Key(1, b"1" * 32, "n-ar", frozenset({Role.ANCHOR})),
        Key(2, b"2" * 32, "evil-ar", frozenset({Role.ANCHOR}))]


def test_only_the_authorized_node_may_update_a_prefix() -> None:
    net = VirtualNetwork(seed=1)
    net.now = 1_800_000_000.0
    lms = LmsCore(
        LmsSettings("lms", authorization={"n-ar": (P("2001:db8:1::/48"),)}),
        Endpoint(security=Security(KEYS, require_auth=True)),
        now=net.now,
    )
    good = LmcCore([LMS], Endpoint(security=Security(KEYS, send_key_id=1)))
    evil = LmcCore([LMS], Endpoint(security=Security(KEYS, send_key_id=2)))
    anon = LmcCore([LMS])
    net.add(LMS, lms)
    net.add(C1, good)
    net.add(C2, evil)
    net.add(("fd00::c3", 5500), anon)
    assert ask(net, C1, good, lambda: good.update(HNP1, DPA1, 60, net.now)).cause is Cause.OK
    refused = ask(net, C2, evil, lambda: evil.update(HNP1, DPA2, 60, net.now))
    assert refused.cause is Cause.NOT_AUTHORIZED
    outside = ask(net, C1, good, lambda: good.update(HNP2, DPA1, 60, net.now))
    assert outside.cause is Cause.NOT_AUTHORIZED
    anon.update(HNP1, DPA2, 60, net.now)
    net.poll(("fd00::c3", 5500))
    net.run_for(3)
    assert lms.endpoint.stats.drops["unauthenticated"] >= 1
    assert lms.counters["update-refused"] == 2
    b = lms.lookup(HNP1, net.now)
    assert b is not None and b.forwarding_address == DPA1 and b.updated_by == "n-ar"


# -- LMp -----------------------------------------------------------------------------

LMP: Addr = ("fd00::9", 5410)


def proxy() -> tuple[VirtualNetwork, LmsCore, LmpCore, list[tuple[Addr, LmcCore]]]:
    net = VirtualNetwork(seed=2)
    lms = LmsCore(LmsSettings("lms"))
    lmp = LmpCore([LMS])
    net.add(LMS, lms)
    net.add(LMP, lmp)
    clients = []
    for i in range(4):
        addr = (f"fd00::c{i}", 5500)
        c = LmcCore([LMP])
        net.add(addr, c)
        clients.append((addr, c))
    return net, lms, lmp, clients


def test_proxy_coalesces_queries_and_caches() -> None:
    net, lms, lmp, clients = proxy()
    (a0, c0) = clients[0]
    ask(net, a0, c0, lambda: c0.update(HNP1, DPA1, 60, net.now))
    for addr, c in clients:
        c.query(HNP1, net.now)
        net.poll(addr)
    net.run_for(1)
    for _, c in clients:
        [done] = results(c)
        assert isinstance(done.result, Location) and done.result.forwarding_address == DPA1
    assert lms.endpoint.stats.received[MsgType.LOCATION_QUERY] == 1
    assert lmp.counters["coalesced"] == 3


def test_proxy_relays_update_with_origin_and_acks_after_server() -> None:
    net, lms, _lmp, clients = proxy()
    a0, c0 = clients[0]
    done = ask(net, a0, c0, lambda: c0.update(HNP1, DPA1, 60, net.now))
    assert isinstance(done.result, m.LocationUpdateAck)
    assert lms.lookup(HNP1, net.now) is not None


def test_proxy_fans_pushes_out_with_one_upstream_subscription() -> None:
    net, lms, _lmp, clients = proxy()
    for addr, c in clients[1:]:
        ask(net, addr, c, lambda c=c: c.subscribe([HNP1], net.now))
    assert lms.endpoint.stats.received[MsgType.SUBSCRIBE] == 1
    a0, c0 = clients[0]
    ask(net, a0, c0, lambda: c0.update(HNP1, DPA2, 60, net.now))
    for _, c in clients[1:]:
        assert Pushed(HNP1, DPA2, 60) in c.drain()
    assert lms.counters["push"] == 1  # one push upstream of the proxy


# -- LM:2 pool -----------------------------------------------------------------------

MEMBERS: list[Addr] = [("fd00::a", 5400), ("fd00::b", 5400), ("fd00::c", 5400)]
CLAIMS = [P("2001:db8:1::/48"), P("2001:db8:2::/48"), P("2001:db8:3::/48")]


def pool(heartbeat: float = 0.5) -> tuple[VirtualNetwork, list[LmsCore]]:
    net = VirtualNetwork(seed=3)
    cores = []
    for i, addr in enumerate(MEMBERS):
        s = LmsSettings(
            f"lms-{'abc'[i]}", primary=(CLAIMS[i],),
            peers=tuple(a for a in MEMBERS if a != addr),
            heartbeat_interval=heartbeat, dead_after=3 * heartbeat,
        )
        cores.append(LmsCore(s))
        net.add(addr, cores[-1])
    net.run_for(1)
    return net, cores


def test_pool_members_learn_each_others_claims() -> None:
    _net, cores = pool()
    for core in cores:
        assert len(core.members) == 2
        assert core.primary_for(HNP1) == "lms-a"
        assert core.primary_for(HNP2) == "lms-b"


def test_update_at_any_member_lands_at_the_primary_and_query_anywhere_finds_it() -> None:
    net, cores = pool()
    c = LmcCore([MEMBERS[2]])  # talks to lms-c only
    net.add(C1, c)
    done = ask(net, C1, c, lambda: c.update(HNP1, DPA1, 60, net.now))
    assert done.cause is Cause.OK
    assert cores[0].lookup(HNP1, net.now) is not None  # the primary holds it
    assert cores[2].lookup(HNP1, net.now) is None  # the relaying member does not
    for member in MEMBERS:
        q = LmcCore([member])
        addr = (f"fd00::q{member[0][-1]}", 5500)
        net.add(addr, q)
        assert ask(net, addr, q, lambda q=q: q.query(HNP1, net.now)).result == \
            Location(HNP1, DPA1, 59)
    assert cores[1].counters["relayed"] >= 1 and cores[2].counters["relayed"] >= 2


def test_subscriber_at_a_non_primary_member_gets_pushes() -> None:
    net, _cores = pool()
    sub = LmcCore([MEMBERS[1]])
    upd = LmcCore([MEMBERS[0]])
    net.add(C1, sub)
    net.add(C2, upd)
    ask(net, C1, sub, lambda: sub.subscribe([HNP1], net.now))
    ask(net, C2, upd, lambda: upd.update(HNP1, DPA2, 60, net.now))
    assert Pushed(HNP1, DPA2, 60) in sub.drain()


def test_overlapping_claim_is_refused() -> None:
    net, cores = pool()
    intruder: Addr = ("fd00::d", 5400)
    bad = LmsCore(LmsSettings("lms-d", primary=(P("2001:db8:1:8000::/49"),),
                              peers=(MEMBERS[0],)))
    net.add(intruder, bad)
    net.run_for(1)
    refused = [e for e in bad.drain_events() if isinstance(e, JoinRefused)]
    assert refused and "overlaps" in refused[0].reason
    assert "lms-d" not in cores[0].members
    assert cores[0].counters["join-refused"] >= 1


def test_an_lms_of_several_workers_refuses_to_join_a_pool() -> None:
    """Its workers share one port: a member's heartbeats and relays would
    reach one worker only (dmanchor.lm.workers)."""
    net, _ = pool()
    addr: Addr = ("fd00::d", 5400)
    workers = LmsCore(LmsSettings("lms-w", accepts_members=False))
    net.add(addr, workers)
    joiner: Addr = ("fd00::e", 5400)
    member = LmsCore(LmsSettings("lms-e", primary=(P("2001:db8:9::/48"),), peers=(addr,)))
    net.add(joiner, member)
    net.run_for(1)
    refused = [e for e in member.drain_events() if isinstance(e, JoinRefused)]
    assert refused and "several workers" in refused[0].reason
    assert not workers.members
    assert workers.counters["join-refused-workers"] >= 1


def test_dead_member_is_reported_and_its_prefixes_fail_fast() -> None:
    net, cores = pool(heartbeat=0.5)
    for core in cores:
        core.drain_events()
    net.down.add(MEMBERS[0][0])  # lms-a crashes
    net.run_for(3)
    for core in cores[1:]:
        assert MemberDown("lms-a", MEMBERS[0]) in core.drain_events()
    c = LmcCore([MEMBERS[1]])
    net.add(C1, c)
    start = net.now
    done = ask(net, C1, c, lambda: c.query(HNP1, net.now))
    assert done.cause is Cause.PEER_UNREACHABLE
    assert cores[1].counters["relay-peer-down"] == 1
    del start
    net.down.discard(MEMBERS[0][0])  # it comes back
    net.run_for(2)
    assert MemberUp("lms-a", MEMBERS[0]) in cores[1].drain_events()


def test_a_binding_naming_an_mn_is_refused_to_an_update_naming_another(tmp_path: Path) -> None:
    """SM: the LMs binds a prefix to the MN using it; another MN's claim is
    refused (NOT_AUTHORIZED) and counted; updates naming no MN (a refresh
    by an anchor or an MN's own agent) keep the MN; the binding, with its
    MN, survives a restart from the SQLite store."""
    net = VirtualNetwork(seed=1)
    lms = LmsCore(LmsSettings("lms"), store=SqliteStore(tmp_path))
    net.add(LMS, lms)
    probe = Collector()
    net.add(C1, probe)

    def send(msg: m.Message) -> object:
        probe.events.clear()
        probe.ep.request(msg, LMS, net.now)
        net.poll(C1)
        net.run_for(0.1)
        [ev] = probe.events
        return ev

    mac = "02:00:00:00:00:01"
    ack = send(m.LocationUpdate(HNP1, DPA1, 600, mn=mac))
    assert isinstance(ack, ReplyReceived)
    refused = send(m.LocationUpdate(HNP1, DPA2, 600, mn="02:00:00:00:0e:01"))
    assert isinstance(refused, NegativeReply) and refused.status.code is Cause.NOT_AUTHORIZED
    assert lms.counters["update-refused:other-mn"] == 1
    moved = send(m.LocationUpdate(HNP1, DPA2, 600, mn=mac))  # the MN itself moved
    assert isinstance(moved, ReplyReceived)
    assert isinstance(send(m.LocationUpdate(HNP1, DPA2, 600)), ReplyReceived)  # a refresh
    reply = send(m.LocationQuery(HNP1))
    assert isinstance(reply, ReplyReceived)
    assert isinstance(reply.reply, m.LocationReply)
    assert (reply.reply.forwarding_address, reply.reply.mn) == (DPA2, mac)
    lms.store.close()
    again = LmsCore(LmsSettings("lms"), store=SqliteStore(tmp_path), now=net.now)
    kept = again.lookup(HNP1, net.now)
    assert kept is not None and kept.mn == mac
