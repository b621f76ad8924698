#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_patch_level
short_description: Read or record a hypervisor's patch level, kept on the host itself
version_added: 0.1.0
description:
  - Reads the patch level recorded on a hypervisor, or records a new one.
  - The level lives on the host, in libvirt (a value-less persistent secret with usage name
    C(fleetmaint-patch-level) whose description holds the level, when and by whom), so any controller reads
    it and it survives libvirtd restarts and reboots. The rolling patch role records it after a host was
    patched and passed its health checks, and skips hosts already at the target level when re-run.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.connection
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: Reports whether the level would change; records nothing.
  diff_mode:
    support: full
    description: Shows the level before and after.
options:
  level:
    description:
      - The level to record. Leave unset to only read the current level.
      - Any string - a date, a package set's version, a ticket number.
    type: str
  by:
    description: Who recorded it (stored with the level).
    type: str
    default: fleetmaint.libvirt.host_patch_level
notes:
  - Drivers without secrets (for example C(test:///default)) read as having no level and cannot record one.
'''

EXAMPLES = r'''
- name: Read hv1's patch level
  fleetmaint.libvirt.host_patch_level:
    uri: qemu+tls://hv1.example.com/system
  delegate_to: localhost
  register: level

- name: Record that hv1 is at 2026-11
  fleetmaint.libvirt.host_patch_level:
    uri: qemu+tls://hv1.example.com/system
    level: "2026-11"
  delegate_to: localhost
'''

RETURN = r'''
level:
  description: The level recorded on the host after the task (null if none).
  returned: always
  type: str
  sample: "2026-11"
previous:
  description: The level before the task (null if none).
  returned: always
  type: str
versions:
  description:
    - What the host runs now, read from its libvirt - the versions a hypervisor patch changes. The rolling patch
      role reads them before and after each host's patch, and its report shows both.
  returned: always
  type: dict
  contains:
    libvirt:
      description: The libvirt daemon's version.
      type: str
      sample: "11.3.0"
    hypervisor:
      description: The hypervisor driver's name.
      type: str
      sample: QEMU
    hypervisor_version:
      description: The hypervisor's version (QEMU's), null if the driver does not say.
      type: str
      sample: "10.0.13"
recorded:
  description: The whole note - level, since (epoch seconds), by.
  returned: when a level is recorded
  type: dict
  sample: {level: "2026-11", since: 1795000000, by: fleetmaint.libvirt.rolling_patch}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.maintenance import patch_level
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import CONNECTION


def main() -> None:
    module = AnsibleModule(argument_spec=dict(**CONNECTION,
                                              level=dict(type="str"),
                                              by=dict(type="str", default="fleetmaint.libvirt.host_patch_level")),
                           supports_check_mode=True)
    run_engine(module, patch_level)


if __name__ == "__main__":
    main()
