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
      - Concurrency limits, C(per_source) (outgoing per host, default 2 like oVirt), C(per_destination)
        (incoming per host, default 2), C(fleet) (at once, default 4).
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
unplaceable:
  description: VMs that stay, with C(code) (C(pinned) or C(no_capacity)) and C(reason) (what does not fit).
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
