"""select_vms and jmespath on recorded hypervisor_info-shaped data."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.fleetmaint.libvirt.plugins.filter.fleet import jmespath_query, select_vms


def info(host, *domains):
    return {"host": {"hostname": host}, "domains": list(domains)}


def dom(name, state="running", storage="shared", home=None, mib=128):
    return {"name": name, "state": state, "persistent": True, "home_host": home, "memory_mib": mib,
            "disks": [{"device": "disk", "storage": storage}]}


RESULTS = {"results": [info("hv1", dom("a", home="hv1"), dom("b", storage="local"), dom("c", state="shutoff")),
                       info("hv2", dom("d", home="hv1", mib=8192))]}


def names(vms):
    return [v["name"] for v in vms]


def test_select_by_state_storage_and_home():
    assert names(select_vms(RESULTS, state="running", storage="shared")) == ["a", "d"]
    assert names(select_vms(RESULTS, storage=["local"])) == ["b"]
    assert names(select_vms(RESULTS, away_from_home=True)) == ["d"]
    assert names(select_vms(RESULTS, home_host="hv1", away_from_home=False)) == ["a"]
    assert select_vms(RESULTS, state="running")[0]["hypervisor"] == "hv1"
    assert names(select_vms(RESULTS["results"][0]["domains"], state="shutoff")) == ["c"]


def test_select_rejects_what_it_cannot_read():
    with pytest.raises(AnsibleFilterError, match="expected hypervisor_info results"):
        select_vms("hv1")


def test_jmespath_selections():
    assert jmespath_query(RESULTS, "results[].domains[?memory_mib > `4096`].name[]") == ["d"]
    with pytest.raises(AnsibleFilterError, match="bad expression"):
        jmespath_query(RESULTS, "results[?")
