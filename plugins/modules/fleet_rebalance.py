#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: fleet_rebalance
short_description: Rebalance a fleet by measured load, or consolidate it onto fewer hosts, live
version_added: 0.2.0
description:
  - Measures every running VM of the fleet - the memory it really uses and its CPU over O(measure_seconds), from
    libvirt - and with O(goal=balance) moves the fewest VMs (at most O(max_moves)) that bring every host within
    O(threshold) percent of the fleet's load, from the most loaded hosts to the least loaded; with
    O(goal=consolidate) empties O(free_hosts) hosts (those whose emptying moves the least memory the rest can
    hold with headroom) and marks them in maintenance, ready to power down, or refuses up front with the numbers.
  - Honours capacity with O(memory_headroom) and overcommit, O(anti_affinity), O(pinned) VMs (and passthrough
    devices) and hosts in maintenance (never a source or a destination). Every move is checked with the shared
    move rules before anything moves, and runs through the same scheduler as an evacuation - its method chosen
    from the VM's profile, O(limits), escalation, progress - while the job holds the lease of every host it
    touches (M(fleetmaint.libvirt.host_job) shows it and can cancel it).
  - A balanced fleet moves nothing (C(changed=false)). Check mode shows the moves and each host's load before and
    after. M(fleetmaint.libvirt.plan_rebalance) gives the plan alone.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.rebalance
  - fleetmaint.libvirt.placement
  - fleetmaint.libvirt.storage
  - fleetmaint.libvirt.migration_tuning
  - fleetmaint.libvirt.move_limits
  - fleetmaint.libvirt.measurement
  - fleetmaint.libvirt.attributes
  - fleetmaint.libvirt.attributes.action
attributes:
  check_mode:
    support: full
    description: Measures, plans and checks every move; moves nothing and sets no mark.
  diff_mode:
    support: none
    description: The plan (RV(moves), RV(load_before_pct), RV(load_after_pct)) says what would change.
options:
  peer_uris:
    description:
      - Per destination host name, the URI the source's libvirtd uses to reach it (peer-to-peer migration), when it
        differs from the one in O(uris) (for example a migration network).
    type: dict
    default: {}
  reason:
    description: With O(goal=consolidate), the reason recorded in the maintenance mark of the hosts emptied.
    type: str
    default: "consolidated: empty, ready to power down"
'''

EXAMPLES = r'''
- name: Rebalance the fleet (at most 10 moves), every host within 10 % of the fleet's memory in use
  fleetmaint.libvirt.fleet_rebalance:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    threshold: 10
    max_moves: 10
  delegate_to: localhost
  run_once: true

- name: Free one host for the night (left marked in maintenance, ready to power down)
  fleetmaint.libvirt.fleet_rebalance:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    goal: consolidate
    free_hosts: 1
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
  description: Each host's CPU use by its VMs, in cores, measured over O(measure_seconds) (each VM's the lower of its two halves).
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
staying:
  description:
    - VMs the plan would have moved that cannot leave their host now (C(vm), C(host) where they stay, C(reason),
      C(msg)), for example a paused VM QEMU would crash on a move. Each is kept where it is and the plan made again
      around it (check mode too), so such a VM never refuses the job; RV(msg) names them.
  returned: always
  type: list
  elements: dict
msg:
  description: What was (or would be) moved, and each host's load before and after.
  returned: always
  type: str
vms:
  description: Per VM moved - as M(fleetmaint.libvirt.host_evacuate)'s RV(vms) (result, attempts, method, predicted,
    measured, history).
  returned: when migrations ran
  type: list
  elements: dict
totals:
  description: Counts per result and C(elapsed_s).
  returned: when migrations ran
  type: dict
maintenance_marked:
  description: With O(goal=consolidate), the hosts this run marked in maintenance.
  returned: when O(goal=consolidate) moved or marked
  type: list
  elements: str
reason:
  description:
    - Why the task failed, one code of the collection's vocabulary (README, "Reason codes") - C(no_capacity) (the
      rest cannot hold the load; nothing moved), C(blocked), C(busy), C(will_not_converge), C(unknown_vm),
      C(invalid_option), C(cancelled), C(incomplete) (some VMs did not move; each VM's code is in its result).
  returned: failure
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet_jobs import REBALANCE_SPEC, rebalance_fleet
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine


def main() -> None:
    run_engine(AnsibleModule(argument_spec=REBALANCE_SPEC, supports_check_mode=True), rebalance_fleet)


if __name__ == "__main__":
    main()
