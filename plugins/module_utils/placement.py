# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where does every VM of the hosts to empty go, and in what order? Pure, deterministic.

Placement is worst-fit decreasing: VMs by priority, then size, each to the remaining host with
the largest free share of memory that fits it (memory with overcommit and headroom, vCPUs with
overcommit) and holds no VM of its anti-affinity groups. That keeps hosts balanced, which is
what peers' users miss when maintenance sends everything to one node.

The schedule is a list schedule under three limits: migrations out of one source, into one
destination, and across the fleet at once. Each migration's duration and downtime come from
the pre-copy model. No libvirt or Ansible imports.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import MIB, estimate_precopy

# Defaults chosen against peers': oVirt allows 2 outgoing migrations per host, nova 1 per compute
# node; we take 2 out and 2 in per host, and 4 across the fleet (the lab has 2 cores).
DEFAULT_LIMITS = {"per_source": 2, "per_destination": 2, "fleet": 4}


class PlanRefused(ValueError):
    """The remaining fleet cannot take the VMs: nothing should move."""


def groups_of(vm: Dict[str, Any]) -> Tuple[str, ...]:
    """A VM's anti-affinity groups (one name, or a list), as a tuple."""
    g = vm.get("anti_affinity") or ()
    return (g,) if isinstance(g, str) else tuple(g)


def capacity(host: Dict[str, Any]) -> Tuple[float, float]:
    """The one capacity rule: the memory a host gives VMs (its memory times memory_overcommit, less headroom_mib)
    and the vCPUs it gives them (its vCPUs times cpu_overcommit). What its VMs already take is counted by callers."""
    return (host["memory_mib"] * host.get("memory_overcommit", 1.0) - host.get("headroom_mib", 0),
            host["vcpus"] * host.get("cpu_overcommit", 4.0))


def select_homecoming(host: Dict[str, Any], resident: List[Dict[str, Any]], coming: List[Dict[str, Any]],
                      available_mib: Optional[float] = None) -> Dict[str, Any]:
    """Which VMs of ``coming`` fit on ``host`` beside the VMs running there (``resident``), chosen before any moves.

    host: as plan_evacuation's hosts (the rule is ``capacity``). resident, coming: name, memory_mib, vcpus (and
    host: where a VM coming home runs now). available_mib: the memory the host really has available (libvirt's
    figure), when known: the VMs coming home must also fit in it less headroom_mib, as the move rules check for
    each VM alone.

    The choice brings home the most VMs, then the most memory: smallest first (by memory, then vCPUs, then name;
    the most VMs when memory is what binds), then a VM left out replaces a smaller one chosen while both still fit.
    Returns ``fits`` (VMs of ``coming``, in their order), ``no_room`` (each left out with its numbers: vm, host,
    memory_mib, vcpus, free_memory_mib, free_vcpus once the others are home, msg) and ``room`` (the host's figures).
    """
    cap_mem, cap_cpu = capacity(host)
    headroom = host.get("headroom_mib", 0)
    used_mem = sum(v["memory_mib"] for v in resident)
    used_cpu = sum(v["vcpus"] for v in resident)
    free_mem, free_cpu = cap_mem - used_mem, cap_cpu - used_cpu
    if available_mib is not None:
        free_mem = min(free_mem, available_mib - headroom)

    def fits(chosen: List[Dict[str, Any]]) -> bool:
        return (sum(v["memory_mib"] for v in chosen) <= free_mem and sum(v["vcpus"] for v in chosen) <= free_cpu)

    chosen: List[Dict[str, Any]] = []
    for vm in sorted(coming, key=lambda v: (v["memory_mib"], v["vcpus"], v["name"])):
        if fits(chosen + [vm]):
            chosen.append(vm)
    # Each swap strictly adds memory, so this ends; the count never drops.
    swapped = True
    while swapped:
        swapped = False
        out = sorted((v for v in coming if not any(v is c for c in chosen)), key=lambda v: (-v["memory_mib"], -v["vcpus"], v["name"]))
        for big in out:
            for small in sorted(chosen, key=lambda v: (v["memory_mib"], v["vcpus"], v["name"])):
                trial = [v for v in chosen if v is not small] + [big]
                if big["memory_mib"] > small["memory_mib"] and fits(trial):
                    chosen, swapped = trial, True
                    break
            if swapped:
                break
    left_mem = free_mem - sum(v["memory_mib"] for v in chosen)
    left_cpu = free_cpu - sum(v["vcpus"] for v in chosen)
    name = host["name"]
    why = (f"{host['memory_mib']} MiB x {host.get('memory_overcommit', 1.0):g} - {headroom} MiB headroom - "
           f"{used_mem} MiB of the VMs running there"
           + (f", at most {available_mib:.0f} MiB available - {headroom} MiB headroom" if available_mib is not None else ""))
    no_room = []
    for vm in coming:
        if any(vm is v for v in chosen):
            continue
        short = []
        if vm["memory_mib"] > left_mem:
            short.append(f"needs {vm['memory_mib']} MiB, {name} has {max(0.0, left_mem):.0f} MiB free")
        if vm["vcpus"] > left_cpu:
            short.append(f"needs {vm['vcpus']} vCPUs, {name} has {max(0.0, left_cpu):g} free")
        no_room.append({"vm": vm["name"], "host": vm.get("host"), "memory_mib": vm["memory_mib"], "vcpus": vm["vcpus"],
                        "free_memory_mib": round(max(0.0, left_mem)), "free_vcpus": max(0.0, left_cpu),
                        "msg": f"no room on {name}: " + " and ".join(short or ["does not fit"])
                               + (f" once {', '.join(v['name'] for v in chosen)} are home" if chosen else "")
                               + f" (free: {why})"})
    return {"fits": [v for v in coming if any(v is c for c in chosen)], "no_room": no_room,
            "room": {"memory_mib": round(free_mem), "vcpus": free_cpu, "used_memory_mib": used_mem,
                     "used_vcpus": used_cpu, "available_mib": available_mib,
                     "free_memory_mib_after": round(left_mem), "free_vcpus_after": left_cpu}}


def plan_evacuation(hosts: List[Dict[str, Any]], vms: List[Dict[str, Any]], evacuate: Iterable[str],
                    limits: Optional[Dict[str, int]] = None, bandwidth_mib_s: float = 128.0,
                    max_downtime_ms: float = 300.0, refuse_partial: bool = True) -> Dict[str, Any]:
    """Plan moving every VM off the hosts in ``evacuate``.

    hosts: name, memory_mib, vcpus, and optionally memory_overcommit (1.0), cpu_overcommit (4.0),
    headroom_mib (0), maintenance (False).
    vms: name, host, memory_mib, vcpus, and optionally dirty_rate (bytes/s), anti_affinity (a group or
    a list), pinned (False), priority (0).
    """
    lim = dict(DEFAULT_LIMITS, **(limits or {}))
    for k, v in lim.items():
        if v < 1:
            raise ValueError(f"limit {k} must be at least 1")
    evac = set(evacuate)
    names = {h["name"] for h in hosts}
    unknown = sorted(evac - names)
    if unknown:
        raise ValueError(f"unknown host(s) to evacuate: {', '.join(unknown)}")
    targets = {h["name"]: h for h in hosts if h["name"] not in evac and not h.get("maintenance")}

    cap_mem: Dict[str, float] = {}
    cap_cpu: Dict[str, float] = {}
    used_mem: Dict[str, float] = defaultdict(float)
    used_cpu: Dict[str, float] = defaultdict(float)
    groups_on: Dict[str, set] = defaultdict(set)
    for n, h in targets.items():
        cap_mem[n], cap_cpu[n] = capacity(h)
    movers, unplaceable = [], []
    for vm in vms:
        if vm["host"] in targets:
            used_mem[vm["host"]] += vm["memory_mib"]
            used_cpu[vm["host"]] += vm["vcpus"]
            groups_on[vm["host"]].update(groups_of(vm))
        elif vm["host"] in evac:
            if vm.get("pinned"):
                unplaceable.append({"vm": vm["name"], "source": vm["host"], "code": "pinned",
                                    "reason": "pinned to its host (passthrough device or explicit pin)"})
            else:
                movers.append(vm)

    need = sum(v["memory_mib"] for v in movers)
    free_total = sum(max(0.0, cap_mem[n] - used_mem[n]) for n in targets)
    if not targets and movers:
        raise PlanRefused("no host is left to take the VMs (every other host is being evacuated or in maintenance)")
    if need > free_total:
        raise PlanRefused(f"the remaining hosts have {free_total:.0f} MiB free for VMs (after headroom and what "
                          f"already runs there) but the VMs to move need {need:.0f} MiB")

    # Worst-fit decreasing with a heap on free memory share (largest first), deterministic ties by name.
    heap = [(-(cap_mem[n] - used_mem[n]) / cap_mem[n] if cap_mem[n] > 0 else 0.0, n) for n in sorted(targets)]
    heapq.heapify(heap)
    order = sorted(movers, key=lambda v: (-v.get("priority", 0), -v["memory_mib"], -v["vcpus"], v["name"]))
    assignment: Dict[str, str] = {}
    for vm in order:
        popped = []
        chosen = None
        groups = set(groups_of(vm))
        while heap:
            item = heapq.heappop(heap)
            n = item[1]
            popped.append(item)
            if (cap_mem[n] - used_mem[n] >= vm["memory_mib"] and cap_cpu[n] - used_cpu[n] >= vm["vcpus"]
                    and not groups & groups_on[n]):
                chosen = n
                break
        if chosen is None:
            reasons = []
            if all(cap_mem[n] - used_mem[n] < vm["memory_mib"] for n in targets):
                reasons.append(f"no host has {vm['memory_mib']} MiB free")
            if all(cap_cpu[n] - used_cpu[n] < vm["vcpus"] for n in targets):
                reasons.append(f"no host has room for {vm['vcpus']} vCPUs")
            if groups and all(groups & groups_on[n] for n in targets):
                reasons.append(f"every host already holds a VM of anti-affinity group {', '.join(sorted(groups))}")
            unplaceable.append({"vm": vm["name"], "source": vm["host"], "code": "no_capacity",
                                "reason": "; ".join(reasons) or "no host fits memory, vCPUs and anti-affinity at once"})
        else:
            assignment[vm["name"]] = chosen
            used_mem[chosen] += vm["memory_mib"]
            used_cpu[chosen] += vm["vcpus"]
            groups_on[chosen].update(groups)
            popped[-1] = ((-(cap_mem[chosen] - used_mem[chosen]) / cap_mem[chosen]), chosen)
        for item in popped:
            heapq.heappush(heap, item)
    if unplaceable and refuse_partial and any(u["code"] != "pinned" for u in unplaceable):
        raise PlanRefused("cannot place " + "; ".join(f"{u['vm']}: {u['reason']}" for u in unplaceable))

    by_name = {v["name"]: v for v in movers}
    moves = []
    for vm_name in sorted(assignment, key=lambda x: (-by_name[x].get("priority", 0), x)):
        vm = by_name[vm_name]
        est = estimate_precopy(vm["memory_mib"] * MIB, bandwidth_mib_s * MIB, vm.get("dirty_rate", 0.0) or 0.0,
                               max_downtime_ms)
        moves.append({"vm": vm_name, "source": vm["host"], "destination": assignment[vm_name],
                      "memory_mib": vm["memory_mib"], "priority": vm.get("priority", 0),
                      "est_time_s": est["total_time_s"], "est_downtime_ms": est["downtime_ms"],
                      "converges": est["converges"]})
    makespan = schedule(moves, lim)
    loads = {n: round(used_mem[n] / cap_mem[n], 4) if cap_mem[n] > 0 else None for n in sorted(targets)}
    total_cap = sum(cap_mem[n] for n in targets)
    lower_bound = sum(used_mem[n] for n in targets) / total_cap if total_cap else None
    fractions = [x for x in loads.values() if x is not None]
    return {
        "moves": moves, "unplaceable": unplaceable, "makespan_s": makespan, "limits": lim,
        "load_after": loads,
        "balance": {"max_load": max(fractions) if fractions else None, "min_load": min(fractions) if fractions else None,
                    "lower_bound": round(lower_bound, 4) if lower_bound is not None else None},
    }


def schedule(moves: List[Dict[str, Any]], limits: Dict[str, int]) -> float:
    """List-schedule the moves under the limits; sets start_s and end_s on each. Returns the makespan.

    Moves that do not converge get the longest estimate so they are started early (their real
    duration is bounded by the migration's timeout, not known here).
    """
    longest = max((m["est_time_s"] or 0 for m in moves), default=0)
    for m in moves:
        m["_dur"] = m["est_time_s"] if m["est_time_s"] is not None else max(longest * 2, 60.0)
    queues: Dict[str, deque] = defaultdict(deque)
    for m in sorted(moves, key=lambda m: (-m["priority"], -m["_dur"], m["vm"])):
        queues[m["source"]].append(m)
    out_busy: Dict[str, int] = defaultdict(int)
    in_busy: Dict[str, int] = defaultdict(int)
    running: List[Tuple[float, str, Dict[str, Any]]] = []
    now, left, fleet_busy = 0.0, len(moves), 0
    sources = sorted(queues)
    while left:
        started = True
        while started and fleet_busy < limits["fleet"]:
            started = False
            for s in sources:
                q = queues[s]
                if not q or out_busy[s] >= limits["per_source"] or fleet_busy >= limits["fleet"]:
                    continue
                for i, m in enumerate(q):
                    if in_busy[m["destination"]] < limits["per_destination"]:
                        del q[i]
                        m["start_s"], m["end_s"] = round(now, 2), round(now + m["_dur"], 2)
                        out_busy[s] += 1
                        in_busy[m["destination"]] += 1
                        fleet_busy += 1
                        heapq.heappush(running, (now + m["_dur"], m["vm"], m))
                        started = True
                        break
                    if i >= 64:
                        break  # bounded look-ahead keeps large plans fast
        if not running:
            raise RuntimeError("scheduler stalled")  # pragma: no cover - limits >= 1 make this impossible
        end, _name, m = heapq.heappop(running)
        now = end
        out_busy[m["source"]] -= 1
        in_busy[m["destination"]] -= 1
        fleet_busy -= 1
        left -= 1
    for m in moves:
        m.pop("_dur", None)
    return round(now, 2)
