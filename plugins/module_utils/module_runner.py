# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running an engine as an Ansible module: URI secrets masked, libvirt-python required, one exit or one failure
(through ``errors.failure_result``, the mapping the action plugins use too)."""

from __future__ import annotations

import traceback
from typing import Any

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import failure_result
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import (
    HAS_LIBVIRT, LIBVIRT_IMPORT_ERROR,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import uri_secrets


def hide_uri_secrets(module: Any) -> None:
    """Add the password parts of the module's URIs to what Ansible masks in its own output (the
    invocation echo at -vvv, warnings, results), as no_log does for whole parameters."""
    module.no_log_values.update(uri_secrets(module.params))


def require_libvirt(module: Any) -> None:
    """Hide URI secrets (every module calls this first), then fail with install instructions when
    libvirt-python is missing."""
    hide_uri_secrets(module)
    if not HAS_LIBVIRT:
        from ansible.module_utils.basic import missing_required_lib

        module.fail_json(msg=missing_required_lib("libvirt-python", url="https://pypi.org/project/libvirt-python/")
                         + " On Debian/Ubuntu: apt-get install python3-libvirt, or pip install libvirt-python"
                         " (needs libvirt-dev and pkg-config).",
                         exception=LIBVIRT_IMPORT_ERROR)


def run_engine(module: Any, engine: Any, needs_libvirt: bool = True) -> None:
    """Run ``engine(params, check_mode=...)`` for a module; exit with its result or a clear failure.

    A FleetmaintError may carry the partial result (what ran before the failure) in its context. A result's
    ``diff`` is returned only in diff mode.
    """
    if needs_libvirt:
        require_libvirt(module)
    else:
        hide_uri_secrets(module)
    try:
        result = engine(module.params, check_mode=module.check_mode)
    except Exception as exc:  # pylint: disable=broad-except
        fail_from_exception(module, exc, changed=False)
    if not module._diff:  # pylint: disable=protected-access
        result.pop("diff", None)
    module.exit_json(**result)


def fail_from_exception(module: Any, exc: BaseException, **result: Any) -> None:
    """Report an exception as a module failure, with context and a traceback."""
    out = failure_result(exc, **result)
    out.pop("failed")
    module.fail_json(exception=traceback.format_exc(), **out)
