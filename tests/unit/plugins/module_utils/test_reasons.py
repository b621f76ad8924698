"""One vocabulary of reason codes, and decisions that read nothing else."""

import pathlib
import re

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import reasons
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import failure_result, FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt

PLUGINS = pathlib.Path(reasons.__file__).resolve().parents[1]


def test_every_decision_set_and_step_default_is_in_the_vocabulary():
    used = set(reasons.STEP_REASONS.values()) | reasons.NOT_CONVERGED | reasons.RETRY_ONCE | \
        reasons.COLD_MOVE_AFTER | reasons.VM_LOST
    assert used <= set(reasons.REASONS)


@pytest.mark.parametrize("reason,restarted,action", [
    ("refused_at_start", False, "restart"), ("refused_at_start", True, "stop"),
    ("timeout", False, "escalate"), ("no_progress", True, "escalate"),
    ("migration_failed", False, "stop"), ("vm_crashed", False, "stop"), ("blocked", False, "stop"),
])
def test_decide_reads_the_code_only(reason, restarted, action):
    assert reasons.decide(reason, restarted) == action


def test_an_error_gets_its_reason_from_its_step_unless_it_has_its_own():
    assert FleetmaintError("x", step="validate options").reason == "invalid_option"
    assert FleetmaintError("x", step="preflight").reason == "blocked"
    assert FleetmaintError("x", step="precopy", reason="timeout").reason == "timeout"
    assert FleetmaintError("x", step="some new step").reason == "libvirt_error"
    assert FleetmaintError("x").reason == "unexpected"


def test_codes_raised_in_plugins_are_all_documented():
    raised = set()
    for f in PLUGINS.rglob("*.py"):
        raised |= set(re.findall(r"""reason=["']([a-z_]+)["']""", f.read_text()))
    assert raised and raised <= set(reasons.REASONS), raised - set(reasons.REASONS)


# A decision on a message looks like: "words" in exc.msg / not in msg / in ...["msg"] / in str(exc).
MSG_DECISION = re.compile(r"""["'][^"']+["']\s+(?:not\s+)?in\s+(?:\w+\.)*(?:msg|message|cause|error)\b|"""
                          r"""\bin\s+[\w"'.\[\]-]*\[["']msg["']\]|\bin\s+str\(exc\)|"""
                          # a field compared with a sentence (a literal with a space): a code has none
                          r"""\[["'](?:reason|msg|message)["']\]\s*[!=]=\s*["'][^"']*\s""")


def test_no_decision_in_plugins_reads_message_text():
    hits = []
    for f in PLUGINS.rglob("*.py"):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if MSG_DECISION.search(line):
                hits.append(f"{f.relative_to(PLUGINS)}:{n}: {line.strip()}")
    assert not hits, "decisions on message text:\n" + "\n".join(hits)


def test_the_scan_above_can_fail():
    # The decisions this vocabulary replaced (evacuation.run_moves and placement before reason codes).
    old = ['if "timeout" not in exc.msg:', 'x = "still runs on" in exc.msg',
           'if "timeout" in res["attempts"][-1]["msg"]:', 'if "busy" in str(exc):',
           'any(u["reason"] != "pinned to its host (passthrough device or explicit pin)" for u in x)']
    assert all(MSG_DECISION.search(line) for line in old)
    assert not MSG_DECISION.search('if exc.reason in NOT_CONVERGED:')


def test_one_failure_mapping_for_modules_and_action_plugins():
    partial = {"changed": True, "msg": "partial text is replaced", "metrics": {"a": 1}}
    out = failure_result(FleetmaintError("moved 1 of 2", step="evacuate", host="lab1", result=partial))
    assert out["failed"] and out["msg"] == "moved 1 of 2" and out["reason"] == "incomplete"
    assert out["changed"] is True and out["metrics"] == {"a": 1} and out["host"] == "lab1" and "result" not in out
    err = None
    try:
        libvirt.open("test:///default").lookupByName("no-such-vm")
    except libvirt.libvirtError as exc:
        err = exc
    out = failure_result(err)
    assert out["reason"] == "libvirt_error" and out["libvirt_code"] == libvirt.VIR_ERR_NO_DOMAIN
    assert out["msg"].startswith("libvirt error: ")
    assert failure_result(ValueError("boom"))["reason"] == "unexpected"
    # What the failed move did wins over the runner's default: a crashed VM is a change.
    crashed = FleetmaintError("x CRASHED", step="precopy", reason="vm_crashed", result={"changed": True})
    assert failure_result(crashed, changed=False)["changed"] is True
    assert failure_result(FleetmaintError("no", step="locate"), changed=False)["changed"] is False


def test_the_readme_lists_every_reason_code():
    readme = (PLUGINS.parent / "README.md").read_text()
    missing = [code for code in reasons.REASONS if f"| `{code}` |" not in readme]
    assert not missing, f"README's 'Reason codes' table lacks {missing}"


def test_every_step_a_failure_names_has_a_reason_code():
    # FleetmaintError(..., step="x") without reason= gets STEP_REASONS["x"]; an unknown step would fall back to
    # libvirt_error, which is for wrapped libvirt errors only.
    unknown = set()
    for f in PLUGINS.rglob("*.py"):
        unknown |= set(re.findall(r"""step=["']([^"']+)["']""", f.read_text())) - set(reasons.STEP_REASONS)
    assert not unknown, f"steps without a reason code: {sorted(unknown)}"
