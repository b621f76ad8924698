# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's maintenance mark, stored on the host itself so it survives the controller.

libvirt has no place for host metadata, so the mark is a persistent libvirt secret with no
value: usage type ``tls``, usage name ``fleetmaint-maintenance``, and a JSON description
(since, by, reason). Any controller reads it through the libvirt API; planners never choose
a marked host as a destination.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional
from xml.sax.saxutils import escape

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt, wrap_error

USAGE_NAME = "fleetmaint-maintenance"


def _lookup(conn: Any) -> Any:
    try:
        return conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_TLS, USAGE_NAME)
    except libvirt.libvirtError as exc:
        # No such secret, or a driver that cannot store secrets (it cannot hold a mark either).
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SECRET, libvirt.VIR_ERR_NO_SUPPORT):
            return None
        raise


def get_mark(conn: Any) -> Optional[Dict[str, Any]]:
    """The maintenance mark of the host behind ``conn``, or None."""
    import xml.etree.ElementTree as ET

    sec = _lookup(conn)
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
    desc = json.dumps({"since": int(time.time()), "by": by, "reason": reason})
    xml = (f"<secret ephemeral='no' private='no'><description>{escape(desc)}</description>"
           f"<usage type='tls'><name>{USAGE_NAME}</name></usage></secret>")
    try:
        conn.secretDefineXML(xml, 0)
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
