"""host_restore on the lab when the home host has room for two of its three VMs: what fits comes home, the
third stays where it is (reason no_capacity, its home unchanged), the mark is kept; once there is room, a
re-run brings it home and clears the mark."""

from __future__ import annotations

import pytest

from conftest import wait_for

HOME = "lab1"
# Two of the small ones fit in the room left below (128 + 128 <= 300); the 192 MiB one fits with neither.
TRIO = {"rc-a": 128, "rc-b": 128, "rc-c": 192}
ROOM_MIB = 300
HEADROOM_MIB = 1024
HOG = "rc-hog"


def mark(lab, host):
    return "fleetmaint-maintenance" in lab.virsh(host, "secret-list", check=False).stdout


@pytest.fixture
def trio_away(lab):
    """The three VMs created on lab1, evacuated (their home is lab1), and lab1 filled meanwhile by a VM of its own
    whose memory leaves ROOM_MIB for VMs (memory less headroom less the VMs running there, the planner's rule)."""
    names = list(TRIO) + [HOG]
    strays = [d["name"] for h, f in lab.facts().items() if h != HOME for d in f["domains"] if d.get("home_host") == HOME]
    assert not strays, f"VMs homed on {HOME} but left elsewhere by an earlier test would come home too: {strays}"
    try:
        for name, mem in TRIO.items():
            lab.ctl("vm", "create", name, "--host", HOME, "--memory", str(mem), "--no-wait")
        wait_for(lambda: all(m["intact"] for m in lab.markers(TRIO).values()), 90, what="guests to write markers")
        r = lab.evacuate(uris=lab.uris(), host=HOME)
        assert not r.get("failed"), r.get("msg")
        assert HOME not in lab.invariant(list(TRIO)).values()
        total = lab.facts()[HOME]["host"]["memory_total_mib"]
        # A real running VM, not a setting: lab hosts share this machine's memory, so the hog is big on paper
        # (what libvirt allocates to it) while its guest touches little of it.
        lab.ctl("vm", "create", HOG, "--host", HOME, "--memory", str(total - HEADROOM_MIB - ROOM_MIB),
                "--disk", "none", "--no-home", timeout=600)
        assert lab.invariant([HOG]) == {HOG: HOME}
        yield total
    finally:
        for name in names:
            lab.ctl("vm", "delete", name, check=False)


def test_restore_brings_home_what_fits_and_leaves_the_rest_no_capacity(lab, trio_away):
    away = lab.invariant(list(TRIO))
    common = dict(uris=lab.uris(), host=HOME, memory_headroom=HEADROOM_MIB)

    # Check mode says what would come home and what would not, and moves nothing.
    r = lab.restore("--check", **common)
    assert r.get("failed") is True and r["reason"] == "no_capacity", r.get("msg")
    assert sorted(m["vm"] for m in r["moves"]) == ["rc-a", "rc-b"]
    assert [s["vm"] for s in r["staying"]] == ["rc-c"]
    assert lab.invariant(list(TRIO)) == away and mark(lab, HOME)

    r = lab.restore(**common)
    assert r.get("failed") is True and r["reason"] == "no_capacity", r.get("msg")
    assert r["changed"] is True and r["totals"]["moved"] == 2
    (left,) = r["staying"]
    assert left["vm"] == "rc-c" and left["reason"] == "no_capacity" and left["host"] == away["rc-c"]
    assert left["memory_mib"] == 192 and left["free_memory_mib"] == ROOM_MIB - 256
    assert f"needs 192 MiB, {HOME} has {ROOM_MIB - 256} MiB free" in left["msg"]
    assert r["capacity"]["memory_mib"] == ROOM_MIB
    where = lab.invariant(list(TRIO) + [HOG])
    assert where["rc-a"] == where["rc-b"] == HOME and where["rc-c"] == away["rc-c"]
    assert lab.home_host("rc-c", away["rc-c"]) == HOME  # its home unchanged: a later restore brings it
    assert mark(lab, HOME)  # not every VM is home: the host stays in maintenance
    assert all(m["intact"] for m in lab.markers(TRIO).values())

    # Room again (the hog is gone): the re-run brings the rest home and clears the mark.
    lab.ctl("vm", "delete", HOG)
    r = lab.restore(**common)
    assert not r.get("failed"), r.get("msg")
    assert r["totals"]["moved"] == 1 and r["staying"] == [] and r.get("maintenance_cleared") is True
    assert set(lab.invariant(list(TRIO)).values()) == {HOME} and not mark(lab, HOME)
    again = lab.restore(**common)
    assert not again.get("failed") and again["changed"] is False
