"""End markers, signed (docs/protocol.md section 7).

An end marker tells a new anchor's hold that the old path has drained, so
the hold is lifted at once instead of at its timeout.  Anyone can send a
UDP packet to an MN's address; forged, a marker would lift the hold early
and let the new path's packets overtake the old path's.  So a node with
keys signs its markers with its SM key and accepts only markers signed by
a router's key (role anchor or fmdp), fresh and not seen before.

Payload (UDP to :data:`MARKER_PORT` at the prefix's first address)::

    "DMANCHOR-END" | prefix network (16) | key id u16 | timestamp u64 (us)
    | HMAC-SHA256 over the 26 bytes before it, first 16 bytes

The receiver cannot be named in the MAC (the marker goes down the path to
whichever anchor holds the prefix), so a captured marker is good for that
prefix only, within ``window`` seconds, once.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import deque
from collections.abc import Callable, Iterable
from enum import Enum

from ..wire.auth import Key, Role
from ..wire.types import Prefix

TAG = b"DMANCHOR-END"
MARKER_PORT = 0xD0D0
"""UDP destination port of end-marker packets."""
_SIGNED = struct.Struct("!16sHQ")
MAC_LEN = 16
PAYLOAD_OFFSET = 48
"""IPv6 header + UDP header: where the marker's payload starts in a packet."""
SEEN_CAP = 65536
"""Markers remembered at most for replay checks (they are also too old
after twice the window)."""
SIGNERS = frozenset({Role.ANCHOR, Role.FMDP})
"""Roles whose data planes send end markers."""


class Forged(Enum):
    """Why a marker was not believed."""

    UNSIGNED = "end-marker-unsigned"
    UNKNOWN_KEY = "end-marker-unknown-key"
    BAD_MAC = "end-marker-bad-mac"
    STALE = "end-marker-stale"
    REPLAY = "end-marker-replay"
    WRONG_PREFIX = "end-marker-wrong-prefix"


def is_marker(packet: bytes) -> bool:
    """An IPv6/UDP packet to MARKER_PORT carrying the marker tag."""
    return (len(packet) >= PAYLOAD_OFFSET + len(TAG) and packet[6] == 17
            and packet[42:44] == MARKER_PORT.to_bytes(2, "big")
            and packet[PAYLOAD_OFFSET:PAYLOAD_OFFSET + len(TAG)] == TAG)


class MarkerAuth:
    """Signs this node's markers and judges those it receives."""

    def __init__(self, keys: Iterable[Key], send_key_id: int | None, *,
                 require: bool = True, window: float = 5.0,
                 wall: Callable[[], float] | None = None) -> None:
        """``require``: refuse unsigned markers (a node with keys does);
        ``window``: how old a marker may be, seconds (markers travel one
        path, in milliseconds; the window only absorbs clock skew);
        ``wall``: the shared clock timestamps come from (None: the ``now``
        given, virtual time)."""
        self.wall = wall
        self.keys = {k.key_id: k for k in keys if k.roles & SIGNERS}
        self.send_key = {k.key_id: k for k in keys}.get(send_key_id) \
            if send_key_id is not None else None
        self.require = require
        self.window_us = int(window * 1e6)
        self._last_ts = 0
        self._seen: set[tuple[int, int]] = set()
        self._order: deque[tuple[int, int]] = deque()

    def payload(self, prefix: Prefix, now: float) -> bytes:
        """The payload of this node's end marker for ``prefix``."""
        key = self.send_key
        head = TAG + prefix.network.to_bytes(16, "big")
        if key is None:
            return head
        at = int((self.wall() if self.wall is not None else now) * 1e6)
        # Increasing, unless the wall clock stepped back past the window
        # (see Security.encode).
        ts = at if self._last_ts - at > self.window_us else max(at, self._last_ts + 1)
        self._last_ts = ts
        signed = _SIGNED.pack(head[len(TAG):], key.key_id, ts)
        return TAG + signed + hmac.new(key.secret, signed, hashlib.sha256).digest()[:MAC_LEN]

    def check(self, packet: bytes, held_for: Prefix, now: float) -> Forged | None:
        """Whether a marker packet may end the hold of ``held_for``."""
        body = packet[PAYLOAD_OFFSET + len(TAG):]
        if len(body) < _SIGNED.size + MAC_LEN:
            return Forged.UNSIGNED if self.require else None
        network, key_id, ts = _SIGNED.unpack_from(body)
        key = self.keys.get(key_id)
        if key is None:
            return Forged.UNKNOWN_KEY
        mac = hmac.new(key.secret, body[:_SIGNED.size], hashlib.sha256).digest()[:MAC_LEN]
        if not hmac.compare_digest(mac, body[_SIGNED.size:_SIGNED.size + MAC_LEN]):
            return Forged.BAD_MAC
        if int.from_bytes(network, "big") != held_for.network:
            return Forged.WRONG_PREFIX
        now_us = int((self.wall() if self.wall is not None else now) * 1e6)
        if abs(now_us - ts) > self.window_us:
            return Forged.STALE
        if (key_id, ts) in self._seen:
            return Forged.REPLAY
        self._seen.add((key_id, ts))
        self._order.append((key_id, ts))
        while self._order and (self._order[0][1] < now_us - 2 * self.window_us
                               or len(self._order) > SEEN_CAP):
            self._seen.discard(self._order.popleft())
        return None
