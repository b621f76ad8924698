import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import vm_profile


def test_a_vm_whose_dirty_rate_cannot_be_measured_is_profiled_without_it(test_conn):
    """libvirt's test driver has no dirty-rate calculation: the profile says why and the job goes on."""
    facts = {"h1": [{"name": "test", "state": "running", "memory_mib": 8192, "disks": []}]}
    out = vm_profile.profile_vms({"h1": test_conn}, facts, 1, copy_storage=False)
    prof = out["test"]
    assert prof["host"] == "h1" and prof["memory_bytes"] == 8192 * 1048576
    assert prof["dirty_bps"] is None and prof["dirty"]["measured"] is False and prof["dirty"]["reason"]
    assert 0 < prof["in_use_bytes"] <= prof["memory_bytes"]


def test_a_paused_or_shut_off_vm_dirties_nothing_and_is_not_measured(test_conn):
    facts = {"h1": [{"name": "test", "state": "paused", "memory_mib": 64, "disks": []}]}
    prof = vm_profile.profile_vms({"h1": test_conn}, facts, 1, copy_storage=False)["test"]
    assert prof["dirty_bps"] == 0.0 and "dirties nothing" in prof["dirty"]["reason"]


def test_profile_seconds_zero_measures_no_dirty_rate(test_conn):
    facts = {"h1": [{"name": "test", "state": "running", "memory_mib": 64, "disks": []}]}
    prof = vm_profile.profile_vms({"h1": test_conn}, facts, 0, copy_storage=False)["test"]
    assert prof["dirty_bps"] is None and "profile_seconds 0" in prof["dirty"]["reason"]


def test_an_unanswering_source_is_reported_not_waited_for(monkeypatch):
    libvirt = pytest.importorskip("libvirt")
    import threading
    gate = threading.Event()

    class Stuck:
        def lookupByName(self, _n):  # noqa: N802
            gate.wait(30)
            raise libvirt.libvirtError("answered too late")

    monkeypatch.setattr(vm_profile.time, "monotonic", iter([0.0] + [1e9] * 10).__next__)
    facts = {"h1": [{"name": "vm1", "state": "running", "memory_mib": 64, "disks": []}]}
    prof = vm_profile.profile_vms({"h1": Stuck()}, facts, 1, copy_storage=False)["vm1"]
    gate.set()
    assert prof["dirty_bps"] is None and prof["dirty"]["reason"] == "profiling did not finish in time"
