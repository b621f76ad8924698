#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_probe
short_description: Is a hypervisor dead? Ask it several independent ways
version_added: 0.1.0
description:
  - Probes a hypervisor through its libvirt URI, TCP ports on its address (for example SSH) and any number of
    commands of your own (a BMC's power status, a ping over a second network), each bounded by O(timeout).
  - RV(dead) is true only when at least O(min_probes) probes ran and not one of them reached the host. A
    libvirtd that crashed on a host still running its VMs answers on SSH or its BMC says "on" - that host is
    not dead, and restarting its VMs elsewhere would run them twice.
  - A command probe that cannot be run at all (missing program, time-out) fails the task rather than counting
    as "dead".
  - Changes nothing.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: Probing changes nothing; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes.
options:
  uri:
    description: The host's libvirt URI; its host part is the address the TCP probes use.
    type: str
    required: true
  tcp_ports:
    description: TCP ports to try on the host's address (a service other than libvirtd, such as SSH, tells a
      crashed libvirtd from a dead host).
    type: list
    elements: int
    default: [22]
  commands:
    description:
      - Commands (argument lists, run without a shell) whose exit status 0 means "the host is alive", for
        example C([ipmitool, -I, lanplus, -H, bmc1, -U, admin, -E, power, status]) wrapped to exit non-zero
        on "off".
    type: list
    elements: list
    default: []
  timeout:
    description: Seconds each probe may take.
    type: float
    default: 5
  min_probes:
    description: How many probes must have run for RV(dead) to be true.
    type: int
    default: 2
  fail_unless_dead:
    description: Fail the task unless the host is confirmed dead.
    type: bool
    default: false
requirements:
  - libvirt-python >= 9.0
'''

EXAMPLES = r'''
- name: Is hv3 really dead? libvirt, SSH and the BMC must all agree
  fleetmaint.libvirt.host_probe:
    uri: qemu+tls://hv3.example.com/system
    tcp_ports: [22]
    commands:
      - [/usr/local/bin/bmc-power-is-on, hv3-bmc.example.com]
    min_probes: 3
    fail_unless_dead: true
  delegate_to: localhost
'''

RETURN = r'''
dead:
  description: True when at least O(min_probes) probes ran and none reached the host.
  returned: always
  type: bool
alive:
  description: The probes that reached the host.
  returned: always
  type: list
  elements: str
probes:
  description: Each probe - C(probe) (what was tried), C(alive), C(detail) (the answer or the error).
  returned: always
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.probes import probe_job


def main() -> None:
    module = AnsibleModule(argument_spec=dict(
        uri=dict(type="str", required=True),
        tcp_ports=dict(type="list", elements="int", default=[22]),
        commands=dict(type="list", elements="list", default=[]),
        timeout=dict(type="float", default=5),
        min_probes=dict(type="int", default=2),
        fail_unless_dead=dict(type="bool", default=False),
    ), supports_check_mode=True)
    run_engine(module, probe_job)


if __name__ == "__main__":
    main()
