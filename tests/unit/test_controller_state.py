"""The controller's moves and registrations kept across a restart (#16:
restart = reconcile)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv6Address as A
from pathlib import Path

from dmanchor.fm.controller import Registration
from dmanchor.nodeevents import load_state, save_state
from dmanchor.wire.types import Prefix

HNP1 = Prefix.parse("2001:db8:1:1::/64")
AR1_NET = Prefix.parse("2001:db8:1::/48")


def test_moves_survive_a_restart_and_a_bad_file_is_no_crash(tmp_path: Path) -> None:
    path = tmp_path / "r.state.json"
    assert load_state(path) == ({}, {}, {})  # a first start
    reg = Registration("ar1", A("fc00::1:0"), A("fd00:2::2"), 123.0)
    hnp9 = Prefix.parse("2001:db8:1:9::/64")
    save_state(path, {HNP1: A("fc00::2:0")}, {AR1_NET: reg}, {hnp9: A("fc00::3:0")})
    assert load_state(path) == ({HNP1: A("fc00::2:0")},
                                {AR1_NET: replace(reg, expires=0.0)},  # expiry not kept
                                {hnp9: A("fc00::3:0")})
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    for bad in ("", "{", '{"moved": {"2001:db8::1/64": "fc00::2:0"}}', '{"moved": 3}',
                '{"moved": {"2001:db8:1:1::/64": "not-an-address"}}', "[]",
                '{"moved": {}, "registered": {"2001:db8:1::/48": ["ar1"]}}'):
        path.write_text(bad)
        assert load_state(path) == ({}, {}, {}), bad


def test_a_restarted_controller_answers_discovery_from_the_kept_registry() -> None:
    """FM:4-3 right after a restart: HNP1's anchor is known before it
    refreshes its registration (which may be half a lifetime away) - the
    new router's claim was refused UNKNOWN_PREFIX for up to 300 s before."""
    from dmanchor.fm.controller import ControllerCore, ControllerSettings

    reg = Registration("ar1", A("fc00::1:0"), A("fd00:2::2"), 0.0)
    settings = ControllerSettings()
    fresh = ControllerCore(settings, now=50.0)
    assert fresh.discover(HNP1, 50.0) is None
    back = ControllerCore(settings, now=50.0, registered={AR1_NET: reg})
    found = back.discover(HNP1, 50.0)
    assert found is not None and (found.node_id, found.dpa) == ("ar1", A("fc00::1:0"))
    # Believed for one registration lifetime unless refreshed.
    assert back.discover(HNP1, 50.0 + settings.max_registration + 1) is None


def test_the_host_is_told_to_keep_the_registry_when_it_changes_not_at_refreshes() -> None:
    from dmanchor.fm.controller import AnchorRegistered
    from tests.unit.test_fm import world

    w = world("tunnel", lifetime=4)
    w.net.run(until=0.5)
    first = [e for e in w.ctrl.drain_events() if isinstance(e, AnchorRegistered)]
    assert len(first) == 2  # AR1 and AR2 registered
    w.net.run(until=5.0)  # both refreshed (every lifetime / 2)
    assert w.ctrl.counters["registered"] >= 4
    assert not [e for e in w.ctrl.drain_events() if isinstance(e, AnchorRegistered)]
