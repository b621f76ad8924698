# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """What a job measures before it moves (options.MEASUREMENT)."""

    DOCUMENTATION = r'''
options:
  link_bandwidth:
    description:
      - The migration link of each host, in MiB/s, by host name (as C(hostname) reports it) - what one host can
        send to the others at once, its network card or the share of it migrations may use.
      - With the link of a source known (here, or O(bandwidth) as a cap per move), every VM's method and the
        number of moves sharing that link are chosen from the VM's measured dirty rate before anything moves,
        and a VM no allowed method converges for is refused with the numbers (reason C(will_not_converge)).
      - A host not given is measured from the job's own moves (each move's bytes sent per second times the moves
        that shared its link, on average while it held it; the link is the median of what they measured), and
        the measurement updates the predictions of the moves still waiting; nothing is refused on an assumed
        link. What the job's first moves on a link measured is kept apart (C(links.<host>.first_mib_s)), since a
        link's first moves can run slower than its later ones (on the lab, CPU-bound, at about 0.7 of their rate).
      - The job keeps what it measured on the host itself (a libvirt secret with no value, usage name
        C(fleetmaint-link), like the maintenance mark), and the next job whose moves share that host's link
        predicts and schedules its first moves from it (C(predicted.from_remembered_link); from what the earlier
        job's first moves measured, when it kept that) until its own moves measure the link again. A kept link
        older than 7 days is not used. It is an assumption like the default one, so nothing is refused on it
        either.
    type: dict
    default: {}
  profile_seconds:
    description:
      - Before anything moves, every VM of the job is profiled at once, each source in parallel - its dirty
        rate measured by libvirt (page sampling) over this many seconds, its memory in use (QEMU's resident
        memory), the bytes of its local disks to copy. The job waits about this long, whatever its size.
      - The default, one second, is libvirt's own (C(virsh domdirtyrate-calc)) and QEMU's (C(calc-dirty-rate)).
      - V(0) skips the dirty-rate measurement (every VM is then moved by pre-copy, escalating on progress).
    type: int
    default: 1
'''
