# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that opens libvirt connections.

It imports libvirt-python once (modules report a missing library through
``module_runner.require_libvirt``), opens URIs (a failure is a ``FleetmaintError``
naming the URI, password redacted), closes connections, and bounds a call that may
hang (``call_with_timeout``). It never exits the process: callers decide.
"""

from __future__ import annotations

import re
import threading
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_code, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri

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


def call_with_timeout(fn: Callable[[], Any], timeout: float, name: Optional[str] = None) -> Any:
    """fn() in a thread, abandoned after timeout (a blackholed host hangs a TCP connect for minutes; a libvirt
    call on a stuck connection is never answered): the one bounded call. Raises TimeoutError, or fn's error."""
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:  # pylint: disable=broad-except
            box["error"] = exc

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")
