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


class _Dom:
    """A running domain as libvirt describes it: its resident memory and its last completed job."""

    def __init__(self, rss_kib, job):
        self.rss_kib, self.job = rss_kib, job
        self.job_flags = []

    def memoryStats(self):  # noqa: N802
        return {"rss": self.rss_kib}

    def jobStats(self, flags):  # noqa: N802
        self.job_flags.append(flags)
        if isinstance(self.job, Exception):
            raise self.job
        return self.job


class _Conn:
    def __init__(self, dom):
        self.dom = dom

    def lookupByName(self, _name):  # noqa: N802
        return self.dom


MIB = 1048576
ARRIVED = {"operation": 4, "memory_total": 168427520, "memory_normal_bytes": 108613632}  # recorded on the lab


@pytest.mark.parametrize("rss_mib, job, in_use_mib, source", [
    (179, ARRIVED, 103.58, vm_profile.LAST_MIGRATION),  # arrived by migration: what it sent then
    (90, ARRIVED, 90, "QEMU resident memory"),  # sent more than is resident now (pages re-sent): the smaller
    (179, dict(ARRIVED, operation=1), 160, "QEMU resident memory"),  # started here, not migrated
    (179, dict(ARRIVED, memory_total=100 * MIB), 160, "QEMU resident memory"),  # it has more memory now
    (179, {"operation": 4}, 160, "QEMU resident memory"),  # libvirt does not say what it sent
])
def test_a_vm_that_arrived_by_migration_is_known_by_what_that_migration_sent(rss_mib, job, in_use_mib, source):
    libvirt = pytest.importorskip("libvirt")
    dom = _Dom(rss_mib * 1024, job)
    facts = {"h1": [{"name": "vm1", "state": "running", "memory_mib": 160, "disks": []}]}
    prof = vm_profile.profile_vms({"h1": _Conn(dom)}, facts, 0, copy_storage=False)["vm1"]
    assert (round(prof["in_use_bytes"] / MIB, 2), prof["in_use_source"]) == (in_use_mib, source)
    # Read without discarding it: libvirt forgets completed statistics once read otherwise.
    assert dom.job_flags == [libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED]


def test_completed_statistics_libvirt_cannot_give_leave_the_resident_memory():
    libvirt = pytest.importorskip("libvirt")
    dom = _Dom(100 * 1024, libvirt.libvirtError("no job"))
    facts = {"h1": [{"name": "vm1", "state": "running", "memory_mib": 160, "disks": []}]}
    prof = vm_profile.profile_vms({"h1": _Conn(dom)}, facts, 0, copy_storage=False)["vm1"]
    assert prof["in_use_bytes"] == 100 * MIB and prof["in_use_source"] == "QEMU resident memory"
