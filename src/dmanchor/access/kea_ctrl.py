"""Kea's control channel, for a controller that moves delegations itself.

Draft 4.2.1 driven centrally: when the FM-CP switches a prefix's anchoring
it also gives the prefix's DHCPv6-PD lease to the new access router with
``lease6-update`` (Kea's ``lease_cmds`` hook), on the IAID that router holds
the prefix on (:func:`~.delegation.iaid_for`).  The new router's Solicit is
then answered with a lease it already holds, without waiting for the
previous router's Release.

One JSON command per connection on Kea's UNIX control socket; every failure
(no socket, a timeout, a malformed or negative answer) is a :class:`KeaError`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..wire.types import Prefix
from .delegation import iaid_for

MAX_ANSWER = 1 << 20
"""Longest answer read (bytes): Kea's answers to lease commands are small."""


class KeaError(RuntimeError):
    """A Kea command failed; the message says how."""


@dataclass(frozen=True, slots=True)
class KeaControl:
    """Where Kea listens, and the lease a moved prefix gets."""

    socket: Path
    """Kea's control socket (``control-socket`` with the lease_cmds hook loaded)."""
    subnet_id: int = 1
    """The subnet the delegations belong to."""
    valid: int = 120
    """Valid lifetime of a moved lease, seconds (the new router renews it)."""
    preferred: int = 60
    """Preferred lifetime of a moved lease, seconds."""
    timeout: float = 2.0
    """Longest wait for an answer, seconds."""


async def command(ctl: KeaControl, name: str,
                  arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one command; its answer, if ``result`` is 0 (raises KeaError otherwise)."""
    answer = await exchange(ctl, name, arguments)
    if answer.get("result") != 0:
        raise KeaError(f"{name}: result {answer.get('result')!r}: {answer.get('text', '')}")
    return answer


async def exchange(ctl: KeaControl, name: str,
                   arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one command; Kea's answer whatever its ``result`` (e.g. 3: not found)."""
    doc: dict[str, Any] = {"command": name}
    if arguments is not None:
        doc["arguments"] = arguments
    try:
        answer = await asyncio.wait_for(_exchange(ctl.socket, json.dumps(doc).encode()),
                                        ctl.timeout)
    except TimeoutError as exc:
        raise KeaError(f"{name}: no answer from {ctl.socket} in {ctl.timeout} s") from exc
    except OSError as exc:
        raise KeaError(f"{name}: {ctl.socket}: {exc.strerror or exc}") from exc
    if not isinstance(answer, dict):
        raise KeaError(f"{name}: the answer is not a JSON object")
    return answer


async def _exchange(path: Path, request: bytes) -> Any:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        while len(data) < MAX_ANSWER:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
            try:
                return json.loads(data)  # Kea sends one document, then may linger
            except ValueError:
                continue
        raise KeaError(f"incomplete or malformed answer ({len(data)} bytes)")
    finally:
        writer.close()


async def move_delegation(ctl: KeaControl, prefix: Prefix, duid: bytes) -> None:
    """Give ``prefix``'s lease to the router with ``duid`` (``lease6-update``).

    ``force-create``: the previous router releases its delegation once the
    move is done (after FM:6-2), and on a loaded machine its Release can
    reach Kea before this command - without it, the update of a lease Kea
    no longer has fails ("not found") and the prefix stays unleased.
    """
    await command(ctl, "lease6-update", {
        "ip-address": str(prefix.address), "prefix-len": prefix.length, "type": "IA_PD",
        "duid": ":".join(f"{b:02x}" for b in duid), "iaid": iaid_for(prefix),
        "subnet-id": ctl.subnet_id, "valid-lft": ctl.valid, "preferred-lft": ctl.preferred,
        "force-create": True,
    })
