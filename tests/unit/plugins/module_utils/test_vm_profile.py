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


class _HotDom(_Dom):
    """A running domain whose page-sampled dirty rate depends on the window, as QEMU's does for a guest rewriting
    a region of ``ws_mib`` at ``rate_mib`` MiB/s: over t seconds it changes min(rate t, ws) of its pages."""

    def __init__(self, name, rate_mib, ws_mib, rss_mib=256):
        super().__init__(rss_mib * 1024, libvirt_error())
        self._name, self.rate_mib, self.ws_mib, self.windows = name, rate_mib, ws_mib, []

    def name(self):
        return self._name

    def startDirtyRateCalc(self, seconds, _flags):  # noqa: N802
        self.windows.append(seconds)

    def blockInfo(self, _path):  # noqa: N802
        return [0, 0, 0]


def libvirt_error():
    libvirt = pytest.importorskip("libvirt")
    return libvirt.libvirtError("no completed job")


class _HotConn:
    def __init__(self, *doms):
        self.doms = {d.name(): d for d in doms}

    def lookupByName(self, name):  # noqa: N802
        return self.doms[name]

    def domainListGetStats(self, doms, _stats):  # noqa: N802
        d = doms[0]
        t = d.windows[-1]
        return [(d, {"dirtyrate.calc_status": 2,
                     "dirtyrate.megabytes_per_second": int(min(d.rate_mib * t, d.ws_mib) / t)})]


def test_a_vm_the_job_says_will_not_converge_gets_its_working_set_from_a_longer_window(monkeypatch):
    """Recorded on the lab: a 256 MiB guest rewriting 150 MB at 60 MB/s measured 67, 62, 51, 38 and 24 MiB/s over
    1, 2, 3, 4 and 6 s. Here the job asks for the hot VM only; its window is the time to write its memory in use
    once at its 1-s rate (256 / 57 -> 5 s), and the rate that fell over it gives the working set; a VM whose rate
    holds over the window has none (taken as its memory in use)."""
    monkeypatch.setattr(vm_profile.time, "sleep", lambda _s: None)
    hot, flat, quiet = _HotDom("hot", 57, 143), _HotDom("flat", 40, 1000), _HotDom("quiet", 1, 10)
    facts = {"h1": [{"name": n, "state": "running", "memory_mib": 256, "disks": []} for n in ("hot", "flat", "quiet")]}
    asked = []

    def wants(prof):
        asked.append(prof["vm"])
        return prof["dirty_bps"] > 20 * MIB

    out = vm_profile.profile_vms({"h1": _HotConn(hot, flat, quiet)}, facts, 1, False, wants)
    assert sorted(asked) == ["flat", "hot", "quiet"]
    assert hot.windows == [1, 7] and flat.windows == [1, 7] and quiet.windows == [1]  # one window for the source
    assert out["hot"]["working_set_bytes"] == 20 * 7 * MIB  # 143 MiB seen as 20 MiB/s over 7 s
    assert out["hot"]["working_set"]["measured"] is True and out["hot"]["working_set"]["seconds"] == 7
    assert "rewrites about 140 MiB" in out["hot"]["working_set"]["reason"]
    assert out["flat"]["working_set_bytes"] is None and out["flat"]["working_set"]["measured"] is False
    assert "rate held over 7 s" in out["flat"]["working_set"]["reason"]
    assert out["quiet"]["working_set_bytes"] is None and "working_set" not in out["quiet"]


@pytest.mark.parametrize("rate_mib, in_use_mib, window", [(57, 256, 5), (40, 160, 4), (400, 256, 2), (1, 256, 8)])
def test_the_working_set_window_writes_the_memory_in_use_once_within_2_to_8_s(rate_mib, in_use_mib, window):
    prof = {"dirty_bps": rate_mib * MIB, "in_use_bytes": in_use_mib * MIB, "memory_bytes": 512 * MIB}
    assert vm_profile.working_set_window(prof) == window


def test_a_guest_that_wrote_nothing_over_the_longer_window_gets_no_working_set():
    """Its 1-s rate was a burst: a working set of 0 would say nothing true, so it stays the memory in use."""
    prof = {"dirty_bps": 57 * MIB, "in_use_bytes": 256 * MIB, "memory_bytes": 256 * MIB}
    got = vm_profile.working_set(prof, {"measured": True, "seconds": 5, "mib_per_s": 0, "bytes_per_s": 0})
    assert got["working_set_bytes"] is None and got["working_set"]["measured"] is False
    assert "wrote nothing over 5 s" in got["working_set"]["reason"]
    failed = vm_profile.working_set(prof, {"measured": False, "reason": "the calculation did not finish in time"})
    assert failed["working_set_bytes"] is None and failed["working_set"]["reason"].startswith("the calculation")


class _Clock:
    """vm_profile's clock: sleeping moves it on, nothing waits."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, secs):
        self.now += secs


class _CpuDom(_Dom):
    """A domain whose CPU time (ns) is read three times: at the start, halfway and at the end of the window."""

    def __init__(self, cpu_ns):
        super().__init__(100 * 1024, {})
        self.cpu_ns = list(cpu_ns)

    def info(self):
        return [1, 0, 0, 1, self.cpu_ns.pop(0)]


class _CpuConn:
    def __init__(self, doms):
        self.doms = doms

    def lookupByName(self, name):  # noqa: N802
        return self.doms[name]


def test_a_vms_cpu_is_its_sustained_use_not_a_burst(monkeypatch):
    """Over a 2 s window: 'steady' uses half a core in both halves; 'burst' 0.25 core in the first second and
    0.02 in the second (a guest catching up after its move, as measured on the lab) - counted at 0.02, where the
    whole window's mean (0.135) would count the burst as its load."""
    monkeypatch.setattr(vm_profile, "time", _Clock())
    doms = {"steady": _CpuDom([0, 5 * 10**8, 10**9]), "burst": _CpuDom([0, 25 * 10**7, 27 * 10**7])}
    facts = {"h1": [{"name": n, "state": "running", "memory_mib": 160} for n in doms]}
    out = vm_profile.measure_load({"h1": _CpuConn(doms)}, facts, 2.0)
    assert out["steady"]["cpu_cores"] == 0.5
    assert out["burst"]["cpu_cores"] == 0.02
    assert out["steady"]["in_use_mib"] == 100.0
