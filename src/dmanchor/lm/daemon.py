"""``dmanchor lms`` / ``dmanchor lmp``: the LM daemons.

Config (TOML or YAML)::

    [lms]                      # or [lmp]
    node_id = "lms-a"          # this server's node id
    listen = "[::1]:5400"      # bind address (port 0 = any free port)
    address = "::1"            # LMs address announced in LM:2-1
    state_dir = "/var/lib/dmanchor/lms-a"   # SQLite store; absent = memory only
    synchronous = "NORMAL"     # or FULL (fsync per update)
    etcd = "http://127.0.0.1:2379"  # or: bindings in etcd, shared by every LMs naming it
    etcd_prefix = "/dmanchor/lms/"  # their keys' prefix there
    workers = 1                # processes serving the port; > 1 needs etcd, no peers
    primary = ["2001:db8:1::/48"]           # prefixes this member is primary for
    peers = ["[::1]:5401"]     # pool members to join
    max_lifetime = 86400
    max_subscriptions = 100000 # (prefix, subscriber) pairs; beyond: RESOURCE_EXHAUSTED
    max_subscription_lifetime = 3600
    heartbeat_interval = 1.0
    dead_after = 3.5
    log_level = "info"

    [lmp]
    node_id = "lmp-1"
    listen = "[::1]:5410"
    upstream = ["[::1]:5400", "[::1]:5401"]
    max_cache = 100000         # bindings cached at most (oldest evicted)
    max_cache_age = 60.0       # seconds one is served from the cache, at most
    max_subscriptions = 100000

    [security]                 # required: send_key + [[security.keys]] (dmanchor keygen),
                               # or insecure = true; see dmanchor.config.read_security

Prints ``ready HOST PORT`` on stdout once listening; stops cleanly on
SIGTERM or SIGINT (pending store writes are already durable: each update
commits before it is acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import (
    ConfigError,
    Fields,
    SecuritySettings,
    as_address,
    as_bind,
    as_endpoint,
    as_float,
    as_int,
    as_prefix,
    as_str,
    load_file,
    read_security,
)
from ..runtime import clock
from ..runtime.aio import UdpDriver
from ..transport.reliable import Addr, Endpoint
from ..transport.service import ServiceCore
from ..wire.auth import Security
from ..wire.types import Prefix
from .etcd import KEY_PREFIX, Change, EtcdStore, EtcdWatch
from .lmp import LmpCore
from .lms import JoinRefused, LmsCore, LmsSettings, MemberDown, MemberUp
from .store import Binding, MemoryStore, SqliteStore, Store, StoreError
from .workers import Supervisor, die_with_supervisor

log = logging.getLogger("dmanchor.lm")

MAX_WORKERS = 64
"""Most worker processes one LMs may run."""


@dataclass(frozen=True, slots=True)
class LmDaemonConfig:
    """A parsed LMs or LMp config file."""

    kind: str
    """``lms`` or ``lmp``."""
    listen: Addr
    """Bind address."""
    security: SecuritySettings
    """SM settings."""
    lms: LmsSettings | None = None
    """LMs behaviour (kind lms)."""
    state_dir: Path | None = None
    """Store directory (kind lms); None keeps bindings in memory only."""
    synchronous: str = "NORMAL"
    """SQLite synchronous mode."""
    etcd: str | None = None
    """An etcd client URL (``http://host:port``): the bindings live there,
    shared by every LMs naming the same etcd and prefix (instead of
    ``state_dir``)."""
    etcd_prefix: str = KEY_PREFIX
    """The etcd key prefix of the bindings."""
    upstream: tuple[Addr, ...] = ()
    """LMs servers (kind lmp)."""
    lmp_cache: tuple[int, float] = (100_000, 60.0)
    """Kind lmp: bindings cached at most, and the longest one is served
    from the cache, seconds (``max_cache``, ``max_cache_age``)."""
    lmp_max_subscriptions: int = 100_000
    """Kind lmp: (prefix, client) subscription pairs held at most."""
    log_level: str = "info"
    """Python logging level name."""
    workers: int = 1
    """Kind lms: processes serving the one port (``SO_REUSEPORT``); more
    than one needs ``etcd`` - the store through which each learns the
    others' updates - and no ``peers`` (:mod:`dmanchor.lm.workers`)."""
    worker: int | None = None
    """Set in a worker process only: its index (names its writes to etcd,
    so each worker's watch applies the others')."""


def load_config(kind: str, path: str | Path) -> LmDaemonConfig:
    """Read and validate a daemon config; raises :class:`ConfigError`."""
    doc = load_file(path)
    top = Fields(str(path), "", doc)
    sec = read_security(top.sub("security"))
    if kind not in doc:
        raise ConfigError(f"{path}: missing the [{kind}] table")
    cfg = read_lm_table(kind, top.sub(kind), sec)
    top.finish()
    return cfg


def read_lm_table(kind: str, f: Fields, sec: SecuritySettings,
                  node_id: str | None = None) -> LmDaemonConfig:
    """Parse an ``[lms]`` or ``[lmp]`` table (also used by ``dmanchor node``)."""
    path = f.source
    listen = f.get("listen", as_bind, ("::1", 5400))
    level = f.get("log_level", as_str, "info")
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{path}: field '{kind}.log_level': expected debug/info/warning/error")
    if kind == "lmp":
        f.get("node_id", as_str, "lmp")
        upstream = f.get_list("upstream", as_endpoint)
        if not upstream:
            raise ConfigError(f"{path}: field 'lmp.upstream': at least one LMs is required")
        cache = (f.get("max_cache", as_int, 100_000), f.get("max_cache_age", as_float, 60.0))
        subs = f.get("max_subscriptions", as_int, 100_000)
        f.finish()
        return LmDaemonConfig("lmp", listen, sec, upstream=upstream, lmp_cache=cache,
                              lmp_max_subscriptions=subs, log_level=level)
    sync = f.get("synchronous", as_str, "NORMAL").upper()
    if sync not in ("NORMAL", "FULL"):
        raise ConfigError(f"{path}: field 'lms.synchronous': expected NORMAL or FULL")
    state = f.get("state_dir", as_str, "")
    etcd = f.get("etcd", as_str, "") or None
    etcd_prefix = f.get("etcd_prefix", as_str, KEY_PREFIX)
    if etcd is not None and state:
        raise ConfigError(f"{path}: fields 'lms.state_dir' and 'lms.etcd': one store, not both")
    if etcd is not None and not etcd.startswith("http://"):
        raise ConfigError(f"{path}: field 'lms.etcd': expected http://HOST:PORT")
    if not etcd_prefix.startswith("/"):
        raise ConfigError(f"{path}: field 'lms.etcd_prefix': expected a key prefix like "
                          f"/dmanchor/lms/")
    workers = f.get("workers", as_int, 1)
    _check_workers(path, workers, etcd, node_id is not None)
    settings = LmsSettings(
        node_id=f.get("node_id", as_str, node_id, required=node_id is None),
        address=f.get("address", as_address, as_address("::1")),
        primary=f.get_list("primary", as_prefix),
        peers=f.get_list("peers", as_endpoint),
        authorization=sec.authorization,
        max_lifetime=f.get("max_lifetime", as_int, 86400),
        heartbeat_interval=f.get("heartbeat_interval", as_float, 1.0),
        dead_after=f.get("dead_after", as_float, 3.5),
        max_subscription_lifetime=f.get("max_subscription_lifetime", as_int, 3600),
        max_subscriptions=f.get("max_subscriptions", as_int, 100_000),
        accepts_members=workers == 1,
    )
    f.finish()
    if workers > 1 and settings.peers:
        raise ConfigError(f"{path}: field 'lms.workers': a pool member ('lms.peers') runs "
                          f"one worker (a peer's answers reach whichever worker its address "
                          f"hashes to, not the one that asked)")
    return LmDaemonConfig("lms", listen, sec, lms=settings,
                          state_dir=Path(state) if state else None,
                          synchronous=sync, etcd=etcd, etcd_prefix=etcd_prefix,
                          log_level=level, workers=workers)


def _check_workers(path: str, workers: int, etcd: str | None, in_node: bool) -> None:
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"{path}: field 'lms.workers': expected 1 to {MAX_WORKERS}")
    if workers > 1 and in_node:
        raise ConfigError(f"{path}: field 'lms.workers': only the dmanchor lms daemon runs "
                          f"workers (a node hosts its functions in one process)")
    if workers > 1 and etcd is None:
        raise ConfigError(f"{path}: field 'lms.workers': more than one needs 'lms.etcd' - "
                          f"each worker serves from memory and learns the others' updates "
                          f"from etcd's watch (SQLite has none)")


def log_events(core: LmsCore) -> None:
    """Drain an LMs core's upward events into the log (every host of an LMs
    must drain them: they accumulate otherwise, one per binding change)."""
    for ev in core.drain_events():
        if isinstance(ev, MemberDown):
            log.warning("pool member %s at %s is down", ev.node_id, ev.address)
        elif isinstance(ev, MemberUp):
            log.info("pool member %s at %s is up", ev.node_id, ev.address)
        elif isinstance(ev, JoinRefused):
            log.error("pool join refused by %s: %s", ev.address, ev.reason)
        else:
            log.debug("%s", ev)


def build_core(cfg: LmDaemonConfig, now: float, store: Store | None = None,
               security: Security | None = None) -> tuple[ServiceCore, Store | None]:
    """The core (and store) a config describes; an LMs on ``store`` if
    given (one that outlived its process: a restart in a simulation).
    ``security``: the SM state it shares with the other functions of its
    node (they sign with one key: its timestamps must never repeat);
    default, its own from ``cfg``."""
    endpoint = Endpoint(security=security if security is not None else cfg.security.build())
    if cfg.kind == "lmp":
        return LmpCore(cfg.upstream, endpoint, max_cache=cfg.lmp_cache[0],
                       max_cache_age=cfg.lmp_cache[1],
                       max_subscriptions=cfg.lmp_max_subscriptions), None
    assert cfg.lms is not None
    store = store if store is not None else _store(cfg)
    return LmsCore(cfg.lms, endpoint, store, now), store


def _store(cfg: LmDaemonConfig) -> Store:
    """The binding store an LMs config names."""
    assert cfg.lms is not None
    # Expiries are persisted as wall time: the monotonic clock the core
    # runs on restarts at each boot (and etcd's is shared by several hosts).
    if cfg.etcd is not None:
        writer = cfg.lms.node_id if cfg.worker is None else f"{cfg.lms.node_id}/{cfg.worker}"
        return EtcdStore(cfg.etcd, writer, key_prefix=cfg.etcd_prefix,
                         to_disk=clock.to_wall, from_disk=clock.from_wall)
    if cfg.state_dir is not None:
        return SqliteStore(cfg.state_dir, cfg.synchronous,
                           to_disk=clock.to_wall, from_disk=clock.from_wall)
    return MemoryStore()


class StoreWatch:
    """Feeds what other LMs write to a shared etcd store into this LMs's
    core, on the event loop (the watch itself runs in a thread)."""

    def __init__(self, core: LmsCore, store: EtcdStore, pump: Callable[[], None]) -> None:
        """``pump``: runs the core's driver after an input."""
        self.core = core
        self.store = store
        self.pump = pump
        self.loop = asyncio.get_running_loop()
        self.watch = EtcdWatch(store, store.revision + 1, self._from_thread,
                               self._resync_from_thread)

    def start(self) -> StoreWatch:
        self.watch.start()
        return self

    def stop(self) -> None:
        self.watch.stop()

    def _from_thread(self, changes: list[Change]) -> None:
        self.loop.call_soon_threadsafe(self._apply, changes)

    def _resync_from_thread(self) -> None:
        self.loop.call_soon_threadsafe(self._resync)

    def _apply(self, changes: list[Change]) -> None:
        news = self.store.news(changes)
        if news:
            self.core.stored_elsewhere([(c.prefix, c.binding) for c in news], clock.now())
            self.pump()

    def _resync(self) -> None:
        """etcd compacted past the watch: take every binding again."""
        try:
            stored = {b.prefix: b for b in self.store.load()}
        except StoreError as exc:
            log.error("reloading the bindings from etcd: %s", exc)
            return
        gone: list[tuple[Prefix, Binding | None]] = [
            (p, None) for p, _ in self.core.bindings.items() if p not in stored]
        changed: list[tuple[Prefix, Binding | None]] = [
            (p, b) for p, b in stored.items() if self.core.bindings.get(p) != b]
        self.core.stored_elsewhere(gone + changed, clock.now())
        self.pump()


async def serve(cfg: LmDaemonConfig, stop: asyncio.Event) -> None:
    """Run one daemon until ``stop`` is set."""
    cfg.security.warn(log)
    t0 = clock.now()
    core, store = build_core(cfg, t0)
    # Bindings loaded at start live as long as the process: move them out
    # of the collector's sight, and collect young objects less often, so a
    # large table does not cause GC pauses on the query path.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    if isinstance(core, LmsCore):
        log.info("%s: loaded %d bindings in %.2fs", cfg.lms.node_id if cfg.lms else "lms",
                 len(core.bindings), clock.now() - t0)

    def report() -> None:
        if isinstance(core, LmsCore):
            log_events(core)

    driver = UdpDriver(core, on_pump=report, batch=True)
    host, port = await driver.start(*cfg.listen, reuse_port=cfg.worker is not None)
    watch = (StoreWatch(core, store, driver.pump).start()
             if isinstance(core, LmsCore) and isinstance(store, EtcdStore) else None)
    print(f"ready {host} {port}", flush=True)
    name = cfg.kind if cfg.worker is None else f"{cfg.kind} worker {cfg.worker}"
    log.info("%s listening on [%s]:%d", name, host, port)
    try:
        await stop.wait()
    finally:
        if watch is not None:
            watch.stop()
        driver.close()
        if store is not None:
            store.close()
        log.info("%s stopped", name)


def main(kind: str, path: str, worker: int | None = None, port: int | None = None) -> int:
    """Entry point of ``dmanchor lms|lmp --config PATH``; ``worker`` and
    ``port``: run as worker ``worker`` of a supervisor, bound to ``port``
    (:mod:`.workers`)."""
    try:
        cfg = load_config(kind, path)
    except ConfigError as exc:
        print(f"dmanchor {kind}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if worker is not None:
        if not die_with_supervisor():
            return 1
        cfg = replace(cfg, worker=worker, listen=(cfg.listen[0], port or cfg.listen[1]))
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    status = 0

    async def run() -> None:
        nonlocal status
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if cfg.workers > 1 and cfg.worker is None:
            status = await Supervisor(path, cfg.workers, cfg.listen).run(stop)
        else:
            await serve(cfg, stop)

    try:
        asyncio.run(run())
    except (StoreError, OSError) as exc:
        print(f"dmanchor {kind}: {exc}", file=sys.stderr)
        return 1
    return status
