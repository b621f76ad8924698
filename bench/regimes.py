"""Emptying a host three ways, in three regimes, side by side in one run (issue 17's table). Numbers only.

A lab of its own (127.0.0.72-74, state in /var/tmp/fleetmaint-lab-regimes), its hosts on the new stack (libvirt
11.3, QEMU 10.0; ``--stack old`` for the lab's default, whose TCG guests crash after some moves: 3 or 4 of the 6
quiet guests in each evacuation of the nic regime, measured on 2026-12-07, none on the new stack in 3 runs; a
crashed guest spins a core from then on). Before every run a crashed guest is made again, and a run's row says
which guests crashed during it. 6 guests of 160 MiB on lab1,
each with 96 MB written once and then 0.5 MB/s dirtied (quiet, but its memory is full). lab1 is emptied by

- the operator's sequential loop: ``virsh migrate --live --p2p --persistent --undefinesource`` one VM
  after another, to lab2;
- the operator's parallel loop: the same commands all at once;
- ``host_evacuate`` through ``ansible-playbook`` with its defaults (and, in the hot regime, with
  ``allow_postcopy``, and with ``allow_xbzrle``; in the open regime, with limits of 6: as many moves at once as
  the parallel loop, and with ``parallel_connections: 2``: does a second connection per move pay where the
  moves are CPU-bound?);

and brought home by ``host_restore`` between runs (which keeps the link it measured on lab1, unshaped: the
open regime's evacuations start from it; the nic and hot ones are given the link). A loop's time ends with its
last ``virsh``; an ``ansible-playbook`` run's with its job's task (Ansible's start, the profile and the moves
are counted; the task after it only writes the result file for this benchmark, and the whole run is reported
beside it).
Each run's output is kept with the second each line came (``<state>/hm-*.log``). Regimes:

- ``open``: loopback, no shaping (CPU-bound under TCG; no link bound);
- ``nic``: everything lab1's processes send shares 24 MB/s (``labctl fault nic lab1 24``, one htb class for
  lab1's cgroup), as its network card would; the bound is the bytes lab1 actually sent (the iptables
  counter of that class) divided by 24 MB/s;
- ``hot``: ``nic``, plus a 256 MiB guest dirtying 60 MB/s of 150 MB; the loops get a 120 s deadline per VM
  (the sequential loop) or in all (the parallel loop), then their jobs are aborted.

``host_evacuate`` is told the card (``link_bandwidth: {lab1: 22.9}`` MiB/s) in the nic and hot regimes:
that is the input the issue gives it. For every move it reports the prediction made before the move and
the measurement; the table gives the worst ratio among converging moves and whether every move's
convergence was predicted right. How busy the machine's cores were (benchlab.CpuMeter) is given for every run,
for host_evacuate's time before moving and while moving, and for the second before each run (nothing moving):
where the open regime's moves are CPU-bound, that says how much less time any way of making them could take.
Every run starts once the cores have settled (``settle``): right after the guests were brought home they were
sometimes 39-57 % busy for seconds, and a run started then would share the CPU with whatever kept them busy.
Writes bench/results/regimes.json and bench/results/regimes.md.

    python bench/regimes.py [--keep] [--regimes open,nic,hot] [--variants multifd,...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from benchlab import BenchLab, CpuMeter, completed_downtime_ms, migrate_cmd, sh

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STATE = "/var/tmp/fleetmaint-lab-regimes"
NIC_MB_S = 24.0
NIC_MIB_S = round(NIC_MB_S * 1e6 / 1048576, 1)
QUIET = [f"rg-{i}" for i in range(6)]
HOT = "rg-hot"
HOT_RATE_MB_S = 60
DEADLINE_S = 120


lab = BenchLab(STATE)
uris = lab.uris
completed = completed_downtime_ms
cpu = CpuMeter()  # started by main(): how busy the cores were during each run and each part of one


def make_guest(vm):
    """A guest of the benchmark on lab1, as it is specified: the hot one, or a quiet one."""
    if vm == HOT:
        lab("vm", "create", HOT, "--host", "lab1", "--memory", "256", "--dirty-mb", "150", "--dirty-rate",
            str(HOT_RATE_MB_S))
    else:
        lab("vm", "create", vm, "--host", "lab1", "--memory", "160", "--dirty-mb", "96", "--dirty-rate", "0.5")


def where(vm):
    return lab.where().get(vm)


def sent_bytes():
    """What lab1's processes sent through the nic class so far (the iptables CLASSIFY rule's byte counter)."""
    out = sh(["iptables", "-t", "mangle", "-L", "-v", "-x", "-n"], check=False).stdout
    total = 0
    for line in out.splitlines():
        if "CLASSIFY" in line and "set 1:100" in line:
            total += int(line.split()[1])
    return total


def sequential_loop(vms, src, dst, deadline):
    rows, t0 = [], time.monotonic()
    for vm in vms:
        t = time.monotonic()
        try:
            res = sh(migrate_cmd(src, dst, vm), check=False, timeout=deadline)
            ok = res.returncode == 0
        except subprocess.TimeoutExpired:
            sh(["virsh", "-c", src, "domjobabort", vm], check=False)
            ok = False
        rows.append({"vm": vm, "ok": ok, "time_s": round(time.monotonic() - t, 2),
                     "downtime_ms": completed(dst, vm) if ok else None})
    return time.monotonic() - t0, rows


def parallel_loop(vms, src, dst, deadline):
    procs = {vm: subprocess.Popen(migrate_cmd(src, dst, vm), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for vm in vms}
    t0 = time.monotonic()
    ends = {}
    while len(ends) < len(procs) and time.monotonic() - t0 < deadline:
        for vm, p in procs.items():
            if vm not in ends and p.poll() is not None:
                ends[vm] = time.monotonic() - t0
        time.sleep(0.1)
    for vm, p in procs.items():
        if vm not in ends:
            sh(["virsh", "-c", src, "domjobabort", vm], check=False)
            p.wait()
    wall = max(ends.values()) if ends and len(ends) == len(procs) else time.monotonic() - t0
    rows = [{"vm": vm, "ok": vm in ends and p.returncode == 0, "time_s": round(ends.get(vm, wall), 2),
             "downtime_ms": completed(dst, vm) if vm in ends and p.returncode == 0 else None}
            for vm, p in procs.items()]
    return wall, rows


def playbook(name, var, args, action=None):
    out = Path(STATE) / f"{var}-{time.monotonic_ns()}.json"
    cmd = ["ansible-playbook", str(REPO / "tests" / "lab" / "playbooks" / name), "-e",
           json.dumps({var: args, "result_file": str(out)})]
    if action:
        cmd += ["-e", f"action={action}"]
    # The run's output, each line with the seconds since the start: where its time went (Ansible, profile, moves).
    # Its wall time ends with the job's task: the task after it only writes the result file for this benchmark
    # (about 1-2.5 s here: a module started in a process of its own beside six TCG guests); the whole run is kept too.
    lines = []
    t0 = time.monotonic()
    w0 = time.time()  # the job reports its moves' start and end in epoch seconds
    task_end = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            now = time.monotonic() - t0
            if task_end is None and line.startswith("TASK [Save the result]"):
                task_end = now
            lines.append(f"{now:7.2f} {line.rstrip()}")
    whole = time.monotonic() - t0
    out.with_suffix(".log").write_text("\n".join(lines) + "\n")
    if not out.exists():
        raise SystemExit(f"{name} produced no result:\n" + "\n".join(lines[-60:]))
    r = json.loads(out.read_text())
    r["_playbook_s"] = round(whole, 1)
    r["_w0"] = w0
    if r.get("started_at") and r.get("ended_at"):
        # Where the time went: before the first move could start (Ansible's start, connecting, planning and
        # checking, the profile) and moving (the scheduler's run, from its start to the end of its last move).
        r["_before_moves_s"] = round(r["started_at"] - w0, 2)
        r["_moving_s"] = round(r["ended_at"] - r["started_at"], 2)
    return (task_end if task_end is not None else whole), r


def evacuate(**hm):
    return playbook("host_move.yml", "hm", dict(hm, uris=list(uris().values()), host="lab1"), "evacuate")


def bring_home(vms):
    lab("fault", "nic", "lab1", "0")
    _wall, r = playbook("host_move.yml", "hm", {"uris": list(uris().values()), "host": "lab1"}, "restore")
    for vm in vms:
        if where(vm) != ["lab1"]:
            # A loop left it mid-way or on lab2 without a home: move it back by hand.
            src = next((h for h in ("lab2", "lab3") if where(vm) == [h]), None)
            if src:
                sh(migrate_cmd(uris()[src], uris()["lab1"], vm), check=False)
    left = {vm: where(vm) for vm in vms if where(vm) != ["lab1"]}
    if left:
        raise SystemExit(f"could not bring every VM home: {left} ({r.get('msg')})")


def ours_rows(r):
    rows = []
    for v in r.get("vms") or []:
        m = v.get("metrics") or {}
        pred = v.get("predicted") or {}
        given = ((r.get("links") or {}).get(v["source"]) or {}).get("given")
        rows.append({"vm": v["vm"], "ok": v["result"] == "moved", "method": v.get("method"),
                     # The link its prediction used: given (link_bandwidth), measured by the job's earlier moves,
                     # remembered (measured by an earlier job, kept on the host), or assumed (none of these); and
                     # where its memory in use came from.
                     "link": "given" if given else "measured" if pred.get("from_measured_link")
                     else "remembered" if pred.get("from_remembered_link") else "assumed",
                     "in_use_source": (v.get("profile") or {}).get("in_use_source"),
                     "working_set_mib": (v.get("profile") or {}).get("working_set_mib"),
                     "method_why": v.get("method_why"), "exclusive": v.get("exclusive"),
                     "time_s": round(m["total_time_ms"] / 1000, 2) if m.get("total_time_ms") else None,
                     "downtime_ms": m.get("downtime_ms"), "predicted_s": pred.get("time_s"),
                     "predicted_downtime_ms": pred.get("downtime_ms"), "predicted_converges": pred.get("converges"),
                     "attempts": [a["why"] for a in v.get("attempts") or []],
                     "converged": v["result"] == "moved" and v.get("method") == "precopy"
                     and len(v.get("attempts") or []) == 1})
    return rows


def dirty_mb_s(vm):
    """The guest's dirty rate as libvirt measures it on lab1 (page sampling, 1 s), in MB/s; None if unreadable."""
    uri = uris()["lab1"]
    sh(["virsh", "-c", uri, "domdirtyrate-calc", "--seconds", "1", vm], check=False)
    time.sleep(1.5)
    out = sh(["virsh", "-c", uri, "domstats", "--dirtyrate", vm], check=False).stdout
    rate = re.search(r"dirtyrate.megabytes_per_second=(\d+)", out)
    return int(rate.group(1)) * 1.048576 if rate else None


def hot_guard(vms):
    """Every run starts with the hot guest really hot: a TCG guest of QEMU 7.2 can stop (docs/lab.md), and a run
    with a quiet 'hot' guest would measure nothing of what the regime is for. A hot guest gone quiet is made
    again (same memory and rate) and said so."""
    if HOT not in vms:
        return None
    rate = dirty_mb_s(HOT)
    if rate is not None and rate >= HOT_RATE_MB_S / 2:
        return rate
    print(f"hot guest measured at {rate} MB/s: made again", flush=True)
    lab("vm", "delete", HOT, check=False)
    make_guest(HOT)
    return dirty_mb_s(HOT)


def crashed(vms):
    """The guests whose kernel crashed (their console, on every host they ran on): on the lab's QEMU 7.2 a TCG guest
    now and then loses pages written during a move (docs/lab.md), and one that hit a recursive fault spins a host
    core from then on, which would slow every later row of a CPU-bound regime."""
    out = {}
    for vm in vms:
        health = json.loads(lab("vm", "marker", vm).stdout).get("guest") or {}
        if health.get("crashed"):
            out[vm] = health.get("crash")
    return out


def crash_guard(vms):
    """Every run starts with no crashed guest: each one crashed is made again (same spec, on lab1); returns them."""
    bad = crashed(vms)
    for vm in bad:
        print(f"{vm} crashed ({bad[vm]}): made again", flush=True)
        lab("vm", "delete", vm, check=False)
        make_guest(vm)
    return sorted(bad)


# Before each run the cores settle: right after the guests were brought home they were seen 39-57 % busy for two
# seconds in a row before some runs and 2-16 % before others of the same run, and a run that starts then shares the
# CPU with whatever keeps them busy. The six quiet guests (and the hot one) once settled keep them 2-30 % busy
# (runs of 2026-12-07), so every run, loop or ours, starts after a second at most SETTLE_BUSY_PCT % busy - or
# after SETTLE_MAX_S, which the table shows.
SETTLE_BUSY_PCT = 30
SETTLE_MAX_S = 20


def settle():
    """Wait for the cores to settle; returns (the cores' last 1-s window, the seconds waited)."""
    t0 = time.time()
    while True:
        w0 = time.time()
        time.sleep(1.0)
        now = cpu.window(w0, time.time())
        if now["busy_pct"] <= SETTLE_BUSY_PCT or time.time() - t0 >= SETTLE_MAX_S:
            return now, round(time.time() - t0, 1)


def run_regime(name, vms, variants):
    u = uris()
    out = {"vms": vms, "runs": {}}
    for variant in variants:
        bring_home(vms)
        remade = crash_guard(vms)
        hot_rate = hot_guard(vms)
        if name in ("nic", "hot"):
            lab("fault", "nic", "lab1", str(NIC_MB_S))
        idle, settled_s = settle()  # the cores' use with nothing moving: the guests themselves (and the lab's daemons)
        before = sent_bytes()
        deadline = DEADLINE_S if name == "hot" else 1800
        w0 = time.time()
        if variant == "sequential":
            wall, rows = sequential_loop(vms, u["lab1"], u["lab2"], deadline)
        elif variant == "parallel":
            wall, rows = parallel_loop(vms, u["lab1"], u["lab2"], deadline)
        else:
            hm = {"link_bandwidth": {"lab1": NIC_MIB_S}} if name in ("nic", "hot") else {}
            if variant == "postcopy":
                hm["allow_postcopy"] = True
            if variant == "xbzrle":  # XBZRLE allowed (before auto-converge, which stays allowed)
                hm["allow_xbzrle"] = True
            if variant == "multifd":  # two connections per move (QEMU multifd), the operator's choice
                hm["parallel_connections"] = 2
            if variant == "limits6":  # as many at once as the parallel loop starts
                hm["limits"] = {"per_source": 6, "per_destination": 6, "fleet": 8}
            wall, r = evacuate(**hm)
            rows = ours_rows(r)
            out["runs"].setdefault("_results", {})[variant] = {k: r.get(k) for k in ("msg", "reason", "links", "totals")}
        sent = sent_bytes() - before if name in ("nic", "hot") else None
        ours = variant not in ("sequential", "parallel")
        start = r["_w0"] if ours else w0  # a playbook's time starts when it was started (playbook())
        cores = {"idle_before": idle, "run": cpu.window(start, start + wall)}
        if ours and r.get("started_at") and r.get("ended_at"):
            cores.update(before_moving=cpu.window(start, r["started_at"]), moving=cpu.window(r["started_at"], r["ended_at"]))
        during = crashed(vms)  # a guest that crashed in this run (its later moves ran beside a spinning core)
        bound = sent / (NIC_MB_S * 1e6) if sent else None
        downs = [x["downtime_ms"] for x in rows if x.get("downtime_ms") is not None]
        out["runs"][variant] = {"wall_s": round(wall, 1), "moved": sum(1 for x in rows if x["ok"]),
                                **({"playbook_s": r["_playbook_s"], "before_moves_s": r.get("_before_moves_s"),
                                    "moving_s": r.get("_moving_s")}
                                   if variant not in ("sequential", "parallel") else {}),
                                "sent_mb": round(sent / 1e6, 1) if sent else None,
                                "bound_s": round(bound, 1) if bound else None,
                                "over_bound": round(wall / bound, 2) if bound else None,
                                "max_downtime_ms": max(downs) if downs else None, "rows": rows,
                                "hot_dirty_mb_s_before": round(hot_rate, 1) if hot_rate is not None else None,
                                "remade_before": remade, "crashed_during": sorted(during), "cpu": cores,
                                "settled_s": settled_s}
        print(f"{name:5} {variant:10} {wall:7.1f} s moved {out['runs'][variant]['moved']}/{len(vms)}"
              + (f" hot guest {hot_rate:.0f} MB/s before" if hot_rate is not None else "")
              + (f" bound {bound:.1f} s ({wall / bound:.2f}x)" if bound else "")
              + (f", crashed during it: {', '.join(sorted(during))}" if during else "")
              + f", cores {cores['run']['busy_pct']} % busy (idle before: {idle['busy_pct']} %, settled in {settled_s} s)"
              + (f", {out['runs'][variant]['before_moves_s']} s before moving and {out['runs'][variant]['moving_s']} s "
                 "moving" if out["runs"][variant].get("moving_s") is not None else ""), flush=True)
    lab("fault", "nic", "lab1", "0")
    bring_home(vms)
    return out


def accuracy(regimes):
    """Every converging move of host_evacuate: measured / predicted time; convergence predicted right?"""
    ratios, wrong, known, remembered, throttled = [], [], [], [], []
    for reg in regimes.values():
        for variant, run in reg["runs"].items():
            if variant.startswith("_") or variant in ("sequential", "parallel"):
                continue
            for x in run["rows"]:
                if x["predicted_s"] and x["time_s"] and x["method"] == "precopy" and x["ok"]:
                    ratios.append(round(x["time_s"] / x["predicted_s"], 2))
                    if x["link"] in ("given", "measured"):
                        known.append(ratios[-1])
                    elif x["link"] == "remembered":
                        remembered.append(ratios[-1])
                if x["predicted_s"] and x["time_s"] and x["method"] == "auto_converge" and x["ok"] \
                        and len(x["attempts"]) == 1:  # moved by the auto-converge it was predicted for
                    throttled.append(round(x["time_s"] / x["predicted_s"], 2))
                if x["predicted_converges"] is not None and x["method"] == "precopy" and x["attempts"] \
                        and x["predicted_converges"] != x["converged"]:  # a move that never started proves nothing
                    wrong.append(x["vm"])
    return {"ratios": sorted(ratios), "within_25pct": sum(1 for r in ratios if 0.75 <= r <= 1.25),
            "moves": len(ratios), "convergence_mispredicted": wrong,
            # Moves predicted from a link that was given or measured by then (not the assumed one).
            "known_link_ratios": sorted(known), "known_link_within_25pct": sum(1 for r in known if 0.75 <= r <= 1.25),
            # Moves predicted from the link an earlier job measured and kept on the host (the restore before the run).
            "remembered_link_ratios": sorted(remembered),
            "remembered_link_within_25pct": sum(1 for r in remembered if 0.75 <= r <= 1.25),
            # Moves by auto-converge from the start (predicted pass by pass as QEMU throttles).
            "auto_converge_ratios": sorted(throttled)}


def summary(rep):
    lines = ["# Emptying a host: three regimes, side by side (one run)", "",
             f"6 guests of 160 MiB (96 MB written once, then 0.5 MB/s dirtied) on lab1; nic = everything lab1 "
             f"sends shares {NIC_MB_S:g} MB/s; hot = nic plus a 256 MiB guest dirtying 60 MB/s. Loops get "
             f"{DEADLINE_S} s in the hot regime; hosts on the {rep.get('stack', 'old')} stack. Bound = bytes lab1 sent / "
             f"{NIC_MB_S:g} MB/s. host_evacuate's time "
             "ends with its task (Ansible's start, the profile and the moves counted), and is split into the time "
             "before moving (Ansible's start, connecting, checking, the profile) and moving (the first move's "
             "start to the last move's end); the whole playbook, with the benchmark's own task that writes the "
             "result file, is given beside it.", "",
             "| regime | sequential loop | parallel loop | host_evacuate defaults | host_evacuate, post-copy allowed "
             "| host_evacuate, XBZRLE allowed | host_evacuate, limits 6 | host_evacuate, 2 connections a move |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(run, n):
        if not run:
            return "-"
        s = f"{run['wall_s']} s, {run['moved']}/{n} moved"
        if run.get("over_bound"):
            s += f" ({run['over_bound']} x bound {run['bound_s']} s)"
        if run.get("max_downtime_ms") is not None:
            s += f", downtime max {run['max_downtime_ms']} ms"
        if run.get("moving_s") is not None:
            s += f"; {run['before_moves_s']} s before moving, {run['moving_s']} s moving"
            if run.get("bound_s"):
                s += f" ({round(run['moving_s'] / run['bound_s'], 2)} x bound)"
        if run.get("playbook_s") is not None:
            s += f"; whole playbook {run['playbook_s']} s"
        if run.get("crashed_during"):
            s += f"; guest crashed during it: {', '.join(run['crashed_during'])}"
        return s

    for name, reg in rep["regimes"].items():
        n = len(reg["vms"])
        r = reg["runs"]
        lines.append(f"| {name} | {cell(r.get('sequential'), n)} | {cell(r.get('parallel'), n)} | "
                     f"{cell(r.get('defaults'), n)} | {cell(r.get('postcopy'), n)} | {cell(r.get('xbzrle'), n)} | "
                     f"{cell(r.get('limits6'), n)} | {cell(r.get('multifd'), n)} |")
    lines += ["", f"The cores ({rep.get('cores')}) during each run: percent busy (core-seconds spent), over the run and, for "
              "host_evacuate, before moving and while moving; the second before each run, with nothing moving, for "
              "comparison (the guests themselves, once settled: each run waits for a second with the cores at most "
              f"{SETTLE_BUSY_PCT} % busy, at most {SETTLE_MAX_S} s, and the seconds it waited are given).", "",
              "| regime | run | idle before | settled in | run | before moving | moving |",
              "|---|---|---|---|---|---|---|"]
    for name, reg in rep["regimes"].items():
        for variant, run in reg["runs"].items():
            if variant.startswith("_") or not run.get("cpu"):
                continue
            c = run["cpu"]
            pct = {k: f"{c[k]['busy_pct']} % ({c[k]['core_s']})" if c.get(k) else "-"
                   for k in ("idle_before", "run", "before_moving", "moving")}
            settled = f"{run['settled_s']} s" if run.get("settled_s") is not None else "-"
            lines.append(f"| {name} | {variant} | {pct['idle_before']} | {settled} | {pct['run']} | "
                         f"{pct['before_moving']} | {pct['moving']} |")
    acc = rep["accuracy"]
    lines += ["", f"Predictions: {acc['within_25pct']} of {acc['moves']} converging pre-copy moves within ±25 % of "
              f"the predicted time (measured / predicted: {acc['ratios']}); convergence mispredicted for: "
              f"{acc['convergence_mispredicted'] or 'none'}. Of those predicted from a link given or measured by "
              f"then: {acc['known_link_within_25pct']} of {len(acc['known_link_ratios'])} "
              f"({acc['known_link_ratios']}). Of those predicted from the link an earlier job kept on the host: "
              f"{acc['remembered_link_within_25pct']} of {len(acc['remembered_link_ratios'])} "
              f"({acc['remembered_link_ratios']}). Moves by auto-converge, measured / predicted: "
              f"{acc['auto_converge_ratios'] or 'none'}.", "",
              "| regime | run | VM | method | why | link | memory in use from | working set MiB | predicted s "
              "| measured s | predicted downtime ms | downtime ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, reg in rep["regimes"].items():
        for variant in ("defaults", "postcopy", "xbzrle", "limits6", "multifd"):
            for x in (reg["runs"].get(variant) or {}).get("rows", []):
                lines.append(f"| {name} | {variant} | {x['vm']} | {x['method']} | {(x['method_why'] or '')[:70]} | "
                             f"{x['link']} | {x['in_use_source']} | {x.get('working_set_mib') or '-'} | "
                             f"{x['predicted_s']} | {x['time_s']} | {x['predicted_downtime_ms']} | {x['downtime_ms']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", action="store_true", help="leave the lab up")
    ap.add_argument("--regimes", default="open,nic,hot")
    ap.add_argument("--variants", default="", help="only these runs of each regime (comma-separated, "
                    "e.g. multifd); all when not given")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--stack", choices=("new", "old"), default="new",
                    help="the hosts' stack: new (libvirt 11.3, QEMU 10.0; the default) or old (libvirt 9.0, QEMU 7.2, "
                         "whose TCG guests now and then lose pages written during a move and crash, docs/lab.md)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lab("down", check=False)
    lab("up", "--first-addr", "127.0.0.72", "--bridge", "br-labreg", timeout=1200)
    if a.stack == "new":  # before any guest exists (made from the archive once, then cached)
        for h in ("lab1", "lab2", "lab3"):
            lab("patch", h, "--level", "bench", "--stack", "new", timeout=3600)
    for vm in QUIET:
        make_guest(vm)
    rep = {"regimes": {}, "stack": a.stack, "cores": cpu.cores}
    only = [v for v in a.variants.split(",") if v]

    def chosen(variants):
        return [v for v in variants if not only or v in only]
    try:
        with cpu:
            wanted = a.regimes.split(",")
            if "open" in wanted:
                rep["regimes"]["open"] = run_regime("open", QUIET,
                                                    chosen(["sequential", "parallel", "defaults", "limits6", "multifd"]))
            if "nic" in wanted:
                rep["regimes"]["nic"] = run_regime("nic", QUIET, chosen(["sequential", "parallel", "defaults"]))
            if "hot" in wanted:
                make_guest(HOT)
                rep["regimes"]["hot"] = run_regime("hot", QUIET + [HOT],
                                                   chosen(["sequential", "parallel", "defaults", "postcopy", "xbzrle"]))
    finally:
        lab("fault", "nic", "lab1", "0", check=False)
        if not a.keep:
            lab("down", check=False)
    rep["accuracy"] = accuracy(rep["regimes"])
    (out / "regimes.json").write_text(json.dumps(rep, indent=1))
    md = summary(rep)
    (out / "regimes.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
