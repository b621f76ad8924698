#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: live_migrate
short_description: Live-migrate one VM between libvirt hosts, safely and observably
version_added: 0.1.0
description:
  - Moves one running VM from the host at O(uri) to the host at O(dest_uri) with libvirt live migration,
    and reports what happened with libvirt's job statistics.
  - B(Safe.) The VM ends persistently defined on exactly one host. Before anything starts, the move is
    checked with the same rules as C(migration_check) (network, pools and disk paths, memory, CPU, machine
    type, passthrough devices, TLS, compression); any blocker fails the task and nothing changes. If the
    migration fails before switchover, the job is aborted and the VM keeps running on the source (resumed
    if libvirt left it paused). The error names the VM, both hosts, the phase and libvirt's cause.
  - B(Idempotent.) A VM already running on the destination and absent from the source is C(changed=false).
    A VM present on both hosts is refused, never migrated onto a second copy.
  - B(Home host.) The first move records the source as the VM's home host in its domain metadata; later
    moves keep it (see M(fleetmaint.libvirt.hypervisor_info), RV(home_host)).
  - B(Bounded.) O(timeout) with O(timeout_action), O(progress_timeout), a downtime ladder
    (O(downtime_steps) up to O(max_downtime)), O(auto_converge) and O(postcopy) keep a migration whose guest
    dirties memory faster than the link from running forever.
  - B(Progress.) When the task runs on the controller (delegated to C(localhost), or a local connection), the
    action plugin runs the migration there and prints a progress line every few seconds; the same lines
    reach ansible-runner and AWX job output. Elsewhere the module runs on the target without live progress.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.connection
  - fleetmaint.libvirt.storage
  - fleetmaint.libvirt.migration_tuning
  - fleetmaint.libvirt.placement.headroom
  - fleetmaint.libvirt.attributes
  - fleetmaint.libvirt.attributes.action
attributes:
  check_mode:
    support: full
    description: Runs every check (VM exists and runs, destination reachable, options supported, capacity,
      networks, storage) and returns the plan (flags, ladder, disks to copy) without moving anything.
  diff_mode:
    support: none
    description: A migration moves a VM; there is no configuration to diff. RV(options) shows the plan.
options:
  name:
    description: Name of the VM. One of O(name) and O(uuid) is required.
    type: str
  uuid:
    description: UUID of the VM.
    type: str
  dest_uri:
    description: libvirt URI of the destination host, as seen from where the task runs.
    type: str
    required: true
  peer_uri:
    description:
      - The destination URI as the source libvirtd sees it (peer-to-peer migration connects from the source
        host). Defaults to O(dest_uri).
    type: str
  migration_uri:
    description:
      - Where QEMU sends the migration stream (for example C(tcp://10.0.0.3) for a dedicated migration
        network). Default lets libvirt choose (the destination's C(migration_host) setting).
    type: str
  p2p:
    description: Peer-to-peer migration (the source libvirtd drives it; survives the controller losing its
      connection to the destination).
    type: bool
    default: true
  persistent:
    description:
      - Define the VM on the destination. Must equal O(undefine_source), so the VM stays defined on exactly
        one host.
    type: bool
    default: true
  undefine_source:
    description: Remove the definition from the source once the VM runs on the destination.
    type: bool
    default: true
  auto_converge:
    description: Let QEMU throttle the guest's vCPUs when memory is dirtied faster than it is sent.
    type: bool
    default: false
  auto_converge_initial:
    description: Initial vCPU throttle percentage of auto-converge (QEMU's default is 20). Needs O(auto_converge).
    type: int
  auto_converge_increment:
    description: Throttle increase per iteration that does not converge (QEMU's default is 10). Needs
      O(auto_converge).
    type: int
  postcopy:
    description:
      - C(never) - pre-copy only.
      - C(after_first_pass) - switch once the first pass has sent all memory (the guest's pages are on the
        destination, only what it dirtied since is fetched on demand); what host_evacuate chooses for a VM
        pre-copy will not converge for when post-copy is allowed.
      - C(after_timeout) - switch to post-copy when O(timeout) expires, or earlier when O(convergence_watch)
        measures that pre-copy will not converge (then O(timeout_action) is C(postcopy)).
      - C(immediate) - switch as soon as the job runs.
      - After the switch the guest runs on the destination and pulls missing pages. Bounded time, higher risk -
        if either host dies then, the guest is lost. A broken link is recoverable - the module watches the
        migration for up to 180 s after the call fails, resumes it with libvirt's post-copy recovery
        (C(VIR_MIGRATE_POSTCOPY_RESUME)) once the link allows, and removes the definition a half-finished
        migration leaves on the source; after that a re-run does the same.
    type: str
    choices: [never, after_first_pass, after_timeout, immediate]
    default: never
  timeout:
    description: Seconds after which O(timeout_action) is taken if the migration has not finished.
    type: int
  timeout_action:
    description:
      - C(abort) - cancel; the VM keeps running on the source.
      - C(postcopy) - switch to post-copy (needs O(postcopy) not C(never)).
      - C(suspend) - pause the guest so the rest converges, then resume it on the destination.
    type: str
    choices: [abort, postcopy, suspend]
    default: abort
  progress_timeout:
    description: Abort when the remaining data has not reached a new low for this many seconds (a
      migration that is not converging), unless post-copy is running.
    type: int
  postcopy_preempt:
    description:
      - Require post-copy preempt for this move - after the switch to post-copy, pages the guest waits for travel
        on a channel of their own instead of queueing behind the background copy, so the guest stalls less.
      - libvirt has no flag for it - from libvirt 9.9 it starts every post-copy migration with QEMU's
        postcopy-preempt when both ends have it (libvirt 9.9 and QEMU 8.0 or later). This option sets no flag;
        it checks both hosts before anything moves, and an end without it is a C(postcopy_preempt_unsupported)
        blocker (nothing changes) instead of a post-copy without preempt.
      - Needs O(postcopy) other than C(never).
    type: bool
    default: false
notes:
  - Only C(persistent=true, undefine_source=true) (the default) and C(persistent=false, undefine_source=false)
    are accepted; the other two combinations would leave the VM defined on two hosts or on none.
  - After post-copy, libvirt keeps no completed-job statistics on the destination; the metrics then come from
    the last sample taken on the source (RV(metrics.source) says which).
seealso:
  - module: fleetmaint.libvirt.hypervisor_info
  - name: libvirt migration guide
    description: Flags, parameters and modes.
    link: https://libvirt.org/migration.html
'''

EXAMPLES = r'''
- name: Move web1 from hv1 to hv2 over TLS (the default)
  fleetmaint.libvirt.live_migrate:
    name: web1
    uri: qemu+tls://hv1.example.com/system
    dest_uri: qemu+tls://hv2.example.com/system
  delegate_to: localhost

- name: A busy database - cap bandwidth, climb a downtime ladder, then post-copy after 2 minutes
  fleetmaint.libvirt.live_migrate:
    name: db1
    uri: qemu+tls://hv1.example.com/system
    dest_uri: qemu+tls://hv3.example.com/system
    bandwidth: 500
    max_downtime: 500
    downtime_steps: 5
    postcopy: after_timeout
    timeout: 120
  delegate_to: localhost

- name: A VM on local disks - copy them, with two parallel connections and xbzrle
  fleetmaint.libvirt.live_migrate:
    name: build7
    uri: qemu+tls://hv1.example.com/system
    dest_uri: qemu+tls://hv2.example.com/system
    copy_storage: all
    parallel_connections: 2
    compression: xbzrle
  delegate_to: localhost

- name: Between two libvirt 11 hosts - zstd in multifd channels (parallel migration, 2 connections unless given)
  fleetmaint.libvirt.live_migrate:
    name: db2
    uri: qemu+tls://hv4.example.com/system
    dest_uri: qemu+tls://hv5.example.com/system
    compression: zstd
    postcopy: after_timeout
    postcopy_preempt: true
    timeout: 120
  delegate_to: localhost

- name: Give up cleanly after 60 s; the VM stays on the source
  fleetmaint.libvirt.live_migrate:
    name: batch3
    uri: qemu+tls://hv1.example.com/system
    dest_uri: qemu+tls://hv2.example.com/system
    timeout: 60
    timeout_action: abort
  delegate_to: localhost
  register: moved
  ignore_errors: true
'''

RETURN = r'''
vm:
  description: Name of the VM.
  returned: always
  type: str
uuid:
  description: UUID of the VM.
  returned: when found
  type: str
source:
  description: Source host (C(uri) redacted, C(hostname)).
  returned: always
  type: dict
destination:
  description: Destination host (C(uri) redacted, C(hostname)).
  returned: always
  type: dict
home_host:
  description: The VM's home host, recorded in its metadata (the source on the first move).
  returned: when found
  type: str
autostart:
  description: Whether the VM was set to autostart on the source; the flag is set again on the destination
    (libvirt does not migrate it).
  returned: when the VM was migrated
  type: bool
findings:
  description: What the pre-flight checks found (code, severity, message), including warnings.
  returned: when the VM was checked
  type: list
  elements: dict
options:
  description: The flags, parameters, downtime ladder and disks to copy that were (or in check mode, would be)
    used; after a real run also C(copy_bytes), the capacity of the copied disks. C(parallel_connections) is the
    count used (2 for C(zlib) or C(zstd) when none was given, with C(PARALLEL) in C(flags)); C(postcopy_preempt) is
    true when preempt was required and post-copy is allowed; C(xbzrle_cache_mib) is the XBZRLE cache set for
    the move, only by a job's XBZRLE step (M(fleetmaint.libvirt.host_evacuate)
    O(fleetmaint.libvirt.host_evacuate#module:allow_xbzrle), which records it in each such attempt); null here
    (QEMU's own 64 MiB).
  returned: when a move is needed
  type: dict
metrics:
  description: Job statistics of the migration.
  returned: after a migration ran (also on failure, from the last sample)
  type: dict
  contains:
    total_time_ms: {description: "Time of the migration job.", type: int}
    wall_time_ms: {description: "Wall time of the call, as the controller saw it.", type: int}
    downtime_ms: {description: "Guest pause at switchover (null when unknown, e.g. after post-copy).", type: int}
    setup_time_ms: {description: "Setup time.", type: int}
    data_total: {description: "Bytes to transfer (memory and copied disks).", type: int}
    data_processed: {description: "Bytes transferred.", type: int}
    data_remaining: {description: "Bytes left at the end (0 on success).", type: int}
    memory_bps: {description: "Memory throughput in bytes per second.", type: int}
    iterations: {description: "Pre-copy iterations.", type: int}
    dirty_rate: {description: "Pages dirtied per second, as QEMU measured during the migration.", type: int}
    postcopy_used: {description: "Whether the migration switched to post-copy.", type: bool}
    auto_converge_throttle: {description: "Highest vCPU throttle percentage seen.", type: int}
    compression: {description: "Compression statistics, when compression was used.", type: dict}
    suspended: {description: "Whether the guest was paused to finish (timeout_action=suspend).", type: bool}
    source: {description: "destination_completed_job, source_last_sample or none.", type: str}
events:
  description: Timeline of the migration (start, downtime steps, post-copy, timeout, abort, done) with seconds.
  returned: after a migration ran
  type: list
  elements: dict
samples:
  description:
    - Progress of the migration, a sample a second and one at every new pass or phase (at most 1200) - C(t)
      (seconds from the start), C(phase), C(data_processed), C(data_remaining), C(data_total), C(memory_bps),
      C(iteration), C(dirty_rate), C(throttle), C(downtime_ms) (the downtime step in force).
  returned: after a migration ran
  type: list
  elements: dict
started_at:
  description: When the migration started (epoch seconds); C(t) of events and samples counts from here.
  returned: after a migration ran
  type: float
ended_at:
  description: When the migration call returned (epoch seconds).
  returned: after a migration ran
  type: float
placement:
  description: Where the VM runs and is defined afterwards (C(running_on), C(defined_on) host names).
  returned: after a migration ran
  type: dict
codes:
  description: The blockers' codes when the move was refused before anything moved (for example
    C(vm_paused_disks_inactive), C(disk_not_shared)).
  returned: when refused by the move rules
  type: list
  elements: str
reason:
  description:
    - Why the task failed, one code of the collection's vocabulary (README, "Reason codes"), for example
      C(timeout) or C(no_progress) (aborted, the VM still runs on its source), C(refused_at_start) (nothing was
      sent), C(migration_failed), C(blocked) (see C(codes)), C(same_host), C(vm_crashed) (it lies crashed on a
      host; the message names it and QEMU's log), C(vm_not_running_anywhere).
  returned: failure
  type: str
state_before:
  description: The VM's state before the move (C(running) or C(paused)); a paused VM arrives paused.
  returned: after the checks
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.live_migration import (
    ARGUMENT_SPEC, MUTUALLY_EXCLUSIVE, REQUIRED_ONE_OF, migrate,
)


def main() -> None:
    run_engine(AnsibleModule(argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE,
                             required_one_of=REQUIRED_ONE_OF, supports_check_mode=True), migrate)


if __name__ == "__main__":
    main()
