"""The controller's moves kept across a restart (#16: restart = reconcile)."""

from __future__ import annotations

from ipaddress import IPv6Address as A
from pathlib import Path

from dmanchor.nodeevents import load_moved, save_moved
from dmanchor.wire.types import Prefix

HNP1 = Prefix.parse("2001:db8:1:1::/64")


def test_moves_survive_a_restart_and_a_bad_file_is_no_crash(tmp_path: Path) -> None:
    path = tmp_path / "r.state.json"
    assert load_moved(path) == {}  # a first start
    save_moved(path, {HNP1: A("fc00::2:0")})
    assert load_moved(path) == {HNP1: A("fc00::2:0")}
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    for bad in ("", "{", '{"moved": {"2001:db8::1/64": "fc00::2:0"}}', '{"moved": 3}',
                '{"moved": {"2001:db8:1:1::/64": "not-an-address"}}', "[]"):
        path.write_text(bad)
        assert load_moved(path) == {}, bad
