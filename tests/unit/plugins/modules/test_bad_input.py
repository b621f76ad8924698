"""Bad input, as a new user types it, for every module that takes the same input: one clear error, a reason code."""

import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet import Fleet
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import uri_secrets
from ansible_collections.fleetmaint.libvirt.plugins.modules import (
    host_evacuate, host_restore, hypervisor_info, live_migrate, migration_check, plan_evacuation,
)

SECRET = "s3cr3t-pw"
BAD_URI = f"qemu+tcp://admin:{SECRET}@127.0.0.99:1/system"  # nothing listens: the connect fails fast


def _run_for_real(monkeypatch, capsys, module, args):
    """main() with Ansible's own exit path (so its masking of no_log values applies); the JSON it prints."""
    args = dict(args, _ansible_remote_tmp="/tmp", _ansible_keep_remote_files=False)
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
    if hasattr(basic, "_ANSIBLE_PROFILE"):
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
    with pytest.raises(SystemExit):
        module.main()
    out = capsys.readouterr().out
    return out, json.loads(out)


def test_uri_secrets_finds_passwords_in_strings_lists_and_dicts():
    assert uri_secrets({"uris": ["qemu:///system", BAD_URI], "peer_uris": {"h": "qemu+tls://h/system?password=pq"},
                        "n": 3}) == {SECRET, "pq"}
    assert uri_secrets("qemu+ssh://root@host/system") == set()


@pytest.mark.parametrize("module,args", [
    (plan_evacuation, {"uris": [BAD_URI], "evacuate": ["lab1"]}),
    (migration_check, {"uri": BAD_URI, "dest_uris": [BAD_URI]}),
    (live_migrate, {"name": "x", "uri": BAD_URI, "dest_uri": "test:///default"}),
    (host_evacuate, {"uris": [BAD_URI], "host": "lab1"}),
    (host_restore, {"uris": [BAD_URI], "host": "lab1"}),
    (hypervisor_info, {"uri": BAD_URI}),
])
def test_a_password_in_a_uri_never_reaches_ansibles_output(monkeypatch, capsys, module, args):
    pytest.importorskip("libvirt")
    raw, res = _run_for_real(monkeypatch, capsys, module, args)
    assert res.get("failed") is True and res["msg"]
    assert SECRET not in raw, "the invocation echo (what -vvv shows) or the result holds the password"
    assert "invocation" in res, "the check must look at Ansible's invocation echo"


def test_migration_check_with_no_destination_checks_nothing_and_says_so(run_module):
    for args in ({"uri": "test:///default", "dest_uris": []},
                 {"uri": "test:///default", "dest_uris": ["test:///default"], "names": []}):
        res = run_module(args, migration_check)
        assert res["failed"] is True and res["reason"] == "invalid_option" and "nothing was checked" in res["msg"]
    res = run_module({"uri": "test:///default", "dest_uris": ["test:///default"], "bandwidth": 0}, migration_check)
    assert res["reason"] == "invalid_option" and "bandwidth must be a positive number" in res["msg"]


@pytest.mark.parametrize("given,named", [
    ({"anti_affinity": {"db": ["test", "tset"]}}, "'tset' in anti_affinity group 'db'"),
    ({"pinned": ["gpu9"]}, "'gpu9' in pinned"),
    ({"priority": {"nope": 5}}, "'nope' in priority"),
])
def test_a_name_that_is_no_vm_of_the_fleet_is_refused_not_ignored(given, named):
    pytest.importorskip("libvirt")
    with Fleet(["test:///default"], []) as fleet:
        assert fleet.planner_input(anti_affinity={"db": ["test"]})["vms"], "a known member is fine"
        with pytest.raises(FleetmaintError) as err:
            fleet.planner_input(**given)
    assert err.value.reason == "unknown_vm" and named in err.value.msg and "nothing was done" in err.value.msg


@pytest.mark.parametrize("module,target", [(plan_evacuation, {"evacuate": ["test:///default"]}),
                                           (host_evacuate, {"host": "test:///default"})])
def test_plan_and_evacuate_refuse_a_typo_in_an_anti_affinity_group(run_module, module, target):
    pytest.importorskip("libvirt")
    res = run_module(dict(target, uris=["test:///default"], anti_affinity={"db": ["test", "tset"]},
                          _ansible_check_mode=True), module)
    assert res["failed"] is True and res["reason"] == "unknown_vm" and "'tset'" in res["msg"]
