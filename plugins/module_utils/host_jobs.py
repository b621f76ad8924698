# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host jobs: empty a host for maintenance (evacuate) and bring its VMs home (restore).

Each job plans from where VMs are now, checks every move with the shared rules before anything moves, holds
the host's job lease, marks or clears maintenance, and runs the moves through the move scheduler.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, ExitStack
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import CancelFlag
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import Fleet
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.maintenance import (
    clear_mark, HostLease, MoveSlots, remember_link, remembered_link, set_mark,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_checks import check_pair, vm_facts
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_flags import parallel_connections
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import blockers, stays
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.move_methods import (
    bandwidths, choose_method, link_share, order_moves,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.move_scheduler import run_moves
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import (
    DEFAULT_ESTIMATE_BANDWIDTH_MIB_S, MEASUREMENT, MIGRATION_TUNING, MOVE_LIMITS, PLACEMENT, STORAGE, pick,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import MIB, estimate_precopy
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.vm_profile import profile_vms
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.placement import (
    DEFAULT_LIMITS, plan_evacuation, PlanRefused, select_homecoming,
)


COMMON_SPEC: Dict[str, Any] = dict(
    uris=dict(type="list", elements="str", required=True),
    host=dict(type="str", required=True),
    peer_uris=dict(type="dict", default={}),
    **STORAGE, **MIGRATION_TUNING, **pick("memory_headroom"), **MOVE_LIMITS, **MEASUREMENT,
)


EVACUATE_SPEC: Dict[str, Any] = dict(
    COMMON_SPEC,
    **PLACEMENT,
    mark_maintenance=dict(type="bool", default=True),
    exclude_destinations=dict(type="list", elements="str", default=[]),
    reason=dict(type="str", default="maintenance"),
)


RESTORE_SPEC: Dict[str, Any] = dict(COMMON_SPEC, **pick("memory_overcommit", "cpu_overcommit"),
                                    clear_maintenance=dict(type="bool", default=True))


def _staying_note(staying: List[Dict[str, Any]], away: bool = False) -> str:
    if not staying:
        return ""
    what = "left away from home, home unchanged" if away else "staying"
    return f"; {what}: " + "; ".join(f"{s['vm']} on {s['host']} ({s['reason']}: {s['msg']})" for s in staying)


def _older_note(moves: List[Dict[str, Any]]) -> str:
    """What the plan says about moves to an older stack (placement marks them ``older_destination``)."""
    older = [m for m in moves if m.get("older_destination")]
    if not older:
        return ""
    what = [f"{m['vm']} -> {m['destination']} ({' '.join(m['notes'])})" for m in older]
    return f"; {len(older)} to an older stack: " + "; ".join(what)


def _limits(p: Dict[str, Any]) -> Dict[str, int]:

    lim = dict(DEFAULT_LIMITS, **{k: int(v) for k, v in (p.get("limits") or {}).items()})
    unknown = set(lim) - set(DEFAULT_LIMITS)
    if unknown or any(v < 1 for v in lim.values()) or p["max_attempts"] < 1 or p["vm_timeout"] < 1:
        raise FleetmaintError(f"invalid limits {p.get('limits')} or attempts/timeouts: limits are per_source, "
                              "per_destination, fleet (each at least 1)", step="validate options")
    if p.get("allow_xbzrle") and p["compression"] != "none":
        raise FleetmaintError(f"allow_xbzrle chooses XBZRLE for the VMs that need it, so it cannot be combined with "
                              f"compression={p['compression']} (which applies to every move): drop one of them",
                              step="validate options")
    return lim


def _preflight(fleet: Any, moves: List[Dict[str, Any]], p: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Check every move with the shared rules before anything moves; returns the blocked ones."""

    blocked = []
    for m in moves:
        src, dst = fleet.hosts[m["source"]], fleet.hosts[m["destination"]]
        dom = src.conn.lookupByName(m["vm"])
        vm, xml = vm_facts(dom, src)
        found = check_pair(vm, xml, src, dst, copy_storage=p["copy_storage"], tls=p["tls"],
                           memory_headroom_mib=p["memory_headroom"], compression=p["compression"])
        m["findings"] = found
        if blockers(found):
            blocked.append({"vm": m["vm"], "source": m["source"], "destination": m["destination"],
                            "blockers": [f["message"] for f in blockers(found)],
                            "codes": [f["code"] for f in blockers(found)], "stays": stays(found)})
    return blocked


def _split_staying(moves: List[Dict[str, Any]], blocked: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Take out of ``moves`` the VMs that cannot leave their host now whatever the destination (STAYS_CODES:
    a paused VM QEMU would crash, say); returns them, each with its reason code and message."""
    staying = [{"vm": b["vm"], "host": b["source"], "reason": b["codes"][0], "msg": " / ".join(b["blockers"])}
               for b in blocked if b["stays"]]
    names = {s["vm"] for s in staying}
    moves[:] = [m for m in moves if m["vm"] not in names]
    blocked[:] = [b for b in blocked if not b["stays"]]
    return staying


def _lease(fleet: Any, host: str, job: str, check_mode: bool) -> Optional[HostLease]:
    """One job per host at a time, across controllers (none in check mode, which changes nothing)."""
    if check_mode:
        return None
    lease = HostLease(fleet.uri_of[host], host, job)
    lease.acquire()
    return lease


def _link_bps(p: Dict[str, Any], host: str) -> Optional[float]:
    value = (p.get("link_bandwidth") or {}).get(host)
    return float(value) * MIB if value else None


def _cap_bps(p: Dict[str, Any]) -> Optional[float]:
    """The per-move cap (``bandwidth``) in bytes/s, None when not given."""
    return p["bandwidth"] * MIB if p.get("bandwidth") else None


def _alone_bps(p: Dict[str, Any], host: str) -> Optional[float]:
    """What one move gets of ``host``'s link with the link to itself (``move_methods.bandwidths``); None when
    neither the link nor a per-move cap is given."""
    _shared, alone, known = bandwidths(_link_bps(p, host), _cap_bps(p), 1, 0.0)
    return alone if known else None


def _needs_working_set(alone: Dict[str, Optional[float]], downtime_ms: float) -> Callable[[Dict[str, Any]], bool]:
    """Whether a profiled VM (its dirty rate measured) needs its working set: plain pre-copy would not move it
    even with its link to itself (``alone``: vm -> bytes/s; None, a link not known, never: nothing is refused or
    escalated up front on an assumed link, so the extra seconds would buy nothing)."""
    def wanted(prof: Dict[str, Any]) -> bool:
        link = alone.get(prof["vm"])
        return bool(link) and not estimate_precopy(float(prof["in_use_bytes"]), float(link), float(prof["dirty_bps"]),
                                                   downtime_ms)["converges"]
    return wanted


class _Profiling:
    """The profiles of the VMs of ``moves`` (vm_profile), measured in a thread of their own from now on, so that
    the job checks its moves meanwhile instead of waiting ``profile_seconds`` for them afterwards. ``side``: the
    end of each move whose link the job shares (``_Methods``); a VM plain pre-copy would not move even with that
    link to itself (given, or the per-move cap) gets its working set measured too."""

    def __init__(self, fleet: Any, moves: List[Dict[str, Any]], p: Dict[str, Any], side: str) -> None:
        facts = {d["name"]: d for vms in fleet.vms.values() for d in vms}
        by_src: Dict[str, List[Dict[str, Any]]] = {}
        for m in moves:
            by_src.setdefault(m["source"], []).append(facts[m["vm"]])
        conns = {h: fleet.hosts[h].conn for h in by_src}
        wants_working_set = _needs_working_set({m["vm"]: _alone_bps(p, m[side]) for m in moves},
                                               p.get("max_downtime") or 300)
        self._out: Dict[str, Dict[str, Any]] = {}
        self._error: Optional[BaseException] = None

        def run() -> None:
            try:
                self._out = profile_vms(conns, by_src, p["profile_seconds"], p["copy_storage"] != "none",
                                        wants_working_set)
            except BaseException as exc:  # pylint: disable=broad-except
                self._error = exc
        self._thread = threading.Thread(target=run, name="fleetmaint-profiling", daemon=True)
        self._thread.start()

    @contextmanager
    def joined_on_error(self) -> Iterator[None]:
        """A refusal in the block waits for the profiling first: it uses the fleet's connections, which the
        refusal is about to close."""
        try:
            yield
        except BaseException:
            self._thread.join()
            raise

    def result(self) -> Dict[str, Dict[str, Any]]:
        """The profiles (profile_vms bounds its own time; it returns an entry for every VM)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out


class _Methods:
    """Each move's method, chosen from its VM's profile and the job host's link before anything moves.

    ``side``: the end of each move whose link the job shares - ``source`` when a host is emptied (its link
    sends every move), ``destination`` when VMs come home (its link takes every move). ``profiling``: the
    profiles being measured since before the moves were checked (else they are measured now).

    A host whose link was not given is taken at the link an earlier job measured there (kept on the host,
    ``maintenance.remembered_link``) when there is one, else at the assumed one, until this job's moves
    measure it. Either is an assumption: nothing is refused on it.

    A link's share counts connections (``move_scheduler``): with several connections a move, fewer moves share it,
    and each is chosen and predicted at its part of the link with that many moves on it."""

    def __init__(self, fleet: Any, moves: List[Dict[str, Any]], p: Dict[str, Any], lim: Dict[str, int],
                 side: str, profiling: Optional[_Profiling] = None) -> None:
        self.p, self.side = p, side
        self.allowed = {"xbzrle": p["allow_xbzrle"], "auto_converge": p["allow_auto_converge"],
                        "postcopy": p["allow_postcopy"], "suspend": p["allow_suspend"], "cold": p["allow_cold_move"]}
        self.downtime = p.get("max_downtime") or 300
        self.assumed = (p.get("bandwidth") or DEFAULT_ESTIMATE_BANDWIDTH_MIB_S) * MIB
        self.cap = _cap_bps(p)
        by_link: Dict[str, List[str]] = {}
        for m in moves:
            by_link.setdefault(m[side], []).append(m["vm"])
        self.remembered: Dict[str, Dict[str, Any]] = {}
        for h in by_link:
            note = None if _link_bps(p, h) else remembered_link(fleet.hosts[h].conn)
            if note:
                self.remembered[h] = note
        self.profiles = (profiling or _Profiling(fleet, moves, p, side)).result()
        limit = lim["per_source"] if side == "source" else lim["per_destination"]
        self.share = {h: link_share([self.profiles[v] for v in vms], _link_bps(p, h) or self._remembered_bps(h), limit,
                                    self.downtime, self.cap)
                      for h, vms in by_link.items()}
        for m in moves:
            prof = self.profiles[m["vm"]]
            m["profile"] = {"memory_mib": round(prof["memory_bytes"] / MIB),
                            "in_use_mib": round(prof["in_use_bytes"] / MIB, 1), "in_use_source": prof.get("in_use_source"),
                            "dirty_mib_s": round(prof["dirty_bps"] / MIB, 1) if prof["dirty_bps"] is not None else None,
                            "disk_mib": round(prof["disk_bytes"] / MIB, 1), "dirty": prof.get("dirty")}
            if prof.get("working_set"):  # measured (or tried) only for a VM plain pre-copy would not move
                m["profile"]["working_set_mib"] = (round(prof["working_set_bytes"] / MIB, 1)
                                                   if prof.get("working_set_bytes") else None)
                m["profile"]["working_set"] = prof["working_set"]
            m["method"] = self.choose(m, _link_bps(p, m[side]))
        moves[:] = order_moves(moves)

    def _remembered_bps(self, host: str) -> Optional[float]:
        note = self.remembered.get(host)
        return note["mib_s"] * MIB if note else None

    def choose(self, m: Dict[str, Any], link_bps: Optional[float],
               profile: Optional[Dict[str, Any]] = None, share: Optional[int] = None) -> Dict[str, Any]:
        moves = share or max(1, self.share.get(m[self.side], 1) // (parallel_connections(self.p) or 1))
        return choose_method(profile or self.profiles[m["vm"]], link_bps, moves,
                             self.allowed, self.downtime, self._remembered_bps(m[self.side]) or self.assumed, self.cap)

    def run(self, moves: List[Dict[str, Any]], uri_of: Dict[str, str], p: Dict[str, Any],
            progress: Optional[Callable[[Dict[str, Any]], None]], cancel: Optional[CancelFlag] = None,
            on_counts: Optional[Callable[[Dict[str, int]], None]] = None, job: str = "") -> Dict[str, Any]:
        """Run the moves, each also counted on its hosts (move slots), so that the limits hold across jobs."""
        with MoveSlots(uri_of, job, p["limits"]) as slots:
            run = run_moves(moves, uri_of, p, progress, share=self.share, side=self.side, predict=self.predict,
                            cancel=cancel, on_counts=on_counts, slots=slots, remembered=self.remembered)
        _remember_links(run["links"], uri_of, job)
        return run

    def predict(self, m: Dict[str, Any], link_bps: Optional[float], in_use_scale: Optional[float],
                share: Optional[int] = None) -> Dict[str, Any]:
        """A move's prediction again, from what the job's own moves measured: the link (when not given) and
        what the moves really sent against their profiles (``in_use_scale``); ``share``: the moves on its link
        (by default as many as were chosen for it)."""
        prof = dict(self.profiles[m["vm"]])
        if in_use_scale:
            prof["in_use_bytes"] = min(prof["memory_bytes"], prof["in_use_bytes"] * in_use_scale)
        return self.choose(m, link_bps or _link_bps(self.p, m[self.side]), prof, share)["predicted"]

    @staticmethod
    def refuse(moves: List[Dict[str, Any]], refusing: str, host: str) -> None:
        """A VM no allowed method converges for refuses the job, with the numbers, before anything moves."""
        refused = [m for m in moves if m["method"]["refused"]]
        if refused:
            raise FleetmaintError(f"{refusing}, nothing was moved: " + "; ".join(m["method"]["msg"] for m in refused),
                                  step="plan", reason="will_not_converge", host=host,
                                  refused=[{"vm": m["vm"], "source": m["source"], "profile": m["profile"],
                                            "predicted": m["method"]["predicted"]} for m in refused])


def _remember_links(links: Dict[str, Dict[str, Any]], uri_of: Dict[str, str], job: str) -> None:
    """Keep on each host the link this job's moves measured there (not one given), for the jobs after it; a host
    that cannot keep it is said in its entry (``kept`` false, ``not_kept``), and the job goes on."""
    for host, link in links.items():
        if link.get("given") or not link.get("samples"):
            continue
        try:
            remember_link(uri_of[host], link["measured_mib_s"], link["samples"], job, link.get("first_mib_s"))
            link["kept"] = True
        except FleetmaintError as exc:
            link.update(kept=False, not_kept=exc.msg)


def _open_job(fleet: Any, p: Dict[str, Any], job: str, check_mode: bool,
              stack: ExitStack) -> Tuple[str, CancelFlag, Optional[Callable[[Dict[str, int]], None]]]:
    """What every host job does first: resolve the host and hold its lease until the job ends (``stack``).

    Returns the host, the job's cancel flag (set by a cancel request on the host, or a signal to the controller:
    it is in ``cancel.RUNNING`` while the job runs) and where the job tells its lease its progress."""
    host = fleet.resolve([p["host"]])[0]
    lease = _lease(fleet, host, job, check_mode)
    if lease is None:
        return host, CancelFlag(), None
    stack.callback(lease.release)
    stack.enter_context(lease.cancel)
    return host, lease.cancel, lease.counts


def _cancelled(host: str, run: Dict[str, Any], result: Dict[str, Any], step: str) -> FleetmaintError:
    """The failure of a cancelled job: what moved, and what did not and where it is."""
    moved = [r["vm"] for r in run["vms"] if r["result"] in ("moved", "cold_moved", "already_there")]
    left = [f"{r['vm']} (on {r['source']}: {'aborted in pre-copy' if r['result'] == 'failed' else 'not started'})"
            for r in run["vms"] if r["result"] not in ("moved", "cold_moved", "already_there")]
    result["msg"] = (f"{host}: {run['stopped']}: moved {len(moved)} of {len(run['vms'])} VMs"
                     + (f" ({', '.join(moved)})" if moved else "") + (f"; not moved: {', '.join(left)}" if left else "")
                     + "; re-run the job to finish it")
    return FleetmaintError(result["msg"], step=step, reason="cancelled", host=host, result=result)


def _checked(fleet: Any, host: str, moves: List[Dict[str, Any]], p: Dict[str, Any], refusing: str,
             describe: Callable[[Dict[str, Any]], str], decided_later: tuple = ()) -> List[Dict[str, Any]]:
    """Check every move before anything moves: the VMs that cannot leave their host now are taken out and
    returned (they stay, and the result says why); any other blocked move refuses the whole job, but for one
    blocked only by codes in ``decided_later`` (the caller decides those, with every move counted together)."""
    blocked = _preflight(fleet, moves, p)
    staying = _split_staying(moves, blocked)
    blocked[:] = [b for b in blocked if not set(b["codes"]) <= set(decided_later)]
    if blocked:
        raise FleetmaintError(f"{refusing}, nothing was moved: " + "; ".join(
            f"{describe(b)}: {' / '.join(b['blockers'])}" for b in blocked),
            step="preflight", host=host, blocked=blocked)
    return staying


def evacuate_host(p: Dict[str, Any], check_mode: bool = False,
                  progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Empty one host: plan, check every move, mark maintenance, move, report."""

    lim = _limits(p)
    with ExitStack() as job:
        with Fleet(p["uris"], p["shared_pools"], tls=p["tls"]) as fleet:
            host, cancel, counts = _open_job(fleet, p, "evacuate", check_mode, job)
            inp = fleet.planner_input(p["memory_headroom"], p["memory_overcommit"], p["cpu_overcommit"],
                                      p["anti_affinity"], {k: int(v) for k, v in p["priority"].items()}, p["pinned"])
            # Hosts leaving at the same time (a rolling patch batch) take no VMs, as if in maintenance.
            excluded = set(fleet.resolve(p["exclude_destinations"]))
            for h in inp["hosts"]:
                h["maintenance"] = h["maintenance"] or h["name"] in excluded
            try:
                plan = plan_evacuation(inp["hosts"], inp["vms"], [host], limits=lim,
                                       bandwidth_mib_s=p["bandwidth"] or DEFAULT_ESTIMATE_BANDWIDTH_MIB_S, max_downtime_ms=p["max_downtime"])
            except PlanRefused as exc:
                raise FleetmaintError(f"refusing to evacuate {host}, nothing was moved: {exc}", step="plan",
                                      host=host, reason=exc.reason) from exc
            profiling = _Profiling(fleet, plan["moves"], p, "source")
            with profiling.joined_on_error():
                staying = _checked(fleet, host, plan["moves"], p, f"refusing to evacuate {host}",
                                   lambda b: f"{b['vm']} -> {b['destination']}")
            methods = _Methods(fleet, plan["moves"], p, lim, "source", profiling)
            methods.refuse(plan["moves"], f"refusing to evacuate {host}", host)
            result: Dict[str, Any] = {"host": host, "plan": plan, "skipped": [s for s in inp["skipped"] if s["host"] == host],
                                      "staying": staying,
                                      "changed": bool(plan["moves"]) or (p["mark_maintenance"] and not fleet.marks[host])}
            if check_mode:
                result["msg"] = (f"would move {len(plan['moves'])} VMs off {host}" + _staying_note(staying)
                                 + _older_note(plan["moves"]))
                return result
            if p["mark_maintenance"]:
                result["maintenance_marked"] = set_mark(fleet.hosts[host].conn, fleet.uri_of[host], p["reason"],
                                                        "fleetmaint.libvirt.host_evacuate")
            uri_of = dict(fleet.uri_of)
        if progress:
            older = [f"{m['vm']} -> {m['destination']}" for m in plan["moves"] if m.get("older_destination")]
            progress(dict({"kind": "plan", "vm": host, "moves": len(plan["moves"]), "makespan_est_s": plan["makespan_s"]},
                          **({"to_older_stack": older} if older else {})))
        run = methods.run(plan["moves"], uri_of, dict(p, limits=lim), progress, cancel, counts, f"evacuate {host}")
        result.update(run)
        if run["cancelled"]:
            result["changed"] = result["changed"] or run["totals"]["moved"] + run["totals"]["cold_moved"] > 0
            raise _cancelled(host, run, result, "evacuate")
        result["changed"] = result["changed"] or run["totals"]["moved"] + run["totals"]["cold_moved"] > 0
        # Pinned or unplaceable VMs stay too: the host is not empty, and saying so is the point.
        left = [r["vm"] for r in run["vms"] if r["result"] in ("failed", "not_started")] + \
            [u["vm"] for u in plan["unplaceable"]] + [s["vm"] for s in staying]
        cold = f" ({run['totals']['cold_moved']} more cold-moved)" if run["totals"]["cold_moved"] else ""
        result["msg"] = (f"{host}: moved {run['totals']['moved']} of {len(plan['moves'])} VMs live{cold} in "
                         f"{run['totals']['elapsed_s']} s"
                         + (f"; still on {host}: {', '.join(left)}" if left else "; the host is empty of running VMs")
                         + _staying_note(staying) + _older_note(plan["moves"]))
        if left:
            raise FleetmaintError(result["msg"] + (f" ({run['stopped']})" if run["stopped"] else ""), step="evacuate",
                                  host=host, result=result)
        return result


def _home_room(fleet: Any, host: str, moves: List[Dict[str, Any]], p: Dict[str, Any]) -> Dict[str, Any]:
    """Which moves home fit on the home host (the planner's capacity rule, every VM coming home counted together,
    and no more than the memory the host really has available); the others are taken out of ``moves`` and
    returned as staying entries with reason ``no_capacity`` and the numbers."""
    inp = fleet.planner_input(p["memory_headroom"], p["memory_overcommit"], p["cpu_overcommit"])
    home = next(h for h in inp["hosts"] if h["name"] == host)
    by_key = {(v["name"], v["host"]): v for v in inp["vms"]}
    coming = [by_key[(m["vm"], m["source"])] for m in moves]
    sel = select_homecoming(home, [v for v in inp["vms"] if v["host"] == host], coming,
                            _available_mib(fleet.hosts[host].host))
    out = {(n["vm"], n["host"]) for n in sel["no_room"]}
    moves[:] = [m for m in moves if (m["vm"], m["source"]) not in out]
    return {"room": dict(sel["room"], host=host),
            "no_room": [dict(n, reason="no_capacity") for n in sel["no_room"]]}


def _available_mib(facts: Dict[str, Any]) -> Optional[float]:
    """The memory the move rules compare a VM with (migration_rules: available, else free)."""
    return facts.get("memory_available_mib", facts.get("memory_free_mib"))


def _no_room_note(host: str, no_room: List[Dict[str, Any]]) -> str:
    if not no_room:
        return ""
    return (f"{len(no_room)} VMs stay where they are, home unchanged (no_capacity): "
            + "; ".join(f"{n['vm']} on {n['host']}, {n['msg']}" for n in no_room))


def restore_host(p: Dict[str, Any], check_mode: bool = False,
                 progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Bring back every VM whose recorded home is this host, then clear its maintenance mark."""

    lim = _limits(p)
    with ExitStack() as job:
        with Fleet(p["uris"], p["shared_pools"], tls=p["tls"]) as fleet:
            host, cancel, counts = _open_job(fleet, p, "restore", check_mode, job)
            moves = [{"vm": d["name"], "source": other, "destination": host}
                     for other in sorted(fleet.vms) if other != host
                     for d in fleet.vms[other] if d["home_host"] == host and d["state"] in ("running", "paused")]
            profiling = _Profiling(fleet, moves, p, "destination")
            with profiling.joined_on_error():
                kept = _checked(fleet, host, moves, p, f"refusing to restore {host}",
                                lambda b: f"{b['vm']} from {b['source']}", decided_later=("insufficient_memory",))
                # Before anything moves: what fits on the home host comes home, the rest stays where it is.
                room = _home_room(fleet, host, moves, p)
            methods = _Methods(fleet, moves, p, lim, "destination", profiling)
            methods.refuse(moves, f"refusing to restore {host}", host)
            marked = fleet.marks[host] is not None
            home = [dict({k: m[k] for k in ("vm", "source", "destination", "profile")}, method=m["method"]["method"],
                         method_why=m["method"]["why"], exclusive=m["method"]["exclusive"],
                         predicted=m["method"]["predicted"]) for m in moves]
            result: Dict[str, Any] = {"host": host, "moves": home,
                                      "staying": kept + room["no_room"], "capacity": room["room"],
                                      "changed": bool(moves) or (marked and p["clear_maintenance"] and not room["no_room"])}
            no_room = _no_room_note(host, room["no_room"])
            if check_mode:
                result["msg"] = f"would bring {len(moves)} VMs home to {host}" + _staying_note(kept)
                if room["no_room"]:
                    # The run would fail the same way, after bringing home what fits: say so now.
                    result.update(vms=[], msg=f"{result['msg']}; {no_room}")
                    raise FleetmaintError(result["msg"], step="plan", reason="no_capacity", host=host, result=result)
                return result
            uri_of = dict(fleet.uri_of)
        run = methods.run(moves, uri_of, dict(p, limits=lim), progress, cancel, counts, f"restore {host}")
        result.update(run)
        if run["cancelled"]:
            result["changed"] = run["totals"]["moved"] + run["totals"]["cold_moved"] > 0
            raise _cancelled(host, run, result, "restore")
        left = [r["vm"] for r in run["vms"] if r["result"] in ("failed", "not_started")]
        if left or room["no_room"]:
            moved = run["totals"]["moved"] + run["totals"]["cold_moved"]
            result["changed"] = moved > 0
            result["msg"] = (f"{host}: brought {moved} of {len(moves)} VMs home"
                             + (f"; {len(left)} VMs could not come home: {', '.join(left)}" if left else "")
                             + (f"; {no_room}" if room["no_room"] else "") + "; maintenance mark kept")
            # Only no room: that is the reason. Moves that failed too: each VM's reason is in its result.
            raise FleetmaintError(result["msg"], step="restore", host=host, result=result,
                                  reason=None if left else "no_capacity")
        if p["clear_maintenance"] and marked:
            with Fleet([uri_of[host]], p["shared_pools"]) as one:
                result["maintenance_cleared"] = clear_mark(one.hosts[host].conn, uri_of[host])
        result["msg"] = (f"{host}: brought {run['totals']['moved']} VMs home in {run['totals']['elapsed_s']} s"
                         + _staying_note(kept, away=True))
        return result


def plan_host_evacuation(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:  # pylint: disable=unused-argument
    """plan_evacuation's engine: the plan host_evacuate would follow, for one or more hosts (changes nothing)."""
    with Fleet(p["uris"], p["shared_pools"]) as fleet:
        evac = fleet.resolve(p["evacuate"])
        inp = fleet.planner_input(p["memory_headroom"], p["memory_overcommit"], p["cpu_overcommit"],
                                  p["anti_affinity"], {k: int(v) for k, v in p["priority"].items()}, p["pinned"])
        marks = {h: m for h, m in fleet.marks.items() if m}
    try:
        plan = plan_evacuation(inp["hosts"], inp["vms"], evac, limits={k: int(v) for k, v in p["limits"].items()},
                               bandwidth_mib_s=p["bandwidth"] or DEFAULT_ESTIMATE_BANDWIDTH_MIB_S,
                               max_downtime_ms=p["max_downtime"])
    except PlanRefused as exc:
        raise FleetmaintError(f"refusing to plan the evacuation of {', '.join(p['evacuate'])}: {exc}", step="plan",
                              reason=exc.reason, result={"changed": False, "refused": True}) from exc
    except ValueError as exc:
        raise FleetmaintError(str(exc), step="validate options", result={"changed": False}) from exc
    return dict(changed=False, skipped=[s for s in inp["skipped"] if s["host"] in evac], maintenance=marks, **plan)
