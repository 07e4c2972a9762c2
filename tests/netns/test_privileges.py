"""Missing privileges give one clear line and a failure status, not a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dmanchor.config import key_toml, new_key
from dmanchor.wire.auth import Role

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NO_CAPS = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]
"""Root without a single capability: what is left where ``nobody`` cannot
even reach the checkout (a clone under a 0700 directory, as CI makes)."""


def _unprivileged() -> list[str]:
    """How to run this checkout's Python without privileges."""
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import dmanchor"],
                           capture_output=True, timeout=60)
    return NOBODY if probe.returncode == 0 else NO_CAPS


def test_node_without_privileges_says_so_in_one_line() -> None:
    as_user = _unprivileged()
    d = Path(tempfile.mkdtemp())
    try:
        os.chmod(d, 0o755)
        cfg = d / "node.toml"
        cfg.write_text('[node]\nid = "x"\n[security]\nsend_key = 1\n'
                       + key_toml(new_key(1, "x", frozenset({Role.ANCHOR})))
                       + '[anchor]\nlisten = "[::1]:0"\n'
                       'dpa = "fc00::9:0"\nuplink = "::1"\n')
        cfg.chmod(0o644)
        out = subprocess.run(
            [*as_user, sys.executable, "-m", "dmanchor.cli", "node", "--config", str(cfg)],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmanchor node:"), out.stderr
    assert any(why in lines[0] for why in
               ("needs root", "Permission denied", "Operation not permitted")), lines[0]
