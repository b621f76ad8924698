# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failover: restart a dead, fenced host's VMs on the survivors from the definitions domain_backup saved.

The order is what keeps a VM from running twice: probes agree the host is dead, the caller fences it, the
fence record is written, and only then are VMs started elsewhere, placed by the evacuation planner.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fence_records import (
    read_record, record_path, write_record,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.files import read_text
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import Fleet
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import classify_storage, parse_domain
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import is_local_disk
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.placement import plan_evacuation, PlanRefused
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.probes import probe_libvirt
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri


def read_backup(path: str) -> Dict[str, Any]:
    text = read_text(os.path.join(path, "index.json"))
    if text is None:
        raise FleetmaintError(f"no backup at {path} (index.json missing): run domain_backup regularly, "
                              "failover restarts VMs from it", step="read backup")
    return json.loads(text)


def plan_failover(host: str, index: Dict[str, Any], xmls: Dict[str, str], survivors: Dict[str, Dict[str, Any]],
                  current: Dict[str, Dict[str, List[str]]], planner: Dict[str, Any],
                  names_on: Optional[Dict[str, List[str]]] = None,
                  restarting: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """What to do with each VM the backup places on the dead host. Pure.

    survivors: host -> {"pools": [...], "networks": [names]}; current: uuid -> {"running_on", "defined_on"}
    on the survivors; planner: Fleet.planner_input() of the survivors; names_on: VM name -> survivors that
    have a domain of that name (any UUID); restarting: VM -> survivor an earlier run of this failover was
    defining it on (from the fence record) when it stopped.
    """
    out: Dict[str, List[Dict[str, Any]]] = {"restart": [], "already_running": [], "unrecoverable": [],
                                            "not_running": [], "start_defined": []}
    candidates = []
    for name, e in sorted(index.items()):
        if host not in e.get("defined_on", []) and host not in e.get("running_on", []):
            continue
        now = current.get(e["uuid"], {"running_on": [], "defined_on": []})
        if now["running_on"]:
            out["already_running"].append({"vm": name, "host": now["running_on"][0]})
            continue
        if host not in e.get("running_on", []):
            out["not_running"].append({"vm": name, "state": e.get("state"),
                                       "detail": f"was {e.get('state')} on {host} at backup time: left defined there"})
            continue
        if now["defined_on"]:
            if (restarting or {}).get(name) in now["defined_on"]:  # our earlier run stopped before starting it
                out["start_defined"].append({"vm": name, "destination": restarting[name]})
            else:  # moved there and shut down after the backup: someone's decision, not ours to undo
                out["not_running"].append({"vm": name, "state": "shutoff", "detail": f"defined but not running on "
                                           f"{', '.join(now['defined_on'])} (not by a failover): left as is"})
            continue
        if (names_on or {}).get(name):
            out["unrecoverable"].append({"vm": name, "reason": f"another VM named {name} (another UUID) is on "
                                         f"{', '.join(names_on[name])}"})
            continue
        xml = xmls.get(name)
        if xml is None:
            out["unrecoverable"].append({"vm": name, "reason": "its definition is missing from the backup"})
            continue
        d = parse_domain(xml)
        pools = next(iter(survivors.values()))["pools"] if survivors else []
        local = [disk.get("path") or disk.get("pool") for disk in d["disks"]
                 if is_local_disk(disk, classify_storage(disk, pools, planner.get("shared_pools", ())).get("storage"))]
        if local:
            out["unrecoverable"].append({"vm": name, "reason": f"disk {', '.join(str(x) for x in local)} is on "
                                         f"{host}'s local storage: it comes back when {host} does"})
            continue
        if d["hostdevs"]:
            out["unrecoverable"].append({"vm": name, "reason": f"it uses a host device of {host}"})
            continue
        nets = [i.get("network") for i in d["interfaces"] if i.get("network")]
        ok_hosts = [h for h, s in survivors.items() if all(n in s["networks"] for n in nets)]
        if not ok_hosts:
            out["unrecoverable"].append({"vm": name, "reason": f"no surviving host has network(s) {', '.join(nets)}"})
            continue
        candidates.append({"name": name, "host": host, "memory_mib": d["memory_mib"], "vcpus": d["vcpus"],
                           "ok_hosts": ok_hosts})
    hosts = [dict(h) for h in planner["hosts"]] + [{"name": host, "memory_mib": 0, "vcpus": 0, "maintenance": True}]
    vms = [v for v in planner["vms"] if v["host"] != host] + [
        {k: c[k] for k in ("name", "host", "memory_mib", "vcpus")} for c in candidates]
    try:
        plan = plan_evacuation(hosts, vms, [host], refuse_partial=False)
    except PlanRefused as exc:  # the survivors cannot take even the total: report every candidate
        plan = {"moves": [], "unplaceable": [{"vm": c["name"], "reason": str(exc)} for c in candidates]}
    by_name = {c["name"]: c for c in candidates}
    for m in plan["moves"]:
        c = by_name[m["vm"]]
        dest = m["destination"] if m["destination"] in c["ok_hosts"] else None
        if dest is None:
            out["unrecoverable"].append({"vm": m["vm"], "reason": f"planned to {m['destination']}, which lacks "
                                         f"its network; hosts with it: {', '.join(c['ok_hosts'])}"})
        else:
            out["restart"].append({"vm": m["vm"], "destination": dest, "memory_mib": c["memory_mib"]})
    for u in plan["unplaceable"]:
        out["unrecoverable"].append({"vm": u["vm"], "reason": f"no capacity: {u.get('reason', 'no host fits it')}"})
    return out


def failover_host(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    """Restart a fenced host's VMs on the survivors, from the backup."""
    host = p["host"]
    if not p["fenced"]:
        raise FleetmaintError(f"refusing to restart any VM of {host}: it is not fenced (powered off or cut from "
                              "storage), so its VMs may still be writing their disks", step="fence", host=host)
    if p["failed_uri"]:
        probe = probe_libvirt(p["failed_uri"], p["probe_timeout"])
        if probe["alive"]:
            raise FleetmaintError(f"refusing to fail over {host}: its libvirt {probe['detail']}; use failback or "
                                  "host_evacuate for a host that is up", step="probe", host=host)
    index = read_backup(p["backup_dir"])
    known = sorted({h for e in index.values() for h in e.get("defined_on", []) + e.get("running_on", [])})
    if host not in known:
        raise FleetmaintError(f"the backup in {p['backup_dir']} has no VM on '{host}' (hosts in it: "
                              f"{', '.join(known) or 'none'})", step="read backup", host=host)
    xmls = {n: read_text(os.path.join(p["backup_dir"], f"{n}.xml")) for n, e in index.items()
            if host in e.get("defined_on", [])}
    with Fleet(p["uris"], p["shared_pools"]) as fleet:
        if host in fleet.hosts:
            raise FleetmaintError(f"{host} answers on {redact_uri(fleet.uri_of[host])}: it is not dead; "
                                  "list only surviving hosts in uris", step="probe", host=host)
        survivors = {h: {"pools": c.pools, "networks": [n["name"] for n in c.networks if n.get("active", True)]}
                     for h, c in fleet.hosts.items()}
        current = fleet.placement("uuid")
        names_on: Dict[str, List[str]] = {}
        for h, doms in fleet.vms.items():
            for d in doms:
                names_on.setdefault(d["name"], []).append(h)
        planner = fleet.planner_input(p["memory_headroom"])
        planner["shared_pools"] = p["shared_pools"]
        same_uuid = {d["name"] for doms in fleet.vms.values() for d in doms
                     if d["name"] in index and d["uuid"] == index[d["name"]]["uuid"]}
        before = read_record(p["fence_record_dir"], host)
        plan = plan_failover(host, index, xmls, survivors, current, planner,
                             {n: hs for n, hs in names_on.items() if n not in same_uuid},
                             (before or {}).get("restarting", {}))
        changed = bool(plan["restart"] or plan["start_defined"])
        result: Dict[str, Any] = {"host": host, "plan": plan, "recovered": [], "failed": [], "changed": changed,
                                  "already_running": plan["already_running"], "unrecoverable": plan["unrecoverable"],
                                  "not_running": plan["not_running"],
                                  "fence_record": record_path(p["fence_record_dir"], host)}
        if check_mode:
            result["msg"] = (f"would restart {len(plan['restart']) + len(plan['start_defined'])} VMs of {host}; "
                             f"{len(plan['unrecoverable'])} unrecoverable")
            return result
        record = json.loads(json.dumps(before)) if before else {
            "host": host, "fenced_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "fence": p["fence_evidence"], "recovered": {}, "unrecovered_running": []}
        record.setdefault("restarting", {})
        record["unrecovered_running"] = sorted({u["vm"] for u in plan["unrecoverable"]}
                                               | set(record.get("unrecovered_running", [])))
        # The record first: from here on the guard hook refuses every start on the dead host.
        write_record(p["fence_record_dir"], host, record)
        todo = [(r["vm"], r["destination"], True) for r in plan["restart"]] + \
               [(r["vm"], r["destination"], False) for r in plan["start_defined"]]
        for vm, dest, define in todo:
            if p["failed_uri"] and probe_libvirt(p["failed_uri"], p["probe_timeout"])["alive"]:
                result["failed"].append({"vm": vm, "reason": f"{host} answered again: stopped before starting it"})
                break
            conn = fleet.hosts[dest].conn
            dom = None
            try:
                if define:
                    record["restarting"][vm] = dest  # so a re-run after a crash here starts it, not someone else's
                    write_record(p["fence_record_dir"], host, record)
                    dom = conn.defineXML(xmls[vm])
                    if index[vm].get("autostart"):
                        dom.setAutostart(1)
                else:
                    dom = conn.lookupByName(vm)
                dom.create()
                result["recovered"].append({"vm": vm, "host": dest})
                record["recovered"][vm] = dest
                record["restarting"].pop(vm, None)
            except Exception as exc:  # pylint: disable=broad-except
                msg = libvirt_message(exc)
                if define and dom is not None:
                    try:
                        dom.undefine()  # leave no second definition behind
                    except Exception:  # pylint: disable=broad-except
                        pass
                record["restarting"].pop(vm, None)
                result["failed"].append({"vm": vm, "host": dest, "reason": f"starting it on {dest} failed: {msg}"})
        record["unrecovered_running"] = sorted(set(record["unrecovered_running"]) | {f["vm"] for f in result["failed"]})
        write_record(p["fence_record_dir"], host, record)
    result["changed"] = bool(result["recovered"] or result["failed"]) or record != before
    summary = f"{host}: restarted {len(result['recovered'])} VMs on surviving hosts"
    if result["already_running"]:
        summary += f"; {len(result['already_running'])} already running elsewhere"
    if plan["unrecoverable"]:
        summary += "; NOT recovered: " + "; ".join(f"{u['vm']} ({u['reason']})" for u in plan["unrecoverable"])
    result["msg"] = summary
    if result["failed"]:
        result["msg"] += "; failed: " + "; ".join(f"{f['vm']}: {f['reason']}" for f in result["failed"])
        raise FleetmaintError(result["msg"], step="restart", host=host, result=result)
    return result
