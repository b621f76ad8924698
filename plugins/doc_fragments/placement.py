# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Placement (module_utils/options.py PLACEMENT), HEADROOM alone (modules that check one destination), and
    CAPACITY (headroom and overcommit: host_restore, which fits VMs on their home host)."""

    DOCUMENTATION = r'''
options:
  memory_headroom:
    description: MiB each destination keeps free beyond the VMs' memory (placement and the move rules).
    type: int
    default: 1024
  memory_overcommit:
    description: Memory overcommit ratio of destinations.
    type: float
    default: 1.0
  cpu_overcommit:
    description: vCPU overcommit ratio of destinations.
    type: float
    default: 4.0
  anti_affinity:
    description: Groups of VMs that must not share a host, as a dict of group name to a list of VM names.
    type: dict
    default: {}
  priority:
    description: VM priorities (higher moves first), as a dict of VM name to number.
    type: dict
    default: {}
  pinned:
    description: VMs to leave where they are, besides those with passthrough devices.
    type: list
    elements: str
    default: []
'''

    # The same text as in DOCUMENTATION (ansible-test reads fragments as literal strings).
    HEADROOM = r'''
options:
  memory_headroom:
    description: MiB each destination keeps free beyond the VMs' memory (placement and the move rules).
    type: int
    default: 1024
'''

    # The same text as in DOCUMENTATION.
    CAPACITY = r'''
options:
  memory_headroom:
    description: MiB each destination keeps free beyond the VMs' memory (placement and the move rules).
    type: int
    default: 1024
  memory_overcommit:
    description: Memory overcommit ratio of destinations.
    type: float
    default: 1.0
  cpu_overcommit:
    description: vCPU overcommit ratio of destinations.
    type: float
    default: 4.0
'''
