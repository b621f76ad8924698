"""Evacuation against the naive loop operators write today, measured side by side in one run on a lab.

Not a test: numbers only. Brings up a lab of its own (127.0.0.42-44, state in
/var/tmp/fleetmaint-lab-bench), then:

1. makespan - the same VMs on lab1 emptied (a) by a sequential loop of
   ``virsh migrate --live --p2p --persistent --undefinesource`` to lab2, and (b) by host_evacuate
   through ansible-playbook (planned, concurrent, checked). Wall time of each,
   the ratio, per-VM downtime of both; for (b) also the engine's own time, so Ansible's overhead per
   VM shows.
2. convergence - one VM dirtying memory faster than a bandwidth cap: the naive loop gives up at a
   deadline (``virsh migrate --timeout`` then abort), host_evacuate escalates (downtime ladder,
   auto-converge, post-copy). Completed or not, time, downtime.
3. estimate accuracy - the planner's predicted time and downtime for each move against what was measured
   (the planner has no dirty-rate input), and, across VM sizes and dirty rates, migration_check's estimate
   from a dirty rate libvirt measures against a live_migrate of the same VM at the same bandwidth cap.

Writes bench/results/evacuate_vs_naive.json and bench/results/evacuate_vs_naive.md.

    python bench/evacuate_vs_naive.py [--vms 6] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlab import BenchLab, completed_downtime_ms, migrate_cmd, sh

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STATE = "/var/tmp/fleetmaint-lab-bench"
SIZES = [256, 192, 160, 128, 128, 96, 224, 160]


lab = BenchLab(STATE)
uris = lab.uris
where = lab.where


def playbook(inventory, name, **extra):
    """Run one of playbooks/; wall time and return code."""
    t0 = time.monotonic()
    res = sh(["ansible-playbook", "-i", inventory, str(REPO / "playbooks" / name), "-e", json.dumps(extra)],
             check=False)
    if res.returncode != 0:
        print(res.stdout[-3000:], file=sys.stderr)
    return time.monotonic() - t0, res.returncode


def evacuate(tmp, **hm):
    """host_evacuate of lab1 through ansible-playbook (tests/lab/playbooks/host_move.yml saves the result):
    wall time, result."""
    out = Path(tmp) / f"evacuate-{time.monotonic_ns()}.json"
    t0 = time.monotonic()
    sh(["ansible-playbook", str(REPO / "tests" / "lab" / "playbooks" / "host_move.yml"), "-e",
        json.dumps({"hm": dict(hm, uris=list(uris().values()), host="lab1"), "result_file": str(out)}),
        "-e", "action=evacuate"], check=False)
    wall = time.monotonic() - t0
    if not out.exists():
        raise SystemExit("host_evacuate produced no result")
    return wall, json.loads(out.read_text())


def bring_home(inventory, n):
    playbook(inventory, "restore_host.yml", host="lab1")
    w = where()
    assert all(w.get(f"bn-{i}") == ["lab1"] for i in range(n)), w


def run_test_playbook(tmp, name, var, args):
    """One of tests/lab/playbooks (they save the registered result): the result."""
    out = Path(tmp) / f"{var}-{time.monotonic_ns()}.json"
    sh(["ansible-playbook", str(REPO / "tests" / "lab" / "playbooks" / name), "-e",
        json.dumps({var: args, "result_file": str(out)})], check=False)
    if not out.exists():
        raise SystemExit(f"{name} produced no result")
    return json.loads(out.read_text())


DIRTY_MATRIX = [(128, 0), (256, 0), (128, 6), (256, 6), (256, 12)]  # (MiB, MB/s dirtied)
CAP_MIB_S = 32


def dirty_rate_accuracy(tmp, u):
    """migration_check's estimate (dirty rate measured by libvirt) against a real move at the same cap."""
    vms = {f"bd-{mib}-{rate}": (mib, rate) for mib, rate in DIRTY_MATRIX}
    for vm, (mib, rate) in vms.items():
        lab("vm", "create", vm, "--host", "lab1", "--memory", str(mib),
            *(["--dirty-mb", str(mib // 3), "--dirty-rate", str(rate)] if rate else []))
    time.sleep(8)
    chk = run_test_playbook(tmp, "migration_check.yml", "chk", {
        "uri": u["lab1"], "names": list(vms), "dest_uris": [u["lab2"]], "measure_dirty_rate": True,
        "dirty_rate_seconds": 3, "bandwidth": CAP_MIB_S, "max_downtime": 300})  # the move below allows 300 ms
    rows = []
    for vm, (mib, rate) in vms.items():
        est = chk["estimates"][vm]
        mig = run_test_playbook(tmp, "live_migrate.yml", "mig", {
            "name": vm, "uri": u["lab1"], "dest_uri": u["lab2"], "bandwidth": CAP_MIB_S, "max_downtime": 300,
            "downtime_steps": 1, "timeout": 60, "timeout_action": "abort"})
        m = mig.get("metrics") or {}
        rows.append({"vm": vm, "memory_mib": mib, "dirtying_mb_s": rate,
                     "measured_dirty_mib_s": round((est["dirty_rate"].get("bytes_per_s") or 0) / 1048576, 1),
                     "est_converges": est["converges"], "est_time_s": est["total_time_s"],
                     "est_downtime_ms": est["downtime_ms"], "ok": not mig.get("failed"),
                     "time_s": round(m["total_time_ms"] / 1000, 2) if m.get("total_time_ms") else None,
                     "downtime_ms": m.get("downtime_ms")})
        lab("vm", "delete", vm, check=False)
    return rows


def naive_loop(vms, src, dst, extra=(), deadline=None):
    rows = []
    t0 = time.monotonic()
    for vm in vms:
        t = time.monotonic()
        try:
            res = sh(migrate_cmd(src, dst, vm, extra), check=False, timeout=deadline)
            ok, err = res.returncode == 0, res.stderr.strip()
        except subprocess.TimeoutExpired:
            sh(["virsh", "-c", src, "domjobabort", vm], check=False)
            ok, err = False, f"gave up after {deadline} s (deadline), job aborted"
        rows.append({"vm": vm, "ok": ok, "time_s": round(time.monotonic() - t, 2),
                     "downtime_ms": completed_downtime_ms(dst, vm) if ok else None, "error": err or None})
    return time.monotonic() - t0, rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=6)
    ap.add_argument("--keep", action="store_true", help="leave the bench lab up")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lab("down", check=False)
    lab("up", "--first-addr", "127.0.0.42", "--bridge", "br-labbench", timeout=1200)
    inventory = str(out / "bench-inventory.yml")
    Path(inventory).write_text(lab("inventory").stdout)
    u = uris()
    names = [f"bn-{i}" for i in range(a.vms)]
    for i, vm in enumerate(names):
        dirty = ["--dirty-mb", "32", "--dirty-rate", "4"] if i % 3 == 0 else []
        lab("vm", "create", vm, "--host", "lab1", "--memory", str(SIZES[i % len(SIZES)]), *dirty)
    time.sleep(8)
    report = {"vms": {vm: SIZES[i % len(SIZES)] for i, vm in enumerate(names)}, "machine": os.uname().nodename}

    # 1. makespan, naive first, then ours on the same VMs back on lab1.
    naive_wall, naive_rows = naive_loop(names, u["lab1"], u["lab2"])
    bring_home(inventory, a.vms)
    ours_wall, ev = evacuate(out)
    rc = 1 if ev.get("failed") else 0
    engine_s = ev["totals"]["elapsed_s"]
    ours_rows = [{"vm": v["vm"], "ok": v["result"] == "moved", "destination": v["destination"],
                  "time_s": round((v.get("metrics") or {}).get("total_time_ms", 0) / 1000, 2),
                  "downtime_ms": (v.get("metrics") or {}).get("downtime_ms")} for v in ev["vms"]]
    est = {m["vm"]: m for m in ev["plan"]["moves"]}
    accuracy = [{"vm": r["vm"], "memory_mib": report["vms"][r["vm"]],
                 "est_time_s": est[r["vm"]].get("est_time_s"), "time_s": r["time_s"],
                 "est_downtime_ms": est[r["vm"]].get("est_downtime_ms"), "downtime_ms": r["downtime_ms"]}
                for r in ours_rows if r["vm"] in est]
    bring_home(inventory, a.vms)
    report["makespan"] = {
        "naive_s": round(naive_wall, 1), "fleetmaint_s": round(ours_wall, 1), "fleetmaint_rc": rc,
        "fleetmaint_engine_s": engine_s, "ratio_naive_over_fleetmaint": round(naive_wall / ours_wall, 2),
        "ansible_overhead_per_vm_s": round((ours_wall - engine_s) / a.vms, 2),
        "naive": naive_rows, "fleetmaint": ours_rows}
    report["estimate_accuracy"] = accuracy

    # 2. convergence: 80 MB dirtied at 40 MB/s over links from lab1 slowed to 16 MB/s (the same for both).
    for vm in names:
        lab("vm", "delete", vm, check=False)
    report["dirty_rate_accuracy"] = dirty_rate_accuracy(out, u)
    lab("vm", "create", "bn-hot", "--host", "lab1", "--memory", "160", "--dirty-mb", "80", "--dirty-rate", "40")
    time.sleep(8)
    lab("fault", "slow", "lab1", "lab2", "16")
    lab("fault", "slow", "lab1", "lab3", "16")
    n_wall, n_rows = naive_loop(["bn-hot"], u["lab1"], u["lab2"], deadline=60)
    w = where()
    if w.get("bn-hot") != ["lab1"]:
        raise SystemExit(f"naive convergence run left bn-hot on {w.get('bn-hot')}")
    o_wall, ev = evacuate(out, vm_timeout=30, allow_postcopy=True, on_failure="continue")
    hot = ev["vms"][0]
    report["convergence"] = {
        "naive": dict(n_rows[0], wall_s=round(n_wall, 1)),
        "fleetmaint": {"ok": hot["result"] == "moved", "wall_s": round(o_wall, 1),
                       "time_s": round(((hot.get("metrics") or {}).get("total_time_ms") or 0) / 1000, 1),
                       "downtime_ms": (hot.get("metrics") or {}).get("downtime_ms"),
                       "attempts": [x["why"] for x in hot["attempts"]],
                       "postcopy_used": (hot.get("metrics") or {}).get("postcopy_used")}}
    lab("fault", "heal", "lab1", "lab2")
    lab("fault", "heal", "lab1", "lab3")
    lab("vm", "delete", "bn-hot", check=False)
    if not a.keep:
        lab("down", check=False)

    (out / "evacuate_vs_naive.json").write_text(json.dumps(report, indent=1))
    md = summary(report)
    (out / "evacuate_vs_naive.md").write_text(md)
    print(md)
    return 0


def summary(r) -> str:
    m, c = r["makespan"], r["convergence"]
    lines = ["# Evacuation against the naive loop (one run, side by side)", "",
             f"{len(r['vms'])} VMs ({', '.join(f'{v} MiB' for v in r['vms'].values())}), every third dirtying "
             "4 MB/s, on shared storage, lab hosts on one machine (TCG).", "",
             "| | naive `virsh migrate` loop | fleetmaint host_evacuate |", "|---|---|---|",
             f"| wall time | {m['naive_s']} s | {m['fleetmaint_s']} s (engine {m['fleetmaint_engine_s']} s) |",
             f"| ratio naive / fleetmaint | {m['ratio_naive_over_fleetmaint']} | |",
             f"| Ansible overhead per VM | | {m['ansible_overhead_per_vm_s']} s |",
             f"| VMs moved | {sum(x['ok'] for x in m['naive'])} | {sum(x['ok'] for x in m['fleetmaint'])} |",
             "", "| VM | naive downtime ms | fleetmaint downtime ms | fleetmaint destination |", "|---|---|---|---|"]
    ours = {x["vm"]: x for x in m["fleetmaint"]}
    for n in m["naive"]:
        o = ours.get(n["vm"], {})
        lines.append(f"| {n['vm']} | {n['downtime_ms']} | {o.get('downtime_ms')} | {o.get('destination')} |")
    lines += ["", "## Convergence (80 MB dirtied at 40 MB/s, links from lab1 slowed to 16 MB/s)", "",
              "| | completed | time s | downtime ms | how |", "|---|---|---|---|---|",
              f"| naive (60 s deadline) | {c['naive']['ok']} | {c['naive']['time_s']} | {c['naive']['downtime_ms']} | "
              f"{c['naive']['error'] or 'plain pre-copy'} |",
              f"| fleetmaint | {c['fleetmaint']['ok']} | {c['fleetmaint']['time_s']} | {c['fleetmaint']['downtime_ms']} | "
              f"{' -> '.join(c['fleetmaint']['attempts'])}{' (post-copy)' if c['fleetmaint']['postcopy_used'] else ''} |",
              "", "## Estimates against measurements", "",
              "| VM | MiB | est. time s | time s | est. downtime ms | downtime ms |", "|---|---|---|---|---|---|"]
    for x in r["estimate_accuracy"]:
        lines.append(f"| {x['vm']} | {x['memory_mib']} | {x['est_time_s']} | {x['time_s']} | {x['est_downtime_ms']} | "
                     f"{x['downtime_ms']} |")
    lines += ["", f"## Estimates from measured dirty rates (migration_check) against moves at {CAP_MIB_S} MiB/s", "",
              "| VM | MiB | dirtying MB/s | measured MiB/s | est. converges | est. time s | time s | "
              "est. downtime ms | downtime ms |", "|---|---|---|---|---|---|---|---|---|"]
    for x in r.get("dirty_rate_accuracy", []):
        lines.append(f"| {x['vm']} | {x['memory_mib']} | {x['dirtying_mb_s']} | {x['measured_dirty_mib_s']} | "
                     f"{x['est_converges']} | {x['est_time_s']} | {x['time_s'] if x['ok'] else 'failed'} | "
                     f"{x['est_downtime_ms']} | {x['downtime_ms']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
