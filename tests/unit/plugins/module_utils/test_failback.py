"""Failback: the returned host's copies sorted into stale, running twice, and unclear."""

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.failback import classify_copies


def test_failback_sorts_the_returned_hosts_copies():
    here = [{"name": "stale", "uuid": "1", "active": False}, {"name": "twice", "uuid": "2", "active": True},
            {"name": "mine", "uuid": "3", "active": True}, {"name": "recorded", "uuid": "4", "active": False},
            {"name": "unclear", "uuid": "5", "active": False}]
    elsewhere = {"1": {"running_on": ["hv2"], "defined_on": ["hv2"]}, "2": {"running_on": ["hv3"], "defined_on": ["hv3"]},
                 "4": {"running_on": [], "defined_on": ["hv2"]}, "5": {"running_on": [], "defined_on": ["hv3"]}}
    record = {"recovered": {"recorded": "hv2", "unclear": "hv2"}}
    stale, twice, unclear = classify_copies("hv1", here, elsewhere, record)
    assert stale == [{"vm": "stale", "running_on": "hv2"}, {"vm": "recorded", "running_on": None}]
    assert twice == ["twice runs on hv1 and hv3"]
    assert unclear == ["unclear (defined on hv1, defined on hv3)"], "the record says hv2, not hv3: do not guess"
