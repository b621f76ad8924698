#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: plan_rebalance
short_description: Plan rebalancing or consolidating a fleet from measured load; moves nothing
version_added: 0.2.0
description:
  - Measures every running VM of the fleet (memory in use and CPU over O(measure_seconds), from libvirt) and
    returns what M(fleetmaint.libvirt.fleet_rebalance) would do - the moves, each host's load before and after,
    the lower bound on moves - without moving anything.
  - Read-only. The planning is the pure C(rebalance) module of the collection (module_utils), the same
    fleet_rebalance follows.
  - The plan is made before the shared move rules are applied. M(fleetmaint.libvirt.fleet_rebalance) checks every
    move first and keeps a VM that cannot leave its host now (a paused VM) in place, planning again around it;
    its check mode gives that checked plan.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.rebalance
  - fleetmaint.libvirt.placement
  - fleetmaint.libvirt.storage.shared_pools
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: Read-only; check mode returns the same plan.
  diff_mode:
    support: none
    description: Nothing changes.
'''

EXAMPLES = r'''
- name: How unbalanced is the fleet, and what would fix it?
  fleetmaint.libvirt.plan_rebalance:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    threshold: 10
  delegate_to: localhost
  run_once: true
  register: plan

- name: Which two hosts could be powered down?
  fleetmaint.libvirt.plan_rebalance:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    goal: consolidate
    free_hosts: 2
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
moves:
  description:
    - The moves of the plan, in dispatch order - C(vm), C(source), C(destination), C(in_use_mib) (measured),
      C(memory_mib) (configured), C(cpu_cores) (measured), and for a rebalance C(for) (C(memory) or C(cpu), what
      the move balances), C(why), and C(swap_with) for the two moves of a swap.
  returned: always
  type: list
  elements: dict
balanced:
  description: Whether every host in service ends within the threshold, for memory and for CPU (O(goal=balance)).
  returned: when O(goal=balance)
  type: bool
memory_balanced:
  description: Whether every host ends within RV(band_pct).
  returned: when O(goal=balance)
  type: bool
cpu_balanced:
  description: Whether every host ends within RV(cpu_band_pct).
  returned: when O(goal=balance)
  type: bool
stopped:
  description: Why the rebalance stopped before every host was balanced (max_moves, or no move helps).
  returned: when O(goal=balance)
  type: str
lower_bound:
  description: The fewest moves any plan needs to balance the fleet (judge RV(moves)' length against it).
  returned: when O(goal=balance)
  type: int
fleet_load_pct:
  description: The fleet's memory in use as a percentage of its hosts' memory (moves do not change it).
  returned: when O(goal=balance)
  type: float
band_pct:
  description: The band every host should end in, percent of its memory in use (low, high).
  returned: when O(goal=balance)
  type: list
  elements: float
load_before_pct:
  description: Each host's memory in use, percent, as measured before anything moved.
  returned: always
  type: dict
load_after_pct:
  description: Each host's memory in use, percent, once the plan's moves are done (from the same measurement).
  returned: always
  type: dict
cpu_cores:
  description: Each host's CPU use by its VMs, in cores, measured over O(measure_seconds).
  returned: when O(goal=balance)
  type: dict
fleet_cpu_pct:
  description: The cores the fleet's VMs use as a percentage of its hosts' cores (moves do not change it).
  returned: when O(goal=balance)
  type: float
cpu_band_pct:
  description: The band every host's CPU should end in, percent of its cores (low, high).
  returned: when O(goal=balance)
  type: list
  elements: float
cpu_before_pct:
  description: Each host's CPU use by its VMs, percent of its cores, as measured before anything moved.
  returned: when O(goal=balance)
  type: dict
cpu_after_pct:
  description: Each host's CPU use, percent of its cores, once the plan's moves are done (from the same measurement).
  returned: when O(goal=balance)
  type: dict
measured:
  description: Per VM - C(host), C(memory_mib), C(in_use_mib), C(cpu_cores).
  returned: always
  type: dict
free:
  description: With O(goal=consolidate), the hosts emptied (marked in maintenance, ready to power down).
  returned: when O(goal=consolidate)
  type: list
  elements: str
keep:
  description: With O(goal=consolidate), the hosts that hold the VMs.
  returned: when O(goal=consolidate)
  type: list
  elements: str
memory_moved_mib:
  description: With O(goal=consolidate), the configured memory of the VMs moved.
  returned: when O(goal=consolidate)
  type: int
skipped:
  description: VMs that are not running (not live-migratable; they stay).
  returned: always
  type: list
  elements: dict
msg:
  description: What was (or would be) moved, and each host's load before and after.
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet_jobs import PLAN_SPEC, plan_fleet_rebalance
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine


def main() -> None:
    run_engine(AnsibleModule(argument_spec=PLAN_SPEC, supports_check_mode=True), plan_fleet_rebalance)


if __name__ == "__main__":
    main()
