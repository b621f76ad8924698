# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Know a VM before moving it: what a job profiles of every VM it is about to move, all at once, bounded.

- the dirty rate, measured by libvirt (``virDomainStartDirtyRateCalc``, page sampling: QEMU hashes a sample
  of guest pages twice, ``seconds`` apart; it works under TCG and costs the guest nothing measurable);
- the memory in use: the QEMU process's resident memory, at most the guest's memory. Pages a guest never
  touched are not resident, and pre-copy sends them as zero pages (a few bytes each), so this is what the
  move really sends; it is an upper bound (QEMU's own memory is resident too). A VM that arrived by
  migration is known better: libvirt keeps that migration's statistics on the host it came to (until its
  libvirtd restarts), and the non-zero memory it sent, when less, is taken instead (read with
  KEEP_COMPLETED, so that nothing else loses them);
- the disk bytes to copy: the allocation of each local, writable disk, when storage is copied;
- for a VM the job says needs it (one plain pre-copy would not move at its link: its rate is near or above the
  link), its dirty working set: a pass after the first re-sends what the guest dirtied during the one before,
  and a guest rewriting one region never dirties more than that region however long the pass. QEMU's sampling
  counts the pages changed between its two looks, so a second, longer window shows it: over ``t`` seconds a
  guest dirtying ``r`` bytes/s over a region of ``W`` bytes changes ``min(r t, W)``. The window is long enough
  for the guest to write its memory in use once at its 1-s rate (2-8 s); a rate that falls over it is a
  working set of what the window saw (its rate times its length), a rate that holds leaves it unknown (taken as
  the memory in use, as before).

Every source is profiled in a thread of its own and every VM of a source at once, so a job waits about
``seconds`` whatever its size; a VM whose measurement fails or does not finish has ``dirty_bps`` None and
the reason, and the job goes on without it (``move_methods`` then chooses pre-copy and watches progress).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import JOB_OPERATION_MIGRATION_IN
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import is_local_disk
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import MIB


def measure_dirty_rates(conn: Any, doms: List[Any], seconds: int = 1) -> Dict[str, Dict[str, Any]]:
    """libvirt's dirty-rate calculation (page sampling) for several running domains at once."""
    out: Dict[str, Dict[str, Any]] = {}
    started = []
    mode = getattr(libvirt, "VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING", 0)
    for dom in doms:
        try:
            dom.startDirtyRateCalc(seconds, mode)
            started.append(dom)
        except libvirt.libvirtError as exc:
            out[dom.name()] = {"measured": False, "reason": libvirt_message(exc)}
    deadline = time.monotonic() + seconds + 10
    pending = list(started)
    time.sleep(seconds)
    while pending and time.monotonic() < deadline:
        for dom in list(pending):
            try:
                stats = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)[0][1]
            except libvirt.libvirtError as exc:
                out[dom.name()] = {"measured": False, "reason": libvirt_message(exc)}
                pending.remove(dom)
                continue
            if stats.get("dirtyrate.calc_status") == 2:  # VIR_DOMAIN_DIRTYRATE_MEASURED
                mbps = stats.get("dirtyrate.megabytes_per_second", 0)
                out[dom.name()] = {"measured": True, "mib_per_s": mbps, "bytes_per_s": mbps * MIB,
                                   "seconds": seconds, "mode": "page-sampling"}
                pending.remove(dom)
        if pending:
            time.sleep(0.2)
    for dom in pending:
        out[dom.name()] = {"measured": False, "reason": "the calculation did not finish in time"}
    return out


LAST_MIGRATION = "its last incoming migration's non-zero memory"
# The working-set window: at least this, and at most this (a VM whose memory in use takes longer to write at its
# rate gets no working set: it is taken as its memory in use).
WORKING_SET_MIN_S = 2
WORKING_SET_MAX_S = 8
# Over the longer window the rate must fall below this share of the 1-s rate to show a working set (QEMU samples
# 512 pages a GiB: a rate that holds within sampling noise says the window did not see the end of the region).
WORKING_SET_FALL = 0.8


def working_set_window(prof: Dict[str, Any]) -> int:
    """The seconds of the working-set window: the time to write its memory in use once at its 1-s rate."""
    rate = float(prof.get("dirty_bps") or 0)
    if rate <= 0:
        return WORKING_SET_MIN_S
    need = -(-float(prof.get("in_use_bytes") or prof["memory_bytes"]) // rate)
    return int(max(WORKING_SET_MIN_S, min(WORKING_SET_MAX_S, need)))


def working_set(prof: Dict[str, Any], rate: Dict[str, Any]) -> Dict[str, Any]:
    """From a profile (its 1-s rate) and the longer window's measurement: {working_set_bytes, working_set}."""
    if not rate.get("measured"):
        return {"working_set_bytes": None, "working_set": dict(rate, measured=False)}
    secs = int(rate["seconds"])
    longer = float(rate["bytes_per_s"])
    seen = longer * secs
    info = {"seconds": secs, "mib_per_s": rate["mib_per_s"]}
    if seen <= 0:
        return {"working_set_bytes": None,
                "working_set": dict(info, measured=False,
                                    reason=f"it wrote nothing over {secs} s (its 1-s rate was a burst): taken as its "
                                           "memory in use")}
    if longer < WORKING_SET_FALL * float(prof["dirty_bps"]):
        size = min(float(prof["in_use_bytes"]), seen)
        return {"working_set_bytes": size,
                "working_set": dict(info, measured=True, mib=round(size / MIB, 1),
                                    reason=f"its rate fell to {rate['mib_per_s']} MiB/s over {secs} s: it rewrites "
                                           f"about {size / MIB:.0f} MiB")}
    return {"working_set_bytes": None,
            "working_set": dict(info, measured=False,
                                reason=f"its rate held over {secs} s: it rewrites at least {seen / MIB:.0f} MiB "
                                       "(taken as its memory in use)")}


def _last_migration_sent(dom: Any, memory_bytes: int) -> Optional[int]:
    """The non-zero memory (bytes) the VM's last incoming migration sent, or None: it did not arrive by
    migration (or its host's libvirtd restarted since), libvirt does not say, or the guest has more memory now."""
    try:
        st = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
    except libvirt.libvirtError:
        return None
    if st.get("operation") != JOB_OPERATION_MIGRATION_IN or not st.get("memory_normal_bytes"):
        return None
    if int(st.get("memory_total") or 0) < memory_bytes:
        return None
    return int(st["memory_normal_bytes"])


def _memory_in_use(dom: Any, memory_bytes: int) -> Dict[str, Any]:
    try:
        rss = dom.memoryStats().get("rss")
    except libvirt.libvirtError:
        rss = None
    if not rss:
        return {"in_use_bytes": memory_bytes, "in_use_source": "configured (no resident size)"}
    return {"in_use_bytes": min(memory_bytes, int(rss) * 1024), "in_use_source": "QEMU resident memory"}


def _disk_bytes(dom: Any, disks: List[Dict[str, Any]]) -> int:
    total = 0
    for d in disks:
        if not is_local_disk(d) or d.get("readonly") or not d.get("path"):
            continue
        try:
            total += dom.blockInfo(d["path"])[1]  # allocation: what a copy sends
        except libvirt.libvirtError:
            total += int(d.get("capacity") or 0)
    return total


def profile_vms(conns: Dict[str, Any], vms: Dict[str, List[Dict[str, Any]]], seconds: int,
                copy_storage: bool,
                wants_working_set: Optional[Callable[[Dict[str, Any]], bool]] = None) -> Dict[str, Dict[str, Any]]:
    """Profile the VMs ``vms[source]`` (facts with name, state, memory_mib, disks) on each source's connection.

    Returns vm name -> {vm, host, memory_bytes, in_use_bytes, in_use_source, dirty_bps, dirty, disk_bytes,
    working_set_bytes, working_set}. ``seconds`` 0 measures no dirty rate (dirty_bps None).
    ``wants_working_set(profile)``: whether a VM whose dirty rate was measured needs its working set (then
    measured in a second window, the VMs of a source at once; the others have ``working_set_bytes`` None)."""
    out: Dict[str, Dict[str, Any]] = {}
    lock = threading.Lock()

    def one_source(host: str) -> None:
        conn = conns[host]
        doms, profiles = [], {}
        for vm in vms[host]:
            memory = int(vm["memory_mib"]) * MIB
            prof: Dict[str, Any] = {"vm": vm["name"], "host": host, "memory_bytes": memory, "dirty_bps": None,
                                    "disk_bytes": 0, "in_use_bytes": memory, "in_use_source": "configured",
                                    "working_set_bytes": None}
            try:
                dom = conn.lookupByName(vm["name"])
                prof.update(_memory_in_use(dom, memory))
                sent = _last_migration_sent(dom, memory)
                if sent is not None and sent < prof["in_use_bytes"]:
                    prof.update(in_use_bytes=sent, in_use_source=LAST_MIGRATION)
                if copy_storage:
                    prof["disk_bytes"] = _disk_bytes(dom, vm.get("disks") or [])
                if vm.get("state") == "running" and seconds > 0:
                    doms.append(dom)
                elif vm.get("state") != "running":
                    prof.update(dirty_bps=0.0, dirty={"measured": False, "reason": f"{vm.get('state')}: dirties nothing"})
                else:
                    prof["dirty"] = {"measured": False, "reason": "not measured (profile_seconds 0)"}
            except libvirt.libvirtError as exc:
                prof["dirty"] = {"measured": False, "reason": libvirt_message(exc)}
            profiles[vm["name"]] = prof
        if doms:
            try:
                rates = measure_dirty_rates(conn, doms, seconds)
            except libvirt.libvirtError as exc:
                rates = {d.name(): {"measured": False, "reason": libvirt_message(exc)} for d in doms}
            for name, rate in rates.items():
                profiles[name]["dirty"] = rate
                if rate.get("measured"):
                    profiles[name]["dirty_bps"] = float(rate["bytes_per_s"])
            hot = [d for d in doms if profiles[d.name()].get("dirty_bps") and wants_working_set
                   and wants_working_set(profiles[d.name()])]
            if hot:
                window = max(working_set_window(profiles[d.name()]) for d in hot)
                try:
                    longer = measure_dirty_rates(conn, hot, window)
                except libvirt.libvirtError as exc:
                    longer = {d.name(): {"measured": False, "reason": libvirt_message(exc)} for d in hot}
                for name, rate in longer.items():
                    profiles[name].update(working_set(profiles[name], rate))
        with lock:
            out.update(profiles)

    threads = [threading.Thread(target=one_source, args=(h,), name=f"fleetmaint-profile-{h}", daemon=True)
               for h in sorted(vms) if vms[h]]
    for th in threads:
        th.start()
    deadline = time.monotonic() + seconds + 20 + (WORKING_SET_MAX_S + 10 if wants_working_set else 0)
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    for host in vms:
        for vm in vms[host]:
            if vm["name"] not in out:  # its source did not answer in time: the job goes on without it
                memory = int(vm["memory_mib"]) * MIB
                out[vm["name"]] = {"vm": vm["name"], "host": host, "memory_bytes": memory, "in_use_bytes": memory,
                                   "in_use_source": "configured", "dirty_bps": None, "disk_bytes": 0,
                                   "working_set_bytes": None,
                                   "dirty": {"measured": False, "reason": "profiling did not finish in time"}}
    return out


def measure_load(conns: Dict[str, Any], vms: Dict[str, List[Dict[str, Any]]], seconds: float) -> Dict[str, Dict[str, Any]]:
    """What each running VM really takes, all hosts at once: memory in use (QEMU's resident memory, capped at the
    guest's) and CPU (cores used, from libvirt's CPU time over ``seconds``: the lower of its two halves, so that what
    is counted is the VM's sustained use, not a burst - a lab guest resting after a move used about 0.12 core for
    one second within 5 s of it, which a rebalance right after the one that moved it took for load and chased).
    vm name -> {in_use_mib, in_use_source, cpu_cores}."""
    out: Dict[str, Dict[str, Any]] = {}
    lock = threading.Lock()

    def one_host(host: str) -> None:
        got: Dict[str, Dict[str, Any]] = {}
        doms: Dict[str, Any] = {}
        marks: Dict[str, List[Tuple[int, float]]] = {}  # vm -> (CPU time ns, when) at the window's start, middle, end
        for vm in vms[host]:
            try:
                dom = conns[host].lookupByName(vm["name"])
                mem = _memory_in_use(dom, int(vm["memory_mib"]) * MIB)
                got[vm["name"]] = {"in_use_mib": round(mem["in_use_bytes"] / MIB, 1), "in_use_source": mem["in_use_source"],
                                   "cpu_cores": None}
                marks[vm["name"]] = [(dom.info()[4], time.monotonic())]
                doms[vm["name"]] = dom
            except libvirt.libvirtError:
                got[vm["name"]] = {"in_use_mib": float(vm["memory_mib"]), "in_use_source": "configured (not readable)",
                                   "cpu_cores": None}
        if seconds > 0 and doms:
            for _half in range(2):
                time.sleep(seconds / 2.0)
                for name, dom in doms.items():
                    try:
                        marks[name].append((dom.info()[4], time.monotonic()))
                    except libvirt.libvirtError:
                        pass
            for name, seen in marks.items():
                if len(seen) == 3:
                    got[name]["cpu_cores"] = round(min((c1 - c0) / 1e9 / max(0.001, t1 - t0)
                                                       for (c0, t0), (c1, t1) in zip(seen, seen[1:])), 3)
        with lock:
            out.update(got)

    threads = [threading.Thread(target=one_host, args=(h,), name=f"load-{h}", daemon=True) for h in vms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return out
