import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.placement import (
    PlanRefused, capacity, plan_evacuation, select_homecoming,
)


def host(name, mem=16384, cpus=8, **kw):
    return dict(name=name, memory_mib=mem, vcpus=cpus, **kw)


def vm(name, on, mem=1024, cpus=1, **kw):
    return dict(name=name, host=on, memory_mib=mem, vcpus=cpus, **kw)


HOSTS = [host("hv1"), host("hv2"), host("hv3")]


def test_balances_by_memory_instead_of_filling_one_host():
    vms = [vm(f"v{i}", "hv1", mem=m) for i, m in enumerate([4096, 2048, 2048, 1024, 1024, 512])]
    plan = plan_evacuation(HOSTS, vms, ["hv1"])
    dest_mem = {"hv2": 0, "hv3": 0}
    for m in plan["moves"]:
        dest_mem[m["destination"]] += m["memory_mib"]
    assert dest_mem == {"hv2": 5120, "hv3": 5632} or dest_mem == {"hv2": 5632, "hv3": 5120}
    assert plan["balance"]["max_load"] - plan["balance"]["min_load"] < 0.05
    assert plan["unplaceable"] == []


def test_counts_what_already_runs_there_and_headroom():
    # hv2 keeps 8192 MiB headroom (8192 usable); hv3 already runs 12000 (4384 left).
    hosts = [host("hv1"), host("hv2", headroom_mib=8192), host("hv3")]
    vms = [vm("big", "hv3", mem=12000), vm("a", "hv1", mem=4000), vm("b", "hv1", mem=4000),
           vm("c", "hv1", mem=4000)]
    plan = plan_evacuation(hosts, vms, ["hv1"])
    assert {m["vm"]: m["destination"] for m in plan["moves"]} == {"a": "hv2", "b": "hv2", "c": "hv3"}
    assert plan["load_after"] == {"hv2": round(8000 / 8192, 4), "hv3": round(16000 / 16384, 4)}
    # 192 MiB left on hv2 and 384 on hv3: a 400 MiB VM more fits nowhere, although 576 MiB are free in all.
    with pytest.raises(PlanRefused, match="d: no host has 400 MiB free"):
        plan_evacuation(hosts, vms + [vm("d", "hv1", mem=400)], ["hv1"])


def test_refuses_up_front_when_the_fleet_cannot_absorb():
    vms = [vm(f"v{i}", "hv1", mem=8192) for i in range(5)]
    with pytest.raises(PlanRefused, match="need 40960 MiB"):
        plan_evacuation([host("hv1"), host("hv2"), host("hv3")], vms, ["hv1"])


def test_refuses_when_one_vm_fits_nowhere_even_if_total_fits():
    vms = [vm("huge", "hv1", mem=12000), vm("x", "hv2", mem=8000), vm("y", "hv3", mem=8000)]
    with pytest.raises(PlanRefused, match="huge: no host has 12000 MiB free") as err:
        plan_evacuation(HOSTS, vms, ["hv1"])
    assert err.value.reason == "no_capacity" and [u["vm"] for u in err.value.unplaceable] == ["huge"]
    plan = plan_evacuation(HOSTS, vms, ["hv1"], refuse_partial=False)
    assert plan["unplaceable"][0]["vm"] == "huge" and plan["moves"] == []


def test_anti_affinity_keeps_group_apart():
    vms = [vm("db1", "hv1", anti_affinity="db"), vm("db2", "hv1", anti_affinity=["db", "x"]),
           vm("db3", "hv2", anti_affinity="db")]
    hosts = HOSTS + [host("hv4")]
    plan = plan_evacuation(hosts, vms, ["hv1"])
    dests = {m["vm"]: m["destination"] for m in plan["moves"]}
    assert "hv2" not in dests.values() and dests["db1"] != dests["db2"]
    with pytest.raises(PlanRefused, match="anti-affinity group db"):
        plan_evacuation(HOSTS, vms, ["hv1"])


def test_maintenance_hosts_are_never_destinations_and_pinned_vms_stay():
    hosts = [host("hv1"), host("hv2", maintenance=True), host("hv3")]
    vms = [vm("a", "hv1"), vm("b", "hv1"), vm("gpu", "hv1", pinned=True)]
    plan = plan_evacuation(hosts, vms, ["hv1"])
    assert {m["destination"] for m in plan["moves"]} == {"hv3"}
    assert plan["unplaceable"] == [{"vm": "gpu", "source": "hv1", "code": "pinned",
                                    "reason": "pinned to its host (passthrough device or explicit pin)"}]


def test_vcpu_overcommit():
    hosts = [host("hv1"), host("hv2", cpus=2, cpu_overcommit=1.0), host("hv3", cpus=2, cpu_overcommit=2.0)]
    plan = plan_evacuation(hosts, [vm("wide", "hv1", cpus=4)], ["hv1"])
    assert plan["moves"][0]["destination"] == "hv3"


def test_schedule_respects_limits_and_is_deterministic():
    hosts = [host(f"hv{i}", mem=65536) for i in range(1, 6)]
    vms = [vm(f"v{i:02d}", "hv1", mem=2048) for i in range(12)] + [vm(f"w{i:02d}", "hv2", mem=1024) for i in range(6)]
    limits = {"per_source": 2, "per_destination": 1, "fleet": 3}
    plan = plan_evacuation(hosts, vms, ["hv1", "hv2"], limits=limits, bandwidth_mib_s=100)
    events = sorted([(m["start_s"], 1, m) for m in plan["moves"]] + [(m["end_s"], 0, m) for m in plan["moves"]],
                    key=lambda e: (e[0], e[1]))
    out, inn, fleet = {}, {}, 0
    for _t, kind, m in events:
        d = 1 if kind else -1
        out[m["source"]] = out.get(m["source"], 0) + d
        inn[m["destination"]] = inn.get(m["destination"], 0) + d
        fleet += d
        assert out[m["source"]] <= 2 and inn[m["destination"]] <= 1 and fleet <= 3
    assert plan["makespan_s"] == max(m["end_s"] for m in plan["moves"])
    assert plan == plan_evacuation(hosts, vms, ["hv1", "hv2"], limits=limits, bandwidth_mib_s=100)
    # 18 moves of ~10-20 s through at most 3 lanes.
    total = sum(m["est_time_s"] for m in plan["moves"])
    assert plan["makespan_s"] >= total / 3


def test_estimates_flag_vms_that_will_not_converge():
    plan = plan_evacuation(HOSTS, [vm("hot", "hv1", mem=2048, dirty_rate=200 * 1048576)], ["hv1"],
                           bandwidth_mib_s=100)
    assert plan["moves"][0]["converges"] is False and plan["moves"][0]["est_time_s"] is None


@pytest.mark.parametrize("bad,msg", [({"per_source": 0}, "per_source"), ({"fleet": 0}, "fleet")])
def test_bad_limits(bad, msg):
    with pytest.raises(ValueError, match=msg):
        plan_evacuation(HOSTS, [], ["hv1"], limits=bad)


def test_unknown_host():
    with pytest.raises(ValueError, match="unknown host.*hv9"):
        plan_evacuation(HOSTS, [], ["hv9"])


# --- bringing VMs home: which fit on the home host (select_homecoming)

def test_capacity_is_the_planners_rule():
    assert capacity(host("h", mem=8192, cpus=2, memory_overcommit=1.5, headroom_mib=1024,
                         cpu_overcommit=2.0)) == (8192 * 1.5 - 1024, 4.0)


def test_everything_fits_when_there_is_room():
    home = host("h1", mem=8192, headroom_mib=1024)
    sel = select_homecoming(home, [vm("other", "h1", mem=2048)], [vm("a", "h2"), vm("b", "h3")])
    assert [v["name"] for v in sel["fits"]] == ["a", "b"] and sel["no_room"] == []
    assert sel["room"]["memory_mib"] == 8192 - 1024 - 2048 and sel["room"]["free_memory_mib_after"] == 3072


def test_brings_home_the_most_vms_not_the_first_listed():
    # 3000 MiB free: the big one first would bring one VM home; the two small ones fit together.
    home = host("h1", mem=4024, headroom_mib=1024)
    sel = select_homecoming(home, [], [vm("big", "h2", mem=2500), vm("s1", "h2", mem=1400), vm("s2", "h3", mem=1500)])
    assert [v["name"] for v in sel["fits"]] == ["s1", "s2"]
    (left,) = sel["no_room"]
    assert left["vm"] == "big" and left["host"] == "h2" and left["memory_mib"] == 2500
    assert left["free_memory_mib"] == 100 and "needs 2500 MiB, h1 has 100 MiB free" in left["msg"]
    assert "s1, s2 are home" in left["msg"] and "1024 MiB headroom" in left["msg"]


def test_then_the_most_memory_among_as_many_vms():
    # Room for two of three: smallest first takes 1000 + 1500; swapping in 1900 for 1000 still fits (3400 <= 3500).
    home = host("h1", mem=3500)
    sel = select_homecoming(home, [], [vm("a", "h2", mem=1000), vm("b", "h2", mem=1500), vm("c", "h2", mem=1900)])
    assert sorted(v["name"] for v in sel["fits"]) == ["b", "c"]
    assert [n["vm"] for n in sel["no_room"]] == ["a"]


def test_vcpus_with_overcommit_bound_too():
    home = host("h1", mem=65536, cpus=2, cpu_overcommit=2.0)
    sel = select_homecoming(home, [vm("r", "h1", cpus=2)], [vm("a", "h2", cpus=2), vm("b", "h2", cpus=1)])
    assert [v["name"] for v in sel["fits"]] == ["b"]
    assert sel["no_room"][0]["vm"] == "a" and "needs 2 vCPUs, h1 has 1 free" in sel["no_room"][0]["msg"]


def test_available_memory_bounds_what_the_allocations_allow():
    # The allocation rule leaves 15 GiB; the host really has 3 GiB available, less 1 GiB headroom.
    home = host("h1", mem=16384, headroom_mib=1024)
    sel = select_homecoming(home, [], [vm("a", "h2", mem=1024), vm("b", "h2", mem=1024), vm("c", "h2", mem=1024)],
                            available_mib=3072)
    assert len(sel["fits"]) == 2 and len(sel["no_room"]) == 1
    assert sel["room"]["memory_mib"] == 2048 and "3072 MiB available" in sel["no_room"][0]["msg"]


def test_nothing_fits_on_a_full_host():
    home = host("h1", mem=4096, headroom_mib=1024)
    sel = select_homecoming(home, [vm("hog", "h1", mem=3500)], [vm("a", "h2", mem=512)])
    assert sel["fits"] == [] and sel["no_room"][0]["free_memory_mib"] == 0
    assert "once" not in sel["no_room"][0]["msg"]


def test_selection_is_deterministic_and_keeps_the_input_order():
    home = host("h1", mem=3000)
    coming = [vm(n, "h2", mem=1000) for n in ("c", "a", "d", "b")]
    sel = select_homecoming(home, [], coming)
    assert [v["name"] for v in sel["fits"]] == ["c", "a", "b"]
    assert [n["vm"] for n in sel["no_room"]] == ["d"]


# --- two stacks at once (a rolling upgrade): versions and machine types from the lab's recorded capabilities

def _recorded(caps, version):
    import pathlib
    import re
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import parse_capabilities
    fixtures = pathlib.Path(__file__).resolve().parents[2] / "fixtures"
    text = (fixtures / version).read_text()
    return {"hypervisor_version": re.search(r"Running hypervisor: QEMU (\S+)", text).group(1),
            "libvirt_version": re.search(r"Running against daemon: (\S+)", text).group(1),
            "machines": sorted({m for g in parse_capabilities((fixtures / caps).read_text())["guests"]
                                for m in g["machines"]})}


OLD_STACK = _recorded("capabilities_debian12_qemu72.xml", "version_debian12_qemu72.txt")   # QEMU 7.2.22, libvirt 9.0.0
NEW_STACK = _recorded("capabilities_debian13_qemu100.xml", "version_debian13_qemu100.txt")  # QEMU 10.0.13, libvirt 11.3.0


def test_recorded_stacks():
    assert (OLD_STACK["hypervisor_version"], NEW_STACK["libvirt_version"]) == ("7.2.22", "11.3.0")
    assert "pc-i440fx-10.0" in NEW_STACK["machines"] and "pc-i440fx-10.0" not in OLD_STACK["machines"]


def test_a_vm_of_an_upgraded_host_goes_to_an_upgraded_host_although_an_old_one_is_emptier():
    # lab3 (old) is the emptiest host and would take both VMs by memory alone; lab1 (new) has room for both.
    hosts = [host("lab2", **NEW_STACK), host("lab1", mem=8192, **NEW_STACK), host("lab3", mem=65536, **OLD_STACK)]
    vms = [vm("a", "lab2", machine="pc-i440fx-7.2"), vm("b", "lab2", machine="pc-i440fx-7.2"),
           vm("resident", "lab1", mem=2048)]
    assert {m["destination"] for m in plan_evacuation([{k: h[k] for k in ("name", "memory_mib", "vcpus")}
                                                       for h in hosts], vms, ["lab2"])["moves"]} == {"lab3"}
    plan = plan_evacuation(hosts, vms, ["lab2"])
    assert {m["vm"]: m["destination"] for m in plan["moves"]} == {"a": "lab1", "b": "lab1"}
    assert not any("notes" in m or "older_destination" in m for m in plan["moves"])


def test_an_old_hosts_vms_may_go_to_a_new_host_as_to_an_old_one():
    # Not older is all that counts: an upgraded host is as good a destination as one of the same stack.
    hosts = [host("lab3", **OLD_STACK), host("lab1", mem=8192, **OLD_STACK), host("lab2", mem=65536, **NEW_STACK)]
    plan = plan_evacuation(hosts, [vm("a", "lab3", machine="pc-i440fx-7.2"), vm("r", "lab1", mem=2048)], ["lab3"])
    assert plan["moves"][0]["destination"] == "lab2" and "notes" not in plan["moves"][0]


def test_an_older_host_only_when_no_newer_one_fits_and_the_move_says_so():
    # lab1 (new) has room for one 4 GiB VM; the second goes to lab3 (old), which offers its machine type.
    hosts = [host("lab2", **NEW_STACK), host("lab1", mem=4096, **NEW_STACK), host("lab3", mem=65536, **OLD_STACK)]
    vms = [vm("a", "lab2", mem=4096, machine="pc-i440fx-7.2"), vm("b", "lab2", mem=4096, machine="pc-i440fx-7.2")]
    plan = plan_evacuation(hosts, vms, ["lab2"])
    by_vm = {m["vm"]: m for m in plan["moves"]}
    assert by_vm["a"]["destination"] == "lab1" and "notes" not in by_vm["a"]
    older = by_vm["b"]
    assert older["destination"] == "lab3" and older["older_destination"] is True
    assert older["notes"] == ["lab3 runs QEMU 7.2.22 / libvirt 9.0.0, older than lab2's QEMU 10.0.13 / libvirt 11.3.0: "
                              "no host of the same or a newer stack has room for b; machine type pc-i440fx-7.2 is "
                              "offered there; once it runs there it cannot use what the newer QEMU added"]


def test_a_host_that_does_not_offer_the_machine_type_is_never_chosen():
    # b (pc-i440fx-10.0) cannot go to lab3 (old); lab1 (new) is fuller but is the only host for it.
    hosts = [host("lab2", **NEW_STACK), host("lab1", mem=8192, **NEW_STACK), host("lab3", mem=65536, **OLD_STACK)]
    vms = [vm("big", "lab1", mem=4096), vm("b", "lab2", mem=2048, machine="pc-i440fx-10.0")]
    plan = plan_evacuation(hosts, vms, ["lab2"])
    assert [(m["vm"], m["destination"]) for m in plan["moves"]] == [("b", "lab1")]
    # lab1 full: b is unplaceable for lack of room on the hosts that offer its machine type.
    with pytest.raises(PlanRefused, match=r"b: of the hosts that offer its machine type pc-i440fx-10.0 \(lab1\): "
                                          r"no host has 2048 MiB free"):
        plan_evacuation(hosts, [vm("big", "lab1", mem=7000)] + vms[1:], ["lab2"])


def test_a_vm_defined_on_the_new_stack_with_only_old_hosts_left_is_refused_naming_its_machine_type():
    hosts = [host("lab2", **NEW_STACK), host("lab1", maintenance=True, **NEW_STACK), host("lab3", **OLD_STACK)]
    vms = [vm("newvm", "lab2", machine="pc-i440fx-10.0"), vm("oldvm", "lab2", machine="pc-i440fx-7.2")]
    with pytest.raises(PlanRefused) as err:
        plan_evacuation(hosts, vms, ["lab2"])
    assert str(err.value) == ("cannot place newvm: machine type pc-i440fx-10.0 of newvm (defined on lab2, QEMU 10.0.13 / "
                              "libvirt 11.3.0) is offered by none of the hosts that could take it (lab3: QEMU 7.2.22 / "
                              "libvirt 9.0.0)")
    # No room would fix it: the refusal's reason code says the move rules block it, not no_capacity.
    assert err.value.reason == "blocked" and [u["vm"] for u in err.value.unplaceable] == ["newvm"]
    plan = plan_evacuation(hosts, vms, ["lab2"], refuse_partial=False)
    assert [(u["vm"], u["code"], u["machine"]) for u in plan["unplaceable"]] == \
        [("newvm", "machine_type_unsupported", "pc-i440fx-10.0")]
    # With a VM that does not fit as well, it is a capacity refusal again.
    with pytest.raises(PlanRefused) as err:
        plan_evacuation(hosts + [host("lab4", **OLD_STACK)], vms + [vm("huge", "lab2", mem=17000)], ["lab2"])
    assert err.value.reason == "no_capacity" and {u["code"] for u in err.value.unplaceable} == \
        {"machine_type_unsupported", "no_capacity"}
    assert [(m["vm"], m["destination"], m["older_destination"]) for m in plan["moves"]] == [("oldvm", "lab3", True)]


def test_hosts_without_machine_types_or_versions_take_any_vm_as_before():
    hosts = [host("lab2", **NEW_STACK), host("lab1"), host("lab3", **OLD_STACK)]
    plan = plan_evacuation(hosts, [vm("newvm", "lab2", machine="pc-i440fx-10.0")], ["lab2"])
    assert plan["moves"][0]["destination"] == "lab1" and "notes" not in plan["moves"][0]


def _random_fleet(seed):
    import random
    rnd = random.Random(seed)
    hosts = [host(f"h{i:02d}", mem=rnd.choice([16384, 32768, 65536]), cpus=rnd.choice([4, 8])) for i in range(24)]
    vms = [vm(f"v{i:03d}", f"h{rnd.randrange(24):02d}", mem=rnd.choice([512, 1024, 2048, 4096]),
              cpus=rnd.choice([1, 2]), anti_affinity=f"g{i % 7}" if i % 5 == 0 else None, priority=i % 3)
           for i in range(260)]
    return hosts, vms, ["h00", "h05", "h11"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_without_version_data_or_with_nothing_older_the_plan_is_the_plain_one(seed):
    import copy
    hosts, vms, evac = _random_fleet(seed)
    plain = plan_evacuation(hosts, vms, evac, refuse_partial=False)
    assert plain["moves"] and not any("notes" in m for m in plain["moves"])
    # Several stacks, but every source is of the oldest and every host offers every machine type: the same plan,
    # though the planner now searches one group of hosts per stack.
    staged = copy.deepcopy(hosts)
    for i, h in enumerate(staged):
        oldest = h["name"] in evac
        h.update(OLD_STACK if oldest or i % 3 == 0 else NEW_STACK if i % 3 == 1 else
                 dict(NEW_STACK, hypervisor_version="9.2.0"))
        h["machines"] = NEW_STACK["machines"] + OLD_STACK["machines"]
    machined = [dict(v, machine="pc-i440fx-7.2") for v in vms]
    assert plan_evacuation(staged, machined, evac, refuse_partial=False) == plain
