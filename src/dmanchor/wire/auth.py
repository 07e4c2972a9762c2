"""Security management (SM) on the wire: HMAC-SHA256 and replay protection.

Sans-IO: every call takes ``now`` (seconds, wall clock or virtual).

* Signing: each outgoing message carries an AUTH IE with a key id, a
  timestamp in microseconds and an HMAC-SHA256 over the receiver's
  transport address (:func:`receiver_id`, not carried) and the whole
  message.  Timestamps from one :class:`Security` are strictly increasing,
  so each signed message is unique even when it is a retransmission.
* Verification: the MAC must match the key named by the key id and the
  address the datagram arrived on - so bytes captured on their way to one
  node are refused by every other; the timestamp must be within
  ``clock_window`` of ``now``; and per key id (whatever the source address)
  a timestamp is accepted once only, within a ``reorder_window`` behind the
  newest one seen.  Anything else is dropped and counted by reason.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

from .codec import Packet, compute_mac, encode
from .messages import Message


class Role(Enum):
    """A function a node performs; each function accepts each message only
    from the roles its policy names (:mod:`dmanchor.transport.policy`)."""

    ANCHOR = "anchor"
    """An anchor agent: access router, forwarding switch (FM-CP + FM-DP)."""
    FMDP = "fmdp"
    """A stand-alone FM-DP router (Fig 1c/1d)."""
    CONTROLLER = "controller"
    """The central FM-CP / mobility controller."""
    LMS = "lms"
    """An LM server (pool member)."""
    LMP = "lmp"
    """An LM proxy."""
    MN = "mn"
    """An MN's own agent (host-based, Fig 2)."""


@dataclass(frozen=True, slots=True)
class Key:
    """A shared secret and the node it authenticates."""

    key_id: int
    """Key identifier carried in the AUTH IE, 0..65535."""
    secret: bytes
    """HMAC-SHA256 secret; at least 16 bytes."""
    owner: str
    """Node id the key belongs to; authorisation decisions use it."""
    roles: frozenset[Role] = frozenset()
    """What the owner may act as (an empty set: nothing any policy lists)."""

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 0xFFFF:
            raise ValueError(f"key id {self.key_id} out of range 0..65535")
        if len(self.secret) < 16:
            raise ValueError(f"key {self.key_id}: secret shorter than 16 bytes")


@lru_cache(maxsize=4096)  # a node talks to few addresses; parsing is per message
def receiver_id(addr: tuple[str, int]) -> bytes:
    """The receiver identity a MAC covers: 16 address bytes (IPv4 mapped
    into IPv6) and the 2-byte port, as the sender addressed the datagram."""
    host, port = addr
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
    return ip.packed + (port & 0xFFFF).to_bytes(2, "big")


class Drop(Enum):
    """Why an incoming message was rejected by SM."""

    UNAUTHENTICATED = "unauthenticated"
    UNKNOWN_KEY = "unknown-key"
    BAD_MAC = "bad-mac"
    STALE = "stale"
    REPLAY = "replay"


@dataclass(slots=True)
class _PeerWindow:
    newest: int = 0
    seen: set[int] = field(default_factory=set)
    # Arrival order, mostly ascending: lets pruning pop from the left in O(1).
    order: deque[int] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Result of :meth:`Security.check`: accepted (with owner) or dropped."""

    drop: Drop | None
    owner: str | None = None
    """Authenticated sender (key owner), None if unsigned."""
    roles: frozenset[Role] = frozenset()
    """The authenticated sender's roles (empty if unsigned)."""


_UNSIGNED = Verdict(None)
"""An unsigned message accepted (immutable: one serves every datagram)."""


class Security:
    """Per-endpoint SM state: keys, policy, replay windows, drop counters."""

    def __init__(
        self,
        keys: list[Key] | tuple[Key, ...] = (),
        *,
        send_key_id: int | None = None,
        require_auth: bool = False,
        require_auth_from: frozenset[str] = frozenset(),
        clock_window: float = 30.0,
        reorder_window: float = 2.0,
        wall: Callable[[], float] | None = None,
    ) -> None:
        """
        ``keys``: every key this endpoint knows (to verify and to sign).
        ``send_key_id``: the key used to sign outgoing messages (None: unsigned).
        ``require_auth``: drop unsigned messages from anyone.
        ``require_auth_from``: drop unsigned messages from these source hosts.
        ``clock_window``: accepted |now - timestamp|, seconds.
        ``reorder_window``: how far behind the newest timestamp of a peer an
        unseen timestamp is still accepted (UDP reordering), seconds.
        ``wall``: the clock timestamps are taken from and judged by - the
        wall clock other machines share (a node's cores run on the monotonic
        clock); None: the ``now`` the endpoint is given (virtual time).
        """
        self.wall = wall
        self.keys = {k.key_id: k for k in keys}
        if send_key_id is not None and send_key_id not in self.keys:
            raise ValueError(f"send key {send_key_id} is not among the keys")
        self.send_key = self.keys[send_key_id] if send_key_id is not None else None
        self.require_auth = require_auth
        self.require_auth_from = require_auth_from
        self.clock_window_us = int(clock_window * 1e6)
        self.reorder_window_us = int(reorder_window * 1e6)
        self.drops: Counter[str] = Counter()
        self.clock_steps = 0
        """Replay windows restarted because our wall clock stepped back."""
        self._last_ts = 0
        # One window per key id, not per (key, source): the same signed bytes
        # replayed from another address are the same message.
        self._windows: dict[int, _PeerWindow] = {}

    def encode(self, message: Message, seq: int, flags: int, now: float,
               dest: tuple[str, int]) -> bytes:
        """Encode for ``dest``, signing with the send key when one is configured."""
        key = self.send_key
        if key is None:
            return encode(message, seq, flags)
        at = int((self.wall() if self.wall is not None else now) * 1e6)
        # Increasing, so no two are alike - unless the wall clock stepped
        # back past the window: then they follow it, rather than stay ahead
        # of every receiver's clock (stale to all until it caught up).
        stepped = self._last_ts - at > self.clock_window_us
        ts = at if stepped else max(at, self._last_ts + 1)
        self._last_ts = ts
        return encode(
            message, seq, flags, key_id=key.key_id, secret=key.secret, timestamp_us=ts,
            receiver=receiver_id(dest),
        )

    def check(self, data: bytes, packet: Packet, host: str, now: float,
              local: tuple[str, int] | None) -> Verdict:
        """Verify a decoded packet from ``host`` that arrived on ``local``;
        counts and returns the drop reason if any.

        ``local`` None (the driver cannot tell the address) fails every
        signed message: its MAC cannot be checked.
        """
        auth = packet.auth
        if auth is None:
            if self.require_auth or host in self.require_auth_from:
                return self._drop(Drop.UNAUTHENTICATED)
            return _UNSIGNED
        key = self.keys.get(auth.key_id)
        if key is None:
            return self._drop(Drop.UNKNOWN_KEY)
        if local is None:
            return self._drop(Drop.BAD_MAC)
        mac = compute_mac(data, auth, key.secret, receiver_id(local))
        if not hmac.compare_digest(mac, auth.mac):
            return self._drop(Drop.BAD_MAC)
        now_us = int((self.wall() if self.wall is not None else now) * 1e6)
        ts = auth.timestamp_us
        if abs(now_us - ts) > self.clock_window_us:
            return self._drop(Drop.STALE)
        win = self._windows.get(auth.key_id)
        if win is None or win.newest - now_us > self.clock_window_us:
            # New peer, or one whose newest message is now further ahead
            # than our clock allows: our wall clock stepped back (an NTP
            # step).  The window starts afresh: what was signed before the
            # step is stale now, so it cannot be replayed.
            if win is not None:
                self.clock_steps += 1
            win = self._windows[auth.key_id] = _PeerWindow()
        if ts in win.seen or ts <= win.newest - self.reorder_window_us:
            return self._drop(Drop.REPLAY)
        win.seen.add(ts)
        win.order.append(ts)
        if ts > win.newest:
            win.newest = ts
            floor = ts - self.reorder_window_us
            order = win.order
            while order[0] <= floor:
                win.seen.discard(order.popleft())
        return Verdict(None, key.owner, key.roles)

    def _drop(self, reason: Drop) -> Verdict:
        self.drops[reason.value] += 1
        return Verdict(reason)
