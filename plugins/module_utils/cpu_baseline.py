# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet's baseline CPU: what every host can run, and which VMs cannot run everywhere (rewritten to the
baseline when asked).
"""

from __future__ import annotations

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cpu_compat import (
    cpu_runnable, fleet_usable_models, host_model_cpu_xml, merge_cpu_verdicts, parse_cpu_xml, parse_domain_capabilities, replace_domain_cpu,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, wrap_error
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt, open_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import parse_domain
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_checks import libvirt_cpu_comparison
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri


def run(p, check_mode=False):
    if not p["uris"]:
        raise FleetmaintError("uris must name at least one host; nothing was done", step="validate options")
    conns = []
    try:
        hosts = []
        for uri in p["uris"]:
            conn = open_uri(uri)
            conns.append(conn)
            try:
                caps_xml = conn.getDomainCapabilities(None, p["arch"], p["machine"], p["virt_type"], 0)
            except libvirt.libvirtError as exc:
                raise wrap_error(exc, "reading domain capabilities", uri) from exc
            hosts.append({"conn": conn, "uri": uri, "hostname": conn.getHostname(),
                          "caps": parse_domain_capabilities(caps_xml), "host_model": host_model_cpu_xml(caps_xml)})
        models = [h["host_model"] for h in hosts if h["host_model"]]
        if len(models) != len(hosts):
            missing = [h["hostname"] for h in hosts if not h["host_model"]]
            raise FleetmaintError(f"host-model CPU is not supported on {', '.join(missing)}: no baseline possible",
                                  step="baseline")
        try:
            baseline_xml = conns[0].baselineHypervisorCPU(None, p["arch"], p["machine"], p["virt_type"], models, 0)
        except libvirt.libvirtError as exc:
            raise wrap_error(exc, "computing the baseline CPU", p["uris"][0]) from exc
        baseline = dict(parse_cpu_xml(baseline_xml), xml=baseline_xml)

        vms, diffs, incompatible = [], [], []
        changed = False
        for h in hosts:
            for dom in h["conn"].listAllDomains(0):
                name = dom.name()
                if p["vms"] and name not in p["vms"]:
                    continue
                persistent = bool(dom.isPersistent())
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if persistent else dom.XMLDesc(0)
                vm = parse_domain(xml)
                vm["virt_type"] = vm.get("virt_type") or p["virt_type"]
                not_on = []
                for other in hosts:
                    verdict = merge_cpu_verdicts(cpu_runnable(vm["cpu"], other["caps"]),
                                                 libvirt_cpu_comparison(other["conn"], xml, vm))
                    if verdict and verdict["compatible"] is False:
                        not_on.append({"host": other["hostname"], "reason": verdict["reason"]})
                entry = {"name": name, "host": h["hostname"], "cpu": vm["cpu"], "persistent": persistent,
                         "active": bool(dom.isActive()), "runnable_everywhere": not not_on, "not_runnable_on": not_on,
                         "rewritten": False, "needs_reboot": False}
                if not_on:
                    incompatible.append(name)
                    if p["apply"] and persistent:
                        new_xml = replace_domain_cpu(xml, baseline_xml)
                        diffs.append({"before_header": f"{name} on {h['hostname']} (persistent definition)",
                                      "after_header": f"{name} on {h['hostname']} (baseline CPU)",
                                      "before": _cpu_block(xml), "after": _cpu_block(new_xml)})
                        if not check_mode:
                            try:
                                h["conn"].defineXML(new_xml)
                            except libvirt.libvirtError as exc:
                                raise wrap_error(exc, f"redefining {name} with the baseline CPU", h["uri"]) from exc
                        entry.update(rewritten=True, needs_reboot=entry["active"])
                        changed = True
                vms.append(entry)
    finally:
        for c in conns:
            c.close()
    return {"changed": changed, "baseline": baseline, "fleet_usable_models": fleet_usable_models(
        [h["caps"] for h in hosts]), "hosts": [{"hostname": h["hostname"], "uri": redact_uri(h["uri"]),
                                               "host_model": h["caps"]["host_model"]["model"]} for h in hosts],
        "vms": vms, "incompatible": incompatible, "diff": diffs,
        **({"msg": "rewritten to the baseline CPU; running VMs keep their current CPU until their next boot: "
                   + ", ".join(v["name"] for v in vms if v["needs_reboot"])}
           if changed and any(v["needs_reboot"] for v in vms) else {})}


def _cpu_block(domain_xml):
    import xml.etree.ElementTree as ET

    cpu = ET.fromstring(domain_xml).find("cpu")
    return (ET.tostring(cpu, encoding="unicode").strip() + "\n") if cpu is not None else "(no <cpu> element)\n"
