#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: domain_backup
short_description: Save every VM's persistent definition, placement and home host to a backup directory
version_added: 0.1.0
description:
  - Reads every hypervisor of O(uris) and writes, under O(path), one C(<vm>.xml) per persistently defined VM
    (its inactive definition, as C(virsh dumpxml --inactive) gives it) and C(index.json) - for each VM its
    UUID, the hosts it is defined and running on, its state, its home host and the checksum of its definition.
  - Writes atomically (a temporary file renamed over the old one) and only what changed, so a repeated run is
    C(changed=false); C(--diff) shows the changed index entries and definitions. Definitions of VMs no longer
    defined anywhere are kept (moved to C(removed/)), never silently dropped.
  - A VM defined on more than one host is reported in RV(defined_twice) (and fails the task with
    O(fail_on_defined_twice)), since restoring from such a backup could start it twice.
  - Secrets in definitions (graphics passwords) are not saved; C(VIR_DOMAIN_XML_SECURE) is never requested.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: Reports what would change; writes nothing.
  diff_mode:
    support: full
    description: Index entries and definitions before and after.
options:
  uris:
    description: libvirt URIs of every hypervisor to back up.
    type: list
    elements: str
    required: true
  path:
    description: Backup directory (created if missing) - on the controller, or on storage every host sees.
    type: path
    required: true
  fail_on_defined_twice:
    description: Fail when a VM is persistently defined on more than one host (the backup is still written).
    type: bool
    default: true
requirements:
  - libvirt-python >= 9.0
'''

EXAMPLES = r'''
- name: Back up the fleet's definitions before maintenance
  fleetmaint.libvirt.domain_backup:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    path: /srv/fleetmaint/definitions
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
vms:
  description: Per VM name - uuid, defined_on, running_on, state, home_host, autostart, sha256 of the saved
    definition.
  returned: always
  type: dict
written:
  description: VMs whose definition file was (or in check mode would be) written.
  returned: always
  type: list
  elements: str
removed:
  description: VMs no longer defined anywhere; their saved definition was moved to C(removed/).
  returned: always
  type: list
  elements: str
defined_twice:
  description: VMs persistently defined on more than one host, with the hosts.
  returned: always
  type: dict
path:
  description: The backup directory.
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.backups import backup
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine


def main() -> None:
    module = AnsibleModule(argument_spec=dict(uris=dict(type="list", elements="str", required=True),
                                              path=dict(type="path", required=True),
                                              fail_on_defined_twice=dict(type="bool", default=True)),
                           supports_check_mode=True)
    run_engine(module, backup)


if __name__ == "__main__":
    main()
