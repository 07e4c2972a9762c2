"""A node's control socket: JSON lines over a UNIX socket, for its owner only.

Whoever can send commands there drives the router (attaches MNs, reads
charging), so the socket is created mode 0600 - or 0660 and owned by a
configured group - with no window in which it is more open (the umask is
set around its creation), and each connection's peer credentials
(``SO_PEERCRED``) are checked again: root, the node's own user, or a member
of the configured group by its primary group.  A refused peer is closed,
logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("dmanchor.control")

_UCRED = struct.Struct("=iII")  # pid, uid, gid


def peer_allowed(uid: int, gid: int, owner: int, group: int | None) -> bool:
    """Whether a peer with ``uid``/``gid`` may command a node run by ``owner``."""
    return uid in (0, owner) or (group is not None and gid == group)


class ControlServer:
    """The UNIX socket at ``path``; each line goes to ``handle``, its answer back."""

    def __init__(self, path: Path, handle: Callable[[bytes], dict[str, Any]],
                 group: str | None = None) -> None:
        """``group``: a group whose members may use the socket too (mode 0660);
        unknown groups are a configuration error (``KeyError``)."""
        self.path = path
        self.handle = handle
        self.gid = grp.getgrnam(group).gr_gid if group is not None else None
        self.counters: Counter[str] = Counter()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        mode = 0o660 if self.gid is not None else 0o600
        previous = os.umask(0o777 & ~mode)  # never more open, not even briefly
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(previous)
        if self.gid is not None:
            os.chown(self.path, -1, self.gid)

    def _peer_ok(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        try:
            _, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        _UCRED.size))
        except (OSError, AttributeError):
            return False
        if peer_allowed(uid, gid, os.geteuid(), self.gid):
            return True
        self.counters["refused-peer"] += 1
        log.warning("control socket: refused a peer with uid %d gid %d", uid, gid)
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self._peer_ok(writer):
                return
            while line := await reader.readline():
                writer.write((json.dumps(self.handle(line)) + "\n").encode())
                await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
