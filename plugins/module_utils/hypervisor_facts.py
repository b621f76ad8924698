# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gather facts about one hypervisor through an open libvirt connection.

Takes a connection object (anything with libvirt's virConnect methods), so it runs
against real hosts and against libvirt's ``test:///default`` driver in unit tests.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlparse

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cpu_compat import parse_domain_capabilities
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import (
    FleetmaintError, libvirt_message, wrap_error,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import connection, libvirt
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import (
    DOMAIN_STATES, SHARED_POOL_TYPES, classify_storage, parse_capabilities, parse_domain, parse_pool, version_string,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_flags import (
    DEFAULT_MULTIFD_CONNECTIONS, MULTIFD_COMPRESSION,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri

# Methods libvirt may accept for VIR_MIGRATE_PARAM_COMPRESSION; which ones a host accepts is probed.
COMPRESSION_CANDIDATES = ("xbzrle", "mt", "zlib", "zstd")
# Post-copy preempt has no migration flag: libvirt 9.9.0 and later start every post-copy migration with QEMU's
# postcopy-preempt capability when both sides support it (QEMU 8.0 and later). A flag 1 << 21 does not exist:
# libvirt 11.3 refuses it (VIR_ERR_INVALID_ARG, measured), so there is nothing to probe; it comes from the versions.
PREEMPT_MIN_LIBVIRT, PREEMPT_MIN_QEMU = (9, 9, 0), (8, 0, 0)
# A local URI whose socket cannot exist: the probe migration fails at connect, never reaching a host.
# 'mt' is QEMU's legacy multi-thread compression, deprecated in 8.2 and removed in 9.1.
LEGACY_COMPRESSION = ("mt",)
LEGACY_COMPRESSION_REMOVED = (9, 1, 0)
PROBE_DEST_URI = "qemu+unix:///system?socket=/nonexistent/fleetmaint-capability-probe"
LIBVIRT_TLS_PORT = 16514
JOB_OPERATION_START, JOB_OPERATION_MIGRATION_IN = 1, 4  # virDomainJobOperation
QEMU_TLS_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")


def host_facts(conn: Any, uri: str) -> Dict[str, Any]:
    """Identity, versions, CPU and memory of the host behind ``conn``."""
    try:
        caps = parse_capabilities(conn.getCapabilities())
        info = conn.getInfo()
        mem = node_memory_mib(conn, info)
        hv_type = conn.getType()
        hv_version = conn.getVersion()
        facts = {
            "hostname": conn.getHostname(),
            "uri": uri,
            "uuid": caps["uuid"],
            "libvirt_version": version_string(conn.getLibVersion()),
            "hypervisor": hv_type,
            "hypervisor_version": version_string(hv_version) if hv_version else None,
            "cpu": dict(caps["cpu"], count=info[2], mhz=info[3], numa_nodes=info[4]),
            "memory_total_mib": mem["total"],
            "memory_free_mib": mem["free"],
            "memory_available_mib": mem["available"],
            "live_migration": caps["live_migration"],
            "migration_transports": caps["migration_transports"],
            "guests": caps["guests"],
        }
    except Exception as exc:  # pylint: disable=broad-except
        if isinstance(exc, FleetmaintError):
            raise
        raise wrap_error(exc, "reading host capabilities", uri) from exc
    return facts


def node_memory_mib(conn: Any, info: List[Any]) -> Dict[str, int]:
    """Host memory over all NUMA cells, in MiB.

    virNodeGetInfo counts only what it finds in the NUMA nodes' meminfo, which on some
    machines misses hot-plugged memory; the all-cells memory statistics do not.
    """
    try:
        stats = conn.getMemoryStats(-1, 0)  # VIR_NODE_MEMORY_STATS_ALL_CELLS
        total, free = stats["total"] // 1024, stats["free"] // 1024
        cache = (stats.get("buffers", 0) + stats.get("cached", 0)) // 1024
        return {"total": int(total), "free": int(free), "available": int(free + cache)}
    except Exception:  # pylint: disable=broad-except
        free = int(conn.getFreeMemory() // 1048576)
        return {"total": int(info[1]), "free": free, "available": free}


def pool_facts(conn: Any, uri: str, shared_pools: Iterable[str] = ()) -> List[Dict[str, Any]]:
    shared = set(shared_pools)
    out = []
    try:
        for pool in conn.listAllStoragePools(0):
            p = parse_pool(pool.XMLDesc(0))
            active = bool(pool.isActive())
            if active:
                _state, capacity, allocation, available = pool.info()
            else:
                capacity = allocation = available = None
            out.append(dict(p, active=active, autostart=bool(pool.autostart()),
                            shared=p["name"] in shared or p["type"] in SHARED_POOL_TYPES,
                            capacity_bytes=capacity, allocation_bytes=allocation, available_bytes=available))
    except Exception as exc:  # pylint: disable=broad-except
        raise wrap_error(exc, "listing storage pools", uri) from exc
    return sorted(out, key=lambda p: p["name"])


def network_facts(conn: Any, uri: str) -> List[Dict[str, Any]]:
    try:
        return sorted(({"name": n.name(), "active": bool(n.isActive()), "autostart": bool(n.autostart())}
                       for n in conn.listAllNetworks(0)), key=lambda n: n["name"])
    except Exception as exc:  # pylint: disable=broad-except
        raise wrap_error(exc, "listing networks", uri) from exc


def domain_facts(dom: Any, pools: List[Dict[str, Any]], shared_pools: Iterable[str] = ()) -> Dict[str, Any]:
    """One domain, as migration work sees it (from its live or inactive definition)."""
    d = parse_domain(dom.XMLDesc(0))
    state, reason = dom.state()
    disks = []
    for disk in d["disks"]:
        disks.append(dict(disk, **classify_storage(disk, pools, shared_pools)))
    return {
        "name": d["name"],
        "uuid": d["uuid"],
        "state": DOMAIN_STATES.get(state, "unknown"),
        "active": bool(dom.isActive()),
        "persistent": bool(dom.isPersistent()),
        "autostart": bool(dom.autostart()) if dom.isPersistent() else False,
        "memory_mib": d["memory_mib"],
        "vcpus": d["vcpus"],
        "virt_type": d["virt_type"],
        "machine": d["machine"],
        "cpu": d["cpu"],
        "disks": disks,
        "interfaces": d["interfaces"],
        "hostdevs": d["hostdevs"],
        "home_host": d["home_host"],
        "state_reason": reason,
        **(paused_facts(dom, d["arrived_by"]) if state == 3 else {}),  # VIR_DOMAIN_PAUSED
    }


def paused_facts(dom: Any, recorded: Optional[str]) -> Dict[str, Any]:
    """What decides whether QEMU can move a paused VM: have its vCPUs run in this QEMU process, and did it
    arrive by migration. A VM that came in by migration and never ran still has its disks inactive."""
    try:
        vcpu_ns: Optional[int] = int(sum(v[2] for v in dom.vcpus()[0]))
    except Exception:  # pylint: disable=broad-except
        vcpu_ns = None  # the driver cannot tell
    arrived = recorded
    if arrived is None:
        # libvirt remembers how the QEMU process began (until its daemon restarts): an incoming
        # migration or a start. KEEP_COMPLETED, so reading it does not discard it.
        try:
            flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
            op = dom.jobStats(flags).get("operation")
            arrived = {JOB_OPERATION_MIGRATION_IN: "migration", JOB_OPERATION_START: "start"}.get(op)
        except Exception:  # pylint: disable=broad-except
            arrived = None
    return {"vcpu_time_ns": vcpu_ns, "arrived_by": arrived}


def all_domain_facts(conn: Any, uri: str, pools: List[Dict[str, Any]],
                     shared_pools: Iterable[str] = (), names: Optional[Iterable[str]] = None) -> List[Dict[str, Any]]:
    wanted = set(names) if names else None
    out = []
    try:
        doms = conn.listAllDomains(0)
    except Exception as exc:  # pylint: disable=broad-except
        raise wrap_error(exc, "listing domains", uri) from exc
    for dom in doms:
        try:
            if wanted is not None and dom.name() not in wanted:
                continue
            out.append(domain_facts(dom, pools, shared_pools))
        except Exception as exc:  # pylint: disable=broad-except
            if libvirt is not None and isinstance(exc, libvirt.libvirtError) and \
                    exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # it left (migrated away, undefined) while we were looking
            raise wrap_error(exc, f"reading domain {dom.name()}", uri) from exc
    return sorted(out, key=lambda d: d["name"])


def _probe_domain(conn: Any) -> Any:
    """A running domain with no job in progress, to probe migration parameters with."""
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING):
        try:
            if dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                return dom
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                return dom  # a driver without job reporting has no job to collide with
            continue
    return None


def _probe_error(exc: Any) -> str:
    """How libvirt answered a probe migration, from its error code only (never its message):
    ``rejected`` (it refused the parameter: VIR_ERR_INVALID_ARG), ``unsupported`` (the driver cannot do
    this kind of migration at all: nothing learnt), or ``accepted`` (validation passed and the move failed later,
    at connect to the socket that does not exist)."""
    code = exc.get_error_code()
    if code == libvirt.VIR_ERR_INVALID_ARG:
        return "rejected"
    if code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
        return "unsupported"
    return "accepted"


def _probe_call(dom: Any, params: Dict[str, Any], flags: int) -> Tuple[str, Optional[str]]:
    """One probe migration to PROBE_DEST_URI: (verdict, libvirt's message)."""
    try:
        dom.migrateToURI3(PROBE_DEST_URI, params, flags)
    except libvirt.libvirtError as exc:
        return _probe_error(exc), libvirt_message(exc)
    return "accepted", None  # pragma: no cover - cannot succeed against a socket that does not exist


def probe_compression(conn: Any) -> Dict[str, Any]:
    """Ask libvirt which compression methods it accepts, without migrating anything.

    libvirt validates the compression method before contacting the destination. A
    peer-to-peer migration to a local socket that cannot exist fails at connect for
    accepted methods and with VIR_ERR_INVALID_ARG for the others; the domain never
    leaves, and no job starts. The multifd methods (zlib, zstd) are probed as a move
    would use them, with VIR_MIGRATE_PARALLEL and a parallel-connections count: libvirt
    11 accepts them only so (and rejects them without), libvirt 9.0 rejects them either way.
    ``multifd`` lists the accepted methods that need parallel connections.
    """
    dom = _probe_domain(conn)
    if dom is None:
        return {"probed": False, "reason": "no running domain without a job to probe with",
                "accepted": [], "rejected": {}, "multifd": []}
    accepted, rejected, multifd = [], {}, []
    base = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_UNSAFE |
            libvirt.VIR_MIGRATE_COMPRESSED)
    for method in COMPRESSION_CANDIDATES:
        params: Dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_COMPRESSION: method}
        flags = base
        if method in MULTIFD_COMPRESSION:
            params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = DEFAULT_MULTIFD_CONNECTIONS
            flags |= libvirt.VIR_MIGRATE_PARALLEL
        verdict, msg = _probe_call(dom, params, flags)
        if verdict == "unsupported":
            return {"probed": False, "reason": msg, "accepted": [], "rejected": {}, "multifd": []}
        if verdict == "rejected":
            rejected[method] = msg
        elif method in LEGACY_COMPRESSION and _qemu_at_least(conn, LEGACY_COMPRESSION_REMOVED):
            # libvirt checks only the name; QEMU 9.1 removed the legacy 'compress' capability behind it, so such a
            # move would fail when it starts. By version, not by probe.
            rejected[method] = (f"QEMU {'.'.join(map(str, LEGACY_COMPRESSION_REMOVED))} and later have no "
                                "multi-thread compression (removed with the legacy 'compress' capability)")
        else:
            accepted.append(method)
            if method in MULTIFD_COMPRESSION:
                multifd.append(method)
    return {"probed": True, "probe_domain": dom.name(), "accepted": accepted, "rejected": rejected,
            "multifd": multifd}


def _qemu_at_least(conn: Any, want: Tuple[int, ...]) -> bool:
    try:
        hv = conn.getVersion()
    except Exception:  # pylint: disable=broad-except
        return False
    return bool(hv) and (hv // 1000000, hv // 1000 % 1000, hv % 1000) >= want


def _at_least(ver: Optional[str], want: Tuple[int, ...]) -> bool:
    if not ver:
        return False
    try:
        return tuple(int(x) for x in ver.split(".")[:3]) >= want
    except ValueError:
        return False


def preempt_by_version(libvirt_version: Optional[str], qemu_version: Optional[str]) -> bool:
    """Whether a post-copy migration on this host runs with QEMU's postcopy-preempt (libvirt enables it itself
    when both ends have it): libvirt 9.9.0 and QEMU 8.0 or later."""
    return _at_least(libvirt_version, PREEMPT_MIN_LIBVIRT) and _at_least(qemu_version, PREEMPT_MIN_QEMU)


def tls_configured(uri: str, timeout: float = 2.0) -> Dict[str, Any]:
    """Whether migration over TLS looks possible for this host.

    For a local URI we look for QEMU's migration certificates; for a remote URI we
    check that libvirtd answers on its TLS port. Either is a necessary condition;
    the real proof is a TLS migration (live_migrate with tls=true).
    """
    parsed = urlparse(uri)
    if not parsed.hostname:
        missing = [f for f in QEMU_TLS_FILES if not os.path.exists(os.path.join("/etc/pki/qemu", f))]
        return {"configured": not missing, "how": "files in /etc/pki/qemu",
                "detail": f"missing: {', '.join(missing)}" if missing else "certificates present"}
    port = parsed.port if parsed.port and parsed.scheme.endswith("+tls") else LIBVIRT_TLS_PORT
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        return {"configured": False, "how": f"tcp connect to {parsed.hostname}:{port}", "detail": str(exc)}
    return {"configured": True, "how": f"tcp connect to {parsed.hostname}:{port}", "detail": "libvirtd TLS port answers"}


def migration_capabilities(conn: Any, uri: str, libvirt_version: str, qemu_version: Optional[str],
                           probe: bool = True) -> Dict[str, Any]:
    """What migration features this host offers, and how each was found out."""
    if probe:
        compression = probe_compression(conn)
    else:
        compression = {"probed": False, "reason": "probe disabled", "accepted": [], "rejected": {}, "multifd": []}
    return {
        "compression_methods": compression["accepted"],
        "compression_multifd": compression["multifd"],
        "compression_rejected": compression["rejected"],
        "compression_probe": {k: v for k, v in compression.items() if k not in ("accepted", "rejected", "multifd")},
        # libvirt checks these flags only once the destination answers, so they cannot be
        # probed without a real migration: they come from the versions that introduced them.
        "parallel_connections": _at_least(libvirt_version, (5, 2, 0)) and _at_least(qemu_version, (4, 0, 0)),
        "postcopy": _at_least(libvirt_version, (1, 3, 3)) and _at_least(qemu_version, (2, 5, 0)),
        # No flag to probe with (see PREEMPT_MIN_LIBVIRT): libvirt uses it on its own when both ends have it.
        "postcopy_preempt": preempt_by_version(libvirt_version, qemu_version),
        "auto_converge": _at_least(qemu_version, (1, 6, 0)),
        "tls": tls_configured(uri),
        "sources": {"compression_methods": "probe" if compression["probed"] else "not probed",
                    "parallel_connections": "version", "postcopy": "version", "postcopy_preempt": "version",
                    "auto_converge": "version", "tls": "connect"},
    }


class HostContext:
    """One host's facts for checking moves to (or from) it, read once."""

    def __init__(self, conn: Any, uri: str, shared_pools: Iterable[str] = (), tls: bool = False) -> None:
        self.conn = conn
        self.uri = uri
        self.shared_pools = list(shared_pools)
        self.host = host_facts(conn, redact_uri(uri))
        self.pools = pool_facts(conn, uri, self.shared_pools)
        self.networks = network_facts(conn, uri)
        self.tls = tls_configured(uri) if tls else None
        self._domcaps: Dict[Tuple[Any, ...], Optional[Dict[str, Any]]] = {}
        self._compression: Optional[Dict[str, Any]] = None

    @property
    def hostname(self) -> str:
        return self.host["hostname"]

    def domain_capabilities(self, vm: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        key = (vm.get("emulator"), vm.get("arch"), vm.get("machine"), vm.get("virt_type"))
        if key not in self._domcaps:
            try:
                xml = self.conn.getDomainCapabilities(None, vm.get("arch"), vm.get("machine"), vm.get("virt_type"), 0)
                self._domcaps[key] = parse_domain_capabilities(xml)
            except libvirt.libvirtError:
                self._domcaps[key] = None  # e.g. unknown machine type: the machine rule reports it
        return self._domcaps[key]

    def compression(self) -> Dict[str, Any]:
        """probe_compression's result for this host, probed once."""
        if self._compression is None:
            self._compression = probe_compression(self.conn)
        return self._compression

    def postcopy_preempt(self) -> bool:
        """Whether post-copy migrations on this host run with postcopy-preempt (see preempt_by_version)."""
        return preempt_by_version(self.host.get("libvirt_version"), self.host.get("hypervisor_version"))


def hypervisor_info(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:  # pylint: disable=unused-argument
    """hypervisor_info's engine: everything a host reports, read-only unless the migration probe is asked for."""
    uri = p["uri"]
    with connection(uri, readonly=not p["probe_migration"]) as conn:
        host = host_facts(conn, redact_uri(uri))
        pools = pool_facts(conn, uri, p["shared_pools"])
        domains = all_domain_facts(conn, uri, pools, p["shared_pools"], p["domains"])
        networks = network_facts(conn, uri)
        migration = migration_capabilities(conn, uri, host["libvirt_version"], host["hypervisor_version"],
                                           probe=p["probe_migration"])
    return dict(changed=False, host=host, domains=domains, pools=pools, networks=networks, migration=migration)
