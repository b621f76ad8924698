"""The action-plugin path (what every role uses): same validation, same engine, same failure mapping as a module."""

from unittest.mock import MagicMock

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.action import host_evacuate as host_evacuate_action
from ansible_collections.fleetmaint.libvirt.plugins.action import live_migrate as live_migrate_action
from ansible_collections.fleetmaint.libvirt.plugins.modules import host_evacuate, live_migrate
from ansible_collections.fleetmaint.libvirt.plugins.plugin_utils import controller_run

pytest.importorskip("libvirt")


def run_action(plugin, args, check_mode=False):
    task = MagicMock(args=args, check_mode=check_mode, async_val=0, diff=False)
    connection = MagicMock(transport="local")
    action = plugin.ActionModule(task=task, connection=connection, play_context=MagicMock(), loader=None,
                                 templar=None, shared_loader_obj=None)
    return action.run(task_vars={"inventory_hostname": "ctl"})


SAME_HOST = {"name": "test", "uri": "test:///default", "dest_uri": "test:///default"}
ALONE = {"uris": ["test:///default"], "host": "test:///default"}


@pytest.mark.parametrize("plugin,module,args,reason", [
    (live_migrate_action, live_migrate, SAME_HOST, "same_host"),
    (host_evacuate_action, host_evacuate, ALONE, "no_capacity"),
])
def test_action_and_module_fail_alike(run_module, plugin, module, args, reason):
    via_action = run_action(plugin, args, check_mode=True)
    via_module = run_module(dict(args, _ansible_check_mode=True), module)
    assert via_action["failed"] is True and via_action["reason"] == reason
    for key in ("msg", "reason", "step"):
        assert via_action.get(key) == via_module.get(key), key


def test_action_validates_options_like_the_module():
    res = run_action(live_migrate_action, {"name": "x", "uri": "test:///default", "dest_uri": "test:///default",
                                           "no_such_option": 1})
    assert res["failed"] is True and "no_such_option" in res["msg"]


def test_a_vm_on_both_ends_is_refused_with_its_reason(monkeypatch):
    # One test driver on both ends, taken for two hosts: the VM is "on both", which is refused, nothing done.
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils import live_migration

    monkeypatch.setattr(live_migration, "same_host", lambda *_a: None)
    res = run_action(live_migrate_action, SAME_HOST, check_mode=True)
    assert res["failed"] is True and res["reason"] == "two_copies" and "exists on both" in res["msg"]


def test_progress_lines_name_the_task_module(monkeypatch):
    shown = []
    monkeypatch.setattr(controller_run.display, "display", shown.append)
    p = controller_run.Progress("ctl", "host_evacuate")
    p({"kind": "event", "vm": "web1", "t": 1.0, "event": "downtime", "downtime_ms": 300})
    p({"kind": "progress", "vm": "web1", "t": 3, "phase": "precopy", "data_total": 100, "data_processed": 50,
       "data_remaining": 50, "memory_bps": 1048576, "iteration": 1, "dirty_rate": 0})
    assert shown and all(line.startswith("[ctl] host_evacuate web1:") for line in shown), shown
