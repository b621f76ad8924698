# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The last resort for a VM that cannot converge live, only when allowed: shut down, move the definition, start.
"""

from __future__ import annotations

import time
from typing import Any, Dict

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import connection, libvirt
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.domains import record_home
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import HostContext
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_checks import vm_facts
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import is_local_disk


def cold_move(vm: str, src_uri: str, dest_uri: str, p: Dict[str, Any]) -> Dict[str, Any]:
    """Shut the VM down, move its definition with libvirt's offline migration, start it on the destination.

    Only for VMs whose disks are all on shared storage (an offline migration copies no disk). The
    guest gets an ACPI shutdown and ``cold_shutdown_timeout`` seconds; it is forced off only with
    ``cold_move_force``. libvirt moves the definition in one step (persist on the destination,
    undefine on the source), so it is never defined on two hosts.
    """

    with connection(src_uri) as sconn, connection(dest_uri) as dconn:
        src = HostContext(sconn, src_uri, p["shared_pools"])
        dom = sconn.lookupByName(vm)
        facts = vm_facts(dom, src)[0]
        local = [d["target"] for d in facts["disks"] if is_local_disk(d)]
        if local:
            raise FleetmaintError(f"{vm}: cold move needs shared storage; disk(s) {', '.join(local)} are local",
                                  step="cold move", vm=vm)
        record_home(dom, facts.get("home_host") or src.hostname, True)
        t0 = time.monotonic()
        if dom.isActive():
            dom.shutdown()
            deadline = time.monotonic() + p["cold_shutdown_timeout"]
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.5)
            if dom.isActive():
                if not p["cold_move_force"]:
                    raise FleetmaintError(f"{vm} did not shut down within {p['cold_shutdown_timeout']} s and "
                                          "cold_move_force is false; it still runs on its source", step="cold move",
                                          vm=vm)
                dom.destroy()
        flags = libvirt.VIR_MIGRATE_OFFLINE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        try:
            dom.migrate3(dconn, {}, flags)
            ddom = dconn.lookupByName(vm)
            ddom.create()
        except libvirt.libvirtError as exc:
            # Put it back where it was if the definition did not leave the source.
            try:
                sconn.lookupByName(vm).create()
            except libvirt.libvirtError:
                pass
            raise FleetmaintError(f"{vm}: cold move failed: {libvirt_message(exc)}", step="cold move", vm=vm) from exc
        return {"msg": f"cold-moved {vm} from {src.hostname} to {dconn.getHostname()}: stopped for "
                       f"{time.monotonic() - t0:.1f} s", "downtime_s": round(time.monotonic() - t0, 1)}
