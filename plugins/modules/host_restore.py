#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_restore
short_description: Bring every VM whose home is this host back to it, then clear its maintenance mark
version_added: 0.1.0
description:
  - Finds, on every host of O(uris), the running VMs whose home host (recorded in their own metadata by
    M(fleetmaint.libvirt.live_migrate), so it works whichever controller evacuated them) is O(host), checks each
    move back, and live-migrates them home with the same concurrency, escalation and failure handling as
    M(fleetmaint.libvirt.host_evacuate).
  - VMs whose home host was changed on purpose stay where they are.
  - Before anything moves, checks that the home host has room for what comes home, every VM counted together -
    memory (its memory times O(memory_overcommit), less O(memory_headroom) and the memory of the VMs running there,
    and no more than the memory libvirt reports available less O(memory_headroom)) and vCPUs (times
    O(cpu_overcommit)), the rule the evacuation's planner uses. When not everything fits, it brings home what fits,
    chosen to bring home the most VMs and then the most memory, and leaves the rest where they are with their home
    unchanged, listed in RV(staying) with reason C(no_capacity) and the numbers. The task then fails with reason
    C(no_capacity) and keeps the maintenance mark, so a rolling patch records the host as not fully restored; run it
    again once there is room and it brings home the rest. Check mode says the same before anything moves.
  - Clears the host's maintenance mark when every VM is home (O(clear_maintenance)); otherwise keeps it.
  - Idempotent - with every VM home and no mark, nothing changes.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.fleet_moves
  - fleetmaint.libvirt.storage
  - fleetmaint.libvirt.migration_tuning
  - fleetmaint.libvirt.placement.capacity
  - fleetmaint.libvirt.move_limits
  - fleetmaint.libvirt.measurement
  - fleetmaint.libvirt.attributes
  - fleetmaint.libvirt.attributes.action
attributes:
  check_mode:
    support: full
    description: Lists and checks the moves home; moves nothing and keeps the mark.
  diff_mode:
    support: none
    description: Nothing to diff; RV(moves) is the plan.
options:
  clear_maintenance:
    description: Clear the host's maintenance mark once every VM is home.
    type: bool
    default: true
'''

EXAMPLES = r'''
- name: Bring hv1's VMs home after maintenance
  fleetmaint.libvirt.host_restore:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    host: hv1
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
host:
  description: The home host.
  returned: always
  type: str
moves:
  description: The moves home - C(vm), C(source), C(destination), the VM's C(profile), the C(method) chosen for it,
    C(method_why), C(exclusive) and C(predicted) (as in RV(vms)).
  returned: success
  type: list
  elements: dict
staying:
  description:
    - VMs of this home that cannot move now (C(vm), C(host) where they stay, C(reason), C(msg)), for example a
      paused VM QEMU would crash on a second move. They are left where they are with their home unchanged; the
      others come home and the restore succeeds, naming them.
    - VMs the home host has no room for, C(reason) C(no_capacity), with C(memory_mib) and C(vcpus) (what the VM
      needs) and C(free_memory_mib) and C(free_vcpus) (what the home host has free, headroom kept, once the VMs that
      fit are home). They too stay where they are, home unchanged; the restore fails with reason C(no_capacity)
      and keeps the maintenance mark.
  returned: when the moves home were listed (also when the restore then fails)
  type: list
  elements: dict
capacity:
  description:
    - The home host's room for the VMs coming home, before they come - C(host), C(memory_mib) and C(vcpus) free for
      them (headroom and overcommit applied, the VMs running there counted), C(used_memory_mib) and C(used_vcpus) of
      the VMs running there, C(available_mib) (the memory libvirt reports available), C(free_memory_mib_after) and
      C(free_vcpus_after) once the VMs that fit are home.
  returned: when the moves home were listed (also when the restore then fails)
  type: dict
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
maintenance_cleared:
  description: Whether this run cleared the maintenance mark.
  returned: when every VM is home and a mark was there
  type: bool
reason:
  description:
    - Why the task failed, one code of the collection's vocabulary (README, "Reason codes"); C(incomplete) when
      some VMs did not move (each VM's own code is in C(vms[].reason)), C(no_capacity) when the only VMs left away
      are those the home host has no room for (RV(staying); what fits came home), C(blocked), C(will_not_converge), C(busy),
      C(unknown_vm) or C(invalid_option) when nothing was moved.
  returned: failure
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.host_jobs import RESTORE_SPEC, restore_host
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine


def main() -> None:
    run_engine(AnsibleModule(argument_spec=RESTORE_SPEC, supports_check_mode=True), restore_host)


if __name__ == "__main__":
    main()
