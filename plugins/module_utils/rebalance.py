# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rebalance and consolidate a fleet: which VMs to move, chosen before anything moves. Pure, deterministic.

**Load** is measured, not configured: a host's load is the memory its VMs really use (``in_use_mib``, their
resident memory as libvirt reports it) as a share of the host's memory. The fleet's load is the same share over
all hosts in service, so moving a VM never changes it; a host is **balanced** when its load is within
``threshold`` percent of the fleet's (a fleet at 40 % with threshold 10: every host between 36 % and 44 %).
CPU use (``cpu_cores``, measured over a window) is reported and orders equal choices (the VM that uses less CPU,
which dirties less and moves more cheaply, goes first); it is not balanced.

**Rebalance** moves the fewest VMs it can: each step takes the move that most reduces the spread (the sum of
squared distances of the hosts' loads from the fleet's), from the most loaded hosts to the least loaded, within
what each destination can hold by the planner's own rule (``placement.capacity``: configured memory with
overcommit and headroom, vCPUs), never next to a VM of its anti-affinity groups, never moving a pinned VM, never
to or from a host in maintenance; it stops when every host is balanced, when no move helps, or at ``max_moves``.
``lower_bound`` is the fewest moves any plan could need (each host out of the band must lose or gain at least
that many VMs), so a plan's count can be judged against it.

**Consolidate** empties ``free_hosts`` hosts, those whose emptying moves the least memory among the sets the
rest can hold with headroom (placement.plan_evacuation places their VMs), or refuses with the numbers.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from itertools import combinations
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.placement import (
    PlanRefused, capacity, groups_of, plan_evacuation,
)

EPS = 1e-9


def loads(hosts: List[Dict[str, Any]], vms: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per host in service: in_use_mib, memory_mib, load (share), cpu_cores, vms; and the fleet's load."""
    active = {h["name"]: h for h in hosts if not h.get("maintenance")}
    out = {n: {"in_use_mib": 0.0, "memory_mib": h["memory_mib"], "cpu_cores": 0.0, "vms": 0} for n, h in active.items()}
    for v in vms:
        if v["host"] in out:
            o = out[v["host"]]
            o["in_use_mib"] += v.get("in_use_mib", v["memory_mib"])
            o["cpu_cores"] += v.get("cpu_cores") or 0.0
            o["vms"] += 1
    for o in out.values():
        o["load"] = o["in_use_mib"] / o["memory_mib"] if o["memory_mib"] else 0.0
    total = sum(o["memory_mib"] for o in out.values())
    fleet = sum(o["in_use_mib"] for o in out.values()) / total if total else 0.0
    return {"hosts": out, "fleet_load": fleet}


def _band(fleet: float, threshold_pct: float) -> Tuple[float, float]:
    return fleet * (1 - threshold_pct / 100.0), fleet * (1 + threshold_pct / 100.0)


def lower_bound(hosts: List[Dict[str, Any]], vms: List[Dict[str, Any]], threshold_pct: float) -> int:
    """The fewest moves any plan needs: every host above the band loses, and every host below it gains, at least
    as many VMs as it takes with the biggest movable ones."""
    ld = loads(hosts, vms)
    lo, hi = _band(ld["fleet_load"], threshold_pct)
    movable = sorted((v.get("in_use_mib", v["memory_mib"]) for v in vms if v["host"] in ld["hosts"] and not v.get("pinned")),
                     reverse=True)
    need_out = need_in = 0
    for n, o in ld["hosts"].items():
        mem = o["memory_mib"]
        if o["load"] > hi + EPS:
            own = sorted((v.get("in_use_mib", v["memory_mib"]) for v in vms if v["host"] == n and not v.get("pinned")),
                         reverse=True)
            excess, k = o["in_use_mib"] - hi * mem, 0
            while excess > EPS and k < len(own):
                excess -= own[k]
                k += 1
            need_out += k
        elif o["load"] < lo - EPS:
            gap, k = lo * mem - o["in_use_mib"], 0
            while gap > EPS and k < len(movable):
                gap -= movable[k]
                k += 1
            need_in += k
    return max(need_out, need_in)


def plan_rebalance(hosts: List[Dict[str, Any]], vms: List[Dict[str, Any]], threshold_pct: float = 10.0,
                   max_moves: int = 10, candidates: int = 6, near: int = 8) -> Dict[str, Any]:
    """The moves that bring every host in service within ``threshold_pct`` percent of the fleet's load.

    hosts: as plan_evacuation's (name, memory_mib, vcpus, memory_overcommit, cpu_overcommit, headroom_mib,
    maintenance). vms: name, host, memory_mib, vcpus, in_use_mib (measured; memory_mib if absent), cpu_cores,
    anti_affinity, pinned. ``candidates``: how many of the most and of the least loaded hosts each step looks at
    (the most loaded give, the least loaded take); ``near``: for each pair, how many of the giver's VMs on each side
    of the best size are weighed (the spread is convex in the size moved, so the best that fits is near it)."""
    if threshold_pct <= 0:
        raise ValueError("threshold must be above 0 percent")
    if max_moves < 0:
        raise ValueError("max_moves must be 0 or more")
    before = loads(hosts, vms)
    fleet = before["fleet_load"]
    lo, hi = _band(fleet, threshold_pct)
    active = {h["name"]: h for h in hosts if not h.get("maintenance")}
    mem = {n: float(h["memory_mib"]) for n, h in active.items()}
    load = {n: before["hosts"][n]["load"] for n in active}
    cap = {n: capacity(h) for n, h in active.items()}
    used_mem = {n: 0.0 for n in active}
    used_cpu = {n: 0.0 for n in active}
    groups_on: Dict[str, Dict[str, int]] = {n: {} for n in active}
    # Each host's movable VMs sorted by memory in use: the candidates near the best size are found by bisection.
    on: Dict[str, List[Tuple[float, str, int]]] = {n: [] for n in active}
    by_key: Dict[Tuple[float, str, int], Dict[str, Any]] = {}

    def in_use(v: Dict[str, Any]) -> float:
        return float(v.get("in_use_mib", v["memory_mib"]))

    for i, v in enumerate(vms):
        if v["host"] in active:
            used_mem[v["host"]] += v["memory_mib"]
            used_cpu[v["host"]] += v["vcpus"]
            for g in groups_of(v):
                groups_on[v["host"]][g] = groups_on[v["host"]].get(g, 0) + 1
            if not v.get("pinned"):
                key = (in_use(v), v["name"], i)
                by_key[key] = v
                insort(on[v["host"]], key)

    def fits(v: Dict[str, Any], t: str) -> bool:
        return (cap[t][0] - used_mem[t] >= v["memory_mib"] and cap[t][1] - used_cpu[t] >= v["vcpus"]
                and not any(groups_on[t].get(g) for g in groups_of(v)))

    def balanced() -> bool:
        return all(lo - EPS <= x <= hi + EPS for x in load.values())

    moves: List[Dict[str, Any]] = []
    stopped = None
    while not balanced():
        if len(moves) >= max_moves:
            stopped = f"max_moves ({max_moves}) reached"
            break
        order = sorted(active, key=lambda n: (-load[n], n))
        givers = [n for n in order if load[n] > fleet][:candidates]
        takers = [n for n in reversed(order) if load[n] < fleet][:candidates]
        best: Optional[Tuple[Any, ...]] = None
        for s in givers:
            own = on[s]
            for t in takers:
                # The size that would bring s and t closest to the fleet's load (the spread's minimum in m).
                ideal = ((load[s] - fleet) / mem[s] - (load[t] - fleet) / mem[t]) / (1 / mem[s] ** 2 + 1 / mem[t] ** 2)
                at = bisect_left(own, (ideal, "", -1))
                for k in own[max(0, at - near):at + near]:
                    v, m = by_key[k], k[0]
                    if not fits(v, t):
                        continue
                    ns, nt = load[s] - m / mem[s], load[t] + m / mem[t]
                    delta = (ns - fleet) ** 2 + (nt - fleet) ** 2 - (load[s] - fleet) ** 2 - (load[t] - fleet) ** 2
                    key = (round(delta, 12), v.get("cpu_cores") or 0.0, m, v["name"], t)
                    if delta < -EPS and (best is None or key < best[0]):
                        best = (key, k, s, t)
        if best is None:
            stopped = "no move brings the hosts closer (capacity, anti-affinity, pinned VMs, VM sizes)"
            break
        _key, k, s, t = best
        v, m = by_key[k], k[0]
        on[s].pop(bisect_left(on[s], k))
        insort(on[t], k)
        load[s] -= m / mem[s]
        load[t] += m / mem[t]
        used_mem[s] -= v["memory_mib"]
        used_mem[t] += v["memory_mib"]
        used_cpu[s] -= v["vcpus"]
        used_cpu[t] += v["vcpus"]
        for g in groups_of(v):
            groups_on[s][g] -= 1
            groups_on[t][g] = groups_on[t].get(g, 0) + 1
        moves.append({"vm": v["name"], "source": s, "destination": t, "in_use_mib": round(m, 1),
                      "memory_mib": v["memory_mib"], "cpu_cores": v.get("cpu_cores"),
                      "why": f"{s} at {100 * (load[s] + m / mem[s]):.1f}%, {t} at {100 * (load[t] - m / mem[t]):.1f}% "
                             f"of memory in use; the fleet at {100 * fleet:.1f}%"})
    after = {n: round(100 * x, 2) for n, x in sorted(load.items())}
    return {"moves": moves, "balanced": balanced(), "stopped": stopped,
            "fleet_load_pct": round(100 * fleet, 2), "band_pct": [round(100 * lo, 2), round(100 * hi, 2)],
            "load_before_pct": {n: round(100 * o["load"], 2) for n, o in sorted(before["hosts"].items())},
            "load_after_pct": after,
            "cpu_cores": {n: round(o["cpu_cores"], 3) for n, o in sorted(before["hosts"].items())},
            "lower_bound": lower_bound(hosts, vms, threshold_pct)}


def plan_consolidation(hosts: List[Dict[str, Any]], vms: List[Dict[str, Any]], free_hosts: int,
                       limits: Optional[Dict[str, int]] = None, max_sets: int = 200) -> Dict[str, Any]:
    """Empty ``free_hosts`` hosts: of the sets of hosts whose VMs the rest can hold (placement.plan_evacuation),
    the one whose emptying moves the least memory. Refuses (PlanRefused) with the numbers when none can."""
    active = sorted((h for h in hosts if not h.get("maintenance")), key=lambda h: h["name"])
    if free_hosts < 1:
        raise ValueError("free_hosts must be at least 1")
    if free_hosts >= len(active):
        raise PlanRefused(f"cannot free {free_hosts} of {len(active)} hosts in service: at least one must stay to "
                          "hold the VMs")
    moved = {h["name"]: sum(v["memory_mib"] for v in vms if v["host"] == h["name"]) for h in active}
    pinned = {h["name"]: [v["name"] for v in vms if v["host"] == h["name"] and v.get("pinned")] for h in active}
    eligible = [h["name"] for h in active if not pinned[h["name"]]]
    if len(eligible) < free_hosts:
        raise PlanRefused(f"only {len(eligible)} hosts have no pinned VM ({', '.join(f'{h}: {p}' for h, p in pinned.items() if p)} "
                          f"are pinned), {free_hosts} to free")
    # The sets in order of memory to move (least first); the first the rest can hold wins.
    pool = sorted(eligible, key=lambda n: (moved[n], n))[:max(free_hosts * 3, free_hosts + 4)]
    sets = sorted(combinations(pool, free_hosts), key=lambda c: (sum(moved[n] for n in c), c))[:max_sets]
    first_refusal = None
    for chosen in sets:
        try:
            plan = plan_evacuation(hosts, vms, chosen, limits=limits)
        except PlanRefused as exc:
            first_refusal = first_refusal or (chosen, str(exc))
            continue
        keep = [h["name"] for h in active if h["name"] not in chosen]
        cap_total = sum(capacity(h)[0] for h in active if h["name"] in keep)
        return dict(plan, free=list(chosen), keep=keep, memory_moved_mib=sum(moved[n] for n in chosen),
                    capacity_left_mib=round(cap_total - sum(v["memory_mib"] for v in vms if v["host"] in {h["name"] for h in active}), 1))
    chosen, why = first_refusal or ((), "no set of hosts to free")
    need = sum(v["memory_mib"] for v in vms if v["host"] in {h["name"] for h in active})
    raise PlanRefused(f"cannot free {free_hosts} host(s): the fleet's VMs need {need} MiB and no {free_hosts} host(s) "
                      f"can be emptied onto the rest (the least to move, {', '.join(chosen)}: {why})")
