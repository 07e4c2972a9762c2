"""A node hosting an LMs drains its events (they grew without bound before)."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv6Address
from pathlib import Path

from dmanchor.lm.lms import LmsCore
from dmanchor.node import Node
from dmanchor.nodeconf import load_node_config
from dmanchor.runtime import clock
from dmanchor.wire import decode, encode
from dmanchor.wire.messages import LocationUpdate, LocationUpdateAck
from dmanchor.wire.types import Prefix
from tests.integration.conftest import Etcd


def test_a_node_hosting_an_lms_drains_its_events(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(f'[node]\nid = "core"\n[security]\ninsecure = true\n'
                    f'[lms]\nlisten = "127.0.0.1:0"\n'
                    f'state_dir = "{tmp_path / "state"}"\n')

    async def scenario() -> None:
        node = Node(load_node_config(conf))
        lines = await node.start()
        try:
            port = int(next(line for line in lines if line.startswith("lms")).split()[2])
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                s.connect(("127.0.0.1", port))
                for seq in range(1, 51):
                    prefix = Prefix((0x20010DB8 << 96) | (seq << 64), 64)
                    await loop.sock_sendall(s, encode(LocationUpdate(
                        prefix, IPv6Address("2001:db8:ff::1"), 60), seq))
                    ack = decode(await asyncio.wait_for(loop.sock_recv(s, 2048), 10))
                    assert isinstance(ack.message, LocationUpdateAck)
            core = node.drivers["lms"].core
            assert isinstance(core, LmsCore)
            assert core.counters["update"] == 50
            assert core.events == []  # every binding change was drained (logged)
        finally:
            node.close()

    asyncio.run(scenario())


def test_two_nodes_hosting_lms_on_one_etcd_share_their_bindings(tmp_path: Path,
                                                                etcd: Etcd) -> None:
    """``[lms] etcd`` in a node: what one node's LMs acknowledged, the
    other's serves once its watch delivered it."""
    confs = []
    for name in ("core-a", "core-b"):
        conf = tmp_path / f"{name}.toml"
        conf.write_text(f'[node]\nid = "{name}"\n[security]\ninsecure = true\n'
                        f'[lms]\nlisten = "127.0.0.1:0"\netcd = "{etcd.endpoint}"\n')
        confs.append(conf)
    prefix = Prefix.parse("2001:db8:1:1::/64")
    where = IPv6Address("2001:db8:ff::1")

    async def scenario() -> None:
        nodes = [Node(load_node_config(c)) for c in confs]
        try:
            ports = []
            for node in nodes:
                lines = await node.start()
                ports.append(int(next(x for x in lines if x.startswith("lms")).split()[2]))
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                s.connect(("127.0.0.1", ports[0]))
                await loop.sock_sendall(s, encode(LocationUpdate(prefix, where, 60), 1))
                ack = decode(await asyncio.wait_for(loop.sock_recv(s, 2048), 10))
                assert isinstance(ack.message, LocationUpdateAck)
            other = nodes[1].drivers["lms"].core
            assert isinstance(other, LmsCore)
            deadline = loop.time() + 10
            while other.lookup(prefix, clock.now()) is None:
                assert loop.time() < deadline, "core-b never learnt core-a's binding"
                await asyncio.sleep(0.01)
            found = other.lookup(prefix, clock.now())
            assert found is not None and found.forwarding_address == where
            assert other.counters["store-watched"] == 1
        finally:
            for node in nodes:
                node.close()

    asyncio.run(scenario())
