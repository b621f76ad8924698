# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every move's history as JSON lines: one line per scheduler step, migration event and progress sample.

Pure (no libvirt, no Ansible). The history is in the results already - the scheduler's ``log`` of each VM
(waiting, dispatch, attempt, attempt_failed, moved, cold_move, with wall-clock ``ts``), and per attempt the
migration job's ``events`` and ``samples`` (seconds ``t`` from the attempt's ``started_at``). This turns a
result of live_migrate, host_evacuate or host_restore into lines ordered in time; the maintenance report and
the migration_report callback write them, one file per run (docs/move-log.md says how to read it).

Each line: ``ts`` (epoch seconds), ``job`` (live_migrate, host_evacuate, host_restore), ``host`` (the host the
job was for), ``vm``, ``source``, ``destination``, ``attempt`` (1, 2, ... or absent for the scheduler's own
steps), ``kind`` (``scheduler``, ``event`` or ``progress``), ``what`` (the step, the event, or the phase of a
sample) and that entry's own fields. Every string passes through the URI redaction: no password reaches the
file, whatever a libvirt message quoted.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_text
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.report import MIGRATING_ACTIONS, hostname


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _job_lines(att: Dict[str, Any], base: Dict[str, Any]) -> List[Dict[str, Any]]:
    t0 = att.get("started_at")
    if t0 is None:
        return []
    out = []
    for e in att.get("events") or []:
        rest = {k: v for k, v in e.items() if k not in ("t", "event")}
        out.append(dict(base, ts=round(t0 + (e.get("t") or 0), 2), kind="event", what=e.get("event"), **rest))
    for smp in att.get("samples") or []:
        rest = {k: v for k, v in smp.items() if k not in ("t", "phase")}
        out.append(dict(base, ts=round(t0 + (smp.get("t") or 0), 2), kind="progress", what=smp.get("phase"), **rest))
    return out


def vm_lines(v: Dict[str, Any], job: str, host: Optional[str]) -> List[Dict[str, Any]]:
    """The lines of one VM's entry of a host job (host_evacuate / host_restore ``vms[]``), in causal order.

    Each attempt's job lines follow the scheduler's ``attempt`` (or ``cold_move``) step that began it. The job
    times its lines on its own clock: ``ts`` is held from going back, so within a move it never decreases."""
    base = {"job": job, "host": host, "vm": v.get("vm"), "source": v.get("source"), "destination": v.get("destination")}
    attempts = list(v.get("attempts") or [])
    out: List[Dict[str, Any]] = []

    def job_lines() -> None:
        att = attempts.pop(0)
        out.extend(sorted(_job_lines(att, dict(base, attempt=att.get("attempt"), mode=att.get("mode"))),
                          key=lambda ln: ln["ts"]))

    for entry in v.get("log") or []:
        rest = {k: val for k, val in entry.items() if k not in ("ts", "kind")}
        out.append(dict(base, ts=entry.get("ts"), kind="scheduler", what=entry.get("kind"), **rest))
        if entry.get("kind") in ("attempt", "cold_move") and attempts:
            job_lines()
    while attempts:  # a result without the scheduler's log
        job_lines()
    last = 0.0
    for ln in out:
        last = ln["ts"] = max(ln.get("ts") or 0.0, last)
    return out


def result_lines(action: str, result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every line of one task result (any other module's result: none), ordered by time."""
    job = action.rsplit(".", 1)[-1]
    if job not in MIGRATING_ACTIONS or not isinstance(result, dict):
        return []
    if job == "live_migrate":
        base = {"job": job, "host": None, "vm": result.get("vm"),
                "source": hostname(result.get("source")),
                "destination": hostname(result.get("destination")), "attempt": 1}
        lines = _job_lines(result, base)
    else:
        lines = [ln for v in result.get("vms") or [] for ln in vm_lines(v, job, result.get("host"))]
    return sort_lines(lines)


def sort_lines(lines: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """In time order; lines of one time keep their order (a stable sort: a move's causal order stays)."""
    return sorted(lines, key=lambda ln: ln.get("ts") or 0)


def dumps(lines: Iterable[Dict[str, Any]]) -> str:
    """The JSON-lines text, redacted, one object per line."""
    return "".join(json.dumps(_clean(ln), sort_keys=True, default=str) + "\n" for ln in lines)
