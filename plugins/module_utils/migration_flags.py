# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A move's options turned into what libvirt takes: the combinations we refuse, the flags, the typed
parameters, the downtime ladder. One place, so a first move, a retry and a post-copy resume agree."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt

# Compression methods QEMU runs in its multifd channels: libvirt takes them only with VIR_MIGRATE_PARALLEL.
MULTIFD_COMPRESSION = ("zlib", "zstd")
# Parallel connections a multifd-compressed move uses when parallel_connections is not given (QEMU's own default).
DEFAULT_MULTIFD_CONNECTIONS = 2


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
    # postcopy_preempt sets no flag (libvirt has none: it enables postcopy-preempt itself when both ends have it);
    # it makes preempt a requirement of the move, checked on both ends before anything moves.
    if p.get("postcopy_preempt") and p["postcopy"] == "never":
        raise FleetmaintError("postcopy_preempt needs post-copy allowed (postcopy after_first_pass, after_timeout or "
                              "immediate)", step="validate options")


def parallel_connections(p: Dict[str, Any]) -> Optional[int]:
    """The parallel (multifd) connections a move uses: the option, or DEFAULT_MULTIFD_CONNECTIONS for a multifd
    compression method (zlib, zstd), which libvirt refuses without parallel migration; None for none."""
    if p.get("parallel_connections"):
        return int(p["parallel_connections"])
    if p.get("compression") in MULTIFD_COMPRESSION:
        return DEFAULT_MULTIFD_CONNECTIONS
    return None


def effective_timeout_action(p: Dict[str, Any]) -> str:
    return "postcopy" if p["postcopy"] in ("after_timeout", "after_first_pass") else p["timeout_action"]


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
    if parallel_connections(p):
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
    if p["compression"] == "xbzrle" and p.get("xbzrle_cache_bytes"):
        # Set by a job's XBZRLE step (move_methods.xbzrle_cache_bytes): a power of two, as QEMU requires.
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE] = int(p["xbzrle_cache_bytes"])
    if parallel_connections(p):
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = parallel_connections(p)
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


def resume_flags(p: Dict[str, Any]) -> int:
    """The flags that resume a broken post-copy: the move's own, with post-copy, without storage copy."""
    flags, _names = build_flags(dict(p, copy_storage="none"), True)
    return flags | libvirt.VIR_MIGRATE_POSTCOPY_RESUME
