import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import domains
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import METADATA_NS


def test_lookup_is_none_for_a_missing_domain_and_placement_names_the_host(test_conn):
    assert domains.lookup(test_conn, "ghost", None) is None
    dom = domains.lookup(test_conn, "test", None)
    assert domains.state(dom)[0] == "running"
    host = test_conn.getHostname()
    assert domains.placement(test_conn, None, "test") == {"running_on": [host], "defined_on": [host]}
    assert domains.placement(test_conn, None, "ghost") == {"running_on": [], "defined_on": []}


def test_other_lookup_errors_are_raised():
    libvirt = pytest.importorskip("libvirt")

    class Conn:
        def lookupByName(self, _name):  # noqa: N802
            raise libvirt.libvirtError("connection reset")

    with pytest.raises(libvirt.libvirtError):
        domains.lookup(Conn(), "vm1", None)


def test_record_home_is_written_once(test_conn):
    dom = domains.lookup(test_conn, "test", None)
    domains.record_home(dom, "hv1", persistent=False)
    domains.record_home(dom, "hv2", persistent=False)  # already recorded: kept
    libvirt = pytest.importorskip("libvirt")
    meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    assert "hv1" in meta and "hv2" not in meta
