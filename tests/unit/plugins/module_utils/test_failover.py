"""Failover: the plan (pure) and the engine's refusals and restarts."""

import json

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.failover import failover_host, plan_failover
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError

POOLS = [{"name": "shared", "type": "dir", "path": "/srv/shared"}, {"name": "local", "type": "dir",
                                                                    "path": "/var/lib/libvirt/images"}]


def xml(name, disk="/srv/shared/{n}.img", net="lab-net", mib=128, hostdev=False):
    d = f"<disk type='file' device='disk'><source file='{disk.format(n=name)}'/><target dev='vda'/></disk>" if disk else ""
    n = f"<interface type='network'><source network='{net}'/></interface>" if net else ""
    h = "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>" \
        if hostdev else ""
    return (f"<domain type='qemu'><name>{name}</name><uuid>00000000-0000-0000-0000-{abs(hash(name)) % 10**12:012d}</uuid>"
            f"<memory unit='MiB'>{mib}</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>{d}{n}{h}</devices></domain>")


def entry(name, running=True, host="hv1"):
    return {"uuid": f"u-{name}", "defined_on": [host], "running_on": [host] if running else [],
            "state": "running" if running else "shutoff", "home_host": host, "autostart": False}


def survivors(nets=("lab-net",)):
    return {h: {"pools": POOLS, "networks": list(nets)} for h in ("hv2", "hv3")}


def planner(mem=4096):
    return {"hosts": [{"name": h, "memory_mib": mem, "vcpus": 8} for h in ("hv2", "hv3")], "vms": [],
            "shared_pools": ["shared"]}


def plan(index, xmls, current=None, surv=None, plan_in=None):
    return plan_failover("hv1", index, xmls, surv or survivors(), current or {}, plan_in or planner())


def test_shared_vms_are_spread_over_the_survivors():
    names = ["a", "b"]
    p = plan({n: entry(n) for n in names}, {n: xml(n) for n in names})
    assert sorted(r["vm"] for r in p["restart"]) == names
    assert {r["destination"] for r in p["restart"]} == {"hv2", "hv3"}, "balanced, not all on one host"
    assert p["unrecoverable"] == [] and p["already_running"] == []


def test_local_disk_hostdev_and_missing_network_are_reported_unrecoverable():
    index = {"loc": entry("loc"), "dev": entry("dev"), "net": entry("net"), "ok": entry("ok")}
    xmls = {"loc": xml("loc", disk="/var/lib/libvirt/images/{n}.img"), "dev": xml("dev", hostdev=True),
            "net": xml("net", net="other-net"), "ok": xml("ok")}
    p = plan(index, xmls)
    reasons = {u["vm"]: u["reason"] for u in p["unrecoverable"]}
    assert "local storage" in reasons["loc"] and "comes back when hv1 does" in reasons["loc"]
    assert "host device" in reasons["dev"]
    assert "network(s) other-net" in reasons["net"]
    assert [r["vm"] for r in p["restart"]] == ["ok"]


def test_a_vm_already_running_elsewhere_is_left_alone_and_our_interrupted_restart_is_finished():
    index = {"a": entry("a"), "b": entry("b"), "c": entry("c")}
    current = {"u-a": {"running_on": ["hv3"], "defined_on": ["hv3"]}, "u-b": {"running_on": [], "defined_on": ["hv2"]},
               "u-c": {"running_on": [], "defined_on": ["hv3"]}}
    p = plan_failover("hv1", index, {n: xml(n) for n in index}, survivors(), current, planner(), {}, {"b": "hv2"})
    assert p["already_running"] == [{"vm": "a", "host": "hv3"}]
    assert p["start_defined"] == [{"vm": "b", "destination": "hv2"}] and p["restart"] == []
    assert [n["vm"] for n in p["not_running"]] == ["c"], "shut down on hv3 by someone else: not started"


def test_vms_not_running_at_backup_time_stay_defined_on_the_dead_host():
    p = plan({"off": entry("off", running=False), "x": entry("x", host="hv9")}, {"off": xml("off")})
    assert [n["vm"] for n in p["not_running"]] == ["off"] and p["restart"] == []


def test_no_capacity_is_unrecoverable_not_overcommitted():
    p = plan({"big": entry("big")}, {"big": xml("big", mib=8192)}, plan_in=planner(mem=4096))
    assert p["restart"] == [] and p["unrecoverable"][0]["vm"] == "big"
    assert p["unrecoverable"][0]["reason"].startswith("no capacity")


def test_another_vm_of_the_same_name_on_a_survivor_blocks_the_restart():
    p = plan_failover("hv1", {"a": entry("a")}, {"a": xml("a")}, survivors(), {}, planner(), {"a": ["hv2"]})
    assert p["restart"] == [] and "another VM named a (another UUID) is on hv2" in p["unrecoverable"][0]["reason"]


def test_missing_definition_is_unrecoverable():
    p = plan({"a": entry("a")}, {})
    assert p["unrecoverable"] == [{"vm": "a", "reason": "its definition is missing from the backup"}]


def params(tmp_path, **kw):
    p = {"host": "hv1", "uris": ["test:///default"], "failed_uri": None, "backup_dir": str(tmp_path / "b"),
         "fence_record_dir": str(tmp_path / "f"), "fenced": True, "fence_evidence": "", "shared_pools": [],
         "memory_headroom": 0, "probe_timeout": 3}
    p.update(kw)
    return p


def test_failover_refuses_an_unfenced_host_before_reading_anything(tmp_path):
    with pytest.raises(FleetmaintError, match="not fenced"):
        failover_host(params(tmp_path, fenced=False))
    assert not (tmp_path / "f").exists()


def test_failover_refuses_when_the_failed_host_answers(tmp_path):
    pytest.importorskip("libvirt")
    with pytest.raises(FleetmaintError, match="answers as"):
        failover_host(params(tmp_path, failed_uri="test:///default"))


def test_failover_needs_a_backup_that_knows_the_host(tmp_path):
    with pytest.raises(FleetmaintError, match="no backup"):
        failover_host(params(tmp_path))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.json").write_text(json.dumps({"a": entry("a", host="hv7")}))
    with pytest.raises(FleetmaintError, match="no VM on 'hv1'.*hv7"):
        failover_host(params(tmp_path))


def test_failover_restarts_from_the_backup_then_changes_nothing(tmp_path):
    """On libvirt's test driver: the dead host's VM is defined and started on the survivor, the fence record
    lists it, and a second run finds it running and changes nothing."""
    libvirt = pytest.importorskip("libvirt")
    b = tmp_path / "b"
    b.mkdir()
    name = "dr-unit"
    uuid = "6d1f9a4e-3b1c-4c55-9a70-5d0e6f1a2b3c"
    (b / f"{name}.xml").write_text(f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>"
                                   "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>")
    (b / "index.json").write_text(json.dumps({name: dict(entry(name), uuid=uuid)}))
    conn = libvirt.open("test:///default")  # keeps the test driver's state alive between the calls
    full = failover_host(params(tmp_path), check_mode=True)
    assert full["plan"]["restart"] == [] and full["unrecoverable"][0]["vm"] == name
    assert "no capacity" in full["unrecoverable"][0]["reason"], "the test domain fills the test driver's 3 GiB"
    busy = conn.lookupByName("test")
    busy.destroy()
    try:
        check = failover_host(params(tmp_path), check_mode=True)
        assert check["changed"] is True and [r["vm"] for r in check["plan"]["restart"]] == [name]
        assert not (tmp_path / "f").exists(), "check mode writes no record"
        r = failover_host(params(tmp_path))
        assert r["recovered"] == [{"vm": name, "host": conn.getHostname()}]
        assert conn.lookupByName(name).isActive()
        record = json.loads((tmp_path / "f" / "hv1.fenced").read_text())
        assert record["recovered"] == {name: conn.getHostname()}
        again = failover_host(params(tmp_path))
        assert again["changed"] is False and again["already_running"] == [{"vm": name, "host": conn.getHostname()}]
    finally:
        try:
            d = conn.lookupByName(name)
            d.destroy()
            d.undefine()
        except libvirt.libvirtError:
            pass
        busy.create()
        conn.close()
