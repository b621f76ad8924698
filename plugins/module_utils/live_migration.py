# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move one VM live between two libvirt hosts, safely and observably.

Used by the ``live_migrate`` module (runs anywhere) and its action plugin (runs on the
controller and prints progress). One call to :func:`migrate` does everything: find the VM,
decide whether there is anything to do (idempotence), check the move with the shared rules
(:mod:`migration_rules`), pre-create destination volumes for copied disks, record the home
host, run the migration in a thread while watching libvirt's job statistics and applying
the escalation policy (downtime ladder, post-copy, suspend, abort), then verify where the VM
ended up and report metrics.

Safety: the only flag combinations allowed leave the VM persistently defined on exactly one
host. Before switchover, any failure aborts the job and the VM keeps running on the source.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlparse
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import (
    call_with_timeout, connection, libvirt, open_uri,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import (
    DOMAIN_STATES, METADATA_NS, METADATA_PREFIX, build_metadata, parse_domain,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import placement_of
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import HostContext
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_checks import check_pair, vm_facts
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import (
    blockers, is_local_disk, same_host,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import (
    CONNECTION, MIGRATION_TUNING, STORAGE, pick,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.reasons import VM_LOST

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
    postcopy=dict(type="str", default="never", choices=["never", "after_timeout", "immediate"]),
    timeout=dict(type="int"),
    timeout_action=dict(type="str", default="abort", choices=["abort", "postcopy", "suspend"]),
    progress_timeout=dict(type="int"),
    **CONNECTION, **STORAGE, **MIGRATION_TUNING, **pick("memory_headroom"),
)
MUTUALLY_EXCLUSIVE = [["name", "uuid"]]
REQUIRED_ONE_OF = [["name", "uuid"]]

ProgressFn = Callable[[Dict[str, Any]], None]


def validate_options(p: Dict[str, Any]) -> None:
    """Option combinations libvirt would accept but that break our promises, refused up front."""
    if p["persistent"] != p["undefine_source"]:
        raise FleetmaintError(
            "persistent and undefine_source must be both true (the VM is defined on the destination only) "
            "or both false (it stays defined on the source, running transient on the destination): "
            f"persistent={p['persistent']} and undefine_source={p['undefine_source']} would leave it defined "
            "on two hosts or on none", step="validate options")
    for key in ("bandwidth", "max_downtime", "parallel_connections", "timeout", "progress_timeout"):
        if p.get(key) is not None and p[key] <= 0:
            raise FleetmaintError(f"{key} must be a positive number, got {p[key]}", step="validate options")
    for key in ("auto_converge_initial", "auto_converge_increment"):
        if p.get(key) is not None:
            if not p["auto_converge"]:
                raise FleetmaintError(f"{key} needs auto_converge=true", step="validate options")
            if not 1 <= p[key] <= 99:
                raise FleetmaintError(f"{key} is a percentage from 1 to 99, got {p[key]}", step="validate options")
    if p["downtime_steps"] < 1:
        raise FleetmaintError(f"downtime_steps must be at least 1, got {p['downtime_steps']}", step="validate options")
    if p["downtime_steps"] > 1 and not p.get("max_downtime"):
        raise FleetmaintError("downtime_steps needs max_downtime (the top of the ladder)", step="validate options")
    if p["postcopy"] == "after_timeout" and not p.get("timeout"):
        raise FleetmaintError("postcopy=after_timeout needs timeout (when to switch)", step="validate options")
    if p["timeout_action"] == "postcopy" and p["postcopy"] == "never":
        raise FleetmaintError("timeout_action=postcopy needs postcopy allowed (after_timeout or immediate)",
                              step="validate options")
    if not p["p2p"] and p.get("peer_uri"):
        raise FleetmaintError("peer_uri is only used with p2p=true", step="validate options")


def effective_timeout_action(p: Dict[str, Any]) -> str:
    return "postcopy" if p["postcopy"] == "after_timeout" else p["timeout_action"]


def build_flags(p: Dict[str, Any], need_postcopy: bool) -> Tuple[int, List[str]]:
    names = ["LIVE"]
    if p["p2p"]:
        names.append("PEER2PEER")
    if p["persistent"]:
        names.append("PERSIST_DEST")
    if p["undefine_source"]:
        names.append("UNDEFINE_SOURCE")
    if p["tls"]:
        names.append("TLS")
    if p["auto_converge"]:
        names.append("AUTO_CONVERGE")
    if need_postcopy:
        names.append("POSTCOPY")
    if p["compression"] != "none":
        names.append("COMPRESSED")
    if p.get("parallel_connections"):
        names.append("PARALLEL")
    if p["copy_storage"] == "all":
        names.append("NON_SHARED_DISK")
    elif p["copy_storage"] == "incremental":
        names.append("NON_SHARED_INC")
    if p["unsafe"]:
        names.append("UNSAFE")
    names.append("ABORT_ON_ERROR")
    flags = 0
    for n in names:
        flags |= getattr(libvirt, f"VIR_MIGRATE_{n}")
    return flags, names


def build_params(p: Dict[str, Any], copy_targets: List[str]) -> Dict[str, Any]:
    params: Dict[str, Any] = {}
    if p.get("bandwidth"):
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = p["bandwidth"]
    if p["compression"] != "none":
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = p["compression"]
    if p.get("parallel_connections"):
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = p["parallel_connections"]
    if copy_targets:
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = copy_targets
    if p.get("migration_uri"):
        params[libvirt.VIR_MIGRATE_PARAM_URI] = p["migration_uri"]
    if p.get("auto_converge_initial") is not None:
        params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = p["auto_converge_initial"]
    if p.get("auto_converge_increment") is not None:
        params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = p["auto_converge_increment"]
    return params


def downtime_ladder(p: Dict[str, Any]) -> List[Tuple[float, int]]:
    """(seconds after start, allowed downtime ms) steps, ending at max_downtime.

    The steps are spread evenly over the timeout (before its action fires), or 10 s apart
    without a timeout.
    """
    top = p.get("max_downtime")
    if not top:
        return []
    steps = p["downtime_steps"]
    interval = (p["timeout"] / (steps + 1)) if p.get("timeout") else 10.0
    return [(i * interval, max(1, int(round(top * (i + 1) / steps)))) for i in range(steps)]


def _lookup(conn: Any, name: Optional[str], uuid: Optional[str]) -> Any:
    try:
        return conn.lookupByUUIDString(uuid) if uuid else conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _state(dom: Any) -> Tuple[str, int]:
    st, reason = dom.state()
    return DOMAIN_STATES.get(st, "unknown"), reason


def _metrics(final: Optional[Dict[str, Any]], last: Optional[Dict[str, Any]], events: List[Dict[str, Any]],
             wall_ms: int, postcopy_used: bool, throttle_max: int) -> Dict[str, Any]:
    src = dict(final or last or {})
    metric_source = "destination_completed_job" if final else ("source_last_sample" if last else "none")
    # Storage copied over NBD is counted on the source only.
    for key in ("disk_total", "disk_processed"):
        if not src.get(key) and last and last.get(key):
            src[key] = last[key]
    comp = {k: v for k, v in src.items() if k.startswith("compression_")}
    return {
        # A source sample is from before the end (after post-copy there is nothing else): use wall time.
        "total_time_ms": src.get("time_elapsed", wall_ms) if final else wall_ms,
        "wall_time_ms": wall_ms,
        "downtime_ms": src.get("downtime") if final else None,
        "downtime_net_ms": src.get("downtime_net") if final else None,
        "setup_time_ms": src.get("setup_time"),
        "data_total": src.get("data_total"),
        "data_processed": src.get("data_processed"),
        "data_remaining": src.get("data_remaining"),
        "memory_total": src.get("memory_total"),
        "memory_bps": src.get("memory_bps"),
        "iterations": src.get("memory_iteration"),
        "dirty_rate": src.get("memory_dirty_rate"),
        "disk_total": src.get("disk_total"),
        "disk_processed": src.get("disk_processed"),
        "postcopy_used": postcopy_used,
        "postcopy_requests": src.get("memory_postcopy_requests"),
        "auto_converge_throttle": max(throttle_max, src.get("auto_converge_throttle", 0) or 0),
        "compression": comp,
        "source": metric_source,
    }


class _Runner:
    """Runs the blocking libvirt migration call in a thread."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self._fn = fn
        self.thread = threading.Thread(target=self._run, name="fleetmaint-migrate", daemon=True)

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # pylint: disable=broad-except
            self.error = exc
        finally:
            self.done.set()


CONTROL_TIMEOUT_S = 30.0


class ControlStuck(Exception):
    """A job-control call did not return in time."""


class _Control:
    """Watch and steer the migration job on a connection of its own, each call bounded in time.

    The migration call occupies the source connection for the whole migration. Polling and steering
    it over that same connection once hung in the lab: a call was never answered, so the timeout and
    the abort it should trigger never happened. Here every call runs on a separate connection and is
    abandoned after ``timeout`` seconds (ControlStuck); the next call opens a fresh connection.
    """

    def __init__(self, uri: str, uuid: str, timeout: float = 30.0) -> None:
        self.uri, self.uuid, self.timeout = uri, uuid, timeout
        self.conn: Any = None
        self.dom: Any = None

    def call(self, method: str, *args: Any) -> Any:
        if self.dom is None:
            self.conn = open_uri(self.uri)
            self.dom = self.conn.lookupByUUIDString(self.uuid)
        dom = self.dom
        try:
            return call_with_timeout(lambda: getattr(dom, method)(*args), self.timeout,
                                     name=f"fleetmaint-control-{method}")
        except TimeoutError as exc:
            # Leave the connection to its stuck thread (closing it could block too); reconnect next time.
            self.conn = self.dom = None
            raise ControlStuck(f"{method} did not return within {self.timeout:g} s") from exc

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # pylint: disable=broad-except
                pass
            self.conn = self.dom = None


def migrate(p: Dict[str, Any], check_mode: bool = False, progress: Optional[ProgressFn] = None) -> Dict[str, Any]:
    """Do (or in check mode, plan) one live migration. Returns the result dict; raises FleetmaintError."""
    validate_options(p)
    src_uri, dest_uri = p["uri"], p["dest_uri"]
    peer_uri = p.get("peer_uri") or dest_uri
    ident = p.get("name") or p.get("uuid")
    result: Dict[str, Any] = {"changed": False, "vm": ident, "source": {"uri": redact_uri(src_uri)},
                              "destination": {"uri": redact_uri(dest_uri)}, "events": []}
    with connection(src_uri) as sconn:
        try:
            with connection(dest_uri) as dconn:
                return _migrate(p, sconn, dconn, peer_uri, check_mode, progress, result)
        except FleetmaintError as exc:
            if exc.context.get("step") == "connect" and exc.context.get("uri") == redact_uri(dest_uri):
                exc.msg = f"{ident}: destination unreachable: {exc.msg}"
                exc.context.update(vm=ident, reason="dest_unreachable")
            raise


def _fail(msg: str, step: str, **ctx: Any) -> FleetmaintError:
    return FleetmaintError(msg, step=step, **ctx)


def _migrate(p: Dict[str, Any], sconn: Any, dconn: Any, peer_uri: str, check_mode: bool,
             progress: Optional[ProgressFn], result: Dict[str, Any]) -> Dict[str, Any]:
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

    sdom = _lookup(sconn, p.get("name"), p.get("uuid"))
    ddom = _lookup(dconn, p.get("name"), p.get("uuid"))
    # Idempotence: already where it should be.
    if sdom is None and ddom is not None:
        dstate = _state(ddom)[0]
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
        leftover = _finish_interrupted(p, sdom, sconn, dconn, peer_uri, result, ctx)
        if leftover is not None:
            return leftover
    if ddom is not None and sdom is not None:
        raise _fail(f"{ident} exists on both {src_host['hostname']} ({_state(sdom)[0]}) and "
                    f"{dst_host['hostname']} ({_state(ddom)[0]}): refusing to migrate onto a second copy; "
                    "resolve which one is real first", "locate", reason="two_copies", **ctx)

    name = sdom.name()
    ctx["vm"] = name
    result.update(vm=name, uuid=sdom.UUIDString())
    vm, vm_xml = vm_facts(sdom, src)
    findings = check_pair(vm, vm_xml, src, dst, copy_storage=p["copy_storage"], tls=p["tls"],
                          memory_headroom_mib=p["memory_headroom"], compression=p["compression"])
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
        "compression": p["compression"], "parallel_connections": p.get("parallel_connections"),
        "copy_storage": effective["copy_storage"], "copy_disks": [d["target"] for d in copy_disks],
        "auto_converge": p["auto_converge"], "auto_converge_initial": p.get("auto_converge_initial"),
        "auto_converge_increment": p.get("auto_converge_increment"),
        "postcopy": p["postcopy"], "timeout_s": p.get("timeout"),
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
        return _run(p, sdom, sconn, dconn, peer_uri, flags, params, ladder, result, ctx, progress)
    except FleetmaintError:
        # Volumes we created are ours to remove, unless the VM did land there after all.
        try:
            landed = _lookup(dconn, name, None) is not None
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


def record_home(dom: Any, home: str, persistent: bool) -> None:
    """Write the home host into the VM's metadata (live and persistent) if it is not there yet."""
    try:
        current = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError:
        current = None
    if current and "<home>" in current.replace(" ", ""):
        return
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if persistent else 0)
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, build_metadata(home), METADATA_PREFIX, METADATA_NS, flags)


def record_arrival(dom: Any, home: str, event: Callable[..., None]) -> None:
    """A VM that arrived paused: say so in its live metadata. Its disks stay inactive until it first runs,
    and the move rules must know that after libvirt forgets the incoming job (a daemon restart)."""
    try:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, build_metadata(home, arrived="migration"),
                        METADATA_PREFIX, METADATA_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        event("arrived_paused")
    except libvirt.libvirtError as exc:
        event("metadata_error", error=libvirt_message(exc))


def _run(p: Dict[str, Any], sdom: Any, sconn: Any, dconn: Any, peer_uri: str, flags: int, params: Dict[str, Any],
         ladder: List[Tuple[float, int]], result: Dict[str, Any], ctx: Dict[str, Any],
         progress: Optional[ProgressFn]) -> Dict[str, Any]:
    name = ctx["vm"]
    events: List[Dict[str, Any]] = result["events"]
    t0 = time.monotonic()

    def event(kind: str, **kw: Any) -> None:
        e = dict(t=round(time.monotonic() - t0, 2), event=kind, **kw)
        events.append(e)
        if progress:
            progress(dict(e, vm=name, kind="event"))

    if p["p2p"]:
        runner = _Runner(lambda: sdom.migrateToURI3(peer_uri, params, flags))
    else:
        runner = _Runner(lambda: sdom.migrate3(dconn, params, flags))
    event("start", destination=ctx["destination"])
    runner.thread.start()

    ctl = _Control(p["uri"], sdom.UUIDString(), CONTROL_TIMEOUT_S)
    try:
        return _watch(p, sdom, sconn, dconn, runner, ctl, ladder, result, ctx, event, t0, progress)
    finally:
        ctl.close()


def _watch(p: Dict[str, Any], sdom: Any, sconn: Any, dconn: Any, runner: _Runner, ctl: _Control,
           ladder: List[Tuple[float, int]], result: Dict[str, Any], ctx: Dict[str, Any],
           event: Callable[..., None], t0: float, progress: Optional[ProgressFn]) -> Dict[str, Any]:
    name = ctx["vm"]
    events: List[Dict[str, Any]] = result["events"]
    last: Optional[Dict[str, Any]] = None
    abort_at: Optional[float] = None
    postcopy_used = suspended = False
    throttle_max = 0
    ladder_i = 0
    best_remaining: Optional[int] = None
    best_at = time.monotonic()
    timed_out = False
    phase = "precopy"
    aborted: Optional[Tuple[str, str]] = None  # (reason code, what happened) once we aborted the job
    while not runner.done.wait(p["poll_interval"]):
        elapsed = time.monotonic() - t0
        if aborted and abort_at is not None and time.monotonic() - abort_at > 10:
            # An abort that did not take (or a control call that got stuck): ask again.
            abort_at = time.monotonic()
            try:
                ctl.call("abortJob")
                event("abort", why="retry")
            except (libvirt.libvirtError, ControlStuck, FleetmaintError) as exc:
                event("control_error", error=str(exc))
        try:
            st = ctl.call("jobStats", 0)
        except libvirt.libvirtError:
            continue  # the job just ended, or the domain left the source
        except (ControlStuck, FleetmaintError) as exc:
            event("control_error", error=str(exc))
            continue
        if st.get("type", 0) == 0 or not st.get("data_total"):
            continue  # no job, or a cancelled job's empty record: keep the last real sample
        last = st
        throttle_max = max(throttle_max, st.get("auto_converge_throttle", 0) or 0)
        remaining = st.get("data_remaining")
        if remaining is not None and (best_remaining is None or remaining < best_remaining):
            best_remaining, best_at = remaining, time.monotonic()
        if progress:
            progress({"kind": "progress", "vm": name, "t": round(elapsed, 1), "phase": phase,
                      "data_processed": st.get("data_processed"), "data_remaining": remaining,
                      "data_total": st.get("data_total"), "memory_bps": st.get("memory_bps"),
                      "iteration": st.get("memory_iteration"), "dirty_rate": st.get("memory_dirty_rate"),
                      "throttle": st.get("auto_converge_throttle")})
        try:
            while ladder_i < len(ladder) and elapsed >= ladder[ladder_i][0]:
                ctl.call("migrateSetMaxDowntime", ladder[ladder_i][1], 0)
                event("downtime", downtime_ms=ladder[ladder_i][1])
                ladder_i += 1
            if p["postcopy"] == "immediate" and not postcopy_used:
                ctl.call("migrateStartPostCopy", 0)
                postcopy_used, phase = True, "postcopy"
                event("postcopy", why="postcopy=immediate")
            if p.get("timeout") and elapsed >= p["timeout"] and not timed_out and not postcopy_used:
                timed_out = True
                action = effective_timeout_action(p)
                event("timeout", after_s=p["timeout"], action=action, data_remaining=remaining)
                if action in ("postcopy", "suspend"):
                    try:
                        if action == "postcopy":
                            ctl.call("migrateStartPostCopy", 0)
                            postcopy_used, phase = True, "postcopy"
                        else:
                            ctl.call("suspend")
                            suspended = True
                        event(action, why="timeout")
                    except (libvirt.libvirtError, ControlStuck, FleetmaintError) as exc:
                        # The timeout must end the migration one way or the other: abort it (retried if needed).
                        msg = libvirt_message(exc) if isinstance(exc, libvirt.libvirtError) else str(exc)
                        event("control_error", error=msg)
                        aborted = ("timeout", f"timeout after {p['timeout']} s; {action} could not be started "
                                              f"({msg}), so the migration was aborted")
                        abort_at = time.monotonic()
                        ctl.call("abortJob")
                        event("abort", why=f"timeout; {action} did not start")
                else:
                    aborted = ("timeout", f"timeout after {p['timeout']} s with {remaining} bytes remaining "
                                          f"(dirty rate {st.get('memory_dirty_rate')} pages/s, "
                                          f"throughput {st.get('memory_bps')} B/s)")
                    abort_at = time.monotonic()
                    ctl.call("abortJob")
                    event("abort", why="timeout")
            if p.get("progress_timeout") and not postcopy_used and not aborted and not suspended \
                    and time.monotonic() - best_at >= p["progress_timeout"]:
                aborted = ("no_progress", f"no progress for {p['progress_timeout']} s: remaining data stayed "
                                          f"above {best_remaining} bytes")
                abort_at = time.monotonic()
                ctl.call("abortJob")
                event("abort", why="progress_timeout")
        except libvirt.libvirtError as exc:
            event("control_error", error=libvirt_message(exc))
        except (ControlStuck, FleetmaintError) as exc:
            event("control_error", error=str(exc))
    wall_ms = int((time.monotonic() - t0) * 1000)

    if runner.error is not None:
        return _after_failure(p, sdom, sconn, dconn, runner.error, aborted, postcopy_used, suspended,
                              result, ctx, event, last, wall_ms, throttle_max)

    # Success: verify, resume if we suspended, collect metrics from the destination's completed job.
    ddom = _lookup(dconn, name, None)
    if ddom is None:
        raise _fail(f"{name}: libvirt reported success but the VM is not on {ctx['destination']}", "verify", **ctx)
    if suspended and _state(ddom)[0] == "paused":
        ddom.resume()
        event("resume", on=ctx["destination"])
    if _state(ddom)[0] == "paused":
        record_arrival(ddom, result["home_host"], event)
    final = None
    try:
        # KEEP_COMPLETED: libvirt's record that this QEMU process began with an incoming migration stays
        # readable for the move rules (hypervisor_facts.paused_facts).
        final = ddom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
        if not final or final.get("type", 0) == 0:
            final = None
    except libvirt.libvirtError:
        final = None
    event("done")
    result["metrics"] = _metrics(final, last, events, wall_ms, postcopy_used, throttle_max)
    result["metrics"]["suspended"] = suspended
    placement = _placement(sconn, dconn, name)
    result["placement"] = placement
    if placement["running_on"] != [ctx["destination"]]:
        raise _fail(f"{name}: after migration it runs on {placement['running_on']}, expected "
                    f"{ctx['destination']}", "verify", **ctx)
    if result.get("autostart") and ddom.isPersistent() and not ddom.autostart():
        try:
            ddom.setAutostart(1)
        except libvirt.libvirtError as exc:
            event("autostart_error", error=libvirt_message(exc))
    result["msg"] = (f"migrated {name} from {ctx['source']} to {ctx['destination']} in "
                     f"{result['metrics']['total_time_ms']} ms"
                     + (f", downtime {result['metrics']['downtime_ms']} ms" if result['metrics']['downtime_ms']
                        is not None else "")
                     + (" (post-copy)" if postcopy_used else "") + (" (suspended to finish)" if suspended else ""))
    return result


def _placement(sconn: Any, dconn: Optional[Any], name: str) -> Dict[str, Any]:
    entries = []
    for conn in (sconn, dconn):
        dom = _lookup(conn, name, None) if conn is not None else None
        if dom is not None:
            entries.append((conn.getHostname(), name, _state(dom)[0] in ("running", "paused"), bool(dom.isPersistent())))
    return placement_of(entries).get(name, {"running_on": [], "defined_on": []})


POSTCOPY_SETTLE_S = 180  # how long a broken post-copy is watched (and resumed) before giving up
POSTCOPY_RESUME_EVERY_S = 10


def _postcopy_failed(dom: Any) -> bool:
    st, reason = dom.state()
    return (st == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED) or \
        (st == libvirt.VIR_DOMAIN_RUNNING and reason == libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED)


def _settle_postcopy(p: Dict[str, Any], name: str, sconn: Any, dconn: Any, peer_uri: str,
                     event: Callable[..., None], wait_s: float = POSTCOPY_SETTLE_S) -> str:
    """After a post-copy migration broke: 'completed' when the guest ended on the destination alone (its stale
    source definition removed), 'broken' when it did not within wait_s. A source left paused in
    'post-copy failed' is resumed (libvirt post-copy recovery, peer-to-peer migrations) as soon as the link
    allows."""
    flags, _names = build_flags(dict(p, copy_storage="none"), True)
    flags |= libvirt.VIR_MIGRATE_POSTCOPY_RESUME
    deadline = time.monotonic() + wait_s
    last_resume = 0.0
    while True:
        try:
            sdom = _lookup(sconn, name, None)
            ddom = _lookup(dconn, name, None)
        except libvirt.libvirtError as exc:
            event("settle_error", error=libvirt_message(exc))
            sdom = ddom = None
        if ddom is not None and ddom.isActive() and not _postcopy_failed(ddom) and \
                (sdom is None or not sdom.isActive()):
            if sdom is not None and sdom.isPersistent() and ddom.isPersistent():
                sdom.undefine()  # the definition only: the guest and its disks are on the destination
                event("stale_definition_removed", on=sconn.getHostname())
            return "completed"
        if p["p2p"] and sdom is not None and sdom.isActive() and _postcopy_failed(sdom) and \
                time.monotonic() - last_resume >= POSTCOPY_RESUME_EVERY_S:
            last_resume = time.monotonic()
            try:
                event("postcopy_resume")
                sdom.migrateToURI3(peer_uri, {}, flags)
            except libvirt.libvirtError as exc:
                event("postcopy_resume_failed", error=libvirt_message(exc))
        if time.monotonic() >= deadline:
            return "broken"
        time.sleep(2)


def _finish_interrupted(p: Dict[str, Any], sdom: Any, sconn: Any, dconn: Any, peer_uri: str,
                        result: Dict[str, Any], ctx: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The VM is on both hosts because an earlier migration was interrupted: a post-copy that broke (resume
    it), or a migration that completed but whose source definition stayed (remove it). None otherwise."""
    if sdom.isActive() and not _postcopy_failed(sdom):
        return None  # running on the source: a real second copy or a migration in progress - not ours to fix
    ddom = _lookup(dconn, sdom.name(), None)
    if not sdom.isActive() and not (ddom.isActive() and ddom.isPersistent()):
        return None

    def event(kind: str, **kw: Any) -> None:
        result["events"].append(dict(event=kind, **kw))

    outcome = _settle_postcopy(p, sdom.name(), sconn, dconn, peer_uri, event)
    result.update(vm=sdom.name(), uuid=sdom.UUIDString(), changed=True, placement=_placement(sconn, dconn, sdom.name()))
    if outcome != "completed":
        raise _fail(f"{ctx['vm']}: an interrupted post-copy migration from {ctx['source']} to {ctx['destination']} "
                    f"could not be resumed within {POSTCOPY_SETTLE_S} s: {ctx['destination']} runs the guest, part of "
                    f"its memory is still on {ctx['source']}; keep both, restore the link between them and re-run",
                    "postcopy", result=result, **ctx)
    result["home_host"] = parse_domain(ddom.XMLDesc(0))["home_host"]
    result["msg"] = (f"{ctx['vm']} finished on {ctx['destination']}: an interrupted migration was completed "
                     f"({', '.join(e['event'] for e in result['events'])})")
    return result


def _after_failure(p: Dict[str, Any], sdom: Any, sconn: Any, dconn: Any, error: BaseException,
                   aborted: Optional[Tuple[str, str]], postcopy_used: bool, suspended: bool, result: Dict[str, Any],
                   ctx: Dict[str, Any], event: Callable[..., None], last: Optional[Dict[str, Any]],
                   wall_ms: int, throttle_max: int) -> Dict[str, Any]:
    """The migration call failed: make sure the VM runs on the source, then report why."""
    name = ctx["vm"]
    cause = libvirt_message(error)
    event("failed", error=cause)
    phase = "postcopy" if postcopy_used else "precopy"
    if postcopy_used:
        # The guest already runs on the destination: it cannot go back. Wait for the outcome, resuming
        # the post-copy when the link allows; a dropped control connection alone often ends in success.
        if _settle_postcopy(p, name, sconn, dconn, p.get("peer_uri") or p["dest_uri"], event) == "completed":
            result["placement"] = _placement(sconn, dconn, name)
            result["metrics"] = _metrics(None, last, result["events"], wall_ms, postcopy_used, throttle_max)
            if result["placement"]["running_on"] == [ctx["destination"]]:
                result["msg"] = (f"migrated {name} from {ctx['source']} to {ctx['destination']} (post-copy; "
                                 f"completed after the migration call failed: {cause})")
                return result
    sdom_now = _lookup(sconn, name, None)
    if sdom_now is not None and not postcopy_used:
        state, reason = _state(sdom_now)
        # Resume only what the migration paused: a VM its user had paused stays paused.
        paused_by_us = suspended or (result.get("state_before") == "running" and reason in (
            libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_USER))
        if state == "paused" and paused_by_us:
            try:
                sdom_now.resume()
                event("resume", on=ctx["source"])
            except libvirt.libvirtError as exc:
                event("control_error", error=libvirt_message(exc))
    try:
        placement = _placement(sconn, dconn, name)
    except libvirt.libvirtError as exc:
        # The destination cannot be asked (its daemon died?): report what the source says.
        placement = _placement(sconn, None, name)
        placement["destination_unknown"] = libvirt_message(exc)
    result["placement"] = placement
    result["metrics"] = _metrics(None, last, result["events"], wall_ms, postcopy_used, throttle_max)
    why = aborted[1] if aborted else cause
    if placement["running_on"] == [ctx["source"]]:
        # Why it failed, as a code: we aborted it (and why), or it failed before a byte was sent, or later.
        code = aborted[0] if aborted else ("refused_at_start" if last is None else "migration_failed")
        where = f"; it still runs on {ctx['source']}"
        if placement.get("destination_unknown"):
            where += f" ({ctx['destination']} could not be checked: {placement['destination_unknown']})"
        result["changed"] = not set(placement["defined_on"]) <= {ctx["source"]}  # nothing left on the destination
    elif placement["running_on"]:
        where = f"; it now runs on {', '.join(placement['running_on'])}"
        code = "postcopy_unfinished" if postcopy_used else "migration_failed"
    else:
        crashed = _crashed_on(sconn, dconn, name)
        if crashed:
            code = "vm_crashed"
            where = (f"; {name} CRASHED on {crashed['host']} during the move ({crashed['state']}): its guest "
                     f"memory is lost and it runs on no host. {crashed['log']}")
        else:
            where = f"; it runs on NO host checked ({ctx['source']}, {ctx['destination']}): find it before anything else"
            code = "vm_not_running_anywhere"
        result["changed"] = True
    if postcopy_used and code not in VM_LOST:
        code = "postcopy_unfinished"
    result["reason"] = code
    if postcopy_used:
        where += (f". Post-copy could not be completed or resumed within {POSTCOPY_SETTLE_S} s: the guest runs on "
                  f"{ctx['destination']} with part of its memory still on {ctx['source']}; keep both, restore the "
                  "link and re-run (libvirt post-copy recovery); a host that died in post-copy loses the guest")
    raise FleetmaintError(f"migrating {name} from {ctx['source']} to {ctx['destination']} failed during "
                          f"{phase}: {why}{where}", step=phase, cause=cause, result=result, reason=code,
                          **ctx)


def _crashed_on(sconn: Any, dconn: Any, name: str) -> Optional[Dict[str, str]]:
    """Where the VM lies crashed (shut off by a crash, or crashed) after a failed move, and what QEMU said."""
    for conn in (sconn, dconn):
        try:
            dom = _lookup(conn, name, None)
            if dom is None:
                continue
            state, reason = dom.state()
            host = conn.getHostname()
        except libvirt.libvirtError:
            continue
        crashed = state == libvirt.VIR_DOMAIN_CRASHED or \
            (state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED)
        if crashed:
            return {"host": host, "state": "shut off (crashed)" if state == libvirt.VIR_DOMAIN_SHUTOFF else "crashed",
                    "log": _qemu_log_hint(conn, name, host)}
    return None


def _qemu_log_hint(conn: Any, name: str, host: str) -> str:
    """QEMU's last words when its log is readable from here (a local URI), else where to read them."""
    path = f"/var/log/libvirt/qemu/{name}.log"
    try:
        local = not urlparse(conn.getURI()).hostname
    except libvirt.libvirtError:
        local = False
    if local:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = [ln.strip() for ln in f.readlines()[-40:]]
            said = [ln for ln in lines if "qemu-system" in ln or "Assertion" in ln or "shutting down" in ln]
            if said:
                return "QEMU's log: " + " | ".join(said[-3:])
        except OSError:
            pass
    return f"QEMU's log is {path} on {host}"
