"""pytest settings for the whole suite.

A skipped test proves nothing, and a module that skips itself (a missing binary, a missing package) can make a
whole area look green. With QWEN_TEST_STRICT=1 (which `make test` sets) or CI set, every skip is a failure
naming its reason, so a test that cannot run is fixed rather than ignored. Without it (a developer running one
file by hand), skips stay skips.
"""
import os

import pytest

STRICT = os.environ.get("QWEN_TEST_STRICT") == "1" or bool(os.environ.get("CI"))


def _fail_skip(report):
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under QWEN_TEST_STRICT=1 (every test must run): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip(outcome.get_result())
