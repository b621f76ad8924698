# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run many live migrations at once within limits, each escalating on its own, never forever.

Used by host_evacuate (moves from the plan) and host_restore (moves back to home hosts).
Every move goes through live_migration.migrate, so each one keeps its guarantees (checks,
exactly one definition, abort and stay on failure). Escalation per VM, as the options allow:
the downtime ladder first, then auto-converge, then post-copy, then suspend; at most
``max_attempts`` attempts. ``on_failure``: ``stop`` starts no new move after a failure (running
ones finish), ``continue`` goes on. ``overall_timeout`` stops starting new moves.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import Fleet
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import (
    FleetmaintError, connection, libvirt, libvirt_message,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.live_migration import ARGUMENT_SPEC, record_home, migrate
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.maintenance import HostLease, clear_mark, set_mark
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_checks import (
    HostContext, check_pair, vm_facts,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import blockers, is_local_disk, stays
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import (
    DEFAULT_ESTIMATE_BANDWIDTH_MIB_S, MIGRATION_TUNING, MOVE_LIMITS, PLACEMENT, STORAGE, pick,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.reasons import COLD_MOVE_AFTER, decide
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.placement import (
    DEFAULT_LIMITS, PlanRefused, plan_evacuation,
)

MIGRATION_KEYS = ("tls", "unsafe", "bandwidth", "max_downtime", "downtime_steps", "parallel_connections",
                  "compression", "copy_storage", "memory_headroom", "shared_pools", "poll_interval")


def escalation_steps(p: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The options of each attempt, mildest first."""
    t = p["vm_timeout"]
    base = {"timeout": t, "timeout_action": "abort", "postcopy": "never", "auto_converge": False}
    steps = [dict(base, why="pre-copy with the downtime ladder")]
    if p["allow_auto_converge"]:
        steps.append(dict(base, auto_converge=True, auto_converge_initial=50, auto_converge_increment=20,
                          why="auto-converge (vCPU throttling)"))
    if p["allow_postcopy"]:
        steps.append(dict(base, postcopy="after_timeout", timeout_action="postcopy",
                          why="post-copy after the timeout"))
    if p["allow_suspend"]:
        steps.append(dict(base, timeout_action="suspend", why="pause the guest to finish"))
    return steps[:p["max_attempts"]]


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


def _staying_note(staying: List[Dict[str, Any]], away: bool = False) -> str:
    if not staying:
        return ""
    what = "left away from home, home unchanged" if away else "staying"
    return f"; {what}: " + "; ".join(f"{s['vm']} on {s['host']} ({s['reason']}: {s['msg']})" for s in staying)


def run_moves(moves: List[Dict[str, Any]], uri_of: Dict[str, str], p: Dict[str, Any],
              progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Execute moves [{vm, source, destination}] within p['limits']; returns per-VM results and totals."""
    limits = p["limits"]
    lock = threading.Lock()
    out_busy: Dict[str, int] = {}
    in_busy: Dict[str, int] = {}
    results: Dict[str, Dict[str, Any]] = {
        m["vm"]: {"vm": m["vm"], "source": m["source"], "destination": m["destination"], "result": "not_started",
                  "attempts": []}
        for m in moves}
    pending = list(moves)
    running: List[threading.Thread] = []
    stop = {"flag": False, "why": None}
    t0 = time.monotonic()
    steps = escalation_steps(p)

    def say(**kw: Any) -> None:
        if progress:
            progress(kw)

    def one(m: Dict[str, Any]) -> None:
        res = results[m["vm"]]
        res["result"] = "running"
        i, restarted = 0, False
        while i < len(steps):
            step = steps[i]
            i += 1
            args = {k: v.get("default") for k, v in ARGUMENT_SPEC.items()}
            args.update({k: p[k] for k in MIGRATION_KEYS if k in p and p[k] is not None})
            args.update({k: v for k, v in step.items() if k != "why"})
            args.update(name=m["vm"], uri=uri_of[m["source"]], dest_uri=uri_of[m["destination"]],
                        peer_uri=(p.get("peer_uris") or {}).get(m["destination"]))
            say(kind="attempt", vm=m["vm"], attempt=i, why=step["why"], source=m["source"],
                destination=m["destination"])
            try:
                r = migrate(args, progress=progress)
            except FleetmaintError as exc:
                partial = exc.context.get("result") or {}
                res["attempts"].append({"attempt": i, "why": step["why"], "ok": False, "msg": exc.msg,
                                        "reason": exc.reason, "metrics": partial.get("metrics")})
                say(kind="attempt_failed", vm=m["vm"], attempt=i, reason=exc.reason, msg=exc.msg)
                # What next is decided by the reason code alone (reasons.decide), never by the message.
                action = decide(exc.reason, restarted)
                if action == "restart":
                    restarted = True
                    i -= 1
                    say(kind="attempt_restart", vm=m["vm"], attempt=i, why="failed before any data moved")
                    time.sleep(2)
                    continue
                if action == "escalate":
                    continue
                break
            res["attempts"].append({"attempt": i, "why": step["why"], "ok": True, "msg": r.get("msg"),
                                    "metrics": r.get("metrics")})
            res.update(result="moved" if r.get("changed") else "already_there", metrics=r.get("metrics"),
                       home_host=r.get("home_host"))
            say(kind="moved", vm=m["vm"], msg=r.get("msg"))
            return
        if p.get("allow_cold_move") and res["attempts"] and res["attempts"][-1].get("reason") in COLD_MOVE_AFTER:
            say(kind="cold_move", vm=m["vm"], source=m["source"], destination=m["destination"])
            try:
                c = cold_move(m["vm"], uri_of[m["source"]], uri_of[m["destination"]], p)
                res["attempts"].append({"attempt": len(res["attempts"]) + 1, "why": "cold move", "ok": True,
                                        "msg": c["msg"], "metrics": {"downtime_s": c["downtime_s"]}})
                res.update(result="cold_moved", msg=c["msg"])
                return
            except FleetmaintError as exc:
                res["attempts"].append({"attempt": len(res["attempts"]) + 1, "why": "cold move", "ok": False,
                                        "msg": exc.msg, "reason": exc.reason, "metrics": None})
        res["result"] = "failed"
        res["msg"] = res["attempts"][-1]["msg"] if res["attempts"] else "not attempted"
        res["reason"] = (res["attempts"][-1].get("reason") if res["attempts"] else None) or "unexpected"

    def runner(m: Dict[str, Any]) -> None:
        try:
            one(m)
        except Exception as exc:  # pylint: disable=broad-except
            results[m["vm"]].update(result="failed", msg=f"unexpected error: {exc}", reason="unexpected")
        finally:
            with lock:
                out_busy[m["source"]] -= 1
                in_busy[m["destination"]] -= 1
                if results[m["vm"]]["result"] == "failed" and p["on_failure"] == "stop" and not stop["flag"]:
                    stop.update(flag=True, why=f"{m['vm']} failed and on_failure is stop")

    while pending or running:
        with lock:
            if p.get("overall_timeout") and time.monotonic() - t0 > p["overall_timeout"] and not stop["flag"]:
                stop.update(flag=True, why=f"overall timeout of {p['overall_timeout']} s")
            if not stop["flag"]:
                for m in list(pending):
                    if len(running) >= limits["fleet"]:
                        break
                    if out_busy.get(m["source"], 0) < limits["per_source"] and \
                            in_busy.get(m["destination"], 0) < limits["per_destination"]:
                        pending.remove(m)
                        out_busy[m["source"]] = out_busy.get(m["source"], 0) + 1
                        in_busy[m["destination"]] = in_busy.get(m["destination"], 0) + 1
                        th = threading.Thread(target=runner, args=(m,), name=f"move-{m['vm']}", daemon=True)
                        running.append(th)
                        th.start()
        for th in list(running):
            th.join(timeout=0.2)
            if not th.is_alive():
                running.remove(th)
        if stop["flag"] and not running:
            break
    for m in pending:
        results[m["vm"]].update(msg=f"not started: {stop['why']}", reason="not_started")
    ordered = [results[m["vm"]] for m in moves]
    totals = {k: sum(1 for r in ordered if r["result"] == k)
              for k in ("moved", "cold_moved", "already_there", "failed", "not_started")}
    totals["elapsed_s"] = round(time.monotonic() - t0, 1)
    return {"vms": ordered, "totals": totals, "stopped": stop["why"]}


# --------------------------------------------------------------------------- host level
COMMON_SPEC: Dict[str, Any] = dict(
    uris=dict(type="list", elements="str", required=True),
    host=dict(type="str", required=True),
    peer_uris=dict(type="dict", default={}),
    **STORAGE, **MIGRATION_TUNING, **pick("memory_headroom"), **MOVE_LIMITS,
)
EVACUATE_SPEC: Dict[str, Any] = dict(
    COMMON_SPEC,
    **PLACEMENT,
    mark_maintenance=dict(type="bool", default=True),
    exclude_destinations=dict(type="list", elements="str", default=[]),
    reason=dict(type="str", default="maintenance"),
)
RESTORE_SPEC: Dict[str, Any] = dict(COMMON_SPEC, clear_maintenance=dict(type="bool", default=True))


def _limits(p: Dict[str, Any]) -> Dict[str, int]:

    lim = dict(DEFAULT_LIMITS, **{k: int(v) for k, v in (p.get("limits") or {}).items()})
    unknown = set(lim) - set(DEFAULT_LIMITS)
    if unknown or any(v < 1 for v in lim.values()) or p["max_attempts"] < 1 or p["vm_timeout"] < 1:
        raise FleetmaintError(f"invalid limits {p.get('limits')} or attempts/timeouts: limits are per_source, "
                              "per_destination, fleet (each at least 1)", step="validate options")
    return lim


def _preflight(fleet: Any, moves: List[Dict[str, Any]], p: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Check every move with the shared rules before anything moves; returns the blocked ones."""

    blocked = []
    for m in moves:
        src, dst = fleet.hosts[m["source"]], fleet.hosts[m["destination"]]
        dom = src.conn.lookupByName(m["vm"])
        vm, xml = vm_facts(dom, src)
        found = check_pair(vm, xml, src, dst, copy_storage=p["copy_storage"], tls=p["tls"],
                           memory_headroom_mib=p["memory_headroom"], compression=p["compression"])
        m["findings"] = found
        if blockers(found):
            blocked.append({"vm": m["vm"], "source": m["source"], "destination": m["destination"],
                            "blockers": [f["message"] for f in blockers(found)],
                            "codes": [f["code"] for f in blockers(found)], "stays": stays(found)})
    return blocked


def _split_staying(moves: List[Dict[str, Any]], blocked: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Take out of ``moves`` the VMs that cannot leave their host now whatever the destination (STAYS_CODES:
    a paused VM QEMU would crash, say); returns them, each with its reason code and message."""
    staying = [{"vm": b["vm"], "host": b["source"], "reason": b["codes"][0], "msg": " / ".join(b["blockers"])}
               for b in blocked if b["stays"]]
    names = {s["vm"] for s in staying}
    moves[:] = [m for m in moves if m["vm"] not in names]
    blocked[:] = [b for b in blocked if not b["stays"]]
    return staying


def _lease(fleet: Any, host: str, job: str, check_mode: bool) -> Optional[HostLease]:
    """One job per host at a time, across controllers (none in check mode, which changes nothing)."""
    if check_mode:
        return None
    lease = HostLease(fleet.uri_of[host], host, job)
    lease.acquire()
    return lease


def evacuate_host(p: Dict[str, Any], check_mode: bool = False,
                  progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Empty one host: plan, check every move, mark maintenance, move, report."""

    lim = _limits(p)
    lease = None
    try:
        with Fleet(p["uris"], p["shared_pools"], tls=p["tls"]) as fleet:
            host = fleet.resolve([p["host"]])[0]
            lease = _lease(fleet, host, "evacuate", check_mode)
            inp = fleet.planner_input(p["memory_headroom"], p["memory_overcommit"], p["cpu_overcommit"],
                                      p["anti_affinity"], {k: int(v) for k, v in p["priority"].items()}, p["pinned"])
            # Hosts leaving at the same time (a rolling patch batch) take no VMs, as if in maintenance.
            excluded = set(fleet.resolve(p["exclude_destinations"]))
            for h in inp["hosts"]:
                h["maintenance"] = h["maintenance"] or h["name"] in excluded
            try:
                plan = plan_evacuation(inp["hosts"], inp["vms"], [host], limits=lim,
                                       bandwidth_mib_s=p["bandwidth"] or DEFAULT_ESTIMATE_BANDWIDTH_MIB_S, max_downtime_ms=p["max_downtime"])
            except PlanRefused as exc:
                raise FleetmaintError(f"refusing to evacuate {host}, nothing was moved: {exc}", step="plan",
                                      host=host) from exc
            blocked = _preflight(fleet, plan["moves"], p)
            staying = _split_staying(plan["moves"], blocked)
            if blocked:
                raise FleetmaintError(f"refusing to evacuate {host}, nothing was moved: " + "; ".join(
                    f"{b['vm']} -> {b['destination']}: {' / '.join(b['blockers'])}" for b in blocked),
                    step="preflight", host=host, blocked=blocked)
            result: Dict[str, Any] = {"host": host, "plan": plan, "skipped": [s for s in inp["skipped"] if s["host"] == host],
                                      "staying": staying,
                                      "changed": bool(plan["moves"]) or (p["mark_maintenance"] and not fleet.marks[host])}
            if check_mode:
                result["msg"] = f"would move {len(plan['moves'])} VMs off {host}" + _staying_note(staying)
                return result
            if p["mark_maintenance"]:
                result["maintenance_marked"] = set_mark(fleet.hosts[host].conn, fleet.uri_of[host], p["reason"],
                                                        "fleetmaint.libvirt.host_evacuate")
            uri_of = dict(fleet.uri_of)
        if progress:
            progress({"kind": "plan", "vm": host, "moves": len(plan["moves"]), "makespan_est_s": plan["makespan_s"]})
        run = run_moves(plan["moves"], uri_of, dict(p, limits=lim), progress)
        result.update(run)
        result["changed"] = result["changed"] or run["totals"]["moved"] + run["totals"]["cold_moved"] > 0
        # Pinned or unplaceable VMs stay too: the host is not empty, and saying so is the point.
        left = [r["vm"] for r in run["vms"] if r["result"] in ("failed", "not_started")] + \
            [u["vm"] for u in plan["unplaceable"]] + [s["vm"] for s in staying]
        cold = f" ({run['totals']['cold_moved']} more cold-moved)" if run["totals"]["cold_moved"] else ""
        result["msg"] = (f"{host}: moved {run['totals']['moved']} of {len(plan['moves'])} VMs live{cold} in "
                         f"{run['totals']['elapsed_s']} s"
                         + (f"; still on {host}: {', '.join(left)}" if left else "; the host is empty of running VMs")
                         + _staying_note(staying))
        if left:
            raise FleetmaintError(result["msg"] + (f" ({run['stopped']})" if run["stopped"] else ""), step="evacuate",
                                  host=host, result=result)
        return result
    finally:
        if lease is not None:
            lease.release()


def restore_host(p: Dict[str, Any], check_mode: bool = False,
                 progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Bring back every VM whose recorded home is this host, then clear its maintenance mark."""

    lim = _limits(p)
    lease = None
    try:
        with Fleet(p["uris"], p["shared_pools"], tls=p["tls"]) as fleet:
            host = fleet.resolve([p["host"]])[0]
            lease = _lease(fleet, host, "restore", check_mode)
            moves = [{"vm": d["name"], "source": other, "destination": host}
                     for other in sorted(fleet.vms) if other != host
                     for d in fleet.vms[other] if d["home_host"] == host and d["state"] in ("running", "paused")]
            blocked = _preflight(fleet, moves, p)
            staying = _split_staying(moves, blocked)
            if blocked:
                raise FleetmaintError(f"refusing to restore {host}, nothing was moved: " + "; ".join(
                    f"{b['vm']} from {b['source']}: {' / '.join(b['blockers'])}" for b in blocked),
                    step="preflight", host=host, blocked=blocked)
            marked = fleet.marks[host] is not None
            result: Dict[str, Any] = {"host": host, "moves": [{k: m[k] for k in ("vm", "source", "destination")}
                                                              for m in moves],
                                      "staying": staying,
                                      "changed": bool(moves) or (marked and p["clear_maintenance"])}
            if check_mode:
                result["msg"] = f"would bring {len(moves)} VMs home to {host}" + _staying_note(staying)
                return result
            uri_of = dict(fleet.uri_of)
        run = run_moves(moves, uri_of, dict(p, limits=lim), progress)
        result.update(run)
        left = [r["vm"] for r in run["vms"] if r["result"] in ("failed", "not_started")]
        if left:
            result["msg"] = f"{host}: {len(left)} VMs could not come home: {', '.join(left)}; maintenance mark kept"
            raise FleetmaintError(result["msg"], step="restore", host=host, result=result)
        if p["clear_maintenance"] and marked:
            with Fleet([uri_of[host]], p["shared_pools"]) as one:
                result["maintenance_cleared"] = clear_mark(one.hosts[host].conn, uri_of[host])
        result["msg"] = (f"{host}: brought {run['totals']['moved']} VMs home in {run['totals']['elapsed_s']} s"
                         + _staying_note(staying, away=True))
        return result
    finally:
        if lease is not None:
            lease.release()
