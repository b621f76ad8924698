import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.tests.unit.fakes import move_params
from ansible_collections.fleetmaint.libvirt.plugins.module_utils import live_migration as lm


params = move_params


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


# --- capabilities of both ends: compression and post-copy preempt refused before anything moves ---

@pytest.fixture
def tiny(test_conn):
    """A small persistent running VM on the test driver, that nothing but the capabilities under test blocks."""
    dom = test_conn.defineXML("<domain type='test'><name>tiny</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
                              "<os><type>hvm</type></os></domain>")
    dom.create()
    yield "tiny"
    dom.destroy()
    dom.undefine()


def _two_hosts(monkeypatch, compression, preempt):
    """test:///default as a source and a destination of their own: the second HostContext is the destination,
    each end answering the probes as given (``compression``/``preempt``: {"src": ..., "dst": ...})."""
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils import hypervisor_facts as hf

    class Ctx(hf.HostContext):
        made = []

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.role = "src" if not Ctx.made else "dst"
            Ctx.made.append(self)
            # Room for the VM (the test driver reports 3 MiB available).
            self.host = dict(self.host, hostname=f"{self.role}-host", memory_free_mib=8192, memory_available_mib=8192)

        def compression(self):
            accepted = compression[self.role]
            return {"probed": accepted is not None, "accepted": accepted or [], "rejected": {}, "multifd": []}

        def postcopy_preempt(self):
            return preempt[self.role]

    found = []

    def lookup(_conn, name, _uuid):
        found.append(name)
        return _conn.lookupByName(name) if len(found) == 1 else None  # on the source only

    def no_move(*_a, **_kw):
        raise AssertionError("nothing may move")

    monkeypatch.setattr(lm, "HostContext", Ctx)
    monkeypatch.setattr(lm, "same_host", lambda *_a: None)
    monkeypatch.setattr(lm, "lookup", lookup)
    monkeypatch.setattr(lm, "MigrationJob", no_move)
    monkeypatch.setattr(lm, "record_home", no_move)


NEW = ["xbzrle", "mt", "zlib", "zstd"]
OLD = ["xbzrle", "mt"]


def test_zstd_to_a_host_that_rejects_it_is_refused_naming_that_host(monkeypatch, tiny):
    pytest.importorskip("libvirt")
    _two_hosts(monkeypatch, {"src": NEW, "dst": OLD}, {"src": True, "dst": False})
    with pytest.raises(FleetmaintError) as err:
        lm.migrate(params(name=tiny, uri="test:///default", dest_uri="test:///default", compression="zstd",
                          tls=False))
    assert err.value.reason == "blocked" and "compression_unsupported" in err.value.context["codes"]
    bad = [f for f in err.value.context["findings"] if f["code"] == "compression_unsupported"]
    assert len(bad) == 1 and bad[0]["detail"]["host"] == "dst-host" and "dst-host" in bad[0]["message"]


def test_zstd_between_two_new_hosts_plans_parallel_migration(monkeypatch, tiny):
    pytest.importorskip("libvirt")
    _two_hosts(monkeypatch, {"src": NEW, "dst": NEW}, {"src": True, "dst": True})
    res = lm.migrate(params(name=tiny, uri="test:///default", dest_uri="test:///default", compression="zstd",
                            tls=False, postcopy="immediate", postcopy_preempt=True), check_mode=True)
    assert not [f for f in res["findings"] if f["severity"] == "blocker"], res["findings"]
    opts = res["options"]
    assert {"COMPRESSED", "PARALLEL", "POSTCOPY"} <= set(opts["flags"])
    assert opts["parallel_connections"] == 2 and opts["compression"] == "zstd" and opts["postcopy_preempt"] is True


def test_an_end_not_probed_is_not_known_and_not_checked(monkeypatch, tiny):
    pytest.importorskip("libvirt")
    _two_hosts(monkeypatch, {"src": NEW, "dst": None}, {"src": True, "dst": True})
    res = lm.migrate(params(name=tiny, uri="test:///default", dest_uri="test:///default", compression="zstd",
                            tls=False), check_mode=True)
    assert "compression_unsupported" not in [f["code"] for f in res["findings"]]


@pytest.mark.parametrize("missing", ["src", "dst"])
def test_postcopy_preempt_missing_on_either_end_is_refused(monkeypatch, tiny, missing):
    pytest.importorskip("libvirt")
    _two_hosts(monkeypatch, {"src": NEW, "dst": NEW}, {"src": missing != "src", "dst": missing != "dst"})
    with pytest.raises(FleetmaintError) as err:
        lm.migrate(params(name=tiny, uri="test:///default", dest_uri="test:///default", tls=False,
                          postcopy="immediate", postcopy_preempt=True), check_mode=True)
    assert err.value.reason == "blocked" and err.value.context["codes"] == ["postcopy_preempt_unsupported"]
    (bad,) = [f for f in err.value.context["findings"] if f["code"] == "postcopy_preempt_unsupported"]
    assert bad["detail"]["host"] == f"{missing}-host" and bad["severity"] == "blocker"
    assert bad["detail"]["end"] == {"src": "source", "dst": "destination"}[missing]
