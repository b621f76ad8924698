# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The maintenance report on the controller's disk: one record per host, merged under a lock into report.json,
report.md and report.html (rendered by the pure ``report``). No libvirt or Ansible imports.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from typing import Any, Dict

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.files import read_text, write_atomic
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.move_log import dumps, result_lines, sort_lines
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.report import build, html_page, markdown

LOG_NAME = "moves.jsonl"


def _records(hdir: str) -> list:
    out = []
    if os.path.isdir(hdir):
        for n in sorted(os.listdir(hdir)):
            if n.endswith(".json"):
                with open(os.path.join(hdir, n)) as f:
                    out.append(json.load(f))
    return out


def move_log(records: list) -> str:
    """Every move of every host's evacuation and restore, as one JSON-lines log ordered in time."""
    jobs = (("evacuate", "host_evacuate"), ("restore", "host_restore"))
    return dumps(sort_lines(ln for rec in records for key, job in jobs for ln in result_lines(job, rec.get(key) or {})))


def write_report(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    """maintenance_report's engine: record one host (if given) and render the report from every record."""
    path, rec = p["path"], p["record"]
    if rec is not None and not rec.get("host"):
        raise FleetmaintError("record needs a 'host'; nothing was written", step="validate options")
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
            if changed and not check_mode:
                os.makedirs(hdir, exist_ok=True)
                write_atomic(fname, text)
        paths = {k: os.path.join(path, f"report.{k}") for k in ("json", "md", "html")}
        paths["log"] = os.path.join(path, LOG_NAME)
        if check_mode:
            rep = dict(build(records, p["title"]), move_log=paths["log"])
            md = markdown(rep)
        else:
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                records = _records(hdir)  # every record, other hosts' included
                rep = dict(build(records, p["title"]), move_log=paths["log"])
                md = markdown(rep)
                if read_text(paths["md"]) != md or not os.path.exists(paths["log"]):
                    write_atomic(paths["log"], move_log(records))
                    write_atomic(paths["json"], json.dumps(rep, indent=1, sort_keys=True, default=str))
                    write_atomic(paths["md"], md)
                    write_atomic(paths["html"], html_page(rep))
                    changed = True
    except (OSError, ValueError) as exc:
        raise FleetmaintError(f"cannot write the report in {path}: {exc}", step="write report") from exc
    return dict(changed=changed, json_path=paths["json"], markdown_path=paths["md"], html_path=paths["html"],
                log_path=paths["log"], markdown=md, summary=rep["summary"])
