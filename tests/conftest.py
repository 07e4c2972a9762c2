"""Suite-wide rules.

Under ``CI=true`` (CI sets it) nothing may be skipped: a skipped namespace
tier or a missing Debian package would let a run pass that checked far less
than it claims.  Every skip then becomes a failure that says why in one line.
Run locally (e.g. as non-root), skips stay skips with their reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest
from _pytest.reports import TestReport


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``): skips are failures there."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, TestReport, TestReport]:
    report = yield
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which allows no skip: {reason}"
    return report
