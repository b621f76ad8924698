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
    """An error with a readable message and the context it happened in."""

    def __init__(self, msg: str, **context: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.context = context
        self.libvirt_code: Optional[int] = context.pop("libvirt_code", None)

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
                              "(expected e.g. qemu:///system or qemu+tls://host/system)", uri=redact_uri(str(uri)))
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


def require_libvirt(module: Any) -> None:
    """Fail the Ansible module with install instructions when libvirt-python is missing."""
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
    except FleetmaintError as exc:
        fail_from_exception(module, exc, **(exc.context.pop("result", None) or {}))
    except Exception as exc:  # pylint: disable=broad-except
        fail_from_exception(module, exc)
    module.exit_json(**result)


def fail_from_exception(module: Any, exc: BaseException, **result: Any) -> None:
    """Report an exception as a module failure, with context and a traceback."""
    result.pop("msg", None)
    if isinstance(exc, FleetmaintError):
        result.update({k: v for k, v in exc.context.items() if v is not None})
        module.fail_json(msg=exc.msg, exception=traceback.format_exc(), **result)
    if is_libvirt_error(exc):
        module.fail_json(msg=f"libvirt error: {libvirt_message(exc)}", libvirt_code=libvirt_code(exc),
                         exception=traceback.format_exc(), **result)
    module.fail_json(msg=f"unexpected error: {exc}", exception=traceback.format_exc(), **result)
