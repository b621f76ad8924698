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


class _Stats:
    def __init__(self, stats, period=2):
        self.stats, self.period = stats, period

    def memoryStats(self):  # noqa: N802
        return self.stats

    def XMLDesc(self, _flags):  # noqa: N802
        stats = f"<stats period='{self.period}'/>" if self.period is not None else ""
        return f"<domain><devices><memballoon model='virtio'>{stats}</memballoon></devices></domain>"


def test_memory_in_use_is_what_the_guest_says_is_not_free_when_its_balloon_reports_it(monkeypatch):
    mib = 1048576
    monkeypatch.setattr(vm_profile.time, "time", lambda: 1000.0)
    # 160 MiB guest; QEMU resident 170 MiB (its own memory too); the guest reported 44 MiB free a second ago.
    fresh = {"rss": 170 * 1024, "unused": 44 * 1024, "actual": 160 * 1024, "last_update": 999}
    prof = vm_profile._memory_in_use(_Stats(fresh), 160 * mib)
    assert prof == {"in_use_bytes": 116 * mib, "in_use_source": "the guest's free memory (balloon statistics)"}
    # A guest that touched little: resident memory is the smaller, and the truer, count.
    assert vm_profile._memory_in_use(_Stats(dict(fresh, rss=30 * 1024)), 160 * mib)["in_use_bytes"] == 30 * mib
    # Statistics the guest sent long ago (kept across a migration), none since (last_update 0 after one), or
    # with no period polling them: not what it uses now - QEMU's resident memory instead.
    for stats, period in ((dict(fresh, last_update=900), 2), (dict(fresh, last_update=0), 2), (fresh, None)):
        assert vm_profile._memory_in_use(_Stats(stats, period), 160 * mib)["in_use_source"] == "QEMU resident memory"
    # Within two periods and the clock skew allowed: still fresh.
    assert vm_profile._memory_in_use(_Stats(dict(fresh, last_update=1000 - 2 * 10 - 5), 10), 160 * mib)[
        "in_use_source"].startswith("the guest's free memory")
    # No balloon statistics: QEMU's resident memory, at most the guest's memory.
    prof = vm_profile._memory_in_use(_Stats({"rss": 170 * 1024, "actual": 160 * 1024}), 160 * mib)
    assert prof == {"in_use_bytes": 160 * mib, "in_use_source": "QEMU resident memory"}
    assert vm_profile._memory_in_use(_Stats({}), 160 * mib)["in_use_source"] == "configured (no resident size)"
