"""Rebalance and consolidation plans (pure): the fewest moves to the band, what can hold what, refusals."""

import random
import time

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import rebalance as rb
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.placement import PlanRefused


def host(name, mem=8192, vcpus=8, **kw):
    return dict({"name": name, "memory_mib": mem, "vcpus": vcpus, "headroom_mib": 512}, **kw)


def vm(name, on, mem=1024, in_use=None, vcpus=1, **kw):
    return dict({"name": name, "host": on, "memory_mib": mem, "vcpus": vcpus,
                 "in_use_mib": mem if in_use is None else in_use}, **kw)


def test_six_vms_on_one_of_three_hosts_end_two_each_in_four_moves():
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm(f"v{i}", "h1") for i in range(6)]
    plan = rb.plan_rebalance(hosts, vms, threshold_pct=10, max_moves=10)
    assert plan["balanced"] and plan["stopped"] is None
    assert len(plan["moves"]) == 4 == plan["lower_bound"], "the fewest moves: two to each empty host"
    assert plan["load_after_pct"] == {"h1": 25.0, "h2": 25.0, "h3": 25.0} and plan["fleet_load_pct"] == 25.0
    assert {m["destination"] for m in plan["moves"]} == {"h2", "h3"} and all(m["source"] == "h1" for m in plan["moves"])
    # Balanced already: nothing moves.
    after = [dict(v, host=next((m["destination"] for m in plan["moves"] if m["vm"] == v["name"]), v["host"])) for v in vms]
    again = rb.plan_rebalance(hosts, after)
    assert again["moves"] == [] and again["balanced"] and again["lower_bound"] == 0


def test_measured_use_not_configured_size_decides():
    """Three VMs of 4 GiB configured on h1: two really use 3 GiB, one is idle. Only moving a busy one balances."""
    hosts = [host("h1"), host("h2")]
    vms = [vm("busy1", "h1", mem=4096, in_use=3072), vm("busy2", "h1", mem=2048, in_use=3072),
           vm("idle", "h1", mem=4096, in_use=256), vm("small", "h2", mem=1024, in_use=512)]
    plan = rb.plan_rebalance(hosts, vms, threshold_pct=10)
    assert [m["vm"] for m in plan["moves"]] == ["busy1"] and plan["balanced"], plan  # (busy2 alike: the name decides)
    assert plan["load_before_pct"] == {"h1": 78.12, "h2": 6.25}
    assert plan["load_after_pct"] == {"h1": 40.62, "h2": 43.75}


def test_constraints_hold_and_the_plan_says_when_it_cannot_balance():
    hosts = [host("h1"), host("h2"), host("h3", maintenance=True)]
    vms = [vm("p", "h1", pinned=True), vm("a1", "h1", anti_affinity=["web"]), vm("a2", "h2", anti_affinity=["web"]),
           vm("q", "h1"), vm("on-maint", "h3")]
    plan = rb.plan_rebalance(hosts, vms, threshold_pct=5, max_moves=10)
    moved = {m["vm"]: m["destination"] for m in plan["moves"]}
    assert "p" not in moved and "a1" not in moved and "on-maint" not in moved, moved
    assert "h3" not in plan["load_after_pct"] and all(d != "h3" for d in moved.values())
    assert moved == {"q": "h2"} and plan["balanced"], "the one VM free to move did, and that balanced the fleet"
    stuck = rb.plan_rebalance([host("h1"), host("h2")], [vm("p1", "h1", pinned=True), vm("p2", "h1", pinned=True)])
    assert stuck["moves"] == [] and not stuck["balanced"]
    assert stuck["stopped"].startswith("no move brings the hosts closer")
    assert rb.plan_rebalance(hosts, vms, threshold_pct=5, max_moves=0)["stopped"] == "max_moves (0) reached"
    # A destination without room (configured memory with headroom) takes nothing.
    full = rb.plan_rebalance([host("h1"), host("h2", mem=1536)], [vm("x", "h1"), vm("y", "h1"), vm("z", "h2", mem=512)])
    assert full["moves"] == [] and not full["balanced"]
    with pytest.raises(ValueError):
        rb.plan_rebalance(hosts, vms, threshold_pct=0)


def test_consolidation_frees_the_hosts_that_move_the_least_memory_or_refuses_with_the_numbers():
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("a", "h1", mem=2048), vm("b", "h1", mem=2048), vm("c", "h2", mem=1024), vm("d", "h3", mem=512),
           vm("e", "h3", mem=256)]
    plan = rb.plan_consolidation(hosts, vms, 1)
    assert plan["free"] == ["h3"] and plan["memory_moved_mib"] == 768 and sorted(plan["keep"]) == ["h1", "h2"]
    assert {m["vm"] for m in plan["moves"]} == {"d", "e"} and all(m["destination"] in ("h1", "h2") for m in plan["moves"])
    two = rb.plan_consolidation(hosts, vms, 2)
    assert sorted(two["free"]) == ["h2", "h3"] and all(m["destination"] == "h1" for m in two["moves"])
    with pytest.raises(PlanRefused, match=r"cannot free 2 host\(s\): the fleet's VMs need 8960 MiB"):
        rb.plan_consolidation(hosts, vms + [vm("f", "h2", mem=1024), vm("g", "h1", mem=2048)], 2)
    with pytest.raises(PlanRefused, match="at least one must stay"):
        rb.plan_consolidation(hosts, vms, 3)
    with pytest.raises(PlanRefused, match="pinned"):
        rb.plan_consolidation(hosts, [vm("p1", "h1", pinned=True), vm("p2", "h2", pinned=True)], 2)


def test_a_large_random_fleet_is_balanced_deterministically_near_the_lower_bound():
    rng = random.Random(7)
    hosts = [host(f"h{i:03d}", mem=65536, vcpus=32) for i in range(100)]
    vms = [vm(f"v{i:05d}", f"h{min(99, int(rng.expovariate(1 / 30))):03d}", mem=rng.choice([1024, 2048, 4096]),
              in_use=rng.randint(200, 1000)) for i in range(2000)]
    t0 = time.monotonic()
    plan = rb.plan_rebalance(hosts, vms, threshold_pct=10, max_moves=5000)
    took = time.monotonic() - t0
    assert plan["balanced"], plan["stopped"]
    lo, hi = plan["band_pct"]
    assert all(lo - 0.01 <= x <= hi + 0.01 for x in plan["load_after_pct"].values())
    assert plan["lower_bound"] <= len(plan["moves"]) <= 2 * plan["lower_bound"], (len(plan["moves"]), plan["lower_bound"])
    assert rb.plan_rebalance(hosts, vms, threshold_pct=10, max_moves=5000)["moves"] == plan["moves"], "deterministic"
    assert took < 60


# --- CPU: balanced after memory, never at memory's expense

def ten_each(busy_on_h1):
    """Three hosts of 8 cores, ten VMs of 400 MiB in use each (memory balanced); ``busy_on_h1`` of h1's use a core."""
    return [vm(f"{h}-{i}", h, mem=512, in_use=400, cpu_cores=1.0 if h == "h1" and i < busy_on_h1 else 0.0)
            for h in ("h1", "h2", "h3") for i in range(10)]


def test_cpu_is_balanced_once_memory_is_without_taking_memory_out_of_its_band():
    hosts = [host("h1"), host("h2"), host("h3")]
    plan = rb.plan_rebalance(hosts, ten_each(3), threshold_pct=20, max_moves=10)
    assert plan["fleet_cpu_pct"] == 12.5 and plan["cpu_before_pct"] == {"h1": 37.5, "h2": 0.0, "h3": 0.0}
    assert plan["balanced"] and plan["memory_balanced"] and plan["cpu_balanced"], plan["stopped"]
    assert len(plan["moves"]) == 2 == plan["lower_bound"], plan["moves"]
    assert all(m["for"] == "cpu" and m["cpu_cores"] == 1.0 and m["source"] == "h1" for m in plan["moves"])
    assert {m["destination"] for m in plan["moves"]} == {"h2", "h3"}
    assert plan["cpu_after_pct"] == {"h1": 12.5, "h2": 12.5, "h3": 12.5}
    lo, hi = plan["band_pct"]
    assert all(lo <= x <= hi for x in plan["load_after_pct"].values()), "memory stays in its band"
    assert "of their cores in use" in plan["moves"][0]["why"] and "h1 at 37.5%" in plan["moves"][0]["why"]


def test_a_cpu_move_that_would_unbalance_memory_is_not_made():
    hosts = [host("h1"), host("h2")]
    plan = rb.plan_rebalance(hosts, [vm("hot", "h1", cpu_cores=1.0), vm("cool", "h2")], threshold_pct=10)
    assert plan["moves"] == [] and plan["memory_balanced"] and not plan["cpu_balanced"] and not plan["balanced"]
    assert "CPU closer without taking a host's memory out of its band" in plan["stopped"]
    assert rb.plan_rebalance(hosts, [vm("hot", "h1", cpu_cores=1.0), vm("cool", "h2")], max_moves=1)["moves"] == []


def test_cpu_differences_within_the_floor_move_nothing():
    # 0.3 of a core on one of two 8-core hosts: 3.75 % of its cores, within CPU_FLOOR of the fleet's 1.9 %.
    hosts = [host("h1"), host("h2")]
    plan = rb.plan_rebalance(hosts, [vm("a", "h1", cpu_cores=0.3), vm("b", "h2", cpu_cores=0.0)], threshold_pct=10)
    assert plan["moves"] == [] and plan["balanced"] and plan["cpu_band_pct"] == [0.0, 6.88]


def test_memory_moves_carry_their_cpu():
    hosts = [host("h1"), host("h2")]
    vms = [vm("a", "h1", cpu_cores=2.0), vm("b", "h1", cpu_cores=2.0)]
    plan = rb.plan_rebalance(hosts, vms, threshold_pct=10)
    assert [m["for"] for m in plan["moves"]] == ["memory"]
    assert plan["cpu_after_pct"] == {"h1": 25.0, "h2": 25.0} and plan["balanced"]


def test_a_busy_vm_is_swapped_for_an_idle_one_when_a_single_move_would_unbalance_memory():
    hosts = [host("h1"), host("h2")]
    vms = [vm("busy1", "h1", cpu_cores=2.0), vm("busy2", "h1", cpu_cores=2.0), vm("idle1", "h2", cpu_cores=0.0),
           vm("idle2", "h2", cpu_cores=0.0)]
    plan = rb.plan_rebalance(hosts, vms, threshold_pct=10)
    assert plan["balanced"], plan["stopped"]
    (a, b) = plan["moves"]
    assert (a["vm"], a["destination"], a["swap_with"]) == ("busy1", "h2", "idle1")
    assert (b["vm"], b["destination"], b["swap_with"]) == ("idle1", "h1", "busy1")
    assert plan["cpu_after_pct"] == {"h1": 25.0, "h2": 25.0} and plan["load_after_pct"] == plan["load_before_pct"]
    assert plan["lower_bound"] == 1, "a bound, not the answer: one host must lose a busy VM"
    assert rb.plan_rebalance(hosts, vms, threshold_pct=10, max_moves=1)["moves"] == [], "a swap needs two moves"


def test_a_host_whose_cores_are_unknown_is_left_out_of_the_cpu_balance():
    hosts = [host("h1"), host("h2"), host("h3", vcpus=0)]
    vms = [vm("a", "h1", cpu_cores=1.0), vm("b", "h2"), vm("c", "h3")]
    plan = rb.plan_rebalance(hosts, vms, threshold_pct=10)
    assert all(m["destination"] != "h3" and m["source"] != "h3" for m in plan["moves"] if m["for"] == "cpu")
    assert plan["cpu_after_pct"]["h3"] == 0.0
