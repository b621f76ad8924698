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
                                         "post-copy after the first pass", "pause the guest to finish"]
    assert steps[1]["auto_converge"] and steps[2]["postcopy"] == "after_first_pass"
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

    def fake_migrate(args, progress=None, cancel=None):
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

    def fake_migrate(args, progress=None, cancel=None):
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


def test_a_move_starts_at_the_method_chosen_for_it():
    p = params(allow_postcopy=True, max_attempts=2)
    assert [s["method"] for s in ev.escalation_steps(p, "postcopy")] == ["postcopy"]
    assert [s["method"] for s in ev.escalation_steps(p, "auto_converge")] == ["auto_converge", "postcopy"]
    assert [s["method"] for s in ev.escalation_steps(p, None)] == ["precopy", "auto_converge"]


def test_xbzrle_allowed_is_the_step_after_plain_precopy_and_only_it_compresses():
    p = params(allow_xbzrle=True, allow_postcopy=True, max_attempts=4)
    steps = ev.escalation_steps(p, None, 256 * 1048576)
    assert [s["method"] for s in steps] == ["precopy", "xbzrle", "auto_converge", "postcopy"]
    assert steps[1]["compression"] == "xbzrle" and steps[1]["xbzrle_cache_bytes"] == 256 * 1048576
    assert steps[1]["why"] == "pre-copy with XBZRLE (256 MiB cache)"
    assert all("compression" not in s for s in steps if s["method"] != "xbzrle")
    assert [s["method"] for s in ev.escalation_steps(p, "xbzrle", 1 << 28)][:2] == ["xbzrle", "auto_converge"]
    # Not allowed (the default), or a compression the job applies to every move: no XBZRLE step.
    assert "xbzrle" not in [s["method"] for s in ev.escalation_steps(params(), None)]
    assert "xbzrle" not in [s["method"] for s in ev.escalation_steps(params(allow_xbzrle=True, compression="zstd"))]


def test_allow_xbzrle_with_a_jobwide_compression_is_refused_before_anything_moves():
    with pytest.raises(FleetmaintError, match="allow_xbzrle .* cannot be combined with compression=mt"):
        hj._limits(params(allow_xbzrle=True, compression="mt"))
    hj._limits(params(allow_xbzrle=True))


def _method(name="precopy", exclusive=False, time_s=1.0):
    return {"method": name, "exclusive": exclusive, "why": f"{name} (test)", "refused": False,
            "predicted": {"time_s": time_s, "downtime_ms": 10, "converges": True}}


def test_an_exclusive_move_has_its_link_alone_and_the_others_say_they_wait(monkeypatch):
    """hot needs lab1's link to itself: nothing else leaves lab1 while it runs, and the waiting move says why."""
    import threading
    running, overlap, lock = set(), [], threading.Lock()
    seen_args = {}

    def fake_migrate(args, progress=None, cancel=None):
        with lock:
            running.add(args["name"])
            overlap.append(set(running))
            seen_args[args["name"]] = args
        ev.time.sleep(0.3)
        with lock:
            running.discard(args["name"])
        metrics = {"total_time_ms": 300, "data_processed": 30 * 1048576, "downtime_ms": 12, "setup_time_ms": 0}
        return {"changed": True, "msg": "migrated", "metrics": metrics}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": "hot", "source": "lab1", "destination": "lab2", "method": _method("auto_converge", True, 2.0)},
             {"vm": "q1", "source": "lab1", "destination": "lab3", "method": _method()},
             {"vm": "q2", "source": "lab1", "destination": "lab2", "method": _method()}]
    events = []
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2", "lab3": "u3"},
                       dict(params(), limits={"per_source": 2, "per_destination": 2, "fleet": 4}),
                       progress=events.append, share={"lab1": 2})
    assert out["totals"]["moved"] == 3
    assert all(s == {"hot"} for s in overlap if "hot" in s), overlap
    assert {"q1", "q2"} in overlap, "the two quiet moves share the link once hot is done"
    waits = [e for e in events if e.get("kind") == "waiting"]
    assert {e["vm"] for e in waits} == {"q1", "q2"} and all("hot has it to itself" in e["why"] for e in waits)
    assert seen_args["hot"]["auto_converge"] is True, "the chosen method is the first attempt"
    res = {r["vm"]: r for r in out["vms"]}
    assert res["hot"]["method"] == "auto_converge" and res["hot"]["predicted"]["time_s"] == 2.0
    assert res["q1"]["measured"] == {"time_s": 0.3, "downtime_ms": 12, "time_vs_predicted": 0.3}
    # Each move measured lab1's link: 30 MiB in 0.3 s, times the moves that shared it when it ended.
    assert out["links"]["lab1"]["given"] is False and out["links"]["lab1"]["measured_mib_s"] >= 100


def _counting_migrate(monkeypatch, seconds):
    """Each move takes ``seconds``; the list it returns holds the most moves that ran at once."""
    import threading
    running, peak, lock = [0], [0], threading.Lock()

    def fake_migrate(args, progress=None, cancel=None):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        ev.time.sleep(seconds)
        with lock:
            running[0] -= 1
        return {"changed": True, "msg": "migrated", "metrics": {}}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    return peak


def test_the_share_chosen_for_a_link_caps_the_moves_on_it(monkeypatch):
    peak = _counting_migrate(monkeypatch, 0.1)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": f"lab{2 + i % 2}", "method": _method()}
             for i in range(4)]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2", "lab3": "u3"},
                       dict(params(), limits={"per_source": 4, "per_destination": 4, "fleet": 4}), share={"lab1": 1})
    assert out["totals"]["moved"] == 4 and peak[0] == 1


@pytest.mark.parametrize("conns,compression,first,peak", [
    (None, "none", "precopy", 2),   # one connection a move: two moves share the link
    (2, "none", "precopy", 1),      # two connections a move: one move fills a share of 2
    (None, "zstd", "precopy", 1),   # multifd compression: its 2 default connections
    (2, "none", "xbzrle", 2),       # a move chosen to start with XBZRLE (allowed) runs without the parallel ones
])
def test_a_move_counts_as_its_connections_on_its_link(monkeypatch, conns, compression, first, peak):
    top = _counting_migrate(monkeypatch, 0.2)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": f"lab{2 + i % 2}", "method": _method(first)}
             for i in range(3)]
    said = []
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2", "lab3": "u3"},
                       dict(params(parallel_connections=conns, compression=compression, allow_xbzrle=first == "xbzrle"),
                            limits={"per_source": 4, "per_destination": 4, "fleet": 4}),
                       progress=said.append, share={"lab1": 2})
    assert out["totals"]["moved"] == 3 and top[0] == peak
    waits = [e["why"] for e in said if e.get("kind") == "waiting"]
    if peak == 1:
        assert "lab1's link: 1 move(s) with 2 connection(s) on it, and this move's 2 would make more than the 2 " \
               "chosen for it" in waits[0], waits
    else:
        assert all("connection" not in w for w in waits), waits


def _sent_50_mib_in_1_s(args, progress=None, cancel=None):
    """A move that sent 50 MiB in 1 s, in two passes."""
    metrics = {"total_time_ms": 1000, "data_processed": 50 << 20, "disk_processed": 0, "setup_time_ms": 0,
               "iterations": 2}
    return {"changed": True, "msg": "migrated", "metrics": metrics}


def test_waiting_moves_are_predicted_again_from_what_the_finished_ones_sent(monkeypatch):
    """v0 sent half the memory its profile said was in use: v1, dispatched after it, is predicted with that."""
    asked = []

    def predict(m, link_bps, scale):
        asked.append((m["vm"], link_bps, scale))
        return {"time_s": 9.9, "downtime_ms": 1, "converges": True}

    monkeypatch.setattr(ev, "migrate", _sent_50_mib_in_1_s)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": "lab2", "method": _method(),
              "profile": {"in_use_mib": 100}} for i in range(2)]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 1, "per_destination": 1, "fleet": 1}), predict=predict)
    assert asked == [("v1", 50 << 20, 0.5)], "the link (50 MiB in 1 s, alone) and the scale, for v1 only"
    v1 = out["vms"][1]["predicted"]
    assert v1["in_use_scale"] == 0.5 and v1["from_measured_link"] is True and v1["time_s"] == 9.9
    assert out["calibration"] == {"moves": 2, "sent_vs_profile": [0.5, 0.5]}


def _two_moves_after(monkeypatch, note):
    """Two moves one after another out of lab1, each sending 50 MiB in 1 s, with ``note`` remembered on lab1:
    the links each was predicted at, (vm, bytes/s), and the run's result."""
    asked = []

    def predict(m, link_bps, scale):
        asked.append((m["vm"], link_bps))
        return {"time_s": 9.9, "downtime_ms": 1, "converges": True}

    monkeypatch.setattr(ev, "migrate", _sent_50_mib_in_1_s)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": "lab2", "method": _method(),
              "profile": {"in_use_mib": 100}} for i in range(2)]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 1, "per_destination": 1, "fleet": 1}), predict=predict,
                       remembered={"lab1": note})
    return asked, out


def test_a_link_an_earlier_job_measured_is_used_until_this_job_measures_it(monkeypatch):
    """v0 is predicted at the link remembered on lab1 (300 MiB/s); it measures 50 MiB/s, and v1 is predicted at that:
    the job's own measurement replaces the remembered one, which the result still shows."""
    note = {"mib_s": 300.0, "at": 1, "moves": 4, "by": "restore lab1", "age_s": 60}
    asked, out = _two_moves_after(monkeypatch, note)
    assert asked == [("v0", 300 << 20), ("v1", 50 << 20)]
    v0, v1 = (r["predicted"] for r in out["vms"])
    assert v0["from_remembered_link"] is True and v0["from_measured_link"] is False
    assert v1["from_measured_link"] is True and v1["from_remembered_link"] is False
    assert out["links"]["lab1"] == {"given": False, "measured_mib_s": 50.0, "first_mib_s": 50.0, "samples": 2,
                                    "remembered": note}


def test_a_given_link_wins_over_a_remembered_one(monkeypatch):
    monkeypatch.setattr(ev, "migrate", lambda args, progress=None, cancel=None: {
        "changed": True, "msg": "migrated", "metrics": {"total_time_ms": 1000, "data_processed": 50 << 20}})
    asked = []
    out = ev.run_moves([{"vm": "v0", "source": "lab1", "destination": "lab2", "method": _method()}],
                       {"lab1": "u1", "lab2": "u2"},
                       dict(params(), link_bandwidth={"lab1": 24}, limits={"per_source": 1, "per_destination": 1, "fleet": 1}),
                       predict=lambda m, link_bps, scale: asked.append(link_bps) or {"time_s": 1},
                       remembered={"lab1": {"mib_s": 300.0, "at": 1}})
    assert asked == [] and out["links"]["lab1"] == {"given": True, "mib_s": 24}


def test_a_link_is_what_its_moves_typically_measured_not_the_fastest(monkeypatch):
    """Four moves one after another (alone on lab1's link) measure 50, then 50, 200 and 50 MiB/s: the link is 50,
    the median of the later three; the fastest (200) predicted a CPU-bound link's next moves at 0.6-0.7 of their
    time on the lab."""
    rate = {"v0": 50, "v1": 50, "v2": 200, "v3": 50}

    def fake_migrate(args, progress=None, cancel=None):
        metrics = {"total_time_ms": 1000, "data_processed": rate[args["name"]] << 20, "setup_time_ms": 0}
        return {"changed": True, "msg": "migrated", "metrics": metrics}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": "lab2", "method": _method()} for i in range(4)]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 1, "per_destination": 1, "fleet": 1}))
    assert out["links"]["lab1"] == {"given": False, "measured_mib_s": 50.0, "first_mib_s": 50.0, "samples": 4}


def test_a_links_first_moves_are_predicted_from_what_an_earlier_jobs_first_moves_measured(monkeypatch):
    """lab1 kept 300 MiB/s for its later moves and 100 for its first: v0, the job's first move, is predicted at
    100; it measures 50 MiB/s, so v1 is predicted at 150 (50 times the 3 the earlier job's later moves ran
    faster); v1 measures 50 MiB/s, and the link is 50 for the moves after it, 50 for its first moves."""
    note = {"mib_s": 300.0, "first_mib_s": 100.0, "at": 1, "moves": 4, "by": "restore lab1", "age_s": 60}
    asked, out = _two_moves_after(monkeypatch, note)
    assert asked == [("v0", 100 << 20), ("v1", 150 << 20)]
    assert out["links"]["lab1"] == {"given": False, "measured_mib_s": 50.0, "first_mib_s": 50.0, "samples": 2,
                                    "remembered": note}


def test_a_move_measures_its_link_times_the_moves_it_shared_it_with_on_average(monkeypatch):
    """Both start at once; short sends 20 MiB in 0.2 s beside long, then long sends alone until 1.0 s (100 MiB):
    long shared the link with 1.2 moves on average (itself included), not 2 (the most it ever shared it with).
    The link measured: short 100 MiB/s x 2, long 100 MiB/s x 1.2; their median, 160 (the old count: 200)."""
    secs = {"short": 0.2, "long": 1.0}

    def fake_migrate(args, progress=None, cancel=None):
        ev.time.sleep(secs[args["name"]])
        metrics = {"total_time_ms": secs[args["name"]] * 1000, "setup_time_ms": 0,
                   "data_processed": int(100 * secs[args["name"]]) << 20}
        return {"changed": True, "msg": "migrated", "metrics": metrics}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": vm, "source": "lab1", "destination": "lab2", "method": _method()} for vm in secs]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 2, "per_destination": 2, "fleet": 2}), share={"lab1": 2})
    link = out["links"]["lab1"]
    assert link["samples"] == 2 and 145 <= link["measured_mib_s"] <= 175, link


@pytest.mark.parametrize("dirty_mib_s, iterations, counted", [
    (0, 5, [0.5]),  # quiet: however many passes, it sent its memory once
    (10, 2, [0.4]),  # dirtied 10 MiB in its second: 40 of its 50 MiB were its memory in use
    (20, 2, []),  # re-sent 40 % of its bytes: not counted
    (None, 2, [0.5]),  # no measured rate: a move of a few passes counts
    (None, 5, []),
])
def test_what_a_move_sent_of_its_memory_in_use_leaves_out_what_its_guest_dirtied(
        monkeypatch, dirty_mib_s, iterations, counted):
    def fake_migrate(args, progress=None, cancel=None):
        metrics = {"total_time_ms": 1000, "data_processed": 50 << 20, "disk_processed": 0, "setup_time_ms": 0,
                   "iterations": iterations}
        return {"changed": True, "msg": "migrated", "metrics": metrics}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": "v0", "source": "lab1", "destination": "lab2", "method": _method(),
              "profile": {"in_use_mib": 100, "dirty_mib_s": dirty_mib_s}}]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 1, "per_destination": 1, "fleet": 1}))
    assert out["calibration"] == {"moves": len(counted), "sent_vs_profile": counted}


def test_later_moves_are_predicted_with_the_setup_and_switch_over_the_finished_ones_took(monkeypatch):
    """v0's bytes were predicted to pause 10 ms; it paused 250 ms and QEMU's setup took 40 ms: v1 and v2,
    dispatched after it, are predicted with those costs (medians), beside what the model of bytes says."""
    downtimes = iter([250, 350, 300])

    def fake_migrate(args, progress=None, cancel=None):
        metrics = {"total_time_ms": 1300, "data_processed": 50 << 20, "disk_processed": 0, "setup_time_ms": 40,
                   "downtime_ms": next(downtimes), "iterations": 2}
        return {"changed": True, "msg": "migrated", "metrics": metrics}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": "lab2", "method": _method()} for i in range(3)]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 1, "per_destination": 1, "fleet": 1}))
    v0, v1, v2 = (v["predicted"] for v in out["vms"])
    assert v0 == {"time_s": 1.0, "downtime_ms": 10, "converges": True}, "the first move: its bytes alone"
    assert v1["time_s"] == 1.28 and v1["downtime_ms"] == 250 and v1["setup_ms"] == 40 and v1["switchover_ms"] == 240
    assert v1["model_time_s"] == 1.0 and v1["model_downtime_ms"] == 10
    # v1 paused 350 ms against its model's 10: the switch-over is the median of 240 and 340 (the upper one).
    assert v2["switchover_ms"] == 340 and v2["downtime_ms"] == 350
    assert out["vms"][1]["measured"]["time_vs_predicted"] == round(1.3 / 1.28, 2)


def test_each_move_keeps_its_history_with_wall_clock_times(monkeypatch):
    """The scheduler's steps in ``log``, each attempt's job events and samples, when the move and the job ran."""
    def fake_migrate(args, progress=None, cancel=None):
        out = {"started_at": 1000.0, "ended_at": 1002.0, "events": [{"t": 0.0, "event": "start"}],
               "samples": [{"t": 1.0, "phase": "precopy"}]}
        if args["auto_converge"]:
            return dict(out, changed=True, msg="migrated", metrics={"postcopy_used": False})
        raise FleetmaintError("not converging", step="precopy", reason="not_converging", result=out)

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    seen = []
    out = ev.run_moves([{"vm": "web1", "source": "hv1", "destination": "hv2", "method": _method()}],
                       {"hv1": "u1", "hv2": "u2"},
                       dict(params(max_attempts=2), limits={"per_source": 1, "per_destination": 1, "fleet": 1}),
                       progress=seen.append)
    vm = out["vms"][0]
    assert vm["result"] == "moved"
    assert [e["kind"] for e in vm["log"]] == ["dispatch", "attempt", "attempt_failed", "attempt", "moved"]
    assert [e["kind"] for e in seen] == [e["kind"] for e in vm["log"]], "what the log keeps is what was shown"
    assert all(isinstance(e["ts"], float) and "vm" not in e for e in vm["log"])
    first, second = vm["attempts"]
    assert (first["ok"], first["mode"], first["reason"], second["ok"], second["mode"]) == (
        False, "precopy", "not_converging", True, "auto_converge")
    assert first["events"] == [{"t": 0.0, "event": "start"}] and second["samples"] == [{"t": 1.0, "phase": "precopy"}]
    assert first["started_at"] == 1000.0 and vm["started_at"] <= vm["ended_at"]
    assert out["started_at"] <= vm["started_at"] and vm["ended_at"] <= out["ended_at"]


def test_a_cancel_aborts_the_moves_in_flight_and_starts_no_other(monkeypatch):
    """web1 moves, web2 is in pre-copy when the cancel comes (its job aborts it), web3 never starts."""
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import (
        RUNNING, CancelFlag, cancel_running, clear_signalled)
    started = []

    def fake_migrate(args, progress=None, cancel=None):
        started.append(args["name"])
        if args["name"] == "web1":
            return {"changed": True, "msg": "migrated", "metrics": {}}
        cancel_running("SIGTERM to the controller")  # as the signal handler does, while web2 is in flight
        assert cancel.event.wait(5)
        raise FleetmaintError(f"migrating {args['name']} failed during precopy: the job was cancelled; it still runs "
                              "on hv1", step="precopy", reason="cancelled", result={})

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    counts = []
    flag = CancelFlag()
    try:
        with flag:
            out = ev.run_moves([{"vm": v, "source": "hv1", "destination": "hv2"} for v in ("web1", "web2", "web3")],
                               {"hv1": "u1", "hv2": "u2"},
                               dict(params(max_attempts=3, allow_cold_move=True),
                                    limits={"per_source": 1, "per_destination": 1, "fleet": 1}),
                               cancel=flag, on_counts=counts.append)
    finally:
        clear_signalled()  # as the action plugin does when the signalled task ends
    assert flag not in RUNNING
    assert started == ["web1", "web2"], "no new move, no escalation, no cold move after the cancel"
    res = {v["vm"]: (v["result"], v.get("reason")) for v in out["vms"]}
    assert res == {"web1": ("moved", None), "web2": ("failed", "cancelled"), "web3": ("not_started", "cancelled")}
    assert out["cancelled"] and out["stopped"] == "cancelled (SIGTERM to the controller)"
    assert counts[0] == {"moved": 1, "failed": 0, "running": 0, "waiting": 2}
    assert counts[-1] == {"moved": 1, "failed": 1, "running": 0, "waiting": 1}


def test_a_signal_before_the_job_watches_still_stops_it():
    """SIGTERM while the job still connects or plans: the flag it takes up afterwards is set at once."""
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import CancelFlag, cancel_running, clear_signalled
    try:
        assert cancel_running("SIGTERM to the controller") == 0
        with CancelFlag() as flag:
            assert flag.is_set() and flag.why == "SIGTERM to the controller"
    finally:
        clear_signalled()
    with CancelFlag() as later:
        assert not later.is_set(), "the next task starts unsignalled"


def test_a_move_whose_data_is_sent_gives_its_link_to_the_next_while_libvirt_finishes_it(monkeypatch):
    """Share 1, limits 2: v1 starts as soon as v0's job says 'transferred', while v0 is still finishing; never
    two transferring at once, never more moves than the limit."""
    import threading
    lock = threading.Lock()
    state = {"transferring": 0, "peak_transferring": 0, "running": 0, "peak_running": 0}
    order = []

    def fake_migrate(args, progress=None, cancel=None):
        with lock:
            state["running"] += 1
            state["transferring"] += 1
            state["peak_running"] = max(state["peak_running"], state["running"])
            state["peak_transferring"] = max(state["peak_transferring"], state["transferring"])
            order.append(("start", args["name"]))
        ev.time.sleep(0.3)
        with lock:
            state["transferring"] -= 1
            order.append(("transferred", args["name"]))
        progress({"kind": "event", "event": "transferred", "vm": args["name"], "t": 0.3})
        ev.time.sleep(0.6)  # libvirt's last step: the guest resumed on the destination, the source confirms
        with lock:
            state["running"] -= 1
        metrics = {"total_time_ms": 300, "data_processed": 30 << 20, "setup_time_ms": 0}
        return {"changed": True, "msg": "migrated", "metrics": metrics}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": "lab2", "method": _method()} for i in range(3)]
    events = []
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 2, "per_destination": 2, "fleet": 4}),
                       progress=events.append, share={"lab1": 1})
    assert out["totals"]["moved"] == 3
    assert state["peak_transferring"] == 1, "the link's share holds while data moves"
    assert state["peak_running"] == 2, "v1 overlapped v0's last step; the limit of 2 held"
    assert order.index(("start", "v1")) == order.index(("transferred", "v0")) + 1
    assert any(e.get("event") == "transferred" for e in events), "the move's events are passed on"
    starts = {r["vm"]: r["started_at"] for r in out["vms"]}
    ends = {r["vm"]: r["ended_at"] for r in out["vms"]}
    assert starts["v1"] < ends["v0"] and starts["v2"] < ends["v1"]


def test_a_later_attempt_waits_for_room_on_the_link_again(monkeypatch):
    """v0's first attempt ends (its job gave the link up) and fails; its second attempt waits while v1 holds the
    link (share 1), and then runs: never two transferring at once."""
    import threading
    lock = threading.Lock()
    state = {"transferring": 0, "peak": 0}
    calls = []

    def fake_migrate(args, progress=None, cancel=None):
        with lock:
            state["transferring"] += 1
            state["peak"] = max(state["peak"], state["transferring"])
            calls.append(args["name"])
            first = calls.count("v0") == 1 and args["name"] == "v0"
        ev.time.sleep(0.2)
        with lock:
            state["transferring"] -= 1
        progress({"kind": "event", "event": "transferred", "vm": args["name"], "t": 0.2})
        if first:
            raise FleetmaintError("v0: not converging", step="precopy", reason="not_converging",
                                  result={"metrics": {"source": "source_last_sample"}})
        ev.time.sleep(0.2)
        return {"changed": True, "msg": "migrated", "metrics": {}}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": "lab2", "method": _method()} for i in range(2)]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 2, "per_destination": 2, "fleet": 4}), share={"lab1": 1})
    assert out["totals"]["moved"] == 2 and calls.count("v0") == 2
    assert state["peak"] == 1, "the second attempt waited for the link"


def test_a_move_about_to_finish_hands_its_link_to_the_next_which_sets_up_meanwhile(monkeypatch):
    """Share 1: v0 has about 0.01 s left to send when the job's moves take about 0.1 s to their first byte, so v1
    is dispatched before v0's data is all sent; an exclusive move never hands over early."""
    import threading
    lock = threading.Lock()
    log = []

    def fake_migrate(args, progress=None, cancel=None):
        vm = args["name"]
        ev.time.sleep(0.1)  # QEMU starting on the destination: no byte yet
        progress({"kind": "progress", "vm": vm, "data_processed": 1 << 20, "data_remaining": 100 << 20,
                  "memory_bps": 10 << 20})
        ev.time.sleep(0.2)
        progress({"kind": "progress", "vm": vm, "data_processed": 99 << 20, "data_remaining": 100 << 10,
                  "memory_bps": 10 << 20})
        ev.time.sleep(0.3)  # the last bytes
        with lock:
            log.append(("transferred", vm))
        progress({"kind": "event", "event": "transferred", "vm": vm, "t": 0.6})
        return {"changed": True, "msg": "migrated", "metrics": {}}

    def dispatched(e):
        if e.get("kind") in ("dispatch", "handover"):
            with lock:
                log.append((e["kind"], e["vm"]))

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": "v0", "source": "lab1", "destination": "lab2", "method": _method(time_s=9)},
             {"vm": "v1", "source": "lab1", "destination": "lab2", "method": _method(time_s=1)}]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 2, "per_destination": 2, "fleet": 4}),
                       progress=dispatched, share={"lab1": 1})
    assert out["totals"]["moved"] == 2
    assert log.index(("handover", "v0")) < log.index(("dispatch", "v1")) < log.index(("transferred", "v0")), log
    said = [e for e in out["vms"][0]["log"] if e["kind"] == "handover"]
    assert len(said) == 1 and "a next move takes about 0.1 s" in said[0]["why"]

    log.clear()
    moves = [{"vm": "hot", "source": "lab1", "destination": "lab2", "method": _method("auto_converge", True, 9)},
             {"vm": "v1", "source": "lab1", "destination": "lab2", "method": _method(time_s=1)}]
    ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                 dict(params(), limits={"per_source": 2, "per_destination": 2, "fleet": 4}), progress=dispatched,
                 share={"lab1": 1})
    assert ("handover", "hot") not in log
    assert log.index(("transferred", "hot")) < log.index(("dispatch", "v1")), "the link stays hot's to the end"


@pytest.mark.parametrize("bytes_s,peak,conns", [(0.05, 3, None), (5.0, 1, None), (0.05, 1, 2)])
def test_a_move_whose_bytes_take_less_than_a_setup_does_not_wait_for_the_link(monkeypatch, bytes_s, peak, conns):
    """Share 1, per_source 3. v0 measures the link and the setup (0.3 s to its first byte). The others, predicted
    at the measured link shared by 3 (the limit): when their bytes take 0.05 s, less than a setup, they do not
    hold the link and run together up to the limit; when they take 5 s, one at a time as before. Moves of two
    connections each always hold the link, so one at a time however light."""
    import threading
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    shares = []

    def fake_migrate(args, progress=None, cancel=None):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        ev.time.sleep(0.3)  # setup: no byte yet
        progress({"kind": "progress", "vm": args["name"], "data_processed": 1 << 20})
        ev.time.sleep(0.1)
        with lock:
            state["now"] -= 1
        return {"changed": True, "msg": "migrated",
                "metrics": {"total_time_ms": 100, "data_processed": 100 << 20, "setup_time_ms": 0}}

    def predict(m, link_bps, scale, share=None):
        shares.append(share)
        return {"time_s": bytes_s if share == 3 else 9.0, "downtime_ms": 1, "converges": True}

    said = []
    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": "lab2", "method": _method()} for i in range(4)]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(parallel_connections=conns), limits={"per_source": 3, "per_destination": 3, "fleet": 4}),
                       progress=said.append, share={"lab1": 1}, predict=predict)
    assert out["totals"]["moved"] == 4 and (3 in shares) is (conns is None)
    unheld = [e for e in said if e.get("kind") == "dispatch" and "link" in e]
    if bytes_s < 0.3 and conns is None:
        assert state["peak"] == 3 and len(unheld) == 3, said
        assert "less than a move takes from dispatch to its first byte" in unheld[0]["link"]
        # predicted as it runs: sharing the link with as many as the limit lets run
        assert all(e["predicted_s"] == bytes_s for e in unheld), unheld
    else:
        assert state["peak"] == peak and not unheld


def _three_moves_sharing_one_link(monkeypatch, rest_s, metrics, predict, note):
    """Three moves out of lab1 with a share of 1 on its link (limits 3), ``note`` remembered on lab1: each sends
    its first byte 0.3 s after it starts and ends ``rest_s`` later with ``metrics``; returns what was said and the
    run's result."""
    said = []

    def fake_migrate(args, progress=None, cancel=None):
        ev.time.sleep(0.3)
        progress({"kind": "progress", "vm": args["name"], "data_processed": 1 << 20})
        ev.time.sleep(rest_s)
        return {"changed": True, "msg": "migrated", "metrics": dict(metrics)}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": "lab2", "method": _method()} for i in range(3)]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 3, "per_destination": 3, "fleet": 4}),
                       progress=said.append, share={"lab1": 1}, predict=predict, remembered={"lab1": note})
    return said, out


def test_a_remembered_link_never_lets_more_moves_on_a_link_than_its_share(monkeypatch):
    """As above (bytes 0.05 s, setup 0.3 s), with lab1's link remembered from an earlier job: v0's first byte shows
    the setup, but no move goes beyond the share of 1 until v0 has measured the link as it is now."""
    said, out = _three_moves_sharing_one_link(
        monkeypatch, 0.3, {"total_time_ms": 100, "data_processed": 100 << 20, "setup_time_ms": 0},
        lambda m, link_bps, scale, share=None: {"time_s": 0.05, "downtime_ms": 1, "converges": True},
        {"mib_s": 1000.0, "at": 1})
    assert out["totals"]["moved"] == 3
    kinds = [(e.get("kind"), e.get("vm")) for e in said if e.get("kind") in ("dispatch", "moved")]
    assert kinds.index(("moved", "v0")) < kinds.index(("dispatch", "v1")), kinds
    unheld = [e["vm"] for e in said if e.get("kind") == "dispatch" and "link" in e]
    assert "v0" not in unheld and unheld, "once v0 measured the link, the light moves overlap"


def test_whether_a_move_holds_its_link_is_decided_on_what_this_job_measured_alone(monkeypatch):
    """lab1 kept 1000 MiB/s for its later moves and 10 for its first: v0 measures 50 MiB/s, and the moves after it
    are predicted at 5000 (50 times 100), but whether they need the link is decided at the 50 v0 measured: 50 MiB
    with 3 moves on the link take 3 s, more than the 0.3 s a move takes to its first byte - each holds it."""
    def predict(m, link_bps, scale, share=None):
        return {"time_s": (50 << 20) / (link_bps / (share or 1)), "downtime_ms": 1, "converges": True}

    said, out = _three_moves_sharing_one_link(
        monkeypatch, 0.1, {"total_time_ms": 1000, "data_processed": 50 << 20, "setup_time_ms": 0}, predict,
        {"mib_s": 1000.0, "first_mib_s": 10.0, "at": 1})
    assert out["totals"]["moved"] == 3
    dispatched = {e["vm"]: e for e in said if e.get("kind") == "dispatch"}
    assert not any("link" in e for e in dispatched.values()), "no move judged light at a link scaled from a note"
    assert dispatched["v1"]["predicted_s"] == 0.01, "predicted at 5000 MiB/s, alone on the link it holds"


def test_moves_whose_bytes_take_less_than_what_each_move_spends_outside_its_transfer_overlap(monkeypatch):
    """Share 1, per_source 3. Every move sends its first byte at once (setup lag ~0) but its call takes 0.4 s
    for 0.05 s of QEMU's transfer (libvirt starting and finishing it): once v0 has shown that, the others,
    whose bytes take 0.1 s, do not hold the link and run together up to the limit, and the dispatch says why."""
    import threading
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def fake_migrate(args, progress=None, cancel=None):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        progress({"kind": "progress", "vm": args["name"], "data_processed": 1 << 20})
        ev.time.sleep(0.4)
        with lock:
            state["now"] -= 1
        return {"changed": True, "msg": "migrated",
                "metrics": {"total_time_ms": 50, "wall_time_ms": 450, "data_processed": 100 << 20,
                            "setup_time_ms": 0}}

    def predict(m, link_bps, scale, share=None):
        return {"time_s": 0.1, "downtime_ms": 1, "converges": True}

    said = []
    monkeypatch.setattr(ev, "migrate", fake_migrate)
    moves = [{"vm": f"v{i}", "source": "lab1", "destination": "lab2", "method": _method()} for i in range(4)]
    out = ev.run_moves(moves, {"lab1": "u1", "lab2": "u2"},
                       dict(params(), limits={"per_source": 3, "per_destination": 3, "fleet": 4}),
                       progress=said.append, share={"lab1": 1}, predict=predict)
    assert out["totals"]["moved"] == 4 and state["peak"] == 3, said
    unheld = [e for e in said if e.get("kind") == "dispatch" and "link" in e]
    assert len(unheld) == 3 and "less than a finished move spent outside its transfer (0.4 s" in unheld[0]["link"], unheld


def test_an_xbzrle_move_runs_without_multifd_and_escalates_when_its_passes_stop_shrinking(monkeypatch):
    """The XBZRLE attempt: the VM's cache, no parallel connections (libvirt refuses XBZRLE with them), its cache
    recorded; not converging, the next step runs with the job's own compression and connections."""
    calls = []

    def fake_migrate(args, progress=None, cancel=None):
        calls.append(dict(args))
        if len(calls) == 1:
            raise FleetmaintError("not converging", step="precopy", reason="not_converging",
                                  result={"options": {"xbzrle_cache_mib": 256}, "metrics": {"source": "source_last_sample"}})
        return {"changed": True, "msg": "migrated", "options": {"xbzrle_cache_mib": None},
                "metrics": {"source": "destination_completed_job"}}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    method = {"method": "xbzrle", "exclusive": False, "why": "plain pre-copy would not converge",
              "predicted": {"time_s": 10.0, "converges": None, "downtime_ms": None}, "xbzrle_cache_bytes": 256 * 1048576}
    p = dict(params(allow_xbzrle=True, parallel_connections=2), limits={"per_source": 1, "per_destination": 1, "fleet": 1})
    out = ev.run_moves([{"vm": "hot1", "source": "hv1", "destination": "hv2", "method": method}],
                       {"hv1": "u1", "hv2": "u2"}, p)
    vm = out["vms"][0]
    assert vm["result"] == "moved" and [a["mode"] for a in vm["attempts"]] == ["xbzrle", "auto_converge"]
    first, second = calls
    assert first["compression"] == "xbzrle" and first["xbzrle_cache_bytes"] == 256 * 1048576
    assert first["parallel_connections"] is None and not first["auto_converge"]
    assert second["compression"] == "none" and second["parallel_connections"] == 2 and second["auto_converge"]
    assert vm["attempts"][0]["xbzrle_cache_mib"] == 256 and "xbzrle_cache_mib" not in vm["attempts"][1]
