# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Storage options (module_utils/options.py STORAGE), and SHARED_POOLS alone."""

    DOCUMENTATION = r'''
options:
  shared_pools:
    description:
      - Names of storage pools whose storage every host sees at the same path (for example a directory pool
        on a cluster filesystem that libvirt cannot recognise as shared); their disks are not copied.
      - Pools of network or cluster types (C(netfs), C(rbd), C(gluster), C(iscsi), ...) are shared anyway.
    type: list
    elements: str
    default: []
  copy_storage:
    description:
      - Copy disks that are not on shared storage. C(all) copies the whole disk, C(incremental) only what
        differs from a common backing image. Destination volumes are created first in the pool of the same
        name, with the same size and format (and removed again if the migration fails). With C(none), a disk
        on local storage is a C(disk_not_shared) blocker.
    type: str
    choices: [none, all, incremental]
    default: none
  unsafe:
    description:
      - Tell libvirt the storage is shared even though it cannot recognise the filesystem as shared
        (C(VIR_MIGRATE_UNSAFE)), for example a directory on a cluster filesystem libvirt does not know.
        Also skips libvirt's cache-mode safety check. Never use it for disks that are not really shared.
    type: bool
    default: false
'''

    # The same text as in DOCUMENTATION (ansible-test reads fragments as literal strings).
    SHARED_POOLS = r'''
options:
  shared_pools:
    description:
      - Names of storage pools whose storage every host sees at the same path (for example a directory pool
        on a cluster filesystem that libvirt cannot recognise as shared); their disks are not copied.
      - Pools of network or cluster types (C(netfs), C(rbd), C(gluster), C(iscsi), ...) are shared anyway.
    type: list
    elements: str
    default: []
'''
