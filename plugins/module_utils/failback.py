# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failback: when a fenced host returns, undefine its stale copies, then remove the fence record.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fence_records import read_record, record_path
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import Fleet


def classify_copies(host: str, here: List[Dict[str, Any]], elsewhere: Dict[str, Dict[str, List[str]]],
                    record: Optional[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], List[str], List[str]]:
    """Which of the returned host's domains are stale copies (to undefine), which run twice, which are unclear.

    here: the host's domains (name, uuid, active); elsewhere: uuid -> running_on/defined_on on the other hosts.
    """
    stale: List[Dict[str, Any]] = []
    twice: List[str] = []
    unclear: List[str] = []
    for d in here:
        other = elsewhere.get(d["uuid"])
        if not other:
            continue
        if d["active"] and other["running_on"]:
            twice.append(f"{d['name']} runs on {host} and {', '.join(other['running_on'])}")
        elif not d["active"] and other["running_on"]:
            stale.append({"vm": d["name"], "running_on": other["running_on"][0]})
        elif not d["active"] and (record or {}).get("recovered", {}).get(d["name"]) in other["defined_on"]:
            stale.append({"vm": d["name"], "running_on": None})
        else:
            unclear.append(f"{d['name']} ({'running' if d['active'] else 'defined'} on {host}, defined on "
                           f"{', '.join(other['defined_on'])})")
    return stale, twice, unclear


def failback_host(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    """On a host that returned after a failover: undefine its stale copies, clear its fence record, and start
    the VMs that could not be recovered elsewhere (they were running when it failed)."""
    with Fleet(p["uris"], p["shared_pools"]) as fleet:
        host = fleet.resolve([p["host"]])[0]
        record = read_record(p["fence_record_dir"], host)
        elsewhere = fleet.placement("uuid", skip=[host])
        stale, twice, unclear = classify_copies(host, fleet.vms[host], elsewhere, record)
        if twice:
            raise FleetmaintError("two copies running, nothing changed - stop the one that must not run: "
                                  + "; ".join(twice), step="check copies", host=host)
        if unclear:
            raise FleetmaintError("cannot tell which copy is current, nothing changed: " + "; ".join(unclear),
                                  step="check copies", host=host)
        present = {d["name"]: d for d in fleet.vms[host]}
        stale_names = {s["vm"] for s in stale}
        to_start = [vm for vm in (record or {}).get("unrecovered_running", [])
                    if vm in present and vm not in stale_names and not present[vm]["active"]
                    and present[vm]["uuid"] not in elsewhere] if p["start_unrecovered"] else []
        result: Dict[str, Any] = {"host": host, "stale_undefined": stale, "started": [], "start_failed": [],
                                  "fence_record": record_path(p["fence_record_dir"], host),
                                  "fence_record_cleared": record is not None,
                                  "changed": bool(stale or to_start or record)}
        if check_mode:
            result["msg"] = (f"would undefine {len(stale)} stale copies on {host}, clear its fence record"
                             f" ({'present' if record else 'none'}) and start {len(to_start)} VMs there")
            result["started"] = to_start
            return result
        conn = fleet.hosts[host].conn
        for s in stale:
            try:
                dom = conn.lookupByName(s["vm"])
                if dom.isActive():  # started between our look and now: do not touch
                    raise FleetmaintError(f"{s['vm']} started on {host} while failback ran", step="undefine stale copy")
                dom.undefine()  # definition only: the disks belong to the running copy
            except FleetmaintError:
                raise
            except Exception as exc:  # pylint: disable=broad-except
                raise FleetmaintError(f"undefining the stale copy of {s['vm']} on {host} failed: "
                                      f"{libvirt_message(exc)}; fence record kept", step="undefine stale copy",
                                      host=host, result=result) from exc
        if record is not None:
            os.unlink(record_path(p["fence_record_dir"], host))  # the guard lets starts through again
        for vm in to_start:
            try:
                conn.lookupByName(vm).create()
                result["started"].append(vm)
            except Exception as exc:  # pylint: disable=broad-except
                result["start_failed"].append({"vm": vm, "reason": libvirt_message(exc)})
    result["msg"] = (f"{host}: undefined {len(stale)} stale copies, fence record "
                     f"{'cleared' if record else 'was not there'}, started {len(result['started'])} VMs that "
                     "were not recovered elsewhere")
    if result["start_failed"]:
        result["msg"] += "; could not start: " + "; ".join(f"{f['vm']} ({f['reason']})" for f in result["start_failed"])
        raise FleetmaintError(result["msg"], step="start", host=host, result=result)
    return result
