"""The collection's error: names the step and host, keeps libvirt's code."""

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import wrap_error


def test_wrap_error_names_step_and_host():
    pytest.importorskip("libvirt")
    import libvirt

    conn = libvirt.open("test:///default")
    with pytest.raises(libvirt.libvirtError) as info:
        conn.lookupByName("no-such-vm")
    err = wrap_error(info.value, "looking up no-such-vm", "test:///default", vm="no-such-vm")
    assert err.msg.startswith("looking up no-such-vm on test:///default failed: ")
    assert "no-such-vm" in err.msg
    assert err.context["vm"] == "no-such-vm"
    assert err.libvirt_code == libvirt.VIR_ERR_NO_DOMAIN
