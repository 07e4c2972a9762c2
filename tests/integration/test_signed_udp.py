"""SM over real UDP sockets: a node bound to the wildcard address verifies
the MAC against the address each datagram was sent to (IPV6_PKTINFO), and
signed bytes captured on their way are refused when replayed from elsewhere
or to another node."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from ipaddress import IPv6Address as A

import pytest

from dmanchor.lm.client import LocationClient
from dmanchor.lm.lmc import LmcCore
from dmanchor.lm.lms import LmsCore, LmsSettings
from dmanchor.runtime import clock
from dmanchor.runtime.aio import UdpDriver
from dmanchor.transport.reliable import Endpoint
from dmanchor.wire import decode
from dmanchor.wire import messages as m
from dmanchor.wire.auth import Key, Role, Security
from dmanchor.wire.codec import Packet
from dmanchor.wire.types import Prefix
from tests.helpers import has_ipv6_loopback, wait_until

pytestmark = pytest.mark.integration

KEYS = (Key(1, b"1" * 32, "ar1", frozenset({Role.ANCHOR})),
        Key(2, b"2" * 32, "lms", frozenset({Role.LMS})))
HNP = Prefix.parse("2001:db8:1:1::/64")




@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_signed_exchange_through_a_wildcard_socket_and_replays_refused() -> None:
    async def scenario() -> None:
        servers = []
        for _ in range(2):
            core = LmsCore(LmsSettings("lms", primary=(Prefix.parse("2001:db8:1::/48"),)),
                           Endpoint(security=Security(KEYS, send_key_id=2, require_auth=True)),
                           now=clock.now())
            driver = UdpDriver(core)
            port = (await driver.start("::", 0))[1]
            servers.append((core, driver, port))
        (lms, _, port), (other, _, other_port) = servers
        captured: list[bytes] = []
        client = LocationClient(
            LmcCore([("::1", port)], Endpoint(security=Security(KEYS, send_key_id=1))))
        client.driver.trace = lambda d, data, peer: captured.append(data) if d == "tx" else None
        await client.driver.start("::1", 0)
        try:
            # Signed, addressed to [::1]:port, verified by a socket bound to [::].
            assert await client.update(HNP, A("2001:db8:ff::1"), 30) == 30
            record = lms.lookup(HNP, clock.now())
            assert record is not None and record.updated_by == "ar1"
            # The captured request, replayed from another socket to the same
            # server: a replay, whatever the source; to another server: bad MAC.
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.bind(("::1", 0))
                s.sendto(captured[0], ("::1", port))
                s.sendto(captured[0], ("::1", other_port))
            await asyncio.to_thread(wait_until, lambda: (
                lms.endpoint.stats.drops["replay"] >= 1
                and other.endpoint.stats.drops["bad-mac"] >= 1), 10,
                lambda: f"drops {lms.endpoint.stats.drops} / {other.endpoint.stats.drops}")
            assert other.lookup(HNP, clock.now()) is None
        finally:
            client.driver.close()
            for _, driver, _ in servers:
                driver.close()

    asyncio.run(scenario())


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.parametrize("batch", [False, True], ids=["each", "batched"])
def test_a_burst_to_a_socket_bound_to_one_address_is_answered_whole_and_in_order(
        batch: bool) -> None:
    """Bound to one address, the driver reads without PKTINFO (the bound
    address is the destination the MAC covers); batched, it answers a whole
    burst after reading it - every request answered, in the order sent."""
    async def scenario() -> None:
        lms = LmsCore(LmsSettings("lms", primary=(Prefix.parse("2001:db8:1::/48"),)),
                      Endpoint(security=Security(KEYS, send_key_id=2, require_auth=True)),
                      now=clock.now())
        driver = UdpDriver(lms, batch=batch)
        port = (await driver.start("::1", 0))[1]
        signer = Security(KEYS, send_key_id=1)
        burst: list[m.Message] = [m.LocationUpdate(HNP, A("2001:db8:ff::1"), 30)]
        burst += [m.LocationQuery(HNP) for _ in range(40)]
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
            s.settimeout(0.05)
            for seq, msg in enumerate(burst, start=1):
                s.sendto(signer.encode(msg, seq, 0, clock.now(), ("::1", port)), ("::1", port))
            answers: list[Packet] = []

            def read() -> bool:
                with contextlib.suppress(TimeoutError):
                    answers.append(decode(s.recv(2048)))
                return len(answers) == len(burst)

            try:
                await asyncio.to_thread(wait_until, read, 10,
                                        lambda: f"{len(answers)} answers, {lms.endpoint.stats}")
            finally:
                driver.close()
        assert [a.seq for a in answers] == list(range(1, len(burst) + 1))
        assert isinstance(answers[0].message, m.LocationUpdateAck)
        assert all(isinstance(a.message, m.LocationReply)
                   and a.message.forwarding_address == A("2001:db8:ff::1") for a in answers[1:])

    asyncio.run(scenario())
