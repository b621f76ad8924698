"""Shared fixtures for unit tests: recorded XML, libvirt's test driver, and running a module's main()
the way Ansible does (community.internal_test_tools style) to get its result."""

import json
from pathlib import Path

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.fleetmaint.libvirt.plugins.modules import hypervisor_info

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixture_text():
    def read(name: str) -> str:
        return (FIXTURES / name).read_text()
    return read


@pytest.fixture
def test_conn():
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


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

    def run(args, module=hypervisor_info):
        args = dict(args, _ansible_remote_tmp="/tmp", _ansible_keep_remote_files=False)
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
        if hasattr(basic, "_ANSIBLE_PROFILE"):  # ansible-core >= 2.19 needs a serialization profile
            monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
        with pytest.raises((ExitJson, FailJson)) as info:
            module.main()
        return info.value.args[0]
    return run
