import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils import migration_job as mj
from ansible_collections.fleetmaint.libvirt.tests.unit.fakes import CrashDom, UriConn


def test_metrics_prefer_destination_completed_job():
    final = {"time_elapsed": 900, "downtime": 40, "data_processed": 10, "memory_iteration": 3}
    m = mj.metrics(final, {"time_elapsed": 500}, [], 1200, False, 0)
    assert m["source"] == "destination_completed_job" and m["total_time_ms"] == 900 and m["downtime_ms"] == 40
    m = mj.metrics(None, {"time_elapsed": 500, "downtime": 300}, [], 1200, True, 30)
    # A source sample predates the end, and its 'downtime' is the configured limit, not a measurement.
    assert m["source"] == "source_last_sample" and m["total_time_ms"] == 1200 and m["downtime_ms"] is None
    assert m["postcopy_used"] is True and m["auto_converge_throttle"] == 30


def test_control_calls_run_on_their_own_connection():
    pytest.importorskip("libvirt")
    ctl = mj.Control("test:///default", "6695eb01-f6a4-8304-79aa-97f2502e193f", timeout=5)
    try:
        assert ctl.call("name") == "test"
        first = ctl.conn
        assert ctl.call("isActive") == 1 and ctl.conn is first, "one control connection, reused"
    finally:
        ctl.close()
    assert ctl.conn is None


def test_a_stuck_control_call_is_abandoned_and_the_next_one_reconnects():
    import threading
    import time

    release = threading.Event()

    class StuckDom:
        def jobStats(self, _flags):
            release.wait(10)
            return {}

    ctl = mj.Control("test:///default", "6695eb01-f6a4-8304-79aa-97f2502e193f", timeout=0.2)
    ctl.conn, ctl.dom = object(), StuckDom()
    t = time.monotonic()
    with pytest.raises(mj.ControlStuck, match="jobStats did not return within 0.2 s"):
        ctl.call("jobStats", 0)
    assert time.monotonic() - t < 2
    assert ctl.dom is None and ctl.conn is None
    release.set()
    pytest.importorskip("libvirt")
    try:
        assert ctl.call("name") == "test", "a fresh connection after a stuck call"
    finally:
        ctl.close()


def test_a_timeout_whose_postcopy_cannot_start_aborts_the_migration():
    """timeout_action postcopy, but starting post-copy gets stuck: the job is aborted, not left running."""
    libvirt = pytest.importorskip("libvirt")

    class Dom:
        def state(self):
            return (1, 1)

        def isPersistent(self):
            return True

    class Conn:
        def lookupByName(self, _name):
            return Dom()

        def getHostname(self):
            return "hv1"

    class DestConn(Conn):
        def lookupByName(self, _name):
            err = libvirt.libvirtError("no domain")
            err.get_error_code = lambda: libvirt.VIR_ERR_NO_DOMAIN
            raise err

    runner = mj.Runner(lambda: None)
    calls = []

    class Ctl:
        def call(self, method, *args):
            calls.append(method)
            if method == "jobStats":
                return {"type": 2, "data_total": 100, "data_remaining": 60, "memory_dirty_rate": 9}
            if method == "migrateStartPostCopy":
                raise mj.ControlStuck("migrateStartPostCopy did not return within 30 s")
            if method == "abortJob":
                runner.error = libvirt.libvirtError("operation aborted: migration job: canceled by client")
                runner.done.set()
            return None

    p = {"poll_interval": 0.01, "timeout": 0.05, "timeout_action": "abort", "postcopy": "after_timeout",
         "progress_timeout": None}
    result = {"events": []}
    ctx = {"vm": "web1", "source": "hv1", "destination": "hv2"}
    job = mj.MigrationJob(p, Dom(), Conn(), DestConn(), "qemu+tcp://hv2/system", [], result, ctx)
    with pytest.raises(FleetmaintError) as info:
        job.watch(runner, Ctl())
    events = result["events"]
    assert "postcopy could not be started" in info.value.msg and "it still runs on hv1" in info.value.msg
    assert calls.index("migrateStartPostCopy") < calls.index("abortJob")
    assert [e["event"] for e in events if e["event"] in ("control_error", "abort")] == ["control_error", "abort"]


def _failed_move(src_dom, dst_dom, state_before="running"):
    libvirt = pytest.importorskip("libvirt")
    result = {"events": [], "state_before": state_before, "changed": True}
    ctx = {"vm": "vm1", "source": "hv1", "destination": "hv2"}
    err = libvirt.libvirtError("operation failed: domain is not running")
    with pytest.raises(FleetmaintError) as info:
        mj.MigrationJob({"dest_uri": "qemu+tcp://hv2/system"}, src_dom, UriConn("hv1", src_dom),
                        UriConn("hv2", dst_dom), "qemu+tcp://hv2/system", [], result, ctx).failed(err, 0)
    return info.value, result


def test_a_vm_that_crashed_during_a_move_is_reported_loudly():
    """QEMU died with the guest (the paused-VM assertion of QEMU 7.2): not a neutral sentence."""
    exc, result = _failed_move(CrashDom("hv1", 5, 3), None)  # shut off, reason crashed
    assert exc.reason == "vm_crashed" and result["reason"] == "vm_crashed"
    assert "vm1 CRASHED on hv1 during the move (shut off (crashed))" in exc.msg
    assert "/var/log/libvirt/qemu/vm1.log on hv1" in exc.msg
    assert result["changed"] is True


def test_a_failed_move_keeps_a_paused_vm_paused_and_says_nothing_changed():
    dom = CrashDom("hv1", 3, 1)  # paused by its user before the move
    exc, result = _failed_move(dom, None, state_before="paused")
    assert dom.resumes == 0 and "it still runs on hv1" in exc.msg
    # It failed before a byte was sent (no job sample): refused at the start, untouched on its source.
    assert result["changed"] is False and result["reason"] == "refused_at_start" == exc.reason
    dom = CrashDom("hv1", 3, 1)  # the migration paused a running VM: it runs again
    _failed_move(dom, None, state_before="running")
    assert dom.resumes == 1


class _Samples:
    """A control connection replaying job samples, one per jobStats call; abortJob ends the migration."""

    def __init__(self, libvirt, runner, samples):
        self.libvirt, self.runner, self.samples, self.calls = libvirt, runner, list(samples), []

    def call(self, method, *args):
        self.calls.append((method,) + args)
        if method == "jobStats":
            if len(self.samples) > 1:
                return self.samples.pop(0)
            return self.samples[0]
        if method == "abortJob":
            self.runner.error = self.libvirt.libvirtError("operation aborted: migration job: canceled by client")
            self.runner.done.set()
        if method == "migrateStartPostCopy":
            self.runner.done.set()  # the post-copy then completes (not checked here)
        return None


def _sample(iteration, left_mib, bps_mib=24, throttle=0):
    return {"type": 2, "data_total": 200 << 20, "data_remaining": left_mib << 20, "memory_remaining": left_mib << 20,
            "memory_iteration": iteration, "memory_bps": bps_mib << 20, "memory_dirty_rate": 15000,
            "auto_converge_throttle": throttle}


def _feed(job, ctl, n):
    """n polls of the watcher: a sample, then the policy on it (what watch() does each poll_interval)."""
    for _poll in range(n):
        job._sampled(ctl.call("jobStats", 0))  # pylint: disable=protected-access
        job._steer(ctl, job.last)  # pylint: disable=protected-access


def _job(p, ctl_samples):
    libvirt = pytest.importorskip("libvirt")
    runner = mj.Runner(lambda: None)
    dom = CrashDom("hv1", 1, 1)
    result = {"events": [], "state_before": "running", "changed": True}
    ctx = {"vm": "vm1", "source": "hv1", "destination": "hv2"}
    base = {"poll_interval": 0.001, "timeout": None, "timeout_action": "abort", "postcopy": "never",
            "progress_timeout": None, "convergence_watch": True, "auto_converge": False, "max_downtime": 500,
            "dest_uri": "qemu+tcp://hv2/system", "p2p": True}
    job = mj.MigrationJob(dict(base, **p), dom, UriConn("hv1", dom), UriConn("hv2", None), "qemu+tcp://hv2/system",
                          [(0.0, 100), (3600.0, 500)], result, ctx)
    return job, runner, _Samples(libvirt, runner, ctl_samples), result


def test_a_migration_that_stopped_converging_is_ended_at_once_not_at_its_timeout():
    """Passes 2, 3, 4 each leave about 60 MiB: at 24 MiB/s a 2.5 s pause, over 500 ms - end it now."""
    samples = [_sample(1, 150), _sample(2, 60), _sample(3, 58), _sample(4, 59)]
    job, runner, ctl, result = _job({"timeout": 3600}, samples)
    with pytest.raises(FleetmaintError) as info:
        job.watch(runner, ctl)
    assert info.value.reason == "not_converging" and "still runs on hv1" in info.value.msg
    assert "the last three passes each left [60.0, 58.0, 59.0] MiB" in info.value.msg
    assert "2458 ms pause, over max_downtime 500 ms" in info.value.msg
    watched = [e for e in result["events"] if e["event"] == "not_converging"][0]
    assert watched["need_ms"] == 2458 and not any(e["event"] == "timeout" for e in result["events"])


def test_a_shrinking_migration_is_left_alone():
    samples = [_sample(1, 150), _sample(2, 60), _sample(3, 40), _sample(4, 25)]
    job, runner, ctl, result = _job({}, samples)
    _feed(job, ctl, 8)
    assert job.aborted is None and not any(c[0] == "abortJob" for c in ctl.calls)


def test_a_plateau_that_fits_in_max_downtime_jumps_the_ladder():
    """About 10 MiB left each pass, 24 MiB/s: 417 ms fits under the 500 ms top - raise the limit now."""
    samples = [_sample(1, 150), _sample(2, 10), _sample(3, 10), _sample(4, 10)]
    job, runner, ctl, result = _job({}, samples)
    _feed(job, ctl, 6)
    assert ("migrateSetMaxDowntime", 500, 0) in ctl.calls and job.aborted is None
    assert [e["downtime_ms"] for e in result["events"] if e["event"] == "downtime"] == [100, 500]


def test_the_watch_waits_for_auto_converge_to_reach_its_top_throttle():
    samples = [_sample(1, 150), _sample(2, 60, throttle=50), _sample(3, 60, throttle=70), _sample(4, 60, throttle=90)]
    job, runner, ctl, result = _job({"auto_converge": True}, samples)
    _feed(job, ctl, 6)
    assert job.aborted is None
    job._sampled(_sample(5, 60, throttle=99))  # pylint: disable=protected-access
    job._steer(ctl, job.last)  # pylint: disable=protected-access
    assert job.aborted and job.aborted[0] == "not_converging"


def test_postcopy_after_the_first_pass_switches_when_the_second_pass_starts():
    job, runner, ctl, result = _job({"postcopy": "after_first_pass", "timeout_action": "postcopy"},
                                    [_sample(1, 150), _sample(2, 60)])
    _feed(job, ctl, 1)
    assert not job.postcopy_used
    _feed(job, ctl, 1)
    assert job.postcopy_used and ("migrateStartPostCopy", 0) in ctl.calls
    assert [e["why"] for e in result["events"] if e["event"] == "postcopy"] == ["after the first pass"]


def test_the_job_keeps_a_sample_a_second_and_every_change_of_pass_with_the_downtime_in_force(monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr(mj.time, "monotonic", lambda: clock["t"])
    samples = [_sample(1, 150), _sample(1, 140), _sample(1, 130), _sample(2, 60), _sample(2, 50)]
    job, runner, ctl, result = _job({}, samples)
    job.t0 = 1000.0
    for dt in (0.0, 0.5, 1.0, 1.2, 1.4):  # polls at these seconds: the second is within a second of the first
        clock["t"] = 1000.0 + dt
        _feed(job, ctl, 1)
    kept = [(s["t"], s["iteration"], s["data_remaining"] >> 20, s["downtime_ms"]) for s in result["samples"]]
    # The first poll is taken before the ladder's first step is set; pass 2 is kept at once (1.2 s), 1.4 s is not.
    assert kept == [(0.0, 1, 150, None), (1.0, 1, 130, 100), (1.2, 2, 60, 100)]
    assert all(set(s) >= {"phase", "data_processed", "memory_bps", "dirty_rate", "throttle"} for s in result["samples"])


def test_a_cancel_aborts_a_precopy_and_leaves_a_postcopy_to_finish():
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import CancelFlag
    job, runner, ctl, result = _job({"timeout": 3600}, [_sample(1, 150), _sample(1, 100)])
    job.cancel = CancelFlag()
    job.cancel.set("requested by ops")
    with pytest.raises(FleetmaintError) as info:
        job.watch(runner, ctl)
    assert info.value.reason == "cancelled" and "the job was cancelled (requested by ops)" in info.value.msg
    assert "still runs on hv1" in info.value.msg and ("abortJob",) in ctl.calls
    assert [e["why"] for e in result["events"] if e["event"] == "abort"] == ["cancelled"]

    job, runner, ctl, result = _job({"postcopy": "immediate"}, [_sample(1, 150), _sample(2, 60)])
    job.cancel = CancelFlag()
    _feed(job, ctl, 1)  # the post-copy has started: the guest runs on the destination
    assert job.postcopy_used
    job.cancel.set("requested by ops")
    runner.done.clear()
    runner.error = None
    __import__("threading").Timer(0.2, runner.done.set).start()  # the post-copy ends on its own
    with pytest.raises(FleetmaintError, match="libvirt reported success"):  # (the fake destination has no VM)
        job.watch(runner, ctl)  # watched to its end, as a success: never aborted
    assert ("abortJob",) not in ctl.calls and job.aborted is None


def test_the_job_says_once_when_its_data_is_sent_and_not_before_any_was():
    """No job before data flowed says nothing (QEMU still setting up); once data flowed, the first poll that finds
    no job (libvirt's last step on both ends) says 'transferred', once, with what was sent."""
    pytest.importorskip("libvirt")
    sent = dict(_sample(2, 5), data_processed=190 << 20)
    samples = [{"type": 2, "data_total": 0}, {"type": 0}, _sample(1, 150), sent, {"type": 0}, {"type": 3}, {"type": 0}]
    job, runner, ctl, result = _job({}, samples)
    seen = []
    job.progress = seen.append
    replay = ctl.call

    def call(method, *args):
        if method == "jobStats" and len(ctl.samples) == 1:
            runner.done.set()  # the last sample: the migration call returns after it
        return replay(method, *args)

    ctl.call = call
    job.succeeded = lambda wall_ms: result  # verifying the destination is not under test here
    job.watch(runner, ctl)
    ended = [e for e in result["events"] if e["event"] == "transferred"]
    assert len(ended) == 1 and ended[0]["data_processed"] == 190 << 20
    kinds = [(s.get("kind"), s.get("event")) for s in seen]
    assert kinds.index(("event", "transferred")) > kinds.index(("progress", None)), "only after data flowed"
    assert kinds.index(("event", "transferred")) == len(kinds) - 1


def test_a_job_with_nothing_left_whose_numbers_stopped_moving_has_sent_its_data():
    """libvirt keeps the source's job (its last numbers) through its own last step: nothing left to send and
    nothing sent since the last poll says 'transferred'; nothing left while data still moves does not."""
    pytest.importorskip("libvirt")
    moving = [dict(_sample(3, 0), data_processed=100 << 20), dict(_sample(3, 0), data_processed=101 << 20)]
    frozen = [dict(_sample(3, 0), data_processed=101 << 20)] * 2
    job, runner, ctl, result = _job({}, [_sample(1, 150)] + moving + frozen)
    replay = ctl.call

    def call(method, *args):
        if method == "jobStats" and len(ctl.samples) == 1:
            runner.done.set()
        return replay(method, *args)

    ctl.call = call
    job.succeeded = lambda wall_ms: result
    job.watch(runner, ctl)
    events = [e["event"] for e in result["events"]]
    assert events.count("transferred") == 1
    ended = [e for e in result["events"] if e["event"] == "transferred"][0]
    assert ended["data_processed"] == 101 << 20


class _LimitDom(CrashDom):
    """A source that keeps its downtime limit and records the calls made on it, in order."""

    def __init__(self, limit=300, refuse=False):
        super().__init__("hv1", 1, 1)
        self.limit, self.refuse, self.calls = limit, refuse, []

    def migrateGetMaxDowntime(self, _flags):  # noqa: N802 - libvirt's names
        self.calls.append("get")
        return self.limit

    def migrateSetMaxDowntime(self, ms, _flags):  # noqa: N802
        import libvirt
        if self.refuse:
            raise libvirt.libvirtError("this function is not supported by the connection driver")
        self.calls.append(("set", ms))
        self.limit = ms


def test_the_ladders_first_step_is_set_before_the_migration_starts_and_not_again():
    """A short move switches over before the first poll: its limit must be in force from the start."""
    job, _runner, ctl, result = _job({"uri": "qemu+tcp://hv1/system"}, [_sample(1, 150), _sample(2, 10)])
    dom = job.sdom = _LimitDom()
    started = []
    job.watch = lambda runner, _ctl: (runner.thread.join(), started.append(list(dom.calls)), {"ok": True})[2]
    dom.migrateToURI3 = lambda *_a: dom.calls.append("migrate")
    assert job.run(0, {}) == {"ok": True}
    assert started == [["get", ("set", 100), "migrate"]], "the limit is set before the call, once"
    assert job.downtime_before == 300 and job.ladder_i == 1
    _feed(job, ctl, 2)
    assert not any(c[0] == "migrateSetMaxDowntime" and c[1] == 100 for c in ctl.calls), "not set again"
    assert [(e["downtime_ms"], e.get("why")) for e in result["events"] if e["event"] == "downtime"] == \
        [(100, "before the migration starts")]


def test_a_source_that_cannot_set_it_before_leaves_it_to_the_first_poll():
    job, _runner, ctl, result = _job({}, [_sample(1, 150)])
    job.sdom = _LimitDom(refuse=True)
    job._first_step()  # pylint: disable=protected-access
    assert job.ladder_i == 0 and [e["event"] for e in result["events"]] == ["control_error"]
    _feed(job, ctl, 1)
    assert ("migrateSetMaxDowntime", 100, 0) in ctl.calls


def test_a_failed_move_puts_the_sources_downtime_limit_back():
    """The ladder raised it to 500 and the move failed: the VM stays on its source with the limit it had."""
    dom = _LimitDom(limit=300)
    job, _runner, _ctl, result = _job({}, [])
    job.sdom, job.sconn = dom, UriConn("hv1", dom)
    job._first_step()  # pylint: disable=protected-access
    dom.limit = 500  # the ladder's last step, set by the watcher
    libvirt = pytest.importorskip("libvirt")
    with pytest.raises(FleetmaintError) as info:
        job.failed(libvirt.libvirtError("operation failed: migration failed"), 1000)
    assert "still runs on hv1" in info.value.msg and dom.limit == 300
    assert [e["why"] for e in result["events"] if e["event"] == "downtime"] == \
        ["before the migration starts", "put back as it was before the move"]
