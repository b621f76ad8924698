# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options shared by host_evacuate and host_restore (many migrations at once)."""

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
  shared_pools:
    description: Pools every host sees at the same path.
    type: list
    elements: str
    default: []
  tls:
    description: Encrypt migration streams (the default; set false only on an isolated migration network).
    type: bool
    default: true
  unsafe:
    description: Shared storage libvirt cannot recognise (see M(fleetmaint.libvirt.live_migrate)).
    type: bool
    default: false
  bandwidth:
    description: Bandwidth cap per migration, MiB/s (also used for the estimates; 128 when unset).
    type: int
  max_downtime:
    description: Top of each migration's downtime ladder, ms.
    type: int
    default: 500
  downtime_steps:
    description: Steps of the downtime ladder, spread over O(vm_timeout).
    type: int
    default: 5
  parallel_connections:
    description: Parallel connections per migration.
    type: int
  compression:
    description: Compression of migration streams (probed on each source).
    type: str
    choices: [none, xbzrle, mt, zstd, zlib]
    default: none
  copy_storage:
    description: Copy disks on local storage.
    type: str
    choices: [none, all, incremental]
    default: none
  memory_headroom:
    description: MiB each destination keeps free (placement and checks).
    type: int
    default: 1024
  limits:
    description:
      - Concurrency, C(per_source) (outgoing per host), C(per_destination) (incoming per host) and C(fleet)
        (at once). Defaults 2, 2 and 4; oVirt allows 2 outgoing per host, nova 1 per compute node.
    type: dict
    default: {}
  vm_timeout:
    description: Seconds each migration attempt may take before its escalation step acts.
    type: int
    default: 300
  max_attempts:
    description:
      - Attempts per VM, never more. Each attempt escalates as allowed - the downtime ladder, then
        auto-converge (O(allow_auto_converge)), then post-copy (O(allow_postcopy)), then pausing the guest to
        finish (O(allow_suspend)). A VM that fails for another reason than not converging is not retried.
    type: int
    default: 3
  allow_auto_converge:
    description: Let an attempt throttle the guest's vCPUs.
    type: bool
    default: true
  allow_postcopy:
    description: Let an attempt switch to post-copy (bounded time; the guest is lost if a host or the link dies
      during post-copy).
    type: bool
    default: false
  allow_suspend:
    description: Let an attempt pause the guest to finish (a pause instead of a risk).
    type: bool
    default: false
  on_failure:
    description: C(stop) starts no new migration after a VM failed (running ones finish); C(continue) goes on.
    type: str
    choices: [stop, continue]
    default: stop
  allow_cold_move:
    description:
      - When a VM still does not converge after its attempts, shut it down, move its definition with libvirt's
        offline migration (it is never defined on two hosts) and start it on the destination. Only for VMs whose
        disks are all on shared storage. The VM is down meanwhile; the result says for how long.
    type: bool
    default: false
  cold_shutdown_timeout:
    description: Seconds a cold move waits for the guest to shut down (ACPI).
    type: int
    default: 120
  cold_move_force:
    description: Force the guest off when it does not shut down in time (like pulling the plug). Without it, a
      guest that does not shut down keeps running on its source and the VM is reported failed.
    type: bool
    default: false
  overall_timeout:
    description: Seconds after which no new migration starts.
    type: int
  poll_interval:
    description: Seconds between job statistics samples of each migration.
    type: float
    default: 0.5
requirements:
  - libvirt-python >= 9.0
'''
