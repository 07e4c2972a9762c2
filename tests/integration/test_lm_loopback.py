"""Location management over real UDP on loopback, daemons as processes."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from ipaddress import IPv6Address as A
from pathlib import Path

import pytest

from dmanchor.config import key_toml, new_key
from dmanchor.lm.client import LocationClient, LocationError
from dmanchor.lm.lmc import Pushed
from dmanchor.wire.auth import Role, Security
from dmanchor.wire.types import Cause, Prefix
from tests.helpers import wait_until
from tests.integration.conftest import Daemon, Daemons

pytestmark = pytest.mark.integration

P = Prefix.parse
DPA1, DPA2 = A("2001:db8:ff::1"), A("2001:db8:ff::2")

# Every daemon and client signs with its own key and knows everyone's, as
# deployed (secure by default): servers lms-a.. and the proxy, clients ar-k.
_NAMES = ["lms-a", "lms-b", "lms-c", "lms-durable", "lmp"] + [f"ar-{k}" for k in range(8)]
KEYS = {name: new_key(i, name, frozenset({Role.LMP if name == "lmp" else
                                          Role.ANCHOR if name.startswith("ar-") else Role.LMS}))
        for i, name in enumerate(_NAMES, start=1)}


def security(name: str) -> str:
    """The [security] table of daemon ``name``."""
    return (f"[security]\nsend_key = {KEYS[name].key_id}\n"
            + "".join(key_toml(k) for k in KEYS.values()))


def client_security(k: int) -> Security:
    """SM of client ``ar-k`` (an anchor's LMc): timestamps on the wall
    clock, as the daemons' (their drivers run on the monotonic one)."""
    return Security(tuple(KEYS.values()), send_key_id=KEYS[f"ar-{k}"].key_id,
                    require_auth=True, wall=time.time)


def lms_conf(name: str, primary: str, peers: list[int], extra: str = "") -> str:
    peer_list = ", ".join(f'"127.0.0.1:{p}"' for p in peers)
    return f"""
[lms]
node_id = "{name}"
listen = "127.0.0.1:0"
primary = ["{primary}"]
peers = [{peer_list}]
heartbeat_interval = 0.2
dead_after = 0.8
log_level = "info"
{extra}
{security(name)}
"""


def test_pool_proxy_and_clients(daemons: Daemons) -> None:
    a = daemons.start("lms", "lms-a", lms_conf("lms-a", "2001:db8:1::/48", []))
    b = daemons.start("lms", "lms-b", lms_conf("lms-b", "2001:db8:2::/48", [a.port]))
    c = daemons.start("lms", "lms-c", lms_conf("lms-c", "2001:db8:3::/48", [a.port, b.port]))
    lmp = daemons.start("lmp", "lmp", f"""
[lmp]
listen = "127.0.0.1:0"
upstream = ["127.0.0.1:{b.port}"]
{security("lmp")}
""")
    members = {"a": a.port, "b": b.port, "c": c.port}

    # The pool has formed (LM:2-1) as far as what follows needs: c and b
    # relay to a, c knows b.
    def joined(member: Daemon, peers: str) -> bool:
        text = member.log_text()
        return all(re.search(f"pool member lms-{p} at .* is up", text) for p in peers)
    wait_until(lambda: joined(b, "a") and joined(c, "ab"), 30, "the pool to form")

    async def scenario() -> None:
        via = {k: await LocationClient.connect([("127.0.0.1", p)],
                                               security=client_security(i))
               for i, (k, p) in enumerate(members.items())}
        proxied = [await LocationClient.connect([("127.0.0.1", lmp.port)],
                                                security=client_security(3 + i))
                   for i in range(3)]
        try:
            # An update sent to member c for a prefix a is primary for.
            hnp1 = P("2001:db8:1:1::/64")
            assert await via["c"].update(hnp1, DPA1, 30) == 30
            # Queries to any member find it.
            for client in via.values():
                loc = await client.query(hnp1, use_cache=False)
                assert loc.forwarding_address == DPA1
            # Through the proxy; subscribers there get pushes.
            for cl in proxied:
                assert (await cl.query(hnp1)).forwarding_address == DPA1
                await cl.subscribe([P("2001:db8:1::/48")])
            await via["a"].update(hnp1, DPA2, 30)
            for cl in proxied:
                push = await asyncio.wait_for(cl.pushes.get(), 3)
                assert push == Pushed(hnp1, DPA2, 30)
                assert (await cl.query(hnp1)).forwarding_address == DPA2  # cache updated
            # Lifetime expiry, seen through member b.
            short = P("2001:db8:2:9::/64")
            await via["b"].update(short, DPA1, 1)
            deadline = time.monotonic() + 30
            while True:  # known until its second has run out (a deadline, not a duration)
                try:
                    await via["c"].query(short, use_cache=False)
                except LocationError as err:
                    assert err.cause is Cause.UNKNOWN_PREFIX
                    break
                assert time.monotonic() < deadline, "the binding never expired"
                await asyncio.sleep(0.05)
        finally:
            for cl in [*via.values(), *proxied]:
                cl.close()

    asyncio.run(scenario())
    # A member killed is detected and reported by the others.
    c.kill9()
    down = f"pool member lms-c at ('127.0.0.1', {c.port}) is down"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if down in a.log_text() and down in b.log_text():
            break
        time.sleep(0.1)
    assert down in a.log_text() and down in b.log_text()


def test_acknowledged_updates_survive_kill_9(daemons: Daemons, tmp_path: Path) -> None:
    state = tmp_path / "state"
    conf = f"""
[lms]
node_id = "lms-durable"
listen = "127.0.0.1:0"
state_dir = "{state}"
log_level = "warning"
{security("lms-durable")}
"""
    server = daemons.start("lms", "lms-1", conf)
    acked: dict[Prefix, A] = {}

    async def stream() -> None:
        client = await LocationClient.connect([("127.0.0.1", server.port)],
                                              security=client_security(6))
        try:
            async def one(i: int) -> None:
                prefix = P(f"2001:db8:{i >> 8:x}:{i & 0xFF:x}::/64")
                addr = A(f"2001:db8:ff::{i % 7 + 1:x}")
                try:
                    await client.update(prefix, addr, 3600)
                except (LocationError, asyncio.CancelledError):
                    return
                acked[prefix] = addr

            tasks = []
            for i in range(4000):
                tasks.append(asyncio.create_task(one(i)))
                if i == 2500:
                    await asyncio.sleep(0.05)
                    server.proc.send_signal(signal.SIGKILL)  # mid-stream
                if i % 50 == 0:
                    await asyncio.sleep(0)
            await asyncio.wait(tasks, timeout=5)
            for t in tasks:
                t.cancel()
        finally:
            client.close()

    asyncio.run(stream())
    server.proc.wait(10)
    assert 100 < len(acked) < 4000, len(acked)
    again = daemons.start("lms", "lms-1b", conf)

    async def verify() -> int:
        client = await LocationClient.connect([("127.0.0.1", again.port)],
                                              security=client_security(7))
        try:
            for prefix, addr in acked.items():
                loc = await client.query(prefix, use_cache=False)
                assert loc.forwarding_address == addr
            return len(acked)
        finally:
            client.close()

    assert asyncio.run(verify()) == len(acked)


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "bad.toml"
    cfg.write_text('[lms]\nnode_id = "x"\npeers = ["nope"]\n[security]\ninsecure = true\n')
    out = subprocess.run(
        [sys.executable, "-m", "dmanchor.cli", "lms", "--config", str(cfg)],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 2
    assert "field 'lms.peers[0]'" in out.stderr and len(out.stderr.strip().splitlines()) == 1
