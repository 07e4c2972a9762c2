"""Draft 4.1.2 on real kernels: node processes, real signalling, real packets.

The anchors, the controller and the LMs run as ``dmanchor node`` processes
inside their namespaces; the access layer is driven over each anchor's
control socket; a sequenced UDP flow crosses the move.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmanchor.access.nd import NdError, RouterSolicitation, decode_ra, encode_rs
from dmanchor.config import key_toml, new_key
from dmanchor.dataplane.netlink import open_in_netns
from dmanchor.emulation.flat import CN, HNP1, HNP2, IP1, flat, move_mn_to_ar2
from dmanchor.emulation.lab import Lab
from dmanchor.emulation.nodes import NodeProcesses, command, wait_for_messages
from dmanchor.reordering import measure
from dmanchor.wire.auth import Role
from tests.helpers import wait_until
from tests.netns.test_linux_dataplane import Sender, collect, receiver, sent_to_cn

# Signed, as deployed: each node its own key, every node all keys.  The core
# listens on [::], so its functions verify MACs against the PKTINFO address.
KEYS = {"ar1": new_key(1, "ar1", frozenset({Role.ANCHOR})),
        "ar2": new_key(2, "ar2", frozenset({Role.ANCHOR})),
        "core": new_key(3, "core", frozenset({Role.CONTROLLER, Role.LMS, Role.FMDP}))}


def _security(name: str) -> str:
    return (f"[security]\nsend_key = {KEYS[name].key_id}\n"
            + "".join(key_toml(k) for k in KEYS.values()))


def _anchor_conf(i: int, tmp: Path, mode: str, lifetime: int, extra: str = "") -> str:
    """An anchor node's config; ``extra`` lines go into its [anchor] table."""
    other = 3 - i
    return f"""
[node]
id = "ar{i}"
control = "{tmp / f'ar{i}.sock'}"
trace = "{tmp / f'ar{i}.trace.jsonl'}"
log_level = "info"

[anchor]
listen = "[fd00:{i}::2]:5400"
dpa = "fc00::{i}:0"
prefixes = ["2001:db8:{i}::/48"]
uplink = "fd00:{i}::1"
controller = "[fd00:{i}::1]:5400"
lms = "[fd00:{i}::1]:5401"
mode = "{mode}"
lifetime = {lifetime}
charged_links = ["mn{i}"]
{extra}
[anchor.agents]
"fc00::{other}:0" = "[fd00:{other}::2]:5400"
{_security(f"ar{i}")}
"""


def _core_conf(tmp: Path, switch: bool) -> str:
    """R hosts the controller, an LMs and its own FM-DP."""
    central = """
lms = "[::1]:5401"
watch = ["2001:db8::/32"]
[[controller.routers]]
name = "r"
address = "[::1]:5402"
[controller.routers.next_hops]
"fc00::1:0" = "fd00:1::2"
"fc00::2:0" = "fd00:2::2"
""" if switch else ""
    return f"""
[node]
id = "core"
control = "{tmp / 'core.sock'}"
trace = "{tmp / 'core.trace.jsonl'}"
log_level = "info"
[controller]
listen = "[::]:5400"
{central}
[lms]
listen = "[::]:5401"
[fmdp]
listen = "[::]:5402"
control = "[::1]:5400"
{_security("core")}
"""


FLOW = {"src": f"{IP1}/128", "dst": f"{CN}/128", "proto": 17, "sport": 7400, "dport": 40000}


@pytest.fixture
def nodes(lab: Lab, tmp_path: Path) -> Iterator[NodeProcesses]:
    n = NodeProcesses(lab, tmp_path)
    try:
        yield n
    finally:
        n.stop()


def anchor_conf(i: int, tmp: Path, mode: str = "tunnel") -> str:
    return _anchor_conf(i, tmp, mode, 600)


def within_target(seqs: list[int], sent: int) -> None:
    """The project's reordering target across a move (design.md): at most
    0.1% of the packets (RFC 4737 count), none twice.  Not 0: a hold lifted
    just as a burst arrives can leave a packet or two behind the direct path
    (the lift race, issue #19); 2 of ~4000 were seen once in ~20 runs."""
    order = measure(seqs)
    assert order.duplicates == 0 and order.reordered <= sent // 1000, order


def running(tx: Sender, packets: int = 800) -> None:
    """Wait until ``tx`` has sent ``packets`` more (the flow is on, whatever
    the machine's speed)."""
    mark = tx.sent + packets
    wait_until(lambda: tx.sent >= mark, 30, lambda: f"sent {tx.sent}, waiting for {mark}")


def move_with_a_flow(lab: Lab, ar1: Path, ar2: Path) -> int:
    """The MN on AR1 with HNP1 moves to AR2 while a 2k pps UDP flow runs to IP1;
    asserts the flow lost nothing and kept its order; returns how many were sent."""
    command(ar1, {"cmd": "attach", "mn": "mn", "link": "mn1", "own": [str(HNP1)],
                  "previous": {}})
    rx = receiver(lab, 7400)
    tx = Sender(lab, IP1, 7400, rate=2000, seconds=120)  # stopped below
    tx.sock.bind((CN, 40000))
    tx.start()
    running(tx)
    command(ar1, {"cmd": "detach", "mn": "mn"})  # link down at p-AR: FM:6-1 hold
    move_mn_to_ar2(lab)
    command(ar2, {"cmd": "attach", "mn": "mn", "link": "mn2", "own": [str(HNP2)],
                  "previous": {str(HNP1): [FLOW]}})
    running(tx)  # the flow goes on after the move, then ends
    tx.stop()
    seqs = collect(rx)
    assert len(seqs) == tx.sent, f"lost {tx.sent - len(seqs)} of {tx.sent}"
    within_target(seqs, tx.sent)
    return tx.sent


def test_4_1_2_with_node_processes_on_real_kernels(lab: Lab, nodes: NodeProcesses,
                                                    tmp_path: Path) -> None:
    for dp in flat(lab).values():
        dp.close()  # static routing is in; the nodes own the data planes
    nodes.start("r", "core", _core_conf(tmp_path, switch=False))
    nodes.start("ar1", "ar1", anchor_conf(1, tmp_path))
    nodes.start("ar2", "ar2", anchor_conf(2, tmp_path))
    ar1, ar2 = tmp_path / "ar1.sock", tmp_path / "ar2.sock"
    wait_for_messages(tmp_path / "core.sock", {"REGISTRATION_REPLY": 2})
    sent = move_with_a_flow(lab, ar1, ar2)
    # The old anchor tunnels HNP1 to the new one; the new one anchors both.
    e1 = command(ar1, {"cmd": "entries"})
    e2 = command(ar2, {"cmd": "entries"})
    assert isinstance(e1, list) and isinstance(e2, list)
    assert {"kind": "TUNNEL", "prefix": str(HNP1), "next_hop": "fc00::2:0"} in e1
    assert {"kind": "ANCHOR", "prefix": str(HNP1), "link": "mn2"} in e2
    assert {"kind": "ANCHOR", "prefix": str(HNP2), "link": "mn2"} in e2
    # FM:2: every downlink packet charged once, the old anchor's count moved over.
    usage = command(ar2, {"cmd": "usage", "flows": [FLOW]})
    assert isinstance(usage, list) and usage[0]["packets_down"] == sent


def traces(path: Path) -> list[dict[str, Any]]:
    """The records a node traced so far."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def switch_conf(i: int, tmp: Path) -> str:
    return anchor_conf(i, tmp, "switch")


def test_4_2_1_anchor_switch_with_node_processes_on_real_kernels(
        lab: Lab, nodes: NodeProcesses, tmp_path: Path) -> None:
    """The anchoring of HNP1 moves to AR2: the controller re-routes R (FM:5-1),
    R's end marker closes the old path, AR1's leftovers reach AR2's flush SID
    past its hold, and the hold lifts on the marker: lossless and in order."""
    for dp in flat(lab).values():
        dp.close()
    nodes.start("r", "core", _core_conf(tmp_path, switch=True))

    nodes.start("ar1", "ar1", switch_conf(1, tmp_path))
    nodes.start("ar2", "ar2", switch_conf(2, tmp_path))
    ar1, ar2 = tmp_path / "ar1.sock", tmp_path / "ar2.sock"
    wait_for_messages(tmp_path / "core.sock", {"REGISTRATION_REPLY": 2, "SUBSCRIBE_ACK": 1})
    sent = move_with_a_flow(lab, ar1, ar2)
    # The core now routes HNP1 straight to AR2, which anchors it.
    routes = lab.run("r", "ip", "-6", "route", "show", str(HNP1))
    assert "via fd00:2::2" in routes
    e2 = command(ar2, {"cmd": "entries"})
    assert {"kind": "ANCHOR", "prefix": str(HNP1), "link": "mn2"} in e2
    assert not [e for e in e2 if e["kind"] == "BUFFER"]  # the hold was lifted
    c2 = command(ar2, {"cmd": "counters"})
    assert c2.get("end-marker") == 1 and c2.get("hold-timeout-released", 0) == 0
    # Both holds (AR1's FM:6-1 buffer, AR2's flush-SID hold) were lifted, for
    # the cause each has, at real-time priority (root may raise it).  How
    # many packets each happened to hold depends on the machine's speed
    # (AR2's often holds none): not asserted.
    for node, cause in (("ar1", "apply"), ("ar2", "end-marker")):
        lifts = [r for r in traces(tmp_path / f"{node}.trace.jsonl") if r["fn"] == "lift"]
        assert [r["cause"] for r in lifts] == [cause], (node, lifts)
        assert all(r["guarded"] for r in lifts), (node, lifts)
    for counts in (command(ar1, {"cmd": "counters"}), c2):
        assert counts.get("lift-unguarded", 0) == 0
    usage = command(ar2, {"cmd": "usage", "flows": [FLOW]})
    assert usage[0]["packets_down"] == sent


def test_attach_by_router_solicitation_naming_the_previous_prefix(
        lab: Lab, nodes: NodeProcesses, tmp_path: Path) -> None:
    """The new router learns the MN's previous prefix from its RS (section 8 of
    docs/protocol.md) - or from the LMs, by MN, if that answer comes first -
    attaches it, and advertises HNP2 and the deprecated HNP1."""
    for dp in flat(lab).values():
        dp.close()
    nodes.start("r", "core", _core_conf(tmp_path, switch=False))
    nodes.start("ar1", "ar1", anchor_conf(1, tmp_path))
    nodes.start("ar2", "ar2", _anchor_conf(
        2, tmp_path, "tunnel", 600,
        extra='access_links = ["mn2"]\nmn_pool = "2001:db8:2::/48"'))
    ar1 = tmp_path / "ar1.sock"
    wait_for_messages(tmp_path / "core.sock", {"REGISTRATION_REPLY": 2})
    # The MN is known by its link-layer address, at AR1 as in its RS at AR2:
    # the binding of HNP1 names it, so AR2 may claim HNP1 for it (SM).
    mac = lab.run("mn", "cat", "/sys/class/net/br0/address").strip()
    command(ar1, {"cmd": "attach", "mn": mac, "link": "mn1", "own": [str(HNP1)],
                  "previous": {}})
    rx = receiver(lab, 7500)
    tx = Sender(lab, IP1, 7500, rate=2000, seconds=120)  # stopped below
    tx.start()
    running(tx)
    command(ar1, {"cmd": "detach", "mn": mac})
    move_mn_to_ar2(lab)
    # The MN's stack solicits on its new link, naming its previous prefix:
    # no command reaches AR2, it learns the attachment from the RS.
    sock = open_in_netns(lab.ns("mn"), socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    br0 = int(lab.run("mn", "cat", "/sys/class/net/br0/ifindex"))
    # (With the MN's own link-layer address: its kernel may solicit too.)
    rs = encode_rs(RouterSolicitation((HNP1,), bytes.fromhex(mac.replace(":", ""))))

    def named() -> bool:
        # (It may have heard the MN's kernel first - an MLD report - and
        # attached it then: the RS naming HNP1 adds it, or the LMs' answer
        # about the MN (LM:1-1 by MN) came first and kept it already.)
        entries = command(tmp_path / "ar2.sock", {"cmd": "entries"})
        return {"kind": "ANCHOR", "prefix": str(HNP1), "link": "mn2"} in entries
    # Solicited again until heard, as a host retransmits its RS (RFC 4861
    # 6.3.7): the first may go while the new radio does not carry yet.
    sent = 0

    def solicit() -> bool:
        nonlocal sent
        if not named():
            sock.sendto(rs, ("ff02::2", 0, 0, br0))
            sent += 1
        return named()
    try:
        wait_until(solicit, 30, lambda: f"AR2 did not keep HNP1 ({sent} RSs): "
                                        f"{nodes.log('ar2')[-2000:]}", interval=0.5)
    finally:
        sock.close()
    # The flow goes on well past AR2's attachment of the MN, then ends.
    running(tx, 1000)
    tx.stop()
    seqs = collect(rx)
    assert len(seqs) == tx.sent, f"lost {tx.sent - len(seqs)} of {tx.sent}"
    within_target(seqs, tx.sent)
    # SM at AR2: the MN's access link now accepts sources in the MN's
    # prefixes (HNP1 kept, HNP2 new) and drops any other (a spoofed one).
    lab.run("mn", "ip", "-6", "addr", "add", "2001:db8:77::1/128", "dev", "br0", "nodad")
    assert sent_to_cn(lab, [IP1, "2001:db8:77::1"]) == [IP1]
    counts = command(tmp_path / "ar2.sock", {"cmd": "counters"})
    assert counts["spoofed-source:mn2"] == 1 and counts["spoofed-source"] == 1
    lab.run("mn", "ip", "-6", "addr", "del", "2001:db8:77::1/128", "dev", "br0")
    addrs = [line for line in lab.run("mn", "ip", "-6", "addr", "show", "dev", "br0")
             .splitlines() if "inet6" in line and "dynamic" in line]
    assert any(a.split()[1].startswith("2001:db8:2:1:") and "deprecated" not in a
               for a in addrs), addrs
    # On-demand mobility in the MN: new sockets of either kind take the
    # address of the network the MN is in; the session on IP1 keeps it.
    probe = ("from ipaddress import IPv6Address as A;"
             "from dmanchor.mn.ondemand import AddressKind as K, choose, host_addresses as h;"
             "a = h('br0'); print(choose(a, K.NONPERSISTENT), choose(a, K.SESSION_LASTING),"
             f" choose(a, K.SESSION_LASTING, current=A('{IP1}')))")
    new, lasting, kept = lab.run("mn", sys.executable, "-c", probe).split()
    assert new.startswith("2001:db8:2:1:") and lasting == new and kept == IP1


def test_unsolicited_router_advertisements_refresh_the_mns_prefixes(
        lab: Lab, nodes: NodeProcesses, tmp_path: Path) -> None:
    """RFC 4861 6.2.4: the router advertises on its access link on its own,
    at random intervals (here MaxRtrAdvInterval 4 s: every 3-4 s), with the
    prefixes of the MNs there - a stock host keeps its addresses without
    soliciting."""
    for dp in flat(lab).values():
        dp.close()
    # The MN never solicits: whatever RAs it gets are unsolicited.
    lab.run("mn", "sysctl", "-qw", "net.ipv6.conf.br0.router_solicitations=0")
    move_mn_to_ar2(lab)
    sock = open_in_netns(lab.ns("mn"), socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"br0")
    sock.settimeout(1.0)
    nodes.start("r", "core", _core_conf(tmp_path, switch=False))
    nodes.start("ar2", "ar2", _anchor_conf(
        2, tmp_path, "tunnel", 600,
        extra='access_links = ["mn2"]\nmn_pool = "2001:db8:2::/48"\nra_interval = 4'))
    ar2 = tmp_path / "ar2.sock"
    wait_for_messages(tmp_path / "core.sock", {"REGISTRATION_REPLY": 1})
    # (By its MAC, as the router knows it when it hears it on the link.)
    command(ar2, {"cmd": "attach", "mn": "02:00:00:00:00:01", "link": "mn2",
                  "own": [str(HNP2)], "previous": {}})
    attached = time.monotonic()
    with_hnp2: list[float] = []
    deadline = attached + 30

    def bursts() -> list[float]:
        # RAs less than 0.5 s apart answer one moment: the router may hear
        # the MN on its link (an arrival) as the attach command comes, and
        # answers both.  The schedule is the time between such moments.
        return [t for i, t in enumerate(with_hnp2) if i == 0 or t - with_hnp2[i - 1] > 0.5]
    try:
        while len(bursts()) < 3 and time.monotonic() < deadline:
            try:
                data = sock.recv(1500)
            except TimeoutError:
                continue
            with contextlib.suppress(NdError):
                ra = decode_ra(data)
                if any(p.prefix == HNP2 and p.valid > 0 and p.preferred > 0
                       for p in ra.prefixes):
                    with_hnp2.append(time.monotonic())
    finally:
        sock.close()
    # The attach's own RA, then unsolicited ones, each 3 to 4 s after the
    # last (a little slack for a loaded machine's scheduling).
    assert len(bursts()) == 3, with_hnp2
    gaps = [b - a for a, b in itertools.pairwise(bursts())]
    assert all(g >= 2.9 for g in gaps), (gaps, with_hnp2)
