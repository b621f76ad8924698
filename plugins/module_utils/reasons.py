# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Why something failed: one vocabulary of reason codes, and the decisions that read them.

Every failure the collection reports carries ``reason``, one of ``REASONS`` (the move rules'
finding codes in ``migration_rules.CODES`` say why a move is *refused*; these say why an
operation *failed*). Retry, escalation and fallback decide on these codes only, never on a
message's text or a VM's name. Pure: no libvirt or Ansible imports.
"""

from __future__ import annotations

from typing import Dict, Optional

# Stable codes: playbooks may match on them (``failed_when: result.reason == 'timeout'``).
REASONS: Dict[str, str] = {
    "invalid_option": "an option, or a combination of options, is invalid; nothing was done",
    "invalid_uri": "a URI is not a libvirt URI; nothing was done",
    "unknown_vm": "a VM named in the task (or in a group, pin or priority) exists on no host given",
    "unknown_host": "a host named in the task is not one of the hosts given",
    "connect_failed": "a host's libvirt could not be reached; nothing was done on it",
    "dest_unreachable": "the destination could not be reached; the VM was not touched",
    "same_host": "source and destination are the same host; nothing was done",
    "not_found": "the VM is on neither host",
    "wrong_state": "the VM is only on the destination, in a state a live migration cannot fix",
    "two_copies": "the VM exists on both hosts; nothing was done: find out which copy is real first",
    "blocked": "the move rules found a blocker (see codes and findings); nothing was done",
    "no_capacity": "no host has room (memory with headroom, vCPUs, anti-affinity) for a VM",
    "busy": "another job holds the host (its job lease); nothing was done",
    "cancelled": "the job was asked to stop (host_job state=cancelled, or a signal to the controller): no new "
                 "move started, pre-copies in flight were aborted (their VMs still run on their sources), a "
                 "post-copy in flight was finished",
    "volume_failed": "a destination volume could not be created; nothing was moved",
    "refused_at_start": "the migration failed before any data was sent; the VM still runs on its source",
    "timeout": "the migration did not converge within its timeout and was aborted; the VM still runs on its source",
    "no_progress": "the data left to send stopped shrinking for progress_timeout and the migration was aborted; "
                   "the VM still runs on its source",
    "not_converging": "the job's own progress showed pre-copy would not converge (the data left stopped shrinking "
                      "above what max_downtime can send), so the migration was aborted at once, not at its timeout; "
                      "the VM still runs on its source",
    "will_not_converge": "refused before anything moved: a VM's measured dirty rate is more than its link can send "
                         "and no method the job allows (XBZRLE, auto-converge, post-copy, suspend) converges",
    "migration_failed": "libvirt or QEMU failed the migration after it started; the VM still runs on its source "
                        "(or where the message says)",
    "postcopy_unfinished": "a post-copy migration could not be completed or resumed: the guest runs on the "
                           "destination with part of its memory on the source; keep both hosts, restore the link, re-run",
    "vm_crashed": "the VM crashed during the move: its guest memory is lost and it runs on no host",
    "vm_not_running_anywhere": "after the failure the VM runs on none of the hosts checked: find it first",
    "verify_failed": "libvirt reported success but the VM is not where it should be",
    "cold_move_failed": "the cold move (shut down, move the definition, start) failed",
    "unhealthy": "a host failed a health check (the message names each failed check)",
    "write_failed": "a file on the controller could not be written (report, backup); nothing else changed",
    "not_dead": "host_probe with fail_unless_dead: some probe reached the host, so it is not dead",
    "not_fenced": "a host must be fenced (powered off or cut from storage) before its VMs start elsewhere; nothing was restarted",
    "no_backup": "the saved definitions (domain_backup) are missing or know nothing of the host; nothing was restarted",
    "missing_library": "libvirt-python is not installed where the task runs",
    "incomplete": "some VMs were not moved; each VM's own reason is in its result (vms[].reason)",
    "not_started": "the job stopped before this move started (on_failure: stop, overall timeout)",
    "libvirt_error": "libvirt reported an error the collection has no better name for (see libvirt_code)",
    "unexpected": "an unexpected error (a bug: please report it with the traceback)",
}

# What a failure in a step means when the code raising it gave no reason of its own.
STEP_REASONS: Dict[str, str] = {
    "validate options": "invalid_option",
    "resolve hosts": "unknown_host",
    "connect": "connect_failed",
    "locate": "not_found",
    "preflight": "blocked",
    "create volumes": "volume_failed",
    "verify": "verify_failed",
    "cold move": "cold_move_failed",
    "read fleet": "same_host",
    "health": "unhealthy",
    "health: connect": "connect_failed",
    "health: canary": "invalid_option",
    "write backup": "write_failed",
    "write report": "write_failed",
    "baseline": "blocked",
    "backup": "two_copies",
    "check copies": "two_copies",
    "fence": "not_fenced",
    "probe": "not_dead",
    "read backup": "no_backup",
    "import libvirt": "missing_library",
    "undefine stale copy": "incomplete",
    "start": "incomplete",
    "restart": "incomplete",
    "plan": "no_capacity",
    "lease": "busy",
    "cancel": "busy",
    "evacuate": "incomplete",
    "balance": "incomplete",
    "consolidate": "incomplete",
    "restore": "incomplete",
    "precopy": "migration_failed",
    "postcopy": "postcopy_unfinished",
}

# The decisions. Each reads a reason code and nothing else.
# The VM did not converge: a stronger method (the next escalation step) may move it.
NOT_CONVERGED = frozenset({"timeout", "no_progress", "not_converging"})
# Nothing was sent and the VM is untouched on its source (a destination resource busy for a moment):
# the same attempt once more, after a pause.
RETRY_ONCE = frozenset({"refused_at_start"})
# A cold move (the guest shuts down) is the last resort only for a VM that could not converge live.
COLD_MOVE_AFTER = NOT_CONVERGED
# Nothing is left to move: never retry, never cold-move, say so.
VM_LOST = frozenset({"vm_crashed", "vm_not_running_anywhere"})


def reason_for(reason: Optional[str], step: Optional[str]) -> str:
    """The reason code of a failure: its own, else its step's, else ``libvirt_error`` (a step with no code of
    its own) or ``unexpected`` (no step at all)."""
    if reason:
        return reason
    return STEP_REASONS.get(step or "", "libvirt_error" if step else "unexpected")


def decide(reason: str, restarted: bool) -> str:
    """What a move does after an attempt failed with ``reason``: restart, escalate, or stop."""
    if reason in RETRY_ONCE and not restarted:
        return "restart"
    if reason in NOT_CONVERGED:
        return "escalate"
    return "stop"
