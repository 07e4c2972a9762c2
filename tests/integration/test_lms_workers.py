"""An LMs of several workers (``[lms] workers``) against a real etcd: the
workers share one port, each serves what the others were told, a killed
worker is restarted, and the workers die with their supervisor."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from ipaddress import IPv6Address as A
from pathlib import Path

import pytest

from dmanchor.lm.client import LocationClient
from dmanchor.lm.etcd import KEY_PREFIX, EtcdClient
from dmanchor.wire.types import Prefix
from tests.helpers import wait_until
from tests.integration.conftest import Daemons, Etcd
from tests.integration.test_etcd_store import served

pytestmark = pytest.mark.integration

P = Prefix.parse
DPA = A("2001:db8:ff::1")
COVER = P("2001:db8:7::/48")


def conf(etcd: Etcd, workers: int = 2) -> str:
    return f"""
[lms]
node_id = "lw"
listen = "127.0.0.1:0"
etcd = "{etcd.endpoint}"
workers = {workers}
log_level = "info"
[security]
insecure = true
"""


def hnp(i: int) -> Prefix:
    return P(f"2001:db8:7:{i:x}::/64")


def children(pid: int) -> set[int]:
    """The PIDs of ``pid``'s children (the supervisor's workers)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return {int(w) for w in path.read_text().split()}
    except FileNotFoundError:
        return set()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no one reaped yet has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def writer_of(etcd: Etcd, prefix: Prefix) -> str:
    """Which worker (``node_id/index``) wrote ``prefix``'s binding to etcd."""
    import json

    key = base64.b64encode((KEY_PREFIX + str(prefix)).encode()).decode()
    client = EtcdClient(etcd.endpoint)
    try:
        kvs = client.call("kv/range", {"key": key}).get("kvs", [])
    finally:
        client.close()
    assert len(kvs) == 1, kvs
    return str(json.loads(base64.b64decode(kvs[0]["value"]))["w"])


def test_workers_share_a_port_and_serve_each_others_updates(daemons: Daemons,
                                                            etcd: Etcd) -> None:
    lms = daemons.start("lms", "lw", conf(etcd))
    wait_until(lambda: len(children(lms.proc.pid)) == 2, 10, "two workers")

    async def run() -> None:
        clients: list[LocationClient] = []
        try:
            # Clients (each its own socket) until both workers have taken
            # an update: the kernel hashes each client to one of them.
            writers: set[str] = set()
            while len(writers) < 2:
                assert len(clients) < 64, f"every update went to {writers}"
                c = await LocationClient.connect([("127.0.0.1", lms.port)])
                clients.append(c)
                assert await c.update(hnp(len(clients)), DPA, 600) == 600
                writers.add(writer_of(etcd, hnp(len(clients))))
            assert writers == {"lw/0", "lw/1"}
            # Every client is served every binding, whichever worker took it.
            for c in clients:
                for i in range(1, len(clients) + 1):
                    assert (await served(c, hnp(i))).forwarding_address == DPA
            # LM:1-3: a subscriber hears of an update another worker took.
            first, last = clients[0], clients[-1]
            await first.subscribe([COVER])
            moved = A("2001:db8:ff::2")
            await last.update(hnp(len(clients)), moved, 600)
            push = await asyncio.wait_for(first.pushes.get(), 10)
            assert (push.prefix, push.forwarding_address) == (hnp(len(clients)), moved)
        finally:
            for c in clients:
                c.close()

    asyncio.run(run())


def test_a_killed_worker_is_restarted_and_workers_die_with_the_supervisor(
        daemons: Daemons, etcd: Etcd) -> None:
    lms = daemons.start("lms", "lw", conf(etcd))
    wait_until(lambda: len(children(lms.proc.pid)) == 2, 10, "two workers")
    first = children(lms.proc.pid)

    async def update_then_query(prefix: Prefix) -> None:
        c = await LocationClient.connect([("127.0.0.1", lms.port)])
        try:
            await c.update(prefix, DPA, 600)
            assert (await served(c, prefix)).forwarding_address == DPA
        finally:
            c.close()

    asyncio.run(update_then_query(hnp(1)))
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    # Restarted: a new worker beside the survivor, which served meanwhile.
    wait_until(lambda: len(children(lms.proc.pid) - {victim}) == 2, 15,
               lambda: f"a restarted worker; log: {lms.log_text()}")
    assert "restarting it" in lms.log_text()
    asyncio.run(update_then_query(hnp(2)))

    async def everything_served() -> None:
        for _ in range(8):  # several sockets: both workers are asked
            c = await LocationClient.connect([("127.0.0.1", lms.port)])
            try:
                for p in (hnp(1), hnp(2)):
                    assert (await served(c, p)).forwarding_address == DPA
            finally:
                c.close()

    asyncio.run(everything_served())
    # kill -9 of the supervisor: its workers must not serve on unsupervised.
    workers = children(lms.proc.pid)
    lms.kill9()
    wait_until(lambda: not any(alive(w) for w in workers), 10,
               lambda: f"the workers to exit: {[w for w in workers if alive(w)]} run")
