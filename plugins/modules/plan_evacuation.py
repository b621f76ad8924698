#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: plan_evacuation
short_description: Plan where every VM of the hosts to empty goes, balanced and within limits
version_added: 0.1.0
description:
  - Reads every hypervisor in O(uris) and plans moving all running VMs off the hosts in O(evacuate).
  - Placement balances memory load (worst-fit decreasing), respects capacity with O(memory_headroom) and
    overcommit, keeps O(anti_affinity) groups apart, never chooses a host in maintenance (the mark that
    host evacuation leaves on the host itself), and leaves pinned VMs (passthrough devices, O(pinned)) where
    they are.
  - The schedule respects per-source, per-destination and fleet-wide concurrency O(limits) and estimates each
    migration with the pre-copy model; RV(makespan_s) is the estimated time to empty the hosts.
  - Knows versions (a rolling upgrade, hosts of two stacks at once). A host that does not offer a VM's machine
    type never takes it. Of the hosts that do, those whose QEMU and libvirt are not older than the VM's host are
    preferred; an older one is chosen only when none of those has room, and that move carries
    C(older_destination=true) and C(notes) saying so. A VM whose machine type no remaining host offers is
    unplaceable with code C(machine_type_unsupported), which refuses the plan, with reason C(blocked) when nothing
    else refuses it (more room would not help) and C(no_capacity) otherwise. Each move is checked again by the move
    rules (M(fleetmaint.libvirt.migration_check)) before it runs.
  - Refuses up front, changing nothing, when the remaining hosts cannot take the VMs.
  - Read-only.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.placement
  - fleetmaint.libvirt.migration_tuning.estimate
  - fleetmaint.libvirt.storage.shared_pools
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: Read-only; check mode returns the same plan.
  diff_mode:
    support: none
    description: Nothing changes.
options:
  uris:
    description: libvirt URIs of every hypervisor of the fleet (sources and candidate destinations).
    type: list
    elements: str
    required: true
  evacuate:
    description: Hosts to empty, by libvirt host name or URI.
    type: list
    elements: str
    required: true
  limits:
    description:
      - Concurrency limits, C(per_source) (outgoing per host, default 4 like vSphere on 1 GbE), C(per_destination)
        (incoming per host, default 4), C(fleet) (at once, default 8).
    type: dict
    default: {}
'''

EXAMPLES = r'''
- name: Plan emptying hv1
  fleetmaint.libvirt.plan_evacuation:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    evacuate: [hv1]
    anti_affinity:
      db: [db1, db2, db3]
    limits: {per_source: 2, per_destination: 2, fleet: 6}
  delegate_to: localhost
  run_once: true
  register: plan

- name: Show where each VM goes
  ansible.builtin.debug:
    msg: "{{ plan.moves | map(attribute='vm') | zip(plan.moves | map(attribute='destination')) | list }}"
'''

RETURN = r'''
moves:
  description: One entry per VM to move, in schedule order, with C(vm), C(source), C(destination), C(memory_mib),
    C(est_time_s), C(est_downtime_ms), C(converges), C(start_s), C(end_s).
  returned: success
  type: list
  elements: dict
  contains:
    older_destination:
      description: The destination's QEMU or libvirt is older than the source's; no host of the same or a newer
        stack had room. Present only on such a move.
      type: bool
      returned: when the destination runs an older stack
      sample: true
    notes:
      description: Why the move goes to an older stack, both hosts' versions, and that the VM's machine type is
        offered there. Present only with C(older_destination).
      type: list
      elements: str
      returned: when the destination runs an older stack
      sample:
        - "lab3 runs QEMU 7.2.22 / libvirt 9.0.0, older than lab2's QEMU 10.0.13 / libvirt 11.3.0: no host of the
          same or a newer stack has room for web1; machine type pc-i440fx-7.2 is offered there; once it runs there
          it cannot use what the newer QEMU added"
unplaceable:
  description: VMs that stay, with C(code) (C(pinned), C(no_capacity) or C(machine_type_unsupported), which also
    has C(machine)) and C(reason) (what does not fit, or which machine type no host offers).
  returned: success
  type: list
  elements: dict
skipped:
  description: VMs on the hosts to empty that are not running (nothing to live-migrate).
  returned: success
  type: list
  elements: dict
makespan_s:
  description: Estimated time until the last migration ends.
  returned: success
  type: float
load_after:
  description: Memory load share of each destination after the plan.
  returned: success
  type: dict
balance:
  description: C(max_load), C(min_load) and C(lower_bound) (perfect balance) of destinations after the plan.
  returned: success
  type: dict
maintenance:
  description: Hosts carrying a maintenance mark, with the mark (since, by, reason).
  returned: success
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.host_jobs import plan_host_evacuation
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import ESTIMATE, PLACEMENT, pick


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            uris=dict(type="list", elements="str", required=True),
            evacuate=dict(type="list", elements="str", required=True),
            **PLACEMENT, **ESTIMATE, **pick("limits", "shared_pools"),
        ),
        supports_check_mode=True,
    )
    run_engine(module, plan_host_evacuation)


if __name__ == "__main__":
    main()
