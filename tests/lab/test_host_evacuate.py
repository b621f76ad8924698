"""host_evacuate and host_restore on the lab: real concurrent migrations, then home again."""

from __future__ import annotations

import json
import re
import time

import pytest

from conftest import wait_for

MIXED = {"ev-a": 256, "ev-b": 192, "ev-c": 160, "ev-d": 128, "ev-e": 128, "ev-f": 96}


@pytest.fixture(scope="module")
def fleet(lab):
    for name, mem in MIXED.items():
        disk = ["--disk", "local"] if name == "ev-f" else []
        lab.ctl("vm", "create", name, "--host", "lab1", "--memory", str(mem), *disk, "--no-wait")
    wait_for(lambda: all(m["intact"] for m in lab.markers(MIXED).values()), 90, what="guests to write markers")
    yield list(MIXED)
    for name in MIXED:
        lab.ctl("vm", "delete", name, check=False)


def settled(lab, vms):
    """vm -> host once every VM runs on exactly one host and is defined there only, else None."""
    try:
        return lab.invariant(vms)
    except AssertionError:
        return None


def mark(lab, host):
    res = lab.virsh(host, "secret-list", check=False).stdout
    return "fleetmaint-maintenance" in res


def kept_link(lab, host):
    """The link a job measured and kept on the host (its note, read through libvirt), or None."""
    return lab.note(host, "fleetmaint-link")


def test_check_mode_plans_without_moving(lab, fleet):
    r = lab.evacuate("--check", uris=lab.uris(), host="lab1", copy_storage="all")
    assert not r.get("failed"), r.get("msg")
    assert r["changed"] is True and len(r["plan"]["moves"]) == 6
    assert set(lab.invariant(fleet).values()) == {"lab1"}
    assert not mark(lab, "lab1")


def test_capacity_too_small_is_refused_before_any_move(lab, fleet):
    avail = lab.facts()["lab2"]["host"]["memory_total_mib"]
    r = lab.evacuate(uris=lab.uris(), host="lab1", copy_storage="all", memory_headroom=avail - 300)
    assert r.get("failed") is True
    assert "refusing to evacuate lab1, nothing was moved" in r["msg"]
    assert set(lab.invariant(fleet).values()) == {"lab1"}
    assert not mark(lab, "lab1")


def test_evacuate_balances_keeps_data_and_marks_the_host(lab, fleet):
    r = lab.evacuate(uris=lab.uris(), host="lab1", copy_storage="all",
                     limits={"per_source": 2, "per_destination": 2, "fleet": 3})
    assert not r.get("failed"), r.get("msg")
    assert r["totals"]["moved"] == 6 and r["totals"]["failed"] == 0
    where = lab.invariant(fleet)
    assert "lab1" not in where.values()
    mem = {"lab2": 0, "lab3": 0}
    for vm, host in where.items():
        mem[host] += MIXED[vm]
    assert abs(mem["lab2"] - mem["lab3"]) <= 128, f"unbalanced: {mem}"
    assert all(lab.marker(vm)["intact"] for vm in fleet)
    assert mark(lab, "lab1"), "the host carries its maintenance mark"
    # lab1's link was not given: the moves measured it, and the job kept it on lab1 for the jobs after it.
    link = r["links"]["lab1"]
    assert link["given"] is False and 1 <= link["samples"] <= 6 and link["measured_mib_s"] > 0 and link["kept"] is True
    assert kept_link(lab, "lab1")["mib_s"] == link["measured_mib_s"]
    # Progress lines name the task's module (the evacuation), not the single-move module it runs.
    assert "[localhost] attempt ev-" in r["stdout"] and "host_evacuate ev-a:" in r["stdout"]
    assert "live_migrate ev-a:" not in r["stdout"]
    # Planners never choose a host in maintenance.
    again = lab.evacuate("--check", uris=lab.uris(), host="lab2", copy_storage="all")
    assert {m["destination"] for m in again["plan"]["moves"]} == {"lab3"}


@pytest.mark.after("test_evacuate_balances_keeps_data_and_marks_the_host")
def test_rerun_converges_without_moving_anything(lab, fleet):
    before = lab.invariant(fleet)
    r = lab.evacuate(uris=lab.uris(), host="lab1", copy_storage="all")
    assert not r.get("failed"), r.get("msg")
    assert r["plan"]["moves"] == [] and r["changed"] is False
    assert lab.invariant(fleet) == before


@pytest.mark.after("test_evacuate_balances_keeps_data_and_marks_the_host")
def test_restore_brings_everyone_home_and_clears_the_mark(lab, fleet):
    kept = kept_link(lab, "lab1")
    assert kept and kept["by"] == "evacuate lab1", "the evacuation kept lab1's link"
    # Two connections a move (multifd): each fills lab1's share of two, so the moves home take its link one at a
    # time, and those that wait say why.
    r = lab.restore(uris=lab.uris(), host="lab1", copy_storage="all", parallel_connections=2)
    assert not r.get("failed"), r.get("msg")
    assert r["totals"]["moved"] == 6
    assert "lab1's link: 1 move(s) with 2 connection(s) on it, and this move's 2 would make more than the 2 chosen " \
           "for it" in r["stdout"], r["log"]
    # The moves home share lab1's link: the first ones were predicted at the link the evacuation measured there,
    # and the job measured it again and kept that.
    assert r["links"]["lab1"]["remembered"]["mib_s"] == kept["mib_s"]
    first = min(r["vms"], key=lambda v: v["started_at"])
    assert first["predicted"]["from_remembered_link"] is True, first["predicted"]
    assert kept_link(lab, "lab1")["by"] == "restore lab1" and r["links"]["lab1"]["kept"] is True
    assert set(lab.invariant(fleet).values()) == {"lab1"}
    assert all(lab.marker(vm)["intact"] for vm in fleet)
    assert not mark(lab, "lab1") and r["maintenance_cleared"] is True
    again = lab.restore(uris=lab.uris(), host="lab1", copy_storage="all")
    assert again["changed"] is False and again["moves"] == []


def test_anti_affinity_is_respected(lab, fleet):
    r = lab.evacuate("--check", uris=lab.uris(), host="lab1", copy_storage="all",
                     anti_affinity={"web": ["ev-c", "ev-d"]})
    dests = {m["vm"]: m["destination"] for m in r["plan"]["moves"]}
    assert dests["ev-c"] != dests["ev-d"]
    r = lab.evacuate("--check", uris=lab.uris(), host="lab1", copy_storage="all",
                     anti_affinity={"web": ["ev-c", "ev-d", "ev-e"]})
    assert r.get("failed") is True and "anti-affinity group web" in r["msg"]


def test_destination_killed_mid_evacuation(lab, fleet):
    """VMs bound for the dead host stay on the source; the rest complete; the summary says so."""
    lab.ctl("fault", "slow", "lab1", "lab3", "3")
    try:
        cmd, out = lab.playbook_cmd("host_move.yml", "hm", dict(uris=lab.uris(), host="lab1", copy_storage="all",
                                                                on_failure="continue", max_attempts=1),
                                    "-e", "action=evacuate")
        proc = lab.start_playbook(cmd)
        lab.wait_for_migration_job("lab1", fleet)
        time.sleep(2)
        lab.ctl("fault", "kill-libvirtd", "lab3")
        proc.communicate(timeout=600)
    finally:
        lab.ctl("fault", "heal", "lab1", "lab3")
        lab.ctl("fault", "revive-host", "lab3")
    r = json.loads(out.read_text())
    assert r.get("failed") is True
    failed = [v for v in r["vms"] if v["result"] == "failed"]
    moved = [v for v in r["vms"] if v["result"] == "moved"]
    assert failed and all(v["destination"] == "lab3" for v in failed)
    assert moved and all(v["destination"] == "lab2" for v in moved)
    assert "still on lab1" in r["msg"]
    where = wait_for(lambda: settled(lab, fleet), 60, what="every VM running and defined on one host")
    for v in failed:
        assert where[v["vm"]] == "lab1"
    lab.restore(uris=lab.uris(), host="lab1", copy_storage="all")
    assert set(lab.invariant(fleet).values()) == {"lab1"}


def test_a_hot_vm_is_known_before_it_moves_refused_or_moved_by_the_method_that_converges(lab, fleet):
    """ev-hot dirties 40 MB/s, lab1's link is 16 MiB/s: profiled before anything moves, it is refused with the
    numbers when no allowed method converges, and moved by auto-converge from its first attempt, with the link to
    itself, when allowed."""
    lab.ctl("vm", "create", "ev-hot", "--host", "lab1", "--memory", "160", "--dirty-mb", "80", "--dirty-rate", "40")
    vms = fleet + ["ev-hot"]
    try:
        wait_for(lambda: lab.marker("ev-hot")["intact"], 60, what="ev-hot to boot")
        link = {"link_bandwidth": {"lab1": 16}, "bandwidth": 16}  # the card, and each move capped to it
        r = lab.evacuate(uris=lab.uris(), host="lab1", copy_storage="all", allow_auto_converge=False, **link)
        assert r.get("failed") is True and r["reason"] == "will_not_converge", r.get("msg")
        assert "refusing to evacuate lab1, nothing was moved: ev-hot dirties" in r["msg"]
        # The region it rewrites, measured before anything moved, is in the numbers (80 MB written over and over).
        assert re.search(r"ev-hot dirties \d+ MiB/s over about \d+ MiB, the link gives it 16 MiB/s", r["msg"]), r["msg"]
        assert "the link gives it 16 MiB/s: will not converge within 500 ms; allow auto-converge or post-copy" in r["msg"]
        refused = r["refused"][0]
        assert refused["vm"] == "ev-hot" and refused["profile"]["dirty_mib_s"] > 16, refused
        assert set(lab.invariant(vms).values()) == {"lab1"}, "nothing moved"
        assert not mark(lab, "lab1"), "and the host was not marked"
        # What libvirt on lab1 kept of each VM's last incoming migration (earlier tests moved them home).
        came = {v: lab.virsh("lab1", "domjobinfo", "--completed", "--keep-completed", v).stdout for v in fleet}
        # Auto-converge allowed (the default): chosen up front for ev-hot, the others by plain pre-copy.
        r = lab.evacuate(uris=lab.uris(), host="lab1", copy_storage="all", vm_timeout=120, **link)
        assert not r.get("failed"), r.get("msg")
        res = {v["vm"]: v for v in r["vms"]}
        hot = res["ev-hot"]
        assert hot["result"] == "moved" and hot["method"] == "auto_converge", hot.get("method_why")
        assert [a["ok"] for a in hot["attempts"]] == [True] and hot["attempts"][0]["why"].startswith("auto-converge")
        assert hot["exclusive"] is True and "auto-converge from the start" in hot["method_why"]
        # Its working set, measured before it moved (a second, longer dirty-rate window): it rewrites 80 MB (76 MiB);
        # QEMU samples a few pages of each MiB, so within half of it. The quiet VMs were not kept waiting for one.
        ws = hot["profile"]["working_set"]
        assert ws["measured"] is True and 38 <= hot["profile"]["working_set_mib"] <= 114, ws
        assert 2 <= ws["seconds"] <= 8 and ws["mib_per_s"] < hot["profile"]["dirty_mib_s"], ws
        assert all("working_set" not in res[v]["profile"] for v in fleet)
        assert all(res[v]["method"] == "precopy" and res[v]["result"] == "moved" for v in fleet)
        for v in fleet:  # memory in use: what its last migration sent when it came by one and sent less
            prof, normal = res[v]["profile"], re.search(r"Normal data:\s+([\d.]+) MiB", came[v])
            if prof["in_use_source"] == "its last incoming migration's non-zero memory":
                assert normal and abs(prof["in_use_mib"] - float(normal.group(1))) < 0.2, (v, prof, came[v])
            else:
                assert prof["in_use_source"] == "QEMU resident memory", (v, prof)
                assert not normal or float(normal.group(1)) >= prof["in_use_mib"], (v, prof, came[v])
        assert all(res[v]["measured"]["time_s"] > 0 and res[v]["predicted"]["time_s"] > 0 for v in fleet)
        assert r["plan"]["moves"][0]["vm"] == "ev-hot", "the VM that needs its link alone goes first"
        assert "waiting for link capacity: lab1's link: ev-hot has it to itself" in r["stdout"], r["log"]
        assert lab.invariant(vms)["ev-hot"] != "lab1"
        r = lab.restore(uris=lab.uris(), host="lab1", copy_storage="all", vm_timeout=120)
        assert not r.get("failed"), r.get("msg")
        assert set(lab.invariant(vms).values()) == {"lab1"}
    finally:
        lab.ctl("vm", "delete", "ev-hot", check=False)


def test_xbzrle_when_allowed_moves_a_hot_vm_plain_precopy_cannot_unthrottled(lab, fleet):
    """ev-xb dirties 40 MB/s, rewriting one byte of each page, on lab2 (a host of its own: the fleet is home on
    lab1); each move capped at 16 MiB/s, XBZRLE allowed and auto-converge not. Its re-sent pages go as deltas,
    so plain pre-copy's non-convergence does not stop it and the guest is never throttled. It is the guest's
    first move: on the lab's QEMU 7.2 a guest dirtying this fast can lose pages in any move and go quiet after
    it (docs/lab.md), so a second hot move of one guest would measure luck."""
    lab.ctl("vm", "create", "ev-xb", "--host", "lab2", "--memory", "160", "--dirty-mb", "80", "--dirty-rate", "40")
    vms = fleet + ["ev-xb"]
    try:
        wait_for(lambda: lab.marker("ev-xb")["intact"], 60, what="ev-xb to boot")
        r = lab.evacuate(uris=lab.uris(), host="lab2", copy_storage="all", vm_timeout=120, bandwidth=16,
                         allow_xbzrle=True, allow_auto_converge=False)
        assert not r.get("failed"), r.get("msg")
        (hot,) = r["vms"]
        assert hot["vm"] == "ev-xb" and hot["result"] == "moved" and hot["method"] == "xbzrle", hot.get("method_why")
        assert "plain pre-copy would not converge; pre-copy with XBZRLE (pages written again sent as deltas, " \
               "128 MiB cache)" in hot["method_why"], hot["method_why"]
        assert hot["predicted"]["converges"] is None
        (only,) = hot["attempts"]
        assert only["ok"] and only["mode"] == "xbzrle" and only["xbzrle_cache_mib"] == 128, only
        got = only["metrics"]
        print("ev-xb's XBZRLE move:", json.dumps(got))
        assert got["auto_converge_throttle"] == 0 and got["downtime_ms"] <= 500, got
        # libvirt's own statistics of the move: the XBZRLE cache we sized, and pages really sent as deltas.
        assert got["compression"]["compression_cache"] == 128 * 1048576, got["compression"]
        assert got["compression"]["compression_pages"] > 0, got["compression"]
        assert lab.invariant(vms)["ev-xb"] != "lab2"
        r = lab.restore(uris=lab.uris(), host="lab2", copy_storage="all", vm_timeout=120)
        assert not r.get("failed"), r.get("msg")
        assert lab.invariant(vms)["ev-xb"] == "lab2"
        assert set(lab.invariant(fleet).values()) == {"lab1"}
    finally:
        lab.ctl("vm", "delete", "ev-xb", check=False)


def test_cold_move_fallback_only_when_allowed_and_never_two_definitions(lab, fleet):
    lab.ctl("vm", "create", "ev-cold", "--host", "lab1", "--memory", "160", "--dirty-mb", "80", "--dirty-rate", "40")
    vms = fleet + ["ev-cold"]
    try:
        wait_for(lambda: lab.marker("ev-cold")["intact"], 60, what="ev-cold to boot")
        # No live method allowed but the cold move: not refused (the cold move is the operator's last resort),
        # pre-copy is tried first and ends as soon as it measurably does not converge.
        common = dict(uris=lab.uris(), host="lab1", copy_storage="all", bandwidth=16, vm_timeout=10, max_attempts=1,
                      on_failure="continue", allow_cold_move=True, cold_shutdown_timeout=3,
                      allow_auto_converge=False)
        # The lab guest ignores ACPI shutdown: without force it keeps running where it is.
        r = lab.evacuate(**common)
        res = {v["vm"]: v for v in r["vms"]}
        assert res["ev-cold"]["result"] == "failed" and "did not shut down within 3 s" in res["ev-cold"]["msg"]
        where = lab.invariant(vms)
        assert where["ev-cold"] == "lab1" and lab.where("ev-cold")["states"]["lab1"] == "running"
        # With force it is cold-moved: down for a moment, then running and defined on one other host.
        r = lab.evacuate(**dict(common, cold_move_force=True))
        assert not r.get("failed"), r.get("msg")
        cold = r["vms"][0]
        assert cold["vm"] == "ev-cold" and cold["result"] == "cold_moved"
        assert [a["why"] for a in cold["attempts"]] == ["pre-copy with the downtime ladder", "cold move"]
        where = lab.invariant(vms)
        assert where["ev-cold"] != "lab1"
        assert lab.marker("ev-cold")["intact"]
        r = lab.restore(uris=lab.uris(), host="lab1", copy_storage="all")
        assert not r.get("failed"), r.get("msg")
        assert set(lab.invariant(vms).values()) == {"lab1"}
    finally:
        lab.ctl("vm", "delete", "ev-cold", check=False)


def test_a_vm_that_cannot_move_makes_the_evacuation_fail_loudly(lab, fleet):
    r = lab.evacuate(uris=lab.uris(), host="lab1", copy_storage="all", pinned=["ev-f"])
    assert r.get("failed") is True
    assert "still on lab1: ev-f" in r["msg"], r["msg"]
    assert r["plan"]["unplaceable"][0]["vm"] == "ev-f"
    where = lab.invariant(fleet)
    assert where["ev-f"] == "lab1" and sum(1 for h in where.values() if h == "lab1") == 1

    # An operator re-homes ev-a on purpose (where it runs now): restore leaves it there.
    now = where["ev-a"]
    set_home(lab, "ev-a", now, now)
    r = lab.restore(uris=lab.uris(), host="lab1", copy_storage="all")
    assert not r.get("failed"), r.get("msg")
    assert "ev-a" not in [m["vm"] for m in r["moves"]]
    where = lab.invariant(fleet)
    assert where["ev-a"] == now and all(where[v] == "lab1" for v in fleet if v != "ev-a")
    set_home(lab, "ev-a", now, "lab1")
    r = lab.restore(uris=lab.uris(), host="lab1", copy_storage="all")
    assert not r.get("failed"), r.get("msg")
    assert set(lab.invariant(fleet).values()) == {"lab1"}


def set_home(lab, vm, on, home):
    lab.virsh(on, "metadata", vm, "https://github.com/fleetmaint/libvirt/xmlns/1", "--key", "fleetmaint",
              "--set", f"<instance><home>{home}</home></instance>", "--live", "--config")
