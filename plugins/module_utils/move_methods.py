# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How each VM of a job moves, chosen from measurements before anything moves. Pure.

Input per VM: its profile (``vm_profile``: memory in use, dirty rate measured by libvirt, disk bytes to
copy, and for a VM near or above its link its working set) and the bandwidth its source's link gives it
(``link_bandwidth`` of the host, divided among the moves that share the link). With the pre-copy model
(``precopy_estimate``) the choice, mildest first, within what the operator allows:

1. plain pre-copy, when it converges at the VM's share of the link;
2. pre-copy with the link to itself (``exclusive``: no other move from that source runs beside it), when it
   converges only so;
3. pre-copy with XBZRLE (``allow_xbzrle``): pages the guest writes again are sent as deltas against a cache of
   what was sent (sized to the VM's memory in use), so a pass takes a fraction of the link when each write
   changes little of its page; the guest runs untouched. Whether its writes are such cannot be measured before
   moving: the prediction is the first pass only (``converges`` None) and the move's passes show it - they stop
   shrinking and the move escalates at once when XBZRLE does not pay;
4. auto-converge from the start (``allow_auto_converge``): vCPU throttling lowers the dirty rate until the
   rest fits in the allowed downtime (predicted pass by pass as QEMU raises its throttle:
   ``precopy_estimate.estimate_auto_converge``);
5. post-copy after the first pass (``allow_postcopy``): the guest switches to the destination and fetches
   what is left on demand; converges whatever the dirty rate;
6. pause the guest after the first pass (``allow_suspend``): converges, with a pause longer than
   ``max_downtime`` the operator accepted.

None allowed: the VM is refused before anything moves, with the numbers (unless a cold move is allowed, the
operator's last resort: then pre-copy is tried until it shows it will not converge). When the link is not known (no
``link_bandwidth`` for the host, no ``bandwidth`` cap) nothing is refused on an assumption: pre-copy is
chosen and the move escalates on its measured progress (``migration_job``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import (
    MIB, estimate_auto_converge, estimate_precopy,
)

# Moves that transfer over one link at once, at most (``limits`` may say fewer): while one of them sets up or
# finishes (libvirt's and QEMU's work on both ends, a second or two each with the link idle) the other keeps the
# link busy; more would only make each move slower, re-sending more of what its guest dirties meanwhile.
LINK_SHARE = 2
# The throttle auto-converge is asked for (percent; move_scheduler's auto-converge step sets them, the model
# predicts with them): initial 50 %, then +20 % a step (QEMU's cap 99 %).
AUTO_CONVERGE_INITIAL_PCT, AUTO_CONVERGE_INCREMENT_PCT = 50, 20
# A post-copy switch-over sends the device state and the pages the guest touches first: a short pause.
POSTCOPY_PAUSE_MS = 100.0
# QEMU's own XBZRLE cache (xbzrle-cache-size); QEMU takes only powers of two.
XBZRLE_MIN_CACHE = 64 * MIB


def xbzrle_cache_bytes(profile: Dict[str, Any]) -> int:
    """The XBZRLE cache for one VM: the smallest power of two that holds what it rewrites - twice its working set
    when measured (QEMU's page sampling finds a working set within about half of the real one: the lab's guest
    rewriting 76 MiB was found at 60 MiB, and a 64 MiB cache missed more pages than it found), at most its memory
    in use, else its memory in use (QEMU's cache is direct-mapped by page address: pages the guest writes again
    are found only while they are still cached, so a cache smaller than what the guest rewrites misses most of
    them; the cache is the source QEMU's memory, on a host being emptied) -, at least QEMU's 64 MiB and at most the
    largest power of two within the VM's memory."""
    memory = int(profile["memory_bytes"])
    in_use = int(profile.get("in_use_bytes") or memory)
    ws = profile.get("working_set_bytes")
    need = min(2 * int(ws), in_use) if ws else in_use
    top = 1 << (max(memory, 1).bit_length() - 1)  # the largest power of two <= memory
    size = 1 << max(need - 1, 1).bit_length()  # the smallest power of two >= need
    return max(min(size, top), min(XBZRLE_MIN_CACHE, top))


def _mib(bps: float) -> str:
    return f"{bps / MIB:.0f} MiB/s"


def _predicted(est: Dict[str, Any], bandwidth_bps: float, extra_s: float = 0.0) -> Dict[str, Any]:
    total = est["total_time_s"]
    return {"time_s": round(total + extra_s, 2) if total is not None else None, "downtime_ms": est["downtime_ms"],
            "converges": est["converges"], "bandwidth_mib_s": round(bandwidth_bps / MIB, 1),
            "iterations": est["iterations"]}


def bandwidths(link_bps: Optional[float], cap_bps: Optional[float], share: int,
               assumed_bps: float) -> Tuple[float, float, bool]:
    """(what one move gets when ``share`` moves use the link, what it gets alone, known?) in bytes/s.
    ``cap_bps`` is the per-move cap (``bandwidth``); a link not known is ``assumed_bps``."""
    link = link_bps or (None if cap_bps else assumed_bps)
    if link is None:  # only a per-move cap: every move gets it, however many run
        return float(cap_bps), float(cap_bps), True  # type: ignore[arg-type]
    alone = min(link, cap_bps) if cap_bps else link
    shared = min(link / max(1, share), cap_bps) if cap_bps else link / max(1, share)
    return shared, alone, bool(link_bps or cap_bps)


def choose_method(profile: Dict[str, Any], link_bps: Optional[float], share: int, allowed: Dict[str, bool],
                  max_downtime_ms: float, assumed_bps: float, cap_bps: Optional[float] = None) -> Dict[str, Any]:
    """The method of one move: {method, exclusive, why, predicted, refused, msg}.

    profile: vm, memory_bytes, in_use_bytes, dirty_bps (None when not measured), disk_bytes, working_set_bytes
    (None when not measured: what a pass after the first re-sends is then bounded by the memory in use only).
    link_bps: the source link in bytes/s, None when unknown; cap_bps: the per-move cap (``bandwidth``). With
    neither, ``assumed_bps`` is used for the prediction and nothing is refused on it. share: moves that share
    the link when this one runs. allowed: xbzrle, auto_converge, postcopy, suspend, cold. With xbzrle allowed,
    ``xbzrle_cache_bytes`` is the VM's XBZRLE cache, whichever method is chosen (escalation may reach XBZRLE).
    """
    vm = profile["vm"]
    shared, link, known = bandwidths(link_bps, cap_bps, share, assumed_bps)
    data = float(profile.get("in_use_bytes") or profile["memory_bytes"])
    disk_s = float(profile.get("disk_bytes") or 0) / link  # storage is copied before memory, at the same link
    dirty = profile.get("dirty_bps")
    out: Dict[str, Any] = {"vm": vm, "exclusive": False, "refused": False, "link_known": known,
                           "dirty_mib_s": round(dirty / MIB, 1) if dirty is not None else None}
    if allowed.get("xbzrle"):  # whatever the method: a move that escalates to XBZRLE uses it too
        out["xbzrle_cache_bytes"] = xbzrle_cache_bytes(profile)
    if dirty is None:
        est = estimate_precopy(data, shared, 0.0, max_downtime_ms)
        return dict(out, method="precopy", predicted=dict(_predicted(est, shared, disk_s), converges=None),
                    why="dirty rate not measured: pre-copy, escalating on measured progress")
    ws = profile.get("working_set_bytes")
    est = estimate_precopy(data, shared, dirty, max_downtime_ms, ws)
    if est["converges"]:
        return dict(out, method="precopy", predicted=_predicted(est, shared, disk_s),
                    why=f"dirties {_mib(dirty)}, converges at {_mib(shared)}")
    if shared < link:
        alone = estimate_precopy(data, link, dirty, max_downtime_ms, ws)
        if alone["converges"]:
            return dict(out, method="precopy", exclusive=True, predicted=_predicted(alone, link, disk_s),
                        why=f"dirties {_mib(dirty)}: converges only with the link to itself ({_mib(link)})")
    first_pass_s = data / link
    # What it dirties, with the region it rewrites when that was measured (for the refusal and each method's why).
    rate = _mib(dirty) + (f" over about {ws / MIB:.0f} MiB" if ws else "")
    if allowed.get("xbzrle"):
        cache = out["xbzrle_cache_bytes"]
        pred = {"time_s": round(disk_s + first_pass_s, 2), "downtime_ms": None, "converges": None,
                "bandwidth_mib_s": round(link / MIB, 1), "iterations": 1}
        return dict(out, method="xbzrle", exclusive=shared < link, predicted=pred,
                    why=f"dirties {rate}, the link gives it {_mib(link)}: plain pre-copy would not converge; "
                        f"pre-copy with XBZRLE (pages written again sent as deltas, {cache // MIB} MiB cache): it "
                        "converges if each write changes little of its page, which its passes show (predicted: the "
                        "first pass)")
    if allowed.get("auto_converge"):
        est_t = estimate_auto_converge(data, link, dirty, max_downtime_ms, ws, AUTO_CONVERGE_INITIAL_PCT / 100,
                                       AUTO_CONVERGE_INCREMENT_PCT / 100)
        if est_t["converges"]:
            pred = _predicted(est_t, link, disk_s)
            return dict(out, method="auto_converge", exclusive=shared < link, predicted=pred, throttle=est_t["throttle"],
                        why=f"dirties {rate}, the link gives it {_mib(link)}: pre-copy would not "
                            f"converge; auto-converge from the start (its throttle predicted to reach "
                            f"{est_t['throttle']:.0%})")
    if allowed.get("postcopy"):
        pred = {"time_s": round(disk_s + first_pass_s * 1.1, 2), "downtime_ms": POSTCOPY_PAUSE_MS, "converges": True,
                "bandwidth_mib_s": round(link / MIB, 1), "iterations": 1}
        return dict(out, method="postcopy", exclusive=shared < link, predicted=pred,
                    why=f"dirties {rate}, the link gives it {_mib(link)}: pre-copy would not converge; "
                        "post-copy after the first pass")
    if allowed.get("suspend"):
        left = min(data, ws or data, dirty * first_pass_s)
        pred = {"time_s": round(disk_s + first_pass_s + left / link, 2), "downtime_ms": round(left / link * 1000, 1),
                "converges": True, "bandwidth_mib_s": round(link / MIB, 1), "iterations": 1}
        return dict(out, method="suspend", exclusive=shared < link, predicted=pred,
                    why=f"dirties {rate}, the link gives it {_mib(link)}: pre-copy would not converge; "
                        "paused after the first pass (allow_suspend)")
    msg = (f"{vm} dirties {rate}, the link gives it {_mib(link)}: will not converge within "
           f"{max_downtime_ms:g} ms; allow auto-converge or post-copy (or XBZRLE, if its writes change little of "
           "each page)")
    if not known:
        return dict(out, method="precopy", predicted=_predicted(est, shared, disk_s),
                    why=f"would not converge at an assumed {_mib(link)} (link_bandwidth not given): pre-copy, "
                        "escalating on measured progress")
    if allowed.get("cold"):
        return dict(out, method="precopy", predicted=_predicted(est, shared, disk_s),
                    why=f"dirties {rate}, the link gives it {_mib(link)}: will not converge live; pre-copy "
                        "until that shows, then the cold move (allow_cold_move)")
    return dict(out, method=None, refused=True, msg=msg, predicted=_predicted(est, shared, disk_s), why=msg)


def link_share(profiles: List[Dict[str, Any]], link_bps: Optional[float], limit: int, max_downtime_ms: float,
               cap_bps: Optional[float] = None) -> int:
    """How many moves from one source share its link: the most, up to ``limit`` and ``LINK_SHARE``, at which
    every measured VM that converges on the whole link still converges at its share (those that do not get the
    link alone)."""
    limit = max(1, min(limit, LINK_SHARE))
    if not link_bps or not profiles:
        return limit
    best = 1
    for k in range(1, min(limit, len(profiles)) + 1):
        fine = True
        shared, alone_bps, _known = bandwidths(link_bps, cap_bps, k, link_bps)
        for prof in profiles:
            dirty = prof.get("dirty_bps")
            if dirty is None:
                continue
            data = float(prof.get("in_use_bytes") or prof["memory_bytes"])
            ws = prof.get("working_set_bytes")
            alone = estimate_precopy(data, alone_bps, dirty, max_downtime_ms, ws)["converges"]
            if alone and not estimate_precopy(data, shared, dirty, max_downtime_ms, ws)["converges"]:
                fine = False
                break
        if fine:
            best = k
    return best


def order_moves(moves: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Dispatch order: VMs that need their link alone first (their source's link is otherwise idle then),
    then longest predicted first (the job ends earliest), by name for ties."""
    def key(m: Dict[str, Any]) -> Any:
        pred = (m.get("method") or {}).get("predicted") or {}
        return (-m.get("priority", 0), not (m.get("method") or {}).get("exclusive"), -(pred.get("time_s") or 0), m["vm"])
    return sorted(moves, key=key)
