"""live_migrate and host_evacuate through main() (the path used when the task does not run on the controller)."""

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.modules import host_evacuate, live_migrate


def test_live_migrate_unknown_vm_fails_with_context(run_module, monkeypatch):
    pytest.importorskip("libvirt")
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils import live_migration

    monkeypatch.setattr(live_migration, "same_host", lambda *_a: None)  # test:///default twice is one host
    res = run_module({"name": "ghost", "uri": "test:///default", "dest_uri": "test:///default"}, live_migrate)
    assert res["failed"] is True
    assert "VM 'ghost' not found on" in res["msg"] and res["step"] == "locate" and res["reason"] == "not_found"


def test_live_migrate_onto_its_own_host_says_same_host(run_module):
    pytest.importorskip("libvirt")
    res = run_module({"name": "test", "uri": "test:///default", "dest_uri": "test:///default"}, live_migrate)
    assert res["failed"] is True and res["reason"] == "same_host" and "exists on both" not in res["msg"]


def test_live_migrate_refuses_bad_combination_before_connecting(run_module):
    res = run_module({"name": "x", "uri": "qemu+tcp://127.0.0.99/system", "dest_uri": "test:///default",
                      "persistent": True, "undefine_source": False}, live_migrate)
    assert res["failed"] is True and "defined on two hosts or on none" in res["msg"]


def test_live_migrate_name_or_uuid_required(run_module):
    res = run_module({"dest_uri": "test:///default"}, live_migrate)
    assert res["failed"] is True and "one of the following is required: name, uuid" in res["msg"]


def test_host_evacuate_unknown_host(run_module):
    pytest.importorskip("libvirt")
    res = run_module({"uris": ["test:///default"], "host": "hv-nowhere"}, host_evacuate)
    assert res["failed"] is True and "unknown host 'hv-nowhere'" in res["msg"]
