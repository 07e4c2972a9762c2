"""The Linux data plane with real traffic in namespaces (UDP, TCP, SRv6, rules)."""

from __future__ import annotations

import multiprocessing
import socket
import struct
import threading
from ipaddress import IPv6Address as A
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType

import pytest

from dmanchor.dataplane.api import BufferSpec, DataPlaneError
from dmanchor.dataplane.linux import LinuxDataPlane
from dmanchor.dataplane.markers import MARKER_PORT, MarkerAuth
from dmanchor.dataplane.netlink import RT_TABLE_MAIN, RouteMonitor, open_in_netns
from dmanchor.emulation.flat import CN, HNP1, HNP2, IP1, IP2, SID1, SID2, flat, move_mn_to_ar2
from dmanchor.emulation.lab import Lab, Veth
from dmanchor.reordering import measure
from dmanchor.wire.auth import Key, Role
from dmanchor.wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix
from tests.helpers import wait_until

P = Prefix.parse
E = ForwardingEntry
K = EntryKind

IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50


def udp_probe(lab: Lab, dst: str, ports: list[int], count: int = 20) -> dict[int, list[int]]:
    """Send ``count`` datagrams CN -> MN per port; returns ifindexes they arrived on."""
    rx = {}
    for port in ports:
        s = lab.socket("mn")
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        s.bind(("::", port))
        s.settimeout(0.5)
        rx[port] = s
    tx = lab.socket("cn")
    for port in ports:
        for i in range(count):
            tx.sendto(struct.pack("!I", i), (dst, port))
    got: dict[int, list[int]] = {p: [] for p in ports}
    for port, s in rx.items():
        try:
            while len(got[port]) < count:
                _, anc, _, _ = s.recvmsg(64, 256)
                for level, kind, data in anc:
                    if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
                        got[port].append(struct.unpack_from("=I", data, 16)[0])
        except TimeoutError:
            pass
        s.close()
    tx.close()
    return got


def tx_packets(lab: Lab, node: str, ifname: str) -> int:
    return int(lab.run(node, "cat", f"/sys/class/net/{ifname}/statistics/tx_packets").strip())


def test_anchored_prefix_is_delivered(lab: Lab) -> None:
    dps = flat(lab)
    dps["ar1"].apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    got = udp_probe(lab, IP1, [7000])
    assert len(got[7000]) == 20


def test_prefix_moved_and_tunnelled_over_srv6_udp_and_tcp(lab: Lab) -> None:
    dps = flat(lab)
    dps["ar1"].apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    move_mn_to_ar2(lab)
    # AR1 keeps anchoring HNP1 and tunnels it to AR2, which decapsulates.
    dps["ar2"].apply([E(K.ANCHOR, HNP1, link="mn2")], [], 0.0)
    dps["ar1"].apply([E(K.TUNNEL, HNP1, SID2)], [E(K.ANCHOR, HNP1, link="mn1")], 0.0)
    got = udp_probe(lab, IP1, [7001])
    assert len(got[7001]) == 20  # eth1 is down: they came through AR2
    assert tx_packets(lab, "ar2", "mn2") >= 20
    # TCP with payloads larger than the access MTU minus SRv6 overhead.
    srv = lab.socket("mn", socket.SOCK_STREAM)
    srv.bind((IP1, 8080))
    srv.listen(1)
    data = bytes(range(256)) * 4096  # 1 MiB
    received = bytearray()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.settimeout(10)
        while len(received) < len(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received.extend(chunk)
        conn.sendall(b"ok")
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    cli = lab.socket("cn", socket.SOCK_STREAM)
    cli.settimeout(10)
    cli.connect((IP1, 8080))
    cli.sendall(data)
    assert cli.recv(2) == b"ok"
    cli.close()
    t.join(10)
    srv.close()
    assert bytes(received) == data


def test_flow_rule_redirects_only_its_flow(lab: Lab) -> None:
    dps = flat(lab)
    lab.run("mn", "ip", "link", "set", "eth2", "master", "br0")  # both radios in use
    dps["ar1"].apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    dps["ar2"].apply([E(K.ANCHOR, HNP1, link="mn2")], [], 0.0)
    flow = FlowFilter(P(f"{CN}/128"), Prefix.host(A(IP1)), 17, 0, 7003)
    dps["ar1"].apply([E(K.TUNNEL, HNP1, SID2, flow=flow)], [], 0.0)
    via1, via2 = tx_packets(lab, "ar1", "mn1"), tx_packets(lab, "ar2", "mn2")
    got = udp_probe(lab, IP1, [7002])
    assert len(got[7002]) == 20
    # The other path may carry a little ND/MLD chatter, never the 20 packets.
    assert tx_packets(lab, "ar1", "mn1") - via1 >= 20 and tx_packets(lab, "ar2", "mn2") - via2 < 15
    via1, via2 = tx_packets(lab, "ar1", "mn1"), tx_packets(lab, "ar2", "mn2")
    got = udp_probe(lab, IP1, [7003])
    assert len(got[7003]) == 20
    assert tx_packets(lab, "ar2", "mn2") - via2 >= 20 and tx_packets(lab, "ar1", "mn1") - via1 < 15
    # Read back: the flow entry is there as it was installed.
    assert E(K.TUNNEL, HNP1, SID2, flow=flow) in dps["ar1"].entries()


def test_spoofed_sources_from_the_access_link_are_dropped_and_counted(lab: Lab) -> None:
    dps = flat(lab)
    ar1 = dps["ar1"]
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    ar1.set_source_filter("mn1", [P("2001:db8:1:1::10/128")])
    other = "2001:db8:1:1::66"
    assert sent_to_cn(lab, [IP1, other, other]) == [IP1]
    assert ar1.counters()["spoofed-source:mn1"] == 2
    assert ar1.counters()["spoofed-source"] == 2
    # Forged packets built to get past the trap, sent raw from the MN: one
    # carrying an SRH with a segment left (End.T would forward it on), one
    # IPv6-in-IPv6.  Both are dropped and counted; neither reaches the CN.
    srh = (bytes([17, 2, 4, 1, 1, 0, 0, 0]) + A(CN).packed + A(CN).packed
           + struct.pack("!HHHH", 9, 7100, 12, 0) + b"srh!")
    inner = _ipv6(other, CN, 17, struct.pack("!HHHH", 9, 7100, 12, 0) + b"in6!")
    rx = lab.socket("cn")
    rx.bind(("::", 7100))
    rx.settimeout(0.5)
    raw = open_in_netns(lab.ns("mn"), socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for nh, payload in ((43, srh), (41, inner)):
        raw.sendto(_ipv6(other, CN, nh, payload), (CN, 0))
    raw.close()
    with pytest.raises(TimeoutError):
        rx.recv(100)
    rx.close()
    assert ar1.counters()["spoofed-source:mn1"] == 4
    # A move's update allows the new prefix before the old one goes.
    ar1.set_source_filter("mn1", [P("2001:db8:1:1::66/128")])
    assert sent_to_cn(lab, [IP1, other]) == [other]
    # A restarted agent adopts the filter and its counts from the kernel.
    ar1.close()
    again = LinuxDataPlane(lab.ns("ar1"))
    assert again.sources.filters() == {"mn1": (P("2001:db8:1:1::66/128"),)}
    assert again.counters()["spoofed-source:mn1"] == 5
    # The MN left: no filter, the trap's drops are kept, nothing left behind.
    again.set_source_filter("mn1", [])
    assert again.counters()["spoofed-source:mn1"] == 5
    assert [r for r in again.nl.rules() if r.iif == "mn1"] == []
    assert sent_to_cn(lab, [IP1, other]) == [IP1, other]
    again.close()


def _ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
            + A(src).packed + A(dst).packed + payload)


def sent_to_cn(lab: Lab, sources: list[str], port: int = 7100) -> list[str]:
    """Send one datagram to the CN from each source address of the MN;
    returns the sources whose datagram arrived."""
    rx = lab.socket("cn")
    rx.bind(("::", port))
    rx.settimeout(0.5)
    for src in sources:
        tx = lab.socket("mn")
        tx.bind((src, 0))
        tx.sendto(src.encode(), (CN, port))
        tx.close()
    got = []
    try:
        while True:
            got.append(rx.recv(100).decode())
    except TimeoutError:
        pass
    rx.close()
    return sorted(got)


def test_uplink_reverse_tunnel_by_source_prefix(lab: Lab) -> None:
    """4.1.2 with a reverse tunnel: AR2 sends what the MN sources from HNP1
    over SRv6 to AR1 (End.DT6), which forwards it; other sources go direct."""
    dps = flat(lab)
    move_mn_to_ar2(lab)
    dps["ar2"].apply([E(K.ANCHOR, HNP1, link="mn2"), E(K.ANCHOR, HNP2, link="mn2")], [], 0.0)
    reverse = E(K.TUNNEL, P("::/0"), SID1, flow=FlowFilter(src=HNP1))

    def through_ar1(sources: list[str]) -> tuple[list[str], int]:
        before = rx_packets(lab, "ar1", "ar1-r")
        got = sent_to_cn(lab, sources * 10)
        return got, rx_packets(lab, "ar1", "ar1-r") - before

    got, seen = through_ar1([IP1, IP2])
    assert got == sorted([IP1, IP2] * 10) and seen < 10  # direct: at most ND chatter
    dps["ar2"].apply([reverse], [], 0.0)
    assert reverse in dps["ar2"].entries()
    got, seen = through_ar1([IP1])
    assert got == [IP1] * 10 and seen >= 10
    got, seen = through_ar1([IP2])
    assert got == [IP2] * 10 and seen < 10
    dps["ar2"].apply([], [reverse], 0.0)
    assert through_ar1([IP1])[1] < 10
    assert not [e for e in dps["ar2"].entries() if e.flow is not None]


def rx_packets(lab: Lab, node: str, ifname: str) -> int:
    return int(lab.run(node, "cat", f"/sys/class/net/{ifname}/statistics/rx_packets").strip())


def test_restarted_agent_reconciles_without_duplicates_or_leaks(lab: Lab) -> None:
    dps = flat(lab)
    flow = FlowFilter(P(f"{CN}/128"), Prefix.host(A(IP1)), 17, 0, 7003)
    desired = [E(K.ANCHOR, HNP1, link="mn1"), E(K.TUNNEL, HNP2, SID2),
               E(K.TUNNEL, HNP1, SID2, flow=flow), E(K.DROP, P("2001:db8:1:ff::/64"))]
    dps["ar1"].apply(desired, [], 0.0)
    before = sorted(map(repr, dps["ar1"].entries()))
    dps["ar1"].close()
    again = LinuxDataPlane(lab.ns("ar1"))  # the agent restarted
    base = [E(K.ROUTE, P("::/0"), A("fd00:1::1")), E(K.DECAP, Prefix.host(SID1))]
    assert again.converge(base + desired) == (0, 0)
    assert sorted(map(repr, again.entries())) == before
    # Desired state shrinks while the agent was down: the rest is removed.
    assert again.converge(base + desired[:1]) == (0, 3)
    left = again.entries()
    assert E(K.TUNNEL, HNP2, SID2) not in left and len(left) == 3
    assert lab.run("ar1", "ip", "-6", "nexthop", "show").strip() == ""
    assert "7003" not in lab.run("ar1", "ip", "-6", "rule", "show")


def test_errors_name_the_object(lab: Lab) -> None:
    dps = flat(lab)
    with pytest.raises(DataPlaneError, match="no interface 'nope'"):
        dps["ar1"].apply([E(K.ANCHOR, HNP1, link="nope")], [], 0.0)
    dps["ar1"].apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    # A batch whose second object fails leaves nothing of the first behind.
    with pytest.raises(DataPlaneError, match="route 2001:db8:3::"):
        dps["ar1"].apply([E(K.ROUTE, HNP2, A("fd00:1::1")),
                          E(K.ROUTE, P("2001:db8:3::/64"), A("fd00:77::1"))], [], 0.0)
    assert E(K.ROUTE, HNP2, A("fd00:1::1")) not in dps["ar1"].entries()


def test_a_re_pointed_route_is_replaced_never_missing(lab: Lab) -> None:
    """A prefix re-pointed (FM:5-1 at a core router: delete the old path, add
    the new) is one replace: the kernel never announces it deleted, so no
    packet falls to a covering route meanwhile (chain-back lost 1 of 6800 so).
    A batch failing later puts the old path back."""
    dps = flat(lab)
    ar1 = dps["ar1"]
    tunnel, routed = E(K.TUNNEL, HNP2, SID2), E(K.ROUTE, HNP2, A("fd00:1::1"))
    ar1.apply([tunnel], [], 0.0)
    mon = RouteMonitor(lab.ns("ar1"))
    try:
        ar1.apply([routed], [tunnel], 0.0)
        changes = wait_until(lambda: mon.read(), 5.0, "the route change announced")
        # (The end marker's own route, in a table of its own, comes and goes.)
        main = [(added, r.dst) for added, r in changes if r.table == RT_TABLE_MAIN]
        assert main == [(True, HNP2.address)]
        assert routed in ar1.entries() and tunnel not in ar1.entries()
        with pytest.raises(DataPlaneError, match="route 2001:db8:3::"):
            ar1.apply([tunnel, E(K.ROUTE, P("2001:db8:3::/64"), A("fd00:77::1"))],
                      [routed], 0.0)
        have = ar1.entries()
        assert routed in have and tunnel not in have
    finally:
        mon.close()


def test_a_hosts_own_sids_are_in_the_local_table(lab: Lab) -> None:
    """A host-based MN's SIDs (DECAP into ``local``) are routes of the local
    table, where End.DT6 looks their inner packets up: a packet tunnelled to
    its previous SID and then on to its new one is decapsulated twice (the
    return-host scenario lost 7 packets without).  Read back as such."""
    flat(lab)
    mn = LinuxDataPlane(lab.ns("mn"))
    try:
        old, new = E(K.DECAP, Prefix.host(A(IP2) - 0xB), link="local"), \
            E(K.DECAP, Prefix.host(A(IP1) - 0xB), link="local")
        mn.apply([old, new], [], 0.0)
        shown = lab.run("mn", "ip", "-6", "route", "show", "table", "local")
        assert shown.count("seg6local action End.DT6 table local") == 2, shown
        assert {old, new} <= set(mn.entries())
        mn.apply([], [old], 0.0)
        assert old not in mn.entries() and new in mn.entries()
    finally:
        mn.close()


def test_missing_namespace_is_a_clear_error() -> None:
    from dmanchor.dataplane.netlink import NetlinkError

    with pytest.raises(NetlinkError, match="network namespace 'dmt-none-such'"):
        LinuxDataPlane("dmt-none-such")


def _paced(sock: socket.socket, dst: str, port: int, rate: float, seconds: float,
           sent: Synchronized[int], halt: EventType) -> None:
    """The sender process: numbered datagrams at ``rate``, in 1 ms slots."""
    import time

    interval = 1.0 / rate
    n = int(rate * seconds)
    start = time.perf_counter()
    count = 0
    while count < n and not halt.is_set():
        due = min(n, int((time.perf_counter() - start) / interval) + 1)
        while count < due:
            sock.sendto(struct.pack("!I", count), (dst, port))
            count += 1
        sent.value = count
        time.sleep(max(0.0, start + count * interval - time.perf_counter(), 0.001))


class Sender:
    """A sequenced UDP flow at ``rate`` packets per second, from the CN.

    It sends from a process of its own (forked, holding a socket opened in
    the CN's namespace): a sender thread would share this process's GIL
    with the data plane under test, whose reads of the hold device then
    wait up to a switch interval (5 ms) each and fall behind a 10k pps
    flow - a test artefact, not the product's behaviour (an agent is a
    process of its own).
    """

    def __init__(self, lab: Lab, dst: str, port: int, rate: float, seconds: float) -> None:
        self.sock = lab.socket("cn")
        ctx = multiprocessing.get_context("fork")
        self._sent: Synchronized[int] = ctx.Value("q", 0)
        self._halt = ctx.Event()
        self._proc = ctx.Process(target=_paced, daemon=True, args=(
            self.sock, dst, port, rate, seconds, self._sent, self._halt))

    @property
    def sent(self) -> int:
        """Datagrams sent so far."""
        return int(self._sent.value)

    def start(self) -> None:
        self._proc.start()

    def is_alive(self) -> bool:
        return self._proc.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for the flow to end (killed, by PID, if it has not by then)."""
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self.sock.close()

    def stop(self) -> None:
        """End the flow now (before ``seconds``)."""
        self._halt.set()
        self.join(10)


def _read(sock: socket.socket, got: Synchronized[int], highest: Synchronized[int],
          out: Connection, done: EventType) -> None:
    """The reader process: every sequence number, until told it is done and
    nothing came for a second; then the list, down ``out``."""
    seqs: list[int] = []
    while True:
        try:
            seq = struct.unpack("!I", sock.recv(64))[0]
        except TimeoutError:
            if done.is_set():
                break
            continue
        seqs.append(seq)
        got.value = len(seqs)
        if seq > highest.value:
            highest.value = seq
    out.send(seqs)


class Reader:
    """Reads a sequenced flow at the MN from a process of its own, for the
    reason :class:`Sender` sends from one: a reader thread here would hold
    this process's GIL in turns with the data plane under test, and a lift
    waiting for it between its last read of the hold device and the hold's
    removal (preempted by a loaded host's tasks meanwhile) lets the direct
    path overtake what enters the device meanwhile - a test artefact.
    ``got``/``highest``: how many arrived, the highest sequence number."""

    def __init__(self, sock: socket.socket) -> None:
        ctx = multiprocessing.get_context("fork")
        self.sock = sock
        self.got: Synchronized[int] = ctx.Value("q", 0, lock=False)
        self.highest: Synchronized[int] = ctx.Value("q", -1, lock=False)
        self._done = ctx.Event()
        self._rx, tx = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_read, daemon=True,
                                 args=(sock, self.got, self.highest, tx, self._done))

    def start(self) -> None:
        self._proc.start()

    def finish(self, timeout: float) -> list[int]:
        """What arrived, once a second passed with nothing (killed, by PID,
        if it has not answered by ``timeout``)."""
        self._done.set()
        seqs: list[int] = self._rx.recv() if self._rx.poll(timeout) else []
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self.sock.close()
        return seqs


def receiver(lab: Lab, port: int) -> socket.socket:
    s = lab.socket("mn")
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE: hold it all
    s.bind(("::", port))
    s.settimeout(1.0)
    return s


def lift(dp: LinuxDataPlane) -> None:
    """Drive the holds' lifts to their end, as an agent's event loop does
    (a lift that finds no lull at once goes on in steps, at the data
    plane's deadline)."""
    import time

    def done() -> bool:
        at = dp.next_deadline()
        if dp.lifting() and at is not None:
            dp.expire(max(at, time.monotonic()))
        return not dp.lifting()
    wait_until(done, 30, lambda: f"still lifting {dp.lifting()}: {dp.counters()}")


def collect(s: socket.socket) -> list[int]:
    seqs = []
    try:
        while True:
            seqs.append(struct.unpack("!I", s.recv(64))[0])
    except TimeoutError:
        pass
    s.close()
    return seqs


def test_buffer_holds_a_10k_pps_flow_during_a_move_lossless_in_order(lab: Lab) -> None:
    import time

    dps = flat(lab)
    ar1 = dps["ar1"]
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    # Read while it runs: 15000 datagrams left queued in the socket can
    # exceed even a forced 32 MB receive buffer (each costs its skb's
    # truesize), and the excess would show up as loss.
    rx = Reader(receiver(lab, 7200))
    # Runs until stopped: each step below waits for what it needs to have
    # happened, however slow the machine (deadlines, not durations).
    tx = Sender(lab, IP1, 7200, rate=10_000, seconds=120)
    tx.start()
    rx.start()
    wait_until(lambda: rx.got.value >= 2000, 30, lambda: f"{rx.got.value} of 2000 delivered")
    # FM:6-1: the MN leaves AR1; AR1 holds HNP1, with room for the whole
    # flow (the hold's limit is what this test is not about).
    ar1.apply([E(K.BUFFER, HNP1)], [], time.monotonic(),
              {HNP1: BufferSpec(limit=1_000_000, timeout=60.0)})
    move_mn_to_ar2(lab)
    dps["ar2"].apply([E(K.ANCHOR, HNP1, link="mn2")], [], 0.0)
    # At least 0.1 s of the flow is held before AR2 is said to be ready.
    held = wait_until(lambda: ar1.buffered(HNP1) >= 1000 and ar1.buffered(HNP1), 30,
                      lambda: f"{ar1.buffered(HNP1)} of 1000 held, {ar1.counters()}")
    # FM:6-2: AR2 is ready; AR1 tunnels HNP1 there and releases what it held.
    ar1.apply([E(K.TUNNEL, HNP1, SID2)],
              [E(K.BUFFER, HNP1), E(K.ANCHOR, HNP1, link="mn1")], 0.0)
    lift(ar1)
    after = tx.sent + 2000  # and the flow goes on through the tunnel
    wait_until(lambda: rx.highest.value >= after, 30,
               lambda: f"highest delivered {rx.highest.value}, waiting for {after}")
    tx.stop()
    seqs = rx.finish(30)
    counts = ar1.counters()
    assert len(seqs) == tx.sent, (f"lost {tx.sent - len(seqs)} of {tx.sent} (held {held}, "
                                  f"hold device counters {counts})")
    # None twice; reordering within the project's target (0.1%, RFC 4737):
    # the hold-lift race (docs/protocol.md section 7, issue 19) can let a
    # packet that entered the device just before the lift leave just after
    # one of the direct path - seen once in 9 suite runs (1 of ~24,000,
    # extent 2), and once more, 7 of 5241 (extent 10), in a suite run beside
    # other test runs on the same 2 vCPUs (the reader was a thread then).
    # Loosened from 0 for that reason; the count is printed.
    r = measure(seqs)
    assert r.duplicates == 0 and r.reordered <= len(seqs) // 1000, r
    assert counts["released"] >= held  # more arrived until the release
    # (Not asserted: the device's buffer-overflow, its tx_dropped - in 1 of
    # ~20 runs it counted one packet that was none of the flow's, all of
    # which arrived, once each and in order, as asserted above.)
    assert E(K.BUFFER, HNP1) not in ar1.entries()


def test_a_prefix_held_again_while_its_lift_drains_loses_nothing(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ping-pong: AR1 releases HNP1 to AR2 under a 10k pps stream, and the
    MN leaves again before the lift has found its lull.  The new hold keeps
    the hold route (it never goes) and takes back what the lift had not
    written out: every packet arrives once, in order, after the last
    release."""
    import time
    from functools import partial

    from dmanchor.dataplane.tunbuffer import Lifter

    # Lift steps that give the loop back at once: the lift is under way
    # when the next hold comes, whatever the machine's speed.
    monkeypatch.setattr("dmanchor.dataplane.linux_holds.Lifter", partial(Lifter, step=0.0))
    dps = flat(lab)
    ar1 = dps["ar1"]
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    rx = Reader(receiver(lab, 7280))
    tx = Sender(lab, IP1, 7280, rate=10_000, seconds=120)
    tx.start()
    rx.start()
    wait_until(lambda: rx.got.value >= 1000, 30, lambda: f"{rx.got.value} of 1000 delivered")
    spec = {HNP1: BufferSpec(limit=1_000_000, timeout=60.0)}
    ar1.apply([E(K.BUFFER, HNP1)], [], time.monotonic(), spec)
    move_mn_to_ar2(lab)
    dps["ar2"].apply([E(K.ANCHOR, HNP1, link="mn2")], [], 0.0)
    wait_until(lambda: ar1.buffered(HNP1) >= 500, 30, lambda: f"{ar1.buffered(HNP1)} held")
    ar1.apply([E(K.TUNNEL, HNP1, SID2)], [E(K.BUFFER, HNP1), E(K.ANCHOR, HNP1, link="mn1")],
              0.0)
    assert ar1.lifting() == {HNP1}
    ar1.apply([E(K.BUFFER, HNP1)], [], time.monotonic(), spec)  # held again
    assert not ar1.lifting() and ar1.holds() == {HNP1}
    wait_until(lambda: ar1.buffered(HNP1) >= 500, 30, lambda: f"{ar1.buffered(HNP1)} held")
    ar1.apply([], [E(K.BUFFER, HNP1)], 0.0)  # released again, to AR2
    lift(ar1)
    after = tx.sent + 2000
    wait_until(lambda: rx.highest.value >= after, 30,
               lambda: f"highest delivered {rx.highest.value}, waiting for {after}")
    tx.stop()
    seqs = rx.finish(30)
    counts = ar1.counters()
    assert len(seqs) == tx.sent, f"lost {tx.sent - len(seqs)} of {tx.sent}: {counts}"
    r = measure(seqs)
    assert r.duplicates == 0 and r.reordered <= len(seqs) // 1000, r
    assert counts["lift-held-again"] == 1, counts


def test_a_hold_lifted_alone_drains_into_the_route_installed_before_it(lab: Lab) -> None:
    """An anchor taking its prefix back (an MN returning, tunnel mode) holds
    the direct path in one batch and lifts the hold alone in a later one:
    the held packets go out through the route already installed.  (They
    used to find the hold again and loop through the device until their
    hop limit: all lost, and the lift blocked the agent for ~0.8 s.)"""
    dps = flat(lab)
    ar1 = dps["ar1"]
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1"), E(K.BUFFER, HNP1)], [], 0.0,
              {HNP1: BufferSpec(limit=10_000, timeout=60.0)})
    rx = receiver(lab, 7250)
    tx = Sender(lab, IP1, 7250, rate=2000, seconds=0.25)
    tx.start()
    tx.join(10)
    wait_until(lambda: ar1.buffered(HNP1) >= tx.sent, 10,
               lambda: f"{ar1.buffered(HNP1)} of {tx.sent} held, {ar1.counters()}")
    ar1.apply([], [E(K.BUFFER, HNP1)], 0.0)
    lift(ar1)
    seqs = collect(rx)
    assert seqs == list(range(tx.sent)), measure(seqs)
    assert ar1.counters()["released"] == tx.sent
    assert [e for e in ar1.entries() if e.prefix == HNP1] == [E(K.ANCHOR, HNP1, link="mn1")]


def test_a_hold_released_into_nothing_is_dropped_not_looped(lab: Lab) -> None:
    dps = flat(lab)
    ar1 = dps["ar1"]
    ar1.apply([E(K.BUFFER, HNP1)], [], 0.0, {HNP1: BufferSpec(limit=10_000, timeout=60.0)})
    tx = Sender(lab, IP1, 7260, rate=2000, seconds=0.1)
    tx.start()
    tx.join(10)
    wait_until(lambda: ar1.buffered(HNP1) >= tx.sent, 10,
               lambda: f"{ar1.buffered(HNP1)} of {tx.sent} held, {ar1.counters()}")
    ar1.apply([], [E(K.BUFFER, HNP1)], 0.0)
    lift(ar1)
    c = ar1.counters()
    # Each packet left the device once (a loop would bring it back up to
    # its hop limit), and the drop is counted.
    assert c["released"] == tx.sent and c["release-nowhere"] == 1, c
    assert [e for e in ar1.entries() if e.prefix == HNP1] == []


def test_a_hold_released_onto_a_link_gone_down_is_dropped_not_looped(lab: Lab) -> None:
    """The MN took its prefix back here, and left again while the hold was
    being released: its access link lost its carrier, so the route the held
    packets leave by is ignored.  They must not fall through to the standby
    route into the device again - looping until their hop limit, the lift
    ran its full second with the agent blocked (84407 "released" under load,
    make stress, pingpong) - but be dropped, once each."""
    dps = flat(lab)
    ar1 = dps["ar1"]
    lab.run("ar1", "sysctl", "-qw", "net.ipv6.conf.mn1.ignore_routes_with_linkdown=1")
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1"), E(K.BUFFER, HNP1)], [], 0.0,
              {HNP1: BufferSpec(limit=10_000, timeout=60.0)})
    tx = Sender(lab, IP1, 7270, rate=2000, seconds=0.1)
    tx.start()
    tx.join(10)
    wait_until(lambda: ar1.buffered(HNP1) >= tx.sent, 10,
               lambda: f"{ar1.buffered(HNP1)} of {tx.sent} held, {ar1.counters()}")
    lab.run("mn", "ip", "link", "set", "eth1", "down")  # the MN's radio goes
    wait_until(lambda: "NO-CARRIER" in lab.run("ar1", "ip", "link", "show", "mn1"), 10,
               lambda: "mn1 kept its carrier")
    ar1.apply([], [E(K.BUFFER, HNP1)], 0.0)
    lift(ar1)
    c = ar1.counters()
    assert c["released"] == tx.sent and not c.get("lift-forced"), c


def test_buffer_limit_and_timeout_drops_are_counted(lab: Lab) -> None:
    import time


    dps = flat(lab)
    dps["ar1"].apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    ar1 = dps["ar1"]
    t0 = time.monotonic()
    ar1.apply([E(K.BUFFER, HNP1)], [], t0, {HNP1: BufferSpec(limit=1000, timeout=0.2)})
    tx = Sender(lab, IP1, 7300, rate=10_000, seconds=0.15)
    tx.start()
    tx.join(10)
    # Everything sent reached the hold (kept, or over its limit).
    wait_until(lambda: ar1.buffered(HNP1) + ar1.counters()["buffer-overflow"] >= tx.sent, 10,
               lambda: f"{ar1.buffered(HNP1)} held, {ar1.counters()} of {tx.sent} sent")
    assert ar1.next_deadline() == pytest.approx(t0 + 0.2)
    ar1.expire(t0 + 0.3)
    c = ar1.counters()
    # The hold kept its limit and dropped the rest, counting both.  (The
    # kernel's own packets to IP1 - a unicast NUD probe - may be held too.)
    assert c["buffer-timeout"] == 1000
    assert c["buffer-overflow"] >= tx.sent - 1000
    assert E(K.BUFFER, HNP1) not in ar1.entries()


def test_per_flow_charging_counts_at_the_access_link_and_moves(lab: Lab) -> None:
    from dmanchor.dataplane.api import FlowUsage
    from dmanchor.dataplane.charging import Charging

    dps = flat(lab)
    ar1 = dps["ar1"]
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    ar1.charging.start(["mn1"])
    # Nobody names the flow ahead: it is counted from its first packet.
    flow = FlowFilter(Prefix.host(A(IP1)), P(f"{CN}/128"), 17, 5001, 40000)
    down = lab.socket("cn")
    down.bind((CN, 40000))
    mn = lab.socket("mn")
    mn.bind((IP1, 5001))
    other = lab.socket("cn")  # not the tracked flow: another source port
    for _ in range(50):
        down.sendto(b"x" * 100, (IP1, 5001))
        other.sendto(b"y" * 100, (IP1, 5001))
    for _ in range(10):
        mn.sendto(b"z" * 60, (CN, 40000))
    wait_until(lambda: ar1.usage(flow).packets_down >= 50 and ar1.usage(flow).packets_up >= 10,
               10, lambda: f"counted {ar1.usage(flow)}")
    u = ar1.usage(flow)
    assert (u.packets_down, u.packets_up) == (50, 10)
    assert u.bytes_down == 50 * (40 + 8 + 100) and u.bytes_up == 10 * (40 + 8 + 60)
    # FM:2 state moved in from a previous anchor adds to what is counted here.
    ar1.add_usage(flow, FlowUsage(1000, 2000, 7, 9))
    # The agent restarts (kill -9): the kernel kept its counters and what
    # moved in; a run counting on other links starts afresh.
    again = Charging(lab.ns("ar1"))
    again.start(["mn1"])
    assert again.kept and again.usage(flow) == ar1.usage(flow) == FlowUsage(
        10 * 108 + 1000, 50 * 148 + 2000, 10 + 7, 50 + 9)
    final = ar1.untrack(flow)
    assert (final.packets_down, final.packets_up) == (59, 17)
    assert flow not in ar1.charging.counted()
    # The other flow is charged on its own.
    assert any(f.dport != 40000 and u.packets_down == 50
               for f, u in ar1.charging.counted().items())
    other_links = Charging(lab.ns("ar1"))
    other_links.start(["mn1", "mn9"])
    assert not other_links.kept and other_links.counted() == {}
    for s in (down, mn, other):
        s.close()


def test_the_kernel_reports_flows_opening_closing_and_going_idle(lab: Lab) -> None:
    """ctnetlink in a router namespace whose charging table turned conntrack
    on: a TCP connection's life and a UDP flow's idle end, as events; the
    walk (dump) is what makes an expired entry's end be reported."""
    from dmanchor.dataplane.conntrack import Change, ConntrackMonitor, TcpState

    dps = flat(lab)
    ar1 = dps["ar1"]
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    ar1.charging.start(["mn1"])
    lab.run("ar1", "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=1")
    mon = ConntrackMonitor(lab.ns("ar1"))
    seen: list[tuple[Change, int, TcpState | None]] = []

    def events() -> list[tuple[Change, int, TcpState | None]]:
        seen.extend((e.change, e.conn.dport, e.tcp) for e in mon.read()
                    if e.conn.dst == A(IP1))
        return seen

    srv = lab.socket("mn", socket.SOCK_STREAM)
    srv.bind((IP1, 7002))
    srv.listen(1)
    cli = lab.socket("cn", socket.SOCK_STREAM)
    cli.settimeout(10)
    cli.connect((IP1, 7002))
    conn, _ = srv.accept()
    cli.sendall(b"x" * 1000)
    cli.shutdown(socket.SHUT_WR)
    conn.settimeout(10)
    while conn.recv(4096):
        pass
    conn.close()
    wait_until(lambda: (Change.UPDATE, 7002, TcpState.TIME_WAIT) in events(), 10,
               lambda: f"events {seen}")
    assert seen[0] == (Change.NEW, 7002, TcpState.SYN_SENT)
    udp = lab.socket("cn")
    udp.sendto(b"x", (IP1, 7001))
    wait_until(lambda: (Change.NEW, 7001, None) in events(), 10, lambda: f"events {seen}")

    def reaped() -> bool:
        present = {c.dport for c in mon.dump() if c.dst == A(IP1)}
        return (Change.GONE, 7001, None) in events() and 7001 not in present
    wait_until(reaped, 15, lambda: f"events {seen}")
    for s in (srv, cli, udp):
        s.close()
    mon.close()


def test_a_move_marks_the_old_path_and_a_bulk_install_does_not(lab: Lab) -> None:
    """R re-routes /64s of Net1 (covered by its /48 route to AR1) to AR2.  One
    such move sends an end marker down the path it left (FM:6); a batch of
    more than MARKER_LIMIT is a bulk installation: no lookups, no markers."""
    r = flat(lab)["r"]
    move = [E(K.ROUTE, P(f"2001:db8:1:{i:x}::/64"), A("fd00:2::2")) for i in range(1, 67)]
    r.apply(move[:1], [], 0.0)
    assert r.counters().get("end-marker-sent") == 1
    r.apply(move[1:], [], 0.0)
    assert r.counters().get("end-marker-sent") == 1
    assert r.counters()["bulk-without-markers"] == 1
    assert sum(1 for e in r.entries() if e in move) == len(move)


def test_a_prefix_taken_back_onto_its_link_marks_the_tunnel_it_left(lab: Lab) -> None:
    """An anchor whose MN came home swaps its tunnel to the visited point
    for the access link: the tunnel gets an end marker (it ends what was
    still on its way there), known from the batch without asking the kernel."""
    ar1 = flat(lab)["ar1"]
    ar1.apply([E(K.TUNNEL, HNP1, SID2)], [], 0.0)
    sent = ar1.counters().get("end-marker-sent", 0)
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1"), E(K.BUFFER, HNP1)], [E(K.TUNNEL, HNP1, SID2)],
              0.0, {HNP1: BufferSpec(timeout=5.0, release_on_timeout=True)})
    assert ar1.counters().get("end-marker-sent", 0) == sent + 1
    # A plain anchoring (nothing left) sends none.
    ar1.apply([E(K.ANCHOR, HNP2, link="mn1")], [], 0.0)
    assert ar1.counters().get("end-marker-sent", 0) == sent + 1


def test_only_a_signed_end_marker_lifts_a_hold(lab: Lab) -> None:
    """Issue 15 item 5: anyone can send a UDP packet to an MN's address; a
    forged end marker must not lift the new anchor's hold early (which
    would let the new path overtake the old one)."""
    import time

    r_key = Key(1, b"r" * 32, "r", frozenset({Role.FMDP}))
    ar1_key = Key(2, b"a" * 32, "ar1", frozenset({Role.ANCHOR}))
    ar1 = flat(lab)["ar1"]
    ar1.markers = MarkerAuth([r_key, ar1_key], ar1_key.key_id)
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    ar1.apply([E(K.BUFFER, HNP1)], [], time.time(),
              {HNP1: BufferSpec(limit=1000, timeout=60.0, release_on_timeout=True)})
    cn = lab.socket("cn")
    try:
        forged = MarkerAuth([], None).payload(HNP1, time.time())
        cn.sendto(forged, (IP1, MARKER_PORT))

        def judged(reason: str) -> int:
            ar1.on_readable(time.time())
            return ar1.counters().get(reason, 0)
        wait_until(lambda: judged("end-marker-unsigned"), 10, lambda: f"{ar1.counters()}")
        assert E(K.BUFFER, HNP1) in ar1.entries()  # still held
        signed = MarkerAuth([r_key], r_key.key_id).payload(HNP1, time.time())
        cn.sendto(signed, (IP1, MARKER_PORT))
        wait_until(lambda: judged("end-marker"), 10, lambda: f"{ar1.counters()}")
        lift(ar1)
        assert E(K.BUFFER, HNP1) not in ar1.entries() and not ar1.holds()
    finally:
        cn.close()


@pytest.mark.parametrize("cap", ["MAX_HELD_BYTES", "MAX_HOLD_BYTES"])
def test_held_bytes_are_capped_per_hold_and_node_wide(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, cap: str) -> None:
    """Each hold has a packet limit, and a byte limit; all holds together
    also a byte limit (issue 15 item 4: a hold is memory, and peers ask
    for holds)."""
    import time

    import dmanchor.dataplane.linux_holds as holds

    monkeypatch.setattr(holds, cap, 100 * 52)  # 100 probe packets (48 + 4 bytes)
    dps = flat(lab)
    ar1 = dps["ar1"]
    ar1.apply([E(K.ANCHOR, HNP1, link="mn1")], [], 0.0)
    ar1.apply([E(K.BUFFER, HNP1)], [], time.monotonic(),
              {HNP1: BufferSpec(limit=10_000, timeout=60.0)})
    tx = Sender(lab, IP1, 7400, rate=10_000, seconds=0.03)
    tx.start()
    tx.join(10)
    wait_until(lambda: ar1.buffered(HNP1) + ar1.counters().get("buffer-overflow-bytes", 0)
               >= tx.sent, 10, lambda: f"{ar1.buffered(HNP1)} held, {ar1.counters()}")
    assert ar1.buffered(HNP1) <= 100
    assert ar1.counters()["buffer-overflow-bytes"] >= tx.sent - 100


def test_the_kernel_tells_when_a_host_on_a_shared_link_stops_answering(lab: Lab) -> None:
    """NUD on an access link whose carrier stays up: the host drops its
    addresses (as if its radio went, on a link with other hosts); traffic
    towards it makes the kernel probe it, and the FAILED that follows names
    its address.  :class:`Reachability` turns that into the MN leaving."""
    from dmanchor.access.reach import Reachability
    from dmanchor.dataplane.neigh import VALID, NeighbourMonitor

    lab.build(["ar", "mn"], [Veth("ar", "mn1", "2001:db8:1:1::1/64",
                                  "mn", "eth0", "2001:db8:1:1::10/64")], hosts=["mn"])
    lab.run("mn", "ip", "link", "set", "eth0", "address", "02:00:00:00:00:01")
    for knob, value in (("delay_first_probe_time", "1"), ("retrans_time_ms", "200"),
                        ("base_reachable_time_ms", "500")):
        lab.run("ar", "sysctl", "-qw", f"net.ipv6.neigh.mn1.{knob}={value}")
    ifindex = int(lab.run("ar", "cat", "/sys/class/net/mn1/ifindex"))
    mon = NeighbourMonitor(lab.ns("ar"))
    reach = Reachability({ifindex: "mn1"})
    gone: list[tuple[str, str]] = []
    tx = lab.socket("ar")
    try:
        def poke_and_read() -> list[tuple[str, str]]:
            # Forwarded traffic is what drives NUD: keep some going.
            tx.sendto(b"x", ("2001:db8:1:1::10", 9))
            for e in mon.read():
                gone.extend(reach.feed(e))
            return gone
        def answered() -> bool:
            poke_and_read()
            return any(state & VALID for _, state in reach._seen["mn1"].values())
        wait_until(answered, 10, "the host never answered a Neighbor Solicitation")
        assert gone == []
        lab.run("mn", "ip", "-6", "addr", "flush", "dev", "eth0")
        wait_until(poke_and_read, 30, "the host never became unreachable")
        assert gone == [("02:00:00:00:00:01", "mn1")]
        assert lab.run("ar", "cat", "/sys/class/net/mn1/carrier").strip() == "1"
    finally:
        tx.close()
        mon.close()
