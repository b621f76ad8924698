# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a whole fleet (several hypervisor URIs) into what the planner takes."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import all_domain_facts
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import open_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.maintenance import get_mark
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import HostContext


def placement_of(entries: Iterable[Tuple[str, str, bool, bool]]) -> Dict[str, Dict[str, List[str]]]:
    """The one placement aggregation: (host, key, active, persistent) -> key -> {running_on, defined_on}."""
    out: Dict[str, Dict[str, List[str]]] = {}
    for host, key, active, persistent in entries:
        where = out.setdefault(key, {"running_on": [], "defined_on": []})
        if active:
            where["running_on"].append(host)
        if persistent:
            where["defined_on"].append(host)
    return out


def _machines(host: Dict[str, Any]) -> Optional[List[str]]:
    """Every machine type a host offers (any architecture and domain type; the move rules check the VM's own), or
    None when its capabilities list none: the planner then puts no constraint on it."""
    machines = sorted({m for g in host.get("guests") or [] for m in g.get("machines", [])})
    return machines or None


class Fleet:
    """Open connections to every hypervisor; close them with close() (or use as a context manager)."""

    def __init__(self, uris: Iterable[str], shared_pools: Iterable[str] = (), tls: bool = False) -> None:
        self.shared_pools = list(shared_pools)
        self.hosts: Dict[str, HostContext] = {}
        self.uri_of: Dict[str, str] = {}
        self.marks: Dict[str, Optional[Dict[str, Any]]] = {}
        self.vms: Dict[str, List[Dict[str, Any]]] = {}
        try:
            for uri in uris:
                conn = open_uri(uri)
                ctx = HostContext(conn, uri, self.shared_pools, tls=tls)
                if ctx.hostname in self.hosts:
                    conn.close()
                    raise FleetmaintError(f"{redact_uri(uri)} and {redact_uri(self.uri_of[ctx.hostname])} are the "
                                          f"same host ({ctx.hostname})", step="read fleet")
                self.hosts[ctx.hostname] = ctx
                self.uri_of[ctx.hostname] = uri
                self.marks[ctx.hostname] = get_mark(conn)
                self.vms[ctx.hostname] = all_domain_facts(conn, uri, ctx.pools, self.shared_pools)
        except Exception:
            self.close()
            raise

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for ctx in self.hosts.values():
            try:
                ctx.conn.close()
            except Exception:  # pylint: disable=broad-except
                pass

    def resolve(self, names: Iterable[str]) -> List[str]:
        """Host names for names or URIs; a clear error for unknown ones."""
        out = []
        by_uri = {redact_uri(u): h for h, u in self.uri_of.items()}
        by_uri.update({u: h for h, u in self.uri_of.items()})
        for n in names:
            if n in self.hosts:
                out.append(n)
            elif n in by_uri:
                out.append(by_uri[n])
            else:
                raise FleetmaintError(f"unknown host '{redact_uri(n)}': not one of {', '.join(sorted(self.hosts))}",
                                      step="resolve hosts")
        return out

    def planner_input(self, memory_headroom_mib: int = 1024, memory_overcommit: float = 1.0,
                      cpu_overcommit: float = 4.0, anti_affinity: Optional[Dict[str, List[str]]] = None,
                      priority: Optional[Dict[str, int]] = None, pinned: Iterable[str] = (),
                      dirty_rates: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
        groups: Dict[str, List[str]] = {}
        for g, members in (anti_affinity or {}).items():
            for m in members:
                groups.setdefault(m, []).append(g)
        pins = set(pinned)
        # A name that is not a VM of this fleet would silently turn a constraint off (a typo in a group):
        # refuse it, naming where it was given.
        known = {d["name"] for doms in self.vms.values() for d in doms}
        unknown = [f"'{m}' in anti_affinity group '{g}'" for g, members in sorted((anti_affinity or {}).items())
                   for m in members if m not in known]
        unknown += [f"'{m}' in pinned" for m in sorted(pins) if m not in known]
        unknown += [f"'{m}' in priority" for m in sorted(priority or {}) if m not in known]
        if unknown:
            raise FleetmaintError(f"unknown VM {', '.join(unknown)}: no host of this fleet "
                                  f"({', '.join(sorted(self.hosts))}) defines it; nothing was done",
                                  step="validate options", reason="unknown_vm")
        hosts, vms, skipped = [], [], []
        for name, ctx in sorted(self.hosts.items()):
            # Versions and machine types let the planner keep VMs off hosts that cannot run them, and off older
            # stacks while a newer one has room (placement.plan_evacuation).
            hosts.append({"name": name, "memory_mib": ctx.host["memory_total_mib"], "vcpus": ctx.host["cpu"]["count"],
                          "memory_overcommit": memory_overcommit, "cpu_overcommit": cpu_overcommit,
                          "headroom_mib": memory_headroom_mib, "maintenance": self.marks[name] is not None,
                          "hypervisor_version": ctx.host.get("hypervisor_version"),
                          "libvirt_version": ctx.host.get("libvirt_version"),
                          "machines": _machines(ctx.host)})
            for d in self.vms[name]:
                if d["state"] not in ("running", "paused"):
                    skipped.append({"vm": d["name"], "host": name, "reason": f"{d['state']}: not live-migratable; "
                                    "its definition stays on this host"})
                    continue
                vms.append({"name": d["name"], "host": name, "memory_mib": d["memory_mib"], "vcpus": d["vcpus"],
                            "anti_affinity": groups.get(d["name"], []), "priority": (priority or {}).get(d["name"], 0),
                            "pinned": bool(d["hostdevs"]) or d["name"] in pins,
                            "dirty_rate": (dirty_rates or {}).get(d["name"], 0.0), "home_host": d["home_host"],
                            "machine": d.get("machine")})
        return {"hosts": hosts, "vms": vms, "skipped": skipped}

    def placement(self, key: str = "uuid", skip: Iterable[str] = ()) -> Dict[str, Dict[str, List[str]]]:
        """Where each VM (by ``key``: uuid or name) runs and is defined, over every host but ``skip``."""
        skip = set(skip)
        return placement_of((h, d[key], d["active"], d["persistent"])
                            for h, doms in self.vms.items() if h not in skip for d in doms)
