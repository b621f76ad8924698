#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cpu_baseline
short_description: The CPU every host of a fleet can run, and the VMs that could not move everywhere
version_added: 0.1.0
description:
  - Computes the fleet's baseline CPU with libvirt's hypervisor baseline API over each host's host-model CPU
    (like VMware EVC), lists the named CPU models every host can run, and reports every VM on those hosts
    whose CPU definition some host cannot run (so the VM could not live-migrate there).
  - With O(apply=true), rewrites those VMs' persistent definitions to the baseline CPU (guest topology kept).
    A running VM keeps its current CPU until its next boot; the result says which VMs need one.
    Check mode and C(--diff) show the XML change without making it.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: Reports what O(apply) would rewrite, with the diff, and rewrites nothing.
  diff_mode:
    support: full
    description: Shows each rewritten VM's CPU definition before and after.
options:
  uris:
    description: libvirt URIs of the hosts of the fleet (the first one computes the baseline).
    type: list
    elements: str
    required: true
  virt_type:
    description: Domain type the baseline is for (C(kvm), or C(qemu) for TCG hosts).
    type: str
    default: kvm
  machine:
    description: Machine type to ask the hosts about (default is each host's default).
    type: str
  arch:
    description: Guest architecture.
    type: str
    default: x86_64
  vms:
    description: Only consider these VMs (names). Default is every VM on the hosts.
    type: list
    elements: str
  apply:
    description: Rewrite the persistent definition of every VM that some host cannot run to the baseline CPU.
    type: bool
    default: false
requirements:
  - libvirt-python >= 9.0
notes:
  - Transient VMs have no persistent definition and are only reported.
'''

EXAMPLES = r'''
- name: What CPU can the whole fleet run, and which VMs could not go everywhere?
  fleetmaint.libvirt.cpu_baseline:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
  delegate_to: localhost
  run_once: true
  register: baseline

- name: Pin those VMs to the baseline (takes effect at their next boot); review with --check --diff first
  fleetmaint.libvirt.cpu_baseline:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    apply: true
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
baseline:
  description: The baseline CPU (mode, model, vendor, features) and its XML.
  returned: always
  type: dict
fleet_usable_models:
  description: Named CPU models that every host reports usable.
  returned: always
  type: list
  elements: str
hosts:
  description: Each host's name and host-model CPU model.
  returned: always
  type: list
  elements: dict
vms:
  description: Every VM considered, with C(runnable_everywhere), C(not_runnable_on) (host and reason), and
    C(rewritten) / C(needs_reboot) when O(apply) applies.
  returned: always
  type: list
  elements: dict
incompatible:
  description: Names of the VMs some host cannot run.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cpu_compat import (
    cpu_runnable, fleet_usable_models, host_model_cpu_xml, merge_cpu_verdicts, parse_cpu_xml,
    parse_domain_capabilities, replace_domain_cpu,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, wrap_error
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt, open_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import (
    fail_from_exception, require_libvirt,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import parse_domain
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_checks import libvirt_cpu_comparison


def run(p, check_mode):
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
        "vms": vms, "incompatible": incompatible, "diff": diffs}


def _cpu_block(domain_xml):
    import xml.etree.ElementTree as ET

    cpu = ET.fromstring(domain_xml).find("cpu")
    return (ET.tostring(cpu, encoding="unicode").strip() + "\n") if cpu is not None else "(no <cpu> element)\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            uris=dict(type="list", elements="str", required=True),
            virt_type=dict(type="str", default="kvm"),
            machine=dict(type="str"),
            arch=dict(type="str", default="x86_64"),
            vms=dict(type="list", elements="str"),
            apply=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    require_libvirt(module)
    if not module.params["uris"]:
        module.fail_json(msg="uris must name at least one host")
    try:
        result = run(module.params, module.check_mode)
    except Exception as exc:  # pylint: disable=broad-except
        fail_from_exception(module, exc, changed=False)
    if not module._diff:  # pylint: disable=protected-access
        result.pop("diff")
    if result["changed"] and any(v["needs_reboot"] for v in result["vms"]):
        result["msg"] = ("rewritten to the baseline CPU; running VMs keep their current CPU until their next boot: "
                         + ", ".join(v["name"] for v in result["vms"] if v["needs_reboot"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
