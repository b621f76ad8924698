import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.tests.unit.fakes import move_params
from ansible_collections.fleetmaint.libvirt.plugins.module_utils import migration_flags as mf


params = move_params


def test_defaults_are_safe():
    p = params()
    assert p["tls"] is True and p["p2p"] is True and p["persistent"] is True and p["undefine_source"] is True
    mf.validate_options(p)


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
        mf.validate_options(params(**kw))


def test_persistent_false_with_source_kept_is_allowed():
    mf.validate_options(params(persistent=False, undefine_source=False))


def test_downtime_ladder_spreads_over_timeout():
    # The defaults, the same as an evacuation's: up to 500 ms in 5 steps, 10 s apart without a timeout.
    assert mf.downtime_ladder(params()) == [(0.0, 100), (10.0, 200), (20.0, 300), (30.0, 400), (40.0, 500)]
    assert mf.downtime_ladder(params(max_downtime=None)) == []
    assert mf.downtime_ladder(params(max_downtime=500, downtime_steps=1)) == [(0.0, 500)]
    ladder = mf.downtime_ladder(params(max_downtime=500, downtime_steps=5, timeout=60))
    assert [step[1] for step in ladder] == [100, 200, 300, 400, 500]
    assert [step[0] for step in ladder] == [0.0, 10.0, 20.0, 30.0, 40.0]  # all before the timeout
    assert mf.downtime_ladder(params(max_downtime=300, downtime_steps=3))[2] == (20.0, 300)


def test_timeout_action_follows_postcopy_after_timeout():
    assert mf.effective_timeout_action(params(postcopy="after_timeout", timeout=5)) == "postcopy"
    assert mf.effective_timeout_action(params(timeout=5, timeout_action="suspend")) == "suspend"


def test_flags_and_params():
    pytest.importorskip("libvirt")
    import libvirt

    flags, names = mf.build_flags(params(), need_postcopy=False)
    assert names == ["LIVE", "PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE", "TLS", "ABORT_ON_ERROR"]
    assert flags & libvirt.VIR_MIGRATE_TLS and not flags & libvirt.VIR_MIGRATE_POSTCOPY
    hot = params(tls=False, copy_storage="all", compression="xbzrle", parallel_connections=2, auto_converge=True,
                 unsafe=True)
    names = mf.build_flags(hot, need_postcopy=True)[1]
    assert {"NON_SHARED_DISK", "COMPRESSED", "PARALLEL", "AUTO_CONVERGE", "POSTCOPY", "UNSAFE"} <= set(names)
    assert "TLS" not in names
    p = mf.build_params(params(bandwidth=100, compression="xbzrle", parallel_connections=4, auto_converge=True,
                               auto_converge_initial=40), ["vda"])
    assert p == {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 100, libvirt.VIR_MIGRATE_PARAM_COMPRESSION: "xbzrle",
                 libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: 4, libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"],
                 libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL: 40}


@pytest.mark.parametrize("method", ["zstd", "zlib"])
def test_multifd_compression_comes_with_parallel_migration(method):
    libvirt = pytest.importorskip("libvirt")
    flags, names = mf.build_flags(params(compression=method), need_postcopy=False)
    assert {"COMPRESSED", "PARALLEL"} <= set(names)
    assert flags & libvirt.VIR_MIGRATE_PARALLEL and flags & libvirt.VIR_MIGRATE_COMPRESSED
    # 2 connections when none were given; the user's count when given (1 is one multifd channel, allowed).
    assert mf.build_params(params(compression=method), []) == {
        libvirt.VIR_MIGRATE_PARAM_COMPRESSION: method, libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: 2}
    assert mf.build_params(params(compression=method, parallel_connections=4), [])[
        libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] == 4
    mf.validate_options(params(compression=method, parallel_connections=1))
    assert mf.parallel_connections(params(compression=method, parallel_connections=1)) == 1


def test_a_jobs_xbzrle_step_sets_its_cache_and_nothing_else_does():
    libvirt = pytest.importorskip("libvirt")
    key = libvirt.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE
    assert mf.build_params(params(compression="xbzrle", xbzrle_cache_bytes=256 * 1048576), [])[key] == 268435456
    assert key not in mf.build_params(params(compression="xbzrle"), [])  # QEMU's own cache
    assert key not in mf.build_params(params(compression="none", xbzrle_cache_bytes=256 * 1048576), [])


def test_classic_compression_stays_without_parallel_migration():
    libvirt = pytest.importorskip("libvirt")
    for method in ("xbzrle", "mt"):
        names = mf.build_flags(params(compression=method), need_postcopy=False)[1]
        assert "COMPRESSED" in names and "PARALLEL" not in names
        assert libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS not in mf.build_params(params(compression=method), [])
    assert mf.parallel_connections(params()) is None


def test_postcopy_preempt_sets_no_flag():
    """libvirt has no flag for preempt (11.3 refuses 1 << 21 with VIR_ERR_INVALID_ARG, measured in the lab): it
    enables postcopy-preempt itself. The option is a requirement checked before moving, never a flag."""
    pytest.importorskip("libvirt")
    p = params(postcopy="immediate", postcopy_preempt=True)
    mf.validate_options(p)
    flags, names = mf.build_flags(p, need_postcopy=True)
    assert flags == mf.build_flags(params(postcopy="immediate"), need_postcopy=True)[0]
    assert not flags & (1 << 21) and not mf.resume_flags(p) & (1 << 21)


def test_postcopy_preempt_without_postcopy_is_refused():
    with pytest.raises(FleetmaintError, match="postcopy_preempt needs post-copy allowed") as err:
        mf.validate_options(params(postcopy_preempt=True))
    assert err.value.reason == "invalid_option"
