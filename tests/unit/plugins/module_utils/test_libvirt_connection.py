import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import libvirt_connection as lc
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError


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
