# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
name: migration_report
type: aggregate
short_description: One report of every VM migration in a run, and a table at the end
version_added: 0.1.0
description:
  - Collects the result of every M(fleetmaint.libvirt.live_migrate), M(fleetmaint.libvirt.host_evacuate) and
    M(fleetmaint.libvirt.host_restore) task of the run (roles included), one row per VM move - VM, from, to,
    result, time, downtime, post-copy and escalations, the message of a failure.
  - At the end of the run prints a compact table and writes C(migrations-<time>.json), C(.md) and C(.html) (and
    C(latest.json), C(latest.md), C(latest.html)) to O(report_dir). Failed moves are included. The HTML page
    shows the run as a timeline (one row per host from evacuation start to restore end, one bar per VM move
    coloured by method, moves at once, predicted against measured) above the table; it is one file, pure SVG,
    no script or network needed to open it.
  - Every move's history (scheduler steps, migration events, a progress sample a second - phase, sent,
    remaining, dirty rate, throttle, downtime step) goes to C(migrations-<time>.jsonl) as each task ends, so it
    is kept even if the run is interrupted (C(latest.jsonl) at the end). No password of a URI is written.
  - Enable it with C(callbacks_enabled = fleetmaint.libvirt.migration_report) in C(ansible.cfg) (or
    C(ANSIBLE_CALLBACKS_ENABLED)); it works next to any stdout callback, in AWX too (the table is in the job
    output, the files in the execution environment unless O(report_dir) is on a volume).
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
requirements:
  - enable in configuration
options:
  report_dir:
    description: Where to write the report files. Empty to write none (the table is still printed).
    type: path
    default: ~/.fleetmaint/migration-reports
    env:
      - name: FLEETMAINT_MIGRATION_REPORT_DIR
    ini:
      - section: fleetmaint_migration_report
        key: report_dir
'''

import json
import os
import shutil
import time

from ansible.plugins.callback import CallbackBase

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.files import write_atomic
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.move_log import dumps, result_lines
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.report import (
    migration_html, migration_markdown, migration_rows, migration_table, task_timeline,
)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fleetmaint.libvirt.migration_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows = []
        self.bars = []
        self.jobs = []
        self.started = time.time()
        self.stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.started))
        self.play = None
        self.log_path = None
        self.log_failed = False

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name()

    def _collect(self, result):
        action, res = result._task.action, result._result  # pylint: disable=protected-access
        rows = migration_rows(action, res)
        for r in rows:
            r.update(play=self.play, task=result._task.get_name())  # pylint: disable=protected-access
        self.rows += rows
        part = task_timeline(action, res)
        self.bars += part["bars"]
        self.jobs += part["jobs"]
        self._log(result_lines(action, res))

    def _log(self, lines):
        """Append a task's move history to this run's JSON-lines log at once (kept if the run is cut short)."""
        report_dir = self.get_option("report_dir")
        if not lines or not report_dir or self.log_failed:
            return
        path = os.path.join(report_dir, f"migrations-{self.stamp}.jsonl")
        try:
            os.makedirs(report_dir, exist_ok=True)
            with open(path, "a") as f:
                f.write(dumps(lines))
            self.log_path = path
        except OSError as exc:
            self.log_failed = True
            self._display.warning(f"migration_report: cannot write the move log {path}: {exc}")

    def v2_runner_on_ok(self, result):
        self._collect(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._collect(result)

    def v2_playbook_on_stats(self, stats):
        if not self.rows:
            return
        self._display.banner("MIGRATION REPORT")
        self._display.display(migration_table(self.rows))
        report_dir = self.get_option("report_dir")
        if not report_dir:
            return
        stamp = self.stamp
        data = {"started": self.started, "finished": time.time(), "rows": self.rows, "move_log": self.log_path}
        page = migration_html(self.rows, self.bars, self.jobs, move_log=self.log_path)
        try:
            os.makedirs(report_dir, exist_ok=True)
            for name in (f"migrations-{stamp}", "latest"):
                write_atomic(os.path.join(report_dir, f"{name}.json"), json.dumps(data, indent=1, default=str) + "\n")
                write_atomic(os.path.join(report_dir, f"{name}.md"), migration_markdown(self.rows))
                write_atomic(os.path.join(report_dir, f"{name}.html"), page)
            if self.log_path:
                shutil.copyfile(self.log_path, os.path.join(report_dir, "latest.jsonl"))
        except OSError as exc:
            self._display.warning(f"migration_report: cannot write to {report_dir}: {exc}")
            return
        self._display.display(f"migration report: {os.path.join(report_dir, f'migrations-{stamp}.json')} "
                              "(.md, .html" + (", .jsonl: every move's history)" if self.log_path else ")"))
