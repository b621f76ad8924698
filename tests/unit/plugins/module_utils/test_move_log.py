"""Every move's history as JSON lines (pure): ordered in time, every kind of entry, no password."""

import json

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import move_log

SECRET = "s3cr3t-pw"


def evac_result():
    return {"host": "hv1", "vms": [
        {"vm": "web1", "source": "hv1", "destination": "hv2", "result": "moved",
         "log": [{"kind": "dispatch", "ts": 100.0, "method": "precopy", "why": "converges"},
                 {"kind": "attempt", "ts": 100.01, "attempt": 1, "why": "pre-copy"},
                 {"kind": "attempt_failed", "ts": 104.0, "attempt": 1, "reason": "not_converging",
                  "msg": f"failed talking to qemu+tcp://admin:{SECRET}@hv2/system"},
                 {"kind": "attempt", "ts": 104.4, "attempt": 2, "why": "post-copy"},
                 {"kind": "moved", "ts": 109.99, "msg": "migrated"}],
         "attempts": [
             {"attempt": 1, "mode": "precopy", "started_at": 100.1, "ended_at": 104.0,
              "events": [{"t": 0.0, "event": "start", "destination": "hv2"},
                         {"t": 3.8, "event": "failed", "error": f"qemu+ssh://root@hv2/system?password={SECRET}"}],
              "samples": [{"t": 1.0, "phase": "precopy", "data_remaining": 5, "dirty_rate": 10, "throttle": 0,
                           "downtime_ms": 100, "iteration": 1}]},
             {"attempt": 2, "mode": "postcopy", "started_at": 104.5, "ended_at": 110.0,
              "events": [{"t": 0.0, "event": "start"}, {"t": 2.0, "event": "postcopy", "why": "after the first pass"},
                         {"t": 5.6, "event": "done"}],
              "samples": [{"t": 1.0, "phase": "precopy", "iteration": 1}, {"t": 3.0, "phase": "postcopy"}]}]},
        {"vm": "db1", "source": "hv1", "destination": "hv3", "result": "not_started", "attempts": [], "log": []}]}


def test_every_entry_of_every_attempt_ordered_in_time():
    lines = move_log.result_lines("fleetmaint.libvirt.host_evacuate", evac_result())
    assert [ln["ts"] for ln in lines] == sorted(ln["ts"] for ln in lines)
    kinds = [(ln["kind"], ln["what"], ln.get("attempt")) for ln in lines]
    assert kinds == [("scheduler", "dispatch", None), ("scheduler", "attempt", 1), ("event", "start", 1),
                     ("progress", "precopy", 1), ("event", "failed", 1), ("scheduler", "attempt_failed", 1),
                     ("scheduler", "attempt", 2), ("event", "start", 2), ("progress", "precopy", 2),
                     ("event", "postcopy", 2), ("progress", "postcopy", 2), ("event", "done", 2),
                     ("scheduler", "moved", None)]
    assert all(ln["job"] == "host_evacuate" and ln["host"] == "hv1" and ln["vm"] == "web1" for ln in lines)
    # The job's clock put 'done' at 110.1, a hair after the scheduler's 'moved' (109.99): still done, then moved.
    assert (lines[-2]["what"], lines[-2]["ts"], lines[-1]["what"], lines[-1]["ts"]) == ("done", 110.1, "moved", 110.1)
    sample = next(ln for ln in lines if ln["kind"] == "progress")
    assert sample["ts"] == 101.1 and sample["downtime_ms"] == 100 and sample["mode"] == "precopy"


def test_the_file_is_json_lines_with_no_password():
    text = move_log.dumps(move_log.result_lines("host_evacuate", evac_result()))
    assert SECRET not in text and "admin:********@hv2" in text and "password=********" in text
    parsed = [json.loads(line) for line in text.splitlines()]
    assert len(parsed) == 13 and text.endswith("\n")


def test_a_live_migrate_result_and_other_modules():
    lm = {"vm": "web1", "source": {"uri": "qemu+tcp://hv1/system", "hostname": "hv1"}, "destination": "hv2",
          "started_at": 50.0, "events": [{"t": 0.0, "event": "start"}, {"t": 2.5, "event": "done"}],
          "samples": [{"t": 1.0, "phase": "precopy"}]}
    lines = move_log.result_lines("live_migrate", lm)
    assert [(ln["ts"], ln["what"], ln["source"], ln["destination"]) for ln in lines] == [
        (50.0, "start", "hv1", "hv2"), (51.0, "precopy", "hv1", "hv2"), (52.5, "done", "hv1", "hv2")]
    assert move_log.result_lines("live_migrate", {"vm": "x", "msg": "refused before it started"}) == []
    assert move_log.result_lines("ansible.builtin.debug", {"msg": "hi"}) == []


def test_a_password_a_libvirt_message_quoted_never_reaches_the_log(monkeypatch):
    """Through the scheduler: the URIs carry a password, the migration's error quotes one."""
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils import host_jobs, move_scheduler
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError

    uri = f"qemu+tls://admin:{SECRET}@hv2/system?password={SECRET}"

    def fake_migrate(args, progress=None, cancel=None):
        assert SECRET in args["dest_uri"]
        out = {"started_at": 10.0, "ended_at": 11.0, "events": [
            {"t": 0.5, "event": "failed", "error": f"unable to connect to server at '{args['dest_uri']}'"}]}
        raise FleetmaintError(f"migrating web1 failed: cannot reach {args['dest_uri']}", step="precopy",
                              reason="migration_failed", result=out)

    monkeypatch.setattr(move_scheduler, "migrate", fake_migrate)
    p = {k: v.get("default") for k, v in host_jobs.EVACUATE_SPEC.items()}
    p.update(uris=[uri], host="hv1", limits={"per_source": 1, "per_destination": 1, "fleet": 1}, max_attempts=1)
    out = move_scheduler.run_moves([{"vm": "web1", "source": "hv1", "destination": "hv2"}],
                                   {"hv1": uri.replace("hv2", "hv1"), "hv2": uri}, p)
    assert out["vms"][0]["result"] == "failed"
    text = move_log.dumps(move_log.result_lines("host_evacuate", dict(out, host="hv1")))
    assert "cannot reach qemu+tls://admin:********@hv2/system?password=********" in text
    assert "unable to connect to server at 'qemu+tls://admin:********@hv2" in text
    assert SECRET not in text
