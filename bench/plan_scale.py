"""Planner scale benchmark: plan time and balance against a lower bound (not a test; numbers only).

Rebalance: a fleet of H hosts whose VMs (20 per host on average, so 20,000 on 1,000 hosts) were placed
unevenly (a few hosts hold many), each with a measured memory in use and CPU use (0 to 1 core, independent of
its memory); plan_rebalance brings every host within 10 % of the fleet's memory load, then of its CPU load.
Reports plan time, moves made (and how many for CPU, as swaps) against the lower bound (the fewest any plan
needs, the larger of memory's and CPU's), and whether every host ended in both bands.

A fleet of H destination hosts already running VMs, plus hosts being evacuated that hold N VMs of
mixed sizes, some in anti-affinity groups. Reports plan time, the most loaded host's memory share
after the plan against the perfect-balance lower bound (total used / total capacity), and the
makespan under the default limits. Writes bench/results/plan_scale.json and prints a table.

    python bench/plan_scale.py [--sizes 1000:50 5000:250 20000:1000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.placement import plan_evacuation
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.rebalance import plan_rebalance

HERE = Path(__file__).resolve().parent


def fleet(n_vms: int, n_hosts: int, seed: int = 7):
    rnd = random.Random(seed)
    evac_hosts = max(1, n_hosts // 10)
    hosts = [{"name": f"hv{i:04d}", "memory_mib": rnd.choice([262144, 393216, 524288]), "vcpus": 64,
              "headroom_mib": 4096} for i in range(n_hosts)]
    hosts += [{"name": f"ev{i:03d}", "memory_mib": 1048576, "vcpus": 256} for i in range(evac_hosts)]
    sizes = [1024, 2048, 4096, 8192, 16384]
    vms = []
    # Existing load on the destinations: about 35 % of their memory on average.
    for h in hosts[:n_hosts]:
        used = 0
        while used < h["memory_mib"] * rnd.uniform(0.2, 0.5):
            m = rnd.choice(sizes)
            vms.append({"name": f"s{len(vms)}", "host": h["name"], "memory_mib": m, "vcpus": max(1, m // 4096)})
            used += m
    for i in range(n_vms):
        m = rnd.choice(sizes)
        vm = {"name": f"m{i:05d}", "host": f"ev{i % evac_hosts:03d}", "memory_mib": m, "vcpus": max(1, m // 4096),
              "dirty_rate": rnd.choice([0, 0, 10, 50, 200]) * 1048576}
        if i % 50 == 0:
            vm["anti_affinity"] = f"g{i // 500}"
        vms.append(vm)
    return hosts, vms, [h["name"] for h in hosts[n_hosts:]]


def unbalanced(n_vms: int, n_hosts: int, seed: int = 11):
    """VMs heaped unevenly: host i gets a share that falls off with i (a skewed, real-looking fleet)."""
    rnd = random.Random(seed)
    hosts = [{"name": f"hv{i:04d}", "memory_mib": 524288, "vcpus": 128, "headroom_mib": 4096} for i in range(n_hosts)]
    weights = [1.0 / (1 + i % 97) for i in range(n_hosts)]
    sizes = [1024, 2048, 4096, 8192]
    vms = []
    for i, h in enumerate(rnd.choices(range(n_hosts), weights=weights, k=n_vms)):
        m = rnd.choice(sizes)
        vms.append({"name": f"r{i:05d}", "host": hosts[h]["name"], "memory_mib": m, "vcpus": 1,
                    "in_use_mib": round(m * rnd.uniform(0.1, 0.9)), "cpu_cores": round(rnd.uniform(0, 1), 2)})
    return hosts, vms


def rebalance_rows(sizes):
    rows = []
    for spec in sizes:
        n_vms, n_hosts = (int(x) for x in spec.split(":"))
        hosts, vms = unbalanced(n_vms, n_hosts)
        t0 = time.perf_counter()
        plan = plan_rebalance(hosts, vms, threshold_pct=10, max_moves=n_vms)
        dt = time.perf_counter() - t0
        lo, hi = plan["band_pct"]
        loads = plan["load_after_pct"].values()
        before = plan["load_before_pct"].values()
        rows.append({"vms": n_vms, "hosts": n_hosts, "plan_time_s": round(dt, 3), "moves": len(plan["moves"]),
                     "lower_bound": plan["lower_bound"],
                     "moves_over_bound": round(len(plan["moves"]) / plan["lower_bound"], 3) if plan["lower_bound"] else None,
                     "balanced": plan["balanced"], "band_pct": [lo, hi],
                     "spread_before_pct": [min(before), max(before)], "spread_after_pct": [min(loads), max(loads)],
                     "cpu_moves": sum(1 for m in plan["moves"] if m["for"] == "cpu"),
                     "swaps": sum(1 for m in plan["moves"] if m.get("swap_with")) // 2,
                     "cpu_band_pct": plan["cpu_band_pct"],
                     "cpu_before_pct": [min(plan["cpu_before_pct"].values()), max(plan["cpu_before_pct"].values())],
                     "cpu_after_pct": [min(plan["cpu_after_pct"].values()), max(plan["cpu_after_pct"].values())]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="*", default=["1000:50", "5000:250", "20000:1000"])
    ap.add_argument("--rebalance", nargs="*", default=["2000:100", "20000:1000"])
    ap.add_argument("--out", default=str(HERE / "results" / "plan_scale.json"))
    args = ap.parse_args()
    rows = []
    for spec in args.sizes:
        n_vms, n_hosts = (int(x) for x in spec.split(":"))
        hosts, vms, evac = fleet(n_vms, n_hosts)
        t0 = time.perf_counter()
        plan = plan_evacuation(hosts, vms, evac, bandwidth_mib_s=1000)
        dt = time.perf_counter() - t0
        b = plan["balance"]
        rows.append({"vms_to_move": n_vms, "destinations": n_hosts, "plan_time_s": round(dt, 3),
                     "moves": len(plan["moves"]), "unplaceable": len(plan["unplaceable"]),
                     "max_load": b["max_load"], "lower_bound": b["lower_bound"],
                     "max_over_lower_bound": round(b["max_load"] / b["lower_bound"], 4),
                     "makespan_s": plan["makespan_s"]})
    rebal = rebalance_rows(args.rebalance)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"evacuation": rows, "rebalance": rebal}, indent=2))
    print(f"{'VMs':>7} {'hosts':>6} {'plan s':>7} {'max load':>9} {'bound':>7} {'ratio':>7} {'makespan s':>11}")
    for r in rows:
        print(f"{r['vms_to_move']:>7} {r['destinations']:>6} {r['plan_time_s']:>7} {r['max_load']:>9} "
              f"{r['lower_bound']:>7} {r['max_over_lower_bound']:>7} {r['makespan_s']:>11}")
    md = ["# Planner scale", "", "| VMs to move | destinations | plan time s | max load | lower bound | ratio |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['vms_to_move']} | {r['destinations']} | {r['plan_time_s']} | {r['max_load']} | {r['lower_bound']} | "
           f"{r['max_over_lower_bound']} |" for r in rows]
    md += ["", "## Rebalance (memory, then CPU)", "", "| VMs | hosts | plan time s | moves (for CPU, swaps) | lower bound | "
           "moves / bound | balanced | memory before (min-max %) | after | band | CPU before (min-max %) | after | band |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['vms']} | {r['hosts']} | {r['plan_time_s']} | {r['moves']} ({r['cpu_moves']}, {r['swaps']}) | "
           f"{r['lower_bound']} | {r['moves_over_bound']} | {r['balanced']} | "
           f"{r['spread_before_pct'][0]}-{r['spread_before_pct'][1]} | {r['spread_after_pct'][0]}-{r['spread_after_pct'][1]} | "
           f"{r['band_pct'][0]}-{r['band_pct'][1]} | {r['cpu_before_pct'][0]}-{r['cpu_before_pct'][1]} | "
           f"{r['cpu_after_pct'][0]}-{r['cpu_after_pct'][1]} | {r['cpu_band_pct'][0]}-{r['cpu_band_pct'][1]} |"
           for r in rebal]
    print("\n".join(md[-(len(rebal) + 2):]))
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
