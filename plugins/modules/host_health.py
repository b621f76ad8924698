#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_health
short_description: Check that a hypervisor is fit to take VMs back (after patching or a reboot)
version_added: 0.1.0
description:
  - Waits until libvirt answers on O(uri) (a patched host may still be rebooting), then checks that the host
    reports its capabilities (host CPU, memory, a hypervisor), that every autostart network and storage pool is
    active, and optionally boots a canary VM from O(canary_xml) and sees it keep running.
  - Fails with a message naming every failed check. Used by the rolling patch role between the patch step and
    bringing VMs home, so VMs never return to a host that cannot run them.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.connection
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: partial
    description: Can run in check mode.
    details: Every read-only check runs; the canary VM is not started.
  diff_mode:
    support: none
    description: Changes nothing.
options:
  wait:
    description: Seconds to wait for libvirt to answer before failing.
    type: int
    default: 300
  require_autostart_active:
    description: Fail when an autostart network or storage pool is not active.
    type: bool
    default: true
  canary_xml:
    description:
      - Domain XML of a canary VM, started as a transient domain (nothing is defined) and destroyed after the
        check. It passes when it is still running after O(canary_seconds); make the XML destroy the domain on
        reboot and crash (C(on_reboot) and C(on_crash) C(destroy)) so a failed boot shows.
      - A domain of the same name must not exist on the host.
    type: str
  canary_seconds:
    description: How long the canary must keep running.
    type: int
    default: 10
'''

EXAMPLES = r'''
- name: hv1 answers, reports capabilities and boots a canary
  fleetmaint.libvirt.host_health:
    uri: qemu+tls://hv1.example.com/system
    canary_xml: "{{ lookup('ansible.builtin.file', 'canary.xml') }}"
  delegate_to: localhost
'''

RETURN = r'''
healthy:
  description: Whether every check passed (the task fails otherwise).
  returned: always
  type: bool
checks:
  description: Each check with C(name), C(ok) and C(detail).
  returned: always
  type: list
  elements: dict
host:
  description: Host name, libvirt and hypervisor versions, CPU model, memory (MiB) as the host reports them.
  returned: when libvirt answered
  type: dict
waited_s:
  description: Seconds spent waiting for libvirt to answer.
  returned: always
  type: float
canary:
  description: The canary's name, whether it ran, and for how long.
  returned: when O(canary_xml) is set and not in check mode
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.health import health
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import CONNECTION


def main() -> None:
    module = AnsibleModule(argument_spec=dict(**CONNECTION,
                                              wait=dict(type="int", default=300),
                                              require_autostart_active=dict(type="bool", default=True),
                                              canary_xml=dict(type="str"),
                                              canary_seconds=dict(type="int", default=10)),
                           supports_check_mode=True)
    run_engine(module, health)


if __name__ == "__main__":
    main()
