"""Run the module's main() the way Ansible does and check what it returns."""

import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.fleetmaint.libvirt.plugins.modules import hypervisor_info


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


def _exit(self, **kwargs):
    raise ExitJson(kwargs)


def _fail(self, **kwargs):
    kwargs["failed"] = True
    raise FailJson(kwargs)


@pytest.fixture
def run_module(monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", _exit)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", _fail)

    def run(args):
        args = dict(args, _ansible_remote_tmp="/tmp", _ansible_keep_remote_files=False)
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
        if hasattr(basic, "_ANSIBLE_PROFILE"):  # ansible-core >= 2.19 needs a serialization profile
            monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
        with pytest.raises((ExitJson, FailJson)) as info:
            hypervisor_info.main()
        return info.value.args[0]
    return run


def test_facts_from_test_driver(run_module):
    pytest.importorskip("libvirt")
    res = run_module({"uri": "test:///default", "shared_pools": ["default-pool"]})
    assert res.get("failed") is not True, res
    assert res["changed"] is False
    assert res["host"]["hypervisor"] == "TEST"
    assert [d["name"] for d in res["domains"]] == ["test"]
    assert res["pools"][0]["shared"] is True
    assert res["migration"]["compression_probe"]["probed"] is False


def test_check_mode_returns_same_facts(run_module):
    pytest.importorskip("libvirt")
    normal = run_module({"uri": "test:///default", "probe_migration": False})
    check = run_module({"uri": "test:///default", "probe_migration": False, "_ansible_check_mode": True})
    assert check["domains"] == normal["domains"] and check["changed"] is False


def test_bad_uri_fails_clearly(run_module):
    res = run_module({"uri": "hv1.example.com"})
    assert res["failed"] is True
    assert "'hv1.example.com' is not a libvirt URI" in res["msg"]


def test_unreachable_host_names_the_uri(run_module):
    pytest.importorskip("libvirt")
    res = run_module({"uri": "qemu+unix:///system?socket=/nonexistent/x.sock"})
    assert res["failed"] is True
    assert res["msg"].startswith("cannot connect to libvirt at qemu+unix:///system?socket=/nonexistent/x.sock")
    assert res["step"] == "connect"
