"""An etcd v3 binding store, shared by several LMs.

Every LMs configured with the same etcd (``[lms] etcd = "http://..."``)
serves the same bindings: an update written through one is durable in etcd
(committed by its Raft quorum) before that LMs acknowledges it, and the
others learn it from an etcd **watch** - which drives their LM:1-3 pushes
to their own subscribers.  A watch that breaks resumes from the revision
after the last one it delivered, so no change is lost; one that etcd has
compacted past reloads every binding instead.  A restarted LMs loads them
all from etcd.

It speaks etcd's v3 JSON gateway (``/v3/kv/...``, ``/v3/watch``) with the
standard library: the store's calls are synchronous (durable on return,
as :class:`~.store.Store` requires) over one kept-alive connection; the
watch streams in a thread of its own and hands changes to the event loop.

Layout: one key per binding, ``<key_prefix><prefix>`` (e.g.
``/dmanchor/lms/2001:db8:1:1::/64``), whose value is JSON: forwarding
address ``a``, expiry ``e`` (wall-clock seconds, ``null`` = never), ``by``
(who updated it), ``mn``, ``f`` (flows) and ``w``, the LMs that wrote it
(its own writes are not news to it).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any
from urllib.parse import urlsplit

from ..wire.types import Prefix
from .store import Binding, StoreError

log = logging.getLogger("dmanchor.lm.etcd")

KEY_PREFIX = "/dmanchor/lms/"
"""Where the bindings live in etcd's key space, by default."""
TIMEOUT = 2.0
"""Seconds one etcd call may take before the store reports a failure."""


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _range_end(prefix: str) -> str:
    """The key just past every key starting with ``prefix`` (etcd's range)."""
    raw = prefix.encode()
    return _b64(raw[:-1] + bytes([raw[-1] + 1]))


class EtcdClient:
    """One kept-alive connection to etcd's JSON gateway (synchronous)."""

    def __init__(self, endpoint: str, timeout: float = TIMEOUT) -> None:
        """``endpoint``: ``http://host:port`` of an etcd client URL."""
        url = urlsplit(endpoint)
        if url.scheme != "http" or not url.hostname:
            raise StoreError(f"etcd endpoint {endpoint!r}: expected http://HOST:PORT")
        self.host = url.hostname
        self.port = url.port or 2379
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>``; the decoded answer.  A dropped
        keep-alive connection is opened again once; anything else is a
        :class:`StoreError`."""
        data = json.dumps(body)
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request("POST", f"/v3/{path}", data, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt:
                    raise StoreError(f"etcd {self.host}:{self.port}: {exc}") from exc
                continue
            if resp.status != 200:
                raise StoreError(f"etcd {path}: HTTP {resp.status}: {raw[:200]!r}")
            try:
                answer: dict[str, Any] = json.loads(raw)
            except ValueError as exc:
                raise StoreError(f"etcd {path}: not JSON: {raw[:200]!r}") from exc
            return answer
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        """Drop the connection (the next call opens another)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True, slots=True)
class Change:
    """One change another LMs made, as the watch saw it."""

    prefix: Prefix
    binding: Binding | None
    """The binding written; None: removed."""
    revision: int
    """etcd's revision of the change."""


class EtcdStore:
    """Bindings in etcd (see the module); a :class:`~.store.Store`."""

    def __init__(self, endpoint: str, writer: str, *, key_prefix: str = KEY_PREFIX,
                 to_disk: Callable[[float], float] | None = None,
                 from_disk: Callable[[float], float] | None = None,
                 timeout: float = TIMEOUT) -> None:
        """``writer``: this LMs's node id (marks its own writes);
        ``to_disk``/``from_disk``: expiry between the core's clock and the
        wall clock stored (shared by LMs on several hosts)."""
        if not key_prefix:
            raise StoreError("etcd key prefix must not be empty")
        self.endpoint = endpoint
        self.writer = writer
        self.key_prefix = key_prefix
        self._to_disk = to_disk or _same
        self._from_disk = from_disk or _same
        self.client = EtcdClient(endpoint, timeout)
        self.revision = 0
        """The store's revision as of the last load (a watch starts after it)."""
        self.unreadable = 0
        """Values under the key prefix this store could not read (skipped)."""
        self._revs: dict[Prefix, int] = {}  # prefix -> mod revision last seen

    # -- Encoding -------------------------------------------------------------------

    def _key(self, prefix: Prefix) -> str:
        return _b64(self.key_prefix + str(prefix))

    def _value(self, b: Binding) -> str:
        expires = None if b.expires == math.inf else self._to_disk(b.expires)
        return _b64(json.dumps({"a": str(b.forwarding_address), "e": expires,
                                "by": b.updated_by, "mn": b.mn, "f": b.flows,
                                "w": self.writer}, separators=(",", ":")))

    def decode(self, kv: dict[str, Any]) -> tuple[Prefix, Binding | None, str]:
        """A key-value of etcd's as (prefix, binding, writer); a value this
        store cannot read is a :class:`StoreError`."""
        try:
            key = _unb64(kv["key"]).decode()
            prefix = Prefix.parse(key[len(self.key_prefix):])
            if "value" not in kv:
                return prefix, None, ""
            doc = json.loads(_unb64(kv["value"]))
            e = doc["e"]
            expires = math.inf if e is None else self._from_disk(float(e))
            b = Binding(prefix, IPv6Address(doc["a"]), expires, str(doc.get("by", "")),
                        str(doc.get("mn", "")), int(doc.get("f", 0)))
            return prefix, b, str(doc.get("w", ""))
        except (KeyError, ValueError, TypeError) as exc:
            raise StoreError(f"etcd: unreadable binding {kv.get('key')!r}: {exc}") from exc

    # -- Store ------------------------------------------------------------------------

    def put(self, binding: Binding) -> None:
        ans = self.client.call("kv/put", {"key": self._key(binding.prefix),
                                          "value": self._value(binding)})
        self._revs[binding.prefix] = _revision(ans)

    def put_many(self, bindings: Iterable[Binding]) -> None:
        todo = list(bindings)
        if not todo:
            return
        ops = [{"request_put": {"key": self._key(b.prefix), "value": self._value(b)}}
               for b in todo]
        ans = self.client.call("kv/txn", {"success": ops})
        rev = _revision(ans)
        for b in todo:
            self._revs[b.prefix] = rev

    def delete(self, prefix: Prefix) -> None:
        ans = self.client.call("kv/deleterange", {"key": self._key(prefix)})
        # Kept until the watch echoes it: an older change still on its way
        # must not bring the binding back.
        self._revs[prefix] = _revision(ans)

    def expire(self, binding: Binding) -> bool:
        """Remove ``binding`` at its expiry only if no other LMs changed it
        since this one saw it: True when it is gone, False when the store
        holds a newer one (the watch brings it)."""
        key = self._key(binding.prefix)
        seen = self._revs.get(binding.prefix, 0)
        ans = self.client.call("kv/txn", {
            "compare": [{"key": key, "target": "MOD", "result": "EQUAL",
                         "mod_revision": str(seen)}],
            "success": [{"request_delete_range": {"key": key}}],
            "failure": [{"request_range": {"key": key}}],
        })
        if ans.get("succeeded"):
            self._revs.pop(binding.prefix, None)
            return True
        try:
            kvs = ans["responses"][0]["response_range"].get("kvs", [])
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise StoreError(f"etcd: unexpected answer {ans!r:.200}") from exc
        if not kvs:
            self._revs.pop(binding.prefix, None)
            return True  # removed already (by another LMs, at the same expiry)
        return False

    def load(self) -> Iterator[Binding]:
        ans = self.client.call("kv/range", {"key": _b64(self.key_prefix),
                                            "range_end": _range_end(self.key_prefix)})
        self.revision = _revision(ans)
        out = []
        self._revs.clear()
        for kv in ans.get("kvs", []):
            try:
                prefix, b, _ = self.decode(kv)
            except StoreError as exc:
                # Not ours to read (another writer's, or damaged): left in
                # etcd, counted, and the rest served.
                self.unreadable += 1
                log.error("%s", exc)
                continue
            if b is not None:
                out.append(b)
                self._revs[prefix] = int(kv["mod_revision"])
        return iter(out)

    def news(self, changes: Iterable[Change]) -> list[Change]:
        """Of the changes the watch delivered, those that are news to this
        LMs (not older than its own later write of the same prefix); later
        expiries compare against them."""
        out = []
        for c in changes:
            known = self._revs.get(c.prefix)
            if known is not None and c.revision < known:
                continue  # this LMs wrote the prefix since
            if c.binding is None:
                self._revs.pop(c.prefix, None)
            else:
                self._revs[c.prefix] = c.revision
            out.append(c)
        return out

    def close(self) -> None:
        self.client.close()


class EtcdWatch:
    """Streams the changes other LMs make to the store's bindings.

    Runs in a thread: ``deliver`` is called there with each batch of
    changes (the host hands them to its event loop), ``resync`` when etcd
    compacted past the revision to resume from (the host reloads).  A
    broken stream is opened again after ``retry`` seconds, from the
    revision after the last delivered.
    """

    def __init__(self, store: EtcdStore, start_revision: int,
                 deliver: Callable[[list[Change]], None], resync: Callable[[], None],
                 retry: float = 0.5) -> None:
        self.store = store
        self.next_revision = start_revision
        """The first revision not delivered yet."""
        self.deliver = deliver
        self.resync = resync
        self.retry = retry
        self.reconnects = 0
        self.unreadable = 0
        """Changes whose value could not be read (skipped)."""
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)

    def start(self) -> EtcdWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the stream and the thread (waits for it)."""
        self._stop.set()
        self.disconnect()
        self._thread.join(timeout=5)

    def disconnect(self) -> None:
        """Drop the stream now (it resumes from :attr:`next_revision`)."""
        with self._lock:
            # Only the socket is shut here: the watch's thread sees the
            # stream end and closes the connection itself.
            sock = self._conn.sock if self._conn is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._stream()
            except (OSError, http.client.HTTPException, ValueError, KeyError,
                    StoreError) as exc:
                if self._stop.is_set():
                    return
                log.warning("etcd watch from revision %d broke: %s", self.next_revision, exc)
            if self._stop.wait(self.retry):
                return
            self.reconnects += 1

    def _stream(self) -> None:
        c = self.store.client
        conn = http.client.HTTPConnection(c.host, c.port, timeout=None)
        with self._lock:
            self._conn = conn
        try:
            if not self._stop.is_set():
                self._read(conn)
        finally:
            with self._lock:
                self._conn = None
            conn.close()

    def _read(self, conn: http.client.HTTPConnection) -> None:
        key = self.store.key_prefix
        conn.request("POST", "/v3/watch", json.dumps({"create_request": {
            "key": _b64(key), "range_end": _range_end(key),
            "start_revision": str(self.next_revision)}}),
            {"Content-Type": "application/json"})
        if self._stop.is_set():
            return  # stopped while connecting (before there was a socket to shut)
        resp = conn.getresponse()
        if resp.status != 200:
            raise StoreError(f"etcd watch: HTTP {resp.status}")
        while not self._stop.is_set():
            line = resp.readline()
            if not line:
                raise StoreError("etcd watch: stream ended")
            result = json.loads(line).get("result", {})
            if int(result.get("compact_revision", 0) or 0) > 0:
                # Compacted past where we were: what changed is lost, all is reloaded.
                log.warning("etcd compacted past revision %d: reloading", self.next_revision)
                self.resync()
                self.next_revision = int(result["compact_revision"])
                raise StoreError("etcd watch: compacted, reloaded")
            changes = self._changes(result.get("events", []))
            if changes:
                self.deliver(changes)

    def _changes(self, events: list[dict[str, Any]]) -> list[Change]:
        out = []
        for ev in events:
            kv = ev["kv"]
            rev = int(kv["mod_revision"])
            self.next_revision = max(self.next_revision, rev + 1)
            try:
                prefix, b, writer = self.store.decode(kv)
            except StoreError as exc:
                self.unreadable += 1  # skipped, not retried: the stream goes on
                log.error("%s", exc)
                continue
            if ev.get("type") == "DELETE":
                out.append(Change(prefix, None, rev))
            elif writer != self.store.writer:
                out.append(Change(prefix, b, rev))
        return out


def _same(at: float) -> float:
    return at


def _revision(answer: dict[str, Any]) -> int:
    try:
        return int(answer["header"]["revision"])
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"etcd: no revision in {answer!r:.200}") from exc


def wait_ready(endpoint: str, timeout: float = 10.0) -> None:
    """Wait until etcd at ``endpoint`` answers (tests and tools)."""
    client = EtcdClient(endpoint, timeout=1.0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.call("kv/range", {"key": _b64("/")})
            client.close()
            return
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
