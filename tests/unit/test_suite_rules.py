"""The suite's own rule: under CI=true a skip is a failure that says why."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

def test_needs_a_tool() -> None:
    pytest.skip("tool xyz not installed")

def test_runs() -> None:
    assert True
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
         ci: str | None) -> pytest.RunResult:
    conftest = Path(__file__).resolve().parent.parent / "conftest.py"
    pytester.makeconftest(conftest.read_text())
    pytester.makepyfile(SKIPPING)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_inprocess("-rfs")


def test_a_skip_under_ci_fails_with_its_reason(pytester: pytest.Pytester,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(pytester, monkeypatch, "true")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*allows no skip*tool xyz not installed*"])


def test_a_skip_outside_ci_stays_a_skip(pytester: pytest.Pytester,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(pytester, monkeypatch, None)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*tool xyz not installed*"])
