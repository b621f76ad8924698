# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Migration tuning (module_utils/options.py MIGRATION_TUNING), and ESTIMATE (what a preview's estimate reads)."""

    DOCUMENTATION = r'''
options:
  tls:
    description:
      - Encrypt migration streams with TLS (C(VIR_MIGRATE_TLS)). The default, because the stream carries guest
        memory. Set C(false) only on a trusted, isolated migration network (the lab does). A destination that
        does not look ready for TLS is a C(tls_not_configured) finding.
    type: bool
    default: true
  bandwidth:
    description:
      - Bandwidth cap per migration in MiB/s. Unset, libvirt's default applies (unlimited here, QEMU's own cap
        otherwise) and estimates assume 128 MiB/s.
    type: int
  max_downtime:
    description:
      - Longest pause allowed at switchover, in milliseconds, the top of the downtime ladder
        (O(downtime_steps)). oVirt's default is the same 500 ms in 5 steps.
    type: int
    default: 500
  downtime_steps:
    description:
      - Raise the allowed downtime in this many equal steps up to O(max_downtime), spread evenly over the
        attempt's timeout (or 10 s apart without one), like OpenStack's downtime steps. C(1) sets
        O(max_downtime) at once.
      - The first step is set on the source before the migration starts, so that a short move cannot switch over
        under QEMU's default of 300 ms first. A move that fails leaves the VM on its source with the downtime
        limit it had before.
    type: int
    default: 5
  parallel_connections:
    description:
      - Number of parallel (multifd) connections for each migration's memory stream (C(VIR_MIGRATE_PARALLEL)).
      - With O(compression) C(zlib) or C(zstd) parallel migration is always used, with 2 connections when this is
        not given (1 is allowed - one multifd channel).
      - In M(fleetmaint.libvirt.host_evacuate), M(fleetmaint.libvirt.host_restore) and
        M(fleetmaint.libvirt.fleet_rebalance) a move counts as its connections on its link's share (at most 2 by
        default, within their C(limits)), so with 2 connections one move at a time takes each link, and such a
        move always holds its link (never overlapped as a light move). QEMU's downtime limit is a target from its
        own bandwidth estimate, not a bound, and a busy host's switch-over takes longer. On the lab (QEMU 10.0 under
        TCG), with two such moves at once a quiet guest paused for up to 696 ms against a O(max_downtime) of 500;
        counted this way, every pause stayed within 389 ms, and the evacuation took 1.1 to 1.4 times as long as one
        with a single connection a move (README, Benchmarks). The collection never chooses multiple connections
        itself.
    type: int
  compression:
    description:
      - Compression of migration streams. C(xbzrle) sends deltas of re-sent pages, C(mt) multi-threaded
        compression. C(zstd) and C(zlib) compress in QEMU's multifd channels, so they come with parallel
        migration (see O(parallel_connections)); they need a libvirt that accepts them there (libvirt 11 does,
        9.0 rejects them).
      - Both hosts are probed before anything starts (M(fleetmaint.libvirt.hypervisor_info) shows what each
        accepts); a method either end rejects is a C(compression_unsupported) blocker naming that host. A host with
        no running VM to probe with is not known and not checked (the move is left to libvirt).
    type: str
    choices: [none, xbzrle, mt, zstd, zlib]
    default: none
  poll_interval:
    description: Seconds between job statistics samples while a migration runs.
    type: float
    default: 0.5
  convergence_watch:
    description:
      - Act on measured progress instead of waiting for a timeout. At the start of each pre-copy pass the data
        left to send is recorded; once three passes after the first show it no longer shrinking (each at least
        90 % of the one before) while sending it at the measured throughput would pause the guest longer than
        O(max_downtime), the migration is ended at once the way its timeout would end it (abort with reason
        C(not_converging), or post-copy or suspend as the timeout action says - C(timeout_action) of
        live_migrate; in host_evacuate and host_restore the next escalation step follows). When what is left
        would fit within O(max_downtime), the downtime ladder jumps to the step that fits instead.
      - Under auto-converge it acts only once the throttle reached 99 %, since QEMU raises the throttle each pass.
      - V(false) keeps the fixed behaviour (only the timeouts - C(timeout), C(progress_timeout), C(vm_timeout) -
        end a migration).
    type: bool
    default: true
'''

    ESTIMATE = r'''
options:
  bandwidth:
    description:
      - Bandwidth of the move in MiB/s, for the estimate; unset, 128 (QEMU's default cap). The same option,
        with the same default, as in the modules that move.
    type: int
  max_downtime:
    description:
      - Allowed downtime at switchover in milliseconds, for the estimate; the same option, with the same
        default, as in the modules that move (the top of their downtime ladder).
    type: int
    default: 500
'''
