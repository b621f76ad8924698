# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Notes kept on a host itself so they survive the controller: the maintenance mark, the patch level, the
lease of the job running on it, a request to cancel that job, the move slots that count the moves in and
out of it across jobs, and the migration link the last job that moved VMs over it measured.

libvirt has no place for host metadata, so each note is a persistent libvirt secret with no
value: usage type ``tls``, usage name ``fleetmaint-maintenance`` (or ``fleetmaint-patch-level``),
and a JSON description. Any controller reads them through the libvirt API; planners never
choose a marked host as a destination, and a rolling patch skips hosts already at its level.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any, Callable, Dict, Optional
from xml.sax.saxutils import escape

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, wrap_error
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import connection, libvirt, open_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import version_string
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import CancelFlag

USAGE_NAME = "fleetmaint-maintenance"
PATCH_LEVEL_USAGE = "fleetmaint-patch-level"


def _lookup(conn: Any, usage: str = USAGE_NAME) -> Any:
    try:
        return conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_TLS, usage)
    except libvirt.libvirtError as exc:
        # No such secret, or a driver that cannot store secrets (it cannot hold a mark either).
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SECRET, libvirt.VIR_ERR_NO_SUPPORT):
            return None
        raise


def _note_xml(usage: str, note: Dict[str, Any], uuid: Optional[str] = None, ephemeral: bool = False) -> str:
    """ephemeral: kept in libvirtd's memory only, gone when it restarts (a move slot: the moves die with it)."""
    u = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (f"<secret ephemeral='{'yes' if ephemeral else 'no'}' private='no'>{u}"
            f"<description>{escape(json.dumps(note))}</description>"
            f"<usage type='tls'><name>{usage}</name></usage></secret>")


def get_mark(conn: Any, usage: str = USAGE_NAME) -> Optional[Dict[str, Any]]:
    """The maintenance mark (or another note) of the host behind ``conn``, or None."""
    import xml.etree.ElementTree as ET

    sec = _lookup(conn, usage)
    if sec is None:
        return None
    desc = ET.fromstring(sec.XMLDesc(0)).findtext("description") or "{}"
    try:
        return json.loads(desc)
    except ValueError:
        return {"reason": desc}


def set_mark(conn: Any, uri: str, reason: str, by: str) -> bool:
    """Mark the host as in maintenance. Returns False if it already was."""
    if _lookup(conn) is not None:
        return False
    try:
        conn.secretDefineXML(_note_xml(USAGE_NAME, {"since": int(time.time()), "by": by, "reason": reason}), 0)
    except libvirt.libvirtError as exc:
        raise wrap_error(exc, "marking the host as in maintenance", uri) from exc
    return True


def clear_mark(conn: Any, uri: str) -> bool:
    """Remove the mark. Returns False if there was none."""
    sec = _lookup(conn)
    if sec is None:
        return False
    try:
        sec.undefine()
    except libvirt.libvirtError as exc:
        raise wrap_error(exc, "clearing the maintenance mark", uri) from exc
    return True


def get_patch_level(conn: Any) -> Optional[Dict[str, Any]]:
    """The patch level recorded on the host ({level, since, by}), or None."""
    return get_mark(conn, PATCH_LEVEL_USAGE)


def set_patch_level(conn: Any, uri: str, level: str, by: str) -> Dict[str, Any]:
    """Record ``level`` on the host (replacing any earlier level); returns the note written."""
    note = {"level": level, "since": int(time.time()), "by": by}
    try:
        # Redefined in place (same UUID), so the host never has no level.
        old = _lookup(conn, PATCH_LEVEL_USAGE)
        conn.secretDefineXML(_note_xml(PATCH_LEVEL_USAGE, note, old.UUIDString() if old is not None else None), 0)
    except libvirt.libvirtError as exc:
        raise wrap_error(exc, "recording the patch level", uri) from exc
    return note


# ---------------------------------------------------------------------------- remembered links
LINK_USAGE = "fleetmaint-link"
LINK_MEMORY_S = 7 * 86400  # a link measured longer ago than this is not used


def remembered_link(conn: Any, now: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """The migration link an earlier job measured on the host behind ``conn`` ({mib_s, first_mib_s, at, moves,
    by, age_s}), or None: none kept, unreadable, without a positive rate and a time (numbers), or measured more
    than LINK_MEMORY_S ago. ``first_mib_s`` (what that job's first moves measured) is left out unless it is a
    positive number."""
    try:
        note = get_mark(conn, LINK_USAGE)
    except libvirt.libvirtError:
        return None

    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if not isinstance(note, dict) or not number(note.get("mib_s")) or note["mib_s"] <= 0 or not number(note.get("at")):
        return None
    age = (time.time() if now is None else now) - note["at"]
    if not 0 <= age <= LINK_MEMORY_S:
        return None
    out = dict(note, age_s=round(age))
    if "first_mib_s" in out and not (number(out["first_mib_s"]) and out["first_mib_s"] > 0):
        del out["first_mib_s"]
    return out


def remember_link(uri: str, mib_s: float, moves: int, by: str, first_mib_s: Optional[float] = None) -> Dict[str, Any]:
    """Keep on the host the link a job measured for it (replacing any earlier one in place): ``mib_s`` the link
    its later moves get, ``first_mib_s`` what its first moves measured; returns the note."""
    note = {"mib_s": round(float(mib_s), 1), "at": int(time.time()), "moves": int(moves), "by": by}
    if first_mib_s:
        note["first_mib_s"] = round(float(first_mib_s), 1)
    conn = open_uri(uri)
    try:
        old = _lookup(conn, LINK_USAGE)
        conn.secretDefineXML(_note_xml(LINK_USAGE, note, old.UUIDString() if old is not None else None), 0)
    except libvirt.libvirtError as exc:
        raise wrap_error(exc, "keeping the measured link on the host", uri) from exc
    finally:
        conn.close()
    return note


# ---------------------------------------------------------------------------- job lease
LEASE_USAGE = "fleetmaint-job"
LEASE_STALE_S = 60  # a lease not renewed for this long belongs to a controller that is gone
LEASE_RENEW_S = 10
CANCEL_USAGE = "fleetmaint-cancel"
CANCEL_POLL_S = 2.0  # how often a job looks for a cancel request on its host


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def lease_is_stale(note: Dict[str, Any], now: Optional[float] = None, stale_after: float = LEASE_STALE_S) -> bool:
    """Not renewed for stale_after seconds, or held by a process of this controller that no longer exists."""
    now = time.time() if now is None else now
    if now - float(note.get("renewed", 0)) > stale_after:
        return True
    return note.get("controller") == socket.gethostname() and not _pid_alive(int(note.get("pid", 0)))


def targets(request: Dict[str, Any], lease: Dict[str, Any]) -> bool:
    """Whether a cancel request is for the job holding ``lease`` (not an earlier one)."""
    return all(request.get(k) == lease.get(k) for k in ("controller", "pid", "started"))


def job_status(conn: Any) -> Dict[str, Any]:
    """The job running on the host behind ``conn`` (its lease: job, controller, pid, started, renewed, progress),
    whether that lease is stale, and the cancel request for it if there is one."""
    lease = get_mark(conn, LEASE_USAGE)
    req = get_mark(conn, CANCEL_USAGE)
    live = lease is not None and not lease_is_stale(lease)
    return {"running": live, "job": lease, "stale": lease is not None and not live,
            "cancel_requested": req if (req and lease and targets(req, lease)) else None}


def request_cancel(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    """host_job's engine: report the job on the host, and with state=cancelled ask it to stop (idempotent).

    The request is a note on the host naming the job (controller, pid, start), so it reaches the job whichever
    controller runs it, within CANCEL_POLL_S, and never a later job. With ``wait`` it waits for the job to end."""
    with connection(p["uri"]) as conn:
        st = job_status(conn)
        changed = False
        if p["state"] == "cancelled" and st["running"] and not st["cancel_requested"]:
            changed = True
            lease = st["job"]
            req = {k: lease.get(k) for k in ("controller", "pid", "started", "job")}
            req.update(requested=int(time.time()), by=p["by"], **{"from": socket.gethostname()})
            if not check_mode:
                old = _lookup(conn, CANCEL_USAGE)
                conn.secretDefineXML(_note_xml(CANCEL_USAGE, req, old.UUIDString() if old is not None else None), 0)
            st["cancel_requested"] = req
        job = st["job"] or {}
        what = (f"'{job.get('job')}' from {job.get('controller')} (pid {job.get('pid')}, since "
                f"{time.strftime('%H:%M:%S', time.localtime(job.get('started', 0)))})") if job else None
        if not st["running"]:
            msg = "no job runs on the host" + (f" (a stale lease of {what} is left; the next job takes it over)"
                                               if st["stale"] else "") + ": nothing to cancel"
        elif p["state"] == "cancelled":
            msg = (f"{'asked' if changed else 'already asked'} {what} to stop"
                   + (" (check mode: not asked)" if check_mode and changed else ""))
        else:
            msg = f"{what} runs" + (", asked to stop" if st["cancel_requested"] else "")
        if p["state"] == "cancelled" and st["running"] and p["wait"] and not check_mode:
            deadline = time.monotonic() + p["wait_timeout"]
            while time.monotonic() < deadline:
                time.sleep(1.0)
                now = job_status(conn)
                if not now["running"] or not (now["job"] and targets(st["cancel_requested"], now["job"])):
                    msg += "; it has ended"
                    st["ended"] = True
                    break
            else:
                raise FleetmaintError(f"{msg}, but it still holds the host after {p['wait_timeout']} s (a "
                                      "post-copy in flight finishes before the job stops)", step="cancel")
    return dict(changed=changed, msg=msg, **st)


class HostLease:
    """One fleetmaint job (evacuate, restore) per host at a time, whichever controller runs it.

    The lease is a libvirt secret on the host: libvirt refuses a second secret with the same usage, so
    defining it is atomic. A thread renews it every LEASE_RENEW_S seconds; a controller that dies stops
    renewing, and after LEASE_STALE_S (at once, on the same controller) the next job takes it over.
    """

    def __init__(self, uri: str, host: str, job: str, cancel: Optional[CancelFlag] = None) -> None:
        self.uri, self.host, self.job = uri, host, job
        self.conn: Any = None
        self.uuid: Optional[str] = None
        self.note: Dict[str, Any] = {}
        self._halt = threading.Event()
        self._thread: Optional[threading.Thread] = None
        # Set when a cancel request for this job appears on the host (host_job state=cancelled); a job holding
        # several hosts (a rebalance) gives them one flag.
        self.cancel = cancel or CancelFlag()

    def counts(self, counts: Dict[str, int]) -> None:
        """The job's progress (moves done, failed, running, waiting), shown by host_job from the next renewal."""
        self.note["progress"] = dict(counts)

    def __enter__(self) -> "HostLease":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        self.conn = open_uri(self.uri)
        now = time.time()
        self.note = {"job": self.job, "controller": socket.gethostname(), "pid": os.getpid(), "started": int(now),
                     "renewed": now}
        for _attempt in range(2):
            try:
                sec = self.conn.secretDefineXML(_note_xml(LEASE_USAGE, self.note), 0)
                self.uuid = sec.UUIDString()
                break
            except libvirt.libvirtError as exc:
                held = get_mark(self.conn, LEASE_USAGE)
                if held is None:
                    raise wrap_error(exc, f"taking the job lease on {self.host}", self.uri) from exc
                if not lease_is_stale(held):
                    self.conn.close()
                    raise FleetmaintError(
                        f"{self.host} is busy: '{held.get('job')}' runs on it from {held.get('controller')} "
                        f"(pid {held.get('pid')}, since {time.strftime('%H:%M:%S', time.localtime(held.get('started', 0)))}"
                        f", lease renewed {int(now - float(held.get('renewed', 0)))} s ago); refusing to start "
                        f"'{self.job}' on it at the same time, nothing was changed", step="lease", host=self.host,
                        lease=held) from exc
                sec = _lookup(self.conn, LEASE_USAGE)
                if sec is not None:
                    sec.undefine()  # stale: its controller is gone
        else:
            raise FleetmaintError(f"could not take the job lease on {self.host}", step="lease", host=self.host)
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.host}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        renewed = time.monotonic()
        while not self._halt.wait(CANCEL_POLL_S):
            try:
                req = get_mark(self.conn, CANCEL_USAGE)
                if req and targets(req, self.note) and not self.cancel.is_set():
                    self.cancel.set(f"requested by {req.get('by')} from {req.get('from')} at "
                                    f"{time.strftime('%H:%M:%S', time.localtime(req.get('requested', 0)))}")
                if time.monotonic() - renewed >= LEASE_RENEW_S:
                    self.note["renewed"] = time.time()
                    self.conn.secretDefineXML(_note_xml(LEASE_USAGE, self.note, self.uuid), 0)
                    renewed = time.monotonic()
            except Exception:  # pylint: disable=broad-except
                pass  # the host may be restarting; the next renewal tries again

    def release(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=35)
        try:
            sec = _lookup(self.conn, LEASE_USAGE) if self.conn is not None else None
            if sec is not None and sec.UUIDString() == self.uuid:
                sec.undefine()
            req = get_mark(self.conn, CANCEL_USAGE) if self.conn is not None else None
            if req and targets(req, self.note):
                _lookup(self.conn, CANCEL_USAGE).undefine()  # answered: the next job is not cancelled by it
        except Exception:  # pylint: disable=broad-except
            pass  # unreachable host: the lease goes stale by itself
        finally:
            if self.conn is not None:
                try:
                    self.conn.close()
                except Exception:  # pylint: disable=broad-except
                    pass


# ---------------------------------------------------------------------------- move slots
SLOT_USAGE = "fleetmaint-move-{direction}-{k}"  # direction: out (from the host) or in (to it); k < the limit
SLOT_RETRY_S = 1.0  # a move that found a host's slots taken asks again after this long


def describe_slot(note: Dict[str, Any]) -> str:
    return (f"{note.get('vm')} {'to' if note.get('direction') == 'out' else 'from'} {note.get('peer')} "
            f"('{note.get('job')}' from {note.get('controller')}, pid {note.get('pid')})")


class MoveSlots:
    """The moves running out of and into each host, counted on the host itself, so that a job's ``limits`` hold
    across jobs: two evacuations, or the hosts of one rolling-patch batch, never put more moves into one
    destination (or out of one source) than its limit, whichever controller runs them.

    Slot k of a direction is a note (a libvirt secret, like the job lease, but ephemeral: it goes when that libvirtd
    restarts, as its migrations do) with usage ``fleetmaint-move-in-k``: libvirt refuses a second secret of the same
    usage, so taking one is atomic. A move takes an out slot on its
    source and an in slot on its destination, or neither, and waits. A thread renews the slots held every
    LEASE_RENEW_S seconds; a slot not renewed for LEASE_STALE_S (or held by a process of this controller that is
    gone) is taken over. A host that cannot keep notes (or cannot be reached, which the move itself reports)
    is not counted."""

    def __init__(self, uri_of: Dict[str, str], job: str, limits: Dict[str, int],
                 opener: Callable[[str], Any] = open_uri) -> None:
        self.uri_of, self.job, self.limits, self.opener = uri_of, job, limits, opener
        self.conns: Dict[str, Any] = {}
        self.held: Dict[str, list] = {}  # vm -> [(host, usage, uuid, note)]
        self.uncounted: Dict[str, str] = {}  # host -> why its moves are not counted
        self._retry: Dict[str, float] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "MoveSlots":
        self._thread = threading.Thread(target=self._renew, name="move-slots", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=35)
        for vm in list(self.held):
            self.release(vm)
        for conn in self.conns.values():
            try:
                conn.close()
            except Exception:  # pylint: disable=broad-except
                pass

    def _conn(self, host: str) -> Any:
        if host not in self.conns and host not in self.uncounted:
            try:
                self.conns[host] = self.opener(self.uri_of[host])
            except Exception as exc:  # pylint: disable=broad-except
                self.uncounted[host] = f"cannot reach it: {exc}"
        return self.conns.get(host)

    def take(self, m: Dict[str, Any]) -> Optional[str]:
        """Take the slots of move ``m`` (vm, source, destination): None once taken, else why it waits (empty
        while it waits out SLOT_RETRY_S before asking the hosts again)."""
        if time.monotonic() < self._retry.get(m["vm"], 0):
            return ""
        got = []
        for host, direction, peer, key in ((m["source"], "out", m["destination"], "per_source"),
                                           (m["destination"], "in", m["source"], "per_destination")):
            slot = self._take_one(host, direction, peer, self.limits[key], m["vm"])
            if isinstance(slot, str):
                for g in got:
                    self._free(g)
                self._retry[m["vm"]] = time.monotonic() + SLOT_RETRY_S
                return slot
            if slot is not None:
                got.append(slot)
        with self._lock:
            self.held[m["vm"]] = got
        return None

    def _take_one(self, host: str, direction: str, peer: str, limit: int, vm: str) -> Any:
        conn = self._conn(host)
        if conn is None:
            return None
        holders = []
        for k in range(limit):
            usage = SLOT_USAGE.format(direction=direction, k=k)
            for _attempt in range(2):
                now = time.time()
                note = {"job": self.job, "vm": vm, "direction": direction, "peer": peer,
                        "controller": socket.gethostname(), "pid": os.getpid(), "started": int(now), "renewed": now}
                try:
                    sec = conn.secretDefineXML(_note_xml(usage, note, ephemeral=True), 0)
                    return (host, usage, sec.UUIDString(), note)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                        self.uncounted[host] = "it cannot keep notes"
                        return None
                    try:
                        held = get_mark(conn, usage)
                        if held is not None and lease_is_stale(held):
                            sec = _lookup(conn, usage)
                            if sec is not None:
                                sec.undefine()  # stale: its controller is gone
                            continue
                    except libvirt.libvirtError as lost:  # the host went away (its move reports that itself)
                        self.uncounted[host] = f"cannot reach it: {lost}"
                        return None
                    if held is None:
                        continue  # freed in between: ask once more
                    holders.append(held)
                    break
        if not holders:
            self.uncounted[host] = "its slots could not be taken"
            return None
        return (f"{host}'s move slots: {len(holders)} move(s) {'out of' if direction == 'out' else 'into'} it "
                f"already, its limit is {limit}: " + ", ".join(describe_slot(h) for h in holders))

    def _free(self, slot: Any) -> None:
        host, usage, uuid, _note = slot
        try:
            sec = _lookup(self.conns[host], usage)
            if sec is not None and sec.UUIDString() == uuid:
                sec.undefine()
        except Exception:  # pylint: disable=broad-except
            pass  # unreachable: the slot goes stale by itself

    def release(self, vm: str) -> None:
        """Free the slots of ``vm``'s move, as it ends (whatever its outcome)."""
        with self._lock:
            slots = self.held.pop(vm, [])
        for slot in slots:
            self._free(slot)

    def _renew(self) -> None:
        while not self._halt.wait(LEASE_RENEW_S):
            with self._lock:
                slots = [(vm, s) for vm, held in self.held.items() for s in held]
            for vm, slot in slots:
                host, usage, uuid, note = slot
                with self._lock:  # still held: a slot freed meanwhile is not defined again
                    if slot not in self.held.get(vm, []):
                        continue
                    try:
                        note["renewed"] = time.time()
                        self.conns[host].secretDefineXML(_note_xml(usage, note, uuid, ephemeral=True), 0)
                    except Exception:  # pylint: disable=broad-except
                        pass  # the host may be restarting; the next renewal tries again


def stack_versions(conn: Any) -> Dict[str, Optional[str]]:
    """The versions a patch changes: the host's libvirt, and its hypervisor's (QEMU's)."""
    try:
        hv = conn.getVersion()
        return {"libvirt": version_string(conn.getLibVersion()), "hypervisor": conn.getType(),
                "hypervisor_version": version_string(hv) if hv else None}
    except Exception as exc:  # pylint: disable=broad-except
        raise wrap_error(exc, "reading the host's libvirt and hypervisor versions") from exc


def patch_level(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    """host_patch_level's engine: read the level recorded on the host, record a new one (idempotent)."""
    with connection(p["uri"]) as conn:
        versions = stack_versions(conn)
        note = get_patch_level(conn)
        previous = (note or {}).get("level")
        want = p["level"]
        changed = want is not None and want != previous
        if changed and not check_mode:
            note = set_patch_level(conn, p["uri"], want, p["by"])
    result = {"changed": changed, "previous": previous, "level": want if changed else previous, "versions": versions,
              "diff": {"before": f"level: {previous}\n", "after": f"level: {want if changed else previous}\n"}}
    if note:
        result["recorded"] = note
    return result
