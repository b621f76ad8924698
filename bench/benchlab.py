"""What the lab benchmarks share: run a command, drive a lab of their own with labctl, read where VMs run, and
measure how busy the machine's cores were."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sh(cmd, check=True, timeout=1800, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and res.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))[:200]} failed:\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}")
    return res


class BenchLab:
    """labctl for one lab state directory."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.labctl = [sys.executable, str(REPO / "lab" / "labctl.py"), "--state-dir", state]

    def __call__(self, *args, **kw):
        return sh(self.labctl + list(args), **kw)

    def status(self) -> dict:
        return json.loads(self("status", "--json").stdout)

    def uris(self) -> dict:
        return {h["name"]: h["uri"] for h in self.status()["hosts"]}

    def where(self) -> dict:
        return {n: v["running_on"] for n, v in self.status()["vms"].items()}


def migrate_cmd(src, dst, vm, extra=()):
    """The operator's ``virsh migrate`` of one VM (live, peer to peer, defined on the destination only; ``--unsafe``
    for the lab's shared directory), with ``extra`` options."""
    return ["virsh", "-c", src, "migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--unsafe", *extra,
            vm, dst]


def completed_downtime_ms(uri, vm):
    """The downtime of the last completed migration, as the destination recorded it."""
    out = sh(["virsh", "-c", uri, "domjobinfo", "--completed", "--keep-completed", vm], check=False).stdout
    m = re.search(r"Total downtime:\s+(\d+)", out)
    return int(m.group(1)) if m else None


class CpuMeter:
    """How busy the machine's cores were, sampled from /proc/stat every ``every`` seconds in a thread of its own:
    ``window(t0, t1)`` (epoch seconds) gives the core-seconds spent (everything but idle and iowait: the guests,
    QEMU, libvirtd, Ansible) and the share of all cores that is. Used as ``with CpuMeter() as cpu:``."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.cores = os.cpu_count() or 1
        self.samples = []  # (epoch, busy core-seconds since boot)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    @staticmethod
    def read():
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return time.time(), (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while True:
            self.samples.append(self.read())
            if self._stop.wait(self.every):
                break

    def __enter__(self) -> "CpuMeter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _busy_at(self, t: float) -> float:
        """Busy core-seconds since boot at epoch ``t``, between the two samples around it."""
        s = self.samples
        if not s:
            raise ValueError("no CPU sample yet")
        if t <= s[0][0]:
            return s[0][1]
        for (ta, ba), (tb, bb) in zip(s, s[1:]):
            if ta <= t <= tb:
                return ba + (bb - ba) * (t - ta) / max(tb - ta, 1e-9)
        return s[-1][1]

    def window(self, t0: float, t1: float) -> dict:
        """The cores' use from ``t0`` to ``t1``: core-seconds spent and percent of all cores busy."""
        spent = self._busy_at(t1) - self._busy_at(t0)
        return {"core_s": round(spent, 2), "busy_pct": round(100.0 * spent / (max(t1 - t0, 1e-9) * self.cores))}
