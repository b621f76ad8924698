import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import libvirt_connection as lc
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, wrap_error
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri


@pytest.mark.parametrize("uri,redacted", [
    ("qemu+ssh://admin:s3cret@hv1/system", "qemu+ssh://admin:********@hv1/system"),
    ("qemu+tcp://hv1/system?password=hunter2&x=1", "qemu+tcp://hv1/system?password=********&x=1"),
    ("qemu+tls://hv1/system", "qemu+tls://hv1/system"),
    ("qemu:///system", "qemu:///system"),
    (None, None),
])
def test_redact_uri(uri, redacted):
    assert redact_uri(uri) == redacted


@pytest.mark.parametrize("bad", ["not a uri", "", "/var/run/libvirt"])
def test_open_rejects_non_uri_without_calling_libvirt(bad):
    with pytest.raises(FleetmaintError, match="is not a libvirt URI"):
        lc.open_uri(bad)


def test_open_failure_names_uri_and_hides_password():
    pytest.importorskip("libvirt")
    with pytest.raises(FleetmaintError) as info:
        lc.open_uri("qemu+unix:///system?socket=/nonexistent/sock&password=topsecret")
    assert "cannot connect to libvirt at qemu+unix:///system?socket=/nonexistent/sock&password=********" \
        in info.value.msg
    assert "topsecret" not in info.value.msg
    assert info.value.context["step"] == "connect"
    assert info.value.libvirt_code is not None


def test_connection_context_closes(test_conn):
    with lc.connection("test:///default") as conn:
        assert conn.getHostname()
    with pytest.raises(Exception):
        conn.getHostname()  # closed


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
