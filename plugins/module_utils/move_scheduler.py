# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run many live migrations at once within limits, each escalating on its own, never forever.

Used by host_evacuate (moves from the plan) and host_restore (moves back to home hosts). Every move goes
through live_migration.migrate, so each one keeps its guarantees (checks, exactly one definition, abort and
stay on failure). Escalation per VM, as the options allow: the downtime ladder first, then XBZRLE, then
auto-converge, then post-copy after the first pass, then suspend; at most ``max_attempts`` attempts. A move
whose method was chosen up front (``move_methods``: a VM pre-copy will not converge for) starts at that step.
What happens after a failed attempt is decided by its reason code alone (``reasons.decide``). ``on_failure``:
``stop`` starts no new move after a failure (running ones finish), ``continue`` goes on. ``overall_timeout``
stops starting new moves.

The links: at most ``share[source]`` moves transfer out of one source at once (chosen from measurements, within
``limits``), a move marked ``exclusive`` runs with its source's link to itself, and a move waiting for link capacity
says so once. A move with several connections (``parallel_connections``, or a multifd compression) counts as that
many moves on its link, and always holds it. A move holds its link from its dispatch until its data has been sent
(its migration job says ``transferred``), or, for a move that does not need its link alone, until what it has left
to send takes less time than the job's moves have taken from dispatch to their first byte (QEMU starting on the
destination, about a second): the next move is dispatched then (``handover``) and sets up while this one sends its
last bytes, so that the link does not wait for it. A pre-copy whose bytes, at the link measured or given shared by
as many moves as ``limits`` let run, take less time than a move's setup or than the finished moves spent outside
their transfer (QEMU starting on the destination, libvirt finishing on both hosts) does not hold its link at all:
where each move's own costs outweigh its bytes, the moves overlap those costs up to the limits. ``limits`` count
each move until it has ended.

Each finished move measures its source's link (bytes sent per second times the moves that shared it, on
average over the time it held it) and how much memory it really sent against its profile's memory in use; a
host whose link was not given gets the median of what its moves measured, and the moves still waiting are
predicted again from both. A link's first moves (dispatched before any move of the job on it had measured it)
are kept apart from its later ones: they can run slower. Until a move of the job has measured it, a host's link
is the one an earlier job measured there (``remembered``), when there is one - for the first moves, what that
job's first moves measured, when it kept that.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import CancelFlag
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cold_move import cold_move
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.live_migration import ARGUMENT_SPEC, migrate
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.maintenance import MoveSlots
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_flags import parallel_connections
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.move_methods import (
    AUTO_CONVERGE_INCREMENT_PCT, AUTO_CONVERGE_INITIAL_PCT,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import MIGRATION_TUNING, STORAGE
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import MIB
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.reasons import COLD_MOVE_AFTER, NOT_CONVERGED, decide


# What each move of a job passes on to live_migration.migrate: the options a job shares with a single move.
MIGRATION_KEYS = tuple(STORAGE) + tuple(MIGRATION_TUNING) + ("memory_headroom",)


def escalation_steps(p: Dict[str, Any], method: Optional[str] = None,
                     xbzrle_cache: Optional[int] = None) -> List[Dict[str, Any]]:
    """The options of each attempt, mildest first, from ``method`` (the one chosen up front) on.
    ``xbzrle_cache``: the XBZRLE cache of the move's VM in bytes (``move_methods.xbzrle_cache_bytes``)."""
    t = p["vm_timeout"]
    base = {"timeout": t, "timeout_action": "abort", "postcopy": "never", "auto_converge": False}
    steps = [dict(base, method="precopy", why="pre-copy with the downtime ladder")]
    if p.get("allow_xbzrle") and p.get("compression", "none") == "none":
        cache = f" ({xbzrle_cache // MIB} MiB cache)" if xbzrle_cache else ""
        # XBZRLE runs in the main migration stream: libvirt refuses it with parallel (multifd) connections, so
        # this step drops the job's parallel_connections (the other steps keep them).
        steps.append(dict(base, method="xbzrle", compression="xbzrle", xbzrle_cache_bytes=xbzrle_cache,
                          parallel_connections=None, why=f"pre-copy with XBZRLE{cache}"))
    if p["allow_auto_converge"]:
        steps.append(dict(base, method="auto_converge", auto_converge=True,
                          auto_converge_initial=AUTO_CONVERGE_INITIAL_PCT,
                          auto_converge_increment=AUTO_CONVERGE_INCREMENT_PCT, why="auto-converge (vCPU throttling)"))
    if p["allow_postcopy"]:
        steps.append(dict(base, method="postcopy", postcopy="after_first_pass", timeout_action="postcopy",
                          why="post-copy after the first pass"))
    if p["allow_suspend"]:
        steps.append(dict(base, method="suspend", timeout_action="suspend", why="pause the guest to finish"))
    start = next((i for i, s in enumerate(steps) if s["method"] == method), 0)
    return steps[start:start + p["max_attempts"]]


def measured_link_bps(metrics: Optional[Dict[str, Any]], sharing: float) -> Optional[float]:
    """What one finished move says of its source's link: its bytes per second, times the moves sharing it (on
    average over the time it held the link: ``sharing`` may be a fraction)."""
    if not metrics or not metrics.get("data_processed") or not metrics.get("total_time_ms"):
        return None
    secs = max(0.001, (metrics["total_time_ms"] - (metrics.get("setup_time_ms") or 0)) / 1000.0)
    return metrics["data_processed"] / secs * max(1.0, sharing)


def run_moves(moves: List[Dict[str, Any]], uri_of: Dict[str, str], p: Dict[str, Any],
              progress: Optional[Callable[[Dict[str, Any]], None]] = None,
              share: Optional[Dict[str, int]] = None, side: str = "source",
              predict: Optional[Callable[..., Dict[str, Any]]] = None,
              cancel: Optional[CancelFlag] = None, on_counts: Optional[Callable[[Dict[str, int]], None]] = None,
              slots: Optional[MoveSlots] = None, remembered: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Execute moves [{vm, source, destination, method?}] within p['limits']; returns per-VM results and totals.

    ``method`` (from move_methods.choose_method): the step to start at, ``exclusive``, the prediction.
    ``share``: moves allowed at once on each host's link, of the moves' ``side`` (``source``: out of a host
    being emptied; ``destination``: into a host VMs come home to); the limits cap it. ``predict(move,
    link_bps, in_use_scale, share=None)``: a move's prediction again, at the link the job measured (hosts whose link was
    not given) and with its VM's memory in use scaled by what the finished moves really sent against their
    profiles (``calibration``). ``cancel``: once set, no move or attempt starts, pre-copies in flight are
    aborted (each VM stays on its source: reason ``cancelled``), a post-copy in flight finishes. ``on_counts``:
    told the moves done, failed, running and waiting each time one ends (the job lease shows them). ``slots``
    (maintenance.MoveSlots): each move also takes a slot on its source and its destination, counted on the hosts
    themselves, so that the limits hold across jobs; a move whose slots other jobs hold waits, and says so.
    ``remembered``: host -> the link an earlier job measured there (``maintenance.remembered_link``: mib_s, at,
    age_s), taken for a host whose link was not given until a move of this job has measured it."""
    if cancel is None:
        with CancelFlag() as own:
            return run_moves(moves, uri_of, p, progress, share, side, predict, own, on_counts, slots, remembered)
    limits = p["limits"]
    lock = threading.Lock()
    out_busy: Dict[str, int] = {}
    in_busy: Dict[str, int] = {}
    busy_on: Dict[str, int] = {}  # the moves transferring on each link the job shares (``side`` of each move)
    # The connections of those moves on each link, and each holding move's (the share counts connections: on the
    # lab, two moves of two connections each paused quiet guests past max_downtime where two of one did not).
    streams_on: Dict[str, int] = {}
    streams_of: Dict[str, int] = {}
    steps_of: Dict[str, List[Dict[str, Any]]] = {}  # each move's attempts' options, mildest first (escalation_steps)
    next_step: Dict[str, Dict[str, Any]] = {}  # each move's next attempt's options (one of those)
    # How many moves held each link over time, integrated (host -> [move-seconds, when last counted]): a move
    # that holds its link notes where the integral stood when it took it (on_link); as it gives the link up,
    # the moves it shared the link with on average over that time are kept (shared_by).
    link_area: Dict[str, List[float]] = {}
    on_link: Dict[str, Tuple[float, float]] = {}  # a move holding its link -> (move-seconds, time) as it took it
    shared_by: Dict[str, float] = {}  # a move that gave its link up -> the moves on it, on average, itself included
    # What each finished move measured of its link, MiB/s: host -> rates of the job's first moves on it
    # (dispatched before any move of the job on that link had measured it) and of the later ones. A link's first
    # moves ran slower than its later ones on the lab, in both directions and in the operator's own virsh loop
    # (0.7 of the rate, CPU-bound), so the two are kept apart.
    first_rates: Dict[str, List[float]] = {}
    later_rates: Dict[str, List[float]] = {}
    first_wave: set = set()  # the moves dispatched before any move of the job on their link had measured it
    no_byte_yet: Dict[str, float] = {}  # a move whose current attempt has sent nothing yet -> when it began
    setup_lags: List[float] = []  # each attempt's seconds from its start to its first byte
    overheads: List[float] = []  # each finished pre-copy's seconds outside QEMU's transfer (its call's wall time less)
    limit_key = "per_source" if side == "source" else "per_destination"
    alone: Dict[str, str] = {}  # a link an exclusive move has to itself -> that move
    given = {h for h, v in (p.get("link_bandwidth") or {}).items() if v}
    links: Dict[str, Dict[str, Any]] = {h: {"given": False, "measured_mib_s": None, "samples": 0, "remembered": note}
                                        for h, note in (remembered or {}).items() if h not in given}
    sent_vs_profile: List[float] = []  # memory each finished move sent / the memory in use its profile said
    # What each finished pre-copy took beyond what its bytes explain: QEMU's setup (setup_time_ms) and the pause
    # beyond the model's (the switch-over's own cost: device state, the last pages, both ends' handshakes).
    fixed: Dict[str, List[float]] = {"setup_ms": [], "switchover_ms": []}
    results: Dict[str, Dict[str, Any]] = {}
    for m in moves:
        res = {"vm": m["vm"], "source": m["source"], "destination": m["destination"], "result": "not_started",
               "attempts": [], "log": []}
        chosen = m.get("method")
        steps_of[m["vm"]] = escalation_steps(p, (chosen or {}).get("method"), (chosen or {}).get("xbzrle_cache_bytes"))
        next_step[m["vm"]] = (steps_of[m["vm"]] or [{}])[0]
        if chosen:
            res.update(method=chosen["method"], method_why=chosen["why"], exclusive=chosen["exclusive"],
                       predicted=chosen["predicted"], profile=m.get("profile"))
        results[m["vm"]] = res
    pending = list(moves)
    waiting_said: set = set()
    slot_wait_said: set = set()
    running: List[threading.Thread] = []
    stop = {"flag": False, "why": None}
    t0 = time.monotonic()
    started_at = time.time()

    def say(**kw: Any) -> None:
        # The scheduler's side of each move's history (attempts, waits, dispatch), with wall-clock times;
        # each attempt keeps its migration job's own events and samples (move_log writes them as one log).
        res = results.get(kw.get("vm"))
        if res is not None:
            res["log"].append(dict({k: v for k, v in kw.items() if k != "vm"}, ts=round(time.time(), 2)))
        if progress:
            progress(kw)

    def attempt(i: int, step: Dict[str, Any], ok: bool, out: Dict[str, Any], began: float, **kw: Any) -> Dict[str, Any]:
        """One attempt's record: its step, outcome and metrics, when it ran and how (``mode``), its job's log."""
        metrics = out.get("metrics")
        mode = "postcopy" if (metrics or {}).get("postcopy_used") else step["method"]
        cache = (out.get("options") or {}).get("xbzrle_cache_mib")
        if cache:
            kw["xbzrle_cache_mib"] = cache  # the XBZRLE cache the attempt ran with (its XBZRLE step)
        return dict({"attempt": i, "why": step["why"], "ok": ok, "msg": out.get("msg"), "metrics": metrics,
                     "mode": mode, "started_at": out.get("started_at") or round(began, 2),
                     "ended_at": out.get("ended_at") or round(time.time(), 2),
                     "events": out.get("events") or [], "samples": out.get("samples") or []}, **kw)

    def one(m: Dict[str, Any]) -> None:
        res = results[m["vm"]]
        res["result"] = "running"
        steps = steps_of[m["vm"]]
        i, restarted = 0, False
        while i < len(steps):
            next_step[m["vm"]] = steps[i]
            if res["attempts"]:
                retake_link(m)  # the last attempt's job ended and gave its link up: wait for room again
            if cancel.is_set():
                if res["attempts"]:  # between attempts: the last one's outcome stands, no new one starts
                    res["attempts"][-1].setdefault("then", f"cancelled ({cancel.why})")
                break
            step = steps[i]
            i += 1
            args = {k: v.get("default") for k, v in ARGUMENT_SPEC.items()}
            args.update({k: p[k] for k in MIGRATION_KEYS if k in p and p[k] is not None})
            args.update({k: v for k, v in step.items() if k not in ("why", "method")})
            args.update(name=m["vm"], uri=uri_of[m["source"]], dest_uri=uri_of[m["destination"]],
                        peer_uri=(p.get("peer_uris") or {}).get(m["destination"]))
            say(kind="attempt", vm=m["vm"], attempt=i, why=step["why"], source=m["source"],
                destination=m["destination"])
            began = time.time()
            with lock:
                no_byte_yet[m["vm"]] = time.monotonic()
            try:
                r = migrate(args, progress=watched(m), cancel=cancel)
            except FleetmaintError as exc:
                partial = dict(exc.context.get("result") or {}, msg=exc.msg)
                res["attempts"].append(attempt(i, step, False, partial, began, reason=exc.reason))
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
            res["attempts"].append(attempt(i, step, True, r, began))
            res.update(result="moved" if r.get("changed") else "already_there", metrics=r.get("metrics"),
                       home_host=r.get("home_host"))
            say(kind="moved", vm=m["vm"], msg=r.get("msg"))
            return
        last = res["attempts"][-1] if res["attempts"] else {}
        if cancel.is_set() and (not last or last.get("ok") is False and last.get("reason") in ("cancelled", *NOT_CONVERGED)):
            # Aborted by the cancel, or stopped before its next step; any other failure (a lost VM) keeps its code.
            res.update(result="failed" if last else "not_started", reason="cancelled",
                       msg=f"cancelled ({cancel.why})" + (f": {last['msg']}" if last else ": not started"))
            return
        if p.get("allow_cold_move") and res["attempts"] and res["attempts"][-1].get("reason") in COLD_MOVE_AFTER:
            say(kind="cold_move", vm=m["vm"], source=m["source"], destination=m["destination"])
            cold = {"method": "cold", "why": "cold move"}
            began = time.time()
            try:
                c = cold_move(m["vm"], uri_of[m["source"]], uri_of[m["destination"]], p)
                res["attempts"].append(attempt(len(res["attempts"]) + 1, cold, True,
                                               {"msg": c["msg"], "metrics": {"downtime_s": c["downtime_s"]}}, began))
                res.update(result="cold_moved", msg=c["msg"])
                return
            except FleetmaintError as exc:
                res["attempts"].append(attempt(len(res["attempts"]) + 1, cold, False, {"msg": exc.msg}, began,
                                               reason=exc.reason))
        res["result"] = "failed"
        res["msg"] = res["attempts"][-1]["msg"] if res["attempts"] else "not attempted"
        res["reason"] = (res["attempts"][-1].get("reason") if res["attempts"] else None) or "unexpected"

    def link_seconds(host: str) -> Tuple[float, float]:
        """Under the lock: the move-seconds spent on ``host``'s link so far, and now (before its count changes)."""
        now = time.monotonic()
        acc = link_area.setdefault(host, [0.0, now])
        acc[0] += busy_on.get(host, 0) * (now - acc[1])
        acc[1] = now
        return acc[0], now

    def connections(m: Dict[str, Any]) -> int:
        """The connections the move's next attempt sends over: the job's parallel ones, unless its step drops
        them (XBZRLE, escalation_steps)."""
        return parallel_connections(dict(p, **next_step[m["vm"]])) or 1

    def take_link(m: Dict[str, Any]) -> None:
        on_link[m["vm"]] = link_seconds(m[side])
        busy_on[m[side]] = busy_on.get(m[side], 0) + 1
        streams_of[m["vm"]] = connections(m)
        streams_on[m[side]] = streams_on.get(m[side], 0) + streams_of[m["vm"]]
        if (m.get("method") or {}).get("exclusive"):
            alone[m[side]] = m["vm"]

    def release_link(m: Dict[str, Any]) -> None:
        """Under the lock: the move's data is sent (or its job is over): its link is free for the next move."""
        if m["vm"] not in on_link:
            return
        area0, since = on_link.pop(m["vm"])
        area, now = link_seconds(m[side])
        shared_by[m["vm"]] = (area - area0) / (now - since) if now - since > 0.001 else float(busy_on[m[side]])
        busy_on[m[side]] -= 1
        streams_on[m[side]] -= streams_of.pop(m["vm"])
        if alone.get(m[side]) == m["vm"]:
            alone.pop(m[side])

    def retake_link(m: Dict[str, Any]) -> None:
        """Before a later attempt: hold the link again once it has room (or the job is cancelled)."""
        while not cancel.is_set():
            with lock:
                if m["vm"] in on_link:
                    return
                if blocked_by_link(m) is None:
                    take_link(m)
                    return
            time.sleep(0.2)

    def hand_over(m: Dict[str, Any], sample: Dict[str, Any]) -> Optional[str]:
        """Under the lock, on a progress sample with data sent: learn the setup lag from the attempt's first
        byte; give the link up when what is left takes less time to send than a next move takes to set up."""
        vm = m["vm"]
        began = no_byte_yet.pop(vm, None)
        if began is not None:
            setup_lags.append(time.monotonic() - began)
        if vm not in on_link or (m.get("method") or {}).get("exclusive") or not setup_lags:
            return None
        left, bps = sample.get("data_remaining"), sample.get("memory_bps")
        if left is None or not bps:
            return None
        lag = statistics.median_high(setup_lags)
        if left / bps > lag:
            return None
        release_link(m)
        return (f"about {left / bps:.1f} s left to send; a next move takes about {lag:.1f} s from dispatch to its "
                "first byte: the link goes to it now")

    def with_fixed_costs(pred: Dict[str, Any]) -> Dict[str, Any]:
        """Under the lock: a prediction plus what the job's finished pre-copies took beyond their bytes (upper
        medians, always a measured value): QEMU's setup, and the switch-over's own pause, which the model of bytes
        and rates does not have."""
        if pred.get("time_s") is None:
            return pred
        setup_ms = statistics.median_high(fixed["setup_ms"])
        switch_ms = statistics.median_high(fixed["switchover_ms"]) if fixed["switchover_ms"] else 0.0
        out = dict(pred, model_time_s=pred["time_s"], model_downtime_ms=pred.get("downtime_ms"),
                   setup_ms=round(setup_ms), switchover_ms=round(switch_ms))
        out["time_s"] = round(pred["time_s"] + (setup_ms + switch_ms) / 1000.0, 2)
        if pred.get("downtime_ms") is not None:
            out["downtime_ms"] = round(pred["downtime_ms"] + switch_ms, 1)
        return out

    def watched(m: Dict[str, Any]) -> Callable[[Dict[str, Any]], None]:
        """The move's progress, passed on; its job's ``transferred`` event, or a hand-over, frees its link."""
        def seen(ev: Dict[str, Any]) -> None:
            said = None
            if ev.get("kind") == "event" and ev.get("event") == "transferred":
                with lock:
                    release_link(m)
            elif ev.get("kind") == "progress" and ev.get("data_processed"):
                with lock:
                    said = hand_over(m, ev)
            if progress:
                progress(ev)
            if said:
                say(kind="handover", vm=m["vm"], why=said)
        return seen

    def finished(m: Dict[str, Any]) -> None:
        """Under the lock, as a move ends: free its link and hosts, learn its source's link."""
        res = results[m["vm"]]
        res["ended_at"] = round(time.time(), 2)
        if slots is not None:
            slots.release(m["vm"])
        release_link(m)
        sharing = shared_by.pop(m["vm"], 1.0)
        out_busy[m["source"]] -= 1
        in_busy[m["destination"]] -= 1
        metrics = res.get("metrics")
        if res["result"] == "moved" and metrics:
            res["measured"] = {"time_s": round(metrics["total_time_ms"] / 1000.0, 2)
                               if metrics.get("total_time_ms") is not None else None,
                               "downtime_ms": metrics.get("downtime_ms")}
            pred = (res.get("predicted") or {}).get("time_s")
            if pred and res["measured"]["time_s"]:
                res["measured"]["time_vs_predicted"] = round(res["measured"]["time_s"] / pred, 2)
            in_use = ((m.get("profile") or {}).get("in_use_mib") or 0) * MIB
            sent = (metrics.get("data_processed") or 0) - (metrics.get("disk_processed") or 0)
            # A plain pre-copy sent its memory in use once, plus what the guest dirtied meanwhile: that part is
            # taken off by the dirty rate its profile measured, and a move that re-sent more than a quarter of
            # its bytes is not counted (a hot VM). Without a measured rate, only a move of a few passes counts.
            dirty = (m.get("profile") or {}).get("dirty_mib_s")
            resent = dirty * MIB * (metrics.get("total_time_ms") or 0) / 1000.0 if dirty is not None else 0.0
            once = res.get("method") == "precopy" and (
                resent <= 0.25 * sent if dirty is not None else (metrics.get("iterations") or 99) <= 3)
            if in_use and sent > 0 and once:
                sent_vs_profile.append((sent - resent) / in_use)
            if res.get("method") == "precopy" and res["attempts"] and res["attempts"][-1].get("mode") == "precopy":
                fixed["setup_ms"].append(float(metrics.get("setup_time_ms") or 0))
                if metrics.get("wall_time_ms") is not None and metrics.get("total_time_ms") is not None:
                    overheads.append(max(0.0, metrics["wall_time_ms"] - metrics["total_time_ms"]) / 1000.0)
                pred_then = res.get("predicted") or {}
                model_ms = pred_then.get("model_downtime_ms", pred_then.get("downtime_ms"))
                if metrics.get("downtime_ms") is not None and model_ms is not None:
                    fixed["switchover_ms"].append(max(0.0, float(metrics["downtime_ms"]) - float(model_ms)))
            seen = measured_link_bps(metrics, sharing)
            if seen and m[side] not in given:
                # The link is what its moves typically measured (their median), not the fastest: a CPU-bound
                # link's moves vary (on the lab, 66-197 MiB/s a move under the same load), and the fastest of
                # them predicted the next job's first moves at 0.6-0.7 of their time.
                link = links.setdefault(m[side], {"given": False, "measured_mib_s": None, "samples": 0})
                (first_rates if m["vm"] in first_wave else later_rates).setdefault(m[side], []).append(seen / MIB)
                link.update(link_rates(m[side], link.get("remembered")))
        if res["result"] == "failed" and p["on_failure"] == "stop" and not stop["flag"] and not cancel.is_set():
            stop.update(flag=True, why=f"{m['vm']} failed and on_failure is stop")
        if on_counts:
            done = [r["result"] for r in results.values()]
            on_counts({"moved": sum(d in ("moved", "cold_moved", "already_there") for d in done),
                       "failed": done.count("failed"), "running": done.count("running"),
                       "waiting": len(pending)})

    def runner(m: Dict[str, Any]) -> None:
        try:
            one(m)
        except Exception as exc:  # pylint: disable=broad-except
            results[m["vm"]].update(result="failed", msg=f"unexpected error: {exc}", reason="unexpected")
        finally:
            with lock:
                finished(m)

    def link_rates(host: str, note: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Under the lock: the host's link as the job's finished moves measured it - ``measured_mib_s``, the link
        its later moves get (the median of what they measured; before any of them has, the first moves' median
        times how much faster an earlier job's later moves ran than its first, when the host kept both),
        ``first_mib_s`` (what its first moves measured) and the ``samples``."""
        first, later = first_rates.get(host) or [], later_rates.get(host) or []
        out: Dict[str, Any] = {"samples": len(first) + len(later),
                               "first_mib_s": round(statistics.median(first), 1) if first else None}
        if later:
            out["measured_mib_s"] = round(statistics.median(later), 1)
        else:
            warm = (note or {}).get("mib_s")
            cold = (note or {}).get("first_mib_s")
            out["measured_mib_s"] = round(statistics.median(first) * (warm / cold if warm and cold else 1.0), 1)
        return out

    def learned(host: str, first: bool = False) -> Tuple[Optional[float], Optional[float]]:
        """Under the lock: what the finished moves have measured - the host's link (bytes/s; until a move of this
        job has measured it, the link an earlier job kept there - what its first moves measured, for a ``first``
        move, when it kept that; None when given or neither) and the scale of what they sent against their
        profiles (None before any finished)."""
        link = links.get(host) or {}
        note = link.get("remembered") or {}
        mib = link.get("measured_mib_s") or (first and note.get("first_mib_s")) or note.get("mib_s")
        return (mib * MIB if mib else None), (statistics.median_high(sent_vs_profile) if sent_vs_profile else None)

    def light(m: Dict[str, Any]) -> Optional[str]:
        """Under the lock: why the move need not hold its link, or None. Its bytes take less time than the job's
        moves take from dispatch to their first byte, or than the finished ones spent outside their transfer
        (QEMU starting on the destination, libvirt finishing on both hosts) - at the link given or measured by
        this job (not one remembered from an earlier job: more moves on a link than its share is decided on the
        link as it is now, nor scaled by how an earlier job's later moves ran against its first), shared by as
        many moves as the limit lets run - so what it waits for is not the link (a CPU-bound or fast link, where
        each move's own costs outweigh its bytes). A pre-copy with several connections always holds its link."""
        host = m[side]
        chosen = m.get("method") or {}
        if not predict or not (setup_lags or overheads) or chosen.get("method") != "precopy" or chosen.get("exclusive") \
                or connections(m) > 1:
            return None
        own = (first_rates.get(host) or []) + (later_rates.get(host) or [])
        if not own and host not in given:
            return None
        scale = learned(host)[1]
        pred = predict(m, statistics.median(own) * MIB if own else None, scale, limits[limit_key])
        lag = statistics.median_high(setup_lags) if setup_lags else 0.0
        over = statistics.median_high(overheads) if overheads else 0.0
        if not pred.get("converges") or pred.get("time_s") is None or pred["time_s"] >= max(lag, over):
            return None
        than = (f"a move takes from dispatch to its first byte ({lag:.1f} s)" if lag >= over else
                f"a finished move spent outside its transfer ({over:.1f} s: QEMU starting on the destination, "
                "libvirt finishing on both hosts)")
        return (f"its bytes take about {pred['time_s']:.1f} s with {limits[limit_key]} moves on {host}'s link, less "
                f"than {than}: it does not wait for the link")

    def blocked_by_link(m: Dict[str, Any]) -> Optional[str]:
        host = m[side]
        busy = busy_on.get(host, 0)
        if alone.get(host):
            return f"{host}'s link: {alone[host]} has it to itself"
        if light(m):
            return None
        if (m.get("method") or {}).get("exclusive") and busy:
            return f"{host}'s link: this move needs it to itself, {busy} other move(s) still on it"
        cap = min(limits[limit_key], (share or {}).get(host, limits[limit_key]))
        streams, own = streams_on.get(host, 0), connections(m)
        if busy and streams + own > cap:
            if streams == busy and own == 1:
                return f"{host}'s link: {busy} move(s) share it, the most chosen for it is {cap}"
            return (f"{host}'s link: {busy} move(s) with {streams} connection(s) on it, and this move's {own} would "
                    f"make more than the {cap} chosen for it")
        return None

    def start(m: Dict[str, Any]) -> None:
        pending.remove(m)
        results[m["vm"]]["started_at"] = round(time.time(), 2)
        out_busy[m["source"]] = out_busy.get(m["source"], 0) + 1
        in_busy[m["destination"]] = in_busy.get(m["destination"], 0) + 1
        unheld = light(m)
        if not unheld:
            take_link(m)
        if not (links.get(m[side]) or {}).get("samples"):
            first_wave.add(m["vm"])
        measured, scale = learned(m[side], m["vm"] in first_wave)
        if predict and m.get("method") and (measured or scale or unheld):
            # A move that does not hold its link shares it with as many as the limit lets run (as light() judged).
            again = predict(m, measured, scale, limits[limit_key]) if unheld else predict(m, measured, scale)
            by_job = bool((links.get(m[side]) or {}).get("measured_mib_s"))
            results[m["vm"]]["predicted"] = dict(again, from_measured_link=bool(measured) and by_job,
                                                 from_remembered_link=bool(measured) and not by_job,
                                                 in_use_scale=round(scale, 2) if scale else None)
        if m.get("method") and fixed["setup_ms"]:
            results[m["vm"]]["predicted"] = with_fixed_costs(results[m["vm"]].get("predicted") or {})
        if m.get("method"):
            pred = results[m["vm"]].get("predicted") or {}
            say(kind="dispatch", vm=m["vm"], method=m["method"]["method"], why=m["method"]["why"],
                predicted_s=pred.get("time_s"), predicted_downtime_ms=pred.get("downtime_ms"),
                **({"link": unheld} if unheld else {}))
        th = threading.Thread(target=runner, args=(m,), name=f"move-{m['vm']}", daemon=True)
        running.append(th)
        th.start()

    while pending or running:
        with lock:
            if p.get("overall_timeout") and time.monotonic() - t0 > p["overall_timeout"] and not stop["flag"]:
                stop.update(flag=True, why=f"overall timeout of {p['overall_timeout']} s")
            if cancel.is_set() and not stop["flag"]:
                stop.update(flag=True, why=f"cancelled ({cancel.why})")
                say(kind="cancelled", vm="all moves", why=cancel.why, running=len(running), waiting=len(pending))
            if not stop["flag"]:
                for m in list(pending):
                    if len(running) >= limits["fleet"]:
                        break
                    why = blocked_by_link(m)
                    if why is None and out_busy.get(m["source"], 0) < limits["per_source"] and \
                            in_busy.get(m["destination"], 0) < limits["per_destination"]:
                        taken = slots.take(m) if slots is not None else None
                        if taken is None:
                            start(m)
                        elif taken and m["vm"] not in slot_wait_said:
                            slot_wait_said.add(m["vm"])
                            say(kind="waiting", vm=m["vm"], why=f"waiting for a move slot: {taken}")
                    elif why is not None and m["vm"] not in waiting_said:
                        waiting_said.add(m["vm"])
                        say(kind="waiting", vm=m["vm"], why=f"waiting for link capacity: {why}")
        if not running and pending:
            time.sleep(0.2)  # nothing to wait on: every pending move waits for another job's slots
        for th in list(running):
            th.join(timeout=0.2)
            if not th.is_alive():
                running.remove(th)
        if stop["flag"] and not running:
            break
    for m in pending:
        results[m["vm"]].update(msg=f"not started: {stop['why']}", reason="cancelled" if cancel.is_set() else "not_started")
    ordered = [results[m["vm"]] for m in moves]
    totals = {k: sum(1 for r in ordered if r["result"] == k)
              for k in ("moved", "cold_moved", "already_there", "failed", "not_started")}
    totals["elapsed_s"] = round(time.monotonic() - t0, 1)
    for h in given:
        links[h] = {"given": True, "mib_s": p["link_bandwidth"][h]}
    calibration = {"moves": len(sent_vs_profile),
                   "sent_vs_profile": sorted(round(x, 2) for x in sent_vs_profile)}
    return {"vms": ordered, "totals": totals, "stopped": stop["why"], "links": links, "calibration": calibration,
            "started_at": round(started_at, 2), "ended_at": round(time.time(), 2),
            # Cancelled: asked to stop, and something was left undone (a request after the last move changes nothing).
            "cancelled": cancel.is_set() and any(r["result"] in ("failed", "not_started") for r in ordered)}
