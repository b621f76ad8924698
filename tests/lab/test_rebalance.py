"""fleet_rebalance on the lab: an imbalanced fleet of three hosts balanced by measured memory in use (check
mode first, then for real, then a second run that moves nothing), and consolidated onto two hosts."""

from __future__ import annotations

import pytest

VMS = [f"rb-{i}" for i in range(1, 7)]


def create(lab, hosts):
    # Each guest fills 128 MB of its 192 MiB at boot and then rests: what it really uses is known and steady.
    lab.create_at_once(dict(zip(VMS, hosts)), "--disk", "shared", "--memory", "192", "--dirty-mb", "128",
                       "--dirty-rate", "0")


@pytest.fixture
def six_vms(lab):
    try:
        yield lambda hosts: create(lab, hosts)
    finally:
        for vm in VMS:
            lab.ctl("vm", "delete", vm, check=False)
        for h in ("lab1", "lab2", "lab3"):  # a consolidation's mark, had it stayed
            if "fleetmaint-maintenance" in lab.virsh(h, "secret-list").stdout:
                lab.restore(uris=lab.uris(), host=h)


def rebalance(lab, *flags, **rb):
    return lab.run_test_playbook("fleet_rebalance.yml", "rb", dict(rb, uris=lab.uris()), *flags)


def ours(lab):
    return lab.invariant(VMS)


def test_an_imbalanced_fleet_is_balanced_then_left_alone(lab, six_vms):
    six_vms(["lab1"] * 6)
    before = ours(lab)
    assert set(before.values()) == {"lab1"}
    plan = rebalance(lab, "--check", threshold=25, max_moves=10)
    assert not plan.get("failed"), plan["msg"]
    assert plan["changed"] is True and plan["moves"] and ours(lab) == before, "check mode moves nothing"
    assert plan["load_before_pct"]["lab1"] > plan["band_pct"][1] and plan["lower_bound"] >= 2
    assert {m["vm"] for m in plan["moves"]} <= set(VMS)
    assert all(plan["measured"][vm]["in_use_mib"] >= 100 for vm in VMS), "memory in use measured, not configured"
    assert "would move" in plan["msg"] and "memory in use before lab1" in plan["msg"]

    done = rebalance(lab, threshold=25, max_moves=10)
    assert not done.get("failed"), done["msg"]
    assert done["changed"] is True and done["balanced"] is True, done["msg"]
    lo, hi = done["band_pct"]
    assert all(lo <= x <= hi for x in done["load_after_pct"].values()), done["load_after_pct"]
    assert len(done["moves"]) <= done["lower_bound"] + 1, (len(done["moves"]), done["lower_bound"])
    where = ours(lab)  # every VM on one host, defined there only
    assert {where[m["vm"]] for m in done["moves"]} == {m["destination"] for m in done["moves"]}
    assert set(where.values()) == {"lab1", "lab2", "lab3"}
    assert all(v["result"] == "moved" and v["method"] for v in done["vms"])

    again = rebalance(lab, threshold=25, max_moves=10)
    assert not again.get("failed"), again["msg"]
    assert again["changed"] is False and again["moves"] == [] and again["balanced"], again["msg"]
    assert ours(lab) == where, "a balanced fleet moves nothing"


def test_three_hosts_are_consolidated_onto_two(lab, six_vms):
    # Three of ours on one host, two on another, one on the host that runs nothing else: freeing that one moves
    # the least memory (192 MiB), and only ours move.
    others = {h: sum(d["memory_mib"] for d in f["domains"] if d["state"] == "running") for h, f in lab.facts().items()}
    light, middle, heavy = sorted(others, key=lambda h: (others[h], h))
    assert others[light] == 0, f"every host runs VMs of earlier tests: {others}"
    six_vms([heavy] * 3 + [middle] * 2 + [light])
    spread = ours(lab)
    # With 700 MiB of each host for VMs, one host cannot take them all: freeing two is refused, with the numbers.
    facts = lab.facts()
    mem_mib = min(f["host"]["memory_total_mib"] for f in facts.values())  # what the planner counts a host's memory
    refused = rebalance(lab, goal="consolidate", free_hosts=2, memory_headroom=mem_mib - 700)
    assert refused.get("failed") and refused["reason"] == "no_capacity", refused["msg"]
    assert "refusing to consolidate, nothing was moved: cannot free 2 host(s): the fleet's VMs need" in refused["msg"]
    assert "MiB free for VMs" in refused["msg"] and ours(lab) == spread
    plan = rebalance(lab, "--check", goal="consolidate", free_hosts=1)
    assert not plan.get("failed") and plan["changed"] and len(plan["free"]) == 1, plan["msg"]
    freed = plan["free"][0]
    assert freed == light and plan["memory_moved_mib"] == 192, "the host whose emptying moves the least memory"
    assert ours(lab) == spread and "fleetmaint-maintenance" not in lab.virsh(freed, "secret-list").stdout
    done = rebalance(lab, goal="consolidate", free_hosts=1)
    assert not done.get("failed"), done["msg"]
    assert done["free"] == [freed] and done["maintenance_marked"] == [freed]
    assert freed not in set(ours(lab).values()), "the freed host holds none of the VMs"
    assert not [d for d in lab.status()["vms"].values() if freed in d["running_on"]], "nothing runs on it"
    assert "fleetmaint-maintenance" in lab.virsh(freed, "secret-list").stdout, "marked: ready to power down"
    assert done["load_after_pct"][freed] == 0.0
    lab.restore(uris=lab.uris(), host=freed)  # clears its mark (and brings home what lives there)
