"""``dmanchor lms`` with ``workers = N``: N processes serving one UDP port.

Why: one Python process is one CPU at most (``bench/lm.py``: about 65k
queries/s).  An LMs that must answer more runs several worker processes,
each a whole LMs daemon bound to the same address with ``SO_REUSEPORT``.

How the work is shared: the kernel hands each datagram to one worker by a
hash of its addresses and ports, so a client socket always reaches the same
worker - its retransmissions find that worker's reply cache, and the
acknowledgements of the pushes (LM:1-3) a worker sends reach that worker.
Each worker serves its bindings from memory and writes them to etcd under
a writer name of its own (``node_id/index``); through etcd's watch every
worker applies the others' updates, as LMs sharing an etcd do.  So an
update acknowledged by one worker is served by the others after the watch
delivers it (``bench/lm.py`` measures it: ``served_by_the_other_after_ms``);
a client asking the worker it updated, or after the watch, sees its own
update.

What it rules out (refused when the config is read): another store
(SQLite has no watch: a worker would never see another's updates), and a
pool (``peers``; a peer's answers to one worker's relays reach whichever
worker the peer's address hashes to; joins are refused UNSUPPORTED).

Failures: the supervisor - the process the operator starts, which serves
nothing itself - restarts a worker that exits, with a backoff that grows
while the worker keeps failing.  The restarted worker loads every binding
from etcd; the subscriptions the old one held are gone until their
subscribers refresh them, and the kernel's hash now maps some clients to
other workers (their duplicate requests are served again, not answered
from a cache: every LMs request is idempotent).  Workers exit when the
supervisor dies, even by ``kill -9`` (``PR_SET_PDEATHSIG``); the supervisor
stops them all on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from ..transport.reliable import Addr

log = logging.getLogger("dmanchor.lm")

START_TIMEOUT = 30.0
"""Seconds a worker may take to load its bindings and listen."""
STOP_TIMEOUT = 10.0
"""Seconds a worker may take to stop after SIGTERM before it is killed."""
BACKOFF = (0.5, 30.0)
"""First and longest wait before restarting a worker that exited."""
STABLE_AFTER = 60.0
"""A worker that ran this long before exiting is restarted after the
first wait again, not a longer one."""
SUPERVISOR_ENV = "DMANCHOR_LMS_SUPERVISOR"
"""The environment variable that tells a worker its supervisor's PID."""

_PR_SET_PDEATHSIG = 1


class WorkerFailed(Exception):
    """A worker exited or fell silent before it listened."""


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0


class Supervisor:
    """Runs and restarts the workers of one LMs config."""

    def __init__(self, config_path: str | Path, workers: int, listen: Addr) -> None:
        """``listen``: the configured bind address (port 0: the first
        worker picks one, the others bind the same)."""
        self.config_path = str(config_path)
        self.listen = listen
        self.workers = [_Worker(i) for i in range(workers)]

    async def run(self, stop: asyncio.Event) -> int:
        """Start every worker, print ``ready HOST PORT``, keep them running
        until ``stop`` is set; returns the process exit status."""
        try:
            host, port = await self._spawn(self.workers[0], self.listen[1])
            for w in self.workers[1:]:
                await self._spawn(w, port)
        except WorkerFailed as exc:
            log.error("%s", exc)
            await self._stop_all()
            return 1
        print(f"ready {host} {port}", flush=True)
        log.info("lms: %d workers listening on [%s]:%d", len(self.workers), host, port)
        keepers = [asyncio.create_task(self._keep(w, port, stop)) for w in self.workers]
        await stop.wait()
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        await self._stop_all()
        return 0

    async def _spawn(self, w: _Worker, port: int) -> Addr:
        env = dict(os.environ, **{SUPERVISOR_ENV: str(os.getpid())})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dmanchor.cli", "lms", "--config", self.config_path,
            "--worker", str(w.index), "--port", str(port),
            stdout=asyncio.subprocess.PIPE, env=env)
        w.proc = proc
        w.started = asyncio.get_running_loop().time()
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            line = b""
        words = line.decode(errors="replace").split()
        if len(words) != 3 or words[0] != "ready":
            await _stop(proc)
            raise WorkerFailed(f"lms worker {w.index} did not start (exit status "
                               f"{proc.returncode}; its errors are logged above)")
        return words[1], int(words[2])

    async def _keep(self, w: _Worker, port: int, stop: asyncio.Event) -> None:
        """Restart ``w`` whenever it exits, until ``stop``."""
        loop = asyncio.get_running_loop()
        wait = BACKOFF[0]
        while True:
            assert w.proc is not None
            status = await w.proc.wait()
            if stop.is_set():
                return
            if loop.time() - w.started >= STABLE_AFTER:
                wait = BACKOFF[0]
            log.error("lms worker %d exited (status %s); restarting it in %.1f s",
                      w.index, status, wait)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                    return
                wait = min(wait * 2, BACKOFF[1])
                try:
                    await self._spawn(w, port)
                except WorkerFailed as exc:
                    log.error("%s; retrying in %.1f s", exc, wait)
                    continue
                w.restarts += 1
                break

    async def _stop_all(self) -> None:
        await asyncio.gather(*(_stop(w.proc) for w in self.workers if w.proc is not None))


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM ``proc``, and SIGKILL it if it does not exit in time."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def die_with_supervisor() -> bool:
    """In a worker: be sent SIGTERM when the supervisor exits, however it
    exits; False if it already has (the worker must not start)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return True  # not Linux-like: the supervisor still stops us on SIGTERM
    expected = os.environ.get(SUPERVISOR_ENV)
    return expected is None or os.getppid() == int(expected)
