"""What the lab benchmarks share: run a command, drive a lab of their own with labctl, read where VMs run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
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


def completed_downtime_ms(uri, vm):
    """The downtime of the last completed migration, as the destination recorded it."""
    out = sh(["virsh", "-c", uri, "domjobinfo", "--completed", "--keep-completed", vm], check=False).stdout
    m = re.search(r"Total downtime:\s+(\d+)", out)
    return int(m.group(1)) if m else None
