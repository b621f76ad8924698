"""Move slots: the moves in and out of each host counted on the host itself, so that limits hold across jobs.
Secrets are kept by a fake with libvirtd's rule (one secret per usage), the same one the lease tests use."""

import threading
import time

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import maintenance as m
from ansible_collections.fleetmaint.libvirt.plugins.module_utils import host_jobs as hj
from ansible_collections.fleetmaint.libvirt.plugins.module_utils import move_scheduler as ev
from ansible_collections.fleetmaint.libvirt.tests.unit.fakes import SecretConn

libvirt = pytest.importorskip("libvirt")
URIS = {"hv1": "u1", "hv2": "u2", "hv3": "u3"}
ONE = {"per_source": 1, "per_destination": 1, "fleet": 4}


@pytest.fixture
def hosts(monkeypatch):
    monkeypatch.setattr(m, "SLOT_RETRY_S", 0.0)
    return {uri: SecretConn() for uri in URIS.values()}


def _slots(hosts, job, limits=None):
    return m.MoveSlots(URIS, job, limits or ONE, opener=lambda uri: hosts[uri])


def test_two_jobs_share_a_destination_s_limit_and_the_second_says_who_holds_it(hosts):
    a, b = _slots(hosts, "evacuate hv1"), _slots(hosts, "evacuate hv2")
    assert a.take({"vm": "v1", "source": "hv1", "destination": "hv3"}) is None
    why = b.take({"vm": "v2", "source": "hv2", "destination": "hv3"})
    assert why.startswith("hv3's move slots: 1 move(s) into it already, its limit is 1: v1 from hv1 ('evacuate hv1'")
    assert hosts["u2"].usages() == [], "a move that waits holds no slot on its source either"
    assert hosts["u3"].usages() == ["fleetmaint-move-in-0"] and hosts["u1"].usages() == ["fleetmaint-move-out-0"]
    a.release("v1")
    assert hosts["u1"].usages() == [] and hosts["u3"].usages() == []
    assert b.take({"vm": "v2", "source": "hv2", "destination": "hv3"}) is None
    assert hosts["u3"].usages() == ["fleetmaint-move-in-0"]
    b.release("v2")


def test_a_limit_of_two_is_two_slots_and_a_third_move_waits(hosts):
    limits = dict(ONE, per_destination=2)
    a, b, c = (_slots(hosts, f"job {n}", limits) for n in "abc")
    assert a.take({"vm": "v1", "source": "hv1", "destination": "hv3"}) is None
    assert b.take({"vm": "v2", "source": "hv2", "destination": "hv3"}) is None
    assert hosts["u3"].usages() == ["fleetmaint-move-in-0", "fleetmaint-move-in-1"]
    why = c.take({"vm": "v3", "source": "hv2", "destination": "hv3"})
    assert why and "hv2's move slots" in why, "hv2 already sends one move: its out slot stops v3 first"


def test_a_waiting_move_asks_again_only_after_the_backoff(hosts, monkeypatch):
    monkeypatch.setattr(m, "SLOT_RETRY_S", 30.0)
    a, b = _slots(hosts, "a"), _slots(hosts, "b")
    a.take({"vm": "v1", "source": "hv1", "destination": "hv3"})
    assert b.take({"vm": "v2", "source": "hv2", "destination": "hv3"})
    a.release("v1")
    assert b.take({"vm": "v2", "source": "hv2", "destination": "hv3"}) == "", "within the backoff: not asked"


def test_a_stale_slot_is_taken_over(hosts):
    old = {"job": "evacuate hv9", "vm": "gone", "direction": "in", "peer": "hv9", "controller": "elsewhere",
           "pid": 1, "started": 0, "renewed": time.time() - 600}
    hosts["u3"].secretDefineXML(m._note_xml("fleetmaint-move-in-0", old), 0)  # pylint: disable=protected-access
    s = _slots(hosts, "evacuate hv1")
    assert s.take({"vm": "v1", "source": "hv1", "destination": "hv3"}) is None
    assert m.get_mark(hosts["u3"], "fleetmaint-move-in-0")["vm"] == "v1"


def test_slots_are_renewed_while_held_and_never_defined_again_once_released(hosts, monkeypatch):
    monkeypatch.setattr(m, "LEASE_RENEW_S", 0.05)
    with _slots(hosts, "a") as s:
        s.take({"vm": "v1", "source": "hv1", "destination": "hv3"})
        first = m.get_mark(hosts["u3"], "fleetmaint-move-in-0")["renewed"]
        time.sleep(0.3)
        assert m.get_mark(hosts["u3"], "fleetmaint-move-in-0")["renewed"] > first
        s.release("v1")
        time.sleep(0.3)
        assert hosts["u3"].usages() == [] and hosts["u1"].usages() == []
        s.take({"vm": "v2", "source": "hv1", "destination": "hv3"})
    assert all(c.usages() == [] for c in hosts.values()), "the end of the job frees what it still held"


def test_a_host_that_cannot_be_reached_or_keep_notes_is_not_counted(hosts):
    class NoSecrets(SecretConn):
        def secretDefineXML(self, xml, _flags):  # noqa: N802
            err = libvirt.libvirtError("this driver does not support secrets")
            err.get_error_code = lambda: libvirt.VIR_ERR_NO_SUPPORT
            raise err

    def opener(uri):
        if uri == "u1":
            raise libvirt.libvirtError("unreachable")
        return NoSecrets() if uri == "u3" else hosts[uri]

    s = m.MoveSlots(URIS, "a", ONE, opener=opener)
    assert s.take({"vm": "v1", "source": "hv1", "destination": "hv3"}) is None
    assert set(s.uncounted) == {"hv1", "hv3"} and s.uncounted["hv3"] == "it cannot keep notes"


def test_a_host_whose_libvirtd_dies_during_the_job_is_no_longer_counted_and_nothing_raises(hosts):
    """A destination killed mid-evacuation: the moves to it fail on their own; taking or freeing its slots must
    not end the job (the scheduler would stop dispatching every other move)."""
    other = _slots(hosts, "evacuate hv2")
    assert other.take({"vm": "o1", "source": "hv2", "destination": "hv3"}) is None  # hv3's in slot is taken
    s = _slots(hosts, "evacuate hv1", dict(ONE, per_source=2))
    assert s.take({"vm": "v1", "source": "hv1", "destination": "hv2"}) is None

    def gone(*_a):
        raise libvirt.libvirtError("End of file while reading data: Input/output error")
    hosts["u3"].secretDefineXML = gone
    hosts["u3"].secretLookupByUsage = gone
    hosts["u2"].secretLookupByUsage = gone
    assert s.take({"vm": "v2", "source": "hv1", "destination": "hv3"}) is None
    assert s.uncounted["hv3"].startswith("cannot reach it: End of file")
    s.release("v1")  # hv2's libvirtd went away too: freeing its slot does not raise
    assert "<secret ephemeral='yes'" in next(iter(hosts["u1"].secrets.values())).xml, "slots go with their libvirtd"


def test_the_scheduler_waits_for_another_job_s_slot_says_so_and_then_moves(hosts, monkeypatch):
    """Another job holds hv3's only in slot: the move waits (once said), then runs when that job frees it."""
    other = _slots(hosts, "evacuate hv2")
    other.take({"vm": "x", "source": "hv2", "destination": "hv3"})
    started = []

    def fake_migrate(args, progress=None, cancel=None):
        started.append((args["name"], hosts["u3"].usages()))
        return {"changed": True, "msg": "migrated", "metrics": {"total_time_ms": 10, "downtime_ms": 1}}

    monkeypatch.setattr(ev, "migrate", fake_migrate)
    threading.Timer(0.6, other.release, args=("x",)).start()
    events = []
    p = {k: v.get("default") for k, v in hj.EVACUATE_SPEC.items()}
    p.update(uris=list(URIS.values()), host="hv1", limits=ONE, max_attempts=1)
    with _slots(hosts, "evacuate hv1") as mine:
        out = ev.run_moves([{"vm": "v1", "source": "hv1", "destination": "hv3"}], URIS, p,
                           progress=events.append, slots=mine)
    assert out["totals"]["moved"] == 1
    waits = [e for e in events if e.get("kind") == "waiting"]
    assert len(waits) == 1 and waits[0]["why"].startswith("waiting for a move slot: hv3's move slots")
    assert "x from hv2 ('evacuate hv2'" in waits[0]["why"]
    assert started == [("v1", ["fleetmaint-move-in-0"])], "it moved holding hv3's slot, the other job's gone"
    assert all(c.usages() == [] for c in hosts.values()), "its slots are freed as it ends"
