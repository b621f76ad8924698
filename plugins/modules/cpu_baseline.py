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

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cpu_baseline import run
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine


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
    run_engine(module, run)


if __name__ == "__main__":
    main()
