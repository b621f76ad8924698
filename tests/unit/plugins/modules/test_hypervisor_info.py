"""hypervisor_info through main(), on libvirt's test driver."""

import pytest


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
