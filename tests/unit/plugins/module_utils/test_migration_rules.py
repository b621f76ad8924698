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


# --- two stacks at once (a rolling upgrade): the recorded capabilities and versions of a Debian 12 host
# (QEMU 7.2.22, libvirt 9.0.0) and a Debian 13 host (QEMU 10.0.13, libvirt 11.3.0) of the lab.

def recorded_host(name, caps, version):
    """Host facts as hypervisor_facts builds them, from a recorded `virsh capabilities` and `virsh version`."""
    import pathlib
    import re
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import parse_capabilities
    fixtures = pathlib.Path(__file__).resolve().parents[2] / "fixtures"
    parsed = parse_capabilities((fixtures / caps).read_text())
    text = (fixtures / version).read_text()
    return {"hostname": name, "uuid": parsed["uuid"], "hypervisor": "QEMU", "cpu": {"count": 16},
            "hypervisor_version": re.search(r"Running hypervisor: QEMU (\S+)", text).group(1),
            "libvirt_version": re.search(r"Running against daemon: (\S+)", text).group(1),
            "memory_available_mib": 60000, "guests": parsed["guests"]}


OLD = recorded_host("lab3", "capabilities_debian12_qemu72.xml", "version_debian12_qemu72.txt")
NEW = recorded_host("lab2", "capabilities_debian13_qemu100.xml", "version_debian13_qemu100.txt")
STACK_MSG = "lab3 runs QEMU 7.2.22 / libvirt 9.0.0, older than lab2's QEMU 10.0.13 / libvirt 11.3.0"


def machines_of(host):
    return {m for g in host["guests"] if g["arch"] == "x86_64" and "kvm" in g["domain_types"] for m in g["machines"]}


def test_the_recorded_stacks_are_what_the_rules_read():
    assert (OLD["hypervisor_version"], OLD["libvirt_version"]) == ("7.2.22", "9.0.0")
    assert (NEW["hypervisor_version"], NEW["libvirt_version"]) == ("10.0.13", "11.3.0")
    assert "pc-i440fx-7.2" in machines_of(OLD) and "pc-i440fx-7.2" in machines_of(NEW)
    assert "pc-i440fx-10.0" in machines_of(NEW) and "pc-i440fx-10.0" not in machines_of(OLD)
    assert "older_destination" in migration_rules_codes()


def migration_rules_codes():
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import CODES
    return CODES


def test_old_to_new_is_clean():
    # Verified in the lab: a pc-i440fx-7.2 guest moves live from the old stack to the new one.
    assert check_move(vm(machine="pc-i440fx-7.2"), OLD, NEW, POOLS, NETS) == []


def test_new_to_old_with_a_machine_type_the_old_stack_offers_is_a_warning():
    # Verified in the lab: the same guest moves back; it is a move to an older stack all the same.
    f = check_move(vm(machine="pc-i440fx-7.2"), NEW, OLD, POOLS, NETS)
    assert codes(f) == ["older_destination"] and not blockers(f)
    (w,) = f
    assert w["severity"] == WARNING
    assert w["message"] == (f"{STACK_MSG}: machine type pc-i440fx-7.2 of web1 is offered there; once it runs there "
                            "it cannot use what the newer QEMU added")
    assert w["detail"] == {"machine": "pc-i440fx-7.2", "offered": True, "source_qemu": "10.0.13",
                           "source_libvirt": "11.3.0", "dest_qemu": "7.2.22", "dest_libvirt": "9.0.0"}


def test_a_vm_defined_on_the_new_stack_is_refused_on_the_old_one_naming_its_machine_type():
    # Verified in the lab: libvirt refuses it ("does not support machine type 'pc-i440fx-10.0'"); the rules
    # say so before anything moves.
    f = check_move(vm(name="newvm", machine="pc-i440fx-10.0"), NEW, OLD, POOLS, NETS)
    assert codes(f, BLOCKER) == ["machine_type_unsupported", "older_destination"] and codes(f, WARNING) == []
    by_code = {x["code"]: x for x in f}
    assert by_code["older_destination"]["message"] == \
        f"{STACK_MSG}: machine type pc-i440fx-10.0 of newvm is not offered there"
    unsupported = by_code["machine_type_unsupported"]["message"]
    assert unsupported.startswith("lab3 does not offer machine type pc-i440fx-10.0 that newvm uses")
    assert STACK_MSG in unsupported
    assert by_code["machine_type_unsupported"]["detail"] == {"machine": "pc-i440fx-10.0", "older_destination": True}


def test_the_same_vm_moves_freely_between_new_hosts():
    other_new = dict(NEW, hostname="lab4", uuid="u4")
    assert check_move(vm(machine="pc-i440fx-10.0"), NEW, other_new, POOLS, NETS) == []


def test_machine_type_unsupported_on_a_host_that_is_not_older_does_not_mention_versions():
    f = check_move(vm(machine="pc-i440fx-10.0"), OLD, dict(OLD, hostname="lab1", uuid="u1"), POOLS, NETS)
    assert codes(f) == ["machine_type_unsupported"]
    assert f[0]["message"] == "lab1 does not offer machine type pc-i440fx-10.0 that web1 uses"


@pytest.mark.parametrize("src,dst,older", [
    (("10.0.0", "9.0.0"), ("9.2.0", "9.0.0"), True),      # 10 > 9 as numbers, not as text
    (("7.2.22", "11.10.0"), ("7.2.22", "11.3.0"), True),  # libvirt alone is older: 11.10 > 11.3
    (("7.2.22", "9.0.0"), ("7.2.3", "9.0.0"), True),      # the micro release counts
    (("7.2", "9.0.0"), ("7.2.0", "9.0.0"), False),        # 7.2 is 7.2.0
    (("7.2.22", "9.0.0"), ("10.0.13", "9.0.0"), False),   # newer
    (("10.0.13", "11.3.0"), (None, "11.3.0"), False),     # QEMU not known there: only libvirt compared
    (("10.0.13", "11.3.0"), ("unknown", None), False),    # nothing comparable: not older
])
def test_versions_compare_numerically(src, dst, older):
    source = dict(SRC, hypervisor_version=src[0], libvirt_version=src[1])
    dest = dict(DST, hypervisor_version=dst[0], libvirt_version=dst[1])
    f = check_move(vm(machine="pc-i440fx-7.2"), source, dest, POOLS, NETS)
    assert codes(f) == (["older_destination"] if older else [])
    if older:
        assert f[0]["severity"] == WARNING


def test_older_destination_without_its_machine_types_is_a_warning_that_says_so():
    no_guests = {k: v for k, v in OLD.items() if k != "guests"}
    f = check_move(vm(machine="pc-i440fx-7.2"), NEW, no_guests, POOLS, NETS)
    assert codes(f) == ["older_destination"] and f[0]["severity"] == WARNING
    assert "whether machine type pc-i440fx-7.2 of web1 is offered there is not known" in f[0]["message"]


def test_compression_is_checked_on_the_destination_too():
    f = check_move(vm(), SRC, DST, POOLS, NETS, compression="zstd", compression_accepted=["zstd", "mt"],
                   dest_compression_accepted=["xbzrle"])
    assert codes(f) == ["compression_unsupported"]
    assert f[0]["message"] == "compression 'zstd' is not accepted by libvirt on hv2 (accepted: xbzrle)"
    assert f[0]["detail"] == {"compression": "zstd", "host": "hv2", "accepted": ["xbzrle"]}
    f = check_move(vm(), SRC, DST, POOLS, NETS, compression="zstd", compression_accepted=[],
                   dest_compression_accepted=[])
    assert [x["detail"]["host"] for x in f] == ["hv1", "hv2"] and "(accepted: none)" in f[1]["message"]
    assert check_move(vm(), SRC, DST, POOLS, NETS, compression="zstd", dest_compression_accepted=["zstd"]) == []
    assert check_move(vm(), SRC, DST, POOLS, NETS, compression="none", dest_compression_accepted=[]) == []


def test_machine_offered_reads_the_destination_as_the_machine_rule_does():
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import machine_offered
    assert machine_offered(vm(machine="pc-i440fx-10.0", virt_type="qemu"), OLD) is False
    assert machine_offered(vm(machine="pc-i440fx-10.0", virt_type="qemu"), NEW) is True
    assert machine_offered(vm(machine="pc-i440fx-7.2", virt_type="qemu"), OLD) is True
    assert machine_offered(vm(machine=None), OLD) is None and machine_offered(vm(machine="pc"), {"hostname": "x"}) is None
