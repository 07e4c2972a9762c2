"""The delegations an access router holds: one DHCPv6 IA_PD per MN prefix (draft 4.2.1).

Sans-IO, like :class:`~dmanchor.access.dhcpv6.PdClient`, which it runs one of
per prefix (each its own IAID, so a server keeps the leases apart: a client
asking again on an IAID that already holds a lease gets that lease back).

Each prefix's IAID is derived from the prefix (:func:`iaid_for`), so a
controller moving a delegation itself (Kea's ``lease6-update``, draft 4.2.1
driven centrally) names the very IA the new router then asks on, and the
server answers that router's Solicit with the lease it already holds.

The anchor agent says which prefixes this router anchors (:meth:`hold`) and
which it no longer does (:meth:`let_go`).  A prefix is requested *as a hint*:
the server delegates exactly that prefix only once it is free, that is once
the router that anchored it before has released it, and the two routers act
on their own clocks.  So when the server offers another prefix, or none, that
offer is released and the hint asked again every ``retry`` seconds, for at
most ``patience`` seconds; those asks take the hint or nothing (no rapid
commit, an Advertise of another prefix ends the exchange), so waiting costs
the server no leases.  Renewals (T1/T2) are the client's own; a lease
that expires unrenewed is reported.
"""

from __future__ import annotations

import heapq
import zlib
from collections import Counter, deque
from dataclasses import dataclass

from ..wire.types import Prefix
from .dhcpv6 import Bound, Expired, Failed, PdClient, Released, State


def iaid_for(prefix: Prefix) -> int:
    """The IAID a router holds ``prefix`` on: CRC-32 of its address and length
    (never 0).  CRC-32 tells apart inputs that differ within 32 consecutive
    bits, so the /64s of a pool up to a /32 never collide; two prefixes of
    one router that do take the next free IAID."""
    return zlib.crc32(prefix.address.packed + bytes((prefix.length,))) or 1


@dataclass(frozen=True, slots=True)
class Delegated:
    """The server delegated the prefix to this router (or renewed it)."""

    prefix: Prefix
    valid: int
    renewed: bool = False


@dataclass(frozen=True, slots=True)
class Returned:
    """This router gave the prefix back (Release confirmed, or given up on)."""

    prefix: Prefix


@dataclass(frozen=True, slots=True)
class Refused:
    """The server would not delegate the prefix within the patience."""

    prefix: Prefix
    reason: str


@dataclass(frozen=True, slots=True)
class Lost:
    """The lease ended unrenewed (the server is unreachable)."""

    prefix: Prefix


DelegationEvent = Delegated | Returned | Refused | Lost


@dataclass(slots=True)
class _Ia:
    client: PdClient
    wanted: bool = True
    since: float = 0.0
    retry_at: float | None = None
    offer: Prefix | None = None  # a wrong offer being handed back
    retried: bool = False  # asked before
    xid: int | None = None  # the transaction id it is filed under
    due: float | None = None  # the time it is filed under in the timer heap

    def next_time(self) -> float | None:
        times = [t for t in (self.client.get_timer(), self.retry_at) if t is not None]
        return min(times) if times else None


class Delegations:
    """A requesting router's delegations, keyed by prefix."""

    def __init__(self, duid: bytes, *, retry: float = 0.02, patience: float = 3.0,
                 initial_rt: float = 1.0, max_rc: int = 5) -> None:
        """``duid``: this router's DUID; ``retry``/``patience``: see the module doc;
        ``initial_rt``/``max_rc``: the clients' retransmission (RFC 8415)."""
        self.duid = duid
        self.retry = retry
        self.patience = patience
        self.initial_rt = initial_rt
        self.max_rc = max_rc
        self._ias: dict[Prefix, _Ia] = {}
        # Indexes, so that a datagram or a timer costs O(log n), not a walk
        # of every IA: who answers which transaction, what is due when
        # (stale heap entries are skipped), which IAs may have datagrams.
        self._by_xid: dict[int, Prefix] = {}
        self._timers: list[tuple[float, int, Prefix]] = []
        self._seq = 0
        self._iaids: set[int] = set()
        self._touched: dict[Prefix, _Ia] = {}
        self._outbox: list[tuple[bytes, tuple[str, int]]] = []
        self._events: deque[DelegationEvent] = deque()
        self.counters: Counter[str] = Counter()
        """delegated, renewed, hint-refused, returned, refused, lost, stray-datagram."""

    # -- Commands ----------------------------------------------------------------------

    def hold(self, prefix: Prefix, now: float, *, moving: bool = False) -> None:
        """This router anchors ``prefix`` now: have it delegated here.

        ``moving``: the prefix comes from another router, which may not have
        released it yet, so even the first ask takes the hint or nothing.
        """
        ia = self._ias.get(prefix)
        if ia is not None:
            ia.wanted = True
            if ia.client.state is State.IDLE and ia.client.lease is None:
                self._ask(prefix, ia, now)
            return
        ia = _Ia(self._client(prefix), since=now, retried=moving)
        self._ias[prefix] = ia
        self._iaids.add(ia.client.iaid)
        self._ask(prefix, ia, now)

    def let_go(self, prefix: Prefix, now: float) -> None:
        """This router no longer anchors ``prefix``: give the delegation back."""
        ia = self._ias.get(prefix)
        if ia is None:
            return
        ia.wanted = False
        ia.retry_at = None
        if ia.client.lease is not None and ia.client.state is not State.RELEASING:
            ia.client.release(now)
            self._file(prefix, ia)
        elif ia.client.lease is None and ia.client.state is State.IDLE:
            self._forget(prefix, ia)
        # Otherwise an exchange is under way: what it brings is released then.

    def held(self, now: float) -> dict[Prefix, float]:
        """Prefix -> seconds its lease has left, for prefixes delegated here."""
        return {p: ia.client.lease.expires - now for p, ia in self._ias.items()
                if ia.client.lease is not None and ia.client.lease.prefix == p}

    # -- Driver interface ----------------------------------------------------------------

    def receive(self, data: bytes, source: tuple[str, int], now: float) -> None:
        """A datagram from a server, given to the client whose transaction it answers."""
        xid = int.from_bytes(data[1:4], "big") if len(data) >= 4 else -1
        prefix = self._by_xid.get(xid)
        ia = self._ias.get(prefix) if prefix is not None else None
        if prefix is None or ia is None or ia.client.xid != xid:
            self.counters["stray-datagram"] += 1
            return
        ia.client.receive(data, source, now)
        self._collect(prefix, ia, now)

    def handle_timer(self, now: float) -> None:
        """Retransmissions, lease timers, and hint retries."""
        due: dict[Prefix, _Ia] = {}
        while self._timers and self._timers[0][0] <= now:
            t, _, prefix = heapq.heappop(self._timers)
            ia = self._ias.get(prefix)
            if ia is not None and ia.due == t:
                ia.due = None
                due[prefix] = ia
        for prefix, ia in due.items():
            deadline = ia.client.get_timer()
            if deadline is not None and now >= deadline:
                ia.client.handle_timer(now)
            if ia.retry_at is not None and now >= ia.retry_at:
                ia.retry_at = None
                self._ask(prefix, ia, now)
            self._collect(prefix, ia, now)

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run."""
        while self._timers:
            t, _, prefix = self._timers[0]
            ia = self._ias.get(prefix)
            if ia is not None and ia.due == t:
                return t
            heapq.heappop(self._timers)  # stale: refiled or gone
        return None

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        """Drain what to send (``ALL_SERVERS``: multicast on the DHCP link)."""
        out, self._outbox = self._outbox, []
        for ia in self._touched.values():
            out += ia.client.datagrams_to_send()
        self._touched.clear()
        return out

    def next_event(self) -> DelegationEvent | None:
        """Pop the next event."""
        return self._events.popleft() if self._events else None

    # -- Internals ------------------------------------------------------------------------

    def _client(self, prefix: Prefix) -> PdClient:
        iaid = iaid_for(prefix)
        while iaid in self._iaids:
            iaid = iaid % 0xFFFFFFFF + 1
        # Distinct transaction ids per IA: replies are told apart by them.
        return PdClient(self.duid, iaid=iaid, initial_rt=self.initial_rt, max_rc=self.max_rc,
                        xid_seed=(0x1D00 + 0x10101 * iaid) & 0xFFFFFF)

    def _ask(self, prefix: Prefix, ia: _Ia, now: float) -> None:
        # First with rapid commit (one round trip when the prefix is free);
        # asking again, only for the hint: an Advertise of another prefix
        # costs the server no lease to commit and take back.
        ia.client.request(now, hint=prefix, only_hint=ia.retried)
        ia.retried = True
        self._file(prefix, ia)

    def _collect(self, prefix: Prefix, ia: _Ia, now: float) -> None:
        """Act on what ``ia``'s client reported, then refile it (or drop it)."""
        while (ev := ia.client.next_event()) is not None:
            self._on_event(prefix, ia, ev, now)
        if (not ia.wanted and ia.client.lease is None and ia.client.state is State.IDLE
                and ia.retry_at is None):
            self._forget(prefix, ia)  # nothing under way is left of it
        else:
            self._file(prefix, ia)

    def _file(self, prefix: Prefix, ia: _Ia) -> None:
        """Index ``ia`` after its client was called: transaction, next time, outbox."""
        xid = ia.client.xid
        if xid != ia.xid:
            self._unfile_xid(prefix, ia)
            if xid is not None:
                self._by_xid[xid] = prefix
            ia.xid = xid
        due = ia.next_time()
        if due is not None and due != ia.due:
            heapq.heappush(self._timers, (due, self._seq, prefix))
            self._seq += 1
        ia.due = due
        self._touched[prefix] = ia

    def _unfile_xid(self, prefix: Prefix, ia: _Ia) -> None:
        if ia.xid is not None and self._by_xid.get(ia.xid) == prefix:
            del self._by_xid[ia.xid]

    def _forget(self, prefix: Prefix, ia: _Ia) -> None:
        if self._ias.get(prefix) is not ia:
            return
        del self._ias[prefix]
        self._iaids.discard(ia.client.iaid)
        self._unfile_xid(prefix, ia)
        self._touched.pop(prefix, None)
        self._outbox += ia.client.datagrams_to_send()  # a last Release, say

    def _on_event(self, prefix: Prefix, ia: _Ia,
                  ev: Bound | Released | Failed | Expired, now: float) -> None:
        if isinstance(ev, Bound):
            if ev.prefix != prefix:
                # The hint is still leased to the previous router: hand the
                # offer back, then ask again (same IA) shortly.
                self.counters["hint-refused"] += 1
                ia.offer = ev.prefix
                ia.client.release(now)
            elif not ia.wanted:
                ia.client.release(now)  # it was let go while being asked for
            else:
                self.counters["renewed" if ev.renewed else "delegated"] += 1
                self._events.append(Delegated(prefix, ev.valid, ev.renewed))
        elif isinstance(ev, Released):
            if ia.offer is not None:
                offer, ia.offer = ia.offer, None
                self._retry(prefix, ia, now, f"offered {offer} instead")
                return
            self.counters["returned"] += 1
            self._events.append(Returned(prefix))
            self._retry(prefix, ia, now, "released")
        elif isinstance(ev, Failed):
            self._retry(prefix, ia, now, ev.reason)
        else:
            self.counters["lost"] += 1
            self._events.append(Lost(prefix))
            if ia.wanted:
                self._retry(prefix, ia, now, "lease expired")

    def _retry(self, prefix: Prefix, ia: _Ia, now: float, reason: str) -> None:
        if not ia.wanted:
            return
        if now - ia.since >= self.patience:
            self.counters["refused"] += 1
            self._events.append(Refused(prefix, reason))
            ia.wanted = False
            return
        ia.retry_at = now + self.retry
