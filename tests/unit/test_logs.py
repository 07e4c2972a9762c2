"""Node logs as JSON lines (dmanchor.logs)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from dmanchor.logs import JsonFormatter, function_of
from dmanchor.wire.types import Prefix


def record(name: str, msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, msg, args, None,
                                            extra=extra)
    return rec


def test_a_line_carries_node_function_mn_prefix_and_label() -> None:
    fmt = JsonFormatter("ar1")
    p = Prefix.parse("2001:db8:1:1::/64")
    line = json.loads(fmt.format(record("dmanchor.access.links", "MN %s detached", "m1",
                                        mn="02:00:00:00:00:01", prefix=[p], label="FM:6-1")))
    assert line["node"] == "ar1" and line["function"] == "access"
    assert line["msg"] == "MN m1 detached" and line["level"] == "info"
    assert (line["mn"], line["prefix"], line["label"]) == (
        "02:00:00:00:00:01", ["2001:db8:1:1::/64"], "FM:6-1")
    assert line["t"].endswith("Z")
    plain = json.loads(fmt.format(record("dmanchor.node", "ready")))
    assert plain["function"] == "node" and "mn" not in plain and "label" not in plain
    # A call site may name the function itself (a node hosts several).
    assert json.loads(fmt.format(record("dmanchor.node", "x", function="controller")))[
        "function"] == "controller"


def test_the_function_is_the_longest_matching_logger_prefix() -> None:
    assert function_of("dmanchor.lm.daemon") == "lms"
    assert function_of("dmanchor.dataplane.linux") == "dataplane"
    assert function_of("dmanchorx") == "dmanchorx"
    assert function_of("other") == "other"


@pytest.mark.parametrize("field, value, message", [
    ("log_format", "xml", "field 'node.log_format': expected text or json"),
    ("log_level", "loud", "field 'node.log_level': expected debug"),
])
def test_a_wrong_log_setting_is_a_clear_error(tmp_path: Path, field: str, value: str,
                                              message: str) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(f'[node]\nid = "core"\n{field} = "{value}"\n[security]\ninsecure = true\n'
                    f'[lms]\nlisten = "127.0.0.1:0"\nstate_dir = "{tmp_path / "s"}"\n')
    done = subprocess.run([sys.executable, "-m", "dmanchor.cli", "node", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_a_node_started_with_json_logs_writes_only_json_lines(tmp_path: Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(f'[node]\nid = "core"\n[security]\ninsecure = true\n'
                    f'[lms]\nlisten = "127.0.0.1:0"\nstate_dir = "{tmp_path / "s"}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "dmanchor.cli", "node", "--config", str(conf),
                             "--log-format", "json", "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        while (line := proc.stdout.readline()) and line.strip() != "ready":
            pass
        assert line.strip() == "ready"
    finally:
        proc.terminate()  # by PID: our own child
        _, err = proc.communicate(timeout=30)
    lines = [json.loads(x) for x in err.splitlines() if x.strip()]
    assert lines and all(x["node"] == "core" for x in lines)
    # (An insecure node says so, loudly: the one line this node has to say.)
    assert any(x["level"] == "warning" and "insecure" in x["msg"] for x in lines), lines
