"""Prometheus metrics of a running node (``[node] metrics``), scraped over HTTP."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dmanchor.node import Node
from dmanchor.nodeconf import load_node_config
from dmanchor.wire import decode, encode
from dmanchor.wire.messages import LocationUpdate, LocationUpdateAck
from dmanchor.wire.types import Prefix


async def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    """(status line, body) of one HTTP GET on the node's metrics port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def test_the_counters_move_with_what_the_node_does(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(f'[node]\nid = "core"\nmetrics = "127.0.0.1:0"\n'
                    f'[security]\ninsecure = true\n'
                    f'[lms]\nlisten = "127.0.0.1:0"\nstate_dir = "{tmp_path / "state"}"\n')

    async def scenario() -> None:
        node = Node(load_node_config(conf))
        lines = await node.start()
        try:
            port = {ln.split()[0]: int(ln.split()[2]) for ln in lines}
            status, body = await scrape(port["metrics"])
            assert status == "HTTP/1.0 200 OK"
            before = samples(body)
            key = ("dmanchor_messages_total", (("direction", "received"), ("function", "lms"),
                                               ("type", "LOCATION_UPDATE")))
            assert key not in before
            assert before[("dmanchor_bindings", ())] == 0
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                s.connect(("127.0.0.1", port["lms"]))
                for seq in (1, 2, 3):
                    if seq == 3:  # a malformed datagram first: a drop (and the
                        # answer to the next one shows it was read)
                        await loop.sock_sendall(s, b"\x00garbage")
                    prefix = Prefix((0x20010DB8 << 96) | (seq << 64), 64)
                    await loop.sock_sendall(s, encode(LocationUpdate(
                        prefix, IPv6Address("2001:db8:ff::1"), 60), seq))
                    ack = decode(await asyncio.wait_for(loop.sock_recv(s, 2048), 10))
                    assert isinstance(ack.message, LocationUpdateAck)
            after = samples((await scrape(port["metrics"]))[1])
            assert after[key] == 3
            sent = ("dmanchor_messages_total", (("direction", "sent"), ("function", "lms"),
                                                ("type", "LOCATION_UPDATE_ACK")))
            assert after[sent] == 3
            assert after[("dmanchor_bindings", ())] == 3
            drops = {k: v for k, v in after.items() if k[0] == "dmanchor_drops_total"}
            assert sum(drops.values()) >= 1, drops
            assert (await scrape(port["metrics"], "/other"))[0] == "HTTP/1.0 404 Not Found"
        finally:
            node.close()

    asyncio.run(scenario())


def test_metrics_are_off_unless_configured(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(f'[node]\nid = "core"\n[security]\ninsecure = true\n'
                    f'[lms]\nlisten = "127.0.0.1:0"\nstate_dir = "{tmp_path / "state"}"\n')
    node = Node(load_node_config(conf))
    assert node.metrics is None


def test_each_hold_is_timed_from_its_start_to_its_lift() -> None:
    from dmanchor.dataplane.tunbuffer import Lift
    from dmanchor.metrics import NodeMetrics
    from dmanchor.runtime import clock
    from dmanchor.wire.types import EntryKind, ForwardingEntry

    now = [100.0]
    mp = pytest.MonkeyPatch()
    mp.setattr(clock, "now", lambda: now[0])
    try:
        m = NodeMetrics(object())  # type: ignore[arg-type]  # (only timing is exercised)
        p = Prefix.parse("2001:db8:1:1::/64")
        hold = ForwardingEntry(EntryKind.BUFFER, p)
        m.change([hold], [])           # a hold that times out: never lifted
        now[0] = 105.0
        m.change([hold], [])           # the next hold of the prefix starts afresh
        now[0] = 105.004
        m.lift(p, Lift(3, 0), "end-marker")
        m.lift(p, Lift(0, 0), "apply")  # a lift without a start is counted, not timed
        [hist] = m.hold.collect()
        count = next(s.value for s in hist.samples if s.name.endswith("_count"))
        total = next(s.value for s in hist.samples if s.name.endswith("_sum"))
        assert count == 1 and abs(total - 0.004) < 1e-9
        [lifts] = m.lifts.collect()
        assert {s.labels["cause"]: s.value for s in lifts.samples
                if s.name.endswith("_total")} == {"end-marker": 1, "apply": 1}
    finally:
        mp.undo()
