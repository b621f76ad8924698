# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet jobs: rebalance and consolidate (fleet_rebalance's engine; plan_rebalance's without moving).

Measure each VM's memory in use and CPU (vm_profile.measure_load), plan with the pure rebalance module, check
every move with the shared move rules, hold the job lease of every host a move touches (one cancel flag for all),
and move through the same scheduler as an evacuation (methods chosen per VM from its profile). Consolidation
marks the hosts it empties in maintenance first, so no other job fills them, and leaves them marked.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import CancelFlag
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import Fleet
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.host_jobs import (
    _checked, _limits, _Methods, _staying_note,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.maintenance import HostLease, set_mark
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import (
    MEASUREMENT, MIGRATION_TUNING, MOVE_LIMITS, PLACEMENT, STORAGE,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.placement import PlanRefused
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.rebalance import loads, plan_consolidation, plan_rebalance
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.vm_profile import measure_load

PLAN_SPEC: Dict[str, Any] = dict(
    uris=dict(type="list", elements="str", required=True),
    goal=dict(type="str", default="balance", choices=["balance", "consolidate"]),
    threshold=dict(type="float", default=10.0),
    max_moves=dict(type="int", default=10),
    free_hosts=dict(type="int", default=1),
    measure_seconds=dict(type="float", default=2.0),
    shared_pools=STORAGE["shared_pools"],
    **PLACEMENT,
)
REBALANCE_SPEC: Dict[str, Any] = dict(
    PLAN_SPEC,
    peer_uris=dict(type="dict", default={}),
    reason=dict(type="str", default="consolidated: empty, ready to power down"),
    **STORAGE, **MIGRATION_TUNING, **MOVE_LIMITS, **MEASUREMENT,
)


def _validate(p: Dict[str, Any]) -> None:
    if not p["uris"]:
        raise FleetmaintError("uris is empty: give the fleet's hypervisors; nothing was done", step="validate options")
    for key, low in (("threshold", 0.0001), ("measure_seconds", 0)):
        if p[key] < low:
            raise FleetmaintError(f"{key} must be {'above' if low else 'at least'} 0, got {p[key]:g}; nothing was done",
                                  step="validate options")
    if p["max_moves"] < 0:
        raise FleetmaintError(f"max_moves must be 0 or more, got {p['max_moves']}; nothing was done", step="validate options")
    if p["goal"] == "consolidate" and p["free_hosts"] < 1:
        raise FleetmaintError(f"free_hosts must be at least 1, got {p['free_hosts']}; nothing was done",
                              step="validate options")


def _measure(fleet: Fleet, p: Dict[str, Any]) -> Dict[str, Any]:
    """The planner's input, each VM with its memory in use and CPU measured."""
    inp = fleet.planner_input(p["memory_headroom"], p["memory_overcommit"], p["cpu_overcommit"], p["anti_affinity"],
                              {k: int(v) for k, v in p["priority"].items()}, p["pinned"])
    facts = {d["name"]: d for vms in fleet.vms.values() for d in vms}
    by_host: Dict[str, List[Dict[str, Any]]] = {}
    for v in inp["vms"]:
        by_host.setdefault(v["host"], []).append(facts[v["name"]])
    measured = measure_load({h: fleet.hosts[h].conn for h in by_host}, by_host, p["measure_seconds"])
    for v in inp["vms"]:
        v.update(measured.get(v["name"], {}))
    return inp


def _plan(fleet: Fleet, p: Dict[str, Any], inp: Optional[Dict[str, Any]] = None, stay: frozenset = frozenset()
          ) -> Dict[str, Any]:
    """Measure (unless ``inp`` was), then plan with the VMs in ``stay`` kept where they are (raises
    FleetmaintError no_capacity when consolidation cannot be done)."""
    if inp is None:
        inp = _measure(fleet, p)
    inp = dict(inp, vms=[dict(v, pinned=True) if v["name"] in stay else v for v in inp["vms"]])
    if p["goal"] == "consolidate":
        try:
            plan = plan_consolidation(inp["hosts"], inp["vms"], p["free_hosts"])
        except PlanRefused as exc:
            raise FleetmaintError(f"refusing to consolidate, nothing was moved: {exc}", step="plan",
                                  reason="no_capacity") from exc
        plan["load_before_pct"] = plan_rebalance(inp["hosts"], inp["vms"], p["threshold"], 0)["load_before_pct"]
        moved_to = {m["vm"]: m["destination"] for m in plan["moves"]}
        after = loads(inp["hosts"], [dict(v, host=moved_to.get(v["name"], v["host"])) for v in inp["vms"]])
        plan["load_after_pct"] = {h: round(100 * o["load"], 2) for h, o in sorted(after["hosts"].items())}
    else:
        plan = plan_rebalance(inp["hosts"], inp["vms"], p["threshold"], p["max_moves"])
    prio = {v["name"]: v.get("priority", 0) for v in inp["vms"]}
    plan["moves"].sort(key=lambda m: -prio.get(m["vm"], 0))  # stable: the plan's order within a priority
    plan["measured"] = {v["name"]: {k: v.get(k) for k in ("host", "memory_mib", "in_use_mib", "cpu_cores")}
                        for v in inp["vms"]}
    plan["skipped"] = inp["skipped"]
    return plan


def _msg(p: Dict[str, Any], plan: Dict[str, Any], moved: Optional[int] = None) -> str:
    n = len(plan["moves"])
    if p["goal"] == "consolidate":
        what = (f"{'would move' if moved is None else f'moved {moved} of'} {n} VMs ({plan['memory_moved_mib']} MiB) to "
                f"free {', '.join(plan['free'])} (marked in maintenance, ready to power down)")
    else:
        target = (f"within {p['threshold']:g}% of the fleet's {plan['fleet_load_pct']}% of memory in use and of its "
                  f"{plan['fleet_cpu_pct']}% of cores in use (CPU band {plan['cpu_band_pct'][0]}-"
                  f"{plan['cpu_band_pct'][1]}%)")
        if not n:
            what = (f"balanced: every host {target}; nothing to move" if plan["balanced"]
                    else f"nothing to move: {plan['stopped']}")
        else:
            what = (f"{'would move' if moved is None else f'moved {moved} of'} {n} VMs (at least {plan['lower_bound']} "
                    f"needed) to bring every host {target}"
                    + ("" if plan["balanced"] else f"; not balanced after them: {plan['stopped']}"))
    out = (what + "; memory in use before " + ", ".join(f"{h} {x}%" for h, x in plan["load_before_pct"].items())
           + "; after " + ", ".join(f"{h} {x}%" for h, x in plan["load_after_pct"].items()))
    if p["goal"] == "balance":
        out += ("; CPU before " + ", ".join(f"{h} {x}%" for h, x in plan["cpu_before_pct"].items())
                + "; after " + ", ".join(f"{h} {x}%" for h, x in plan["cpu_after_pct"].items()))
    return out


def plan_fleet_rebalance(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:  # pylint: disable=unused-argument
    """plan_rebalance's engine: measure and plan; changes nothing."""
    _validate(p)
    with Fleet(p["uris"], p["shared_pools"]) as fleet:
        plan = _plan(fleet, p)
    return dict(plan, changed=False, msg=_msg(p, plan))


def _checked_plan(fleet: Fleet, p: Dict[str, Any]) -> tuple:
    """Plan, and check every move of the plan with the shared move rules; a VM that cannot leave its host now
    (a paused VM, say: migration_rules.STAYS_CODES) is kept where it is and the plan made again around it, so
    such a VM never refuses the job. Any other blocked move refuses it. Returns (plan, moves, staying)."""
    inp = _measure(fleet, p)
    stay: frozenset = frozenset()
    staying: List[Dict[str, Any]] = []
    while True:
        plan = _plan(fleet, p, inp, stay)
        moves = [dict(vm=m["vm"], source=m["source"], destination=m["destination"]) for m in plan["moves"]]
        found = _checked(fleet, "the fleet", moves, p, f"refusing to {p['goal']}",
                         lambda b: f"{b['vm']} {b['source']} -> {b['destination']}")
        if not found:
            return plan, moves, staying
        staying += found  # each round keeps at least one more VM in place: it ends
        stay = stay | {s["vm"] for s in found}


def rebalance_fleet(p: Dict[str, Any], check_mode: bool = False,
                    progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """fleet_rebalance's engine: measure, plan, check every move, hold the leases, (consolidate: mark), move."""
    _validate(p)
    lim = _limits(p)
    cancel = CancelFlag()
    with ExitStack() as job:
        with Fleet(p["uris"], p["shared_pools"], tls=p["tls"]) as fleet:
            plan, moves, staying = _checked_plan(fleet, p)
            result: Dict[str, Any] = dict(plan, staying=staying, changed=bool(moves) or (
                p["goal"] == "consolidate" and any(fleet.marks[h] is None for h in plan["free"])))
            if check_mode or not result["changed"]:
                result["msg"] = _msg(p, plan) + _staying_note(staying)
                return result
            touched = sorted({h for m in moves for h in (m["source"], m["destination"])} |
                             set(plan.get("free", [])))
            for h in touched:  # in name order: two fleet jobs never wait on each other's half
                lease = HostLease(fleet.uri_of[h], h, "rebalance" if p["goal"] == "balance" else "consolidate", cancel)
                lease.acquire()
                job.callback(lease.release)
            job.enter_context(cancel)
            methods = _Methods(fleet, moves, p, lim, "source")
            methods.refuse(moves, f"refusing to {p['goal']}", "the fleet")
            if p["goal"] == "consolidate":
                result["maintenance_marked"] = [h for h in plan["free"] if set_mark(
                    fleet.hosts[h].conn, fleet.uri_of[h], p["reason"], "fleetmaint.libvirt.fleet_rebalance")]
            uri_of = dict(fleet.uri_of)
        if progress:
            progress({"kind": "plan", "vm": p["goal"], "moves": len(moves)})
        run = methods.run(moves, uri_of, dict(p, limits=lim), progress, cancel, job=p["goal"])
        result.update(vms=run["vms"], totals=run["totals"], stopped=run["stopped"], links=run["links"],
                      started_at=run["started_at"], ended_at=run["ended_at"])
        moved = run["totals"]["moved"] + run["totals"]["cold_moved"] + run["totals"]["already_there"]
        result["msg"] = _msg(p, plan, moved) + _staying_note(staying)
        left = [r["vm"] for r in run["vms"] if r["result"] in ("failed", "not_started")]
        if left:
            result["msg"] += f"; not moved: {', '.join(left)}" + (f" ({run['stopped']})" if run["stopped"] else "")
            raise FleetmaintError(result["msg"], step=p["goal"], result=result,
                                  reason="cancelled" if run["cancelled"] else None)
        return result
