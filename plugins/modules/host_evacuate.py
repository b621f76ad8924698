#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_evacuate
short_description: Empty a hypervisor by live migration, balanced, concurrent, bounded
version_added: 0.1.0
description:
  - Plans where every running VM of O(host) goes (see M(fleetmaint.libvirt.plan_evacuation)), checks every move
    with the rules of M(fleetmaint.libvirt.migration_check), and refuses before anything moves if the fleet
    cannot take the VMs or a move is blocked.
  - Marks the host as in maintenance on the host itself (a libvirt secret named C(fleetmaint-maintenance)), so
    the mark survives the controller and no planner chooses the host as a destination until
    M(fleetmaint.libvirt.host_restore) clears it.
  - Runs the migrations concurrently within O(limits), each through M(fleetmaint.libvirt.live_migrate)'s code,
    escalating per VM and never retrying forever (O(max_attempts)).
  - Re-running after an interruption (even a killed controller) moves only what is still on the host.
  - Fails, after moving what it can, when any running VM stays on the host (a failed move, or a VM that cannot
    be placed, such as one with a passthrough device), naming each; the host must not be taken down then.
  - Prints progress when run on the controller (local connection).
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.fleet_moves
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
    description: Plans and checks every move and returns the plan; moves nothing and sets no mark.
  diff_mode:
    support: none
    description: Nothing to diff; RV(plan) is the plan.
options:
  mark_maintenance:
    description: Mark the host as in maintenance before moving anything.
    type: bool
    default: true
  exclude_destinations:
    description:
      - Hosts (names or URIs) that must take none of the VMs, for example the other hosts of a rolling patch
        batch that are emptied at the same time. Hosts with a maintenance mark are always excluded.
    type: list
    elements: str
    default: []
  reason:
    description: Reason recorded in the maintenance mark.
    type: str
    default: maintenance
'''

EXAMPLES = r'''
- name: Empty hv1 for maintenance
  fleetmaint.libvirt.host_evacuate:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    host: hv1
    anti_affinity: {db: [db1, db2]}
    allow_postcopy: false
    on_failure: stop
  delegate_to: localhost
  run_once: true
  register: evac
'''

RETURN = r'''
host:
  description: The host emptied.
  returned: always
  type: str
plan:
  description:
    - The plan followed - moves with destinations and estimates, unplaceable VMs, makespan, balance; each move
      also has its VM's C(profile) and the C(method) chosen for it (C(method), C(why), C(exclusive),
      C(predicted)), in dispatch order.
  returned: success
  type: dict
skipped:
  description: VMs on the host that are not running (their definitions stay).
  returned: success
  type: list
  elements: dict
staying:
  description:
    - VMs that cannot leave the host now whatever the destination, each with C(vm), C(host), C(reason) (a code
      of the move rules, for example C(vm_paused_disks_inactive)) and C(msg). They keep the host from being empty,
      so the evacuation fails after moving the others, naming them.
  returned: success and on failure after planning
  type: list
  elements: dict
vms:
  description:
    - Per VM - C(vm), C(source), C(destination), C(result) (moved, cold_moved, already_there, failed,
      not_started), C(attempts) (each with why, ok, msg, reason, metrics;
      xbzrle_cache_mib for an XBZRLE attempt), C(metrics) of the successful attempt,
      and for a failed VM C(reason) (the last attempt's code, for example C(vm_crashed)).
    - Its history - C(started_at) and C(ended_at) (epoch seconds), C(log) (the scheduler's steps - waiting,
      dispatch, attempt, attempt_failed, moved, cold_move - each with C(ts)), and per attempt C(mode) (how it
      moved - C(precopy), C(auto_converge), C(postcopy), C(suspend), C(cold)), C(started_at), C(ended_at),
      C(events) (the migration job's state changes) and C(samples) (a progress sample a second - phase, sent,
      remaining, dirty rate, throttle, downtime step), C(t) counting from the attempt's start. The maintenance
      report and the migration_report callback write them as one JSON-lines log per run (docs/move-log.md).
    - What was known before it moved and how it was chosen to move - C(profile) (C(memory_mib), C(in_use_mib)
      and where it came from, C(in_use_source) - QEMU's resident memory, the non-zero memory its last incoming
      migration sent when less (libvirt keeps it on that host until its libvirtd restarts), or the configured
      memory when libvirt gives none -, C(dirty_mib_s) measured by libvirt, C(disk_mib) to copy, and for a VM
      plain pre-copy would not move at its link C(working_set_mib) - what it rewrites, from a second, longer
      dirty-rate window, null when its rate held over it - and C(working_set) - C(seconds), C(mib_per_s), C(measured),
      C(reason)), C(method) (C(precopy),
      C(xbzrle), C(auto_converge), C(postcopy), C(suspend)), C(method_why), C(exclusive) (it had its link to itself),
      C(predicted) (C(time_s), C(downtime_ms), C(converges), C(bandwidth_mib_s) - for C(xbzrle) its first pass only,
      with C(converges) and C(downtime_ms) null, as what its writes leave of each page is not known before it moves; predicted again at dispatch
      from what the finished moves measured - C(from_measured_link), or C(from_remembered_link) before any
      had (the link an earlier job kept on the host), C(in_use_scale), and, once a pre-copy has
      finished, C(setup_ms) and C(switchover_ms), the middle value (of an even count the upper one) of what those took beyond their bytes, added to
      the model's C(model_time_s) and C(model_downtime_ms)) - and what happened, C(measured) (C(time_s),
      C(downtime_ms), C(time_vs_predicted)).
  returned: when migrations ran
  type: list
  elements: dict
calibration:
  description: What the finished moves really sent against the memory in use their profiles said
    (C(sent_vs_profile), sorted ratios; their median scales the predictions of the moves still waiting).
  returned: when migrations ran
  type: dict
links:
  description: Per host whose link the job shared, and per host named in O(link_bandwidth), C(given) and C(mib_s) (from O(link_bandwidth)), or the link
    C(measured_mib_s) from the job's own moves (the median of what each measured, its bytes per second times the
    moves that shared the link, on average, while it held it) that its later moves get, C(first_mib_s) what its
    first moves measured (those dispatched before any move on the link had measured it) and the number of
    C(samples), C(remembered) - the link an earlier job measured and kept on the host (C(mib_s), C(first_mib_s),
    C(at), C(age_s), C(moves), C(by)), which the job started from - and whether what it measured was C(kept) on
    the host for the jobs after it (C(not_kept) says why not).
  returned: when migrations ran
  type: dict
totals:
  description: Counts per result and C(elapsed_s).
  returned: when migrations ran
  type: dict
started_at:
  description: When the job's first move could start (epoch seconds).
  returned: when migrations ran
  type: float
ended_at:
  description: When the job's last move ended (epoch seconds).
  returned: when migrations ran
  type: float
stopped:
  description: Why no new migration was started, if that happened (a failure with on_failure=stop, overall timeout).
  returned: when migrations ran
  type: str
maintenance_marked:
  description: Whether this run set the maintenance mark (false if it was already set).
  returned: when not in check mode
  type: bool
reason:
  description:
    - Why the task failed, one code of the collection's vocabulary (README, "Reason codes"); C(incomplete) when
      some VMs did not move (each VM's own code is in C(vms[].reason)), C(blocked), C(no_capacity), C(busy),
      C(will_not_converge), C(unknown_vm) or C(invalid_option) when nothing was moved.
  returned: failure
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.host_jobs import EVACUATE_SPEC, evacuate_host
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine


def main() -> None:
    run_engine(AnsibleModule(argument_spec=EVACUATE_SPEC, supports_check_mode=True), evacuate_host)


if __name__ == "__main__":
    main()
