"""Two stacks at once, for real: hosts on Debian 12's libvirt 9.0 / QEMU 7.2 and on Debian 13's 11.3 / 10.0.

What a real rolling upgrade meets: old->new moves work, new->old moves work for a VM whose machine type the
older QEMU offers and are refused (before anything moves, nothing changed) for one it does not; the planner
keeps such a VM on upgraded hosts; a rolling upgrade that fails half way converges when run again.
The module starts with lab3 on the new stack (a host already upgraded, where a VM defined there gets the
new machine type) and ends with every host back on the old stack, its VMs gone.
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import REPO, wait_for

LAB_PATCH = str(REPO / "roles" / "rolling_patch" / "tasks" / "patch_lab.yml")
FAIL_PATCH = str(REPO / "tests" / "lab" / "playbooks" / "tasks" / "patch_fail.yml")
HOSTS = ("lab1", "lab2", "lab3")
# name: home host, machine type origin (the host it is defined on decides: pc -> that QEMU's newest i440fx)
VMS = {"ru-a": "lab1", "ru-b": "lab2", "ru-new": "lab3"}


def stacks(lab) -> dict:
    return {h["name"]: (h["stack"], h["versions"].get("libvirt"), h["versions"].get("qemu")) for h in lab.status()["hosts"]}


def machine(lab, vm: str, host: str) -> str:
    return re.search(r"machine='([^']+)'", lab.virsh(host, "dumpxml", vm).stdout).group(1)


def domid(lab, vm: str, host: str) -> str:
    return lab.virsh(host, "domid", vm).stdout.strip()


@pytest.fixture(scope="module")
def mixed(lab):
    """lab1 and lab2 on the old stack, lab3 on the new one; a VM homed on each."""
    assert {h: s[0] for h, s in stacks(lab).items()} == {h: "old" for h in HOSTS}, "the module starts on the old stack"
    lab.ctl("up", "--hosts", "3", "--stack", "new", "--host", "lab3", timeout=900)
    try:
        for name, host in VMS.items():
            lab.ctl("vm", "create", name, "--host", host, "--disk", "shared", "--no-wait")
        wait_for(lambda: all(m["intact"] for m in lab.markers(VMS).values()), 120, what="guests to write markers")
        yield list(VMS)
    finally:
        for name in VMS:
            lab.ctl("vm", "delete", name, check=False)
        lab.ctl("up", "--hosts", "3", "--stack", "old", timeout=300)
        assert {h: s[0] for h, s in stacks(lab).items()} == {h: "old" for h in HOSTS}


def finding(result: dict, code: str) -> dict:
    return next((f for f in result.get("findings", []) if f["code"] == code), None)


def test_moves_between_the_stacks_what_works_what_is_refused_and_nothing_changes_on_refusal(lab, mixed):
    st = stacks(lab)
    assert st["lab1"] == ("old", "9.0.0", st["lab1"][2]) and st["lab1"][2].startswith("7.2")
    assert st["lab3"][0] == "new" and st["lab3"][1].startswith("11.") and st["lab3"][2].startswith("10.")
    assert machine(lab, "ru-a", "lab1") == "pc-i440fx-7.2" and machine(lab, "ru-new", "lab3") == "pc-i440fx-10.0"
    # The collection reads the same versions.
    facts = lab.facts()
    assert facts["lab3"]["host"]["libvirt_version"] == st["lab3"][1]
    assert facts["lab3"]["host"]["hypervisor_version"] == st["lab3"][2]

    # old -> new: no version finding, it moves, its machine type stays what it was.
    r = lab.migrate(name="ru-a", uri=lab.uri("lab1"), dest_uri=lab.uri("lab3"))
    assert r.get("failed") is not True, r.get("msg")
    assert finding(r, "older_destination") is None
    assert lab.placement("ru-a") == (["lab3"], ["lab3"]) and lab.marker("ru-a")["intact"]
    assert machine(lab, "ru-a", "lab3") == "pc-i440fx-7.2"

    # new -> old of a VM whose machine type the old QEMU offers: moves, with the warning.
    r = lab.migrate(name="ru-a", uri=lab.uri("lab3"), dest_uri=lab.uri("lab1"))
    assert r.get("failed") is not True, r.get("msg")
    warn = finding(r, "older_destination")
    assert warn and warn["severity"] == "warning" and "pc-i440fx-7.2" in warn["message"], r.get("findings")
    assert lab.placement("ru-a") == (["lab1"], ["lab1"]) and lab.marker("ru-a")["intact"]

    # new -> old of a VM defined on the new host: refused before anything moves, naming the machine type.
    before = domid(lab, "ru-new", "lab3")
    chk = lab.check(uri=lab.uri("lab3"), name="ru-new", dest_uris=[lab.uri("lab1")])
    pair = chk["results"][0]
    sev = {f["code"]: f["severity"] for f in pair["findings"]}
    assert not pair["ok"] and sev.get("older_destination") == "blocker" and sev.get("machine_type_unsupported") == "blocker"
    r = lab.migrate(name="ru-new", uri=lab.uri("lab3"), dest_uri=lab.uri("lab1"))
    assert r.get("failed") is True and {"older_destination", "machine_type_unsupported"} <= set(r["codes"])
    assert "pc-i440fx-10.0" in r["msg"], r["msg"]
    assert lab.placement("ru-new") == (["lab3"], ["lab3"]) and domid(lab, "ru-new", "lab3") == before, "nothing changed"

    # Evacuating the upgraded host: no old host offers ru-new's machine type, so the whole job is refused
    # before anything moves, and says why.
    r = lab.evacuate(uris=lab.uris(), host="lab3")
    assert r.get("failed") is True and "pc-i440fx-10.0" in r["msg"] and "nothing was moved" in r["msg"], r.get("msg")
    assert lab.placement("ru-new") == (["lab3"], ["lab3"]) and domid(lab, "ru-new", "lab3") == before
    assert "fleetmaint-maintenance" not in lab.virsh("lab3", "secret-list").stdout

    # Compression zstd (multifd) needs libvirt 11 at both ends: refused on the old host, naming it.
    r = lab.migrate(name="ru-a", uri=lab.uri("lab1"), dest_uri=lab.uri("lab3"), compression="zstd")
    assert r.get("failed") is True and "compression_unsupported" in r["codes"] and "lab1" in r["msg"], r.get("msg")
    assert lab.placement("ru-a") == (["lab1"], ["lab1"])
    lab.invariant(mixed)


def rolling_upgrade(lab, tmp_path, level, **extra):
    report = tmp_path / f"report-{level}"
    args = dict(rolling_patch_target_level=level, rolling_patch_tasks=LAB_PATCH, rolling_patch_memory_headroom=256,
                rolling_patch_report_dir=str(report), fleetmaint_lab_patch_stack="new")
    res = lab.playbook("playbooks/rolling_patch.yml", check=False, **dict(args, **extra))
    rep = json.loads((report / "report.json").read_text()) if (report / "report.json").exists() else None
    return res, rep


@pytest.mark.after("test_moves_between_the_stacks_what_works_what_is_refused_and_nothing_changes_on_refusal")
def test_a_rolling_upgrade_that_fails_half_way_converges_when_run_again(lab, mixed, tmp_path):
    # Run 1: lab1 is upgraded; lab2's upgrade fails after its VMs left. ru-new never leaves the new stack.
    res, rep = rolling_upgrade(lab, tmp_path, "U1", rolling_patch_tasks=FAIL_PATCH, rolling_patch_fail_host="lab2",
                               rolling_patch_lab_tasks=LAB_PATCH)
    assert res.returncode != 0 and "lab2: patch failed (test patch step failed on lab2 on purpose)" in res.stdout
    assert "maintenance, empty" in res.stdout and str(tmp_path / "report-U1" / "report.md") in res.stdout
    st = stacks(lab)
    assert (st["lab1"][0], st["lab2"][0], st["lab3"][0]) == ("new", "old", "new")
    where = lab.invariant(mixed)
    assert where["ru-a"] == "lab1" and where["ru-b"] in ("lab1", "lab3") and where["ru-new"] == "lab3", where
    # Stopped at lab2 (serial 1, max_fail_percentage 0): lab2 left empty in maintenance, lab3 never started.
    assert "fleetmaint-maintenance" in lab.virsh("lab2", "secret-list").stdout
    assert "fleetmaint-maintenance" not in lab.virsh("lab3", "secret-list").stdout
    assert "lab2" not in where.values() and all(lab.marker(v)["intact"] for v in mixed)
    hosts = {h["host"]: h for h in rep["hosts"]}
    assert set(hosts) == {"lab1", "lab2"} and hosts["lab1"]["status"] == "patched"
    assert hosts["lab2"]["failed_phase"] == "patch" and hosts["lab2"]["state_after"] == "maintenance, empty"
    assert hosts["lab1"]["versions_before"]["libvirt"] == "9.0.0"
    assert hosts["lab1"]["versions_after"]["libvirt"] == st["lab1"][1] != "9.0.0"
    assert hosts["lab2"]["status"] == "failed" and hosts["lab2"]["versions_after"]["libvirt"] == "9.0.0"

    # Run 2, same level, a working patch step: lab1 is skipped, lab2 and lab3 finish; every VM home.
    res, rep = rolling_upgrade(lab, tmp_path, "U1")
    assert res.returncode == 0, res.stdout[-5000:]
    st = stacks(lab)
    assert {h: s[0] for h, s in st.items()} == {h: "new" for h in HOSTS}
    assert lab.invariant(mixed) == VMS
    assert all(lab.marker(v)["intact"] for v in mixed)
    assert machine(lab, "ru-new", "lab3") == "pc-i440fx-10.0" and machine(lab, "ru-a", "lab1") == "pc-i440fx-7.2"
    assert not any("fleetmaint-maintenance" in lab.virsh(h, "secret-list").stdout for h in HOSTS)
    first_lab1 = next(r for r in rep["records"] if r["host"] == "lab1")
    hosts = {h["host"]: h for h in rep["hosts"]}
    assert hosts["lab1"]["status"] == "patched" and first_lab1["level_after"] == "U1", "lab1 skipped, its record kept"
    assert [v["vm"] for v in rep["vms"] if v["maintenance_of"] == "lab2" and v["direction"] == "out"] == [], \
        "lab2 was already empty when the run resumed"
    assert {v["vm"] for v in rep["vms"] if v["maintenance_of"] == "lab2" and v["direction"] == "home"} == {"ru-b"}
    assert hosts["lab2"]["versions_before"]["libvirt"] == "9.0.0"
    assert {hosts[h]["versions_after"]["libvirt"] for h in HOSTS} == {st["lab1"][1]}
    # ru-new left lab3 for an upgraded host only, and came back.
    out = [v for v in rep["vms"] if v["vm"] == "ru-new" and v["direction"] == "out" and v["result"] == "moved"]
    assert len(out) == 1 and out[0]["destination"] in ("lab1", "lab2"), out
    assert "runs before" in (tmp_path / "report-U1" / "report.md").read_text()

    # Both ends on libvirt 11: multifd compression (zstd) moves a VM, with parallel connections.
    r = lab.migrate(name="ru-a", uri=lab.uri("lab1"), dest_uri=lab.uri("lab2"), compression="zstd")
    assert r.get("failed") is not True, r.get("msg")
    assert r["options"]["compression"] == "zstd" and "PARALLEL" in r["options"]["flags"], r["options"]
    assert lab.placement("ru-a") == (["lab2"], ["lab2"]) and lab.marker("ru-a")["intact"]
