#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_job
short_description: Show the fleetmaint job running on a hypervisor, or ask it to stop
version_added: 0.2.0
description:
  - Reports the job that holds the host's job lease (M(fleetmaint.libvirt.host_evacuate),
    M(fleetmaint.libvirt.host_restore), and so the rolling patch) - which job, from which controller and process,
    since when, when its lease was last renewed, and its progress (VMs moved, failed, running, waiting).
  - With O(state=cancelled), asks that job to stop, whichever controller runs it - an AWX job, a colleague's
    terminal. The request is a note on the host naming the job; the job looks for it every 2 seconds, then starts
    no new move or attempt, aborts every pre-copy in flight (each VM stays running on its source, defined there
    only), lets a post-copy in flight finish (it cannot be undone), releases the lease and fails with reason
    C(cancelled), naming what moved and what did not. Running the job again afterwards finishes it.
  - The request names the job it was made for, so it never stops a later job. With no job running it changes
    nothing.
  - Interrupting the controller running the job (Ctrl-C, or the SIGTERM that AWX's cancel sends) does the same,
    when the job runs on the controller (the action plugin, as with C(delegate_to=localhost)).
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.connection
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: Reports whether a request would be made; makes none.
  diff_mode:
    support: none
    description: Nothing to compare.
options:
  state:
    description:
      - C(present) only reports the job; C(cancelled) asks it to stop.
    type: str
    choices: [present, cancelled]
    default: present
  wait:
    description: With O(state=cancelled), wait until the job has released the host.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait with O(wait). A post-copy in flight finishes before the job stops; the task fails with
        reason C(busy) if the job still holds the host after this long.
    type: int
    default: 300
  by:
    description: Who asks (recorded in the request and named in the job's failure).
    type: str
    default: fleetmaint.libvirt.host_job
'''

EXAMPLES = r'''
- name: What runs on hv1?
  fleetmaint.libvirt.host_job:
    uri: qemu+tls://hv1.example.com/system
  delegate_to: localhost
  register: job

- name: Stop the evacuation of hv1, and wait for it to let go of the host
  fleetmaint.libvirt.host_job:
    uri: qemu+tls://hv1.example.com/system
    state: cancelled
    wait: true
    by: "{{ lookup('env', 'USER') }}"
  delegate_to: localhost
'''

RETURN = r'''
running:
  description: Whether a job holds the host (a live lease).
  returned: always
  type: bool
job:
  description:
    - The job's lease - C(job) (evacuate, restore), C(controller), C(pid), C(started) and C(renewed) (epoch
      seconds), C(progress) (C(moved), C(failed), C(running), C(waiting), as of its last renewal, every 10 s).
    - A stale lease (its controller gone) is returned too, with RV(stale) true.
  returned: when a lease is on the host
  type: dict
stale:
  description: Whether the lease on the host belongs to a controller that is gone (the next job takes it over).
  returned: always
  type: bool
cancel_requested:
  description: The cancel request for the running job (C(by), C(from), C(requested)), if one was made.
  returned: always
  type: dict
ended:
  description: With O(wait), the job has released the host.
  returned: when O(wait) was set and the job ended
  type: bool
msg:
  description: What runs, what was asked.
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.maintenance import request_cancel
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import CONNECTION


def main() -> None:
    module = AnsibleModule(argument_spec=dict(**CONNECTION,
                                              state=dict(type="str", default="present", choices=["present", "cancelled"]),
                                              wait=dict(type="bool", default=False),
                                              wait_timeout=dict(type="int", default=300),
                                              by=dict(type="str", default="fleetmaint.libvirt.host_job")),
                           supports_check_mode=True)
    run_engine(module, request_cancel)


if __name__ == "__main__":
    main()
