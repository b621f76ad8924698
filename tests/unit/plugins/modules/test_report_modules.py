"""maintenance_report, host_patch_level and host_health through main()."""

import json

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.modules import host_health, host_patch_level, maintenance_report


def rec(host, status, level="L1", t=100.0):
    return {"host": host, "target_level": level, "level_before": "L0", "status": status,
            "marks": [["preflight", t], ["end", t + 1]]}


def test_report_writes_three_formats_and_is_idempotent(run_module, tmp_path):
    r = run_module({"path": str(tmp_path), "record": rec("hv1", "patched")}, maintenance_report)
    assert r["changed"] is True and r["summary"]["patched"] == 1
    for k in ("json_path", "markdown_path", "html_path"):
        assert (tmp_path / r[k].rsplit("/", 1)[1]).exists()
    again = run_module({"path": str(tmp_path), "record": rec("hv1", "patched")}, maintenance_report)
    assert again["changed"] is False


def test_report_keeps_the_record_of_a_host_found_already_at_the_level(run_module, tmp_path):
    run_module({"path": str(tmp_path), "record": rec("hv1", "patched")}, maintenance_report)
    r = run_module({"path": str(tmp_path), "record": rec("hv1", "already_at_level", t=500.0)}, maintenance_report)
    saved = json.loads((tmp_path / "hosts" / "hv1.json").read_text())
    assert saved == rec("hv1", "patched") and r["changed"] is False
    assert r["summary"]["patched"] == 1 and r["summary"]["already_at_level"] == 0
    # A host found at the level with no earlier record is recorded as such.
    r = run_module({"path": str(tmp_path), "record": rec("hv2", "already_at_level")}, maintenance_report)
    assert r["changed"] is True and r["summary"]["already_at_level"] == 1


def test_report_check_mode_writes_nothing(run_module, tmp_path):
    r = run_module({"path": str(tmp_path / "r"), "record": rec("hv1", "failed"), "_ansible_check_mode": True},
                   maintenance_report)
    assert r["summary"]["failed"] == 1 and not (tmp_path / "r").exists()


def test_report_record_needs_a_host(run_module, tmp_path):
    r = run_module({"path": str(tmp_path), "record": {"status": "patched"}}, maintenance_report)
    assert r["failed"] is True and "record needs a 'host'" in r["msg"]


def test_patch_level_reads_none_where_the_driver_has_no_secrets(run_module):
    pytest.importorskip("libvirt")
    r = run_module({"uri": "test:///default"}, host_patch_level)
    assert r["changed"] is False and r["level"] is None and r["previous"] is None
    # What the host runs, as its libvirt says.
    import libvirt
    conn = libvirt.open("test:///default")
    want = f"{conn.getLibVersion() // 1000000}.{conn.getLibVersion() // 1000 % 1000}.{conn.getLibVersion() % 1000}"
    assert r["versions"]["libvirt"] == want and r["versions"]["hypervisor"] == conn.getType()


def test_patch_level_check_mode_reports_the_change(run_module):
    pytest.importorskip("libvirt")
    r = run_module({"uri": "test:///default", "level": "L9", "_ansible_check_mode": True, "_ansible_diff": True},
                   host_patch_level)
    assert r["changed"] is True and r["level"] == "L9" and r["diff"]["after"] == "level: L9\n"


def test_patch_level_cannot_be_recorded_without_secrets(run_module):
    pytest.importorskip("libvirt")
    r = run_module({"uri": "test:///default", "level": "L9"}, host_patch_level)
    assert r["failed"] is True and "recording the patch level on test:///default failed" in r["msg"]


def test_health_of_the_test_driver(run_module):
    pytest.importorskip("libvirt")
    r = run_module({"uri": "test:///default", "wait": 1}, host_health)
    assert r["healthy"] is True and [c["name"] for c in r["checks"]] == [
        "libvirt answers", "capabilities", "autostart networks and pools active"]


def test_health_names_an_unreachable_host(run_module):
    pytest.importorskip("libvirt")
    r = run_module({"uri": "qemu+unix:///system?socket=/nonexistent/sock", "wait": 0}, host_health)
    assert r["failed"] is True and "is not healthy: cannot connect" in r["msg"]


def test_health_canary_that_cannot_start_fails_the_check(run_module):
    pytest.importorskip("libvirt")
    r = run_module({"uri": "test:///default", "wait": 1, "canary_seconds": 1,
                    "canary_xml": "<domain type='test'><name>canary</name><memory>1024</memory>"
                                  "<os><type>hvm</type></os><devices><disk type='file'><source file='/x'/>"
                                  "<target dev='hda' bus='nope'/></disk></devices></domain>"}, host_health)
    assert r["failed"] is True and "canary boots" in r["msg"]
