# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run many live migrations at once within limits, each escalating on its own, never forever.

Used by host_evacuate (moves from the plan) and host_restore (moves back to home hosts). Every move goes
through live_migration.migrate, so each one keeps its guarantees (checks, exactly one definition, abort and
stay on failure). Escalation per VM, as the options allow: the downtime ladder first, then auto-converge, then
post-copy, then suspend; at most ``max_attempts`` attempts. What happens after a failed attempt is decided by
its reason code alone (``reasons.decide``). ``on_failure``: ``stop`` starts no new move after a failure (running
ones finish), ``continue`` goes on. ``overall_timeout`` stops starting new moves.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cold_move import cold_move
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.live_migration import ARGUMENT_SPEC, migrate
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import MIGRATION_TUNING, STORAGE
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.reasons import COLD_MOVE_AFTER, decide


# What each move of a job passes on to live_migration.migrate: the options a job shares with a single move.
MIGRATION_KEYS = tuple(STORAGE) + tuple(MIGRATION_TUNING) + ("memory_headroom",)


def escalation_steps(p: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The options of each attempt, mildest first."""
    t = p["vm_timeout"]
    base = {"timeout": t, "timeout_action": "abort", "postcopy": "never", "auto_converge": False}
    steps = [dict(base, why="pre-copy with the downtime ladder")]
    if p["allow_auto_converge"]:
        steps.append(dict(base, auto_converge=True, auto_converge_initial=50, auto_converge_increment=20,
                          why="auto-converge (vCPU throttling)"))
    if p["allow_postcopy"]:
        steps.append(dict(base, postcopy="after_timeout", timeout_action="postcopy",
                          why="post-copy after the timeout"))
    if p["allow_suspend"]:
        steps.append(dict(base, timeout_action="suspend", why="pause the guest to finish"))
    return steps[:p["max_attempts"]]


def run_moves(moves: List[Dict[str, Any]], uri_of: Dict[str, str], p: Dict[str, Any],
              progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Execute moves [{vm, source, destination}] within p['limits']; returns per-VM results and totals."""
    limits = p["limits"]
    lock = threading.Lock()
    out_busy: Dict[str, int] = {}
    in_busy: Dict[str, int] = {}
    results: Dict[str, Dict[str, Any]] = {
        m["vm"]: {"vm": m["vm"], "source": m["source"], "destination": m["destination"], "result": "not_started",
                  "attempts": []}
        for m in moves}
    pending = list(moves)
    running: List[threading.Thread] = []
    stop = {"flag": False, "why": None}
    t0 = time.monotonic()
    steps = escalation_steps(p)

    def say(**kw: Any) -> None:
        if progress:
            progress(kw)

    def one(m: Dict[str, Any]) -> None:
        res = results[m["vm"]]
        res["result"] = "running"
        i, restarted = 0, False
        while i < len(steps):
            step = steps[i]
            i += 1
            args = {k: v.get("default") for k, v in ARGUMENT_SPEC.items()}
            args.update({k: p[k] for k in MIGRATION_KEYS if k in p and p[k] is not None})
            args.update({k: v for k, v in step.items() if k != "why"})
            args.update(name=m["vm"], uri=uri_of[m["source"]], dest_uri=uri_of[m["destination"]],
                        peer_uri=(p.get("peer_uris") or {}).get(m["destination"]))
            say(kind="attempt", vm=m["vm"], attempt=i, why=step["why"], source=m["source"],
                destination=m["destination"])
            try:
                r = migrate(args, progress=progress)
            except FleetmaintError as exc:
                partial = exc.context.get("result") or {}
                res["attempts"].append({"attempt": i, "why": step["why"], "ok": False, "msg": exc.msg,
                                        "reason": exc.reason, "metrics": partial.get("metrics")})
                say(kind="attempt_failed", vm=m["vm"], attempt=i, reason=exc.reason, msg=exc.msg)
                # What next is decided by the reason code alone (reasons.decide), never by the message.
                action = decide(exc.reason, restarted)
                if action == "restart":
                    restarted = True
                    i -= 1
                    say(kind="attempt_restart", vm=m["vm"], attempt=i, why="failed before any data moved")
                    time.sleep(2)
                    continue
                if action == "escalate":
                    continue
                break
            res["attempts"].append({"attempt": i, "why": step["why"], "ok": True, "msg": r.get("msg"),
                                    "metrics": r.get("metrics")})
            res.update(result="moved" if r.get("changed") else "already_there", metrics=r.get("metrics"),
                       home_host=r.get("home_host"))
            say(kind="moved", vm=m["vm"], msg=r.get("msg"))
            return
        if p.get("allow_cold_move") and res["attempts"] and res["attempts"][-1].get("reason") in COLD_MOVE_AFTER:
            say(kind="cold_move", vm=m["vm"], source=m["source"], destination=m["destination"])
            try:
                c = cold_move(m["vm"], uri_of[m["source"]], uri_of[m["destination"]], p)
                res["attempts"].append({"attempt": len(res["attempts"]) + 1, "why": "cold move", "ok": True,
                                        "msg": c["msg"], "metrics": {"downtime_s": c["downtime_s"]}})
                res.update(result="cold_moved", msg=c["msg"])
                return
            except FleetmaintError as exc:
                res["attempts"].append({"attempt": len(res["attempts"]) + 1, "why": "cold move", "ok": False,
                                        "msg": exc.msg, "reason": exc.reason, "metrics": None})
        res["result"] = "failed"
        res["msg"] = res["attempts"][-1]["msg"] if res["attempts"] else "not attempted"
        res["reason"] = (res["attempts"][-1].get("reason") if res["attempts"] else None) or "unexpected"

    def runner(m: Dict[str, Any]) -> None:
        try:
            one(m)
        except Exception as exc:  # pylint: disable=broad-except
            results[m["vm"]].update(result="failed", msg=f"unexpected error: {exc}", reason="unexpected")
        finally:
            with lock:
                out_busy[m["source"]] -= 1
                in_busy[m["destination"]] -= 1
                if results[m["vm"]]["result"] == "failed" and p["on_failure"] == "stop" and not stop["flag"]:
                    stop.update(flag=True, why=f"{m['vm']} failed and on_failure is stop")

    while pending or running:
        with lock:
            if p.get("overall_timeout") and time.monotonic() - t0 > p["overall_timeout"] and not stop["flag"]:
                stop.update(flag=True, why=f"overall timeout of {p['overall_timeout']} s")
            if not stop["flag"]:
                for m in list(pending):
                    if len(running) >= limits["fleet"]:
                        break
                    if out_busy.get(m["source"], 0) < limits["per_source"] and \
                            in_busy.get(m["destination"], 0) < limits["per_destination"]:
                        pending.remove(m)
                        out_busy[m["source"]] = out_busy.get(m["source"], 0) + 1
                        in_busy[m["destination"]] = in_busy.get(m["destination"], 0) + 1
                        th = threading.Thread(target=runner, args=(m,), name=f"move-{m['vm']}", daemon=True)
                        running.append(th)
                        th.start()
        for th in list(running):
            th.join(timeout=0.2)
            if not th.is_alive():
                running.remove(th)
        if stop["flag"] and not running:
            break
    for m in pending:
        results[m["vm"]].update(msg=f"not started: {stop['why']}", reason="not_started")
    ordered = [results[m["vm"]] for m in moves]
    totals = {k: sum(1 for r in ordered if r["result"] == k)
              for k in ("moved", "cold_moved", "already_there", "failed", "not_started")}
    totals["elapsed_s"] = round(time.monotonic() - t0, 1)
    return {"vms": ordered, "totals": totals, "stopped": stop["why"]}
