"""Host jobs: their limits are validated before anything is read."""

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import host_jobs as hj
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError


def params(**kw):
    p = {k: v.get("default") for k, v in hj.EVACUATE_SPEC.items()}
    p.update(uris=["test:///default"], host="x")
    p.update(kw)
    return p


def test_limits_default_and_validation():
    assert hj._limits(params()) == {"per_source": 4, "per_destination": 4, "fleet": 8}  # pylint: disable=protected-access
    assert hj._limits(params(limits={"fleet": 8}))["fleet"] == 8  # pylint: disable=protected-access
    for bad in ({"fleet": 0}, {"per_host": 2}):
        with pytest.raises(FleetmaintError, match="invalid limits"):
            hj._limits(params(limits=bad))  # pylint: disable=protected-access


# --- restore: the home host's room is checked before anything moves

class _Host:
    def __init__(self, mem, cpus, available):
        self.host = {"memory_total_mib": mem, "cpu": {"count": cpus}, "memory_available_mib": available}
        self.conn = None


class FakeFleet:
    """What restore_host reads of a fleet: hosts' facts, VMs (with their home), marks; planner_input is Fleet's."""

    planner_input = hj.Fleet.planner_input

    def __init__(self, vms, mem=8192, cpus=8, available=100000, marked=True):
        self.hosts = {h: _Host(mem, cpus, available) for h in ("hv1", "hv2", "hv3")}
        self.uri_of = {h: f"test:///{h}" for h in self.hosts}
        self.marks = {h: ({"by": "test"} if h == "hv1" and marked else None) for h in self.hosts}
        self.vms = {h: [] for h in self.hosts}
        for name, where, mem_mib, home in vms:
            self.vms[where].append({"name": name, "state": "running", "memory_mib": mem_mib, "vcpus": 1,
                                    "hostdevs": [], "home_host": home})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def resolve(self, names):
        return list(names)


class FakeMethods:
    """Chooses pre-copy for every move; run() moves them all and remembers what it was asked to move."""

    ran = None

    def __init__(self, _fleet, moves, _p, _lim, _side, profiling=None):
        if profiling is not None:
            profiling.result()
        for m in moves:
            m["profile"] = {}
            m["method"] = {"method": "precopy", "why": "test", "exclusive": False, "predicted": {}, "refused": False}

    @staticmethod
    def refuse(moves, refusing, host):
        return None

    def run(self, moves, _uri_of, _p, _progress, _cancel=None, _on_counts=None, job=""):
        FakeMethods.ran, FakeMethods.job = [m["vm"] for m in moves], job
        return {"vms": [dict(m, result="moved") for m in moves], "stopped": None, "cancelled": False,
                "totals": {"moved": len(moves), "cold_moved": 0, "elapsed_s": 1.0}}


@pytest.fixture
def restore_with(monkeypatch):
    cleared = []

    def use(fleet):
        FakeMethods.ran = None
        monkeypatch.setattr(hj, "Fleet", lambda *a, **k: fleet)
        monkeypatch.setattr(hj, "_preflight", lambda *a: [])
        monkeypatch.setattr(hj, "_lease", lambda *a: None)
        monkeypatch.setattr(hj, "_Methods", FakeMethods)
        monkeypatch.setattr(hj, "profile_vms", lambda *a: {})
        monkeypatch.setattr(hj, "clear_mark", lambda conn, uri: cleared.append(uri) or True)
        return cleared
    return use


def restore_params(**kw):
    p = {k: v.get("default") for k, v in hj.RESTORE_SPEC.items()}
    p.update(uris=["test:///hv1", "test:///hv2", "test:///hv3"], host="hv1")
    p.update(kw)
    return p


# hv1: 8192 MiB, 1024 headroom, a 4096 MiB VM of its own running there: 3072 MiB free for what comes home;
# a and b (2048) fit, big with either (3124) does not.
AWAY = [("hog", "hv1", 4096, "hv1"), ("a", "hv2", 1024, "hv1"), ("big", "hv2", 2100, "hv1"), ("b", "hv3", 1024, "hv1"),
        ("other", "hv3", 2048, "hv3")]


def test_restore_brings_home_what_fits_and_fails_no_capacity_for_the_rest(restore_with):
    cleared = restore_with(FakeFleet(AWAY))
    with pytest.raises(FleetmaintError) as err:
        hj.restore_host(restore_params())
    assert err.value.reason == "no_capacity"
    assert sorted(FakeMethods.ran) == ["a", "b"] and FakeMethods.job == "restore hv1", "its move slots name the job"
    res = err.value.context["result"]
    (left,) = [s for s in res["staying"] if s["reason"] == "no_capacity"]
    assert left["vm"] == "big" and left["host"] == "hv2"
    assert left["memory_mib"] == 2100 and left["free_memory_mib"] == 1024
    assert "needs 2100 MiB, hv1 has 1024 MiB free" in left["msg"]
    assert res["capacity"]["memory_mib"] == 3072 and res["changed"] is True
    assert "big on hv2" in err.value.msg and "maintenance mark kept" in err.value.msg
    assert cleared == []  # the mark stays


def test_restore_check_mode_says_what_would_come_home_and_what_would_not(restore_with):
    restore_with(FakeFleet(AWAY))
    with pytest.raises(FleetmaintError) as err:
        hj.restore_host(restore_params(), check_mode=True)
    assert err.value.reason == "no_capacity" and FakeMethods.ran is None
    res = err.value.context["result"]
    assert sorted(m["vm"] for m in res["moves"]) == ["a", "b"] and res["vms"] == []
    assert [s["vm"] for s in res["staying"]] == ["big"]
    assert err.value.msg.startswith("would bring 2 VMs home to hv1")


def test_restore_rerun_after_room_was_freed_brings_the_rest_and_clears_the_mark(restore_with):
    # The hog is gone and a, b came home last time: big fits now.
    cleared = restore_with(FakeFleet([("a", "hv1", 1024, "hv1"), ("b", "hv1", 1024, "hv1"), ("big", "hv2", 2100, "hv1")]))
    res = hj.restore_host(restore_params())
    assert FakeMethods.ran == ["big"] and res["staying"] == [] and cleared == ["test:///hv1"]
    assert res["capacity"]["used_memory_mib"] == 2048


def test_restore_counts_the_memory_really_available(restore_with):
    # The allocations leave room for all three; libvirt says 3200 MiB available, less 1024 headroom: two fit.
    restore_with(FakeFleet(AWAY[1:], available=3200))
    with pytest.raises(FleetmaintError) as err:
        hj.restore_host(restore_params())
    assert sorted(FakeMethods.ran) == ["a", "b"]
    assert "3200 MiB available" in err.value.context["result"]["staying"][0]["msg"]


def test_restore_with_overcommit_option(restore_with):
    restore_with(FakeFleet(AWAY))
    res = hj.restore_host(restore_params(memory_overcommit=1.5))
    assert sorted(FakeMethods.ran) == ["a", "b", "big"] and res["staying"] == []


def test_a_move_blocked_only_for_memory_is_left_to_the_capacity_check(monkeypatch):
    blocked = [{"vm": "big", "source": "hv2", "destination": "hv1", "blockers": ["hv1 has 900 MiB available"],
                "codes": ["insufficient_memory"], "stays": False}]
    monkeypatch.setattr(hj, "_preflight", lambda *a: [dict(b) for b in blocked])
    moves = [{"vm": "big", "source": "hv2", "destination": "hv1"}]
    assert hj._checked(None, "hv1", moves, {}, "refusing", str, decided_later=("insufficient_memory",)) == []  # pylint: disable=protected-access
    assert len(moves) == 1
    with pytest.raises(FleetmaintError, match="refusing, nothing was moved"):
        hj._checked(None, "hv1", moves, {}, "refusing", lambda b: b["vm"])  # pylint: disable=protected-access


def test_the_maintenance_report_shows_the_vms_left_for_no_room(restore_with):
    # What the rolling patch records for a failed restore (its rescue keeps the failed result): report.py, as is.
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.report import vm_rows
    restore_with(FakeFleet(AWAY))
    with pytest.raises(FleetmaintError) as err:
        hj.restore_host(restore_params())
    rows = vm_rows([{"host": "hv1", "restore": err.value.context["result"]}])
    assert sorted((r["vm"], r["result"]) for r in rows) == [("a", "moved"), ("b", "moved"), ("big", "stayed")]
    (stayed,) = [r for r in rows if r["result"] == "stayed"]
    assert stayed["reason"] == "no_capacity" and stayed["source"] == "hv2" and stayed["direction"] == "home"
    assert "needs 2100 MiB" in stayed["msg"]


def test_the_vms_are_profiled_while_their_moves_are_checked_and_a_refusal_waits_for_the_profiling(monkeypatch):
    """The profile (profile_seconds of dirty-rate sampling) runs beside the checks, not after them; a refusal
    by the checks returns only once the profiling thread is done with the fleet's connections."""
    import threading
    fleet = FakeFleet(AWAY)
    started, done = threading.Event(), []

    def profile_vms(_conns, by_src, _seconds, _copy, _wants_working_set=None):
        started.set()
        threading.Event().wait(0.2)
        done.append(sorted(vm["name"] for vms in by_src.values() for vm in vms))
        return {}

    def preflight(*_a):
        overlapped.append(started.wait(2))
        return blocked

    overlapped, blocked = [], []
    monkeypatch.setattr(hj, "Fleet", lambda *a, **k: fleet)
    monkeypatch.setattr(hj, "_preflight", preflight)
    monkeypatch.setattr(hj, "_lease", lambda *a: None)
    monkeypatch.setattr(hj, "_Methods", FakeMethods)
    monkeypatch.setattr(hj, "profile_vms", profile_vms)
    with pytest.raises(FleetmaintError):
        hj.restore_host(restore_params())  # big has no room: the restore fails after moving a and b
    assert overlapped == [True], "the profiling had started before the moves were checked"
    assert done == [["a", "b", "big"]]
    done.clear()
    blocked.append({"vm": "a", "source": "hv2", "destination": "hv1", "blockers": ["no network"],
                    "codes": ["network_missing"], "stays": False})
    with pytest.raises(FleetmaintError, match="refusing to restore hv1, nothing was moved"):
        hj.restore_host(restore_params())
    assert done == [["a", "b", "big"]], "the refusal waited for the profiling to end"


def test_only_a_vm_plain_precopy_would_not_move_on_a_known_link_gets_its_working_set_measured():
    mib = 1048576
    p = {"link_bandwidth": {"hv1": 24}, "bandwidth": None}
    assert hj._alone_bps(p, "hv1") == 24 * mib and hj._alone_bps(p, "hv2") is None
    assert hj._alone_bps(dict(p, bandwidth=16), "hv1") == 16 * mib and hj._alone_bps(dict(p, bandwidth=16), "hv2") == 16 * mib
    wanted = hj._needs_working_set({"hot": 24 * mib, "quiet": 24 * mib, "far": None}, 500)
    hot = {"vm": "hot", "in_use_bytes": 256 * mib, "dirty_bps": 40 * mib}
    assert wanted(hot) is True
    assert wanted(dict(hot, vm="quiet", dirty_bps=1 * mib)) is False  # converges plainly: nothing to learn
    assert wanted(dict(hot, vm="far")) is False  # link not known: nothing is decided on it


@pytest.mark.parametrize("conns,compression,mib_s", [(None, "none", 32), (2, "none", 64), (None, "zstd", 64),
                                                     (4, "none", 64)])
def test_a_move_is_chosen_at_its_part_of_a_link_whose_share_counts_connections(conns, compression, mib_s):
    """lab1's link, 64 MiB/s, has a share of 2: two moves of one connection each get half of it; a move of two
    connections (or more, or a multifd compression's two) fills the share and is chosen at the whole link."""
    mib = 1048576
    methods = object.__new__(hj._Methods)
    methods.p = params(parallel_connections=conns, compression=compression, link_bandwidth={"lab1": 64})
    methods.side, methods.share, methods.remembered = "source", {"lab1": 2}, {}
    methods.allowed = {"xbzrle": False, "auto_converge": True, "postcopy": False, "suspend": False, "cold": False}
    methods.downtime, methods.assumed, methods.cap = 500, 128 * mib, None
    methods.profiles = {"v": {"vm": "v", "memory_bytes": 160 * mib, "in_use_bytes": 96 * mib, "dirty_bps": 0.5 * mib,
                              "disk_bytes": 0}}
    chosen = methods.choose({"vm": "v", "source": "lab1", "destination": "lab2"}, 64 * mib)
    assert chosen["method"] == "precopy" and chosen["why"].endswith(f"converges at {mib_s} MiB/s"), chosen["why"]
    # An explicit share (the moves the limits let run, for a move that does not hold its link) is taken as given.
    assert methods.choose({"vm": "v", "source": "lab1"}, 64 * mib, share=4)["why"].endswith("converges at 16 MiB/s")


def test_the_links_a_job_measured_are_kept_on_their_hosts_and_a_host_that_cannot_keep_one_is_said(monkeypatch):
    kept = []

    def remember(uri, mib_s, moves, by, first_mib_s=None):
        if uri == "u3":
            raise FleetmaintError("keeping the measured link on the host on u3 failed: no secret driver")
        kept.append((uri, mib_s, moves, by, first_mib_s))

    monkeypatch.setattr(hj, "remember_link", remember)
    links = {"hv1": {"given": True, "mib_s": 24},
             "hv2": {"given": False, "measured_mib_s": 310.5, "first_mib_s": 200.0, "samples": 3},
             "hv3": {"given": False, "measured_mib_s": 80.0, "samples": 1},
             "hv4": {"given": False, "measured_mib_s": None, "samples": 0, "remembered": {"mib_s": 99}}}
    hj._remember_links(links, {"hv1": "u1", "hv2": "u2", "hv3": "u3", "hv4": "u4"}, "evacuate hv2")  # pylint: disable=protected-access
    assert kept == [("u2", 310.5, 3, "evacuate hv2", 200.0)], "only what this job measured, never a given link"
    assert links["hv2"]["kept"] is True and "kept" not in links["hv4"] and "kept" not in links["hv1"]
    assert links["hv3"]["kept"] is False and "no secret driver" in links["hv3"]["not_kept"]
