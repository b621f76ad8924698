"""The reliability suite: every fault scenario of brief section 5 on a lab of its own, each judged by the
same invariant checker (tests/lab/invariants.py), and a table at the end: scenario, result, checks passed.

Its lab has its own state directory, addresses (127.0.0.52-54) and bridge, so it never meets the
integration tests' lab; it reuses their Lab helper.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LAB_TESTS = HERE.parent / "lab"
os.environ.setdefault("FLEETMAINT_TEST_LAB_DIR", "/var/tmp/fleetmaint-lab-rel")
os.environ.setdefault("FLEETMAINT_TEST_LAB_ADDR", "127.0.0.52")
os.environ.setdefault("FLEETMAINT_TEST_LAB_BRIDGE", "br-labrel")
sys.path.insert(0, str(LAB_TESTS))  # invariants.py

_spec = importlib.util.spec_from_file_location("labkit", LAB_TESTS / "conftest.py")
labkit = importlib.util.module_from_spec(_spec)
sys.modules["labkit"] = labkit
_spec.loader.exec_module(labkit)
lab = labkit.lab  # the session fixture: brings the lab up, and down at the end
lab_restored_after_failure = labkit.lab_restored_after_failure  # autouse: a failed scenario's lab is restored

ROWS: list = []
TABLE = Path(os.environ.get("FLEETMAINT_RELIABILITY_TABLE", HERE.parents[1] / ".build" / "reliability.md"))


class Scenario:
    def __init__(self, name: str) -> None:
        self.name = name
        self.checks: list = []
        self.result = "not run"

    def judge(self, checks: list) -> None:
        """Record invariant checks; the test fails if any did not pass."""
        self.checks += checks
        bad = [f"{n}: {d}" for n, ok, d in checks if not ok]
        assert not bad, "invariants broken:\n  " + "\n  ".join(bad)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep


@pytest.fixture
def scenario(request):
    s = Scenario(request.node.callspec.id if hasattr(request.node, "callspec") else request.node.name)
    doc = (request.node.function.__doc__ or "").strip().splitlines()
    s.name = f"{request.node.name.removeprefix('test_')}" + (f" - {doc[0]}" if doc else "")
    yield s
    rep = getattr(request.node, "rep_call", None)
    s.result = "pass" if rep is not None and rep.passed else "FAIL"
    if rep is not None and rep.failed:
        s.result += ": " + str(rep.longrepr).strip().splitlines()[-1][:120]
    ROWS.append(s)


def pytest_terminal_summary(terminalreporter):
    labkit.pytest_terminal_summary(terminalreporter)  # the playbook logs of failed scenarios
    if not ROWS:
        return
    lines = ["| scenario | result | invariant checks passed |", "|---|---|---|"]
    for s in ROWS:
        passed = sum(1 for _n, ok, _d in s.checks if ok)
        lines.append(f"| {s.name} | {s.result} | {passed}/{len(s.checks)} |")
    text = "\n".join(lines) + "\n"
    terminalreporter.write_sep("=", "reliability suite")
    terminalreporter.write(text)
    try:
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        TABLE.write_text("# Reliability suite\n\n" + text)
        terminalreporter.write(f"(also in {TABLE})\n")
    except OSError:
        pass
