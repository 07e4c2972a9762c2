"""The command line: decode, encode, messages, config errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dmanchor.cli import main
from tests.vectors.make_vectors import KEY_ID, SECRET

VECTOR = json.loads((Path(__file__).parent.parent / "vectors" / "location_update.json").read_text())


def test_decode_hex_prints_the_vector_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", VECTOR["hex"]]) == 0
    assert json.loads(capsys.readouterr().out) == VECTOR["json"]


def test_decode_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "msg.bin"
    f.write_bytes(bytes.fromhex(VECTOR["signed_hex"]))
    assert main(["decode", "--file", str(f)]) == 0
    assert json.loads(capsys.readouterr().out) == VECTOR["signed_json"]


def test_encode_from_json_and_sign(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encode", json.dumps(VECTOR["json"])]) == 0
    assert capsys.readouterr().out.strip() == VECTOR["hex"]
    ts = VECTOR["signed_json"]["auth"]["timestamp_us"]
    assert main(["encode", json.dumps(VECTOR["json"]), "--key-id", str(KEY_ID),
                 "--secret-hex", SECRET.hex(), "--timestamp-us", str(ts),
                 "--receiver", VECTOR["receiver"]]) == 0
    assert capsys.readouterr().out.strip() == VECTOR["signed_hex"]


@pytest.mark.parametrize("arg", ["zz", "0102", VECTOR["hex"][:-2]])
def test_decode_bad_input_is_a_clear_error(arg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", arg]) != 0
    err = capsys.readouterr().err
    assert err.startswith("dmanchor decode:") and len(err.strip().splitlines()) == 1


def test_encode_bad_json_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encode", '{"type": "NOPE"}']) == 1
    assert "unknown type" in capsys.readouterr().err


def test_messages_lists_every_label(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["messages"]) == 0
    out = capsys.readouterr().out
    for label in ("LM:1-1", "LM:2-3", "FM:4-4", "FM:5-1", "FM:6-2"):
        assert label in out


def test_lms_config_errors_name_the_field(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    lab = '[security]\ninsecure = true\n'
    key = ('[[security.keys]]\nid = 3\nowner = "x"\nsecret_hex = "' + "ab" * 32 + '"\n')
    cases = {
        "a.toml": ('[lms]\nnode_id = "x"\nprimary = ["2001:db8::1/64"]\n' + lab,
                   "lms.primary[0]"),
        "b.yaml": ("lms:\n  node_id: x\n  max_lifetime: soon\nsecurity:\n  insecure: true\n",
                   "lms.max_lifetime"),
        "c.toml": ('[lms]\nnode_id = "x"\ntypo = 1\n' + lab, "lms.typo"),
        "d.toml": ('[lms]\nlisten = "::1:5400"\n' + lab, "lms.node_id"),
        "e.toml": ('[lms]\nnode_id = "x"\n[security]\nsend_key = 3\n', "security.send_key"),
        # Secure by default: no keys and not insecure is refused ...
        "f.toml": ('[lms]\nnode_id = "x"\n', "security.send_key"),
        # ... and so is a key that says nothing of what its owner may do.
        "g.toml": ('[lms]\nnode_id = "x"\n[security]\nsend_key = 3\n' + key,
                   "security.keys.roles"),
        "h.toml": ('[lms]\nnode_id = "x"\n[security]\nsend_key = 3\n' + key +
                   'roles = ["lms", "boss"]\n', "security.keys.roles[1]"),
        # Workers learn each other's updates from etcd's watch: no etcd, no
        # workers; a pool member's answers would reach the wrong worker.
        "i.toml": ('[lms]\nnode_id = "x"\nworkers = 2\n' + lab, "lms.workers"),
        "j.toml": ('[lms]\nnode_id = "x"\nworkers = 0\n' + lab, "lms.workers"),
        "k.toml": ('[lms]\nnode_id = "x"\nworkers = 2\netcd = "http://127.0.0.1:1"\n'
                   'peers = ["127.0.0.1:5401"]\n' + lab, "lms.workers"),
    }
    for name, (text, field) in cases.items():
        f = tmp_path / name
        f.write_text(text)
        assert main(["lms", "--config", str(f)]) == 2
        err = capsys.readouterr().err
        assert f"field '{field}'" in err, (name, err)
    assert main(["lms", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_node_pd_and_kea_config_errors_name_the_field(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    anchor = ('[node]\nid = "ar1"\n[security]\ninsecure = true\n[anchor]\n'
              'listen = "[::1]:5400"\ndpa = "fc00::1:0"\nuplink = "fd00:1::1"\n')
    ctrl = '[node]\nid = "r"\n[security]\ninsecure = true\n[controller]\nlisten = "[::1]:5400"\n'
    cases = {
        "a.toml": (anchor + '[anchor.pd]\nduid = "0003"\n', "anchor.pd.link"),
        "b.toml": (anchor + '[anchor.pd]\nlink = "dhcp0"\nduid = "xyz"\n', "anchor.pd.duid"),
        "c.toml": (anchor + '[anchor.pd]\nlink = "dhcp0"\npatience = "long"\n',
                   "anchor.pd.patience"),
        "d.toml": (ctrl + '[controller.kea]\nsubnet_id = 1\n', "controller.kea.socket"),
        "e.toml": (ctrl + '[controller.kea]\nsocket = "/k"\n[controller.kea.duids]\n'
                   '"fc00::2:0" = "zz"\n', "controller.kea.duids.fc00::2:0"),
        "f.toml": (ctrl + 'lms_pool = ["[::1]:5402"]\n', "controller.lms_pool"),
        "g.toml": (ctrl + 'lms = "[::1]:5401"\nlms_check = 0\n', "controller.lms_check"),
        "h.toml": (ctrl + 'leases = "dhcp"\n', "controller.leases"),
        "i.toml": (ctrl + 'leases = "kea"\n', "controller.leases"),
        "j.toml": (ctrl + 'leases = "routers"\n[controller.kea]\nsocket = "/k"\n',
                   "controller.leases"),
        # A node hosts its functions in one process: no LMs workers there.
        "k.toml": ('[node]\nid = "l"\n[security]\ninsecure = true\n[lms]\n'
                   'etcd = "http://127.0.0.1:1"\nworkers = 2\n', "lms.workers"),
    }
    for name, (text, field) in cases.items():
        f = tmp_path / name
        f.write_text(text)
        assert main(["node", "--config", str(f)]) == 2
        err = capsys.readouterr().err
        assert f"field '{field}'" in err, (name, err)


def test_a_controller_is_given_its_lms_pool(tmp_path: Path) -> None:
    """``controller.lms_pool`` and ``lms_check`` reach its settings."""
    from dmanchor.nodeconf import load_node_config

    f = tmp_path / "r.toml"
    f.write_text('[node]\nid = "r"\n[security]\ninsecure = true\n[controller]\n'
                 'listen = "[::1]:5400"\nlms = "[fd00:1::1]:5401"\n'
                 'lms_pool = ["[fd00:2::2]:5401"]\nlms_check = 1.5\n')
    cfg = load_node_config(f)
    assert cfg.controller is not None
    s = cfg.controller[1]
    assert (s.lms, s.lms_pool, s.lms_check) == (("fd00:1::1", 5401), (("fd00:2::2", 5401),),
                                                1.5)


def test_who_moves_leases_reaches_the_controller(tmp_path: Path) -> None:
    """``controller.leases``: none by default, the routers when said, Kea
    with ``[controller.kea]``."""
    from dmanchor.fm.controller_lease import LeaseMoves
    from dmanchor.nodeconf import load_node_config

    head = '[node]\nid = "r"\n[security]\ninsecure = true\n[controller]\nlisten = "[::1]:5400"\n'
    for extra, want in (("", LeaseMoves.NONE), ('leases = "routers"\n', LeaseMoves.ROUTERS),
                        ('[controller.kea]\nsocket = "/k"\n', LeaseMoves.KEA)):
        f = tmp_path / "r.toml"
        f.write_text(head + extra)
        cfg = load_node_config(f)
        assert cfg.controller is not None
        assert cfg.controller[1].leases is want, extra


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_run_shows_a_progress_bar_and_a_short_one_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``dmanchor sim``/``sweep``: a bar (rich) on a terminal once a run has
    taken 2 s; before that, or off a terminal, nothing."""
    from dmanchor.cli import _Bar

    err = _Tty()
    monkeypatch.setattr("sys.stderr", err)
    quick = _Bar("sim", 10, "virtual s")
    quick.update(5, "7 handovers")  # within 2 s: nothing
    quick.close()
    assert err.getvalue() == ""
    slow = _Bar("sim", 10, "virtual s")
    slow._start -= 3  # it has run for 3 s
    slow.update(5, "7 handovers")
    slow.update(10, "9 handovers")
    slow.close()
    shown = err.getvalue()
    assert "sim" in shown and "10 of 10 virtual s" in shown and "9 handovers" in shown
    off = io.StringIO()  # not a terminal
    monkeypatch.setattr("sys.stderr", off)
    piped = _Bar("sim", 10, "virtual s")
    piped._start -= 3
    piped.update(5)
    piped.close()
    assert off.getvalue() == ""
