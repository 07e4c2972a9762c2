"""Prometheus metrics of a node: ``GET /metrics`` on ``[node] metrics``.

Off by default.  Everything but the hold histogram is read from the node's
functions at each scrape - the same counters the control socket's ``stats``
and ``counters`` commands give - so a metric can never drift from what the
node itself counts.  The scrape is served on the node's event loop (an
asyncio server, not prometheus_client's thread): it reads the cores between
two of their inputs, never in the middle of one.

Families (labels in braces):

- ``dmanchor_messages_total{function,direction,type}``: signalling messages
  sent and received, by message type;
- ``dmanchor_message_bytes_total{function,type}``: bytes sent;
- ``dmanchor_retransmissions_total{function}``;
- ``dmanchor_drops_total{function,reason}``: messages dropped by SM (bad
  MAC, replay, unauthenticated ...), refused by sender policy, or failed;
- ``dmanchor_dataplane_events_total{counter}``: the data plane's counters
  (holds, released, end markers, buffer overflows, lift stragglers ...);
- ``dmanchor_prefixes{state}``: the anchor's MN prefixes by life-cycle
  state (anchored, held, handed, visiting, serving ...);
- ``dmanchor_holds``: holds open now; ``dmanchor_held_packets``: packets
  in them;
- ``dmanchor_bindings``: an LMs's location bindings;
- ``dmanchor_fm2_packets_total{direction}``: packets charged on the
  node's flows (FM:2), ended flows included;
- ``dmanchor_hold_seconds`` (histogram): how long each hold lasted, from
  the MN leaving (or a new path opening) to the hold's lift - the handover
  as the data plane lived it; ``dmanchor_lifts_total{cause}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .dataplane.tunbuffer import Lift
from .runtime import clock
from .transport.reliable import Addr
from .wire.types import EntryKind, FlowFilter, ForwardingEntry, Prefix

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

HOLD_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds: a hold lasts milliseconds when all goes well, up to its timeout."""
MAX_OPEN_HOLDS = 65536
"""Most hold starts remembered (a hold that timed out is never lifted)."""
MAX_REQUEST = 8192
"""Longest request head read from a scraper, bytes."""


class NodeMetrics:
    """The node's metrics: a registry whose collector reads the node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.hold = Histogram("dmanchor_hold_seconds", "How long each hold lasted",
                              buckets=HOLD_BUCKETS, registry=self.registry)
        self.lifts = PromCounter("dmanchor_lifts", "Holds lifted, by cause", ["cause"],
                                 registry=self.registry)
        self._since: dict[Prefix, float] = {}

    def change(self, added: Sequence[ForwardingEntry],
               deleted: Sequence[ForwardingEntry]) -> None:
        """A data-plane change: note when each hold began."""
        now = clock.now()
        for e in added:
            if e.kind is EntryKind.BUFFER and e.flow is None:
                # A new hold starts now (one that ended without a lift, by
                # its timeout, leaves a stale start: replaced here).
                self._since.pop(e.prefix, None)
                self._since[e.prefix] = now
                if len(self._since) > MAX_OPEN_HOLDS:
                    del self._since[next(iter(self._since))]  # the oldest

    def lift(self, prefix: Prefix, lift: Lift, cause: str) -> None:
        """A hold was lifted: observe how long it lasted."""
        began = self._since.pop(prefix, None)
        if began is not None:
            self.hold.observe(max(0.0, clock.now() - began))
        self.lifts.labels(cause).inc()

    def render(self) -> bytes:
        """The exposition text (Prometheus text format)."""
        return generate_latest(self.registry)

    def collect(self) -> Iterable[Metric]:
        """Read the node's functions (called by the registry at each scrape)."""
        from .nodecmd import run_command  # the node's own view: one source of truth

        now = clock.now()
        stats = run_command(self.node, b'{"cmd": "stats"}', now).get("ok", {})
        messages = CounterMetricFamily("dmanchor_messages", "Signalling messages",
                                       labels=["function", "direction", "type"])
        octets = CounterMetricFamily("dmanchor_message_bytes", "Signalling bytes sent",
                                     labels=["function", "type"])
        retx = CounterMetricFamily("dmanchor_retransmissions", "Requests sent again",
                                   labels=["function"])
        drops = CounterMetricFamily("dmanchor_drops", "Messages dropped, refused or failed",
                                    labels=["function", "reason"])
        for fn, st in stats.items():
            for direction in ("sent", "received"):
                for t, n in st.get(direction, {}).items():
                    messages.add_metric([fn, direction, t], n)
            for t, n in st.get("bytes_sent", {}).items():
                octets.add_metric([fn, t], n)
            if "retransmissions" in st:
                retx.add_metric([fn], st["retransmissions"])
            for group in ("drops", "refused", "failed"):
                for reason, n in st.get(group, {}).items():
                    drops.add_metric([fn, reason if group == "drops" else f"{group}:{reason}"],
                                     n)
        yield from (messages, octets, retx, drops)
        yield from self._dataplane(now)
        yield from self._state()

    def _dataplane(self, now: float) -> Iterable[Metric]:
        from .nodecmd import run_command

        counters = run_command(self.node, b'{"cmd": "counters"}', now).get("ok", {})
        events = CounterMetricFamily("dmanchor_dataplane_events", "Data-plane counters",
                                     labels=["counter"])
        for name, n in sorted(counters.items()):
            if isinstance(n, int):
                events.add_metric([name], n)
        yield events
        dp = self.node.dataplane
        if dp is None:
            return
        holds = [e.prefix for e in dp.entries()
                 if e.kind is EntryKind.BUFFER and e.flow is None]
        yield GaugeMetricFamily("dmanchor_holds", "Holds open now", value=len(holds))
        yield GaugeMetricFamily("dmanchor_held_packets", "Packets in the open holds",
                                value=sum(dp.buffered(p) for p in holds))

    def _state(self) -> Iterable[Metric]:
        node = self.node
        if node.anchor is not None:
            by_state = GaugeMetricFamily("dmanchor_prefixes", "MN prefixes by state",
                                         labels=["state"])
            counts: dict[str, int] = {}
            for st in node.anchor.life.state.values():
                counts[st.value] = counts.get(st.value, 0) + 1
            for name, n in sorted(counts.items()):
                by_state.add_metric([name], n)
            yield by_state
            charged = node.anchor.usage(FlowFilter())  # every flow, open or ended
            fm2 = CounterMetricFamily("dmanchor_fm2_packets", "Packets charged (FM:2)",
                                      labels=["direction"])
            fm2.add_metric(["down"], charged.packets_down)
            fm2.add_metric(["up"], charged.packets_up)
            yield fm2
        lms = node.drivers.get("lms")
        bindings = getattr(lms.core, "bindings", None) if lms is not None else None
        if bindings is not None:
            yield GaugeMetricFamily("dmanchor_bindings", "Location bindings (LMs)",
                                    value=len(bindings))


class MetricsServer:
    """``GET /metrics`` over HTTP/1.0 on the node's event loop."""

    def __init__(self, listen: Addr, render: NodeMetrics) -> None:
        self.listen = listen
        self.metrics = render
        self._server: asyncio.Server | None = None

    async def start(self) -> Addr:
        """Listen; returns the address bound (port 0 picks a free one)."""
        host, port = self.listen
        self._server = await asyncio.start_server(self._serve, host, port)
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = head[:MAX_REQUEST].split(b"\r\n", 1)[0].split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                body, status, ctype = self.metrics.render(), b"200 OK", CONTENT_TYPE_LATEST
            else:
                body, status, ctype = b"not found: try /metrics\n", b"404 Not Found", "text/plain"
            writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype.encode()
                         + b"\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError) as exc:
            log.debug("metrics: a scrape ended early: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
