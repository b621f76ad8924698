#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: migration_check
short_description: Know before you move - can these VMs live-migrate to those hosts, and how long will it take
version_added: 0.1.0
description:
  - Checks one VM, a list of VMs, or every VM on the host at O(uri) against one or more destinations and
    returns, for each (VM, destination) pair, C(ok) and a list of findings, each with a stable C(code), a
    C(severity) (C(blocker) or C(warning)) and a message.
  - Uses exactly the rules M(fleetmaint.libvirt.live_migrate) applies before it moves anything.
  - Also estimates each VM's migration from the pre-copy model (total time, downtime, iterations,
    C(converges)) at O(bandwidth) and O(max_downtime), using a dirty rate measured by libvirt's page-sampling
    calculation when O(measure_dirty_rate) is set.
  - Read-only. Measuring the dirty rate samples guest pages for O(dirty_rate_seconds) and changes nothing.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.connection
  - fleetmaint.libvirt.migration_tuning.estimate
  - fleetmaint.libvirt.placement.headroom
  - fleetmaint.libvirt.storage.shared_pools
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: The module never changes anything; check mode returns the same result.
  diff_mode:
    support: none
    description: Nothing changes.
options:
  name:
    description: One VM to check. Without O(name) and O(names), every VM on the host is checked.
    type: str
  names:
    description: Several VMs to check.
    type: list
    elements: str
  dest_uris:
    description: libvirt URIs of the destinations to check against.
    type: list
    elements: str
    required: true
  copy_storage:
    description: Whether local disks would be copied (as C(copy_storage) of M(fleetmaint.libvirt.live_migrate)).
      With C(none), a disk on local storage is a C(disk_not_shared) blocker; otherwise a warning.
    type: str
    choices: [none, all, incremental]
    default: none
  tls:
    description: Whether the move would use TLS; a destination that does not look ready is C(tls_not_configured).
    type: bool
    default: true
  compression:
    description: Compression the move would use; checked against what libvirt accepts (probed), on the source and,
      where it is probed, on the destination. A method one end does not accept is a C(compression_unsupported)
      blocker naming that host and what it accepts.
    type: str
    choices: [none, xbzrle, mt, zstd, zlib]
    default: none
  measure_dirty_rate:
    description: Measure each running VM's dirty rate with libvirt's page-sampling calculation (takes
      O(dirty_rate_seconds) plus a little, all VMs at once). Without it the estimate assumes an idle guest.
    type: bool
    default: false
  dirty_rate_seconds:
    description: How long the dirty-rate calculation samples.
    type: int
    default: 1
notes:
  - A destination that cannot be reached is reported as a C(dest_unreachable) blocker on every pair, not as a
    module failure; an unreachable source or an unknown VM fails the module.
  - "Finding codes: cpu_incompatible, machine_type_unsupported, emulator_missing, disk_not_shared,
    disk_path_missing, pool_missing, network_missing, insufficient_memory, hostdev_passthrough, vm_not_running,
    vm_paused, vm_transient, same_host, dest_unreachable, tls_not_configured, vcpus_exceed_host,
    compression_unsupported, storage_unknown, vm_paused_disks_inactive, older_destination, and (from
    M(fleetmaint.libvirt.live_migrate) with C(postcopy_preempt)) postcopy_preempt_unsupported."
  - "Versions (a rolling upgrade, hosts of two stacks at once): when the destination's QEMU or libvirt is older than
    the source's (compared as numbers, major.minor.micro), the pair has an C(older_destination) finding naming both
    hosts' versions and the VM's machine type. It is a warning when the destination offers that machine type (the
    move works; the VM keeps only what the older QEMU has) and a blocker when it does not, together with
    C(machine_type_unsupported), whose message then says the destination is older. A VM defined on a newer QEMU
    (C(pc) became C(pc-i440fx-10.0) there, say) is so refused on an older host before anything moves."
seealso:
  - module: fleetmaint.libvirt.live_migrate
'''

EXAMPLES = r'''
- name: Can everything on hv1 go to hv2 or hv3?
  fleetmaint.libvirt.migration_check:
    uri: qemu+tls://hv1.example.com/system
    dest_uris:
      - qemu+tls://hv2.example.com/system
      - qemu+tls://hv3.example.com/system
    measure_dirty_rate: true
    bandwidth: 1000
  delegate_to: localhost
  register: check

- name: Stop before the window if anything is blocked
  ansible.builtin.assert:
    that: check.blocked == 0
    fail_msg: "{{ check.results | rejectattr('ok') | map(attribute='findings') | flatten
                  | selectattr('severity', 'equalto', 'blocker') | map(attribute='message') | list }}"

- name: VMs that will not converge at this bandwidth
  ansible.builtin.debug:
    msg: "{{ check.estimates | dict2items | selectattr('value.converges', 'equalto', false)
             | map(attribute='key') | list }}"
'''

RETURN = r'''
results:
  description: One entry per (VM, destination) pair.
  returned: always
  type: list
  elements: dict
  contains:
    vm: {description: "VM name.", type: str}
    source: {description: "Source host name.", type: str}
    destination: {description: "Destination host name (or its URI when unreachable).", type: str}
    destination_uri: {description: "Destination URI (redacted).", type: str}
    ok: {description: "No blocker.", type: bool}
    findings:
      description:
        - "Findings: code, severity (blocker or warning), message, detail."
        - "C(older_destination) has detail C(machine), C(offered) (true, false, or null when not known),
          C(source_qemu), C(source_libvirt), C(dest_qemu), C(dest_libvirt); C(machine_type_unsupported) has
          C(machine) and C(older_destination) (bool); C(compression_unsupported) has C(compression), C(host) (the
          end that does not accept it) and C(accepted)."
      type: list
      elements: dict
      sample:
        - code: older_destination
          severity: warning
          message: "lab3 runs QEMU 7.2.22 / libvirt 9.0.0, older than lab2's QEMU 10.0.13 / libvirt 11.3.0: machine
            type pc-i440fx-7.2 of web1 is offered there; once it runs there it cannot use what the newer QEMU added"
          detail: {machine: pc-i440fx-7.2, offered: true, source_qemu: 10.0.13, source_libvirt: 11.3.0,
                   dest_qemu: 7.2.22, dest_libvirt: 9.0.0}
estimates:
  description: Per VM, the pre-copy estimate at O(bandwidth) and O(max_downtime).
  returned: always
  type: dict
  sample:
    web1: {memory_mib: 2048, dirty_rate: {measured: true, mib_per_s: 12}, converges: true, iterations: 4,
           total_time_s: 17.9, downtime_ms: 81.2, rho: 0.094}
checked:
  description: Number of pairs checked.
  returned: always
  type: int
blocked:
  description: Number of pairs with at least one blocker.
  returned: always
  type: int
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_checks import check_moves
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import CONNECTION, ESTIMATE, pick


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            names=dict(type="list", elements="str"),
            dest_uris=dict(type="list", elements="str", required=True),
            measure_dirty_rate=dict(type="bool", default=False),
            dirty_rate_seconds=dict(type="int", default=1),
            **CONNECTION, **ESTIMATE, **pick("copy_storage", "tls", "compression", "memory_headroom", "shared_pools"),
        ),
        mutually_exclusive=[["name", "names"]],
        supports_check_mode=True,
    )
    run_engine(module, check_moves)


if __name__ == "__main__":
    main()
