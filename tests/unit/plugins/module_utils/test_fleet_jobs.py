"""Fleet jobs: a VM the move rules keep in place (a paused VM) is planned around, not a reason to refuse."""

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import fleet_jobs as fj
from ansible_collections.fleetmaint.libvirt.plugins.module_utils import host_jobs as hj
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError


class _Host:
    def __init__(self):
        self.host = {"memory_total_mib": 8192, "cpu": {"count": 8}}
        self.conn = None


class FakeFleet:
    """What a fleet job reads of a fleet: hosts' facts, VMs, marks; planner_input is Fleet's own."""

    planner_input = hj.Fleet.planner_input

    def __init__(self, vms):
        self.hosts = {h: _Host() for h in ("hv1", "hv2", "hv3")}
        self.uri_of = {h: f"test:///{h}" for h in self.hosts}
        self.marks = {h: None for h in self.hosts}
        self.vms = {h: [] for h in self.hosts}
        for name, where in vms:
            self.vms[where].append({"name": name, "state": "running", "memory_mib": 1024, "vcpus": 1, "hostdevs": [],
                                    "home_host": where})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class FakeMethods:
    ran = None

    def __init__(self, _fleet, moves, _p, _lim, _side):
        pass

    @staticmethod
    def refuse(moves, refusing, host):
        return None

    def run(self, moves, _uri_of, _p, _progress, _cancel=None, _on_counts=None, job=""):
        FakeMethods.ran = [(m["vm"], m["source"], m["destination"]) for m in moves]
        vms = [dict(m, result="moved") for m in moves]
        return {"vms": vms, "stopped": None, "cancelled": False, "links": {}, "started_at": 0, "ended_at": 1,
                "totals": {"moved": len(moves), "cold_moved": 0, "already_there": 0, "elapsed_s": 1.0}}


class _Lease:
    def __init__(self, *a):
        pass

    def acquire(self):
        return None

    def release(self):
        return None


# hv1 holds six VMs that each use 1000 MiB; hv2 and hv3 are empty. "frozen" is paused: any move of it is blocked
# by the code that says it cannot leave its host now (migration_rules.STAYS_CODES).
SIX = [(f"v{i}", "hv1") for i in range(5)] + [("frozen", "hv1")]


@pytest.fixture
def fleet_with(monkeypatch):
    checked, marked = [], []

    def use(vms, blocked_too=(), paused=("frozen",)):
        def preflight(_fleet, moves, _p):
            checked.append([m["vm"] for m in moves])
            return [{"vm": m["vm"], "source": m["source"], "destination": m["destination"],
                     "blockers": [f"{m['vm']} is paused with its disks inactive"], "codes": ["vm_paused_disks_inactive"],
                     "stays": True} for m in moves if m["vm"] in paused]

        FakeMethods.ran = None
        monkeypatch.setattr(fj, "Fleet", lambda *a, **k: FakeFleet(vms))
        monkeypatch.setattr(fj, "measure_load", lambda conns, by_host, seconds: {
            d["name"]: {"in_use_mib": 1000, "cpu_cores": 0.1 if d["name"] != "frozen" else 0.0}
            for ds in by_host.values() for d in ds})
        monkeypatch.setattr(hj, "_preflight", lambda f, moves, p: preflight(f, moves, p) + [
            {"vm": m["vm"], "source": m["source"], "destination": m["destination"], "blockers": ["no network"],
             "codes": ["missing_network"], "stays": False} for m in moves if m["vm"] in blocked_too])
        monkeypatch.setattr(fj, "HostLease", _Lease)
        monkeypatch.setattr(fj, "_Methods", FakeMethods)
        monkeypatch.setattr(fj, "set_mark", lambda conn, uri, reason, by: marked.append(uri) or True)
        return checked
    return use


def params(**kw):
    p = {k: v.get("default") for k, v in fj.REBALANCE_SPEC.items()}
    p.update(uris=["test:///hv1", "test:///hv2", "test:///hv3"], max_moves=10, memory_headroom=0)
    p.update(kw)
    return p


def test_a_paused_vm_the_plan_would_move_is_kept_in_place_and_the_rest_is_balanced(fleet_with):
    checked = fleet_with(SIX)
    res = fj.rebalance_fleet(params())
    assert any("frozen" in c for c in checked), "the first plan moved the paused VM (the test needs it to)"
    moved = [vm for vm, _src, _dst in FakeMethods.ran]
    assert "frozen" not in moved and len(moved) == 4, FakeMethods.ran
    assert {dst for _vm, _src, dst in FakeMethods.ran} == {"hv2", "hv3"}
    assert [s["vm"] for s in res["staying"]] == ["frozen"] and res["staying"][0]["reason"] == "vm_paused_disks_inactive"
    assert "staying: frozen on hv1 (vm_paused_disks_inactive" in res["msg"]
    assert all("frozen" != m["vm"] for m in res["moves"]), "the plan returned is the one that ran"
    assert res["balanced"] and res["changed"]


def test_check_mode_shows_the_same_plan_and_moves_nothing(fleet_with):
    fleet_with(SIX)
    res = fj.rebalance_fleet(params(), check_mode=True)
    assert FakeMethods.ran is None
    assert [s["vm"] for s in res["staying"]] == ["frozen"] and len(res["moves"]) == 4
    assert "would move 4 VMs" in res["msg"] and "staying: frozen" in res["msg"]


def test_any_other_blocked_move_still_refuses_the_whole_job(fleet_with):
    fleet_with(SIX, blocked_too=("v0", "v1", "v2", "v3", "v4"))
    with pytest.raises(FleetmaintError) as err:
        fj.rebalance_fleet(params())
    assert FakeMethods.ran is None
    assert "refusing to balance, nothing was moved" in err.value.msg and "no network" in err.value.msg


def test_consolidation_frees_another_host_than_the_one_of_a_vm_that_must_stay(fleet_with):
    # Emptying hv1 (the paused VM alone) would move the least; it cannot leave, so hv2 (a and b) is freed instead.
    checked = fleet_with([("frozen", "hv1"), ("a", "hv2"), ("b", "hv2"), ("c", "hv3"), ("d", "hv3")])
    res = fj.rebalance_fleet(params(goal="consolidate", free_hosts=1))
    assert checked[0] == ["frozen"], "the first plan freed hv1"
    assert res["free"] == ["hv2"] and sorted(vm for vm, _s, _d in FakeMethods.ran) == ["a", "b"]
    assert res["maintenance_marked"] == ["hv2"]
    assert [s["vm"] for s in res["staying"]] == ["frozen"]


def test_consolidation_refuses_when_every_host_has_a_vm_that_must_stay(fleet_with):
    fleet_with([("frozen", "hv1"), ("a", "hv2"), ("b", "hv3")], paused=("frozen", "a", "b"))
    with pytest.raises(FleetmaintError) as err:
        fj.rebalance_fleet(params(goal="consolidate", free_hosts=1))
    assert err.value.reason == "no_capacity" and "pinned" in err.value.msg and FakeMethods.ran is None
