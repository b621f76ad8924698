"""domain_backup through main(), on libvirt's test:///default driver (one persistent, running domain 'test')."""

import json

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.modules import domain_backup

pytest.importorskip("libvirt")


def test_backup_writes_definitions_and_index_then_changes_nothing(run_module, tmp_path):
    r = run_module({"uris": ["test:///default"], "path": str(tmp_path)}, domain_backup)
    assert r["changed"] is True and r["written"] == ["test"]
    entry = json.loads((tmp_path / "index.json").read_text())["test"]
    assert entry["defined_on"] == ["vm"] and entry["running_on"] == ["vm"] and entry["state"] == "running"
    assert "<name>test</name>" in (tmp_path / "test.xml").read_text()
    assert oct((tmp_path / "test.xml").stat().st_mode & 0o777) == "0o600"
    again = run_module({"uris": ["test:///default"], "path": str(tmp_path), "_ansible_diff": True}, domain_backup)
    assert again["changed"] is False and again["written"] == [] and again["diff"] == []
    assert "diff" not in run_module({"uris": ["test:///default"], "path": str(tmp_path)}, domain_backup), \
        "the diff is returned in diff mode only"


def test_check_mode_writes_nothing_and_diff_shows_the_definition(run_module, tmp_path):
    r = run_module({"uris": ["test:///default"], "path": str(tmp_path / "b"), "_ansible_check_mode": True,
                    "_ansible_diff": True}, domain_backup)
    assert r["changed"] is True and not (tmp_path / "b").exists()
    assert [d["after_header"] for d in r["diff"]] == ["index.json", "test.xml"]


def test_a_vm_gone_everywhere_is_moved_aside_not_dropped(run_module, tmp_path):
    (tmp_path / "old.xml").write_text("<domain><name>old</name></domain>")
    (tmp_path / "index.json").write_text(json.dumps({"old": {"defined_on": ["hv9"]}}))
    r = run_module({"uris": ["test:///default"], "path": str(tmp_path)}, domain_backup)
    assert r["removed"] == ["old"] and (tmp_path / "removed" / "old.xml").exists()
    assert "old" not in json.loads((tmp_path / "index.json").read_text())


def test_the_same_host_twice_reports_a_vm_defined_twice(run_module, tmp_path):
    r = run_module({"uris": ["test:///default", "test:///default"], "path": str(tmp_path)}, domain_backup)
    assert r["failed"] is True and "test on vm, vm" in r["msg"] and r["defined_twice"] == {"test": ["vm", "vm"]}
    assert (tmp_path / "index.json").exists(), "the backup is still written"


def test_bad_uri_fails_clearly_and_writes_nothing(run_module, tmp_path):
    r = run_module({"uris": ["not-a-uri"], "path": str(tmp_path / "b")}, domain_backup)
    assert r["failed"] is True and "'not-a-uri' is not a libvirt URI" in r["msg"]
    assert not (tmp_path / "b").exists()
