"""``report.html`` renders in a real browser: headless Chromium (Debian
``chromium``) opens the page of a kept run, takes a screenshot, and logs no
console error (issue 18 item 3)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dmanchor.scenario import page
from tests.unit.test_page import kept_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium (Debian package) is not installed")
def test_the_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    import matplotlib.image

    run = tmp_path / "run"
    run.mkdir()
    html = page.write(kept_run(run))
    shot = tmp_path / "shot.png"
    assert CHROMIUM is not None
    # (--no-sandbox: the tests run as root, where Chromium refuses its sandbox.)
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1200,1600", f"--screenshot={shot}", html.as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)
    # Not a blank page: text, table rules, the diagram and the plot vary it.
    assert pixels.shape[0] >= 1000 and float(pixels.std()) > 0.02
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
