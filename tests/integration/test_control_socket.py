"""The control socket is its owner's: mode 0600 (or 0660 for a group), and
peers are checked by their credentials (SO_PEERCRED)."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from dmanchor.control import ControlServer, peer_allowed


def echo(line: bytes) -> dict[str, Any]:
    return {"ok": json.loads(line)}


async def ask(path: Path, doc: object) -> Any:
    """The answer to one command; None if the server hung up instead."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write((json.dumps(doc) + "\n").encode())
        await writer.drain()
        answer = await reader.readline()
    except (ConnectionResetError, BrokenPipeError):
        answer = b""
    writer.close()
    return json.loads(answer) if answer else None


def test_the_socket_is_created_0600_and_answers_its_owner(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = ControlServer(tmp_path / "c.sock", echo)
        os.umask(0o000)  # a permissive umask must not make it world-writable
        try:
            await server.start()
            assert stat.S_IMODE((tmp_path / "c.sock").stat().st_mode) == 0o600
            assert await ask(tmp_path / "c.sock", {"cmd": "stats"}) == {"ok": {"cmd": "stats"}}
        finally:
            os.umask(0o022)
            server.close()

    asyncio.run(scenario())


def test_a_group_may_be_let_in(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name

    async def scenario() -> None:
        server = ControlServer(tmp_path / "c.sock", echo, group)
        try:
            await server.start()
            st = (tmp_path / "c.sock").stat()
            assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
        finally:
            server.close()

    asyncio.run(scenario())


def test_peers_other_than_root_the_owner_or_the_group_are_refused() -> None:
    assert peer_allowed(0, 0, owner=1000, group=None)
    assert peer_allowed(1000, 1000, owner=1000, group=None)
    assert not peer_allowed(1001, 1001, owner=1000, group=None)
    assert peer_allowed(1001, 50, owner=1000, group=50)
    assert not peer_allowed(1001, 51, owner=1000, group=50)


def test_a_refused_peer_gets_nothing_and_is_counted(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend the node runs as another user than this test's: the test's
    # own credentials are then a stranger's (unless it runs as root, which
    # is always allowed - then the check is exercised through peer_allowed).
    if os.geteuid() == 0:
        monkeypatch.setattr("dmanchor.control.peer_allowed", lambda *a: False)
    else:
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)

    async def scenario() -> None:
        server = ControlServer(tmp_path / "c.sock", echo)
        try:
            await server.start()
            assert await ask(tmp_path / "c.sock", {"cmd": "attach"}) is None
            assert server.counters["refused-peer"] == 1
        finally:
            server.close()

    asyncio.run(scenario())
