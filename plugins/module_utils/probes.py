# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a host dead? Independent probes (libvirt, TCP ports, the operator's commands such as a BMC's power status),
each bounded in time; disaster recovery acts only when every probe says so.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any, Dict, List
from urllib.parse import urlparse

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import call_with_timeout, open_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri


def probe_libvirt(uri: str, timeout: float) -> Dict[str, Any]:
    def ask() -> str:
        conn = open_uri(uri, readonly=True)
        try:
            return conn.getHostname()
        finally:
            conn.close()
    try:
        name = call_with_timeout(ask, timeout)
        return {"probe": f"libvirt {redact_uri(uri)}", "alive": True, "detail": f"answers as {name}"}
    except Exception as exc:  # pylint: disable=broad-except
        return {"probe": f"libvirt {redact_uri(uri)}", "alive": False, "detail": str(exc)}


def probe_tcp(address: str, port: int, timeout: float) -> Dict[str, Any]:
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return {"probe": f"tcp {address}:{port}", "alive": True, "detail": "connection accepted"}
    except OSError as exc:
        return {"probe": f"tcp {address}:{port}", "alive": False, "detail": str(exc)}


def probe_command(argv: List[str], timeout: float) -> Dict[str, Any]:
    """A user probe (a BMC's power status, a ping over another network): exit 0 means alive. No shell."""
    name = "command " + " ".join(argv)
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        # A probe that cannot run proves nothing: it must not count as "dead".
        raise FleetmaintError(f"probe '{name}' could not run: {exc}", step="probe", reason="invalid_option") from exc
    out = (res.stdout.strip() or res.stderr.strip())[:200]
    return {"probe": name, "alive": res.returncode == 0, "detail": f"exit {res.returncode}: {out}"}


def probe_host(uri: str, tcp_ports: List[int], commands: List[List[str]], timeout: float,
               min_probes: int) -> Dict[str, Any]:
    """Dead only when at least min_probes probes ran and not one of them reached the host."""
    address = urlparse(uri).hostname
    probes = [probe_libvirt(uri, timeout)]
    if address:
        probes += [probe_tcp(address, int(port), timeout) for port in tcp_ports]
    probes += [probe_command([str(a) for a in argv], timeout) for argv in commands]
    alive = [p["probe"] for p in probes if p["alive"]]
    enough = len(probes) >= min_probes
    return {"probes": probes, "alive": alive, "dead": enough and not alive, "enough_probes": enough}


def probe_job(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:  # pylint: disable=unused-argument
    """host_probe's engine: probe, say what the probes found (changes nothing)."""
    if p["min_probes"] < 1 or p["timeout"] <= 0:
        raise FleetmaintError("min_probes must be at least 1 and timeout positive", step="validate options")
    res = probe_host(p["uri"], p["tcp_ports"], p["commands"], p["timeout"], p["min_probes"])
    host = redact_uri(p["uri"])
    if res["dead"]:
        msg = f"{host} is dead: none of {len(res['probes'])} probes reached it"
    elif res["alive"]:
        msg = f"{host} is not dead: {', '.join(res['alive'])} answered"
    else:
        msg = f"{host} did not answer, but only {len(res['probes'])} probes ran (min_probes {p['min_probes']})"
    if p["fail_unless_dead"] and not res["dead"]:
        raise FleetmaintError(msg, step="probe", reason="not_dead", result=dict(res, changed=False))
    return dict(res, msg=msg, changed=False)
