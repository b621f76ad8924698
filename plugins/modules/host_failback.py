#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_failback
short_description: Make a host that returned after a failover safe again - undefine its stale copies
version_added: 0.1.0
description:
  - For a host whose VMs M(fleetmaint.libvirt.host_failover) restarted elsewhere and that now answers again,
    undefines every stale copy on it (a VM defined there, not running there, and running on another host -
    or restarted on one, as the fence record says). Disks are never touched; they belong to the running copy.
  - Then removes the host's fence record, so its guard hook lets VMs start again, and starts the VMs that were
    running there when it failed and could not be recovered elsewhere (local disks), when O(start_unrecovered).
  - Refuses and changes nothing when a VM runs on this host and on another one (say which to stop), or when it
    cannot tell which of two definitions is current.
  - Moving VMs back live is M(fleetmaint.libvirt.host_restore)'s job (the C(disaster_recovery) role runs it next).
  - Idempotent - with no stale copy and no record, nothing changes.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
attributes:
  check_mode:
    support: full
    description: Lists the stale copies and the VMs it would start; changes nothing.
  diff_mode:
    support: none
    description: Nothing to show beyond RV(stale_undefined).
extends_documentation_fragment:
  - fleetmaint.libvirt.storage.shared_pools
  - fleetmaint.libvirt.attributes
options:
  host:
    description: The returned host (name or URI, one of O(uris)).
    type: str
    required: true
  uris:
    description: libvirt URIs of every host, the returned one included.
    type: list
    elements: str
    required: true
  fence_record_dir:
    description: Where M(fleetmaint.libvirt.host_failover) wrote the fence record.
    type: path
    required: true
  start_unrecovered:
    description: Start the VMs the record lists as running at failure time and not recovered elsewhere.
    type: bool
    default: true
requirements:
  - libvirt-python >= 9.0
'''

EXAMPLES = r'''
- name: hv3 is back - remove its stale copies before anything else
  fleetmaint.libvirt.host_failback:
    host: hv3
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    fence_record_dir: /srv/shared/fleetmaint-fence
  delegate_to: localhost

- name: Then bring its VMs home live
  fleetmaint.libvirt.host_restore:
    host: hv3
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
  delegate_to: localhost
'''

RETURN = r'''
stale_undefined:
  description: Stale copies undefined on the host - C(vm), C(running_on) (where the live copy runs).
  returned: always
  type: list
  elements: dict
fence_record_cleared:
  description: Whether a fence record was there (and, unless in check mode, removed).
  returned: always
  type: bool
started:
  description: VMs started on the host because they could not be recovered elsewhere.
  returned: always
  type: list
  elements: str
start_failed:
  description: VMs that could not be started - C(vm), C(reason).
  returned: always
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import pick
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.failback import failback_host
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine


def main() -> None:
    module = AnsibleModule(argument_spec=dict(
        host=dict(type="str", required=True),
        uris=dict(type="list", elements="str", required=True),
        fence_record_dir=dict(type="path", required=True),
        start_unrecovered=dict(type="bool", default=True),
        **pick("shared_pools"),
    ), supports_check_mode=True)
    run_engine(module, failback_host)


if __name__ == "__main__":
    main()
