# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rebalance and consolidate a fleet: which VMs to move, chosen before anything moves. Pure, deterministic.

**Load** is measured, not configured: a host's load is the memory its VMs really use (``in_use_mib``, their
resident memory as libvirt reports it) as a share of the host's memory. The fleet's load is the same share over
all hosts in service, so moving a VM never changes it; a host is **balanced** when its load is within
``threshold`` percent of the fleet's (a fleet at 40 % with threshold 10: every host between 36 % and 44 %).
**CPU** is balanced too: a host's CPU load is the cores its VMs use (``cpu_cores``, their sustained use over a
window: vm_profile.measure_load) as a
share of its cores; the band is ``threshold`` percent of the fleet's CPU load either side, and never narrower than
CPU_FLOOR (5 % of a host's cores) either side: below that a short window's measurement is noise, and a move
costs more than it gains. Memory comes first; while a host's CPU is out of its band, the move from the busiest
host to the idlest that most reduces the CPU spread is taken, among those that keep both hosts' memory in its
band (a move that would unbalance memory is never made for CPU). Among the moves that help memory, the one that
most reduces the memory and CPU spreads together is taken. A CPU step is one move or a swap (a busy VM for an idle one of
about its size on the other host, so memory stays put), whichever removes more of the CPU spread per move.

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
    """Per host in service: in_use_mib, memory_mib, load (share), cpu_cores, cores, cpu_load (share), vms; and the
    fleet's memory and CPU loads."""
    active = {h["name"]: h for h in hosts if not h.get("maintenance")}
    out = {n: {"in_use_mib": 0.0, "memory_mib": h["memory_mib"], "cpu_cores": 0.0, "vms": 0} for n, h in active.items()}
    for v in vms:
        if v["host"] in out:
            o = out[v["host"]]
            o["in_use_mib"] += v.get("in_use_mib", v["memory_mib"])
            o["cpu_cores"] += v.get("cpu_cores") or 0.0
            o["vms"] += 1
    for n, o in out.items():
        o["load"] = o["in_use_mib"] / o["memory_mib"] if o["memory_mib"] else 0.0
        o["cores"] = float(active[n].get("vcpus") or 0)
        o["cpu_load"] = o["cpu_cores"] / o["cores"] if o["cores"] else 0.0
    total = sum(o["memory_mib"] for o in out.values())
    fleet = sum(o["in_use_mib"] for o in out.values()) / total if total else 0.0
    cores = sum(o["cores"] for o in out.values())
    fleet_cpu = sum(o["cpu_cores"] for o in out.values()) / cores if cores else 0.0
    return {"hosts": out, "fleet_load": fleet, "fleet_cpu_load": fleet_cpu}


CPU_FLOOR = 0.05  # the CPU band is never narrower than this share of a host's cores, either side
CPU_SWAP_BUSIEST = 4  # a CPU step also weighs each giver's busiest VMs (for swaps), besides those near the ideal
CPU_SWAP_NEAR = 4  # and, for a swap, the taker's VMs of about the same memory in use, on each side


def _band(fleet: float, threshold_pct: float, floor: float = 0.0) -> Tuple[float, float]:
    half = max(fleet * threshold_pct / 100.0, floor)
    return max(0.0, fleet - half), fleet + half


def _needed(excess: float, sizes: List[float]) -> int:
    """How many of ``sizes`` (largest first) it takes to cover ``excess``."""
    k = 0
    while excess > EPS and k < len(sizes):
        excess -= sizes[k]
        k += 1
    return k


def lower_bound(hosts: List[Dict[str, Any]], vms: List[Dict[str, Any]], threshold_pct: float) -> int:
    """The fewest moves any plan needs: every host above the band loses, and every host below it gains, at least
    as many VMs as it takes with the biggest movable ones - for memory, and for CPU; the larger of the two."""
    ld = loads(hosts, vms)
    bands = {"mem": _band(ld["fleet_load"], threshold_pct), "cpu": _band(ld["fleet_cpu_load"], threshold_pct, CPU_FLOOR)}
    size = {"mem": lambda v: float(v.get("in_use_mib", v["memory_mib"])), "cpu": lambda v: float(v.get("cpu_cores") or 0.0)}
    used = {"mem": lambda o: (o["in_use_mib"], o["memory_mib"]), "cpu": lambda o: (o["cpu_cores"], o["cores"])}
    need = 0
    for dim, (lo, hi) in bands.items():
        movable = sorted((size[dim](v) for v in vms if v["host"] in ld["hosts"] and not v.get("pinned")), reverse=True)
        need_out = need_in = 0
        for n, o in ld["hosts"].items():
            u, whole = used[dim](o)
            if u > hi * whole + EPS:
                own = sorted((size[dim](v) for v in vms if v["host"] == n and not v.get("pinned")), reverse=True)
                need_out += _needed(u - hi * whole, own)
            elif u < lo * whole - EPS:
                need_in += _needed(lo * whole - u, movable)
        need = max(need, need_out, need_in)
    return need


def plan_rebalance(hosts: List[Dict[str, Any]], vms: List[Dict[str, Any]], threshold_pct: float = 10.0,
                   max_moves: int = 10, candidates: int = 6, near: int = 8) -> Dict[str, Any]:
    """The moves that bring every host in service within ``threshold_pct`` percent of the fleet's memory load,
    then of its CPU load (the CPU band at least CPU_FLOOR either side), never taking memory out of its band for CPU.

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
    on_cpu: Dict[str, List[Tuple[float, str, int, Tuple[float, str, int]]]] = {n: [] for n in active}  # by cores used

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
                insort(on_cpu[v["host"]], (float(v.get("cpu_cores") or 0.0), v["name"], i, key))

    def fits(v: Dict[str, Any], t: str) -> bool:
        return (cap[t][0] - used_mem[t] >= v["memory_mib"] and cap[t][1] - used_cpu[t] >= v["vcpus"]
                and not any(groups_on[t].get(g) for g in groups_of(v)))

    def balanced() -> bool:
        return all(lo - EPS <= x <= hi + EPS for x in load.values())

    cores = {n: before["hosts"][n]["cores"] for n in active}
    cpu = {n: before["hosts"][n]["cpu_cores"] for n in active}  # cores in use, as the plan's moves leave them
    fleet_cpu = before["fleet_cpu_load"]
    clo, chi = _band(fleet_cpu, threshold_pct, CPU_FLOOR)

    def cpu_load(n: str) -> float:
        return cpu[n] / cores[n] if cores[n] else 0.0

    def cpu_balanced() -> bool:
        return all(clo - EPS <= cpu_load(n) <= chi + EPS for n in active if cores[n])

    moves: List[Dict[str, Any]] = []

    def apply(k: Tuple[float, str, int], s: str, t: str, dim: str) -> None:
        v, m = by_key[k], k[0]
        c = float(v.get("cpu_cores") or 0.0)
        was = (load[s], load[t]) if dim == "memory" else (cpu_load(s), cpu_load(t))
        on[s].pop(bisect_left(on[s], k))
        insort(on[t], k)
        ck = (c, v["name"], k[2], k)
        on_cpu[s].pop(bisect_left(on_cpu[s], ck))
        insort(on_cpu[t], ck)
        load[s] -= m / mem[s]
        load[t] += m / mem[t]
        cpu[s] -= c
        cpu[t] += c
        used_mem[s] -= v["memory_mib"]
        used_mem[t] += v["memory_mib"]
        used_cpu[s] -= v["vcpus"]
        used_cpu[t] += v["vcpus"]
        for g in groups_of(v):
            groups_on[s][g] -= 1
            groups_on[t][g] = groups_on[t].get(g, 0) + 1
        what = (f"of memory in use; the fleet at {100 * fleet:.1f}%" if dim == "memory" else
                f"of their cores in use; the fleet at {100 * fleet_cpu:.1f}%")
        moves.append({"vm": v["name"], "source": s, "destination": t, "in_use_mib": round(m, 1),
                      "memory_mib": v["memory_mib"], "cpu_cores": v.get("cpu_cores"), "for": dim,
                      "why": f"{s} at {100 * was[0]:.1f}%, {t} at {100 * was[1]:.1f}% {what}"})

    def cpu_delta(s: str, t: str, c: float) -> float:
        """The change of the CPU spread when c cores go from s to t (none for a host whose cores are unknown)."""
        if not (cores[s] and cores[t]):
            return 0.0
        cs, ct = cpu_load(s) - c / cores[s], cpu_load(t) + c / cores[t]
        return (cs - fleet_cpu) ** 2 + (ct - fleet_cpu) ** 2 - (cpu_load(s) - fleet_cpu) ** 2 - (cpu_load(t) - fleet_cpu) ** 2

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
                    # Memory decides; among moves that help memory, the one that also helps CPU most wins.
                    key = (round(delta + cpu_delta(s, t, float(v.get("cpu_cores") or 0.0)), 12), m, v["name"], t)
                    if delta < -EPS and (best is None or key < best[0]):
                        best = (key, k, s, t)
        if best is None:
            stopped = "no move brings the hosts closer (capacity, anti-affinity, pinned VMs, VM sizes)"
            break
        apply(best[1], best[2], best[3], "memory")

    def memory_kept(now: float, then: float) -> bool:
        """A host in its memory band stays in it; one out of it gets no further out."""
        if lo - EPS <= now <= hi + EPS:
            return lo - EPS <= then <= hi + EPS
        return abs(then - fleet) <= abs(now - fleet) + EPS

    def swap_fits(a: Dict[str, Any], s: str, b: Dict[str, Any], t: str) -> bool:
        """a from s to t while b goes from t to s: capacity with each other's room, anti-affinity without each other."""
        def room(v: Dict[str, Any], gone: Dict[str, Any], h: str) -> bool:
            return (cap[h][0] - used_mem[h] + gone["memory_mib"] >= v["memory_mib"]
                    and cap[h][1] - used_cpu[h] + gone["vcpus"] >= v["vcpus"]
                    and not any(groups_on[h].get(g, 0) - (g in groups_of(gone)) > 0 for g in groups_of(v)))
        return room(a, b, t) and room(b, a, s)

    def cores_of(k: Tuple[float, str, int]) -> float:
        return float(by_key[k].get("cpu_cores") or 0.0)

    # CPU: the best single move or swap (a busy VM for an idle one of about its size, so memory stays where it is),
    # by the CPU spread it removes per move made.
    while not cpu_balanced() and (stopped is None or not stopped.startswith("max_moves")):
        if len(moves) >= max_moves:
            stopped = f"max_moves ({max_moves}) reached"
            break
        order = sorted(active, key=lambda n: (-cpu_load(n), n))
        givers = [n for n in order if cores[n] and cpu_load(n) > fleet_cpu][:max(1, candidates // 2)]
        takers = [n for n in reversed(order) if cores[n] and cpu_load(n) < fleet_cpu][:max(1, candidates // 2)]
        best = None
        for s in givers:
            for t in takers:
                # The cores that would bring s and t closest to the fleet's CPU load; the best VMs to move are near it
                # (the spread is convex in the cores moved), and the busiest serve swaps.
                ideal = (((cpu_load(s) - fleet_cpu) / cores[s] - (cpu_load(t) - fleet_cpu) / cores[t])
                         / (1 / cores[s] ** 2 + 1 / cores[t] ** 2))
                own = on_cpu[s]
                at = bisect_left(own, (ideal, "", -1))
                near_ideal = own[max(0, at - near):at + near] + own[-CPU_SWAP_BUSIEST:]
                for ka in dict.fromkeys(c[3] for c in near_ideal):
                    a, ma, ca = by_key[ka], ka[0], cores_of(ka)
                    if ca <= EPS:
                        continue
                    if fits(a, t) and memory_kept(load[s], load[s] - ma / mem[s]) \
                            and memory_kept(load[t], load[t] + ma / mem[t]):
                        d = cpu_delta(s, t, ca)
                        key = (round(d, 12), 1, ma, a["name"], t)
                        if d < -EPS and (best is None or key < best[0]):
                            best = (key, [(ka, s, t)])
                    if len(moves) + 2 > max_moves:
                        continue
                    bt = bisect_left(on[t], (ma, "", -1))
                    for kb in on[t][max(0, bt - CPU_SWAP_NEAR):bt + CPU_SWAP_NEAR]:
                        b, mb, cb = by_key[kb], kb[0], cores_of(kb)
                        if cb >= ca - EPS or not swap_fits(a, s, b, t):
                            continue
                        if not (memory_kept(load[s], load[s] + (mb - ma) / mem[s])
                                and memory_kept(load[t], load[t] + (ma - mb) / mem[t])):
                            continue
                        d = cpu_delta(s, t, ca - cb)
                        key = (round(d / 2, 12), 2, ma, a["name"], t)
                        if d < -EPS and (best is None or key < best[0]):
                            best = (key, [(ka, s, t), (kb, t, s)])
        if best is None:
            why = ("no move or swap brings the hosts' CPU closer without taking a host's memory out of its band "
                   "(capacity, anti-affinity, pinned VMs, VM sizes)")
            stopped = why if stopped is None else f"{stopped}; {why}"
            break
        for k, s, t in best[1]:
            apply(k, s, t, "cpu")
        if len(best[1]) == 2:
            moves[-1]["swap_with"], moves[-2]["swap_with"] = moves[-2]["vm"], moves[-1]["vm"]
    after = {n: round(100 * x, 2) for n, x in sorted(load.items())}
    return {"moves": moves, "balanced": balanced() and cpu_balanced(), "stopped": stopped,
            "memory_balanced": balanced(), "cpu_balanced": cpu_balanced(),
            "fleet_load_pct": round(100 * fleet, 2), "band_pct": [round(100 * lo, 2), round(100 * hi, 2)],
            "load_before_pct": {n: round(100 * o["load"], 2) for n, o in sorted(before["hosts"].items())},
            "load_after_pct": after,
            "cpu_cores": {n: round(o["cpu_cores"], 3) for n, o in sorted(before["hosts"].items())},
            "fleet_cpu_pct": round(100 * fleet_cpu, 2), "cpu_band_pct": [round(100 * clo, 2), round(100 * chi, 2)],
            "cpu_before_pct": {n: round(100 * o["cpu_load"], 2) for n, o in sorted(before["hosts"].items())},
            "cpu_after_pct": {n: round(100 * cpu_load(n), 2) for n in sorted(active)},
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
