# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a hypervisor fit to take VMs back? libvirt answers (waiting out a reboot), capabilities, autostart networks
and pools active, and optionally a canary VM that keeps running.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import host_facts
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt, open_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri


def _connect(uri: str, wait: int):
    start = time.monotonic()
    while True:
        try:
            return open_uri(uri), time.monotonic() - start
        except FleetmaintError as exc:
            if exc.context.get("step") != "connect" or time.monotonic() - start >= wait:
                raise FleetmaintError(f"{redact_uri(uri)} is not healthy: {exc.msg} (waited {wait} s)",
                                      step="health: connect") from exc
        time.sleep(2)


def _autostart_inactive(conn) -> list:
    bad = []
    for kind, objs in (("network", conn.listAllNetworks(0)), ("pool", conn.listAllStoragePools(0))):
        for o in objs:
            if o.autostart() and not o.isActive():
                bad.append(f"{kind} {o.name()}")
    return bad


def _canary(conn, xml: str, seconds: int) -> dict:
    name = ET.fromstring(xml).findtext("name")
    if not name:
        raise FleetmaintError("canary_xml has no <name>", step="health: canary")
    try:
        conn.lookupByName(name)
        raise FleetmaintError(f"a domain named '{name}' already exists; the canary needs a name of its own",
                              step="health: canary")
    except libvirt.libvirtError:
        pass
    start = time.monotonic()
    try:
        dom = conn.createXML(xml, 0)
    except libvirt.libvirtError as exc:
        return {"name": name, "ok": False, "detail": f"canary {name} did not start: {libvirt_message(exc)}"}
    try:
        while time.monotonic() - start < seconds:
            time.sleep(1)
            try:
                state = dom.state()[0]
            except libvirt.libvirtError:
                state = None
            if state != libvirt.VIR_DOMAIN_RUNNING:
                return {"name": name, "ok": False, "ran_s": round(time.monotonic() - start, 1),
                        "detail": f"canary {name} stopped after {time.monotonic() - start:.0f} s"}
        return {"name": name, "ok": True, "ran_s": round(time.monotonic() - start, 1),
                "detail": f"canary {name} ran {seconds} s"}
    finally:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass  # already gone (a transient domain vanishes when it stops)


def health(p: dict, check_mode: bool = False) -> dict:
    conn, waited = _connect(p["uri"], p["wait"])
    checks = [{"name": "libvirt answers", "ok": True, "detail": f"after {waited:.0f} s"}]
    result = {"changed": False, "waited_s": round(waited, 1)}
    try:
        try:
            h = host_facts(conn, redact_uri(p["uri"]))
            ok = bool(h["cpu"].get("arch")) and bool(h["guests"]) and h["memory_total_mib"] > 0
            keys = ("hostname", "libvirt_version", "hypervisor", "hypervisor_version", "memory_total_mib")
            result["host"] = {k: h.get(k) for k in keys}
            result["host"]["cpu_model"] = h["cpu"].get("model")
            checks.append({"name": "capabilities", "ok": ok,
                           "detail": f"{len(h['guests'])} guest types, arch {h['cpu'].get('arch')}"})
        except FleetmaintError as exc:
            checks.append({"name": "capabilities", "ok": False, "detail": exc.msg})
        if p["require_autostart_active"]:
            bad = _autostart_inactive(conn)
            checks.append({"name": "autostart networks and pools active", "ok": not bad,
                           "detail": ("inactive: " + ", ".join(bad)) if bad else "all active"})
        if p["canary_xml"] and not check_mode:
            c = _canary(conn, p["canary_xml"], p["canary_seconds"])
            result["canary"] = c
            checks.append({"name": "canary boots", "ok": c["ok"], "detail": c["detail"]})
    finally:
        conn.close()
    result["checks"] = checks
    result["healthy"] = all(c["ok"] for c in checks)
    if not result["healthy"]:
        raise FleetmaintError(f"{redact_uri(p['uri'])} is not healthy: " + "; ".join(
            f"{c['name']}: {c['detail']}" for c in checks if not c["ok"]), step="health", result=result)
    result["msg"] = f"{redact_uri(p['uri'])} is healthy ({len(checks)} checks)"
    return result
