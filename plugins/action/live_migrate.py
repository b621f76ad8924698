# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for live_migrate: run on the controller and print progress while it runs.

A module cannot print while it runs; an action plugin can. When the task's connection is
local (``delegate_to: localhost``, or a lab inventory with ``ansible_connection: local``),
the migration runs here, in the controller process, through the same module_utils code the
module uses, and a progress line is displayed every few seconds (ansible-runner and AWX show
them in the job output). With any other connection the module runs on the target as usual.
"""

from __future__ import annotations

import time
import traceback

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import (
    HAS_LIBVIRT, LIBVIRT_IMPORT_ERROR, FleetmaintError,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.live_migration import (
    ARGUMENT_SPEC, MUTUALLY_EXCLUSIVE, REQUIRED_ONE_OF, migrate,
)

display = Display()
PROGRESS_EVERY = 2.0  # seconds between progress lines


def _mib(n):
    return "?" if n is None else f"{n / 1048576:.0f}"


class Progress:
    """Turns progress samples and events into readable, rate-limited lines."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.last = 0.0

    def __call__(self, sample: dict) -> None:
        if sample.get("kind") == "event":
            extra = ", ".join(f"{k}={v}" for k, v in sample.items() if k not in ("kind", "vm", "t", "event"))
            display.display(f"[{self.host}] live_migrate {sample['vm']}: {sample['t']:.1f}s {sample['event']}"
                            + (f" ({extra})" if extra else ""))
            return
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        total, done = sample.get("data_total"), sample.get("data_processed")
        # Re-sent pages make 'processed' exceed 'total' after the first pass: show % only until then.
        pct = f"{100 * done / total:.0f}% " if done is not None and done <= total else ""
        display.display(
            f"[{self.host}] live_migrate {sample['vm']}: {sample['t']:.0f}s {sample['phase']} {pct}"
            f"sent {_mib(done)} MiB, remaining {_mib(sample.get('data_remaining'))} MiB, "
            f"{_mib(sample.get('memory_bps'))} MiB/s, iteration {sample.get('iteration')}, "
            f"dirty {sample.get('dirty_rate')} pages/s"
            + (f", throttle {sample['throttle']}%" if sample.get("throttle") else ""))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport != "local":
            result.update(self._execute_module(module_name="fleetmaint.libvirt.live_migrate",
                                               module_args=self._task.args, task_vars=task_vars))
            return result
        ok, validated, errors = self._validate(task_vars)
        if not ok:
            result.update(failed=True, msg=errors)
            return result
        if not HAS_LIBVIRT:
            result.update(failed=True, exception=LIBVIRT_IMPORT_ERROR,
                          msg="libvirt-python is not installed on the controller: pip install libvirt-python "
                              "(needs libvirt-dev and pkg-config) or apt-get install python3-libvirt")
            return result
        try:
            result.update(migrate(validated, check_mode=self._task.check_mode,
                                  progress=Progress(task_vars.get("inventory_hostname", "localhost"))))
        except FleetmaintError as exc:
            partial = exc.context.pop("result", None) or {}
            partial.pop("msg", None)
            result.update(partial)
            result.update({k: v for k, v in exc.context.items() if v is not None})
            result.update(failed=True, msg=exc.msg, exception=traceback.format_exc())
        except Exception as exc:  # pylint: disable=broad-except
            result.update(failed=True, msg=f"unexpected error: {exc}", exception=traceback.format_exc())
        return result

    def _validate(self, task_vars):
        from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

        validator = ArgumentSpecValidator(ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE,
                                          required_one_of=REQUIRED_ONE_OF)
        res = validator.validate(self._task.args)
        if res.error_messages:
            return False, None, "; ".join(res.error_messages)
        return True, res.validated_parameters, None
