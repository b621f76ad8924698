"""The rolling patch on the lab: every host evacuated live, patched (libvirtd restarted), checked and refilled."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO, wait_for

VMS = {"rp-a": ("lab1", 160, "shared", 32), "rp-b": ("lab1", 128, "local", 0), "rp-c": ("lab2", 128, "shared", 0),
       "rp-d": ("lab2", 96, "local", 0), "rp-e": ("lab3", 128, "shared", 0)}
LAB_PATCH = str(REPO / "roles" / "rolling_patch" / "tasks" / "patch_lab.yml")
FAIL_PATCH = str(REPO / "tests" / "lab" / "playbooks" / "tasks" / "patch_fail.yml")


@pytest.fixture(scope="module")
def fleet(lab):
    for name, (host, mem, disk, dirty) in VMS.items():
        extra = ["--dirty-mb", str(dirty), "--dirty-rate", "10"] if dirty else []
        lab.ctl("vm", "create", name, "--host", host, "--memory", str(mem), "--disk", disk, *extra, "--no-wait")
    wait_for(lambda: all(m["intact"] for m in lab.markers(VMS).values()), 90, what="guests to write markers")
    yield list(VMS)
    for name in VMS:
        lab.ctl("vm", "delete", name, check=False)


def levels(lab) -> dict:
    """Each host's recorded patch level, read through libvirt as any controller would."""
    return {h: (lab.note(h, "fleetmaint-patch-level") or {}).get("level") for h in ("lab1", "lab2", "lab3")}


def in_maintenance(lab, host) -> bool:
    return "fleetmaint-maintenance" in lab.virsh(host, "secret-list").stdout


def all_home(lab, vms) -> None:
    where = lab.invariant(vms)
    assert where == {v: VMS[v][0] for v in vms}, where
    markers = lab.markers(vms)
    assert all(m["intact"] for m in markers.values()), {v: m for v, m in markers.items() if not m["intact"]}


def rolling_patch(lab, tmp_path, level, **extra):
    report = tmp_path / f"report-{level}"
    args = dict(rolling_patch_target_level=level, rolling_patch_tasks=LAB_PATCH, rolling_patch_copy_storage="all",
                rolling_patch_memory_headroom=256, rolling_patch_report_dir=str(report))
    res = lab.playbook("playbooks/rolling_patch.yml", check=False, **dict(args, **extra))
    rep = json.loads((report / "report.json").read_text()) if (report / "report.json").exists() else None
    return res, rep, report


def test_rolling_patch_patches_every_host_and_brings_every_vm_home(lab, fleet, tmp_path):
    res, rep, report = rolling_patch(lab, tmp_path, "L1", rolling_patch_canary_xml="{{ fleetmaint_lab_canary_xml }}")
    assert res.returncode == 0, res.stdout[-5000:]
    assert levels(lab) == {"lab1": "L1", "lab2": "L1", "lab3": "L1"}
    assert not any(in_maintenance(lab, h) for h in ("lab1", "lab2", "lab3"))
    all_home(lab, fleet)
    # The lab patch step really restarted each libvirtd and recorded the level on the host.
    for h in ("lab1", "lab2", "lab3"):
        assert (Path(lab.status()["state_dir"]) / "hosts" / h / "patch-level").read_text().strip() == "L1"
    # The report: every host patched, every VM out and home, with timings and downtime; three formats.
    assert rep["summary"]["patched"] == 3 and rep["summary"]["failed"] == 0
    # (VMs other test modules left on the shared test lab move too; only ours are asserted on.)
    moves = {(v["vm"], v["direction"]) for v in rep["vms"] if v["result"] == "moved" and v["vm"] in fleet}
    assert moves == {(v, d) for v in fleet for d in ("out", "home")}
    assert all(v["downtime_ms"] is not None and v["total_time_s"] is not None for v in rep["vms"])
    assert all(set(h["durations_s"]) >= {"preflight", "evacuate", "patch", "health", "restore"} for h in rep["hosts"])
    assert all(any(c["name"] == "canary boots" and c["ok"] for c in r["health"]) for r in rep["records"])
    md = (report / "report.md").read_text()
    assert "| rp-a | lab1 | out | lab1 |" in md and "3 patched" in md
    page = (report / "report.html").read_text()
    assert page.count("class='move'") == sum(v["result"] != "stayed" for v in rep["vms"]) and "<h2>Timeline</h2>" in page, "a bar per move"
    assert str(report / "report.md") in res.stdout, "the report's path is printed at the end of the run"
    # Every move's history, in time order: each of ours dispatched, started, sampled or done, moved.
    assert rep["move_log"] == str(report / "moves.jsonl") and rep["move_log"] in md
    log = [json.loads(line) for line in (report / "moves.jsonl").read_text().splitlines()]
    assert [ln["ts"] for ln in log] == sorted(ln["ts"] for ln in log)
    for v in fleet:
        for job in ("host_evacuate", "host_restore"):
            whats = [ln["what"] for ln in log if ln["vm"] == v and ln["job"] == job]
            assert whats[0] == "dispatch" and whats[-1] == "moved" and "start" in whats and "done" in whats, (v, whats)

    # Idempotent: a second run at the same level skips every host and moves nothing (a VM that moved
    # away and back would have a new domain id).
    ids = {v: lab.virsh(VMS[v][0], "domid", v).stdout.strip() for v in fleet}
    res2, rep2, _report2 = rolling_patch(lab, tmp_path, "L1")
    assert res2.returncode == 0, res2.stdout[-3000:]
    assert {v: lab.virsh(VMS[v][0], "domid", v).stdout.strip() for v in fleet} == ids
    assert "host_evacuate : Evacuate the host" not in res2.stdout
    assert rep2["records"] == rep["records"], "hosts already at the level keep their record unchanged"
    recap = res2.stdout.split("PLAY RECAP", 1)[1]
    assert all(f"{h}" in recap and "changed=0" in recap.split(h, 1)[1].split("\n")[0]
               for h in ("lab1", "lab2", "lab3")), "a repeated run changes nothing"
    all_home(lab, fleet)


def test_on_failure_continue_goes_on_and_fails_at_the_end(lab, fleet, tmp_path):
    before = levels(lab)
    res, rep, _report = rolling_patch(lab, tmp_path, "L3", rolling_patch_tasks=FAIL_PATCH,
                                      rolling_patch_fail_host="lab1", rolling_patch_lab_tasks=LAB_PATCH,
                                      rolling_patch_on_failure="continue")
    assert res.returncode != 0
    assert "rolling patch failed on lab1; see the report" in res.stdout
    assert levels(lab) == {"lab1": before["lab1"], "lab2": "L3", "lab3": "L3"}
    assert {h["host"]: h["status"] for h in rep["hosts"]} == {"lab1": "failed", "lab2": "patched", "lab3": "patched"}
    where = lab.invariant(fleet)
    assert "lab1" not in where.values() and in_maintenance(lab, "lab1")
    # Put lab1 back the way an operator would: the restore playbook.
    lab.playbook("playbooks/restore_host.yml", host="lab1", host_restore_copy_storage="all")
    assert not in_maintenance(lab, "lab1")
    all_home(lab, fleet)


def test_rolling_patch_through_ansible_runner_as_awx_runs_it(lab, fleet, tmp_path):
    """A private data dir, an inventory, extra vars: what an AWX job template hands ansible-runner. In batches
    of two (rolling_patch_serial 2): lab1 and lab2 are emptied together, onto the rest of the fleet only."""
    import ansible_runner  # pylint: disable=import-outside-toplevel

    pdd = tmp_path / "pdd"
    (pdd / "inventory").mkdir(parents=True)
    shutil.copytree(REPO / "playbooks", pdd / "project")
    shutil.copy(lab.inventory, pdd / "inventory" / "hosts.yml")
    report = tmp_path / "runner-report"
    run = ansible_runner.run(
        private_data_dir=str(pdd), playbook="rolling_patch.yml", quiet=True,
        extravars={"rolling_patch_target_level": "L4", "rolling_patch_tasks": LAB_PATCH,
                   "rolling_patch_copy_storage": "all", "rolling_patch_memory_headroom": 256,
                   "rolling_patch_report_dir": str(report), "rolling_patch_serial": 2},
        envvars={"ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", "")})
    assert run.status == "successful", run.stdout.read()[-5000:]
    assert levels(lab) == {"lab1": "L4", "lab2": "L4", "lab3": "L4"}
    all_home(lab, fleet)
    events = list(run.events)
    ok = [e for e in events if e.get("event") == "runner_on_ok"]
    assert any(e["event_data"].get("task_action") == "fleetmaint.libvirt.host_evacuate" for e in ok)
    assert any(e["event_data"].get("task_action") == "fleetmaint.libvirt.host_restore" for e in ok)
    assert any("host_evacuate rp-a:" in e.get("stdout", "") for e in events), "progress lines are job events"
    assert any("host_restore rp-a:" in e.get("stdout", "") for e in events)
    assert list((pdd / "artifacts").glob("*/job_events/*.json")), "job events are in the artifacts"
    rep = json.loads((report / "report.json").read_text())
    assert rep["summary"]["patched"] == 3
    # lab1 and lab2 were emptied together: none of their VMs may have gone to the other one.
    outs = [v for v in rep["vms"] if v["direction"] == "out" and v["maintenance_of"] in ("lab1", "lab2")]
    assert outs and all(v["destination"] == "lab3" for v in outs), outs


def test_preflight_evacuate_and_restore_playbooks(lab, fleet):
    # Local disks without copy_storage: preflight says which hosts cannot be emptied, and why; nothing moves.
    ids = {v: lab.virsh(VMS[v][0], "domid", v).stdout.strip() for v in fleet}
    res = lab.playbook("playbooks/preflight.yml", check=False, rolling_patch_memory_headroom=256)
    assert res.returncode != 0
    assert "cannot empty lab1, lab2" in res.stdout
    assert "rp-b's disk vda" in res.stdout and "rp-d's disk vda" in res.stdout
    assert {v: lab.virsh(VMS[v][0], "domid", v).stdout.strip() for v in fleet} == ids
    assert lab.playbook("playbooks/preflight.yml", check=False, rolling_patch_memory_headroom=256,
                        rolling_patch_copy_storage="all").returncode == 0
    # Empty lab1 with the playbook, then bring its VMs home with the other.
    res = lab.playbook("playbooks/evacuate_host.yml", host="lab1", host_evacuate_copy_storage="all",
                       host_evacuate_memory_headroom=256)
    assert re.search(r"lab1: moved (\d+) of \1 VMs live .*; the host is empty of running VMs", res.stdout)
    assert in_maintenance(lab, "lab1") and "lab1" not in lab.invariant(fleet).values()
    res = lab.playbook("playbooks/restore_host.yml", host="lab1", host_restore_copy_storage="all")
    assert re.search(r"lab1: brought \d+ VMs home", res.stdout)
    assert not in_maintenance(lab, "lab1")
    all_home(lab, fleet)


def test_a_paused_vm_survives_the_rolling_patch(lab, fleet, tmp_path):
    """rp-pz, paused by its user on lab1, leaves with lab1's evacuation; it cannot come home on QEMU 7.2 (a
    second move would crash it), so it stays where it went, and that host is not patched: its evacuation
    refuses to move rp-pz and the rescue returns it to service. Every VM is alive at the end; the report
    names rp-pz and why."""
    lab.ctl("vm", "create", "rp-pz", "--host", "lab1", "--disk", "shared")
    try:
        lab.virsh("lab1", "suspend", "rp-pz")
        res, rep, _report = rolling_patch(lab, tmp_path, "LPZ", rolling_patch_on_failure="continue")
        where = lab.invariant(list(fleet) + ["rp-pz"])
        away = where["rp-pz"]
        assert away != "lab1" and lab.virsh(away, "domstate", "rp-pz").stdout.strip() == "paused"
        assert lab.home_host("rp-pz", away) == "lab1" and lab.marker("rp-pz")["intact"]
        all_home(lab, fleet)
        status = {h["host"]: h["status"] for h in rep["hosts"]}
        assert status[away] == "failed" and all(s == "patched" for h, s in status.items() if h != away), status
        assert res.returncode != 0, "a host was not patched: the run says so"
        stayed = [v for v in rep["vms"] if v["vm"] == "rp-pz" and v["result"] == "stayed"]
        assert stayed and "vm_paused_disks_inactive" in stayed[0]["msg"], rep["vms"]
        failed_host = next(h for h in rep["hosts"] if h["host"] == away)
        assert "rp-pz" in failed_host["msg"] and "vm_paused_disks_inactive" in failed_host["msg"], failed_host
        assert not any(in_maintenance(lab, h) for h in ("lab1", "lab2", "lab3"))
    finally:
        lab.ctl("vm", "delete", "rp-pz", check=False)
