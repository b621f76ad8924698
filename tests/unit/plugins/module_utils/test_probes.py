"""Is a host dead: probes agree only when enough ran and none answered."""

import sys

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.probes import probe_host


def test_probes_dead_only_when_enough_probes_ran_and_none_answered():
    dead_uri = "qemu+tcp://127.0.0.1:1/system"  # nothing listens on port 1
    r = probe_host(dead_uri, [1], [], timeout=3, min_probes=2)
    assert r["dead"] is True and r["alive"] == [] and len(r["probes"]) == 2
    r = probe_host(dead_uri, [], [], timeout=3, min_probes=2)
    assert r["dead"] is False and r["enough_probes"] is False, "one failed probe is not proof"
    r = probe_host(dead_uri, [1], [[sys.executable, "-c", "pass"]], timeout=3, min_probes=2)
    assert r["dead"] is False and r["alive"] == [f"command {sys.executable} -c pass"]


def test_a_probe_command_that_cannot_run_is_an_error_not_a_dead_host():
    with pytest.raises(FleetmaintError, match="could not run"):
        probe_host("qemu+tcp://127.0.0.1:1/system", [], [["/nonexistent/bmc-probe"]], timeout=3, min_probes=1)
