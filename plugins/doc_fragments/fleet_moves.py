# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The fleet and the host of host_evacuate and host_restore; their other options are in storage, migration_tuning,
    placement and move_limits."""

    DOCUMENTATION = r'''
options:
  uris:
    description: libvirt URIs of every hypervisor of the fleet, as seen from where the task runs.
    type: list
    elements: str
    required: true
  host:
    description: The host to act on, by libvirt host name or URI.
    type: str
    required: true
  peer_uris:
    description: Per destination host name, its URI as the other hypervisors' libvirtd reach it (peer-to-peer).
    type: dict
    default: {}
requirements:
  - libvirt-python >= 9.0
'''
