# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The options of fleet_rebalance and plan_rebalance that say what to plan (fleet_jobs.PLAN_SPEC)."""

    DOCUMENTATION = r'''
options:
  uris:
    description: libvirt URIs of every hypervisor of the fleet (what is balanced, and where VMs may go).
    type: list
    elements: str
    required: true
  goal:
    description:
      - C(balance) moves the fewest VMs that bring every host within O(threshold) percent of the fleet's load.
      - C(consolidate) empties O(free_hosts) hosts onto the rest (with headroom) and marks them in maintenance,
        ready to power down, choosing the hosts whose emptying moves the least memory; refuses up front, with
        the numbers, when the rest cannot take the load.
    type: str
    choices: [balance, consolidate]
    default: balance
  threshold:
    description:
      - How far from the fleet's load a host may be, in percent of it - the fleet at 40 % of memory in use and
        a threshold of 10 puts every host between 36 % and 44 %.
      - Load is measured - the memory the VMs really use (QEMU's resident memory, as libvirt reports it) as a
        share of the host's memory, not their configured sizes; and the cores they use (libvirt's CPU time over
        O(measure_seconds)) as a share of the host's cores.
      - Memory is balanced first, then CPU - its band is the same O(threshold) percent of the fleet's CPU load, but
        never narrower than 5 % of a host's cores either side (below that a short window's measurement is noise).
        A move for CPU never takes a host's memory out of its band; where a single move would, a busy VM is
        swapped for an idle one of about its size.
    type: float
    default: 10.0
  max_moves:
    description: The most VMs moved in one run (a rebalance stops there, balanced or not, and says so).
    type: int
    default: 10
  free_hosts:
    description: With O(goal=consolidate), how many hosts to empty.
    type: int
    default: 1
  measure_seconds:
    description:
      - The window over which each VM's CPU use is measured (memory in use is read at once); 0 to skip CPU.
      - A VM's CPU use is the lower of the window's two halves, its sustained use, so that a burst (a guest catching
        up just after it moved) is not taken for load and chased by the next rebalance.
    type: float
    default: 2.0
'''
