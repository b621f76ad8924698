# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move one VM live between two libvirt hosts, safely and observably.

Used by the ``live_migrate`` module (runs anywhere) and its action plugin (runs on the
controller and prints progress). One call to :func:`migrate` does everything: find the VM,
decide whether there is anything to do (idempotence), check the move with the shared rules
(:mod:`migration_rules`), pre-create destination volumes for copied disks, record the home
host, then hand the move to a :class:`migration_job.MigrationJob`, which runs it while watching
libvirt's job statistics and applying the escalation policy (downtime ladder, post-copy, suspend,
abort), verifies where the VM ended up and reports metrics. Flags and parameters come from
:mod:`migration_flags`; a move an earlier run left half done is finished by :mod:`postcopy_recovery`.

Safety: the only flag combinations allowed leave the VM persistently defined on exactly one
host. Before switchover, any failure aborts the job and the VM keeps running on the source.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.domains import lookup, record_home, state
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import connection, libvirt
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import parse_domain
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import HostContext
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_checks import check_pair, vm_facts
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_flags import (
    build_flags, build_params, downtime_ladder, effective_timeout_action, parallel_connections, validate_options,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import CancelFlag
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_job import MigrationJob, ProgressFn
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import (
    blockers, is_local_disk, same_host,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import (
    CONNECTION, MIGRATION_TUNING, STORAGE, pick,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.postcopy_recovery import finish_interrupted
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import MIB

ARGUMENT_SPEC: Dict[str, Any] = dict(
    name=dict(type="str"),
    uuid=dict(type="str"),
    dest_uri=dict(type="str", required=True),
    peer_uri=dict(type="str"),
    migration_uri=dict(type="str"),
    p2p=dict(type="bool", default=True),
    persistent=dict(type="bool", default=True),
    undefine_source=dict(type="bool", default=True),
    auto_converge=dict(type="bool", default=False),
    auto_converge_initial=dict(type="int"),
    auto_converge_increment=dict(type="int"),
    postcopy=dict(type="str", default="never", choices=["never", "after_first_pass", "after_timeout", "immediate"]),
    timeout=dict(type="int"),
    timeout_action=dict(type="str", default="abort", choices=["abort", "postcopy", "suspend"]),
    progress_timeout=dict(type="int"),
    postcopy_preempt=dict(type="bool", default=False),
    **CONNECTION, **STORAGE, **MIGRATION_TUNING, **pick("memory_headroom"),
)
MUTUALLY_EXCLUSIVE = [["name", "uuid"]]
REQUIRED_ONE_OF = [["name", "uuid"]]


def migrate(p: Dict[str, Any], check_mode: bool = False, progress: Optional[ProgressFn] = None,
            cancel: Optional[CancelFlag] = None) -> Dict[str, Any]:
    """Do (or in check mode, plan) one live migration. Returns the result dict; raises FleetmaintError.

    ``cancel``: the job's flag (host jobs); a move of its own has one, so a signal can abort it too."""
    validate_options(p)
    src_uri, dest_uri = p["uri"], p["dest_uri"]
    peer_uri = p.get("peer_uri") or dest_uri
    ident = p.get("name") or p.get("uuid")
    result: Dict[str, Any] = {"changed": False, "vm": ident, "source": {"uri": redact_uri(src_uri)},
                              "destination": {"uri": redact_uri(dest_uri)}, "events": []}
    with connection(src_uri) as sconn:
        try:
            with connection(dest_uri) as dconn:
                if cancel is not None:  # the job's flag, in RUNNING for as long as the job runs
                    return _migrate(p, sconn, dconn, peer_uri, check_mode, progress, result, cancel)
                with CancelFlag() as flag:
                    return _migrate(p, sconn, dconn, peer_uri, check_mode, progress, result, flag)
        except FleetmaintError as exc:
            if exc.context.get("step") == "connect" and exc.context.get("uri") == redact_uri(dest_uri):
                exc.msg = f"{ident}: destination unreachable: {exc.msg}"
                exc.context.update(vm=ident, reason="dest_unreachable")
            raise


def _fail(msg: str, step: str, **ctx: Any) -> FleetmaintError:
    return FleetmaintError(msg, step=step, **ctx)


def _migrate(p: Dict[str, Any], sconn: Any, dconn: Any, peer_uri: str, check_mode: bool,
             progress: Optional[ProgressFn], result: Dict[str, Any], cancel: CancelFlag) -> Dict[str, Any]:
    src = HostContext(sconn, p["uri"], p["shared_pools"])
    dst = HostContext(dconn, p["dest_uri"], p["shared_pools"], tls=p["tls"])
    src_host, dst_host = src.host, dst.host
    result["source"]["hostname"] = src_host["hostname"]
    result["destination"]["hostname"] = dst_host["hostname"]
    ident = p.get("name") or p.get("uuid")
    ctx = dict(vm=ident, source=src_host["hostname"], destination=dst_host["hostname"])
    same = same_host(ident, src_host, dst_host)
    if same:
        raise _fail(f"cannot migrate {same['message']}; nothing was done", "preflight", reason="same_host",
                    findings=[same], codes=["same_host"], **ctx)

    sdom = lookup(sconn, p.get("name"), p.get("uuid"))
    ddom = lookup(dconn, p.get("name"), p.get("uuid"))
    # Idempotence: already where it should be.
    if sdom is None and ddom is not None:
        dstate = state(ddom)[0]
        if dstate in ("running", "paused") and (bool(ddom.isPersistent()) or not p["persistent"]):
            result.update(vm=ddom.name(), uuid=ddom.UUIDString(), home_host=parse_domain(ddom.XMLDesc(0))["home_host"],
                          msg=f"{ddom.name()} already runs on {dst_host['hostname']} and is not on "
                              f"{src_host['hostname']}: nothing to do")
            return result
        raise _fail(f"{ident} is {dstate} on {dst_host['hostname']} and absent from {src_host['hostname']}: "
                    "not a state a live migration can fix", "locate", reason="wrong_state", **ctx)
    if sdom is None:
        raise _fail(f"VM '{ident}' not found on {src_host['hostname']} ({redact_uri(p['uri'])}) nor on "
                    f"{dst_host['hostname']}", "locate", **ctx)
    if ddom is not None and sdom is not None and ddom.UUIDString() == sdom.UUIDString() and not check_mode:
        leftover = finish_interrupted(p, sdom, sconn, dconn, peer_uri, result, ctx)
        if leftover is not None:
            return leftover
    if ddom is not None and sdom is not None:
        raise _fail(f"{ident} exists on both {src_host['hostname']} ({state(sdom)[0]}) and "
                    f"{dst_host['hostname']} ({state(ddom)[0]}): refusing to migrate onto a second copy; "
                    "resolve which one is real first", "locate", reason="two_copies", **ctx)

    name = sdom.name()
    ctx["vm"] = name
    result.update(vm=name, uuid=sdom.UUIDString())
    vm, vm_xml = vm_facts(sdom, src)
    findings = check_pair(vm, vm_xml, src, dst, copy_storage=p["copy_storage"], tls=p["tls"],
                          memory_headroom_mib=p["memory_headroom"], compression=p["compression"],
                          postcopy_preempt=bool(p.get("postcopy_preempt")))
    result["findings"] = findings
    home = vm.get("home_host") or src_host["hostname"]
    result["home_host"] = home
    result["state_before"] = vm["state"]
    bad = blockers(findings)
    if bad:
        raise _fail(f"cannot migrate {name} from {src_host['hostname']} to {dst_host['hostname']}: "
                    + "; ".join(f["message"] for f in bad), "preflight", findings=findings,
                    codes=[f["code"] for f in bad], **ctx)

    copy_disks = [d for d in vm["disks"] if is_local_disk(d) and not d.get("readonly")] \
        if p["copy_storage"] != "none" else []
    need_postcopy = p["postcopy"] != "never" or effective_timeout_action(p) == "postcopy"
    # Copy flags only when a local disk is to be copied: with no disk list libvirt would copy
    # every disk, shared ones included, and the destination refuses to export a shared image.
    effective = dict(p, copy_storage=p["copy_storage"] if copy_disks else "none")
    flags, flag_names = build_flags(effective, need_postcopy)
    ladder = downtime_ladder(p)
    params = build_params(p, [d["target"] for d in copy_disks])
    result["options"] = {
        "flags": flag_names, "peer_uri": redact_uri(peer_uri) if p["p2p"] else None,
        "bandwidth_mib_s": p.get("bandwidth"), "max_downtime_ms": p.get("max_downtime"),
        "downtime_ladder": [{"after_s": round(t, 1), "downtime_ms": v} for t, v in ladder],
        "compression": p["compression"], "parallel_connections": parallel_connections(p),
        "xbzrle_cache_mib": (p["xbzrle_cache_bytes"] // MIB if p["compression"] == "xbzrle"
                             and p.get("xbzrle_cache_bytes") else None),
        "copy_storage": effective["copy_storage"], "copy_disks": [d["target"] for d in copy_disks],
        "auto_converge": p["auto_converge"], "auto_converge_initial": p.get("auto_converge_initial"),
        "auto_converge_increment": p.get("auto_converge_increment"),
        "postcopy": p["postcopy"], "postcopy_preempt": bool(p.get("postcopy_preempt")) and need_postcopy,
        "timeout_s": p.get("timeout"),
        "timeout_action": effective_timeout_action(p) if p.get("timeout") else None,
        "progress_timeout_s": p.get("progress_timeout"), "tls": p["tls"], "unsafe": p["unsafe"],
    }
    result["changed"] = True
    if check_mode:
        result["msg"] = f"would migrate {name} from {src_host['hostname']} to {dst_host['hostname']}"
        return result

    created_vols, copy_bytes = _precreate_volumes(sconn, dconn, copy_disks, name, ctx)
    result["options"]["copy_bytes"] = copy_bytes
    record_home(sdom, home, vm["persistent"])
    # libvirt does not carry the autostart flag with the definition: set it again on the destination.
    result["autostart"] = bool(vm.get("autostart"))
    try:
        return MigrationJob(p, sdom, sconn, dconn, peer_uri, ladder, result, ctx, progress, cancel).run(flags, params)
    except FleetmaintError:
        # Volumes we created are ours to remove, unless the VM did land there after all.
        try:
            landed = lookup(dconn, name, None) is not None
        except libvirt.libvirtError:
            landed = True  # destination unreachable: cannot tell, so leave its volumes alone
        if not landed:
            _delete_volumes(created_vols)
        raise


def _precreate_volumes(sconn: Any, dconn: Any, disks: List[Dict[str, Any]], name: str,
                       ctx: Dict[str, Any]) -> Tuple[List[Any], int]:
    """Create each copied disk's volume in the destination pool of the same name, same size and format.

    Returns the volumes created (to remove if the migration fails) and the bytes to copy.
    """
    created = []
    total = 0
    for disk in disks:
        try:
            svol = sconn.storageVolLookupByPath(disk["path"])
            _type, capacity, _alloc = svol.info()
            total += capacity
            dpool = dconn.storagePoolLookupByName(disk["pool"])
            dpool.refresh(0)
            vname = svol.name()
            try:
                dvol = dpool.storageVolLookupByName(vname)
            except libvirt.libvirtError:
                dvol = None
            if dvol is not None:
                if dvol.info()[1] != capacity:
                    raise _fail(f"{name}: destination volume {vname} in pool {disk['pool']} exists with a "
                                f"different size ({dvol.info()[1]} bytes, source {capacity})", "create volumes", **ctx)
                continue
            fmt = disk.get("format") or "raw"
            xml = (f"<volume><name>{vname}</name><capacity unit='bytes'>{capacity}</capacity>"
                   f"<target><format type='{fmt}'/></target></volume>")
            created.append(dpool.createXML(xml, 0))
        except libvirt.libvirtError as exc:
            _delete_volumes(created)
            raise _fail(f"{name}: creating the destination volume for disk {disk['target']} in pool "
                        f"{disk['pool']} failed: {libvirt_message(exc)}", "create volumes", **ctx) from exc
    return created, total


def _delete_volumes(vols: List[Any]) -> None:
    for v in vols:
        try:
            v.delete(0)
        except libvirt.libvirtError:
            pass
