"""Prometheus metrics of a running node (``[node] metrics``), scraped over HTTP."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv6Address
from pathlib import Path

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
