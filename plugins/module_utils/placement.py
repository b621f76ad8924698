# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where does every VM of the hosts to empty go, and in what order? Pure, deterministic.

Placement is worst-fit decreasing: VMs by priority, then size, each to the remaining host with
the largest free share of memory that fits it (memory with overcommit and headroom, vCPUs with
overcommit) and holds no VM of its anti-affinity groups. That keeps hosts balanced, which is
what peers' users miss when maintenance sends everything to one node.

Versions, when hosts and VMs carry them: a destination that does not offer a VM's machine type cannot take it,
and of the others those whose stack (QEMU, libvirt) is not older than the VM's host come first; an older one is
chosen only when none of those fits, and its move says so. The move rules check each move again before it runs.

The schedule is a list schedule under three limits: migrations out of one source, into one
destination, and across the fleet at once. Each migration's duration and downtime come from
the pre-copy model. No libvirt or Ansible imports.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import older_versions, stack_of, stack_versions
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import MIB, estimate_precopy

# Defaults chosen against peers': vSphere runs 4 vMotions per host on 1 GbE, Proxmox 4 workers; oVirt 2
# outgoing, nova 1. Each move counts until it has ended; of these, at most two transfer over a host's link at once
# (move_methods.LINK_SHARE), the others set up or finish (the link idle for them), so 4 keeps a link busy.
DEFAULT_LIMITS = {"per_source": 4, "per_destination": 4, "fleet": 8}


class PlanRefused(ValueError):
    """The remaining fleet cannot take the VMs: nothing should move. ``unplaceable``: the VMs that refused the plan
    (entries as the plan's ``unplaceable``), when it was refused VM by VM."""

    def __init__(self, msg: str, unplaceable: Optional[List[Dict[str, Any]]] = None) -> None:
        super().__init__(msg)
        self.unplaceable = list(unplaceable or [])

    @property
    def reason(self) -> str:
        """The failure's reason code: ``blocked`` when only machine types refused it (no host offers them, which no
        room would fix), else ``no_capacity``."""
        refusing = [u for u in self.unplaceable if u["code"] != "pinned"]
        if refusing and all(u["code"] == "machine_type_unsupported" for u in refusing):
            return "blocked"
        return "no_capacity"


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
    headroom_mib (0), maintenance (False), hypervisor_version and libvirt_version (its QEMU and libvirt, as host
    facts give them), machines (the machine types it offers, every architecture).
    vms: name, host, memory_mib, vcpus, and optionally dirty_rate (bytes/s), anti_affinity (a group or
    a list), pinned (False), priority (0), machine (its machine type).

    A host without ``machines`` takes any machine type and a host without versions is never older: without those
    keys the plan is what it always was. A VM whose machine type no remaining host offers is unplaceable with code
    ``machine_type_unsupported``. A move to a host whose QEMU or libvirt is older than the VM's host's (chosen only
    when no host of the same or a newer stack fits) carries ``older_destination: true`` and ``notes``.
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

    # Versions: the machine types each target offers (a target without the key takes any) and each host's stack
    # (QEMU, libvirt). Targets are grouped by stack, one heap each; with no version data there is one group, and the
    # loop below is the plain worst-fit one.
    by_name = {h["name"]: h for h in hosts}
    offers = {n: frozenset(h["machines"]) for n, h in targets.items() if h.get("machines") is not None}
    refused_of: Dict[str, frozenset] = {}  # machine type -> targets that do not offer it
    stacks = {n: stack_versions(h) for n, h in by_name.items()
              if h.get("hypervisor_version") or h.get("libvirt_version")}
    heaps: Dict[Any, List[Tuple[float, str]]] = defaultdict(list)
    for n in sorted(targets):
        heaps[stacks.get(n)].append((-(cap_mem[n] - used_mem[n]) / cap_mem[n] if cap_mem[n] > 0 else 0.0, n))
    for h in heaps.values():
        heapq.heapify(h)
    members = {k: frozenset(n for _s, n in h) for k, h in heaps.items()}
    # Per group, (memory, vCPUs) of VMs that fitted none of its hosts on memory and vCPUs alone: as hosts only fill
    # up while planning, a VM at least as big fits none either, and the group is not searched again for it.
    full: Dict[Any, List[Tuple[float, float]]] = defaultdict(list)
    # A source's stack -> (the target groups not older than it, those older): the first are tried first.
    tiers: Dict[Any, Tuple[List[Any], List[Any]]] = {}

    def tiers_of(src: Any) -> Tuple[List[Any], List[Any]]:
        if src not in tiers:
            older = [k for k in heaps if k is not None and src is not None and older_versions(src, k)]
            tiers[src] = ([k for k in heaps if k not in older], older)
        return tiers[src]

    order = sorted(movers, key=lambda v: (-v.get("priority", 0), -v["memory_mib"], -v["vcpus"], v["name"]))
    assignment: Dict[str, str] = {}
    to_older: Dict[str, str] = {}
    for vm in order:
        machine = vm.get("machine") if offers else None
        refused: frozenset = frozenset()
        if machine:
            if machine not in refused_of:
                refused_of[machine] = frozenset(n for n, ms in offers.items() if machine not in ms)
            refused = refused_of[machine]
        if refused and len(refused) == len(targets):
            unplaceable.append({"vm": vm["name"], "source": vm["host"], "code": "machine_type_unsupported",
                                "machine": machine, "reason": _no_machine_reason(vm, machine, targets, by_name)})
            continue
        groups = set(groups_of(vm))
        popped: List[Tuple[Any, List[Tuple[float, str]]]] = []
        best = None
        for tier, is_older in zip(tiers_of(stacks.get(vm["host"])), (False, True)):
            for key in tier:
                if refused and members[key] <= refused:
                    continue  # no host of this group offers its machine type
                if any(vm["memory_mib"] >= fm and vm["vcpus"] >= fc for fm, fc in full[key]):
                    continue  # a VM no bigger already fitted no host of this group, and hosts only fill up
                heap, took, fitted = heaps[key], [], False
                while heap:
                    item = heapq.heappop(heap)
                    took.append(item)
                    n = item[1]
                    if (cap_mem[n] - used_mem[n] >= vm["memory_mib"] and cap_cpu[n] - used_cpu[n] >= vm["vcpus"]
                            and not groups & groups_on[n] and n not in refused):
                        # the emptiest fitting host of this group; the emptiest of the groups wins
                        if best is None or item < best[0]:
                            best = (item, key, len(took) - 1)
                        fitted = True
                        break
                popped.append((key, took))
                if not fitted and not groups and refused.isdisjoint(members[key]):
                    full[key].append((vm["memory_mib"], vm["vcpus"]))
            if best is not None:
                if is_older:
                    to_older[vm["name"]] = best[0][1]
                break
        if best is None:
            cands = [n for n in targets if n not in refused]
            reasons = []
            if all(cap_mem[n] - used_mem[n] < vm["memory_mib"] for n in cands):
                reasons.append(f"no host has {vm['memory_mib']} MiB free")
            if all(cap_cpu[n] - used_cpu[n] < vm["vcpus"] for n in cands):
                reasons.append(f"no host has room for {vm['vcpus']} vCPUs")
            if groups and all(groups & groups_on[n] for n in cands):
                reasons.append(f"every host already holds a VM of anti-affinity group {', '.join(sorted(groups))}")
            reason = "; ".join(reasons) or "no host fits memory, vCPUs and anti-affinity at once"
            if refused:
                reason = f"of the hosts that offer its machine type {machine} ({_some(cands)}): {reason}"
            unplaceable.append({"vm": vm["name"], "source": vm["host"], "code": "no_capacity", "reason": reason})
        else:
            (_share, chosen), key, at = best
            assignment[vm["name"]] = chosen
            used_mem[chosen] += vm["memory_mib"]
            used_cpu[chosen] += vm["vcpus"]
            groups_on[chosen].update(groups)
            took = next(t for k, t in popped if k == key)
            took[at] = ((-(cap_mem[chosen] - used_mem[chosen]) / cap_mem[chosen]), chosen)
        for key, took in popped:
            for item in took:
                heapq.heappush(heaps[key], item)
    if unplaceable and refuse_partial and any(u["code"] != "pinned" for u in unplaceable):
        raise PlanRefused("cannot place " + "; ".join(f"{u['vm']}: {u['reason']}" for u in unplaceable), unplaceable)

    vm_of = {v["name"]: v for v in movers}
    moves = []
    for vm_name in sorted(assignment, key=lambda x: (-vm_of[x].get("priority", 0), x)):
        vm = vm_of[vm_name]
        est = estimate_precopy(vm["memory_mib"] * MIB, bandwidth_mib_s * MIB, vm.get("dirty_rate", 0.0) or 0.0,
                               max_downtime_ms)
        move = {"vm": vm_name, "source": vm["host"], "destination": assignment[vm_name],
                "memory_mib": vm["memory_mib"], "priority": vm.get("priority", 0),
                "est_time_s": est["total_time_s"], "est_downtime_ms": est["downtime_ms"],
                "converges": est["converges"]}
        if vm_name in to_older:
            move["older_destination"] = True
            move["notes"] = [_older_note(vm, by_name[vm["host"]], by_name[assignment[vm_name]], offers)]
        moves.append(move)
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


def _some(names: Iterable[str], shown: int = 6) -> str:
    """A few names of a long list, in order: ``a, b, c and 12 more``."""
    names = sorted(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _no_machine_reason(vm: Dict[str, Any], machine: str, targets: Dict[str, Dict[str, Any]],
                       by_name: Dict[str, Dict[str, Any]]) -> str:
    """Why a VM whose machine type no remaining host offers stays: the machine type, and what each host runs."""
    shown = sorted(targets)[:6]
    stacks = "; ".join(f"{n}: {stack_of(targets[n])}" for n in shown)
    stacks += f"; and {len(targets) - len(shown)} more" if len(targets) > len(shown) else ""
    return (f"machine type {machine} of {vm['name']} (defined on {vm['host']}, {stack_of(by_name[vm['host']])}) is "
            f"offered by none of the hosts that could take it ({stacks})")


def _older_note(vm: Dict[str, Any], source: Dict[str, Any], dest: Dict[str, Any],
                offers: Dict[str, frozenset]) -> str:
    """The note of a move to an older stack: which stacks, why that host, and what it means for the VM."""
    machine = vm.get("machine")
    offered = (f"machine type {machine} is offered there" if machine and dest["name"] in offers
               else f"the planner does not know whether machine type {machine or '(not known)'} is offered there; "
                    "the move's checks decide")
    return (f"{dest['name']} runs {stack_of(dest)}, older than {source['name']}'s {stack_of(source)}: no host of the "
            f"same or a newer stack has room for {vm['name']}; {offered}; once it runs there it cannot use what the "
            "newer QEMU added")


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
