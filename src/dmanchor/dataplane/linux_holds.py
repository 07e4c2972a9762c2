"""FM:6 on Linux: the hold device, and lifting a hold without blocking.

A held prefix is routed (:data:`BUFFER_METRIC`, ahead of its other routes)
into the TUN device of :mod:`.tunbuffer`.  Releasing it writes its packets
back, in order, through the forwarding then current, and lifts the hold in a
lull - in steps (:class:`~.tunbuffer.Lifter`): the first runs inside the
batch that released it (in a quiet moment that is the whole lift), the rest
when the driver asks, at :meth:`Holds.next_deadline`, so the agent's event
loop serves its other work between them.  A batch that touches a prefix
still being lifted finishes its lift first.  The methods belong to
:class:`~.linux.LinuxDataPlane` (a mixin: they use its state).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from ..wire.types import EntryKind, ForwardingEntry, Prefix
from .api import BufferSpec, DataPlaneError
from .linux_markers import MARKER_MARK, OLDPATH_TABLE
from .markers import MarkerAuth, is_marker
from .netlink import Netlink, Request, route, rule
from .tunbuffer import DEVICE as TUN_DEVICE
from .tunbuffer import LIFT_READ, READ_LIMIT, Lift, Lifter, TunBuffer, destination

log = logging.getLogger(__name__)

FLUSH_TABLE = 0x4CFE
"""Lookup table of the flush SID: the access links' prefixes, no holds."""
OLDPATH_RULE_PRIORITY = 300
"""``fwmark MARKER_MARK lookup OLDPATH_TABLE``: end markers take the old path."""
RELEASE_TABLE = 0x4CFF
"""Holds a released prefix's new route while its held packets drain."""
RELEASE_RULE_PRIORITY = 400
"""``iif dmbuf0 lookup RELEASE_TABLE``: drained packets skip the hold."""
BUFFER_METRIC = 1
"""A held prefix's route into the TUN device wins over its other routes."""
STANDBY_METRIC = 4000
"""A hold-device route under every anchored prefix: with its access link's
``ignore_routes_with_linkdown`` set, the kernel itself diverts the prefix
here the moment the MN's radio goes (carrier lost), before any agent has
reacted; the agent's FM:6-1 hold then adopts what was caught, in order."""
MAX_HELD_BYTES = 256 << 20
"""Bytes of held packets the node keeps in user space at most, all holds
together; more are dropped and counted as ``buffer-overflow-bytes``."""
MAX_HOLD_BYTES = 64 << 20
"""Bytes one hold keeps at most (besides its packet limit); more are
dropped and counted as ``buffer-overflow-bytes``."""
ORPHAN_LIMIT = 10_000
"""Packets the hold device may keep for prefixes no hold has claimed yet."""
RING_CAP = 200_000
"""Packets the hold device's kernel ring takes (its txqueuelen): the
node-wide bound on held packets not yet read by the agent, whatever the
holds' limits add up to (each full-size packet costs ~2 KiB while held);
overflow is counted as ``buffer-overflow``."""


@dataclass(slots=True)
class _Hold:
    spec: BufferSpec
    started: float


@dataclass(slots=True)
class _Lifting:
    """A hold being lifted: its packets drain through ``copies`` (in
    :data:`RELEASE_TABLE`) while the hold route stays."""

    lifter: Lifter
    copies: list[ForwardingEntry]
    anchored: bool
    """The prefix's new forwarding anchors it here (its standby stays)."""
    cause: str


class Holds:
    """FM:6 of :class:`~.linux.LinuxDataPlane` (mixed into it)."""

    netns: str | None
    nl: Netlink
    markers: MarkerAuth
    on_lift: Callable[[Prefix, Lift, str], None] | None
    _tun: TunBuffer | None
    _counters: Counter[str]
    _holds: dict[Prefix, _Hold]
    _held: dict[Prefix, list[bytes]]
    _strays: list[bytes]
    _new_markers: list[bytes]
    _held_bytes: int
    _held_bytes_of: Counter[Prefix]
    _lifting: dict[Prefix, _Lifting]
    _lift_due: float | None
    _marks_after_lift: dict[Prefix, tuple[ForwardingEntry, float]]
    _names: dict[int, str]
    _nhid: dict[IPv6Address, int]

    # The data plane's own methods, declared for the type checker only: a
    # stub at run time would shadow a base after this one (EndMarkers').
    if TYPE_CHECKING:
        def mark_end(self, tunnel: ForwardingEntry, now: float,
                     served_on: str | None = None) -> bool: ...
        def entries(self) -> list[ForwardingEntry]: ...
        def _requests(self, e: ForwardingEntry, add: bool,
                      replace: bool = False) -> list[Request]: ...
        def _ifindex(self, name: str) -> int: ...
        def _refresh_links(self) -> None: ...

    def _ensure_tun(self) -> None:
        if self._tun is not None:
            return
        self._tun = TunBuffer(self.netns)
        self._refresh_links()
        index = self._ifindex(TUN_DEVICE)
        # The kernel ring is where held packets wait until the agent reads
        # them.  An agent starved of CPU reads late, and a ring shorter than
        # the holds' limits drops what they promised to keep (measured: 250-
        # 980 of 15000 lost at 10k pps, a 50k-packet hold in a 10k ring).
        # Sized once, here: resizing it later (at a hold) resets the device's
        # queue and drops what is in it.  An empty slot costs a pointer.
        self.nl.set_link(index, up=True, txqlen=RING_CAP)
        failures = self.nl.batch([
            rule(True, RELEASE_RULE_PRIORITY, RELEASE_TABLE, iif=TUN_DEVICE),
            rule(True, OLDPATH_RULE_PRIORITY, OLDPATH_TABLE, fwmark=MARKER_MARK),
        ])
        if failures:
            raise DataPlaneError(str(failures[0][1]))

    def _drop_stale_release_rule(self) -> None:
        """The release rule outlives the TUN device of a dead process: remove it."""
        if self._tun is None:
            self.nl.batch([rule(False, RELEASE_RULE_PRIORITY, RELEASE_TABLE, iif=TUN_DEVICE)])

    # -- DataPlane interface ------------------------------------------------------


    def fileno(self) -> int | None:
        """Descriptor to watch: readable when the hold device got packets."""
        return self._tun.fd if self._tun is not None else None

    def on_readable(self, now: float) -> None:
        """Drain the hold device; an end marker releases the hold it ends."""
        self._drain()
        if self._strays:
            self._forward_stragglers()
        self._judge_markers(now)

    def _judge_markers(self, now: float) -> None:
        """Release the holds whose end marker was read (each marker once;
        one read for no hold yet waits with the strays for its hold)."""
        markers, self._new_markers = self._new_markers, []
        for m in markers:
            dst = destination(m)
            prefix = next((p for p in self._holds if p.contains(dst)), None)
            if prefix is None:
                if any(m is s for s in self._strays):
                    self._new_markers.append(m)  # judged when its hold comes
                continue
            hold, held = self._holds[prefix], self._held.get(prefix, [])
            if not hold.spec.release_on_timeout or prefix in self._lifting \
                    or not any(m is p for p in held):
                continue  # (plain traffic for such a hold; or lifted with it)
            held.remove(m)
            self._held_bytes -= len(m)
            self._held_bytes_of[prefix] -= len(m)
            forged = self.markers.check(m, prefix, now)
            if forged is not None:
                # Not from a router of ours: the hold stays until the real
                # marker or its timeout.
                self._counters[forged.value] += 1
                continue
            self._counters["end-marker"] += 1
            self._release(ForwardingEntry(EntryKind.BUFFER, prefix),
                          [e for e in self.entries() if e.prefix == prefix and e.flow is None],
                          "end-marker", now)

    def _forward_stragglers(self) -> None:
        """Send on packets no hold claims whose prefix is routed elsewhere now.

        They reached the device just as a hold was lifted (after its last
        drain): they go on through the current route, not stay stuck.  Those
        still routed to the device (a standby that caught them, waiting for
        the agent's hold) stay.
        """
        assert self._tun is not None
        verdict: dict[int, bool] = {}
        keep: list[bytes] = []
        for pkt in self._strays:
            dst = destination(pkt)
            if dst not in verdict:
                r = self.nl.route_get(IPv6Address(dst))
                verdict[dst] = r is not None and self._names.get(r.oif or -1) != TUN_DEVICE
            if verdict[dst]:
                self._tun.write(pkt)
                self._held_bytes -= len(pkt)
                self._counters["stragglers-forwarded"] += 1
            else:
                keep.append(pkt)
        self._strays = keep

    def _drain(self, limit: int = READ_LIMIT) -> None:
        """Move what the hold device got (at most ``limit`` packets) into user
        space, each to its hold, within each hold's limits."""
        if self._tun is None:
            return
        for pkt in self._tun.read_all(limit):
            dst = destination(pkt)
            if dst >> 120 == 0xFF:
                # The device's own multicast (MLD, RS): never held traffic.
                self._counters["hold-device-multicast"] += 1
                continue
            if self._held_bytes + len(pkt) > MAX_HELD_BYTES:
                # Node-wide: the holds' packet limits together may promise
                # more memory than the node has.
                self._counters["buffer-overflow-bytes"] += 1
                continue
            prefix = next((p for p in self._holds if p.contains(dst)), None)
            if prefix is not None:
                held = self._held.setdefault(prefix, [])
                if len(held) >= self._holds[prefix].spec.limit:
                    self._counters["buffer-overflow-held"] += 1
                    continue
                if self._held_bytes_of[prefix] + len(pkt) > MAX_HOLD_BYTES:
                    self._counters["buffer-overflow-bytes"] += 1
                    continue
                held.append(pkt)
                self._held_bytes_of[prefix] += len(pkt)
            else:
                # Caught by a standby route (the radio just went): kept for
                # the hold the agent is about to install, within a bound.
                if len(self._strays) >= ORPHAN_LIMIT:
                    self._counters["standby-overflow"] += 1
                    continue
                self._strays.append(pkt)
                self._counters["standby-caught"] += 1
            self._held_bytes += len(pkt)
            if is_marker(pkt):
                self._new_markers.append(pkt)

    def _adopt(self, prefix: Prefix) -> None:
        """A new hold of ``prefix`` takes the strays a standby route caught for
        it: they arrived before anything the hold itself gets."""
        mine = [p for p in self._strays if prefix.contains(destination(p))]
        if mine:
            self._strays = [p for p in self._strays if not prefix.contains(destination(p))]
            self._held[prefix] = mine + self._held.get(prefix, [])
            self._held_bytes_of[prefix] += sum(len(p) for p in mine)

    def _take(self, prefix: Prefix, limit: int = READ_LIMIT) -> list[bytes]:
        """Remove and return, in arrival order, the held packets of ``prefix``
        (reading at most ``limit`` more from the device first)."""
        self._drain(limit)
        # (No strays of a held prefix: they are adopted when its hold comes,
        # and while it stays its packets are its own.)
        mine = self._held.pop(prefix, [])
        self._held_bytes -= sum(len(p) for p in mine)
        self._held_bytes_of.pop(prefix, None)
        return mine

    def _release(self, hold: ForwardingEntry, new: list[ForwardingEntry], cause: str,
                 now: float) -> None:
        """Send a prefix's held packets on, in order, then lift the hold.

        While they drain, the hold stays in the main table (new arrivals
        keep queueing behind them) and a copy of the prefix's new route in
        RELEASE_TABLE forwards what comes out of the device.  Only when
        the device has nothing left for the prefix is the hold removed: in
        this call if a lull comes at once, else in later steps
        (:meth:`expire`).
        """
        assert self._tun is not None
        prefix = hold.prefix
        copies = [e for e in new if e.kind is not EntryKind.BUFFER]
        if not copies:
            # Released into nothing: without a copy, what leaves the device
            # would find the hold again in the main table and loop through
            # it until its hop limit - flooding the device so that the lift
            # never finds it empty.  Dropped instead, and counted.
            copies = [ForwardingEntry(EntryKind.DROP, prefix)]
            self._counters["release-nowhere"] += 1
        elif any(e.kind is EntryKind.ANCHOR for e in copies):
            # The access link may lose its carrier while they drain (the MN
            # leaves again): its route is then ignored, and what leaves the
            # device would fall through to the standby route into it again
            # - looping until its hop limit, the lift never finding the
            # device empty (84407 "released" in one lift under load).
            # Dropped instead, as on the radio that went.
            copies.append(ForwardingEntry(EntryKind.DROP, prefix, metric=STANDBY_METRIC))
        self._batch_or_raise([self._route_in(e, RELEASE_TABLE, True) for e in copies])
        # Built before the lift: its last steps should be system calls only.
        removal = self._requests(hold, add=False)
        lifter = Lifter(lambda: self._take(prefix, LIFT_READ), self._tun.write,
                        lambda: self._batch_or_raise(removal))
        self._lifting[prefix] = _Lifting(
            lifter, copies, any(e.kind is EntryKind.ANCHOR for e in new), cause)
        self._step_lift(prefix, now, raising=True)

    def _step_lift(self, prefix: Prefix, now: float, *, raising: bool = False,
                   cut: bool = False) -> None:
        """One step of ``prefix``'s lift (all of it, at once, if ``cut``).

        A lift that fails (the hold route would not go) leaves the prefix
        held, as before its release, until its timeout; counted as
        ``lift-failed``, and raised when ``raising`` (inside a batch)."""
        state = self._lifting[prefix]
        try:
            lift = state.lifter.finish() if cut else state.lifter.step()
        except (DataPlaneError, OSError) as exc:
            del self._lifting[prefix]
            self._counters["lift-failed"] += 1
            self.nl.batch([self._route_in(e, RELEASE_TABLE, False) for e in state.copies])
            if raising:
                raise DataPlaneError(f"lifting the hold of {prefix}: {exc}") from exc
            log.error("lifting the hold of %s: %s", prefix, exc)
            return
        if lift is None:
            self._lift_due = now  # again as soon as the loop is free
            return
        del self._lifting[prefix]
        self._lifted(prefix, state, lift)

    def _lifted(self, prefix: Prefix, state: _Lifting, lift: Lift) -> None:
        """The hold is gone: count, tell, and clear what only the lift needed."""
        self._counters["released"] += lift.released
        self._counters["lift-stragglers"] += lift.stragglers
        self._counters["lift-forced"] += lift.forced
        self._counters["lift-cut"] += lift.cut
        self._counters["lift-unguarded"] += not lift.guarded
        self._counters["lift-steps"] += lift.steps
        if self.on_lift is not None:
            self.on_lift(prefix, lift, state.cause)
        failures = self.nl.batch(
            [self._route_in(e, RELEASE_TABLE, False) for e in state.copies])
        if not state.anchored:
            # A standby its ANCHOR outlived (the link went down): gone with
            # the hold that took over; absent is fine.
            self.nl.batch([route(False, prefix.network.to_bytes(16, "big"), prefix.length,
                                 oif=self._ifindex(TUN_DEVICE), metric=STANDBY_METRIC)])
        hold_state = self._holds.pop(prefix, None)
        leftover = self._held.pop(prefix, [])
        if leftover:
            # (None expected: the lift took all.)  Without their hold they
            # are strays: sent on by the route now current.
            self._strays.extend(leftover)
            self._held_bytes_of.pop(prefix, None)
        if hold_state is not None and hold_state.spec.release_on_timeout:
            self.nl.batch([route(False, prefix.network.to_bytes(16, "big"), 128,
                                 table=FLUSH_TABLE)])
        marked = self._marks_after_lift.pop(prefix, None)
        if marked is not None:
            # Asked for while the held packets drained (they go first).
            self.mark_end(*marked)
        if failures:
            self._counters["release-route-left"] += 1
            log.error("lifted %s: its release route stayed: %s", prefix, failures[0][1])

    def _hold_again(self, prefix: Prefix) -> None:
        """Stop ``prefix``'s lift and hold it again: what the lift had not
        written out yet goes back, first, to what is held for it (the hold
        route never went, so nothing overtook it)."""
        state = self._lifting.pop(prefix)
        back = state.lifter.take_back()
        self._held[prefix] = back + self._held.get(prefix, [])
        size = sum(len(pkt) for pkt in back)
        self._held_bytes += size
        self._held_bytes_of[prefix] += size
        self._counters["released"] += state.lifter.released
        self._counters["lift-held-again"] += 1
        self._marks_after_lift.pop(prefix, None)  # (it ends no path now)
        self.nl.batch([self._route_in(e, RELEASE_TABLE, False) for e in state.copies])

    def lifting(self) -> set[Prefix]:
        """Prefixes whose hold is being lifted (released, still draining)."""
        return set(self._lifting)

    def _finish_lifts(self, prefixes: Iterable[Prefix], now: float) -> None:
        """Finish, at once, the lifts of ``prefixes`` (their forwarding is
        about to change: the held packets go by the route they were
        released to, before it does)."""
        for p in prefixes:
            if p in self._lifting:
                self._step_lift(p, now, cut=True)

    def _route_in(self, e: ForwardingEntry, table: int, add: bool) -> Request:
        p = e.prefix
        net = p.network.to_bytes(16, "big")
        if e.kind is EntryKind.TUNNEL and e.next_hop is not None:
            return route(add, net, p.length, table=table, nhid=self._nhid[e.next_hop])
        if e.kind is EntryKind.ROUTE and e.next_hop is not None:
            return route(add, net, p.length, table=table, gateway=e.next_hop.packed)
        if e.kind is EntryKind.ANCHOR:
            return route(add, net, p.length, table=table, oif=self._ifindex(e.link))
        return route(add, net, p.length, table=table, blackhole=True,
                     metric=e.metric or None)


    def expire(self, now: float) -> None:
        """Step the lifts under way; end the holds whose time is up."""
        self._lift_due = None
        for prefix in list(self._lifting):
            self._step_lift(prefix, now)
        if self._new_markers:
            self._judge_markers(now)  # read by the lift steps' reads
        for prefix, hold in list(self._holds.items()):
            if prefix in self._lifting:
                continue  # released: its lift bounds it (FORCE_AFTER)
            if now >= hold.started + hold.spec.timeout:  # same sum as next_deadline()
                entry = ForwardingEntry(EntryKind.BUFFER, prefix)
                if hold.spec.release_on_timeout:
                    self._counters["hold-timeout-released"] += 1
                    self._release(entry, [e for e in self.entries()
                                          if e.prefix == prefix and e.flow is None],
                                  "timeout", now)
                    continue
                self._batch_or_raise(self._requests(entry, add=False))
                self._counters["buffer-timeout"] += len(self._take(prefix))
                del self._holds[prefix]

    def next_deadline(self) -> float | None:
        """When :meth:`expire` must run next: a hold's timeout, or at once
        while a lift is under way."""
        due = [h.started + h.spec.timeout for p, h in self._holds.items()
               if p not in self._lifting]
        if self._lifting and self._lift_due is not None:
            due.append(self._lift_due)
        return min(due, default=None)

    def holds(self) -> set[Prefix]:
        """Prefixes held (a hold being lifted is released already)."""
        return set(self._holds).difference(self._lifting)

    def held(self, prefix: Prefix) -> bool:
        """Whether ``prefix`` is among :meth:`holds`."""
        return prefix in self._holds and prefix not in self._lifting

    def buffered(self, prefix: Prefix) -> int:
        """Packets held for ``prefix`` now."""
        self._drain()
        return len(self._held.get(prefix, ())) + \
            sum(1 for p in self._strays if prefix.contains(destination(p)))

    def _batch_or_raise(self, reqs: list[Request]) -> None:
        failures = self.nl.batch(reqs)
        if failures:
            raise DataPlaneError(f"{self.netns or 'host'}: {failures[0][1]}")
