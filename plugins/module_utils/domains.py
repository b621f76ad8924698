# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One domain seen from the hosts of a move: find it, its state, where it runs and is defined, whether it
crashed (and what QEMU said), and the notes we write into its metadata (home host, arrived paused)."""

from __future__ import annotations

from urllib.parse import urlparse
from typing import Any, Callable, Dict, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import placement_of
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import (
    DOMAIN_STATES, METADATA_NS, METADATA_PREFIX, build_metadata,
)


def lookup(conn: Any, name: Optional[str], uuid: Optional[str]) -> Any:
    """The domain by UUID or name on conn, None when it is not there (any other libvirt error is raised)."""
    try:
        return conn.lookupByUUIDString(uuid) if uuid else conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def state(dom: Any) -> Tuple[str, int]:
    """(state name from the one state map, libvirt's reason number)."""
    st, reason = dom.state()
    return DOMAIN_STATES.get(st, "unknown"), reason


def placement(sconn: Any, dconn: Optional[Any], name: str) -> Dict[str, Any]:
    """Where name runs and is defined, of the two hosts of a move (dconn None: the source only)."""
    entries = []
    for conn in (sconn, dconn):
        dom = lookup(conn, name, None) if conn is not None else None
        if dom is not None:
            entries.append((conn.getHostname(), name, state(dom)[0] in ("running", "paused"), bool(dom.isPersistent())))
    return placement_of(entries).get(name, {"running_on": [], "defined_on": []})


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


def crashed_on(sconn: Any, dconn: Any, name: str) -> Optional[Dict[str, str]]:
    """Where the VM lies crashed (shut off by a crash, or crashed) after a failed move, and what QEMU said."""
    for conn in (sconn, dconn):
        try:
            dom = lookup(conn, name, None)
            if dom is None:
                continue
            st, reason = dom.state()
            host = conn.getHostname()
        except libvirt.libvirtError:
            continue
        crashed = st == libvirt.VIR_DOMAIN_CRASHED or \
            (st == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED)
        if crashed:
            return {"host": host, "state": "shut off (crashed)" if st == libvirt.VIR_DOMAIN_SHUTOFF else "crashed",
                    "log": qemu_log_hint(conn, name, host)}
    return None


def qemu_log_hint(conn: Any, name: str, host: str) -> str:
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
