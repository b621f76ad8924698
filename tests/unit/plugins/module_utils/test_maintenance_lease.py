"""The job lease on libvirt's test:///default driver: one job per host at a time; stale leases are taken over."""

import json
import time

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import maintenance as m
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError

from ansible_collections.fleetmaint.libvirt.tests.unit.fakes import SecretConn

libvirt = pytest.importorskip("libvirt")
URI = "qemu+tcp://hv1/system"


@pytest.fixture
def conn(monkeypatch):
    c = SecretConn()
    monkeypatch.setattr(m, "open_uri", lambda uri: c)
    return c


def test_a_second_job_on_the_same_host_is_refused_and_the_lease_goes_at_the_end(conn):
    with m.HostLease(URI, "hv1", "evacuate"):
        held = m.get_mark(conn, m.LEASE_USAGE)
        assert held["job"] == "evacuate" and held["pid"] > 0
        with pytest.raises(FleetmaintError, match=r"hv1 is busy: 'evacuate' runs on it .* refusing to start 'restore'"):
            m.HostLease(URI, "hv1", "restore").acquire()
    assert m.get_mark(conn, m.LEASE_USAGE) is None


def test_a_stale_lease_is_taken_over(conn):
    old = {"job": "evacuate", "controller": "elsewhere", "pid": 1, "started": 0, "renewed": time.time() - 600}
    conn.secretDefineXML(m._note_xml(m.LEASE_USAGE, old), 0)  # pylint: disable=protected-access
    with m.HostLease(URI, "hv1", "restore") as lease:
        assert m.get_mark(conn, m.LEASE_USAGE)["job"] == "restore" and lease.uuid


def test_staleness_rules():
    now = time.time()
    assert m.lease_is_stale({"renewed": now - 61, "controller": "x", "pid": 1}, now)
    assert not m.lease_is_stale({"renewed": now - 5, "controller": "other-controller", "pid": 1}, now)
    gone = {"renewed": now, "controller": __import__("socket").gethostname(), "pid": 2 ** 22 + 7}
    assert m.lease_is_stale(gone, now), "a dead process of this controller holds nothing"
    assert json.dumps(gone)


def _ask(state="cancelled", **kw):
    return dict({"uri": URI, "state": state, "by": "test", "wait": False, "wait_timeout": 5}, **kw)


@pytest.fixture
def connection(monkeypatch, conn):
    import contextlib
    monkeypatch.setattr(m, "connection", lambda uri: contextlib.nullcontext(conn))
    monkeypatch.setattr(m, "CANCEL_POLL_S", 0.05)
    return conn


def test_a_cancel_request_reaches_the_job_it_names_and_goes_with_it(connection):
    with m.HostLease(URI, "hv1", "evacuate") as lease:
        lease.counts({"moved": 1, "failed": 0, "running": 2, "waiting": 1})
        st = m.request_cancel(_ask(state="present"))
        assert st["running"] and st["job"]["job"] == "evacuate" and not st["changed"] and st["cancel_requested"] is None
        assert m.request_cancel(_ask(), check_mode=True)["changed"] and m.get_mark(connection, m.CANCEL_USAGE) is None
        asked = m.request_cancel(_ask())
        assert asked["changed"] and "asked 'evacuate' from" in asked["msg"]
        assert not m.request_cancel(_ask())["changed"], "asked once: idempotent"
        for _i in range(100):
            if lease.cancel.is_set():
                break
            time.sleep(0.02)
        assert lease.cancel.is_set() and lease.cancel.why.startswith("requested by test from ")
    # The job ended: its lease and the request that named it are gone; the next job is not cancelled.
    assert m.get_mark(connection, m.LEASE_USAGE) is None and m.get_mark(connection, m.CANCEL_USAGE) is None
    gone = m.request_cancel(_ask())
    assert not gone["changed"] and gone["msg"] == "no job runs on the host: nothing to cancel"


def test_a_request_for_an_earlier_job_does_not_stop_the_next(connection):
    old = {"controller": "elsewhere", "pid": 1, "started": 0, "job": "evacuate", "requested": 1, "by": "x"}
    connection.secretDefineXML(m._note_xml(m.CANCEL_USAGE, old), 0)  # pylint: disable=protected-access
    with m.HostLease(URI, "hv1", "restore") as lease:
        time.sleep(0.2)
        assert not lease.cancel.is_set()
        assert m.request_cancel(_ask(state="present"))["cancel_requested"] is None


# --- the link a job measured, kept on the host for the jobs after it

def test_a_measured_link_is_kept_replaced_in_place_and_forgotten_when_old(conn):
    assert m.remembered_link(conn) is None
    note = m.remember_link(URI, 412.34, 3, "evacuate hv1")
    assert note["mib_s"] == 412.3 and note["moves"] == 3 and note["by"] == "evacuate hv1"
    got = m.remembered_link(conn)
    assert got["mib_s"] == 412.3 and 0 <= got["age_s"] <= 2
    m.remember_link(URI, 90, 1, "restore hv1")
    assert conn.usages() == [m.LINK_USAGE], "one note, replaced in place"
    assert m.remembered_link(conn)["mib_s"] == 90
    assert m.remembered_link(conn, now=time.time() + m.LINK_MEMORY_S + 60) is None, "older than a week: not used"
    assert m.remembered_link(conn, now=time.time() - 3600) is None, "from the future (a clock gone wrong): not used"


def test_what_a_jobs_first_moves_measured_is_kept_beside_its_link_when_a_number(conn):
    m.remember_link(URI, 250, 6, "evacuate hv1", first_mib_s=180.04)
    assert m.remembered_link(conn)["first_mib_s"] == 180.0
    uuid = m._lookup(conn, m.LINK_USAGE).UUIDString()  # pylint: disable=protected-access
    for bad in (0, "slow", True):
        note = {"mib_s": 90, "at": time.time(), "first_mib_s": bad}
        conn.secretDefineXML(m._note_xml(m.LINK_USAGE, note, uuid), 0)  # pylint: disable=protected-access
        got = m.remembered_link(conn)
        assert got["mib_s"] == 90 and "first_mib_s" not in got, bad


@pytest.mark.parametrize("note", [{"mib_s": 0}, {"mib_s": -5}, {"mib_s": "fast"}, {"mib_s": True}, {}])
def test_a_link_note_that_says_no_usable_rate_is_not_used(conn, note):
    conn.secretDefineXML(m._note_xml(m.LINK_USAGE, dict(note, at=time.time())), 0)  # pylint: disable=protected-access
    assert m.remembered_link(conn) is None


@pytest.mark.parametrize("at", ["yesterday", None, True], ids=["text", "null", "bool"])
def test_a_link_note_without_a_time_it_was_measured_is_not_used(conn, at):
    note = {"mib_s": 90, "moves": 1, "by": "someone's hand"}
    if at is not None:
        note["at"] = at
    conn.secretDefineXML(m._note_xml(m.LINK_USAGE, note), 0)  # pylint: disable=protected-access
    assert m.remembered_link(conn) is None
