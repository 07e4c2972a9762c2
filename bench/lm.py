"""LM benchmark: the LMs against a trivial asyncio UDP echo server.

Every server runs as its own process on the same event loop (uvloop when
installed); one load-generator process measures each the same way, as 16
clients (sockets) at once:

* closed loop: ``--window`` requests outstanding, for ``--seconds``: rate;
* open loop at half that rate: p50/p99 latency;
* durable updates per second (SQLite WAL store);
* the same with the bindings in a real etcd (Debian's etcd-server) shared
  by two LMs: updates and queries per second, and how long after an
  update's acknowledgement by one LMs the other serves it (its watch);
* one LMs of ``--workers`` processes on that etcd (``[lms] workers``,
  SO_REUSEPORT): queries per second, latency at half that rate, and the
  echo server's at the same rate;
* pool: queries sent to a member that must ask the primary (LM:2-2);
* memory: 1M bindings in one LMs store, RSS and restart time.

Every request is distinct (its own sequence number): none is answered from
the LMs' reply cache, and the echo server gets the very same datagrams.

Ends with one JSON line; ``ratio`` = the query rate of the fastest LMs one
can deploy (the workers; one process when etcd is missing) / the echo
server's rate; ``ratio_one_process`` = one LMs process's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from ipaddress import IPv6Address
from pathlib import Path

from dmanchor.wire import decode, encode
from dmanchor.wire.messages import LocationQuery, LocationUpdate
from dmanchor.wire.types import Prefix

HERE = Path(__file__).resolve().parent
SEQ = struct.Struct("!I")


def prefix(i: int) -> Prefix:
    return Prefix((0x20010DB8 << 96) | (i << 64), 64)


# -- servers ----------------------------------------------------------------------


def run_echo(port_file: str) -> None:
    """A trivial asyncio UDP echo server (the baseline)."""

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.DatagramTransport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.t.sendto(data, addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        Path(port_file).write_text(str(t.get_extra_info("sockname")[1]))
        await asyncio.Event().wait()

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main())


def start(args: list[str], tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server process; returns it and its UDP port."""
    if args[0] == "echo":
        pf = tmp / f"{name}.port"
        proc = subprocess.Popen([sys.executable, __file__, "--echo", str(pf)])
        for _ in range(200):
            if pf.exists() and pf.read_text():
                return proc, int(pf.read_text())
            time.sleep(0.05)
        raise RuntimeError("echo server did not start")
    cfg = tmp / f"{name}.toml"
    cfg.write_text(args[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmanchor.cli", args[0], "--config", str(cfg)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"{name} did not start")
    note(f"{name} listening")
    return proc, int(line.split()[2])


def note(what: str) -> None:
    """Progress on stderr (the JSON line on stdout stays the only result)."""
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


# -- load generator -------------------------------------------------------------------


def numbered(templates: list[bytes], start: int = 1) -> Iterator[bytes]:
    """Requests cycling over ``templates``, each with its own sequence number.

    A repeated (source, sequence) would be answered from the LMs' reply
    cache (duplicate suppression) instead of being served, so no two
    requests share a number: it is written into each header (offset 4; the
    messages are unsigned, nothing else covers it).
    """
    buf = bytearray()
    for i in itertools.count(start):
        buf[:] = templates[i % len(templates)]
        SEQ.pack_into(buf, 4, i & 0xFFFFFFFF)
        yield bytes(buf)


def _sockets(port: int, n: int) -> list[socket.socket]:
    """``n`` client sockets to ``port``: as many clients, each its own
    source port (an LMs of several workers serves each from one of them)."""
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        out.append(s)
    return out


def closed_loop(port: int, templates: list[bytes], window: int, seconds: float,
                clients: int = 16, count: int | None = None) -> float:
    """Distinct requests answered per second with ``window`` outstanding,
    spread over ``clients`` sockets; for ``seconds``, or until ``count``
    requests were answered (each template once, in order, when ``count``
    is their number)."""
    socks = _sockets(port, clients)
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    requests = numbered(templates, start=0)
    sent = 0
    limit = count if count is not None else 1 << 62
    for i in range(min(window, limit)):
        socks[i % clients].send(next(requests))
        sent += 1
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while done < limit:
        ready = ep.poll(1.0)
        if not ready:  # a lost datagram: keep the window full
            if time.perf_counter() > start + 120:
                raise RuntimeError(f"port {port} stopped answering")
            socks[sent % clients].send(next(requests))
            sent += 1
            continue
        for fd, _ in ready:
            s = by_fd[fd]
            while True:
                try:
                    s.recv(2048)
                except BlockingIOError:
                    break
                done += 1
                if sent < limit:
                    s.send(next(requests))
                    sent += 1
        if count is None and time.perf_counter() >= end:
            break
    rate = done / (time.perf_counter() - start)
    ep.close()
    for s in socks:
        s.close()
    return rate


def open_loop(port: int, payloads: list[bytes], rate: float, seconds: float,
              clients: int = 16) -> dict[str, float]:
    """Latency percentiles when sending ``payloads`` (numbered 0..) at a
    fixed ``rate``, round robin over ``clients`` sockets."""
    socks = _sockets(port, clients)
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    sent: dict[int, float] = {}
    lat: list[float] = []
    interval = 1.0 / rate
    total = int(rate * seconds)
    start = time.perf_counter()
    k = 0
    while k < total or (sent and time.perf_counter() < start + seconds + 1):
        now = time.perf_counter()
        if k < total and now >= start + k * interval:
            socks[k % clients].send(payloads[k])
            sent[k] = now
            k += 1
            continue
        for fd, _ in ep.poll(0):
            s = by_fd[fd]
            while True:
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    break
                t = time.perf_counter()
                key = SEQ.unpack_from(data, 4)[0]  # replies (and echoes) carry the request's
                t0 = sent.pop(key, None)
                if t0 is not None:
                    lat.append(t - t0)
    ep.close()
    for s in socks:
        s.close()
    lat.sort()
    return {
        "p50_ms": round(lat[len(lat) // 2] * 1e3, 3),
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 3),
        "answered": len(lat), "sent": total,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one(port: int, payload: bytes, timeout: float = 1.0) -> bytes:
    """Send one request, return its answer (sent again while unanswered)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.settimeout(timeout)
        for _ in range(5):
            s.send(payload)
            with contextlib.suppress(TimeoutError):
                return s.recv(2048)
        raise TimeoutError(f"no answer from port {port}")


def etcd_section(tmp: Path, args: argparse.Namespace, queries: list[bytes],
                 updates: list[bytes], echo: tuple[int, float]) -> dict[str, object]:
    """The LMs with its bindings in etcd, beside the SQLite figures; then
    one LMs of ``--workers`` processes on that etcd, against the echo
    server (``echo``: its port and closed-loop rate)."""
    from dmanchor.lm.etcd import wait_ready

    if shutil.which("etcd") is None:
        return {"skipped": "etcd not installed (make deps installs etcd-server)"}
    url, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    etcd = subprocess.Popen(
        ["etcd", "--name", "b", "--data-dir", str(tmp / "etcd"), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", peer,
         "--initial-advertise-peer-urls", peer, "--initial-cluster", f"b={peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[bytes]] = [etcd]
    out: dict[str, object] = {}
    try:
        wait_ready(url, timeout=20)
        conf = """
[lms]
node_id = "{}"
listen = "127.0.0.1:0"
etcd = "{}"
{}
log_level = "warning"
[security]
insecure = true
"""
        e1, e1_port = start(["lms", conf.format("e1", url, "")], tmp, "lms-e1")
        procs.append(e1)
        e2, e2_port = start(["lms", conf.format("e2", url, "")], tmp, "lms-e2")
        procs.append(e2)
        note("etcd: filling")
        # Every prefix bound once (the queries below all hit).
        out["durable_updates_per_s"] = round(closed_loop(
            e1_port, updates, args.window, args.seconds, count=len(updates)))
        out["queries_per_s"] = round(closed_loop(e1_port, queries, args.window, args.seconds))
        note("etcd: watch lag")
        out["served_by_the_other_after_ms"] = watch_lag(e1_port, e2_port)
        if args.workers < 2:
            return out
        w, w_port = start(["lms", conf.format("ew", url, f"workers = {args.workers}")], tmp,
                          "lms-workers")
        procs.append(w)
        out["workers"] = args.workers
        out["workers_queries_per_s"] = q = closed_loop(w_port, queries, args.window,
                                                       args.seconds)
        out["workers_latency_at_half_load"] = latency(w_port, queries, q / 2, args.seconds)
        out["echo_latency_at_that_rate"] = latency(echo[0], queries, q / 2, args.seconds)
        out["workers_queries_per_s"] = round(q)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    return out


def watch_lag(writer: int, reader: int) -> dict[str, float]:
    """How long after ``writer`` acknowledged an update ``reader`` serves it."""
    from dmanchor.wire.messages import LocationReply

    fwd = IPv6Address("2001:db8:ff::9")
    lags = []
    never = 0
    for i in range(100):
        hnp = prefix(50_000 + i)
        one(writer, encode(LocationUpdate(hnp, fwd, 3600), i + 1))
        t0 = time.perf_counter()
        while time.perf_counter() < t0 + 5:
            reply = decode(one(reader, encode(LocationQuery(hnp), 1))).message
            if isinstance(reply, LocationReply) and reply.forwarding_address == fwd:
                lags.append(time.perf_counter() - t0)
                break
        else:
            never += 1  # (counted, not waited for forever)
    lags.sort()
    if not lags:
        return {"never_served": never}
    return {"p50": round(lags[len(lags) // 2] * 1e3, 3),
            "p99": round(lags[int(len(lags) * 0.99)] * 1e3, 3), "never_served": never}


def latency(port: int, queries: list[bytes], rate: float, seconds: float) -> dict[str, float]:
    """Open-loop latency at ``rate`` (distinct numbers: new sockets, so new sources)."""
    requests = numbered(queries, start=0)
    payloads = [next(requests) for _ in range(int(rate * seconds) + 1)]
    return {"rate": round(rate), **open_loop(port, payloads, rate, seconds)}


def memory_probe(n: int) -> None:
    """Child mode: fill a store with ``n`` bindings, restart an LMs from it."""
    from dmanchor.lm.lms import LmsCore, LmsSettings
    from dmanchor.lm.store import Binding, SqliteStore

    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(d)
        addr = IPv6Address("2001:db8:ff::1")
        t0 = time.perf_counter()
        store.put_many(Binding(prefix(i), addr, 4e9, "bench") for i in range(n))
        fill = time.perf_counter() - t0
        store.close()
        t0 = time.perf_counter()
        core = LmsCore(LmsSettings("mem"), store=SqliteStore(d), now=time.time())
        restart = time.perf_counter() - t0
        assert len(core.bindings) == n
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"bindings": n, "fill_s": round(fill, 2),
                          "restart_s": round(restart, 2), "max_rss_mib": round(rss)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--echo", help=argparse.SUPPRESS)
    ap.add_argument("--memory", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--bindings", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4),
                    help="processes of the multi-worker LMs (etcd section)")
    args = ap.parse_args()
    if args.echo:
        run_echo(args.echo)
        return
    if args.memory:
        memory_probe(args.memory)
        return

    n_prefixes = 10_000
    queries = [encode(LocationQuery(prefix(i)), 1) for i in range(n_prefixes)]
    fwd = IPv6Address("2001:db8:ff::1")
    procs: list[subprocess.Popen[bytes]] = []
    out: dict[str, object] = {"bench": "lm"}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        try:
            lms_conf = f"""
[lms]
node_id = "a"
listen = "127.0.0.1:0"
state_dir = "{tmp / 'state'}"
primary = ["2001:db8::/32"]
log_level = "warning"
[security]
insecure = true
"""
            lms, lms_port = start(["lms", lms_conf], tmp, "lms")
            procs.append(lms)
            echo, echo_port = start(["echo"], tmp, "echo")
            procs.append(echo)
            # Durable updates (also fills the bindings the queries hit).
            updates = [encode(LocationUpdate(prefix(i), fwd, 3600), 1)
                       for i in range(n_prefixes)]
            out["durable_updates_per_s"] = round(
                closed_loop(lms_port, updates, args.window, args.seconds))
            q_rate = closed_loop(lms_port, queries, args.window, args.seconds)
            e_rate = closed_loop(echo_port, queries, args.window, args.seconds)
            out["lms_queries_per_s"] = round(q_rate)
            out["echo_per_s"] = round(e_rate)
            out["ratio_one_process"] = round(q_rate / e_rate, 3)
            out["lms_latency_at_half_load"] = latency(lms_port, queries, q_rate / 2,
                                                      args.seconds)
            out["echo_latency_at_same_rate"] = latency(echo_port, queries, q_rate / 2,
                                                       args.seconds)
            # Pool: b answers for a's prefixes by asking a (LM:2-2/2-3).
            pool_conf = f"""
[lms]
node_id = "b"
listen = "127.0.0.1:0"
primary = ["2001:db9::/32"]
peers = ["127.0.0.1:{lms_port}"]
log_level = "warning"
[security]
insecure = true
"""
            b, b_port = start(["lms", pool_conf], tmp, "lms-b")
            procs.append(b)
            time.sleep(0.5)
            out["pool_queries_via_peer_per_s"] = round(
                closed_loop(b_port, queries, args.window, args.seconds))
            etcd = out["etcd"] = etcd_section(tmp, args, queries, updates, (echo_port, e_rate))
            # The ratio of the fastest LMs one can deploy: the workers.
            best = etcd.get("workers_queries_per_s", q_rate)
            assert isinstance(best, int | float)
            out["ratio"] = round(best / e_rate, 3)
            ok = decode(queries[0])  # sanity: what we send decodes
            assert isinstance(ok.message, LocationQuery)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)
    mem = subprocess.run([sys.executable, __file__, "--memory", str(args.bindings)],
                         capture_output=True, text=True, check=True)
    out["memory"] = json.loads(mem.stdout)
    out["targets"] = {"ratio": 0.8, "p99_ms": 1.0, "max_rss_mib": 1024, "restart_s": 10}
    for k, v in out.items():
        print(f"{k:32} {v}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
