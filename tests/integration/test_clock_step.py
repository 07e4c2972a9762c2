"""A step of the wall clock under running functions (#16: monotonic time).

Timers and lifetimes run on the monotonic clock; only SM timestamps read the
wall clock.  So when the machine's wall clock steps by an hour either way -
on every node, as an NTP step does - no binding expires early, no request
stalls, and signed messages keep flowing.  (Before, every lifetime ran on
the wall clock: a step forward expired a 600 s binding at once.)
"""

from __future__ import annotations

import asyncio
import time
from ipaddress import IPv6Address as A
from pathlib import Path

import pytest

from dmanchor.lm.client import LocationClient
from dmanchor.lm.lmc import LmcCore
from dmanchor.lm.lms import LmsCore, LmsSettings
from dmanchor.runtime import clock
from dmanchor.runtime.aio import UdpDriver
from dmanchor.transport.reliable import Endpoint
from dmanchor.wire.auth import Key, Role, Security
from dmanchor.wire.types import Prefix
from tests.helpers import has_ipv6_loopback

pytestmark = pytest.mark.integration

KEYS = (Key(1, b"1" * 32, "ar1", frozenset({Role.ANCHOR})),
        Key(2, b"2" * 32, "lms", frozenset({Role.LMS})))
HNP1, HNP2 = Prefix.parse("2001:db8:1:1::/64"), Prefix.parse("2001:db8:1:2::/64")
DPA = A("fc00::1:0")




@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.parametrize("step", [3600.0, -3600.0], ids=["forward", "back"])
def test_a_wall_clock_step_expires_nothing_and_stalls_nothing(
        step: float, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        lms = LmsCore(LmsSettings("lms"), Endpoint(security=Security(
            KEYS, send_key_id=2, require_auth=True, wall=clock.wall)), now=clock.now())
        server = UdpDriver(lms)
        port = (await server.start("::1", 0))[1]
        client = LocationClient(LmcCore([("::1", port)], Endpoint(security=Security(
            KEYS, send_key_id=1, require_auth=True, wall=clock.wall))))
        await client.driver.start("::1", 0)
        try:
            assert await client.update(HNP1, DPA, 600) == 600
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + step)  # the step
            # Not expired: 600 s of lifetime are left, whatever the wall says.
            held = lms.lookup(HNP1, clock.now())
            assert held is not None and held.expires - clock.now() > 590
            # Nothing stalls: a query and an update are answered at once,
            # signed on the stepped clock.
            got = await asyncio.wait_for(client.query(HNP1, use_cache=False), 5)
            assert got.forwarding_address == DPA
            assert await asyncio.wait_for(client.update(HNP2, DPA, 600), 5) == 600
            assert lms.endpoint.stats.drops == {}
        finally:
            client.driver.close()
            server.close()

    asyncio.run(scenario())


def test_the_lms_store_persists_expiries_as_wall_time(tmp_path: Path) -> None:
    """The core's expiries are monotonic instants, which mean nothing after
    a reboot: the store writes them as wall time and reads them back."""
    import sqlite3

    from dmanchor.lm.store import Binding, SqliteStore

    store = SqliteStore(tmp_path, to_disk=clock.to_wall, from_disk=clock.from_wall)
    store.put(Binding(HNP1, DPA, clock.now() + 100, "ar1"))
    store.close()
    [(on_disk,)] = sqlite3.connect(tmp_path / "lms.sqlite3").execute(
        "SELECT expires FROM binding").fetchall()
    assert abs(on_disk - (time.time() + 100)) < 5
    [back] = SqliteStore(tmp_path, to_disk=clock.to_wall, from_disk=clock.from_wall).load()
    assert abs(back.expires - (clock.now() + 100)) < 5
