import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import move_methods as mm
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import MIB

NONE = {"auto_converge": False, "postcopy": False, "suspend": False}
ASSUMED = 128 * MIB


def prof(vm="web1", mem=160, in_use=100, dirty=0.5, disk=0):
    return {"vm": vm, "memory_bytes": mem * MIB, "in_use_bytes": in_use * MIB,
            "dirty_bps": None if dirty is None else dirty * MIB, "disk_bytes": disk * MIB}


def test_a_quiet_vm_moves_by_precopy_with_a_prediction_from_its_memory_in_use():
    m = mm.choose_method(prof(), 24 * MIB, 1, NONE, 500, ASSUMED)
    assert m["method"] == "precopy" and not m["exclusive"] and not m["refused"]
    # 100 MiB in use at 24 MiB/s, then what 0.5 MiB/s dirtied meanwhile: about 4.2 s.
    assert m["predicted"]["time_s"] == pytest.approx(100 / 24, rel=0.05)
    assert m["predicted"]["converges"] is True and m["predicted"]["bandwidth_mib_s"] == 24


def test_the_link_shared_by_two_moves_halves_what_each_gets():
    one = mm.choose_method(prof(), 24 * MIB, 1, NONE, 500, ASSUMED)["predicted"]["time_s"]
    two = mm.choose_method(prof(), 24 * MIB, 2, NONE, 500, ASSUMED)["predicted"]
    assert two["bandwidth_mib_s"] == 12 and two["time_s"] == pytest.approx(2 * one, rel=0.05)


def test_a_vm_that_converges_only_alone_gets_the_link_to_itself():
    m = mm.choose_method(prof(dirty=16), 24 * MIB, 2, NONE, 500, ASSUMED)  # 16 of 12 MiB/s: no; of 24: yes
    assert m["method"] == "precopy" and m["exclusive"] is True and "link to itself" in m["why"]


def test_a_hot_vm_is_refused_with_the_numbers_when_nothing_else_is_allowed():
    m = mm.choose_method(prof("hot1", 256, 256, dirty=60), 24 * MIB, 1, NONE, 500, ASSUMED)
    assert m["refused"] is True and m["method"] is None
    assert m["msg"] == ("hot1 dirties 60 MiB/s, the link gives it 24 MiB/s: will not converge within 500 ms; "
                        "allow auto-converge or post-copy (or XBZRLE, if its writes change little of each page)")


def test_xbzrle_allowed_comes_before_auto_converge_predicted_by_its_first_pass_only():
    allowed = dict(NONE, xbzrle=True, auto_converge=True)
    m = mm.choose_method(prof("hot1", 256, 200, dirty=60), 24 * MIB, 2, allowed, 500, ASSUMED)
    assert m["method"] == "xbzrle" and m["exclusive"] is True and not m["refused"]
    assert m["xbzrle_cache_bytes"] == 256 * MIB and "256 MiB cache" in m["why"]
    # What its writes do to each page is not known before it moves: the first pass, and no claim beyond it.
    assert m["predicted"]["converges"] is None and m["predicted"]["downtime_ms"] is None
    assert m["predicted"]["time_s"] == pytest.approx(200 / 24, rel=0.01)
    # A VM plain pre-copy moves never gets it up front, but knows its cache should its move escalate to it.
    quiet = mm.choose_method(prof(), 24 * MIB, 1, allowed, 500, ASSUMED)
    assert quiet["method"] == "precopy" and quiet["xbzrle_cache_bytes"] == 128 * MIB
    assert "xbzrle_cache_bytes" not in mm.choose_method(prof(), 24 * MIB, 1, NONE, 500, ASSUMED)


@pytest.mark.parametrize("mem,in_use,cache", [
    (256, 200, 256),   # the smallest power of two that holds what is in use
    (160, 100, 128),   # ... and never more than the largest within the VM's memory
    (160, 150, 128),
    (4096, 10, 64),    # at least QEMU's own 64 MiB
    (48, 40, 32),      # unless the VM is smaller
    (1024, 512, 512),  # a power of two that fits exactly
])
def test_the_xbzrle_cache_holds_the_memory_in_use_as_a_power_of_two(mem, in_use, cache):
    got = mm.xbzrle_cache_bytes({"memory_bytes": mem * MIB, "in_use_bytes": in_use * MIB})
    assert got == cache * MIB and got & (got - 1) == 0


@pytest.mark.parametrize("allowed,method", [
    ({"auto_converge": True}, "auto_converge"),
    ({"postcopy": True}, "postcopy"),
    ({"suspend": True}, "suspend"),
    ({"auto_converge": True, "postcopy": True}, "auto_converge"),  # mildest first
])
def test_a_hot_vm_gets_the_mildest_allowed_method_from_the_start(allowed, method):
    m = mm.choose_method(prof("hot1", 256, 256, dirty=60), 24 * MIB, 1, dict(NONE, **allowed), 500, ASSUMED)
    assert m["method"] == method and not m["refused"] and m["predicted"]["converges"] is True
    assert "pre-copy would not converge" in m["why"]


def test_a_cold_move_allowed_is_the_last_resort_not_a_refusal():
    m = mm.choose_method(prof("hot1", 256, 256, dirty=60), 24 * MIB, 1, dict(NONE, cold=True), 500, ASSUMED)
    assert m["refused"] is False and m["method"] == "precopy" and "then the cold move" in m["why"]


def test_nothing_is_refused_on_an_assumed_link():
    m = mm.choose_method(prof("hot1", 256, 256, dirty=200), None, 1, NONE, 500, ASSUMED)
    assert m["refused"] is False and m["method"] == "precopy" and m["link_known"] is False
    assert "escalating on measured progress" in m["why"]


def test_a_per_move_cap_is_a_known_link_that_sharing_does_not_split():
    m = mm.choose_method(prof("hot1", 256, 256, dirty=40), None, 2, NONE, 500, ASSUMED, cap_bps=16 * MIB)
    assert m["refused"] is True and "gives it 16 MiB/s" in m["msg"]
    quiet = mm.choose_method(prof(), None, 2, NONE, 500, ASSUMED, cap_bps=16 * MIB)
    assert quiet["predicted"]["bandwidth_mib_s"] == 16


def test_an_unmeasured_vm_is_moved_by_precopy_and_watched():
    m = mm.choose_method(prof(dirty=None), 24 * MIB, 1, NONE, 500, ASSUMED)
    assert m["method"] == "precopy" and m["predicted"]["converges"] is None and "not measured" in m["why"]


def test_disks_to_copy_add_to_the_prediction():
    base = mm.choose_method(prof(), 24 * MIB, 1, NONE, 500, ASSUMED)["predicted"]["time_s"]
    disk = mm.choose_method(prof(disk=240), 24 * MIB, 1, NONE, 500, ASSUMED)["predicted"]["time_s"]
    assert disk == pytest.approx(base + 10, rel=0.02)


def test_link_share_is_the_most_moves_at_which_every_vm_still_converges():
    quiet = [prof(f"q{i}") for i in range(4)]
    assert mm.LINK_SHARE == 2
    assert mm.link_share(quiet, 24 * MIB, 4, 500) == 2, "quiet VMs: LINK_SHARE, the limit allowing"
    assert mm.link_share(quiet, 24 * MIB, 1, 500) == 1, "the limit says fewer"
    # 14 MiB/s dirtied: converges at 24 MiB/s, not at 12 (two sharing) - one at a time.
    assert mm.link_share(quiet[:2] + [prof("w", dirty=14)], 24 * MIB, 4, 500) == 1
    # A VM that does not converge even alone does not hold the others back (it gets the link to itself).
    assert mm.link_share(quiet + [prof("hot", dirty=60)], 24 * MIB, 4, 500) == 2
    assert mm.link_share(quiet, None, 3, 500) == 2, "an unknown link: LINK_SHARE within the limit"
    assert mm.link_share(quiet, None, 1, 500) == 1


def test_dispatch_order_puts_the_link_hungry_first_then_the_longest():
    moves = [{"vm": "a", "method": {"exclusive": False, "predicted": {"time_s": 3}}},
             {"vm": "b", "method": {"exclusive": False, "predicted": {"time_s": 9}}},
             {"vm": "c", "method": {"exclusive": True, "predicted": {"time_s": 1}}},
             {"vm": "d", "priority": 5, "method": {"exclusive": False, "predicted": {"time_s": 1}}}]
    assert [m["vm"] for m in mm.order_moves(moves)] == ["d", "c", "b", "a"]


def test_a_measured_working_set_shortens_the_auto_converge_prediction_and_the_xbzrle_cache():
    """The benchmark's hot guest as profiled (256 MiB in use, 52 MiB/s, a 152 MiB working set, 22.9 MiB/s link):
    auto-converge predicted pass by pass with every pass after the first at most the working set, its throttle
    reaching 90 %; the XBZRLE cache holds the working set, not the memory in use."""
    hot = dict(prof("hot1", 1024, 256, dirty=52), working_set_bytes=152 * MIB)
    allowed = dict(NONE, auto_converge=True)
    m = mm.choose_method(hot, 22.9 * MIB, 1, allowed, 500, ASSUMED)
    assert m["method"] == "auto_converge" and m["throttle"] == 0.9
    assert "its throttle predicted to reach 90%" in m["why"]
    unknown = mm.choose_method(dict(hot, working_set_bytes=None), 22.9 * MIB, 1, allowed, 500, ASSUMED)
    assert m["predicted"]["time_s"] < unknown["predicted"]["time_s"] - 10
    assert mm.xbzrle_cache_bytes(hot) == 256 * MIB and mm.xbzrle_cache_bytes(dict(hot, working_set_bytes=50 * MIB)) == 128 * MIB
    assert mm.xbzrle_cache_bytes(dict(hot, working_set_bytes=None)) == 256 * MIB
    # Twice the working set found, for the sampling's error: the lab's guest rewriting 76 MiB, found at 60 MiB, gets
    # 128 MiB (a 64 MiB cache missed more of its pages than it found), never more than its memory in use.
    xb = dict(prof("ev-xb", 160, 160, dirty=32), working_set_bytes=60 * MIB)
    assert mm.xbzrle_cache_bytes(xb) == 128 * MIB
    assert mm.xbzrle_cache_bytes(dict(hot, working_set_bytes=100 * MIB)) == 256 * MIB


def test_a_small_working_set_converges_where_its_rate_alone_says_it_would_not():
    """60 MiB/s over a 24 MiB/s link, but rewriting only 10 MiB: every pass after the first re-sends at most
    10 MiB (0.42 s), so plain pre-copy converges within 500 ms."""
    small = dict(prof("cache1", 256, 200, dirty=60), working_set_bytes=10 * MIB)
    m = mm.choose_method(small, 24 * MIB, 1, NONE, 500, ASSUMED)
    assert m["method"] == "precopy" and not m["refused"] and m["predicted"]["converges"] is True
    assert m["predicted"]["downtime_ms"] <= 500
    assert mm.choose_method(dict(small, working_set_bytes=None), 24 * MIB, 1, NONE, 500, ASSUMED)["refused"] is True


def test_the_refusal_names_the_region_a_hot_vm_rewrites_when_it_was_measured():
    hot = dict(prof("hot1", 256, 256, dirty=57), working_set_bytes=150 * MIB)
    m = mm.choose_method(hot, 23 * MIB, 1, NONE, 500, ASSUMED)
    assert m["refused"] is True
    assert m["msg"].startswith("hot1 dirties 57 MiB/s over about 150 MiB, the link gives it 23 MiB/s: will not converge")
    ac = mm.choose_method(hot, 23 * MIB, 1, dict(NONE, auto_converge=True), 500, ASSUMED)
    assert ac["why"].startswith("dirties 57 MiB/s over about 150 MiB, the link gives it 23 MiB/s: pre-copy would not")
