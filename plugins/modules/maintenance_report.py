#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: maintenance_report
short_description: Write the maintenance report (JSON, Markdown, HTML) from per-host records
version_added: 0.1.0
description:
  - Keeps one record per host in O(path)C(/hosts/) and renders the whole report from them, as
    C(report.json), C(report.md) and C(report.html) (a timeline - each host's phases, a bar per VM move
    coloured by method, moves at once, predicted against measured - tables, and bar charts of downtime and time
    per VM move; one file, pure SVG, nothing to fetch and no script).
  - Writes every move's history from the records to C(moves.jsonl) beside them - scheduler steps, migration
    events and a progress sample a second, one JSON object per line, ordered in time, URI passwords redacted.
  - The rolling patch role calls it after each host, finished or failed, so the report is current even when a
    run stops half-way; a re-run that finds a host already at the target level keeps that host's earlier record
    unchanged (so a repeated run changes nothing).
  - Runs where the report is written (usually the controller, with C(delegate_to=localhost)). Records are
    written atomically and rendering holds a lock, so hosts of one batch can report at the same time.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: Renders the report in memory and returns it; writes nothing.
  diff_mode:
    support: none
    description: The report is new content each run.
options:
  path:
    description: Directory of the report (created if missing).
    type: path
    required: true
  record:
    description:
      - One host's record to add or replace (keyed by its C(host)) - see the rolling patch role for its fields
        (host, target_level, level_before, level_after, versions_before, versions_after, status, failed_phase, msg,
        state_after, marks, evacuate, restore, health). C(versions_before) and C(versions_after) are
        M(fleetmaint.libvirt.host_patch_level)'s C(versions) before and after the patch.
      - Leave unset to only render the report from the records already there.
    type: dict
  title:
    description: Title of the report.
    type: str
    default: Rolling patch
'''

EXAMPLES = r'''
- name: Render the report of a run
  fleetmaint.libvirt.maintenance_report:
    path: /var/log/fleetmaint/rolling-patch-2026-11
  delegate_to: localhost
  run_once: true
  register: report

- name: Show it
  ansible.builtin.debug:
    msg: "{{ report.markdown }}"
'''

RETURN = r'''
json_path:
  description: Path of C(report.json) (summary, host rows, VM move rows and the raw records).
  returned: always
  type: str
markdown_path:
  description: Path of C(report.md).
  returned: always
  type: str
html_path:
  description: Path of C(report.html).
  returned: always
  type: str
log_path:
  description: Path of C(moves.jsonl), every move's history as JSON lines (docs/move-log.md); no password is
    written to it.
  returned: always
  type: str
markdown:
  description: The Markdown report.
  returned: always
  type: str
summary:
  description: Host counts per status, VM moves, failures, escalations, maximum and mean downtime.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.report_store import write_report


def main() -> None:
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True), record=dict(type="dict"),
                                              title=dict(type="str", default="Rolling patch")),
                           supports_check_mode=True)
    run_engine(module, write_report, needs_libvirt=False)


if __name__ == "__main__":
    main()
