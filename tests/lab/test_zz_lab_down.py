"""Runs last (file order): deleting VMs and bringing the lab down leaves nothing behind."""

from __future__ import annotations

import os
import subprocess

from conftest import BRIDGE


def test_vm_delete_and_down_leave_nothing(lab):
    for vm in list(lab.status()["vms"]):
        lab.ctl("vm", "delete", vm)
    assert lab.status()["vms"] == {}
    lab.ctl("down")
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode != 0
    # No libvirtd or QEMU of the test lab survives, and no mount of it is visible.
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
    assert "fleetmaint-lab-test" not in procs
    with open("/proc/self/mountinfo") as f:
        assert "fleetmaint-lab-test" not in f.read()
    assert not os.path.exists("/var/tmp/fleetmaint-lab-test/hosts")
