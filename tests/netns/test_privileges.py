"""Missing privileges give one clear line and a failure status, not a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _nobody_can_run_us() -> bool:
    """Whether an unprivileged user can even reach this checkout's Python."""
    if shutil.which("setpriv") is None:
        return False
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import dmanchor"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.skipif(not _nobody_can_run_us(),
                    reason="an unprivileged user cannot reach this checkout (directory modes)")
def test_node_without_privileges_says_so_in_one_line() -> None:
    d = Path(tempfile.mkdtemp())
    try:
        os.chmod(d, 0o755)
        cfg = d / "node.toml"
        cfg.write_text('[node]\nid = "x"\n[anchor]\nlisten = "[::1]:0"\n'
                       'dpa = "fc00::9:0"\nuplink = "::1"\n')
        cfg.chmod(0o644)
        out = subprocess.run(
            [*NOBODY, sys.executable, "-m", "dmanchor.cli", "node", "--config", str(cfg)],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmanchor node:"), out.stderr
    assert "needs root" in lines[0] or "Permission denied" in lines[0]
