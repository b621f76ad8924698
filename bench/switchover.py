"""Do two switch-overs at once pause their guests longer than one alone? Numbers only.

A lab of its own (127.0.0.76-78, state in /var/tmp/fleetmaint-lab-switchover), its hosts on the new stack
(libvirt 11.3, QEMU 10.0), 4 quiet guests of 160 MiB on lab1 as in ``regimes.py`` (96 MB written once, then
0.5 MB/s dirtied). Each round moves two of them from lab1 to lab2 with plain ``virsh migrate --live --p2p``,
in one of three ways, taking turns:

- ``together``: both started at once (equal guests: their switch-overs fall close together);
- ``staggered``: the second started once the first has ended (never two switch-overs, nor two moves, at once);
- ``offset``: the second started ``--offset`` seconds after the first (its pre-copy runs beside the first's
  switch-over, its own switch-over comes after it: the two moves overlap, their switch-overs do not).

Every pause is the destination's completed-job downtime; each round's guests go home one at a time
(not measured). Writes bench/results/switchover.json and prints the pauses of each way.

    python bench/switchover.py [--rounds 8] [--offset 0.6] [--downtime 100] [--keep]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchlab import BenchLab, completed_downtime_ms, migrate_cmd, sh

HERE = Path(__file__).resolve().parent
STATE = "/var/tmp/fleetmaint-lab-switchover"
VMS = [f"sw-{i}" for i in range(4)]

lab = BenchLab(STATE)


def migrate(src, dst, vm, downtime_ms, out):
    """One ``virsh migrate``; QEMU's downtime limit set as soon as its job exists (as the collection does)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(migrate_cmd(src, dst, vm), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if downtime_ms:
        for _try in range(20):
            if sh(["virsh", "-c", src, "migrate-setmaxdowntime", vm, str(downtime_ms)], check=False).returncode == 0:
                break
            time.sleep(0.05)
    proc.wait()
    out[vm] = {"ok": proc.returncode == 0, "start": t0, "end": time.monotonic(), "err": proc.stderr.read()[-300:]}


def pair(way, a, b, src, dst, downtime_ms, offset):
    out = {}
    if way == "staggered":
        migrate(src, dst, a, downtime_ms, out)
        migrate(src, dst, b, downtime_ms, out)
    else:
        ta = threading.Thread(target=migrate, args=(src, dst, a, downtime_ms, out))
        ta.start()
        if way == "offset":
            time.sleep(offset)
        tb = threading.Thread(target=migrate, args=(src, dst, b, downtime_ms, out))
        tb.start()
        ta.join()
        tb.join()
    t0 = min(r["start"] for r in out.values())
    rows = []
    for vm in (a, b):
        r = out[vm]
        rows.append({"vm": vm, "ok": r["ok"], "start_s": round(r["start"] - t0, 2), "end_s": round(r["end"] - t0, 2),
                     "downtime_ms": completed_downtime_ms(dst, vm) if r["ok"] else None,
                     **({"error": r["err"]} if not r["ok"] else {})})
    return rows


def home(vms, uris):
    where = lab.where()
    for vm in vms:
        if where.get(vm) != ["lab1"]:
            sh(migrate_cmd(uris[where[vm][0]], uris["lab1"], vm))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--offset", type=float, default=0.6)
    ap.add_argument("--downtime", type=int, default=100, help="QEMU's downtime limit (ms), 0 for its default")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    lab("down", check=False)
    lab("up", "--first-addr", "127.0.0.76", "--bridge", "br-labsw", timeout=1200)
    for h in ("lab1", "lab2", "lab3"):
        lab("patch", h, "--level", "bench", "--stack", "new", timeout=3600)
    for vm in VMS:
        lab("vm", "create", vm, "--host", "lab1", "--memory", "160", "--dirty-mb", "96", "--dirty-rate", "0.5")
    uris = lab.uris()
    rep = {"downtime_limit_ms": a.downtime or None, "offset_s": a.offset, "rounds": []}
    try:
        time.sleep(10)  # the guests' first writes done
        for i in range(a.rounds):
            for k, way in enumerate(("together", "staggered", "offset")):
                vms = VMS[:2] if (i + k) % 2 == 0 else VMS[2:]
                rows = pair(way, vms[0], vms[1], uris["lab1"], uris["lab2"], a.downtime, a.offset)
                rep["rounds"].append({"round": i, "way": way, "rows": rows})
                said = [f"{r['vm']} {r['start_s']:.2f}-{r['end_s']:.2f} s {r['downtime_ms']} ms" for r in rows]
                print(f"{i} {way:9} " + "  ".join(said), flush=True)
                home(vms, uris)
                time.sleep(2)
    finally:
        if not a.keep:
            lab("down", check=False)
    print()
    for way in ("together", "staggered", "offset"):
        d = [r["downtime_ms"] for x in rep["rounds"] if x["way"] == way for r in x["rows"]
             if r["downtime_ms"] is not None]
        if d:
            print(f"{way:9} n={len(d)} median {statistics.median(d):.0f} ms, max {max(d)} ms, "
                  f"over 300: {sum(x > 300 for x in d)}, over 500: {sum(x > 500 for x in d)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "switchover.json").write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
