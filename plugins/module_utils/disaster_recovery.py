# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disaster recovery: is a host dead, restart a fenced host's VMs elsewhere, clean it up when it returns.

The order is what keeps a VM from running twice: probes agree the host is dead, the caller fences it,
a fence record is written (a host-side guard hook refuses every start while it exists), and only then are
VMs started elsewhere, from the definitions saved by domain_backup. When the host returns, its stale copies
are undefined before the record is removed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.files import read_text, write_atomic
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import Fleet
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import (
    FleetmaintError, call_with_timeout, libvirt_message, open_uri, redact_uri,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import classify_storage, parse_domain
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import is_local_disk
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.placement import PlanRefused, plan_evacuation

RECORD_MODE = 0o644  # the guard hook on every host reads it


# ------------------------------------------------------------------ probes
def probe_libvirt(uri: str, timeout: float) -> Dict[str, Any]:
    def ask() -> str:
        conn = open_uri(uri, readonly=True)
        try:
            return conn.getHostname()
        finally:
            conn.close()
    try:
        name = call_with_timeout(ask, timeout)
        return {"probe": f"libvirt {redact_uri(uri)}", "alive": True, "detail": f"answers as {name}"}
    except Exception as exc:  # pylint: disable=broad-except
        return {"probe": f"libvirt {redact_uri(uri)}", "alive": False, "detail": str(exc)}


def probe_tcp(address: str, port: int, timeout: float) -> Dict[str, Any]:
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return {"probe": f"tcp {address}:{port}", "alive": True, "detail": "connection accepted"}
    except OSError as exc:
        return {"probe": f"tcp {address}:{port}", "alive": False, "detail": str(exc)}


def probe_command(argv: List[str], timeout: float) -> Dict[str, Any]:
    """A user probe (a BMC's power status, a ping over another network): exit 0 means alive. No shell."""
    name = "command " + " ".join(argv)
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        # A probe that cannot run proves nothing: it must not count as "dead".
        raise FleetmaintError(f"probe '{name}' could not run: {exc}", step="probe") from exc
    out = (res.stdout.strip() or res.stderr.strip())[:200]
    return {"probe": name, "alive": res.returncode == 0, "detail": f"exit {res.returncode}: {out}"}


def probe_host(uri: str, tcp_ports: List[int], commands: List[List[str]], timeout: float,
               min_probes: int) -> Dict[str, Any]:
    """Dead only when at least min_probes probes ran and not one of them reached the host."""
    address = urlparse(uri).hostname
    probes = [probe_libvirt(uri, timeout)]
    if address:
        probes += [probe_tcp(address, int(port), timeout) for port in tcp_ports]
    probes += [probe_command([str(a) for a in argv], timeout) for argv in commands]
    alive = [p["probe"] for p in probes if p["alive"]]
    enough = len(probes) >= min_probes
    return {"probes": probes, "alive": alive, "dead": enough and not alive, "enough_probes": enough}


# ------------------------------------------------------------- fence record
def record_path(directory: str, host: str) -> str:
    return os.path.join(directory, f"{host}.fenced")


def read_record(directory: str, host: str) -> Optional[Dict[str, Any]]:
    text = read_text(record_path(directory, host))
    return json.loads(text) if text else None


def write_record(directory: str, host: str, record: Dict[str, Any]) -> None:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    write_atomic(record_path(directory, host), json.dumps(record, indent=1, sort_keys=True) + "\n", RECORD_MODE)


# ----------------------------------------------------------------- failover
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
        current: Dict[str, Dict[str, List[str]]] = {}
        names_on: Dict[str, List[str]] = {}
        for h, doms in fleet.vms.items():
            for d in doms:
                names_on.setdefault(d["name"], []).append(h)
                cur = current.setdefault(d["uuid"], {"running_on": [], "defined_on": []})
                if d["active"]:
                    cur["running_on"].append(h)
                if d["persistent"]:
                    cur["defined_on"].append(h)
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


# ----------------------------------------------------------------- failback
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
        elsewhere: Dict[str, Dict[str, List[str]]] = {}
        for h, doms in fleet.vms.items():
            if h == host:
                continue
            for d in doms:
                e = elsewhere.setdefault(d["uuid"], {"running_on": [], "defined_on": []})
                if d["active"]:
                    e["running_on"].append(h)
                if d["persistent"]:
                    e["defined_on"].append(h)
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
