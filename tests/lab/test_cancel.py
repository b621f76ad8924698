"""Stopping a running evacuation: host_job state=cancelled from another controller's view, and a signal to the
controller running it. Real migrations, slowed by libvirt's bandwidth cap (no traffic shaping)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import pytest

from conftest import REPO, wait_for
from invariants import NeverTwice

VMS = ["cn-a", "cn-b", "cn-c", "cn-d"]


@pytest.fixture(scope="module")
def four_on_lab3(lab):
    """Booted at once, once for this module: every test leaves them on lab3 (or the lab's snapshot does)."""
    with lab.booted(dict.fromkeys(VMS, "lab3"), "--disk", "shared") as vms:
        yield vms


@contextlib.contextmanager
def never_twice(lab, vms):
    """Sample the whole lab while the job runs: no VM may ever run on two hosts (invariants.NeverTwice)."""
    sampler = NeverTwice(lab.status()["hosts"], vms)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()


def job(lab, **hj):
    cmd, out = lab.playbook_cmd("host_job.yml", "hj", dict(hj, uri=lab.uri(hj.pop("host"))))
    lab.start_playbook(cmd).communicate(timeout=300)
    return json.loads(out.read_text())


def evacuation(lab):
    # 4 MiB/s each: every move takes several seconds, two at a time, so the cancel meets moves in flight.
    return lab.playbook_cmd("host_move.yml", "hm", dict(uris=lab.uris(), host="lab3", bandwidth=4,
                                                        limits={"per_source": 2, "per_destination": 2, "fleet": 2}),
                            "-e", "action=evacuate")


def settle_and_finish(lab, vms):
    """After a cancel: every VM on one host, defined there only; the job lease gone; a re-run finishes the
    evacuation, then the VMs go home (the lab as it was)."""
    where = lab.invariant(vms)
    assert not job(lab, host="lab3")["running"], "the cancelled job released its lease"
    r = lab.evacuate(uris=lab.uris(), host="lab3")
    assert not r.get("failed"), r["msg"]
    assert "lab3" not in set(lab.invariant(vms).values())
    lab.restore(uris=lab.uris(), host="lab3")
    assert set(lab.invariant(vms).values()) == {"lab3"}
    return where


@pytest.mark.parametrize("to_group", [False, True], ids=["SIGTERM to ansible-playbook", "SIGINT to its process group"])
def test_a_signal_to_the_controller_aborts_its_migrations_instead_of_leaving_them_running(lab, four_on_lab3, to_group):
    """SIGTERM to ansible-playbook (what AWX's cancel sends), or SIGINT to its whole process group (Ctrl-C in a
    terminal: the playbook and its workers at once): the worker running the job aborts the pre-copies in flight
    and releases the lease, although the playbook process itself is gone."""
    cmd, _out = evacuation(lab)
    with never_twice(lab, four_on_lab3) as sampler:
        proc = lab.start_playbook(cmd, start_new_session=True)
        try:
            lab.wait_for_migration_job("lab3", four_on_lab3)
            time.sleep(1)
            in_flight = [vm for vm in four_on_lab3
                         if "Unbounded" in lab.virsh("lab3", "domjobinfo", vm, check=False).stdout]
            if to_group:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
            # The job stops on its own: no migration job left on lab3, the lease released.
            wait_for(lambda: not any("Unbounded" in lab.virsh("lab3", "domjobinfo", vm, check=False).stdout
                                     for vm in four_on_lab3) and not job(lab, host="lab3")["running"],
                     120, interval=1, what="the migrations aborted and the lease released")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert sampler.samples > 3 and sampler.violations == [] and sampler.errors == [], sampler.violations
    where = settle_and_finish(lab, four_on_lab3)
    # Killed outright, the worker would leave them to libvirtd, whose peer-to-peer migrations go on to the end.
    assert in_flight and all(where[vm] == "lab3" for vm in in_flight), (in_flight, where)


def test_a_cancel_request_stops_a_rolling_patch_while_it_empties_a_host_of_four_vms(lab, four_on_lab3, tmp_path):
    """host_job state=cancelled while lab3's evacuation runs: no new move, the pre-copies in flight aborted, the
    job fails with reason cancelled naming what moved; the rolling patch stops (whatever on_failure says) and its
    rescue moves nothing back; the host keeps its mark, the report says so; a re-run resumes and finishes."""
    report = tmp_path / "report"
    args = {"rolling_patch_target_level": "C1", "rolling_patch_on_failure": "continue",
            "rolling_patch_tasks": str(REPO / "roles" / "rolling_patch" / "tasks" / "patch_lab.yml"),
            "rolling_patch_memory_headroom": 256, "rolling_patch_report_dir": str(report),
            # 4 MiB/s each, two at a time: every move takes several seconds, so the cancel meets moves in flight.
            "host_evacuate_bandwidth": 4, "host_evacuate_limits": {"per_source": 2, "per_destination": 2, "fleet": 2}}
    cmd = ["ansible-playbook", "-i", str(lab.inventory), str(REPO / "playbooks" / "rolling_patch.yml"),
           "-e", json.dumps(args), "--limit", "lab3"]
    with never_twice(lab, four_on_lab3) as sampler:
        proc = lab.start_playbook(cmd)
        try:
            lab.wait_for_migration_job("lab3", four_on_lab3)
            seen = job(lab, host="lab3")
            assert seen["running"] and seen["job"]["job"] == "evacuate" and not seen["changed"]
            asked = job(lab, host="lab3", state="cancelled", by="test-operator")
            t_asked = time.monotonic()
            assert asked["changed"] and "asked 'evacuate' from" in asked["msg"]
            proc.communicate(timeout=300)
            took = time.monotonic() - t_asked
        finally:
            if proc.poll() is None:
                proc.kill()
    print(f"cancel: the run ended {took:.1f} s after the request was made; {sampler.samples} samples")
    assert proc.returncode != 0, "a cancel fails the run even with rolling_patch_on_failure=continue"
    assert sampler.samples > 3 and sampler.violations == [] and sampler.errors == [], sampler.violations
    rec = json.loads((report / "hosts" / "lab3.json").read_text())
    assert rec["status"] == "failed" and rec["failed_phase"] == "evacuate"
    assert "cancelled (requested by test-operator from" in rec["msg"] and "re-run the job" in rec["msg"]
    assert rec["state_after"] == "maintenance, some VMs moved away" and rec["restore"] == {}, "nothing moved back"
    assert "fleetmaint-maintenance" in lab.virsh("lab3", "secret-list").stdout
    res = {v["vm"]: v for v in rec["evacuate"]["vms"] if v["vm"] in four_on_lab3}
    not_moved = [v for v, x in res.items() if x["result"] != "moved"]
    assert not_moved, "the cancel came while moves were in flight or waiting"
    assert all(res[v]["reason"] == "cancelled" for v in not_moved)
    assert any(res[v]["result"] == "failed" for v in not_moved), "a pre-copy in flight was aborted"
    where = lab.invariant(four_on_lab3)
    assert all(where[v] == "lab3" for v in not_moved), "what did not move is still on its source"
    assert {v for v in four_on_lab3 if where[v] != "lab3"} == {v for v, x in res.items() if x["result"] == "moved"}
    assert not job(lab, host="lab3")["running"], "the cancelled job released its lease"
    again = job(lab, host="lab3", state="cancelled")
    assert not again["changed"] and "nothing to cancel" in again["msg"], "no job: nothing changes"
    args.pop("host_evacuate_bandwidth")
    lab.playbook("playbooks/rolling_patch.yml", "--limit", "lab3", **args)  # resumes: patched, all home
    assert set(lab.invariant(four_on_lab3).values()) == {"lab3"}
    assert "fleetmaint-maintenance" not in lab.virsh("lab3", "secret-list").stdout
