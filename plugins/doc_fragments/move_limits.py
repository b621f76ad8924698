# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Limits and escalation of many moves (module_utils/options.py MOVE_LIMITS)."""

    DOCUMENTATION = r'''
options:
  limits:
    description:
      - Concurrency, C(per_source) (outgoing per host), C(per_destination) (incoming per host) and C(fleet)
        (at once), each move counted until it has ended. Defaults 4, 4 and 8 (vSphere runs 4 vMotions per host
        on 1 GbE, Proxmox 4 workers; oVirt 2 outgoing, nova 1). Of these, at most two transfer over a host's
        link at once (fewer when the measured VMs need it). A move about to finish sending gives its link to the
        next one, which sets up meanwhile (about a second before its first byte), so the link stays busy.
      - C(per_source) and C(per_destination) hold across jobs - each move takes a slot kept on its source and on
        its destination (as the job lease is), so two jobs sharing a host together stay within its limit; a
        move waits for a free slot and says which job holds it. Each job compares with its own limit, so jobs
        given different limits for one host hold the larger. C(fleet) counts the moves of one job.
    type: dict
    default: {}
  vm_timeout:
    description: Seconds each migration attempt may take before its escalation step acts.
    type: int
    default: 300
  max_attempts:
    description:
      - Attempts per VM, never more. Each attempt escalates as allowed - the downtime ladder, then
        XBZRLE (O(allow_xbzrle)), then auto-converge (O(allow_auto_converge)), then post-copy
        (O(allow_postcopy)), then pausing the guest to finish (O(allow_suspend)). Only a VM that did not
        converge (reason C(timeout) or C(no_progress)) is tried again; one refused before any data moved
        (C(refused_at_start)) is restarted once.
    type: int
    default: 3
  allow_xbzrle:
    description:
      - Let a VM that plain pre-copy will not move (its measured dirty rate against its link) move by pre-copy
        with XBZRLE - pages the guest writes again are sent as deltas against a cache of what was sent, sized
        to what the VM rewrites - twice its working set when that was measured (page sampling finds it within
        about half), else its memory in use; a power of two, at least QEMU's 64 MiB, at most the VM's memory -,
        kept on the source host while the move runs. The guest is not slowed, but the source spends CPU encoding.
      - It pays when each write changes little of its page; that cannot be measured before moving, so it is
        tried first for such a VM (before auto-converge), predicted by its first pass only, and its passes show
        whether it pays - when they stop shrinking, the attempt ends at once (O(convergence_watch), the default;
        without it, at O(vm_timeout)) and the next allowed step runs.
      - It is one more escalation step, counted by O(max_attempts) - with 3, a VM that starts at plain pre-copy
        reaches XBZRLE and auto-converge but not post-copy.
      - The XBZRLE attempt runs in the main migration stream, without O(parallel_connections) (libvirt does not
        combine XBZRLE with parallel migration); the other attempts keep them. Cannot be combined with
        O(compression) other than C(none) (that one applies to every move).
    type: bool
    default: false
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
      - When a VM still does not converge after its attempts (reason C(timeout) or C(no_progress)), shut it
        down, move its definition with libvirt's offline migration (it is never defined on two hosts) and start
        it on the destination. Only for VMs whose disks are all on shared storage. The VM is down meanwhile;
        the result says for how long.
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
'''
