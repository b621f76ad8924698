import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import live_migration as lm
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError


def params(**kw):
    p = {k: v.get("default") for k, v in lm.ARGUMENT_SPEC.items()}
    p.update(name="vm1", dest_uri="test:///default")
    p.update(kw)
    return p


def test_defaults_are_safe():
    p = params()
    assert p["tls"] is True and p["p2p"] is True and p["persistent"] is True and p["undefine_source"] is True
    lm.validate_options(p)


@pytest.mark.parametrize("kw,msg", [
    (dict(persistent=True, undefine_source=False), "defined on two hosts or on none"),
    (dict(persistent=False, undefine_source=True), "defined on two hosts or on none"),
    (dict(bandwidth=0), "bandwidth must be a positive number"),
    (dict(downtime_steps=0), "downtime_steps must be at least 1"),
    (dict(downtime_steps=3, max_downtime=None), "downtime_steps needs max_downtime"),
    (dict(postcopy="after_timeout"), "postcopy=after_timeout needs timeout"),
    (dict(timeout=10, timeout_action="postcopy"), "timeout_action=postcopy needs postcopy allowed"),
    (dict(auto_converge_initial=50), "auto_converge_initial needs auto_converge=true"),
    (dict(auto_converge=True, auto_converge_increment=120), "percentage from 1 to 99"),
    (dict(p2p=False, peer_uri="qemu+tls://x/system"), "peer_uri is only used with p2p=true"),
])
def test_bad_combinations_are_refused(kw, msg):
    with pytest.raises(FleetmaintError, match=msg):
        lm.validate_options(params(**kw))


def test_persistent_false_with_source_kept_is_allowed():
    lm.validate_options(params(persistent=False, undefine_source=False))


def test_downtime_ladder_spreads_over_timeout():
    # The defaults, the same as an evacuation's: up to 500 ms in 5 steps, 10 s apart without a timeout.
    assert lm.downtime_ladder(params()) == [(0.0, 100), (10.0, 200), (20.0, 300), (30.0, 400), (40.0, 500)]
    assert lm.downtime_ladder(params(max_downtime=None)) == []
    assert lm.downtime_ladder(params(max_downtime=500, downtime_steps=1)) == [(0.0, 500)]
    ladder = lm.downtime_ladder(params(max_downtime=500, downtime_steps=5, timeout=60))
    assert [step[1] for step in ladder] == [100, 200, 300, 400, 500]
    assert [step[0] for step in ladder] == [0.0, 10.0, 20.0, 30.0, 40.0]  # all before the timeout
    assert lm.downtime_ladder(params(max_downtime=300, downtime_steps=3))[2] == (20.0, 300)


def test_timeout_action_follows_postcopy_after_timeout():
    assert lm.effective_timeout_action(params(postcopy="after_timeout", timeout=5)) == "postcopy"
    assert lm.effective_timeout_action(params(timeout=5, timeout_action="suspend")) == "suspend"


def test_flags_and_params():
    pytest.importorskip("libvirt")
    import libvirt

    flags, names = lm.build_flags(params(), need_postcopy=False)
    assert names == ["LIVE", "PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE", "TLS", "ABORT_ON_ERROR"]
    assert flags & libvirt.VIR_MIGRATE_TLS and not flags & libvirt.VIR_MIGRATE_POSTCOPY
    hot = params(tls=False, copy_storage="all", compression="xbzrle", parallel_connections=2, auto_converge=True,
                 unsafe=True)
    names = lm.build_flags(hot, need_postcopy=True)[1]
    assert {"NON_SHARED_DISK", "COMPRESSED", "PARALLEL", "AUTO_CONVERGE", "POSTCOPY", "UNSAFE"} <= set(names)
    assert "TLS" not in names
    p = lm.build_params(params(bandwidth=100, compression="xbzrle", parallel_connections=4, auto_converge=True,
                               auto_converge_initial=40), ["vda"])
    assert p == {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 100, libvirt.VIR_MIGRATE_PARAM_COMPRESSION: "xbzrle",
                 libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: 4, libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"],
                 libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL: 40}


def test_unknown_vm_on_test_driver_is_a_clear_error(monkeypatch):
    pytest.importorskip("libvirt")
    # test:///default twice is one host seen twice: let the locate step run as if they were two.
    monkeypatch.setattr(lm, "same_host", lambda *_a: None)
    with pytest.raises(FleetmaintError, match="VM 'ghost' not found on") as err:
        lm.migrate(params(name="ghost", uri="test:///default", dest_uri="test:///default"))
    assert err.value.reason == "not_found"


def test_dest_uri_equal_to_uri_is_the_same_host_not_a_second_copy():
    """The move rules' same_host, read before the VM is looked up on both ends (where it would be 'on both')."""
    pytest.importorskip("libvirt")
    with pytest.raises(FleetmaintError) as err:
        lm.migrate(params(name="test", uri="test:///default", dest_uri="test:///default"))
    assert err.value.reason == "same_host" and "source and destination are the same host" in err.value.msg
    assert "second copy" not in err.value.msg and "exists on both" not in err.value.msg
    assert err.value.context["codes"] == ["same_host"]


def test_metrics_prefer_destination_completed_job():
    final = {"time_elapsed": 900, "downtime": 40, "data_processed": 10, "memory_iteration": 3}
    m = lm._metrics(final, {"time_elapsed": 500}, [], 1200, False, 0)  # pylint: disable=protected-access
    assert m["source"] == "destination_completed_job" and m["total_time_ms"] == 900 and m["downtime_ms"] == 40
    m = lm._metrics(None, {"time_elapsed": 500, "downtime": 300}, [], 1200, True, 30)  # pylint: disable=protected-access
    # A source sample predates the end, and its 'downtime' is the configured limit, not a measurement.
    assert m["source"] == "source_last_sample" and m["total_time_ms"] == 1200 and m["downtime_ms"] is None
    assert m["postcopy_used"] is True and m["auto_converge_throttle"] == 30


def test_control_calls_run_on_their_own_connection():
    pytest.importorskip("libvirt")
    ctl = lm._Control("test:///default", "6695eb01-f6a4-8304-79aa-97f2502e193f", timeout=5)
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

    ctl = lm._Control("test:///default", "6695eb01-f6a4-8304-79aa-97f2502e193f", timeout=0.2)
    ctl.conn, ctl.dom = object(), StuckDom()
    t = time.monotonic()
    with pytest.raises(lm.ControlStuck, match="jobStats did not return within 0.2 s"):
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

    runner = lm._Runner(lambda: None)
    calls = []

    class Ctl:
        def call(self, method, *args):
            calls.append(method)
            if method == "jobStats":
                return {"type": 2, "data_total": 100, "data_remaining": 60, "memory_dirty_rate": 9}
            if method == "migrateStartPostCopy":
                raise lm.ControlStuck("migrateStartPostCopy did not return within 30 s")
            if method == "abortJob":
                runner.error = libvirt.libvirtError("operation aborted: migration job: canceled by client")
                runner.done.set()
            return None

    p = {"poll_interval": 0.01, "timeout": 0.05, "timeout_action": "abort", "postcopy": "after_timeout",
         "progress_timeout": None}
    events, result = [], {"events": []}
    ctx = {"vm": "web1", "source": "hv1", "destination": "hv2"}
    t0 = lm.time.monotonic()
    with pytest.raises(FleetmaintError) as info:
        lm._watch(p, Dom(), Conn(), DestConn(), runner, Ctl(), [], result, ctx,
                  lambda kind, **kw: events.append(dict(kw, event=kind)), t0, None)
    assert "postcopy could not be started" in info.value.msg and "it still runs on hv1" in info.value.msg
    assert calls.index("migrateStartPostCopy") < calls.index("abortJob")
    assert [e["event"] for e in events if e["event"] in ("control_error", "abort")] == ["control_error", "abort"]


class _Dom:
    def __init__(self, host, state, reason=0, persistent=True):
        self.host, self.st, self.reason, self.persistent, self.undefined = host, state, reason, persistent, False
        self.resumes = 0

    def name(self):
        return "vm1"

    def UUIDString(self):  # noqa: N802 - libvirt's names
        return "u-1"

    def state(self):
        return [self.st, self.reason]

    def isActive(self):  # noqa: N802
        return self.st in (1, 3)

    def isPersistent(self):  # noqa: N802
        return self.persistent and not self.undefined

    def undefine(self):
        self.undefined = True

    def XMLDesc(self, _flags=0):  # noqa: N802
        return "<domain type='qemu'><name>vm1</name><memory unit='MiB'>64</memory><vcpu>1</vcpu></domain>"

    def migrateToURI3(self, _uri, _params, flags):  # noqa: N802
        import libvirt
        assert flags & libvirt.VIR_MIGRATE_POSTCOPY_RESUME
        self.resumes += 1
        self.st, self.reason = 5, 0  # the resumed post-copy completes: the source is shut off (migrated)


class _Conn:
    def __init__(self, host, dom):
        self.host, self.dom = host, dom

    def getHostname(self):  # noqa: N802
        return self.host

    def lookupByName(self, _name):  # noqa: N802
        import libvirt
        if self.dom is None or (self.dom.undefined and not self.dom.isActive()):
            err = libvirt.libvirtError("no domain")
            err.get_error_code = lambda: libvirt.VIR_ERR_NO_DOMAIN
            raise err
        return self.dom


def test_a_rerun_finishes_an_interrupted_migration():
    """Source shut off but still defined, destination running: the stale source definition goes."""
    pytest.importorskip("libvirt")
    src, dst = _Dom("hv1", 5), _Dom("hv2", 1)
    result = {"events": []}
    out = lm._finish_interrupted(params(), src, _Conn("hv1", src), _Conn("hv2", dst), "qemu+tcp://hv2/system",
                                 result, {"vm": "vm1", "source": "hv1", "destination": "hv2"})
    assert out["changed"] is True and src.undefined and not dst.undefined
    assert out["placement"] == {"running_on": ["hv2"], "defined_on": ["hv2"]}
    assert "stale_definition_removed" in [e["event"] for e in out["events"]]


def test_a_rerun_resumes_a_broken_postcopy():
    libvirt = pytest.importorskip("libvirt")
    src = _Dom("hv1", libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
    dst = _Dom("hv2", libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED)
    sconn, dconn = _Conn("hv1", src), _Conn("hv2", dst)
    orig = src.migrateToURI3

    def resume(uri, params_, flags):
        orig(uri, params_, flags)
        dst.reason = 0  # the destination leaves 'post-copy failed' too

    src.migrateToURI3 = resume
    out = lm._finish_interrupted(params(), src, sconn, dconn, "qemu+tcp://hv2/system", {"events": []},
                                 {"vm": "vm1", "source": "hv1", "destination": "hv2"})
    assert src.resumes == 1 and out["placement"]["running_on"] == ["hv2"] and src.undefined


def test_a_vm_running_on_both_hosts_is_not_touched():
    pytest.importorskip("libvirt")
    src, dst = _Dom("hv1", 1), _Dom("hv2", 1)
    assert lm._finish_interrupted(params(), src, _Conn("hv1", src), _Conn("hv2", dst), "u", {"events": []},
                                  {"vm": "vm1", "source": "hv1", "destination": "hv2"}) is None
    assert not src.undefined and not dst.undefined


class _CrashDom(_Dom):
    def resume(self):
        self.resumes += 1
        self.st, self.reason = 1, 1


class _UriConn(_Conn):
    def getURI(self):  # noqa: N802
        return f"qemu+tcp://{self.host}/system"


def _failed_move(src_dom, dst_dom, state_before="running"):
    libvirt = pytest.importorskip("libvirt")
    result = {"events": [], "state_before": state_before, "changed": True}
    ctx = {"vm": "vm1", "source": "hv1", "destination": "hv2"}
    err = libvirt.libvirtError("operation failed: domain is not running")
    with pytest.raises(FleetmaintError) as info:
        lm._after_failure({"dest_uri": "qemu+tcp://hv2/system"}, src_dom, _UriConn("hv1", src_dom),
                          _UriConn("hv2", dst_dom), err, None, False, False, result, ctx,
                          lambda kind, **kw: None, None, 0, 0)
    return info.value, result


def test_a_vm_that_crashed_during_a_move_is_reported_loudly():
    """QEMU died with the guest (the paused-VM assertion of QEMU 7.2): not a neutral sentence."""
    exc, result = _failed_move(_CrashDom("hv1", 5, 3), None)  # shut off, reason crashed
    assert exc.reason == "vm_crashed" and result["reason"] == "vm_crashed"
    assert "vm1 CRASHED on hv1 during the move (shut off (crashed))" in exc.msg
    assert "/var/log/libvirt/qemu/vm1.log on hv1" in exc.msg
    assert result["changed"] is True


def test_a_failed_move_keeps_a_paused_vm_paused_and_says_nothing_changed():
    dom = _CrashDom("hv1", 3, 1)  # paused by its user before the move
    exc, result = _failed_move(dom, None, state_before="paused")
    assert dom.resumes == 0 and "it still runs on hv1" in exc.msg
    # It failed before a byte was sent (no job sample): refused at the start, untouched on its source.
    assert result["changed"] is False and result["reason"] == "refused_at_start" == exc.reason
    dom = _CrashDom("hv1", 3, 1)  # the migration paused a running VM: it runs again
    _failed_move(dom, None, state_before="running")
    assert dom.resumes == 1
