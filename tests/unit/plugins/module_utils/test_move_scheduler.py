import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import host_jobs as hj
from ansible_collections.fleetmaint.libvirt.plugins.module_utils import move_scheduler as ev
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError


def params(**kw):
    p = {k: v.get("default") for k, v in hj.EVACUATE_SPEC.items()}
    p.update(uris=["test:///default"], host="x")
    p.update(kw)
    return p


def test_escalation_is_mildest_first_and_bounded():
    steps = ev.escalation_steps(params(allow_postcopy=True, allow_suspend=True, max_attempts=4))
    assert [s["why"] for s in steps] == ["pre-copy with the downtime ladder", "auto-converge (vCPU throttling)",
                                         "post-copy after the timeout", "pause the guest to finish"]
    assert steps[1]["auto_converge"] and steps[2]["postcopy"] == "after_timeout"
    assert all(s["timeout"] == 300 for s in steps)
    assert len(ev.escalation_steps(params(allow_postcopy=True, allow_suspend=True, max_attempts=2))) == 2


def test_defaults_never_risk_postcopy():
    steps = ev.escalation_steps(params())
    assert all(s["postcopy"] == "never" and s["timeout_action"] == "abort" for s in steps)
    assert len(steps) == 2  # ladder, then auto-converge


def test_run_moves_with_nothing_to_do():
    out = ev.run_moves([], {}, dict(params(), limits={"per_source": 1, "per_destination": 1, "fleet": 1}))
    assert out["totals"]["moved"] == 0 and out["vms"] == [] and out["stopped"] is None


def _start_failure():
    return FleetmaintError("migrating web1 from hv1 to hv2 failed during precopy: Unable to create tap device "
                           "vnet3: Device or resource busy; it still runs on hv1", step="precopy",
                           reason="refused_at_start", result={"metrics": {"source": "none"}})


@pytest.mark.parametrize("failures,result,oks", [
    (1, "moved", [False, True]),     # refused at the start once: the same attempt again, then it moves
    (2, "failed", [False, False]),   # refused twice: failed, not retried forever
])
def test_a_move_refused_before_any_data_moved_is_restarted_once(monkeypatch, failures, result, oks):
    calls = []

    def fake_migrate(args, progress=None):
        calls.append(args["name"])
        if len(calls) <= failures:
            raise _start_failure()
        return {"changed": True, "msg": "migrated", "metrics": {"source": "destination_completed_job"}}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    monkeypatch.setattr(ev.time, "sleep", lambda _s: None)
    out = ev.run_moves([{"vm": "web1", "source": "hv1", "destination": "hv2"}], {"hv1": "u1", "hv2": "u2"},
                       dict(params(max_attempts=1), limits={"per_source": 1, "per_destination": 1, "fleet": 1}))
    vm = out["vms"][0]
    assert vm["result"] == result and [a["ok"] for a in vm["attempts"]] == oks
    assert len({a["why"] for a in vm["attempts"]}) == 1, "a restart is not an escalation"


def _run_two(monkeypatch, reason, msg_of, allow_cold_move=True):
    """Run moves of two VMs whose every live attempt fails the same way; cold moves are recorded."""
    calls, cold = [], []

    def fake_migrate(args, progress=None):
        calls.append(args["name"])
        raise FleetmaintError(msg_of(args["name"]), step="precopy", reason=reason,
                              result={"metrics": {"source": "source_last_sample"}})

    def fake_cold_move(vm, src, dest, p):
        cold.append(vm)
        return {"msg": f"cold-moved {vm}", "downtime_s": 1.0}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    monkeypatch.setattr(ev, "cold_move", fake_cold_move)
    monkeypatch.setattr(ev.time, "sleep", lambda _s: None)
    moves = [{"vm": n, "source": "hv1", "destination": "hv2"} for n in ("timeout-svc", "web1")]
    limits = {"per_source": 2, "per_destination": 2, "fleet": 2}
    out = ev.run_moves(moves, {"hv1": "u1", "hv2": "u2"}, dict(params(allow_cold_move=allow_cold_move), limits=limits))
    return out, calls, cold


def test_a_vm_name_never_changes_what_is_done_to_it(monkeypatch):
    # An ordinary libvirt failure whose text says "timeout" (in the VM's name and in the message) is not a timeout.
    out, calls, cold = _run_two(monkeypatch, "migration_failed",
                                lambda n: f"migrating {n} from hv1 to hv2 failed during precopy: operation failed: "
                                          f"job 'migration out' failed, no progress or timeout here; it still runs on hv1")
    assert sorted(calls) == ["timeout-svc", "web1"], "each VM tried once, none retried"
    assert cold == [], "nothing cold-moved: the guest would have been shut down for a non-timeout failure"
    for vm in out["vms"]:
        assert vm["result"] == "failed" and vm["reason"] == "migration_failed" and len(vm["attempts"]) == 1


def test_a_real_timeout_escalates_then_cold_moves_whatever_the_message_says(monkeypatch):
    out, calls, cold = _run_two(monkeypatch, "timeout", lambda n: f"{n} did not make it")
    steps = len(ev.escalation_steps(params()))
    assert sorted(calls) == sorted(["timeout-svc", "web1"] * steps), "every escalation step tried"
    assert sorted(cold) == ["timeout-svc", "web1"]
    assert all(vm["result"] == "cold_moved" for vm in out["vms"])


def test_no_progress_escalates_and_a_lost_vm_is_never_retried(monkeypatch):
    _out, calls, cold = _run_two(monkeypatch, "no_progress", lambda n: "x", allow_cold_move=False)
    assert len(calls) == 2 * len(ev.escalation_steps(params())) and cold == []
    out, calls, cold = _run_two(monkeypatch, "vm_crashed", lambda n: "x")
    assert len(calls) == 2 and cold == [] and {v["reason"] for v in out["vms"]} == {"vm_crashed"}


def test_one_placement_aggregation():
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import placement_of
    where = placement_of([("hv1", "a", True, True), ("hv2", "a", False, True), ("hv2", "b", True, False)])
    assert where == {"a": {"running_on": ["hv1"], "defined_on": ["hv1", "hv2"]},
                     "b": {"running_on": ["hv2"], "defined_on": []}}
