# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One running live migration, from the libvirt call to where the VM ended up.

``live_migration.migrate`` prepares a move (finds the VM, checks it, builds flags and parameters) and hands
it to a :class:`MigrationJob`: the blocking libvirt call runs in a thread (:class:`Runner`) while the job
watches libvirt's job statistics on a connection of its own (:class:`Control`) and applies the policy (the
downtime ladder, post-copy, suspend, abort on timeout or on no progress). Its fields are the watcher's state;
it ends by verifying the destination, or, after a failure, by making sure the VM runs on the source (a broken
post-copy goes to ``postcopy_recovery``) and raising an error that carries its reason code and what happened.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import CancelFlag
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.domains import (
    crashed_on, lookup, placement, record_arrival, state,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import (
    call_with_timeout, libvirt, open_uri,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_flags import effective_timeout_action
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.postcopy_recovery import (
    POSTCOPY_SETTLE_S, settle_postcopy,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.precopy_estimate import MIB
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.reasons import VM_LOST

ProgressFn = Callable[[Dict[str, Any]], None]
# The job's own log keeps a progress sample a second (and every change of pass or phase), at most this many:
# 20 minutes of one migration, a few hundred kB in a result.
SAMPLE_EVERY_S = 1.0
MAX_SAMPLES = 1200
# libvirt's job types of a job that is over (no job at all is 0): completed, failed, cancelled.
ENDED_JOB_TYPES = (0, 3, 4, 5)


def metrics(final: Optional[Dict[str, Any]], last: Optional[Dict[str, Any]], events: List[Dict[str, Any]],
            wall_ms: int, postcopy_used: bool, throttle_max: int) -> Dict[str, Any]:
    src = dict(final or last or {})
    metric_source = "destination_completed_job" if final else ("source_last_sample" if last else "none")
    # Storage copied over NBD is counted on the source only.
    for key in ("disk_total", "disk_processed"):
        if not src.get(key) and last and last.get(key):
            src[key] = last[key]
    comp = {k: v for k, v in src.items() if k.startswith("compression_")}
    return {
        # A source sample is from before the end (after post-copy there is nothing else): use wall time.
        "total_time_ms": src.get("time_elapsed", wall_ms) if final else wall_ms,
        "wall_time_ms": wall_ms,
        "downtime_ms": src.get("downtime") if final else None,
        "downtime_net_ms": src.get("downtime_net") if final else None,
        "setup_time_ms": src.get("setup_time"),
        "data_total": src.get("data_total"),
        "data_processed": src.get("data_processed"),
        "data_remaining": src.get("data_remaining"),
        "memory_total": src.get("memory_total"),
        "memory_bps": src.get("memory_bps"),
        "iterations": src.get("memory_iteration"),
        "dirty_rate": src.get("memory_dirty_rate"),
        "disk_total": src.get("disk_total"),
        "disk_processed": src.get("disk_processed"),
        "postcopy_used": postcopy_used,
        "postcopy_requests": src.get("memory_postcopy_requests"),
        "auto_converge_throttle": max(throttle_max, src.get("auto_converge_throttle", 0) or 0),
        "compression": comp,
        "source": metric_source,
    }


class Runner:
    """Runs the blocking libvirt migration call in a thread."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self._fn = fn
        self.thread = threading.Thread(target=self._run, name="fleetmaint-migrate", daemon=True)

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # pylint: disable=broad-except
            self.error = exc
        finally:
            self.done.set()


CONTROL_TIMEOUT_S = 30.0


class ControlStuck(Exception):
    """A job-control call did not return in time."""


class Control:
    """Watch and steer the migration job on a connection of its own, each call bounded in time.

    The migration call occupies the source connection for the whole migration. Polling and steering
    it over that same connection once hung in the lab: a call was never answered, so the timeout and
    the abort it should trigger never happened. Here every call runs on a separate connection and is
    abandoned after ``timeout`` seconds (ControlStuck); the next call opens a fresh connection.
    """

    def __init__(self, uri: str, uuid: str, timeout: float = 30.0) -> None:
        self.uri, self.uuid, self.timeout = uri, uuid, timeout
        self.conn: Any = None
        self.dom: Any = None

    def call(self, method: str, *args: Any) -> Any:
        if self.dom is None:
            self.conn = open_uri(self.uri)
            self.dom = self.conn.lookupByUUIDString(self.uuid)
        dom = self.dom
        try:
            return call_with_timeout(lambda: getattr(dom, method)(*args), self.timeout,
                                     name=f"fleetmaint-control-{method}")
        except TimeoutError as exc:
            # Leave the connection to its stuck thread (closing it could block too); reconnect next time.
            self.conn = self.dom = None
            raise ControlStuck(f"{method} did not return within {self.timeout:g} s") from exc

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # pylint: disable=broad-except
                pass
            self.conn = self.dom = None


class MigrationJob:
    """One migration of ``ctx['vm']`` from ``sconn`` to ``dconn``: start it, watch and steer it, settle it.

    ``p`` are the move's options, ``result`` the result being built (its ``events`` list is the job's log),
    ``ladder`` the downtime steps. The remaining fields are what the watcher learns as it goes.
    """

    def __init__(self, p: Dict[str, Any], sdom: Any, sconn: Any, dconn: Any, peer_uri: str,
                 ladder: List[Tuple[float, int]], result: Dict[str, Any], ctx: Dict[str, Any],
                 progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None) -> None:
        self.p, self.sdom, self.sconn, self.dconn, self.peer_uri = p, sdom, sconn, dconn, peer_uri
        self.ladder, self.result, self.ctx, self.progress = ladder, result, ctx, progress
        self.cancel = cancel
        self.name: str = ctx["vm"]
        self.events: List[Dict[str, Any]] = result["events"]
        self.samples: List[Dict[str, Any]] = result.setdefault("samples", [])
        self.sample_key: Optional[Tuple[Any, str]] = None  # (pass, phase) of the last kept sample
        self.sampled_at = -SAMPLE_EVERY_S
        self.t0 = time.monotonic()
        self.last: Optional[Dict[str, Any]] = None  # the last real job sample from the source
        self.abort_at: Optional[float] = None
        self.aborted: Optional[Tuple[str, str]] = None  # (reason code, what happened) once we aborted the job
        self.postcopy_used = False
        self.suspended = False
        self.timed_out = False
        self.throttle_max = 0
        self.ladder_i = 0
        self.best_remaining: Optional[int] = None
        self.best_at = self.t0
        self.phase = "precopy"
        self.pass_start: Dict[int, int] = {}  # pre-copy pass -> memory left at its start (its largest sample)
        self.watch_jumped = False
        self.transferred = False
        self.downtime_before: Optional[int] = None  # the source's downtime limit before the move (_first_step)

    def event(self, kind: str, **kw: Any) -> None:
        e = dict(t=round(time.monotonic() - self.t0, 2), event=kind, **kw)
        self.events.append(e)
        if self.progress:
            self.progress(dict(e, vm=self.name, kind="event"))

    def run(self, flags: int, params: Dict[str, Any]) -> Dict[str, Any]:
        """Start the libvirt migration call and watch it to the end; the result, or FleetmaintError."""
        sdom, dconn = self.sdom, self.dconn
        if self.p["p2p"]:
            runner = Runner(lambda: sdom.migrateToURI3(self.peer_uri, params, flags))
        else:
            runner = Runner(lambda: sdom.migrate3(dconn, params, flags))
        self.t0 = self.best_at = time.monotonic()
        # Wall-clock times place the move in the report's timeline; ``t`` of events and samples counts from here.
        self.result["started_at"] = round(time.time(), 2)
        self.event("start", destination=self.ctx["destination"])
        self._first_step()
        runner.thread.start()
        ctl = Control(self.p["uri"], sdom.UUIDString(), CONTROL_TIMEOUT_S)
        try:
            return self.watch(runner, ctl)
        finally:
            self.result["ended_at"] = round(time.time(), 2)
            ctl.close()

    def _first_step(self) -> None:
        """The ladder's first step, set on the source before the migration call starts (its connection is free
        until then); the limit the source had is kept, and put back if the move fails (``failed``). Left to the
        first poll, it came after the switch-over of short moves on a busy host: QEMU's default 300 ms was in
        force, and on the lab 24 of 311 such moves paused their guest longer than 500 ms (up to 1,333), none of
        398 whose first step came in time (the longest 478 ms)."""
        if not self.ladder or self.ladder[0][0] > 0:
            return
        try:
            self.downtime_before = self.sdom.migrateGetMaxDowntime(0)
            self.sdom.migrateSetMaxDowntime(self.ladder[0][1], 0)
        except libvirt.libvirtError as exc:
            self.event("control_error", error=libvirt_message(exc))
            return  # the first poll sets it, as it does every later step
        self.event("downtime", downtime_ms=self.ladder[0][1], why="before the migration starts")
        self.ladder_i = 1

    # -- watching -------------------------------------------------------------------------------------------

    def watch(self, runner: Runner, ctl: Any) -> Dict[str, Any]:
        """Poll the job every poll_interval until the migration call returns, steering it as it goes."""
        while not runner.done.wait(self.p["poll_interval"]):
            if self.cancel is not None and self.cancel.is_set() and not self.aborted and not self.postcopy_used:
                # Cancelled: a pre-copy is undone by aborting it (the guest stays on its source); a post-copy
                # already runs the guest on the destination and goes on to its end.
                try:
                    self._abort(ctl, "cancelled", f"the job was cancelled ({self.cancel.why})", "cancelled")
                except (libvirt.libvirtError, ControlStuck, FleetmaintError) as exc:
                    self.event("control_error", error=str(exc))  # asked again below, 10 s on
            if self.aborted and self.abort_at is not None and time.monotonic() - self.abort_at > 10:
                # An abort that did not take (or a control call that got stuck): ask again.
                self.abort_at = time.monotonic()
                try:
                    ctl.call("abortJob")
                    self.event("abort", why="retry")
                except (libvirt.libvirtError, ControlStuck, FleetmaintError) as exc:
                    self.event("control_error", error=str(exc))
            try:
                st = ctl.call("jobStats", 0)
            except libvirt.libvirtError:
                self._transfer_ended()
                continue  # the job just ended, or the domain left the source
            except (ControlStuck, FleetmaintError) as exc:
                self.event("control_error", error=str(exc))
                continue
            if st.get("type", 0) in ENDED_JOB_TYPES or not st.get("data_total"):
                self._transfer_ended()
                continue  # no job, or a cancelled job's empty record: keep the last real sample
            if st.get("data_remaining") == 0 and self.last is not None \
                    and st.get("data_processed") == self.last.get("data_processed"):
                self._transfer_ended()  # nothing left and nothing sent since the last poll: libvirt's last step
            self._sampled(st)
            try:
                self._steer(ctl, st)
            except libvirt.libvirtError as exc:
                self.event("control_error", error=libvirt_message(exc))
            except (ControlStuck, FleetmaintError) as exc:
                self.event("control_error", error=str(exc))
        wall_ms = int((time.monotonic() - self.t0) * 1000)
        if runner.error is not None:
            return self.failed(runner.error, wall_ms)
        return self.succeeded(wall_ms)

    def _transfer_ended(self) -> None:
        """Data had flowed and the source has no job any more, or its job has nothing left to send and sent
        nothing since the last poll: what is left is libvirt's own last step (the destination resumes the guest,
        the source confirms and undefines it: a second or more, the link idle).
        Said once (event ``transferred``) so that a scheduler can give the link to the next move meanwhile."""
        if self.last is not None and not self.transferred:
            self.transferred = True
            self.event("transferred", data_processed=self.last.get("data_processed"))

    def _sampled(self, st: Dict[str, Any]) -> None:
        self.last = st
        it, left = st.get("memory_iteration"), st.get("memory_remaining")
        if it is not None and left is not None:
            self.pass_start[it] = max(self.pass_start.get(it, 0), left)
        self.throttle_max = max(self.throttle_max, st.get("auto_converge_throttle", 0) or 0)
        remaining = st.get("data_remaining")
        if remaining is not None and (self.best_remaining is None or remaining < self.best_remaining):
            self.best_remaining, self.best_at = remaining, time.monotonic()
        t = round(time.monotonic() - self.t0, 1)
        sample = {"t": t, "phase": self.phase, "data_processed": st.get("data_processed"),
                  "data_remaining": remaining, "data_total": st.get("data_total"),
                  "memory_bps": st.get("memory_bps"), "iteration": st.get("memory_iteration"),
                  "dirty_rate": st.get("memory_dirty_rate"), "throttle": st.get("auto_converge_throttle"),
                  # The downtime step in force (the sample is taken before this poll steers the job).
                  "downtime_ms": self.ladder[self.ladder_i - 1][1] if self.ladder_i else None}
        key = (st.get("memory_iteration"), self.phase)
        if len(self.samples) < MAX_SAMPLES and (key != self.sample_key or t - self.sampled_at >= SAMPLE_EVERY_S):
            self.samples.append(sample)
            self.sample_key, self.sampled_at = key, t
        if self.progress:
            self.progress(dict(sample, kind="progress", vm=self.name))

    def _abort(self, ctl: Any, code: str, what: str, why: str) -> None:
        """Abort the job; ``code`` and ``what`` become the failure's reason and message."""
        self.aborted = (code, what)
        self.abort_at = time.monotonic()
        ctl.call("abortJob")
        self.event("abort", why=why)

    def _steer(self, ctl: Any, st: Dict[str, Any]) -> None:
        """The policy, applied to one sample: downtime ladder, post-copy, timeout, convergence, no progress."""
        if self.aborted:
            return  # being aborted (cancelled, not converging, no progress): nothing may start a post-copy now
        p = self.p
        elapsed = time.monotonic() - self.t0
        remaining = st.get("data_remaining")
        while self.ladder_i < len(self.ladder) and elapsed >= self.ladder[self.ladder_i][0]:
            ctl.call("migrateSetMaxDowntime", self.ladder[self.ladder_i][1], 0)
            self.event("downtime", downtime_ms=self.ladder[self.ladder_i][1])
            self.ladder_i += 1
        if not self.postcopy_used and (p["postcopy"] == "immediate" or (
                p["postcopy"] == "after_first_pass" and (st.get("memory_iteration") or 0) >= 2)):
            ctl.call("migrateStartPostCopy", 0)
            self.postcopy_used, self.phase = True, "postcopy"
            self.event("postcopy", why="postcopy=immediate" if p["postcopy"] == "immediate" else "after the first pass")
        if p.get("timeout") and elapsed >= p["timeout"] and not self.timed_out and not self.postcopy_used:
            self.timed_out = True
            self.event("timeout", after_s=p["timeout"], action=effective_timeout_action(p), data_remaining=remaining)
            self._end_precopy(ctl, "timeout", f"timeout after {p['timeout']} s",
                              f" with {remaining} bytes remaining (dirty rate {st.get('memory_dirty_rate')} pages/s, "
                              f"throughput {st.get('memory_bps')} B/s)")
        if p.get("convergence_watch") and not (self.postcopy_used or self.suspended or self.aborted or self.timed_out):
            self._watch_convergence(ctl, st)
        if p.get("progress_timeout") and not self.postcopy_used and not self.aborted and not self.suspended \
                and time.monotonic() - self.best_at >= p["progress_timeout"]:
            self._abort(ctl, "no_progress", f"no progress for {p['progress_timeout']} s: remaining data stayed "
                                            f"above {self.best_remaining} bytes", "progress_timeout")

    def _end_precopy(self, ctl: Any, code: str, trigger: str, detail: str) -> None:
        """Pre-copy will not finish (``trigger``: the timeout, or measured non-convergence): take the timeout
        action - post-copy or suspend - or abort; an action that cannot start aborts too."""
        action = effective_timeout_action(self.p)
        if action in ("postcopy", "suspend"):
            try:
                if action == "postcopy":
                    ctl.call("migrateStartPostCopy", 0)
                    self.postcopy_used, self.phase = True, "postcopy"
                else:
                    ctl.call("suspend")
                    self.suspended = True
                self.event(action, why=code)
            except (libvirt.libvirtError, ControlStuck, FleetmaintError) as exc:
                # It must end the migration one way or the other: abort it (retried if needed).
                msg = libvirt_message(exc) if isinstance(exc, libvirt.libvirtError) else str(exc)
                self.event("control_error", error=msg)
                self._abort(ctl, code, f"{trigger}; {action} could not be started ({msg}), so the migration was "
                                       "aborted", f"{code}; {action} did not start")
        else:
            self._abort(ctl, code, trigger + detail, code)

    def _watch_convergence(self, ctl: Any, st: Dict[str, Any]) -> None:
        """Read convergence from the passes so far (convergence_watch): once three passes after the first no
        longer shrink, either the ladder's top can take what is left (jump to it) or nothing can (end now)."""
        starts = [self.pass_start[i] for i in sorted(self.pass_start) if i >= 2]
        if len(starts) < 3:
            return
        last = starts[-3:]
        if any(b < 0.9 * a for a, b in zip(last, last[1:])):
            return  # still shrinking: pre-copy is converging
        bps = st.get("memory_bps") or 0
        if bps <= 0 or (self.p["auto_converge"] and (st.get("auto_converge_throttle") or 0) < 99):
            return  # no throughput yet, or auto-converge still raising its throttle
        need_ms = last[-1] / bps * 1000
        top = self.p.get("max_downtime") or 300  # QEMU's own default
        if need_ms <= top:
            if not self.watch_jumped and self.ladder_i < len(self.ladder):
                value = next(v for _t, v in self.ladder[self.ladder_i:] if v >= need_ms or v == self.ladder[-1][1])
                ctl.call("migrateSetMaxDowntime", value, 0)
                self.event("downtime", downtime_ms=value, why=f"measured: what is left needs about {need_ms:.0f} ms")
                self.ladder_i, self.watch_jumped = len(self.ladder), True
            return
        mib = [round(x / MIB, 1) for x in last]
        self.event("not_converging", passes_mib=mib, need_ms=round(need_ms), max_downtime_ms=top)
        self._end_precopy(ctl, "not_converging",
                          f"not converging: the last three passes each left {mib} MiB to send",
                          f"; at the measured {bps / MIB:.1f} MiB/s that is a {need_ms:.0f} ms pause, over "
                          f"max_downtime {top} ms (dirty rate {st.get('memory_dirty_rate')} pages/s)")

    # -- the end --------------------------------------------------------------------------------------------

    def _metrics(self, final: Optional[Dict[str, Any]], wall_ms: int) -> Dict[str, Any]:
        return metrics(final, self.last, self.events, wall_ms, self.postcopy_used, self.throttle_max)

    def succeeded(self, wall_ms: int) -> Dict[str, Any]:
        """The call returned: verify, resume if we suspended, collect metrics from the destination's job."""
        name, ctx, result = self.name, self.ctx, self.result
        ddom = lookup(self.dconn, name, None)
        if ddom is None:
            raise FleetmaintError(f"{name}: libvirt reported success but the VM is not on {ctx['destination']}",
                                  step="verify", **ctx)
        if self.suspended and state(ddom)[0] == "paused":
            ddom.resume()
            self.event("resume", on=ctx["destination"])
        if state(ddom)[0] == "paused":
            record_arrival(ddom, result["home_host"], self.event)
        final = None
        try:
            # KEEP_COMPLETED: libvirt's record that this QEMU process began with an incoming migration stays
            # readable for the move rules (hypervisor_facts.paused_facts).
            final = ddom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
            if not final or final.get("type", 0) == 0:
                final = None
        except libvirt.libvirtError:
            final = None
        self.event("done")
        result["metrics"] = self._metrics(final, wall_ms)
        result["metrics"]["suspended"] = self.suspended
        where = placement(self.sconn, self.dconn, name)
        result["placement"] = where
        if where["running_on"] != [ctx["destination"]]:
            raise FleetmaintError(f"{name}: after migration it runs on {where['running_on']}, expected "
                                  f"{ctx['destination']}", step="verify", **ctx)
        if result.get("autostart") and ddom.isPersistent() and not ddom.autostart():
            try:
                ddom.setAutostart(1)
            except libvirt.libvirtError as exc:
                self.event("autostart_error", error=libvirt_message(exc))
        m = result["metrics"]
        result["msg"] = (f"migrated {name} from {ctx['source']} to {ctx['destination']} in {m['total_time_ms']} ms"
                         + (f", downtime {m['downtime_ms']} ms" if m['downtime_ms'] is not None else "")
                         + (" (post-copy)" if self.postcopy_used else "")
                         + (" (suspended to finish)" if self.suspended else ""))
        return result

    def failed(self, error: BaseException, wall_ms: int) -> Dict[str, Any]:
        """The migration call failed: make sure the VM runs on the source, then raise why (a reason code)."""
        name, ctx, result, p = self.name, self.ctx, self.result, self.p
        sconn, dconn, postcopy_used = self.sconn, self.dconn, self.postcopy_used
        cause = libvirt_message(error)
        self.event("failed", error=cause)
        phase = "postcopy" if postcopy_used else "precopy"
        if postcopy_used:
            # The guest already runs on the destination: it cannot go back. Wait for the outcome, resuming
            # the post-copy when the link allows; a dropped control connection alone often ends in success.
            if settle_postcopy(p, name, sconn, dconn, p.get("peer_uri") or p["dest_uri"], self.event) == "completed":
                result["placement"] = placement(sconn, dconn, name)
                result["metrics"] = self._metrics(None, wall_ms)
                if result["placement"]["running_on"] == [ctx["destination"]]:
                    result["msg"] = (f"migrated {name} from {ctx['source']} to {ctx['destination']} (post-copy; "
                                     f"completed after the migration call failed: {cause})")
                    return result
        sdom_now = lookup(sconn, name, None)
        if sdom_now is not None and not postcopy_used:
            now, reason = state(sdom_now)
            # Resume only what the migration paused: a VM its user had paused stays paused.
            paused_by_us = self.suspended or (result.get("state_before") == "running" and reason in (
                libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_USER))
            if now == "paused" and paused_by_us:
                try:
                    sdom_now.resume()
                    self.event("resume", on=ctx["source"])
                except libvirt.libvirtError as exc:
                    self.event("control_error", error=libvirt_message(exc))
            if self.downtime_before is not None and now in ("running", "paused"):
                # The ladder's steps changed it: the VM stays on its source, with the limit it had.
                try:
                    sdom_now.migrateSetMaxDowntime(self.downtime_before, 0)
                    self.event("downtime", downtime_ms=self.downtime_before, why="put back as it was before the move")
                except libvirt.libvirtError as exc:
                    self.event("control_error", error=libvirt_message(exc))
        try:
            where = placement(sconn, dconn, name)
        except libvirt.libvirtError as exc:
            # The destination cannot be asked (its daemon died?): report what the source says.
            where = placement(sconn, None, name)
            where["destination_unknown"] = libvirt_message(exc)
        result["placement"] = where
        result["metrics"] = self._metrics(None, wall_ms)
        why = self.aborted[1] if self.aborted else cause
        if where["running_on"] == [ctx["source"]]:
            # Why it failed, as a code: we aborted it (and why), or it failed before a byte was sent, or later.
            code = self.aborted[0] if self.aborted else ("refused_at_start" if self.last is None else "migration_failed")
            said = f"; it still runs on {ctx['source']}"
            if where.get("destination_unknown"):
                said += f" ({ctx['destination']} could not be checked: {where['destination_unknown']})"
            result["changed"] = not set(where["defined_on"]) <= {ctx["source"]}  # nothing left on the destination
        elif where["running_on"]:
            said = f"; it now runs on {', '.join(where['running_on'])}"
            code = "postcopy_unfinished" if postcopy_used else "migration_failed"
        else:
            crashed = crashed_on(sconn, dconn, name)
            if crashed:
                code = "vm_crashed"
                said = (f"; {name} CRASHED on {crashed['host']} during the move ({crashed['state']}): its guest "
                        f"memory is lost and it runs on no host. {crashed['log']}")
            else:
                said = (f"; it runs on NO host checked ({ctx['source']}, {ctx['destination']}): find it before "
                        "anything else")
                code = "vm_not_running_anywhere"
            result["changed"] = True
        if postcopy_used and code not in VM_LOST:
            code = "postcopy_unfinished"
        result["reason"] = code
        if postcopy_used:
            said += (f". Post-copy could not be completed or resumed within {POSTCOPY_SETTLE_S} s: the guest runs on "
                     f"{ctx['destination']} with part of its memory still on {ctx['source']}; keep both, restore the "
                     "link and re-run (libvirt post-copy recovery); a host that died in post-copy loses the guest")
        raise FleetmaintError(f"migrating {name} from {ctx['source']} to {ctx['destination']} failed during "
                              f"{phase}: {why}{said}", step=phase, cause=cause, result=result, reason=code, **ctx)
