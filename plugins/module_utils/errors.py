# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's error: a message for people, a reason code for decisions (``reasons.REASONS``), and the
context it happened in; and the one mapping of any exception to a failed task's result, shared by modules and
action plugins. Pure: no libvirt or Ansible imports (a libvirt error is known by its error code).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.reasons import reason_for
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri


class FleetmaintError(Exception):
    """An error with a readable message, the context it happened in, and a reason code (``reasons.REASONS``).

    ``reason`` is what decisions read; the message is for people. Given as ``reason=``, or derived from
    ``step=`` when the raiser has nothing more precise to say."""

    def __init__(self, msg: str, **context: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.context = context
        self.libvirt_code: Optional[int] = context.pop("libvirt_code", None)
        context["reason"] = reason_for(context.get("reason"), context.get("step"))

    @property
    def reason(self) -> str:
        return self.context["reason"]

    def __str__(self) -> str:
        return self.msg


def libvirt_message(exc: BaseException) -> str:
    """libvirt's own message for an exception, without the Python noise."""
    get = getattr(exc, "get_error_message", None)
    msg = get() if callable(get) else None
    return (msg or str(exc)).strip()


def libvirt_code(exc: BaseException) -> Optional[int]:
    get = getattr(exc, "get_error_code", None)
    return get() if callable(get) else None


def wrap_error(exc: BaseException, step: str, uri: Optional[str] = None, **context: Any) -> FleetmaintError:
    """Turn a libvirt (or other) exception into a FleetmaintError naming host and step."""
    where = f" on {redact_uri(uri)}" if uri else ""
    return FleetmaintError(f"{step}{where} failed: {libvirt_message(exc)}", uri=redact_uri(uri),
                           step=step, libvirt_code=libvirt_code(exc), **context)


def failure_result(exc: BaseException, **result: Any) -> Dict[str, Any]:
    """The one mapping of an exception to a failed task's result, for modules and action plugins alike.

    ``result``: defaults (such as ``changed=False``); what ran before the failure, which a FleetmaintError
    carries as ``context['result']``, wins over them (a move that crashed a VM says ``changed: true``).
    Always sets ``msg`` and ``reason`` (a code of ``reasons.REASONS``)."""
    if isinstance(exc, FleetmaintError):
        out = dict(result, **(exc.context.get("result") or {}))
        out.pop("msg", None)
        out.update({k: v for k, v in exc.context.items() if v is not None and k != "result"})
        if exc.libvirt_code is not None:
            out["libvirt_code"] = exc.libvirt_code
        out.update(msg=exc.msg, reason=exc.reason)
    elif libvirt_code(exc) is not None:  # a libvirtError (the only exceptions with an error code)
        out = dict(result, msg=f"libvirt error: {libvirt_message(exc)}", libvirt_code=libvirt_code(exc),
                   reason="libvirt_error")
    else:
        out = dict(result, msg=f"unexpected error: {exc}", reason="unexpected")
    out["failed"] = True
    return out
