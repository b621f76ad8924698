# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gather what the move rules need from live hosts, and apply them: the one place that
checks a (VM, destination) pair. live_migrate (before moving, and in check mode) and
migration_check (``check_moves``, its engine) both call :func:`check_pair`, so a check and a
move never disagree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cpu_compat import cpu_runnable, merge_cpu_verdicts
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import HostContext, domain_facts
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt, open_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import parse_domain
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import (
    BLOCKER, check_move, finding, machine_offered,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import DEFAULT_ESTIMATE_BANDWIDTH_MIB_S
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import estimate_precopy
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.vm_profile import measure_dirty_rates


def vm_facts(dom: Any, ctx: HostContext) -> Tuple[Dict[str, Any], str]:
    """A domain's facts as the rules want them, plus its XML."""
    xml = dom.XMLDesc(0)
    vm = domain_facts(dom, ctx.pools, ctx.shared_pools)
    parsed = parse_domain(xml)
    vm["arch"], vm["emulator"] = parsed["arch"], parsed["emulator"]
    return vm, xml


def libvirt_cpu_comparison(conn: Any, vm_xml: str, vm: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """libvirt's own verdict: can the destination hypervisor run this guest CPU? (custom mode only)"""
    cpu = ET.fromstring(vm_xml).find("cpu")
    if cpu is None or cpu.get("mode", "custom") != "custom" or cpu.find("model") is None:
        return None
    try:
        res = conn.compareHypervisorCPU(None, vm.get("arch"), vm.get("machine"), vm.get("virt_type"),
                                        ET.tostring(cpu, encoding="unicode"), 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
            return None
        return {"compatible": False, "reason": f"libvirt: {libvirt_message(exc)}", "missing_features": []}
    if res == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        return {"compatible": False, "reason": "libvirt: the destination cannot provide this CPU",
                "missing_features": []}
    return {"compatible": True, "reason": "libvirt: compatible", "missing_features": []}


def check_pair(vm: Dict[str, Any], vm_xml: str, src: HostContext, dst: HostContext, copy_storage: str = "none",
               tls: bool = False, memory_headroom_mib: int = 256, compression: str = "none",
               live: bool = True, postcopy_preempt: bool = False) -> List[Dict[str, Any]]:
    """All findings for moving ``vm`` (running on ``src``) to ``dst``.

    A compression method is checked on both ends (each probed once, see HostContext.compression); a host that
    could not be probed (no running domain) is not known and not checked. ``postcopy_preempt``: the move requires
    it, and an end without it is a ``postcopy_preempt_unsupported`` blocker."""
    caps = dst.domain_capabilities(vm)
    # A machine type the destination does not offer is machine_type_unsupported; libvirt's CPU comparison for it
    # fails on the machine type too, which is no CPU verdict.
    cpu = merge_cpu_verdicts(cpu_runnable(vm["cpu"], caps) if caps else None,
                             libvirt_cpu_comparison(dst.conn, vm_xml, vm)
                             if machine_offered(vm, dst.host) is not False else None)
    accepted = dest_accepted = None
    if compression and compression != "none":
        accepted, dest_accepted = _accepted(src), _accepted(dst)
    out = check_move(vm, src.host, dst.host, dst.pools, dst.networks, copy_storage=copy_storage, tls=tls,
                     dest_tls=dst.tls, memory_headroom_mib=memory_headroom_mib, cpu_comparison=cpu,
                     compression=compression, compression_accepted=accepted, live=live,
                     dest_compression_accepted=dest_accepted)
    if postcopy_preempt:
        out.extend(preempt_findings(vm["name"], src, dst))
    return out


def _accepted(ctx: HostContext) -> Optional[List[str]]:
    probe = ctx.compression()
    return probe["accepted"] if probe["probed"] else None


PREEMPT_UNSUPPORTED = "postcopy_preempt_unsupported"


def preempt_findings(name: str, src: HostContext, dst: HostContext) -> List[Dict[str, Any]]:
    """A blocker for each end of the move on which post-copy would run without postcopy-preempt. libvirt has no
    flag for it: from 9.9.0 it enables QEMU's capability itself when both ends have it, so both ends are
    checked, by version (HostContext.postcopy_preempt)."""
    out = []
    for role, ctx in (("source", src), ("destination", dst)):
        if ctx.postcopy_preempt():
            continue
        libvirt_version, qemu_version = ctx.host.get("libvirt_version"), ctx.host.get("hypervisor_version")
        msg = (f"postcopy_preempt is requested but {ctx.hostname} ({role}, QEMU {qemu_version or '?'} / libvirt "
               f"{libvirt_version or '?'}) cannot run post-copy with preempt for {name}: that needs libvirt 9.9 "
               "and QEMU 8.0 or later on both ends")
        detail = {"host": ctx.hostname, "end": role, "libvirt_version": libvirt_version, "qemu_version": qemu_version}
        out.append(finding(PREEMPT_UNSUPPORTED, BLOCKER, msg, **detail))
    return out


def validate_check(p: Dict[str, Any]) -> None:
    """Bad input is refused before any host is asked (reason invalid_option)."""
    for key in ("bandwidth", "max_downtime", "dirty_rate_seconds"):
        if p[key] is not None and p[key] <= 0:
            raise FleetmaintError(f"{key} must be a positive number, got {p[key]}", step="validate options")
    if not p["dest_uris"]:
        raise FleetmaintError("dest_uris is empty: give at least one destination to check; nothing was checked",
                              step="validate options")
    if p["names"] is not None and not p["names"]:
        raise FleetmaintError("names is empty: give the VMs to check, or leave names out to check every VM "
                              "of the source; nothing was checked", step="validate options")


def check_moves(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:  # pylint: disable=unused-argument
    """migration_check's engine: every VM asked for against every destination, and estimates (changes nothing)."""
    validate_check(p)
    src_conn = open_uri(p["uri"])
    dests = []
    try:
        src = HostContext(src_conn, p["uri"], p["shared_pools"])
        wanted = [p["name"]] if p["name"] else p["names"]
        if wanted:
            doms = []
            for n in wanted:
                try:
                    doms.append(src_conn.lookupByName(n))
                except libvirt.libvirtError as exc:
                    raise FleetmaintError(f"VM '{n}' not found on {src.hostname} ({redact_uri(p['uri'])})",
                                          vm=n, step="locate") from exc
        else:
            doms = src_conn.listAllDomains(0)
        vms = [vm_facts(d, src) for d in doms]
        for uri in p["dest_uris"]:
            try:
                conn = open_uri(uri)
                dests.append((uri, conn, HostContext(conn, uri, p["shared_pools"], tls=p["tls"]), None))
            except FleetmaintError as exc:
                dests.append((uri, None, None, exc.msg))
        results = []
        for vm, xml in vms:
            for uri, _conn, dst, error in dests:
                if dst is None:
                    findings = [finding("dest_unreachable", BLOCKER, f"{vm['name']}: {error}", uri=redact_uri(uri))]
                    dname = redact_uri(uri)
                else:
                    findings = check_pair(vm, xml, src, dst, copy_storage=p["copy_storage"], tls=p["tls"],
                                          memory_headroom_mib=p["memory_headroom"], compression=p["compression"])
                    dname = dst.hostname
                results.append({"vm": vm["name"], "source": src.hostname, "destination": dname,
                                "destination_uri": redact_uri(uri), "findings": findings,
                                "ok": not any(f["severity"] == BLOCKER for f in findings)})
        rates = {}
        if p["measure_dirty_rate"]:
            running = [d for d, (vm, _x) in zip(doms, vms) if vm["state"] == "running"]
            rates = measure_dirty_rates(src_conn, running, p["dirty_rate_seconds"])
        estimates = {}
        for vm, _xml in vms:
            rate = rates.get(vm["name"])
            dirty_bps = rate["bytes_per_s"] if rate and rate.get("measured") else 0.0
            bandwidth = p["bandwidth"] or DEFAULT_ESTIMATE_BANDWIDTH_MIB_S
            est = estimate_precopy(vm["memory_mib"] * 1048576, bandwidth * 1048576, dirty_bps, p["max_downtime"])
            est.update(memory_mib=vm["memory_mib"], bandwidth_mib_s=bandwidth, max_downtime_ms=p["max_downtime"],
                       dirty_rate=rate or {"measured": False, "reason": "not requested (measure_dirty_rate)"})
            estimates[vm["name"]] = est
    finally:
        for _uri, conn, _dst, _err in dests:
            if conn is not None:
                conn.close()
        src_conn.close()
    return {"changed": False, "results": results, "estimates": estimates, "checked": len(results),
            "blocked": sum(1 for r in results if not r["ok"])}
