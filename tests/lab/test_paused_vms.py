"""Paused, shut-off and transient VMs on the lab (QEMU 7.2): what each move does with them.

A VM that arrived paused by migration keeps its disks inactive until it first runs, and QEMU 7.2 aborts
when it migrates such a guest again (the guest is lost). The move rules refuse that second move up front;
everything QEMU can move (a VM paused on its own host, a guest without disks, a paused VM resumed since)
still moves and arrives paused.
"""

from __future__ import annotations

import pytest

CODE = "vm_paused_disks_inactive"


def state(lab, vm, host):
    return lab.virsh(host, "domstate", vm).stdout.strip()


def alive_once_on(lab, vm, host, expect_state="paused"):
    """The VM runs (paused or running) on host only, defined there only, its QEMU alive, its guest intact."""
    assert lab.placement(vm) == ([host], [host]), f"{vm}: {lab.where(vm)}"
    assert state(lab, vm, host) == expect_state
    if vm != "pz-nodisk":  # a guest without a disk has no marker
        m = lab.marker(vm)
        assert m["intact"] and not m["guest"]["crashed"], m


@pytest.fixture
def paused(lab):
    """pz (a disk on the shared pool) and pz-nodisk, both booted on lab1, then paused by their user there."""
    lab.ctl("vm", "create", "pz", "--host", "lab1", "--disk", "shared")
    lab.ctl("vm", "create", "pz-nodisk", "--host", "lab1", "--disk", "none")
    for vm in ("pz", "pz-nodisk"):
        lab.virsh("lab1", "suspend", vm)
    yield ["pz", "pz-nodisk"]
    for vm in ("pz", "pz-nodisk"):
        lab.ctl("vm", "delete", vm, check=False)


def test_second_move_of_a_paused_vm_is_refused_untouched_and_possible_once_resumed(lab, paused):
    """Before the rule, the second move crashed pz (QEMU: bdrv_inactivate_recurse assertion)."""
    first = lab.migrate(name="pz", uri=lab.uri("lab1"), dest_uri=lab.uri("lab2"))
    assert not first.get("failed"), first.get("msg")
    alive_once_on(lab, "pz", "lab2")
    assert any(e["event"] == "arrived_paused" for e in first["events"])

    back = lab.migrate(name="pz", uri=lab.uri("lab2"), dest_uri=lab.uri("lab1"))
    assert back.get("failed") is True and back.get("changed") is not True
    assert back["codes"] == [CODE], back
    assert "pz is paused on lab2 and it arrived by migration" in back["msg"] and "virsh resume pz" in back["msg"]
    alive_once_on(lab, "pz", "lab2")

    # migration_check says the same, from the same rule.
    chk = lab.check(uri=lab.uri("lab2"), dest_uris=[lab.uri("lab1")], name="pz")
    verdict = next(r for r in chk["results"] if r["vm"] == "pz")
    assert CODE in [f["code"] for f in verdict["findings"]] and verdict["ok"] is False, verdict

    # Once it has run (its user resumed and paused it again), its disks are active: it moves, and arrives paused.
    lab.virsh("lab2", "resume", "pz")
    lab.virsh("lab2", "suspend", "pz")
    again = lab.migrate(name="pz", uri=lab.uri("lab2"), dest_uri=lab.uri("lab1"))
    assert not again.get("failed"), again.get("msg")
    alive_once_on(lab, "pz", "lab1")


def test_a_paused_guest_without_disks_moves_twice(lab, paused):
    for src, dst in (("lab1", "lab2"), ("lab2", "lab1")):
        r = lab.migrate(name="pz-nodisk", uri=lab.uri(src), dest_uri=lab.uri(dst))
        assert not r.get("failed"), r.get("msg")
        alive_once_on(lab, "pz-nodisk", dst)


def test_evacuate_moves_a_paused_vm_and_restore_leaves_it_away_with_its_home(lab, paused):
    """Evacuation moves pz (paused on its own host: safe) with the others; restore cannot bring it back
    without crashing it, so it stays where it is, home unchanged, named in the result; the rest comes home."""
    lab.ctl("vm", "create", "pz-run", "--host", "lab1", "--disk", "shared")
    try:
        ev = lab.evacuate(uris=lab.uris(), host="lab1")
        assert not ev.get("failed"), ev.get("msg")
        where = lab.invariant(["pz", "pz-nodisk", "pz-run"])
        assert "lab1" not in where.values()
        alive_once_on(lab, "pz", where["pz"])

        rs = lab.restore(uris=lab.uris(), host="lab1")
        assert not rs.get("failed"), rs.get("msg")
        assert [(s["vm"], s["host"], s["reason"]) for s in rs["staying"]] == [("pz", where["pz"], CODE)]
        assert "left away from home, home unchanged: pz" in rs["msg"]
        after = lab.invariant(["pz", "pz-nodisk", "pz-run"])
        assert after == {"pz": where["pz"], "pz-nodisk": "lab1", "pz-run": "lab1"}
        alive_once_on(lab, "pz", where["pz"])
        assert state(lab, "pz-nodisk", "lab1") == "paused", "a paused VM arrives paused"
        assert lab.home_host("pz", where["pz"]) == "lab1"

        # Evacuating the host pz now sits on: pz stays, the host is not empty, and the failure says why.
        ev2 = lab.evacuate(uris=lab.uris(), host=where["pz"])
        assert ev2.get("failed") is True and [s["vm"] for s in ev2["staying"]] == ["pz"]
        assert f"still on {where['pz']}: pz" in ev2["msg"] and CODE in ev2["msg"]
        alive_once_on(lab, "pz", where["pz"])
        lab.restore(uris=lab.uris(), host=where["pz"])  # clears its mark; nothing of its own was away
    finally:
        lab.ctl("vm", "delete", "pz-run", check=False)


def test_shut_off_and_transient_vms_stay_where_they_are(lab):
    """A shut-off VM is not moved (evacuation empties a host of running VMs; its definition stays, the
    host's own); a transient running VM moves and is defined on its destination only."""
    lab.create_at_once({"so-off": "lab3", "so-tr": "lab3"}, "--disk", "shared")
    try:
        lab.virsh("lab3", "destroy", "so-off")
        lab.virsh("lab3", "undefine", "so-tr")  # still running: now transient
        ev = lab.evacuate(uris=lab.uris(), host="lab3")
        assert not ev.get("failed"), ev.get("msg")
        assert lab.placement("so-off") == ([], ["lab3"]), "a shut-off VM stays defined on its host"
        (dest,) = lab.where("so-tr")["running_on"]
        assert dest != "lab3" and lab.placement("so-tr") == ([dest], [dest]), "a transient VM moves, persistently"
        rs = lab.restore(uris=lab.uris(), host="lab3")
        assert not rs.get("failed"), rs.get("msg")
        assert lab.placement("so-tr") == (["lab3"], ["lab3"])
    finally:
        for vm in ("so-off", "so-tr"):
            lab.ctl("vm", "delete", vm, check=False)
