"""The LMs' etcd store against a real etcd (Debian's etcd-server), started
by the tests: several LMs share it, watches drive their LM:1-3 pushes and
resume after a disconnect, and a restart loses nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from ipaddress import IPv6Address as A
from pathlib import Path

import pytest

from dmanchor.lm.client import LocationClient, LocationError
from dmanchor.lm.etcd import Change, EtcdStore, EtcdWatch
from dmanchor.lm.lmc import Location, Pushed
from dmanchor.lm.store import Binding
from dmanchor.wire.types import Cause, Prefix
from tests.helpers import wait_until
from tests.integration.conftest import Daemons, Etcd

pytestmark = pytest.mark.integration

P = Prefix.parse
HNP1, HNP2, HNP3 = P("2001:db8:1:1::/64"), P("2001:db8:1:2::/64"), P("2001:db8:2:1::/64")
DPA1, DPA2 = A("2001:db8:ff::1"), A("2001:db8:ff::2")


def lms_conf(name: str, etcd: Etcd) -> str:
    return f"""
[lms]
node_id = "{name}"
listen = "127.0.0.1:0"
etcd = "{etcd.endpoint}"
log_level = "info"
[security]
insecure = true
"""


async def served(client: LocationClient, prefix: Prefix) -> Location:
    """The binding of ``prefix`` once the LMs has it: an LMs learns another's
    write from its watch, a few ms later (a deadline, not a duration)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await client.query(prefix, use_cache=False)
        except LocationError as err:
            if err.cause is not Cause.UNKNOWN_PREFIX or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.01)


def test_lms_sharing_etcd_serve_and_push_each_others_bindings(daemons: Daemons,
                                                             etcd: Etcd) -> None:
    a = daemons.start("lms", "lms-a", lms_conf("lms-a", etcd))
    b = daemons.start("lms", "lms-b", lms_conf("lms-b", etcd))

    async def shared() -> None:
        via_a = await LocationClient.connect([("127.0.0.1", a.port)])
        via_b = await LocationClient.connect([("127.0.0.1", b.port)])
        try:
            await via_b.subscribe([P("2001:db8:1::/48")])
            assert await via_a.update(HNP1, DPA1, 600) == 600
            # LM:1-3 at B, driven by B's etcd watch of A's write.
            push = await asyncio.wait_for(via_b.pushes.get(), 10)
            assert (push.prefix, push.forwarding_address) == (HNP1, DPA1)
            assert (await via_b.query(HNP1, use_cache=False)).forwarding_address == DPA1
            await via_a.update(HNP1, DPA2, 600)
            push = await asyncio.wait_for(via_b.pushes.get(), 10)
            assert (push.prefix, push.forwarding_address) == (HNP1, DPA2)
            await via_a.update(HNP2, DPA1, 600)
            await asyncio.wait_for(via_b.pushes.get(), 10)
            await via_a.update(HNP2, DPA1, 0)  # deleted through A
            push = await asyncio.wait_for(via_b.pushes.get(), 10)
            assert push == Pushed(HNP2, DPA1, 0)
            with pytest.raises(LocationError) as err:
                await via_b.query(HNP2, use_cache=False)
            assert err.value.cause is Cause.UNKNOWN_PREFIX
            await via_b.update(HNP3, DPA2, 600)  # and the other way round
            assert (await served(via_a, HNP3)).forwarding_address == DPA2
        finally:
            via_a.close()
            via_b.close()

    asyncio.run(shared())
    # B crashes and comes back: it loads every binding from etcd.
    b.kill9()
    b2 = daemons.start("lms", "lms-b2", lms_conf("lms-b", etcd))
    # etcd itself crashes and comes back: the LMs' watches reconnect.
    etcd.kill9()
    etcd.start()

    async def after() -> None:
        via_a = await LocationClient.connect([("127.0.0.1", a.port)])
        via_b = await LocationClient.connect([("127.0.0.1", b2.port)])
        try:
            assert (await via_b.query(HNP1, use_cache=False)).forwarding_address == DPA2
            assert (await via_b.query(HNP3, use_cache=False)).forwarding_address == DPA2
            await via_b.subscribe([P("2001:db8:1::/48")])
            await via_a.update(HNP1, DPA1, 600)
            push = await asyncio.wait_for(via_b.pushes.get(), 15)
            assert (push.prefix, push.forwarding_address) == (HNP1, DPA1)
        finally:
            via_a.close()
            via_b.close()

    asyncio.run(after())


def binding(prefix: Prefix, address: A, expires: float = 1e12) -> Binding:
    return Binding(prefix, address, expires, "ar1", "", 0)


class Delivered:
    """What a watch delivered, in order (it runs in a thread)."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.resyncs = 0
        self._lock = threading.Lock()

    def __call__(self, changes: list[Change]) -> None:
        with self._lock:
            self.changes.extend(changes)

    def resync(self) -> None:
        self.resyncs += 1

    def seen(self) -> list[tuple[Prefix, A | None]]:
        with self._lock:
            return [(c.prefix, c.binding.forwarding_address if c.binding else None)
                    for c in self.changes]


def test_a_watch_resumes_from_its_revision_so_no_change_is_lost(etcd: Etcd) -> None:
    a = EtcdStore(etcd.endpoint, "lms-a")
    b = EtcdStore(etcd.endpoint, "lms-b")
    list(b.load())
    got = Delivered()
    watch = EtcdWatch(b, b.revision + 1, got, got.resync, retry=0.2).start()
    try:
        a.put(binding(HNP1, DPA1))
        wait_until(lambda: got.seen() == [(HNP1, DPA1)], 10, lambda: str(got.seen()))
        b.put(binding(HNP3, DPA1))  # B's own write: not news to B
        # The stream breaks; what A writes meanwhile still arrives, once.
        watch.disconnect()
        a.put(binding(HNP1, DPA2))
        a.put(binding(HNP2, DPA1))
        a.delete(HNP2)
        want = [(HNP1, DPA1), (HNP1, DPA2), (HNP2, DPA1), (HNP2, None)]
        wait_until(lambda: got.seen() == want, 10, lambda: str(got.seen()))
        assert watch.reconnects >= 1
    finally:
        watch.stop()
    # Stopped for good: a new watch from where it stopped gets the rest.
    resume = watch.next_revision
    a.put(binding(HNP2, DPA2))
    later = Delivered()
    again = EtcdWatch(b, resume, later, later.resync).start()
    try:
        wait_until(lambda: later.seen() == [(HNP2, DPA2)], 10, lambda: str(later.seen()))
    finally:
        again.stop()
    assert got.resyncs == later.resyncs == 0


def test_a_watch_from_a_compacted_revision_asks_for_a_reload(etcd: Etcd) -> None:
    a = EtcdStore(etcd.endpoint, "lms-a")
    for i in range(3):
        a.put(binding(HNP1, A(f"2001:db8:ff::{i + 1}")))
    list(a.load())
    a.client.call("kv/compaction", {"revision": str(a.revision)})
    got = Delivered()
    watch = EtcdWatch(EtcdStore(etcd.endpoint, "lms-b"), 2, got, got.resync, retry=0.2).start()
    try:
        wait_until(lambda: got.resyncs >= 1, 10, "a reload")
    finally:
        watch.stop()


def test_an_expiry_leaves_a_binding_another_lms_renewed(etcd: Etcd) -> None:
    """Both LMs expire a binding at the end of its lifetime; one that the
    other renewed meanwhile (its watch event not yet applied) stays."""
    a = EtcdStore(etcd.endpoint, "lms-a")
    b = EtcdStore(etcd.endpoint, "lms-b")
    old = binding(HNP1, DPA1, expires=100.0)
    a.put(old)
    assert list(b.load()) == [old]
    a.put(binding(HNP1, DPA1, expires=200.0))  # renewed through A
    assert b.expire(old) is False  # B knew the old one only
    assert [x.expires for x in a.load()] == [200.0]
    assert a.expire(binding(HNP1, DPA1, expires=200.0)) is True
    assert b.expire(old) is True  # gone already: nothing to keep
    assert list(b.load()) == []


def test_an_older_change_does_not_undo_a_newer_own_write(etcd: Etcd) -> None:
    """A watch event older than this LMs's own later write of the prefix is
    not news: applying it would bring back what this LMs replaced."""
    a = EtcdStore(etcd.endpoint, "lms-a")
    b = EtcdStore(etcd.endpoint, "lms-b")
    a.put(binding(HNP1, DPA1))
    list(b.load())
    stale = Change(HNP1, binding(HNP1, DPA2), b.revision)  # as if delivered late
    b.put(binding(HNP1, DPA1))
    assert b.news([stale]) == []
    fresh = Change(HNP1, binding(HNP1, DPA2), b.revision + 5)
    assert b.news([fresh]) == [fresh]


@pytest.mark.parametrize(("fields", "says"), [
    ('state_dir = "/tmp/x"\netcd = "http://127.0.0.1:2379"', "one store, not both"),
    ('etcd = "127.0.0.1:2379"', "expected http://HOST:PORT"),
    ('etcd = "http://127.0.0.1:2379"\netcd_prefix = "lms"', "expected a key prefix"),
])
def test_a_bad_etcd_config_is_one_clear_line(tmp_path: Path, fields: str, says: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[lms]\nnode_id = "x"\n{fields}\n[security]\ninsecure = true\n')
    out = subprocess.run([sys.executable, "-m", "dmanchor.cli", "lms", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_an_lms_whose_etcd_is_unreachable_says_so(tmp_path: Path) -> None:
    """No etcd at the address: the daemon stops with one clear line (it
    cannot load the bindings), not a traceback."""
    from tests.integration.conftest import free_port

    cfg = tmp_path / "lms.toml"
    cfg.write_text(f'[lms]\nnode_id = "x"\nlisten = "127.0.0.1:0"\n'
                   f'etcd = "http://127.0.0.1:{free_port()}"\n[security]\ninsecure = true\n')
    out = subprocess.run([sys.executable, "-m", "dmanchor.cli", "lms", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "etcd 127.0.0.1" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_damaged_value_is_skipped_and_counted_not_fatal(etcd: Etcd) -> None:
    """Something under the key prefix this store cannot read: a start loads
    the rest, a watch delivers the changes after it."""
    from base64 import b64encode

    a = EtcdStore(etcd.endpoint, "lms-a")
    b = EtcdStore(etcd.endpoint, "lms-b")
    a.put(binding(HNP1, DPA1))
    list(b.load())
    got = Delivered()
    watch = EtcdWatch(b, b.revision + 1, got, got.resync, retry=0.2).start()
    try:
        a.client.call("kv/put", {"key": b64encode(b"/dmanchor/lms/2001:db8:1:9::/64").decode(),
                                 "value": b64encode(b"not json").decode()})
        a.put(binding(HNP2, DPA2))
        wait_until(lambda: got.seen() == [(HNP2, DPA2)], 10, lambda: str(got.seen()))
        assert watch.unreadable == 1 and watch.reconnects == 0
    finally:
        watch.stop()
    c = EtcdStore(etcd.endpoint, "lms-c")
    assert {x.prefix for x in c.load()} == {HNP1, HNP2} and c.unreadable == 1
