#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_failover
short_description: Restart a dead, fenced hypervisor's VMs on the surviving hosts
version_added: 0.1.0
description:
  - For a host that is dead (see M(fleetmaint.libvirt.host_probe)) and B(fenced) - powered off or cut from
    storage, by your fence step - restarts the VMs that were running on it, on the hosts of O(uris), from the
    definitions M(fleetmaint.libvirt.domain_backup) saved. Placement is the evacuation planner's (capacity,
    balance).
  - Refuses to do anything unless O(fenced) is true, and stops when the failed host's libvirt (O(failed_uri))
    answers again. Never restarting a VM whose host might still run it is the point of this module.
  - Before the first start it writes a fence record (C(<fence_record_dir>/<host>.fenced)). The guard hook
    installed by the C(disaster_recovery) role refuses every VM start on that host while the record exists,
    so the stale copies cannot start when the host returns, even with autostart. M(fleetmaint.libvirt.host_failback)
    removes it.
  - VMs that cannot be recovered are reported in RV(unrecoverable), never dropped silently - disks on the dead
    host's local storage, passthrough devices, no capacity, no host with their network. VMs that were not
    running at backup time stay defined on the dead host (RV(not_running)).
  - Re-running is safe - VMs already running on a survivor are left alone (RV(already_running)); one defined
    but not started by an interrupted run is started.
  - Each VM keeps its home host (it is in its definition), so M(fleetmaint.libvirt.host_restore) brings it back
    live once the host returns.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
attributes:
  check_mode:
    support: full
    description: Plans the restarts and reports them; starts nothing and writes no record.
  diff_mode:
    support: none
    description: The plan and results are in the return values.
extends_documentation_fragment:
  - fleetmaint.libvirt.placement.headroom
  - fleetmaint.libvirt.storage.shared_pools
  - fleetmaint.libvirt.attributes
options:
  host:
    description: The failed host, as libvirt named it (its hostname, as in the backup's C(defined_on)).
    type: str
    required: true
  uris:
    description: libvirt URIs of the surviving hosts (not the failed one).
    type: list
    elements: str
    required: true
  failed_uri:
    description: The failed host's libvirt URI; probed before every start, and the module stops if it answers.
    type: str
  backup_dir:
    description: The directory M(fleetmaint.libvirt.domain_backup) writes.
    type: path
    required: true
  fence_record_dir:
    description: Where to write the fence record; storage every host sees when the guard hook is used.
    type: path
    required: true
  fenced:
    description:
      - You confirm the host was fenced (your fence step succeeded). With false the module refuses.
    type: bool
    required: true
  fence_evidence:
    description: What the fence step did, kept in the fence record.
    type: str
    default: ''
  probe_timeout:
    description: Seconds the probe of O(failed_uri) may take.
    type: float
    default: 5
requirements:
  - libvirt-python >= 9.0
'''

EXAMPLES = r'''
- name: Restart hv3's VMs elsewhere (after host_probe said dead and the fence step succeeded)
  fleetmaint.libvirt.host_failover:
    host: hv3
    failed_uri: qemu+tls://hv3.example.com/system
    uris: "{{ groups['hypervisors'] | difference(['hv3']) | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    backup_dir: /srv/fleetmaint/definitions
    fence_record_dir: /srv/shared/fleetmaint-fence
    fenced: true
    fence_evidence: "ipmi power off hv3-bmc at {{ now(utc=true) }}"
  delegate_to: localhost
'''

RETURN = r'''
recovered:
  description: VMs restarted by this run - C(vm), C(host).
  returned: always
  type: list
  elements: dict
already_running:
  description: VMs of the failed host already running on a survivor - C(vm), C(host).
  returned: always
  type: list
  elements: dict
unrecoverable:
  description: VMs that could not be restarted elsewhere - C(vm), C(reason).
  returned: always
  type: list
  elements: dict
not_running:
  description: VMs that were not running on the failed host at backup time (left defined there).
  returned: always
  type: list
  elements: dict
failed:
  description: Restarts that were tried and failed (their new definition removed again) - C(vm), C(reason).
  returned: always
  type: list
  elements: dict
fence_record:
  description: Path of the fence record.
  returned: always
  type: str
plan:
  description: The plan - C(restart), C(start_defined), C(already_running), C(unrecoverable), C(not_running).
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import pick
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.failover import failover_host
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine


def main() -> None:
    module = AnsibleModule(argument_spec=dict(
        host=dict(type="str", required=True),
        uris=dict(type="list", elements="str", required=True),
        failed_uri=dict(type="str"),
        backup_dir=dict(type="path", required=True),
        fence_record_dir=dict(type="path", required=True),
        fenced=dict(type="bool", required=True),
        fence_evidence=dict(type="str", default=""),
        **pick("shared_pools", "memory_headroom"),
        probe_timeout=dict(type="float", default=5),
    ), supports_check_mode=True)
    run_engine(module, failover_host)


if __name__ == "__main__":
    main()
