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
    C(report.json), C(report.md) and C(report.html) (tables, and bar charts of downtime and time per VM move).
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
        (host, target_level, level_before, level_after, status, failed_phase, msg, state_after, marks, evacuate,
        restore, health).
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
markdown:
  description: The Markdown report.
  returned: always
  type: str
summary:
  description: Host counts per status, VM moves, failures, escalations, maximum and mean downtime.
  returned: always
  type: dict
'''

import fcntl
import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.files import read_text, write_atomic
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.report import build, html_page, markdown


def _records(hdir: str) -> list:
    out = []
    if os.path.isdir(hdir):
        for n in sorted(os.listdir(hdir)):
            if n.endswith(".json"):
                with open(os.path.join(hdir, n)) as f:
                    out.append(json.load(f))
    return out


def main() -> None:
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True), record=dict(type="dict"),
                                              title=dict(type="str", default="Rolling patch")),
                           supports_check_mode=True)
    path, rec = module.params["path"], module.params["record"]
    if rec is not None and not rec.get("host"):
        module.fail_json(msg="record needs a 'host'")
    hdir = os.path.join(path, "hosts")
    changed = False
    try:
        records = _records(hdir)
        if rec is not None:
            fname = os.path.join(hdir, re.sub(r"[^A-Za-z0-9_.-]", "_", rec["host"]) + ".json")
            old = next((r for r in records if r.get("host") == rec["host"]), None)
            keep = (old is not None and rec.get("status") == "already_at_level"
                    and old.get("status") == "patched" and old.get("target_level") == rec.get("target_level"))
            if keep:
                rec = old  # the run that patched it tells more than 'already there'; and re-runs change nothing
            records = [r for r in records if r.get("host") != rec["host"]] + [rec]
            text = json.dumps(rec, indent=1, sort_keys=True, default=str)
            changed = old is None or json.dumps(old, indent=1, sort_keys=True, default=str) != text
            if changed and not module.check_mode:
                os.makedirs(hdir, exist_ok=True)
                write_atomic(fname, text)
        paths = {k: os.path.join(path, f"report.{k}") for k in ("json", "md", "html")}
        if module.check_mode:
            rep = build(records, module.params["title"])
            md = markdown(rep)
        else:
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                rep = build(_records(hdir), module.params["title"])  # every record, other hosts' included
                md = markdown(rep)
                if read_text(paths["md"]) != md:
                    write_atomic(paths["json"], json.dumps(rep, indent=1, sort_keys=True, default=str))
                    write_atomic(paths["md"], md)
                    write_atomic(paths["html"], html_page(rep))
                    changed = True
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"cannot write the report in {path}: {exc}")
    module.exit_json(changed=changed, json_path=paths["json"], markdown_path=paths["md"], html_path=paths["html"],
                     markdown=md, summary=rep["summary"])


if __name__ == "__main__":
    main()
