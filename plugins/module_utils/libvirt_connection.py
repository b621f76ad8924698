# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that opens libvirt connections.

It imports libvirt-python once (modules report a missing library through
``require_libvirt``), opens URIs, turns ``libvirtError`` into
``FleetmaintError`` with a message that names the host and the step, and
closes connections. It never exits the process: callers decide.
"""

from __future__ import annotations

import re
import threading
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.reasons import reason_for

try:
    import libvirt  # pylint: disable=unused-import
except ImportError:
    libvirt = None
    LIBVIRT_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    LIBVIRT_IMPORT_ERROR = None
    # libvirt prints every error to stderr by default; we report them ourselves.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

HAS_LIBVIRT = libvirt is not None

_PASSWORD_IN_URI = re.compile(r"^(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:@/]*):[^@/]*@")
_PASSWORD_IN_QUERY = re.compile(r"(?i)((?:password|passwd|secret)=)[^&]*")


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


def redact_uri(uri: Optional[str]) -> Optional[str]:
    """Hide any password embedded in a URI (user:pass@host or ?password=...)."""
    if not uri:
        return uri
    uri = _PASSWORD_IN_URI.sub(r"\g<scheme>\g<user>:********@", uri)
    return _PASSWORD_IN_QUERY.sub(r"\1********", uri)


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


def is_libvirt_error(exc: BaseException) -> bool:
    return HAS_LIBVIRT and isinstance(exc, libvirt.libvirtError)


def open_uri(uri: str, readonly: bool = False) -> Any:
    """Open a libvirt connection or raise FleetmaintError saying which URI and why."""
    if not HAS_LIBVIRT:
        raise FleetmaintError("libvirt-python is not installed", step="import libvirt")
    if not isinstance(uri, str) or not re.match(r"^[a-z0-9+]+://", uri):
        raise FleetmaintError(f"'{redact_uri(str(uri))}' is not a libvirt URI "
                              "(expected e.g. qemu:///system or qemu+tls://host/system)", uri=redact_uri(str(uri)),
                              reason="invalid_uri")
    try:
        conn = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise FleetmaintError(f"cannot connect to libvirt at {redact_uri(uri)}: {libvirt_message(exc)}",
                              uri=redact_uri(uri), step="connect", libvirt_code=libvirt_code(exc)) from exc
    if conn is None:  # very old bindings returned None instead of raising
        raise FleetmaintError(f"cannot connect to libvirt at {redact_uri(uri)}", uri=redact_uri(uri), step="connect")
    return conn


@contextmanager
def connection(uri: str, readonly: bool = False) -> Iterator[Any]:
    """``with connection(uri) as conn:`` opens and always closes."""
    conn = open_uri(uri, readonly=readonly)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except Exception:  # pylint: disable=broad-except
            pass  # closing a dead connection must not mask the real error


def call_with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """fn() in a thread, abandoned after timeout (a blackholed host hangs a TCP connect for minutes)."""
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:  # pylint: disable=broad-except
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def uri_secrets(value: Any) -> set:
    """The password parts of every URI in a module's parameters (strings, lists and dicts of them)."""
    out: set = set()
    if isinstance(value, str):
        m = re.match(r"^[a-zA-Z][\w+.-]*://[^:@/]*:(?P<pw>[^@/]*)@", value)
        if m and m.group("pw"):
            out.add(m.group("pw"))
        out.update(x for x in re.findall(r"(?i)(?:password|passwd|secret)=([^&]*)", value) if x)
    elif isinstance(value, dict):
        for v in value.values():
            out |= uri_secrets(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            out |= uri_secrets(v)
    return out


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


def run_engine(module: Any, engine: Any) -> None:
    """Run ``engine(params, check_mode=...)`` for a module; exit with its result or a clear failure.

    A FleetmaintError may carry the partial result (what ran before the failure) in its context.
    """
    require_libvirt(module)
    try:
        result = engine(module.params, check_mode=module.check_mode)
    except Exception as exc:  # pylint: disable=broad-except
        fail_from_exception(module, exc)
    module.exit_json(**result)


def failure_result(exc: BaseException, **result: Any) -> Dict[str, Any]:
    """The one mapping of an exception to a failed task's result, for modules and action plugins alike.

    ``result``: what ran before the failure (a FleetmaintError also carries it as ``context['result']``).
    Always sets ``msg`` and ``reason`` (a code of ``reasons.REASONS``)."""
    if isinstance(exc, FleetmaintError):
        out = dict(exc.context.get("result") or {}, **result)
        out.pop("msg", None)
        out.update({k: v for k, v in exc.context.items() if v is not None and k != "result"})
        if exc.libvirt_code is not None:
            out["libvirt_code"] = exc.libvirt_code
        out.update(msg=exc.msg, reason=exc.reason)
    elif is_libvirt_error(exc):
        out = dict(result, msg=f"libvirt error: {libvirt_message(exc)}", libvirt_code=libvirt_code(exc),
                   reason="libvirt_error")
    else:
        out = dict(result, msg=f"unexpected error: {exc}", reason="unexpected")
    out["failed"] = True
    return out


def fail_from_exception(module: Any, exc: BaseException, **result: Any) -> None:
    """Report an exception as a module failure, with context and a traceback."""
    out = failure_result(exc, **result)
    out.pop("failed")
    module.fail_json(exception=traceback.format_exc(), **out)
