"""CPU compatibility from recorded domain capabilities: an older (Haswell) and a newer (Skylake) KVM host,
and the lab's TCG host, so mismatches are exercised although all lab hosts share one CPU."""

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cpu_compat import (
    cpu_runnable, fleet_usable_models, merge_cpu_verdicts, parse_domain_capabilities,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import parse_domain


@pytest.fixture
def caps(fixture_text):
    return {name: parse_domain_capabilities(fixture_text(f"domcapabilities_{name}.xml"))
            for name in ("kvm_haswell", "kvm_skylake", "lab_tcg")}


def custom(model, *features):
    return {"mode": "custom", "model": model, "features": [{"name": f, "policy": "require"} for f in features]}


def test_parse(caps):
    old = caps["kvm_haswell"]
    assert old["host_model"]["model"] == "Haswell-noTSX-IBRS"
    assert "avx2" in old["host_model"]["features"] and "hle" in old["host_model"]["disabled"]
    assert old["custom_models"]["Skylake-Server-IBRS"] == "no"
    assert old["host_passthrough"] is True
    assert caps["lab_tcg"]["host_passthrough"] is False
    assert caps["lab_tcg"]["custom_models"]["qemu64"] == "yes"


def test_newer_cpu_cannot_run_on_older_host(caps):
    vm = custom("Skylake-Server-IBRS", "avx512f")
    assert cpu_runnable(vm, caps["kvm_skylake"])["compatible"] is True
    old = cpu_runnable(vm, caps["kvm_haswell"])
    assert old["compatible"] is False and "Skylake-Server-IBRS is not usable" in old["reason"]


def test_feature_the_host_disables_is_missing(caps):
    res = cpu_runnable(custom("Haswell-noTSX-IBRS", "hle", "avx2"), caps["kvm_haswell"])
    assert res["compatible"] is False and res["missing_features"] == ["hle"]
    assert "lacks required CPU features: hle" in res["reason"]
    # The newer host does not disable it: the capabilities prove nothing missing there.
    assert cpu_runnable(custom("Haswell-noTSX-IBRS", "hle"), caps["kvm_skylake"])["compatible"] is True


def test_older_cpu_runs_everywhere(caps):
    for host in ("kvm_haswell", "kvm_skylake"):
        assert cpu_runnable(custom("SandyBridge"), caps[host])["compatible"] is True


def test_unknown_model_and_modes(caps):
    assert "unknown to the destination" in cpu_runnable(custom("Zen9"), caps["kvm_haswell"])["reason"]
    assert cpu_runnable({"mode": None}, caps["kvm_haswell"])["compatible"] is True
    assert cpu_runnable({"mode": "host-model"}, caps["kvm_haswell"])["compatible"] is True
    assert cpu_runnable({"mode": "host-passthrough"}, caps["kvm_haswell"])["compatible"] is None
    assert cpu_runnable({"mode": "host-passthrough"}, caps["lab_tcg"])["compatible"] is False


def test_lab_guest_cpu_on_tcg(caps, fixture_text):
    vm = parse_domain(fixture_text("domain_running_local_disk.xml"))
    assert vm["cpu"]["model"] == "qemu64"
    assert cpu_runnable(vm["cpu"], caps["lab_tcg"])["compatible"] is True
    assert cpu_runnable(custom("Skylake-Server"), caps["lab_tcg"])["compatible"] is False


def test_unusable_model_runs_with_the_host_lacks_disabled(caps):
    tcg = caps["lab_tcg"]
    assert tcg["custom_models"]["EPYC"] == "no"
    as_host = {"mode": "custom", "model": "EPYC",
               "features": [{"name": f, "policy": "disable"} for f in tcg["host_model"]["disabled"]]}
    assert cpu_runnable(as_host, tcg)["compatible"] is True
    as_host["features"] = as_host["features"][1:]  # one disabled feature fewer: not what the host offers
    assert cpu_runnable(as_host, tcg)["compatible"] is False


def test_fleet_usable_models(caps):
    assert fleet_usable_models([caps["kvm_haswell"], caps["kvm_skylake"]]) == \
        ["Haswell-noTSX-IBRS", "Nehalem", "SandyBridge", "qemu64"]
    assert fleet_usable_models([]) == []


def test_merge_any_no_wins():
    yes = {"compatible": True, "reason": "a", "missing_features": []}
    no = {"compatible": False, "reason": "b", "missing_features": ["x"]}
    assert merge_cpu_verdicts(yes, no)["compatible"] is False
    assert merge_cpu_verdicts(yes, None)["compatible"] is True
    assert merge_cpu_verdicts(None, None) is None
    assert merge_cpu_verdicts(yes, {"compatible": None, "reason": "c"})["compatible"] is None


def test_host_model_cpu_xml_and_replace(fixture_text):
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cpu_compat import (
        host_model_cpu_xml, parse_cpu_xml, replace_domain_cpu,
    )

    hm = host_model_cpu_xml(fixture_text("domcapabilities_kvm_haswell.xml"))
    cpu = parse_cpu_xml(hm)
    assert cpu["model"] == "Haswell-noTSX-IBRS" and cpu["vendor"] == "Intel"
    assert {"name": "hle", "policy": "disable"} in cpu["features"]
    dom = fixture_text("domain_inactive_mixed.xml").replace(
        "<cpu mode='custom' match='exact'>", "<cpu mode='custom' match='exact'><topology sockets='1' cores='4' threads='1'/>")
    out = parse_domain(replace_domain_cpu(dom, hm))
    assert out["cpu"]["model"] == "Haswell-noTSX-IBRS"
    assert out["name"] == "db01" and len(out["disks"]) == 4, "nothing else changes"
    assert "<topology sockets=\"1\" cores=\"4\" threads=\"1\"" in replace_domain_cpu(dom, hm)
    bare = "<domain type='kvm'><name>x</name><vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    assert parse_domain(replace_domain_cpu(bare, hm))["cpu"]["model"] == "Haswell-noTSX-IBRS"
