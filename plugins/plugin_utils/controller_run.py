# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared by the action plugins: run an engine on the controller and print progress while it runs.

A module cannot print while it runs; an action plugin can. When the task's connection is local
(``delegate_to: localhost``, or an inventory with ``ansible_connection: local``), the engine runs
in the controller process, through the same module_utils code the module uses, and progress lines
are displayed (ansible-runner and AWX show them in the job output). With any other connection the
module runs on the target as usual, without live progress.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from typing import Any, Callable, Dict

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.cancel import cancel_running, clear_signalled
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import failure_result
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import (
    HAS_LIBVIRT, LIBVIRT_IMPORT_ERROR,
)

display = Display()
PROGRESS_EVERY = 2.0  # seconds between progress lines of one migration


def _mib(n: Any) -> str:
    return "?" if n is None else f"{n / 1048576:.0f}"


class Progress:
    """Turns progress samples and events into readable, rate-limited lines (thread-safe)."""

    def __init__(self, host: str, job: str = "live_migrate") -> None:
        self.host = host
        self.job = job  # the task's module (host_evacuate, host_restore, live_migrate), named on every line
        self.last: Dict[str, float] = {}
        self.lock = threading.Lock()

    def __call__(self, sample: Dict[str, Any]) -> None:
        with self.lock:
            self._show(sample)

    def _show(self, sample: Dict[str, Any]) -> None:
        kind = sample.get("kind")
        vm = sample.get("vm", "?")
        if kind == "progress":
            now = time.monotonic()
            if now - self.last.get(vm, 0.0) < PROGRESS_EVERY:
                return
            self.last[vm] = now
            total, done = sample.get("data_total"), sample.get("data_processed")
            # Re-sent pages make 'processed' exceed 'total' after the first pass: show % only until then.
            pct = f"{100 * done / total:.0f}% " if total and done is not None and done <= total else ""
            display.display(
                f"[{self.host}] {self.job} {vm}: {sample['t']:.0f}s {sample['phase']} {pct}"
                f"sent {_mib(done)} MiB, remaining {_mib(sample.get('data_remaining'))} MiB, "
                f"{_mib(sample.get('memory_bps'))} MiB/s, iteration {sample.get('iteration')}, "
                f"dirty {sample.get('dirty_rate')} pages/s"
                + (f", throttle {sample['throttle']}%" if sample.get("throttle") else ""))
        elif kind == "event":
            extra = ", ".join(f"{k}={v}" for k, v in sample.items() if k not in ("kind", "vm", "t", "event"))
            display.display(f"[{self.host}] {self.job} {vm}: {sample['t']:.1f}s {sample['event']}"
                            + (f" ({extra})" if extra else ""))
        else:
            extra = ", ".join(f"{k}={v}" for k, v in sample.items() if k not in ("kind", "vm"))
            display.display(f"[{self.host}] {kind} {vm}" + (f": {extra}" if extra else ""))


class ControllerRunAction(ActionBase):
    """Base for action plugins whose engine is ``engine(params, check_mode=..., progress=...)``."""

    TRANSFERS_FILES = False
    _requires_connection = False
    module_name = ""
    argument_spec: Dict[str, Any] = {}
    validator_kwargs: Dict[str, Any] = {}

    def engine(self, params: Dict[str, Any], check_mode: bool, progress: Callable[[Dict[str, Any]], None]) -> Dict:
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport != "local":
            result.update(self._execute_module(module_name=self.module_name, module_args=self._task.args,
                                               task_vars=task_vars))
            return result
        res = ArgumentSpecValidator(self.argument_spec, **self.validator_kwargs).validate(self._task.args)
        if res.error_messages:
            result.update(failed=True, msg="; ".join(res.error_messages))
            return result
        if not HAS_LIBVIRT:
            result.update(failed=True, exception=LIBVIRT_IMPORT_ERROR,
                          msg="libvirt-python is not installed on the controller: pip install libvirt-python "
                              "(needs libvirt-dev and pkg-config) or apt-get install python3-libvirt")
            return result
        progress = Progress((task_vars or {}).get("inventory_hostname", "localhost"), self.module_name.rsplit(".", 1)[-1])
        with StopOnSignal(progress.host, progress.job) as stopped:
            try:
                result.update(self.engine(res.validated_parameters, self._task.check_mode, progress))
            except Exception as exc:  # pylint: disable=broad-except
                # The same mapping as a module's (run_engine): one msg, one reason code, the partial result.
                result.update(failure_result(exc), exception=traceback.format_exc())
            if stopped.signum is not None:
                display.warning(f"[{progress.host}] {progress.job} stopped on {signal.strsignal(stopped.signum)}: "
                                f"{result.get('msg')}")
        return result


class StopOnSignal:
    """While an engine runs: SIGINT or SIGTERM (Ctrl-C; AWX's cancel) cancels its job instead of killing the
    process with migrations running on their own - no new move starts, pre-copies in flight are aborted, a
    post-copy finishes - and then Ansible's own handler runs (the worker ends as Ansible expects)."""

    def __init__(self, host: str, job: str) -> None:
        self.host, self.job = host, job
        self.signum: Any = None
        self.previous: Dict[int, Any] = {}

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            cancel_running(f"{signal.strsignal(signum)} to the controller")
            display.warning(f"[{self.host}] {self.job}: {signal.strsignal(signum)}: stopping - no new move, "
                            "pre-copies in flight aborted, a post-copy in flight finished")

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        clear_signalled()
        if self.signum is not None and callable(self.previous.get(self.signum)):
            self.previous[self.signum](self.signum, None)
