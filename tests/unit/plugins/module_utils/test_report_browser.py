"""The report's HTML opened in a real browser (headless Chromium): it renders, offline, one bar per move.

Needs Debian's chromium and playwright (requirements-dev.txt); 'make unit' installs both and sets
FLEETMAINT_BROWSER_REQUIRED=1, so there a missing browser fails instead of skipping.
"""

import importlib.util
import json
import os
import pathlib
import shutil

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import report, timeline

ROOT = pathlib.Path(__file__).resolve().parents[4]
RECORDS = json.loads((ROOT / "tests" / "unit" / "fixtures" / "rolling_patch_records.json").read_text())


def _browser():
    spec = importlib.util.spec_from_file_location("report_in_browser", ROOT / "tests" / "tools" / "report_in_browser.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    missing = [what for what, ok in (("chromium", os.path.exists(mod.CHROMIUM)),
                                     ("playwright", importlib.util.find_spec("playwright") is not None)) if not ok]
    if missing:
        if os.environ.get("FLEETMAINT_BROWSER_REQUIRED"):
            pytest.fail(f"no {' and no '.join(missing)}: 'make unit' installs them")
        pytest.skip(f"no {' and no '.join(missing)}")
    return mod


def _check(seen, bars):
    assert seen["timeline"] == 1 and seen["scripts"] == 0 and seen["other_requests"] == []
    assert len(seen["bars"]) == len(bars), "one bar per move"
    assert sorted(b["vm"] for b in seen["bars"]) == sorted(str(b["vm"]) for b in bars)
    svg = seen["timeline_box"]
    for b in seen["bars"]:
        box = b["box"]
        assert box and box["width"] >= 2 and box["height"] > 0, b
        assert svg["x"] <= box["x"] and box["x"] + box["width"] <= svg["x"] + svg["width"] + 0.5, b
    assert seen["hit"] == [b["vm"] for b in seen["bars"]], "each bar is drawn where it is, on top"
    tops = [b["box"]["y"] for b in seen["bars"]]
    assert tops == sorted(tops) and len(set(tops)) == len(tops), "a row each"


def test_the_rolling_patch_report_of_a_real_run_renders_its_timeline(tmp_path):
    """The records of a real 'make demo' run (3 hosts, 7 VMs out and home: 14 moves)."""
    browser = _browser()
    page = tmp_path / "report.html"
    page.write_text(report.html_page(report.build(RECORDS)))
    shot = tmp_path / "report.png"
    seen = browser.render(str(page), str(shot))
    moves = [v for rec in RECORDS for k in ("evacuate", "restore") for v in (rec.get(k) or {}).get("vms") or []]
    assert len(moves) == 14
    assert seen["title"] == "Rolling patch report"
    _check(seen, moves)
    assert seen["host_phases"] == sum(len(rec["marks"]) - 1 for rec in RECORDS)
    assert shot.stat().st_size > 20000, "a screenshot of a whole page"
    keep = os.environ.get("FLEETMAINT_TEST_ARTIFACTS")
    if keep:
        shutil.copy(shot, os.path.join(keep, "report.png"))


def test_the_callback_page_shows_every_method_and_a_failure(tmp_path):
    browser = _browser()

    def entry(vm, start, end, mode, result="moved"):
        return {"vm": vm, "source": "hv1", "destination": "hv2", "result": result, "started_at": start,
                "ended_at": end, "attempts": [{"mode": mode, "started_at": start, "ended_at": end}]}

    vms = [entry("a", 0, 10, "precopy"), entry("b", 2, 30, "auto_converge"), entry("c", 5, 20, "postcopy"),
           entry("d", 31, 40, "cold", "cold_moved"), entry("e", 12, 14, "precopy", "failed")]
    result = {"host": "hv1", "vms": vms, "started_at": 0, "ended_at": 40}
    part = report.task_timeline("fleetmaint.libvirt.host_evacuate", result)
    rows = report.migration_rows("fleetmaint.libvirt.host_evacuate", result)
    page = tmp_path / "latest.html"
    page.write_text(report.migration_html(rows, part["bars"], part["jobs"]))
    seen = browser.render(str(page))
    _check(seen, part["bars"])
    assert {b["vm"]: (b["method"], b["ok"]) for b in seen["bars"]} == {
        "a": ("precopy", "true"), "b": ("auto_converge", "true"), "c": ("postcopy", "true"), "d": ("cold", "true"),
        "e": ("precopy", "false")}
    assert seen["host_phases"] == 1 and timeline.METHOD_COLOURS["failed"] in page.read_text()
