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


def test_a_one_host_fleet_is_balanced_and_rebalancing_it_changes_nothing(run_module):
    pytest.importorskip("libvirt")
    from ansible_collections.fleetmaint.libvirt.plugins.modules import fleet_rebalance, plan_rebalance
    plan = run_module({"uris": ["test:///default"], "measure_seconds": 0.2}, plan_rebalance)
    assert plan["changed"] is False and plan["moves"] == [] and plan["balanced"] is True, plan
    assert list(plan["load_before_pct"]) == list(plan["load_after_pct"]) and "test" in plan["measured"]
    assert plan["msg"].startswith("balanced: every host within 10% of the fleet's")
    res = run_module({"uris": ["test:///default"], "measure_seconds": 0}, fleet_rebalance)
    assert res["changed"] is False and res["moves"] == [] and not res.get("failed"), res


@pytest.mark.parametrize("args,says", [
    ({"uris": []}, "uris is empty"), ({"uris": ["test:///default"], "threshold": 0}, "threshold must be above 0"),
    ({"uris": ["test:///default"], "max_moves": -1}, "max_moves must be 0 or more"),
    ({"uris": ["test:///default"], "goal": "consolidate", "free_hosts": 0}, "free_hosts must be at least 1"),
    ({"uris": ["test:///default"], "goal": "consolidate"}, "cannot free 1 of 1 hosts in service"),
    ({"uris": ["test:///default"], "pinned": ["nosuchvm"]}, "unknown VM 'nosuchvm' in pinned"),
])
def test_rebalance_refuses_bad_input_naming_it(run_module, args, says):
    pytest.importorskip("libvirt")
    from ansible_collections.fleetmaint.libvirt.plugins.modules import fleet_rebalance
    res = run_module(dict(args, measure_seconds=0), fleet_rebalance)
    assert res["failed"] is True and says in res["msg"], res
    assert res["reason"] in ("invalid_option", "no_capacity", "unknown_vm"), res
