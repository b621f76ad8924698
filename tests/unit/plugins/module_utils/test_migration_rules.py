import copy

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import (
    BLOCKER, WARNING, blockers, check_move, finding, stays,
)

SRC = {"hostname": "hv1", "uuid": "u1", "cpu": {"count": 16}, "memory_available_mib": 60000,
       "guests": [{"arch": "x86_64", "domain_types": ["kvm", "qemu"], "machines": ["pc-q35-7.2", "pc-i440fx-7.2"]}]}
DST = {"hostname": "hv2", "uuid": "u2", "cpu": {"count": 8}, "memory_available_mib": 4096,
       "guests": [{"arch": "x86_64", "domain_types": ["kvm", "qemu"], "machines": ["pc-q35-7.2", "pc-i440fx-7.2"]}]}
POOLS = [{"name": "local", "type": "dir", "path": "/var/lib/libvirt/images", "active": True},
         {"name": "vmstore", "type": "dir", "path": "/srv/vms", "active": True}]
NETS = [{"name": "prod", "active": True}, {"name": "backup", "active": False}]
VM = {"name": "web1", "state": "running", "persistent": True, "memory_mib": 2048, "vcpus": 2, "arch": "x86_64",
      "virt_type": "kvm", "machine": "pc-q35-7.2", "hostdevs": [],
      "interfaces": [{"network": "prod", "mac": "52:54:00:00:00:01"}],
      "disks": [{"target": "vda", "device": "disk", "type": "file", "path": "/srv/vms/web1.qcow2",
                 "pool": "vmstore", "storage": "shared", "readonly": False}]}


def codes(findings, severity=None):
    return sorted(f["code"] for f in findings if severity is None or f["severity"] == severity)


def vm(**changes):
    v = copy.deepcopy(VM)
    v.update(changes)
    return v


def test_healthy_vm_has_no_findings():
    assert check_move(vm(), SRC, DST, POOLS, NETS) == []


def test_same_host_by_name_or_uuid():
    assert "same_host" in codes(check_move(vm(), SRC, dict(DST, hostname="hv1"), POOLS, NETS))
    assert "same_host" in codes(check_move(vm(), SRC, dict(DST, uuid="u1"), POOLS, NETS))


@pytest.mark.parametrize("state,code,severity", [
    ("shutoff", "vm_not_running", BLOCKER), ("crashed", "vm_not_running", BLOCKER), ("paused", "vm_paused", WARNING),
])
def test_vm_state(state, code, severity):
    f = check_move(vm(state=state), SRC, DST, POOLS, NETS)
    assert codes(f) == [code] and f[0]["severity"] == severity


QEMU72 = dict(SRC, hypervisor="QEMU", hypervisor_version="7.2.19")


@pytest.mark.parametrize("facts,source,code", [
    # Arrived by migration, never ran since: disks inactive, QEMU 7.2 would crash it on the next move.
    ({"vcpu_time_ns": 0, "arrived_by": "migration"}, QEMU72, "vm_paused_disks_inactive"),
    # Nothing says how it began (libvirt forgot the job after a daemon restart): treated the same way.
    ({"vcpu_time_ns": 0, "arrived_by": None}, QEMU72, "vm_paused_disks_inactive"),
    # A fixed QEMU, a VM that ran here since (paused by its user), one started here, a driver that
    # cannot tell vCPU time: it moves, and arrives paused.
    ({"vcpu_time_ns": 0, "arrived_by": "migration"}, dict(QEMU72, hypervisor_version="10.0.3"), "vm_paused"),
    ({"vcpu_time_ns": 52000000, "arrived_by": "migration"}, QEMU72, "vm_paused"),
    ({"vcpu_time_ns": 0, "arrived_by": "start"}, QEMU72, "vm_paused"),
    ({"vcpu_time_ns": None, "arrived_by": "migration"}, QEMU72, "vm_paused"),
    ({"vcpu_time_ns": 0, "arrived_by": "migration"}, dict(QEMU72, hypervisor="Test"), "vm_paused"),
])
def test_a_paused_vm_moves_only_where_qemu_can_move_it(facts, source, code):
    f = check_move(vm(state="paused", **facts), source, DST, POOLS, NETS)
    assert codes(f) == [code]
    if code == "vm_paused_disks_inactive":
        msg = f[0]["message"]
        assert f[0]["severity"] == BLOCKER and stays(f)
        assert "web1 is paused on hv1" in msg and "QEMU 7.2.19" in msg and "virsh resume web1" in msg
    else:
        assert f[0]["severity"] == WARNING and not stays(f)


def test_a_paused_vm_without_disks_moves():
    f = check_move(vm(state="paused", disks=[], vcpu_time_ns=0, arrived_by="migration"), QEMU72, DST, POOLS, NETS)
    assert codes(f) == ["vm_paused"]


def test_stays_only_when_every_blocker_is_about_the_vm_itself():
    f = check_move(vm(state="paused", vcpu_time_ns=0, arrived_by="migration", memory_mib=9000), QEMU72, DST,
                   POOLS, NETS)
    assert codes(f, BLOCKER) == ["insufficient_memory", "vm_paused_disks_inactive"] and not stays(f)


def test_transient_is_a_warning():
    f = check_move(vm(persistent=False), SRC, DST, POOLS, NETS)
    assert codes(f, WARNING) == ["vm_transient"] and not blockers(f)


def test_passthrough_blocks():
    f = check_move(vm(hostdevs=[{"type": "pci", "address": {"bus": "0x3b"}}]), SRC, DST, POOLS, NETS)
    assert codes(f, BLOCKER) == ["hostdev_passthrough"]
    assert "hv1" in f[0]["message"]


def test_memory_with_headroom():
    assert codes(check_move(vm(memory_mib=3900), SRC, DST, POOLS, NETS, memory_headroom_mib=256)) == \
        ["insufficient_memory"]
    assert check_move(vm(memory_mib=3900), SRC, DST, POOLS, NETS, memory_headroom_mib=196) == []


def test_vcpus_exceed_host():
    assert codes(check_move(vm(vcpus=12), SRC, DST, POOLS, NETS)) == ["vcpus_exceed_host"]


def test_network_missing_or_inactive():
    f = check_move(vm(interfaces=[{"network": "dmz", "mac": "m"}, {"network": "backup", "mac": "n"}]),
                   SRC, DST, POOLS, NETS)
    assert codes(f) == ["network_missing", "network_missing"]
    assert "does not exist" in f[0]["message"] and "not active" in f[1]["message"]


def test_bridge_interface_needs_no_network():
    assert check_move(vm(interfaces=[{"network": None, "bridge": "br0"}]), SRC, DST, POOLS, NETS) == []


def test_shared_disk_path_must_be_a_pool_on_destination():
    f = check_move(vm(), SRC, DST, [POOLS[0]], NETS)
    assert codes(f) == ["disk_path_missing"] and "/srv/vms/web1.qcow2" in f[0]["message"]


def test_local_disk_needs_copy_storage_and_the_pool():
    local = [{"target": "vda", "device": "disk", "type": "file", "path": "/var/lib/libvirt/images/web1.img",
              "pool": "local", "storage": "local", "readonly": False}]
    assert codes(check_move(vm(disks=local), SRC, DST, POOLS, NETS), BLOCKER) == ["disk_not_shared"]
    f = check_move(vm(disks=local), SRC, DST, POOLS, NETS, copy_storage="all")
    assert codes(f, BLOCKER) == [] and codes(f, WARNING) == ["disk_not_shared"]
    f = check_move(vm(disks=local), SRC, DST, [POOLS[1]], NETS, copy_storage="all")
    assert codes(f, BLOCKER) == ["pool_missing"] and "'local'" in blockers(f)[0]["message"]


def test_disk_in_no_pool_is_unknown_storage():
    d = [{"target": "vda", "device": "disk", "type": "file", "path": "/opt/x.img", "pool": None,
          "storage": "unknown", "readonly": False}]
    assert codes(check_move(vm(disks=d), SRC, DST, POOLS, NETS)) == ["storage_unknown"]


def test_volume_disk_pool_missing():
    d = [{"target": "vda", "device": "disk", "type": "volume", "pool": "ceph", "volume": "a", "storage": "shared"}]
    assert codes(check_move(vm(disks=d), SRC, DST, POOLS, NETS)) == ["pool_missing"]


def test_machine_type_and_emulator():
    assert codes(check_move(vm(machine="pc-q35-8.2"), SRC, DST, POOLS, NETS)) == ["machine_type_unsupported"]
    no_kvm = dict(DST, guests=[dict(DST["guests"][0], domain_types=["qemu"])])
    assert codes(check_move(vm(), SRC, no_kvm, POOLS, NETS)) == ["emulator_missing"]
    assert codes(check_move(vm(arch="aarch64"), SRC, DST, POOLS, NETS)) == ["emulator_missing"]


def test_cpu_comparison_result_is_reported():
    f = check_move(vm(), SRC, DST, POOLS, NETS, cpu_comparison={"compatible": False, "reason": "lacks avx512f"})
    assert codes(f) == ["cpu_incompatible"] and "lacks avx512f" in f[0]["message"]
    assert check_move(vm(), SRC, DST, POOLS, NETS, cpu_comparison={"compatible": None}) == []


def test_tls_and_compression():
    f = check_move(vm(), SRC, DST, POOLS, NETS, tls=True, dest_tls={"configured": False, "how": "x", "detail": "y"})
    assert codes(f) == ["tls_not_configured"]
    f = check_move(vm(), SRC, DST, POOLS, NETS, compression="zstd", compression_accepted=["xbzrle", "mt"])
    assert codes(f) == ["compression_unsupported"] and "xbzrle, mt" in f[0]["message"]
    assert check_move(vm(), SRC, DST, POOLS, NETS, compression="zstd", compression_accepted=None) == []


def test_unknown_code_is_a_programming_error():
    with pytest.raises(ValueError):
        finding("made_up", BLOCKER, "x")


def test_one_local_disk_rule_for_disks_and_luns():
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import is_local_disk
    assert is_local_disk({"device": "disk", "storage": "local"})
    assert is_local_disk({"device": "lun", "storage": "unknown"}), "a LUN holds data like a disk"
    assert not is_local_disk({"device": "disk", "storage": "shared"})
    assert not is_local_disk({"device": "cdrom", "storage": "local"}), "read-only media are not copied"
    assert is_local_disk({"device": "disk"}, "local") and not is_local_disk({"device": "lun", "storage": "local"}, "shared")


def test_no_other_file_filters_disks_by_device():
    import pathlib
    import re
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils import migration_rules
    here = pathlib.Path(migration_rules.__file__).parent
    pattern = re.compile(r"""["']device["'](?:,\s*["']\w+["'])?\]?\)?\s*(?:==|in)\s*\(?["'](?:disk|lun)""")
    old = ['local = [d["target"] for d in x if d["storage"] != "shared" and d["device"] == "disk"]',
           'and d.get("device") == "disk"] if p["copy_storage"] != "none" else []',
           'if disk.get("device", "disk") in ("disk", "lun")']
    assert all(pattern.search(line) for line in old), "the scan finds the rules it replaced"
    hits = [f"{f.name}:{n}" for f in here.parent.rglob("*.py") if f.name not in ("migration_rules.py", "libvirt_xml.py")
            for n, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, f"a second local-disk rule: {hits}"
