# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Notes kept on a host itself so they survive the controller: the maintenance mark and the patch level.

libvirt has no place for host metadata, so each note is a persistent libvirt secret with no
value: usage type ``tls``, usage name ``fleetmaint-maintenance`` (or ``fleetmaint-patch-level``),
and a JSON description. Any controller reads them through the libvirt API; planners never
choose a marked host as a destination, and a rolling patch skips hosts already at its level.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional
from xml.sax.saxutils import escape

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt, wrap_error

USAGE_NAME = "fleetmaint-maintenance"
PATCH_LEVEL_USAGE = "fleetmaint-patch-level"


def _lookup(conn: Any, usage: str = USAGE_NAME) -> Any:
    try:
        return conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_TLS, usage)
    except libvirt.libvirtError as exc:
        # No such secret, or a driver that cannot store secrets (it cannot hold a mark either).
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SECRET, libvirt.VIR_ERR_NO_SUPPORT):
            return None
        raise


def _note_xml(usage: str, note: Dict[str, Any], uuid: Optional[str] = None) -> str:
    u = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (f"<secret ephemeral='no' private='no'>{u}<description>{escape(json.dumps(note))}</description>"
            f"<usage type='tls'><name>{usage}</name></usage></secret>")


def get_mark(conn: Any, usage: str = USAGE_NAME) -> Optional[Dict[str, Any]]:
    """The maintenance mark (or another note) of the host behind ``conn``, or None."""
    import xml.etree.ElementTree as ET

    sec = _lookup(conn, usage)
    if sec is None:
        return None
    desc = ET.fromstring(sec.XMLDesc(0)).findtext("description") or "{}"
    try:
        return json.loads(desc)
    except ValueError:
        return {"reason": desc}


def set_mark(conn: Any, uri: str, reason: str, by: str) -> bool:
    """Mark the host as in maintenance. Returns False if it already was."""
    if _lookup(conn) is not None:
        return False
    try:
        conn.secretDefineXML(_note_xml(USAGE_NAME, {"since": int(time.time()), "by": by, "reason": reason}), 0)
    except libvirt.libvirtError as exc:
        raise wrap_error(exc, "marking the host as in maintenance", uri) from exc
    return True


def clear_mark(conn: Any, uri: str) -> bool:
    """Remove the mark. Returns False if there was none."""
    sec = _lookup(conn)
    if sec is None:
        return False
    try:
        sec.undefine()
    except libvirt.libvirtError as exc:
        raise wrap_error(exc, "clearing the maintenance mark", uri) from exc
    return True


def get_patch_level(conn: Any) -> Optional[Dict[str, Any]]:
    """The patch level recorded on the host ({level, since, by}), or None."""
    return get_mark(conn, PATCH_LEVEL_USAGE)


def set_patch_level(conn: Any, uri: str, level: str, by: str) -> Dict[str, Any]:
    """Record ``level`` on the host (replacing any earlier level); returns the note written."""
    note = {"level": level, "since": int(time.time()), "by": by}
    try:
        # Redefined in place (same UUID), so the host never has no level.
        old = _lookup(conn, PATCH_LEVEL_USAGE)
        conn.secretDefineXML(_note_xml(PATCH_LEVEL_USAGE, note, old.UUIDString() if old is not None else None), 0)
    except libvirt.libvirtError as exc:
        raise wrap_error(exc, "recording the patch level", uri) from exc
    return note
