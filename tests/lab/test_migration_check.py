"""migration_check on the lab: every blocker the lab can really produce is produced and reported."""

from __future__ import annotations

import os

import pytest


def codes(result, vm, dest):
    pair = next(r for r in result["results"] if r["vm"] == vm and r["destination"] == dest)
    return pair["ok"], sorted(f["code"] for f in pair["findings"]), pair


@pytest.fixture(scope="module")
def scene(lab):
    """VMs on lab1 in every state and shape the checks must see through."""
    tmp = lab.tmp
    with open(os.path.join(tmp, "mc-net.xml"), "w") as f:
        f.write("<network><name>mc-solo</name><bridge name='br-mcsolo'/></network>")
    lab.virsh("lab1", "net-define", os.path.join(tmp, "mc-net.xml"))
    lab.virsh("lab1", "net-start", "mc-solo")
    for pool in ("mc-only", "mc-extra"):
        lab.virsh("lab1", "pool-define-as", pool, "dir", "--target", f"/var/lib/libvirt/{pool}")
        lab.virsh("lab1", "pool-build", pool)
        lab.virsh("lab1", "pool-start", pool)
    vms = {
        "mc-ok": [],
        "mc-hot": ["--memory", "160", "--dirty-mb", "80", "--dirty-rate", "40"],
        "mc-solo": ["--network", "mc-solo"],
        "mc-pathless": ["--disk", "local", "--pool", "mc-only"],
        "mc-local": ["--disk", "local", "--pool", "mc-extra"],
        "mc-paused": [], "mc-off": [], "mc-transient": [],
        "mc-skylake": ["--no-start"], "mc-pci": ["--no-start"],
    }
    # The guests that run boot all at once (one after another took 40 s of the suite); the two never started
    # are only defined.
    lab.create_at_once({n: "lab1" for n, a in vms.items() if "--no-start" not in a}, each=vms)
    for name in ("mc-skylake", "mc-pci"):
        lab.ctl("vm", "create", name, "--host", "lab1", *vms[name])
    lab.virsh("lab1", "suspend", "mc-paused")
    lab.virsh("lab1", "destroy", "mc-off")
    lab.virsh("lab1", "undefine", "mc-transient")  # still running: now transient
    # A guest CPU the TCG hosts cannot provide, and a PCI passthrough device (defined, never started).
    xml = lab.virsh("lab1", "dumpxml", "mc-skylake").stdout.replace(
        "<model fallback='forbid'>qemu64</model>", "<model fallback='forbid'>Skylake-Server</model>")
    with open(os.path.join(tmp, "mc-skylake.xml"), "w") as f:
        f.write(xml)
    lab.virsh("lab1", "define", os.path.join(tmp, "mc-skylake.xml"))
    with open(os.path.join(tmp, "hostdev.xml"), "w") as f:
        f.write("<hostdev mode='subsystem' type='pci' managed='yes'><source>"
                "<address domain='0x0000' bus='0x3b' slot='0x00' function='0x1'/></source></hostdev>")
    lab.virsh("lab1", "attach-device", "mc-pci", os.path.join(tmp, "hostdev.xml"), "--config")
    yield vms
    for name in vms:
        lab.ctl("vm", "delete", name, check=False)
    lab.virsh("lab1", "net-destroy", "mc-solo", check=False)
    lab.virsh("lab1", "net-undefine", "mc-solo", check=False)
    for pool in ("mc-only", "mc-extra"):
        lab.virsh("lab1", "pool-destroy", pool, check=False)
        lab.virsh("lab1", "pool-undefine", pool, check=False)


def test_every_vm_against_every_destination(lab, scene):
    r = lab.check(uri=lab.uri("lab1"), shared_pools=["shared", "mc-only"],
                  dest_uris=[lab.uri("lab2"), lab.uri("lab1"), "qemu+tcp://127.0.0.99/system"])
    assert not r.get("failed"), r.get("msg")
    assert r["changed"] is False
    assert r["checked"] == len(scene) * 3
    expect_lab2 = {
        "mc-ok": (True, []),
        "mc-hot": (True, []),
        "mc-solo": (False, ["network_missing"]),
        "mc-pathless": (False, ["disk_path_missing"]),
        "mc-local": (False, ["disk_not_shared"]),
        "mc-paused": (True, ["vm_paused"]),
        "mc-off": (False, ["vm_not_running"]),
        "mc-transient": (True, ["vm_transient"]),
        "mc-skylake": (False, ["cpu_incompatible", "vm_not_running"]),
        "mc-pci": (False, ["hostdev_passthrough", "vm_not_running"]),
    }
    for vm, (ok, found) in expect_lab2.items():
        got_ok, got, pair = codes(r, vm, "lab2")
        assert (got_ok, got) == (ok, found), f"{vm}: {pair['findings']}"
    solo = codes(r, "mc-solo", "lab2")[2]
    assert "network 'mc-solo'" in solo["findings"][0]["message"] and "lab2" in solo["findings"][0]["message"]
    sky = codes(r, "mc-skylake", "lab2")[2]
    cpu = next(f for f in sky["findings"] if f["code"] == "cpu_incompatible")
    assert "Skylake-Server" in cpu["message"]
    for vm in scene:
        ok, found = codes(r, vm, "lab1")[:2]
        assert not ok and "same_host" in found
        ok, found, pair = codes(r, vm, "qemu+tcp://127.0.0.99/system")
        assert not ok and found == ["dest_unreachable"] and "127.0.0.99" in pair["findings"][0]["message"]


def test_copy_storage_turns_local_disk_into_a_pool_question(lab, scene):
    r = lab.check(uri=lab.uri("lab1"), name="mc-local", dest_uris=[lab.uri("lab2")], copy_storage="all")
    ok, found = codes(r, "mc-local", "lab2")[:2]
    assert not ok and found == ["disk_not_shared", "pool_missing"]
    sev = {f["code"]: f["severity"] for f in r["results"][0]["findings"]}
    assert sev == {"disk_not_shared": "warning", "pool_missing": "blocker"}


def test_too_little_memory(lab, scene):
    avail = lab.facts()["lab2"]["host"]["memory_available_mib"]
    r = lab.check(uri=lab.uri("lab1"), name="mc-ok", dest_uris=[lab.uri("lab2")], memory_headroom=avail)
    ok, found, pair = codes(r, "mc-ok", "lab2")
    assert not ok and found == ["insufficient_memory"]
    assert f"{pair['findings'][0]['detail']['available_mib']}" in pair["findings"][0]["message"]


def test_unknown_vm_fails_clearly(lab, scene):
    r = lab.check(uri=lab.uri("lab1"), name="mc-nope", dest_uris=[lab.uri("lab2")])
    assert r.get("failed") is True and "VM 'mc-nope' not found on lab1" in r["msg"]


def test_dirty_rate_estimate_within_a_factor_of_two(lab, scene):
    r = lab.check(uri=lab.uri("lab1"), names=["mc-hot", "mc-ok"], dest_uris=[lab.uri("lab2")],
                  measure_dirty_rate=True, dirty_rate_seconds=1, bandwidth=16, max_downtime=300)
    hot, idle = r["estimates"]["mc-hot"], r["estimates"]["mc-ok"]
    assert hot["dirty_rate"]["measured"] is True
    configured_mib = 40e6 / 1048576  # the guest dirties 40 MB/s
    assert configured_mib / 2 <= hot["dirty_rate"]["mib_per_s"] <= configured_mib * 2, hot["dirty_rate"]
    assert hot["converges"] is False and hot["rho"] > 1
    assert idle["dirty_rate"]["measured"] is True and idle["converges"] is True
    assert idle["total_time_s"] > 0 and idle["downtime_ms"] <= 300


def cpu_compare(lab, vm):
    path = os.path.join(lab.tmp, f"{vm}-cmp.xml")
    with open(path, "w") as f:
        f.write(lab.virsh("lab1", "dumpxml", "--inactive", vm).stdout)
    res = lab.virsh("lab1", "hypervisor-cpu-compare", path, "--virttype", "qemu", check=False)
    return (res.stdout + res.stderr).lower()


def test_cpu_baseline_reports_rewrites_and_makes_the_vm_runnable(lab, scene):
    uris = [lab.uri(h) for h in ("lab1", "lab2", "lab3")]
    r = lab.baseline(uris=uris)
    assert not r.get("failed"), r.get("msg")
    assert r["changed"] is False
    assert r["incompatible"] == ["mc-skylake"]
    assert r["baseline"]["model"] and r["baseline"]["mode"] == "custom"
    assert "qemu64" in r["fleet_usable_models"]
    sky = next(v for v in r["vms"] if v["name"] == "mc-skylake")
    assert sorted(x["host"] for x in sky["not_runnable_on"]) == ["lab1", "lab2", "lab3"]
    assert all(v["runnable_everywhere"] for v in r["vms"] if v["name"] != "mc-skylake")

    # Check mode with --diff shows the change and makes none.
    r = lab.baseline("--check", "--diff", uris=uris, apply=True)
    assert r["changed"] is True and r["vms"] and "Skylake-Server" in r["stdout"]
    assert "Skylake-Server" in lab.virsh("lab1", "dumpxml", "--inactive", "mc-skylake").stdout
    # libvirt's own verdict before: the lab guest says check='none', so a start would not verify it.
    assert "incompatible" in cpu_compare(lab, "mc-skylake")

    r = lab.baseline(uris=uris, apply=True)
    assert r["changed"] is True
    sky = next(v for v in r["vms"] if v["name"] == "mc-skylake")
    assert sky["rewritten"] is True and sky["needs_reboot"] is False
    xml = lab.virsh("lab1", "dumpxml", "--inactive", "mc-skylake").stdout
    assert "Skylake-Server" not in xml and f">{r['baseline']['model']}</model>" in xml
    assert "incompatible" not in cpu_compare(lab, "mc-skylake")
    assert "check='partial'" in xml or 'check="partial"' in xml
    lab.virsh("lab1", "start", "mc-skylake")  # verified at start (check='partial'), and it runs
    assert lab.where("mc-skylake")["running_on"] == ["lab1"]

    again = lab.baseline(uris=uris, apply=True)
    assert again["changed"] is False and again["incompatible"] == []
