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
