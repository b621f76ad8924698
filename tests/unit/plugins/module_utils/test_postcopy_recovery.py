import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import postcopy_recovery as pr
from ansible_collections.fleetmaint.libvirt.tests.unit.fakes import FakeConn, FakeDom, move_params


params = move_params


def test_a_rerun_finishes_an_interrupted_migration():
    """Source shut off but still defined, destination running: the stale source definition goes."""
    pytest.importorskip("libvirt")
    src, dst = FakeDom("hv1", 5), FakeDom("hv2", 1)
    result = {"events": []}
    out = pr.finish_interrupted(params(), src, FakeConn("hv1", src), FakeConn("hv2", dst), "qemu+tcp://hv2/system",
                                result, {"vm": "vm1", "source": "hv1", "destination": "hv2"})
    assert out["changed"] is True and src.undefined and not dst.undefined
    assert out["placement"] == {"running_on": ["hv2"], "defined_on": ["hv2"]}
    assert "stale_definition_removed" in [e["event"] for e in out["events"]]


def test_a_rerun_resumes_a_broken_postcopy():
    libvirt = pytest.importorskip("libvirt")
    src = FakeDom("hv1", libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
    dst = FakeDom("hv2", libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED)
    sconn, dconn = FakeConn("hv1", src), FakeConn("hv2", dst)
    orig = src.migrateToURI3

    def resume(uri, params_, flags):
        orig(uri, params_, flags)
        dst.reason = 0  # the destination leaves 'post-copy failed' too

    src.migrateToURI3 = resume
    out = pr.finish_interrupted(params(), src, sconn, dconn, "qemu+tcp://hv2/system", {"events": []},
                                {"vm": "vm1", "source": "hv1", "destination": "hv2"})
    assert src.resumes == 1 and out["placement"]["running_on"] == ["hv2"] and src.undefined


def test_a_vm_running_on_both_hosts_is_not_touched():
    pytest.importorskip("libvirt")
    src, dst = FakeDom("hv1", 1), FakeDom("hv2", 1)
    assert pr.finish_interrupted(params(), src, FakeConn("hv1", src), FakeConn("hv2", dst), "u", {"events": []},
                                 {"vm": "vm1", "source": "hv1", "destination": "hv2"}) is None
    assert not src.undefined and not dst.undefined
