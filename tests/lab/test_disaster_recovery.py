"""Disaster recovery on the lab: a host really dies (its libvirtd and QEMU processes killed), its VMs restart
elsewhere from the backup, it comes back, its stale copies never start, and every VM goes home live."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import STATE_DIR, wait_for
from invariants import NeverTwice, check

FENCE_DIR = f"{STATE_DIR}/fence"
PLAYBOOK = "playbooks/disaster_recovery.yml"


@pytest.fixture(autouse=True)
def no_fence_record_left():
    """A failed test must not leave a record behind: the guard would refuse every start in later tests."""
    yield
    for f in Path(FENCE_DIR).glob("*.fenced"):
        f.unlink()


def dr_vars(lab, hosts: str, **extra) -> dict:
    return lab.dr_vars(hosts, str(lab.tmp / "dr-backup"), **extra)


def backup(lab) -> dict:
    lab.playbook("playbooks/backup_definitions.yml", backup_dir=str(lab.tmp / "dr-backup"))
    return json.loads((lab.tmp / "dr-backup" / "index.json").read_text())


def install_guard(lab) -> None:
    """The guard hook on every host; libvirtd reads hooks when it starts, so restart each (VMs keep running)."""
    lab.playbook(PLAYBOOK, **dr_vars(lab, "hypervisors", disaster_recovery_mode="guard",
                                     disaster_recovery_guard_restart_libvirtd=False))
    for h in ("lab1", "lab2", "lab3"):
        lab.ctl("fault", "kill-libvirtd", h)
        lab.ctl("fault", "revive-host", h)


def test_never_twice_sampler_sees_a_second_copy(lab):
    """The sampler the DR tests rely on must be able to fail: a second copy of a VM started by hand is seen,
    also while the host of the first copy has no libvirtd (read from its QEMU processes)."""
    lab.ctl("vm", "create", "dr-twin", "--host", "lab2", "--disk", "none")
    xml = lab.tmp / "dr-twin.xml"
    xml.write_text(lab.virsh("lab2", "dumpxml", "dr-twin").stdout)
    sampler = NeverTwice(lab.status()["hosts"], ["dr-twin"])
    sampler.start()
    try:
        time.sleep(1)
        assert sampler.violations == [], "one copy is not two"
        lab.virsh("lab3", "create", str(xml))
        wait_for(lambda: sampler.violations, 15, what="the sampler to see two copies")
        lab.ctl("fault", "kill-libvirtd", "lab2")
        seen = len(sampler.violations)
        wait_for(lambda: len(sampler.violations) > seen + 3, 15, what="two copies seen with lab2's libvirtd dead")
    finally:
        sampler.stop()
        lab.ctl("fault", "revive-host", "lab2")
        lab.virsh("lab3", "destroy", "dr-twin", check=False)
    assert {tuple(sorted(v[2])) for v in sampler.violations} == {("lab2", "lab3")}
    lab.ctl("vm", "delete", "dr-twin")


def test_failover_refuses_unless_dead_and_fenced(lab):
    """libvirtd dead but QEMU alive is not a dead host; a dead host with no fence step or a failing one is
    not restarted; the loudly named override does restart, and failback then removes the stale copy."""
    lab.ctl("vm", "create", "dr-x", "--host", "lab3", "--disk", "shared")
    backup(lab)
    try:
        lab.ctl("fault", "kill-libvirtd", "lab3")  # the management plane is gone, the VM still runs
        r = lab.playbook(PLAYBOOK, check=False, **dr_vars(lab, "lab3"))
        assert r.returncode != 0 and "is not dead" in r.stdout and "fault power lab3" in r.stdout, r.stdout[-3000:]
        assert not Path(FENCE_DIR, "lab3.fenced").exists()

        lab.ctl("fault", "kill-host", "lab3")  # now really dead
        r = lab.playbook(PLAYBOOK, check=False, **dr_vars(lab, "lab3", disaster_recovery_fence_tasks=""))
        assert r.returncode != 0 and "refused, nothing changed" in r.stdout and "fence step" in r.stdout
        fence_fails = Path(__file__).parent / "playbooks" / "tasks" / "fence_fails.yml"
        r = lab.playbook(PLAYBOOK, check=False, **dr_vars(lab, "lab3", disaster_recovery_fence_tasks=str(fence_fails)))
        assert r.returncode != 0 and "fencing lab3 failed" in r.stdout and "nothing was restarted" in r.stdout
        assert lab.where("dr-x")["running_on"] == [], "nothing restarted without a fence"
        assert not Path(FENCE_DIR, "lab3.fenced").exists()

        r = lab.playbook(PLAYBOOK, **dr_vars(lab, "lab3", disaster_recovery_fence_tasks="",
                                             disaster_recovery_unsafe_skip_fence=True))
        assert "WARNING: disaster_recovery_unsafe_skip_fence is set" in r.stdout
        (survivor,) = lab.where("dr-x")["running_on"]
        assert survivor in ("lab1", "lab2")
        record = json.loads(Path(FENCE_DIR, "lab3.fenced").read_text())
        assert record["recovered"] == {"dr-x": survivor} and record["fence"].startswith("UNSAFE")
    finally:
        lab.ctl("fault", "revive-host", "lab3")
    r = lab.playbook(PLAYBOOK, **dr_vars(lab, "lab3", disaster_recovery_mode="failback"))
    assert check(lab, {"dr-x": "lab3"}) == {"dr-x": "lab3"}
    assert not Path(FENCE_DIR, "lab3.fenced").exists()
    lab.ctl("vm", "delete", "dr-x")


def test_failover_and_failback_never_twice(lab):
    """Kill lab1 with three shared-disk VMs and one local-disk VM (all autostart): failover restarts the three
    elsewhere and reports the fourth; lab1 returns and the guard refuses its stale copies' autostart; failback
    brings every VM home live. A sampler reads the whole lab all along: no VM ever runs on two hosts."""
    shared = ["dr-a", "dr-b", "dr-c"]
    lab.create_at_once(dict.fromkeys(shared, "lab1"), "--disk", "shared")
    lab.ctl("vm", "create", "dr-l", "--host", "lab1", "--disk", "local")
    for vm in shared + ["dr-l"]:
        lab.virsh("lab1", "autostart", vm)
    install_guard(lab)
    index = backup(lab)
    assert all(index[vm]["autostart"] and index[vm]["running_on"] == ["lab1"] for vm in shared + ["dr-l"])

    sampler = NeverTwice(lab.status()["hosts"], shared + ["dr-l"])
    sampler.start()
    try:
        lab.ctl("fault", "kill-host", "lab1")
        r = lab.playbook(PLAYBOOK, "-v", **dr_vars(lab, "lab1"))
        where = {vm: lab.where(vm)["running_on"] for vm in shared}
        assert all(len(w) == 1 and w[0] in ("lab2", "lab3") for w in where.values()), where
        for vm in shared:
            assert lab.marker(vm)["intact"], vm
            assert lab.home_host(vm, where[vm][0]) == "lab1", "the home host survives the failover"
        assert "NOT recovered: dr-l" in r.stdout and "local storage" in r.stdout
        record = json.loads(Path(FENCE_DIR, "lab1.fenced").read_text())
        assert record["recovered"] == {vm: w[0] for vm, w in where.items()}
        assert record["unrecovered_running"] == ["dr-l"]

        again = lab.playbook(PLAYBOOK, **dr_vars(lab, "lab1"))
        assert "changed=0" in again.stdout, "a repeated failover changes nothing"

        # lab1 returns as after a power cycle: libvirtd autostarts its VMs - the guard refuses every one.
        lab.ctl("fault", "revive-host", "lab1")
        log = Path(STATE_DIR, "hosts", "lab1", "log", "libvirtd.log")
        wait_for(lambda: all(f"Failed to autostart VM '{vm}'" in log.read_text() for vm in shared + ["dr-l"]),
                 30, what="lab1's autostart attempts")
        assert "fleetmaint guard: this host was fenced by a failover" in log.read_text()
        time.sleep(1)
        for vm in shared:
            w = lab.where(vm)
            assert w["running_on"] == where[vm] and sorted(w["defined_on"]) == sorted(["lab1"] + where[vm]), w

        r = lab.playbook(PLAYBOOK, **dr_vars(lab, "lab1", disaster_recovery_mode="failback"))
        assert "undefined 3 stale copies" in r.stdout and "brought 3 VMs home" in r.stdout
        assert check(lab, {vm: "lab1" for vm in shared + ["dr-l"]}) == {vm: "lab1" for vm in shared + ["dr-l"]}
        assert all("enable" in lab.virsh("lab1", "dominfo", vm).stdout.split("Autostart:")[1].split("\n")[0]
                   for vm in shared + ["dr-l"]), "autostart is kept through failover and failback"
        assert not Path(FENCE_DIR, "lab1.fenced").exists()
        again = lab.playbook(PLAYBOOK, **dr_vars(lab, "lab1", disaster_recovery_mode="failback"))
        assert "changed=0" in again.stdout, "a repeated failback changes nothing"
    finally:
        sampler.stop()
        if lab.host("lab1")["up"] is False:
            lab.ctl("fault", "revive-host", "lab1")
    assert not sampler.errors, sampler.errors
    assert sampler.samples > 50, f"only {sampler.samples} samples"
    assert all(len(sampler.seen_on[vm]) == 2 for vm in shared), f"the sampler saw the moves: {sampler.seen_on}"
    assert sampler.violations == [], f"a VM ran on two hosts: {sampler.violations}"
    for vm in shared + ["dr-l"]:
        lab.ctl("vm", "delete", vm)


def test_planned_failover_of_a_host_group(lab):
    """Move a "site" (lab1 and lab2) live to lab3; failback brings each VM home and clears the marks."""
    vms = {"dr-p1": "lab1", "dr-p2": "lab1", "dr-p3": "lab2"}
    lab.create_at_once(vms, "--disk", "shared")
    sampler = NeverTwice(lab.status()["hosts"], list(vms))
    sampler.start()
    try:
        lab.playbook(PLAYBOOK, **dr_vars(lab, "lab1,lab2", disaster_recovery_mode="planned_failover",
                                         disaster_recovery_targets=["lab3"]))
        assert check(lab, dict(vms)) == {vm: "lab3" for vm in vms}
        for h in ("lab1", "lab2"):
            assert "fleetmaint-maintenance" in lab.virsh(h, "secret-list").stdout, f"{h} is marked"
        again = lab.playbook(PLAYBOOK, **dr_vars(lab, "lab1,lab2", disaster_recovery_mode="planned_failover",
                                                 disaster_recovery_targets=["lab3"]))
        assert "changed=0" in again.stdout
        lab.playbook(PLAYBOOK, **dr_vars(lab, "lab1,lab2", disaster_recovery_mode="failback"))
        assert check(lab, vms) == vms
        for h in ("lab1", "lab2"):
            assert "fleetmaint-maintenance" not in lab.virsh(h, "secret-list").stdout
    finally:
        sampler.stop()
    assert sampler.violations == [] and not sampler.errors, (sampler.violations, sampler.errors)
    for vm in vms:
        lab.ctl("vm", "delete", vm)
