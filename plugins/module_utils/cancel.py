# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stopping a job on request: the flag every part of a running job watches. Pure (no libvirt, no Ansible)."""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional


class CancelFlag:
    """Set when a job must stop: a cancel request found on the host (host_job), or a signal to the controller.

    What watches it: the move scheduler starts no new move or attempt, each migration job aborts its pre-copy
    (a post-copy cannot be undone: it is finished). Every flag in use is in ``RUNNING``, so a signal handler
    (plugin_utils.controller_run) can set them all."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.why: Optional[str] = None

    def set(self, why: str) -> None:
        if not self.event.is_set():
            self.why = why
            self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def __enter__(self) -> "CancelFlag":
        with _RUNNING_LOCK:
            RUNNING.add(self)
            why = _SIGNALLED["why"]
        if why:  # the signal came before this job began watching (while it connected or planned)
            self.set(why)
        return self

    def __exit__(self, *exc: Any) -> None:
        with _RUNNING_LOCK:
            RUNNING.discard(self)


RUNNING: set = set()
_RUNNING_LOCK = threading.Lock()
_SIGNALLED: Dict[str, Optional[str]] = {"why": None}  # a signal arrived: every flag in use from now on is set


def cancel_running(why: str) -> int:
    """Set every flag in use, and every flag put in use later until ``clear_signalled`` (a signal arrived);
    how many were in use."""
    with _RUNNING_LOCK:
        _SIGNALLED["why"] = why
        flags = list(RUNNING)
    for flag in flags:
        flag.set(why)
    return len(flags)


def clear_signalled() -> None:
    """The task that was signalled has ended (the next one starts unsignalled)."""
    with _RUNNING_LOCK:
        _SIGNALLED["why"] = None
