"""The Kea control-channel client against a stand-in server on a UNIX socket:
the exact command sent, and every way an answer can go wrong."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from dmanchor.access.delegation import iaid_for
from dmanchor.access.kea_ctrl import KeaControl, KeaError, move_delegation
from dmanchor.wire.types import Prefix

HNP1 = Prefix.parse("2001:db8:1:1::/64")
DUID = bytes.fromhex("00030001020000000002")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(path: Path, handler: Handler, action: Callable[[], Awaitable[None]]) -> None:
    server = await asyncio.start_unix_server(handler, path=str(path))
    try:
        await action()
    finally:
        server.close()
        await server.wait_closed()


def answering(answer: bytes, seen: list[dict[str, object]]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        while True:
            data += await reader.read(4096)
            try:
                seen.append(json.loads(data))
                break
            except ValueError:
                continue
        # Kea sends its answer in pieces at times: split it.
        for i in range(0, len(answer), 7):
            writer.write(answer[i:i + 7])
            await writer.drain()
        writer.close()
    return handler


def test_lease6_update_names_the_prefix_and_the_ia_the_router_holds_it_on(
        tmp_path: Path) -> None:
    sock = tmp_path / "kea.ctl"
    seen: list[dict[str, object]] = []
    ctl = KeaControl(sock, subnet_id=7, valid=300, preferred=200)
    asyncio.run(serve(sock, answering(b'{"result": 0, "text": "updated"}', seen),
                      lambda: move_delegation(ctl, HNP1, DUID)))
    assert seen == [{"command": "lease6-update", "arguments": {
        "ip-address": "2001:db8:1:1::", "prefix-len": 64, "type": "IA_PD",
        "duid": "00:03:00:01:02:00:00:00:00:02", "iaid": iaid_for(HNP1),
        "subnet-id": 7, "valid-lft": 300, "preferred-lft": 200, "force-create": True}}]


@pytest.mark.parametrize(("answer", "why"), [
    (b'{"result": 1, "text": "no such lease"}', "result 1: no such lease"),
    (b'{"result": 0, "tex', "incomplete or malformed"),
    (b'[1, 2]', "not a JSON object"),
    (b'', "incomplete or malformed"),
])
def test_bad_answers_are_errors_naming_why(tmp_path: Path, answer: bytes, why: str) -> None:
    sock = tmp_path / "kea.ctl"
    ctl = KeaControl(sock)
    with pytest.raises(KeaError, match=why):
        asyncio.run(serve(sock, answering(answer, []), lambda: move_delegation(ctl, HNP1, DUID)))


def test_a_silent_or_absent_kea_is_an_error_not_a_hang(tmp_path: Path) -> None:
    sock = tmp_path / "kea.ctl"

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    ctl = KeaControl(sock, timeout=0.2)
    with pytest.raises(KeaError, match="no answer"):
        asyncio.run(serve(sock, silent, lambda: move_delegation(ctl, HNP1, DUID)))
    with pytest.raises(KeaError, match="lease6-update"):
        asyncio.run(move_delegation(KeaControl(tmp_path / "none.ctl"), HNP1, DUID))
