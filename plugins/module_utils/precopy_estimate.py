# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How long will a pre-copy live migration take, and how long will the guest pause?

The model of the brief: send all memory M at bandwidth B while the guest dirties D bytes/s;
each round re-sends what the previous round let the guest dirty. With rho = D/B the round
sizes shrink geometrically, total time ~ (M/B)(1 - rho^(n+1)) / (1 - rho) and the final pause
~ M rho^n / B. The migration switches over once a round after the first fits in the allowed downtime
(the first always runs whole: a small or idle guest pauses for what it dirtied meanwhile). When
rho >= 1 it never converges. A guest dirties at most its working set W per round, so a
small working set can converge even when D is close to B; ``working_set`` models that.
No libvirt or Ansible imports.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

MIB = 1048576


def estimate_precopy(memory_bytes: float, bandwidth_bps: float, dirty_bps: float = 0.0,
                     max_downtime_ms: float = 300.0, working_set_bytes: Optional[float] = None,
                     max_iterations: int = 30) -> Dict[str, Any]:
    """Predicted iterations, total time, downtime and data for one pre-copy migration."""
    if memory_bytes <= 0 or bandwidth_bps <= 0:
        raise ValueError("memory and bandwidth must be positive")
    if dirty_bps < 0 or max_downtime_ms <= 0:
        raise ValueError("dirty rate cannot be negative and the downtime limit must be positive")
    limit_s = max_downtime_ms / 1000.0
    cap = min(memory_bytes, working_set_bytes) if working_set_bytes else memory_bytes
    rho = dirty_bps / bandwidth_bps
    remaining = float(memory_bytes)
    total_s = 0.0
    data = 0.0
    rounds = 0
    # QEMU's first pass sends all memory while the guest runs, even memory that would fit in the pause.
    while rounds == 0 or remaining / bandwidth_bps > limit_s:
        if rounds >= max_iterations:
            break
        round_s = remaining / bandwidth_bps
        total_s += round_s
        data += remaining
        rounds += 1
        nxt = min(cap, dirty_bps * round_s)
        if nxt >= remaining and rounds > 1:
            rounds = max_iterations  # not shrinking: never fits in the downtime
            break
        remaining = nxt
    converges = remaining / bandwidth_bps <= limit_s
    downtime_s = remaining / bandwidth_bps
    return {
        "converges": converges,
        "rho": round(rho, 3),
        "iterations": rounds,
        "total_time_s": round(total_s + downtime_s, 2) if converges else None,
        "downtime_ms": round(downtime_s * 1000, 1) if converges else None,
        "data_bytes": int(data + remaining) if converges else None,
        "reason": None if converges else (
            f"the guest dirties {dirty_bps / MIB:.1f} MiB/s, at least the {bandwidth_bps / MIB:.1f} MiB/s the link "
            "sends" if rho >= 1 else
            f"what is left each round does not fit in {max_downtime_ms:g} ms within {max_iterations} rounds"),
    }


def estimate_auto_converge(memory_bytes: float, bandwidth_bps: float, dirty_bps: float, max_downtime_ms: float = 300.0,
                           working_set_bytes: Optional[float] = None, initial: float = 0.5, increment: float = 0.2,
                           max_throttle: float = 0.99, trigger: float = 0.5, max_iterations: int = 60) -> Dict[str, Any]:
    """Pre-copy with auto-converge, pass by pass as QEMU throttles: at a pass's bitmap sync (counted once a second
    at most), a guest that dirtied more than ``trigger`` of what was sent since the last count scores once;
    every second score starts the throttle at ``initial`` or raises it by ``increment`` (up to ``max_throttle``;
    QEMU's ``throttle-trigger-threshold``, ``cpu-throttle-initial`` and ``-increment``). A throttle of t is taken
    to leave the guest (1 - t) of its dirty rate (a guest whose writing is not bound by its vCPU slows less). Each
    pass after the first re-sends what the guest dirtied in the previous one, at most its working set."""
    if memory_bytes <= 0 or bandwidth_bps <= 0:
        raise ValueError("memory and bandwidth must be positive")
    limit_s = max_downtime_ms / 1000.0
    cap = min(memory_bytes, working_set_bytes) if working_set_bytes else memory_bytes
    throttle, score = 0.0, 0
    remaining, total_s, data, rounds = float(memory_bytes), 0.0, 0.0, 0
    period_s, period_sent, period_dirty = 0.0, 0.0, 0.0
    converges = False
    while rounds < max_iterations:
        round_s = remaining / bandwidth_bps
        nxt = min(cap, dirty_bps * (1 - throttle) * round_s)
        total_s, data, rounds = total_s + round_s, data + remaining, rounds + 1
        period_s, period_sent, period_dirty = period_s + round_s, period_sent + remaining, period_dirty + nxt
        remaining = nxt
        if remaining / bandwidth_bps <= limit_s:
            converges = True
            break
        if period_s >= 1.0:
            if period_dirty > trigger * period_sent:
                score += 1
                if score >= 2:
                    score = 0
                    throttle = initial if throttle == 0 else min(throttle + increment, max_throttle)
            period_s, period_sent, period_dirty = 0.0, 0.0, 0.0
    downtime_s = remaining / bandwidth_bps
    return {
        "converges": converges,
        "iterations": rounds,
        "throttle": round(throttle, 2),
        "total_time_s": round(total_s + downtime_s, 2) if converges else None,
        "downtime_ms": round(downtime_s * 1000, 1) if converges else None,
        "data_bytes": int(data + remaining) if converges else None,
    }
