# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every option more than one module takes, declared once with its one default.

Each group below has its documentation next to it in ``plugins/doc_fragments/`` under the same
name (the way community.docker pairs ``DOCKER_COMMON_ARGS`` with its fragment); a module takes a
group whole with its fragment, or single options with ``pick``. ``tests/unit`` checks that every
module's documented defaults equal its argument spec's, so a default cannot drift between a
preview (plan_evacuation, migration_check) and the job it previews. Pure: plain dicts only.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

COMPRESSION_METHODS = ["none", "xbzrle", "mt", "zstd", "zlib"]
COPY_STORAGE_MODES = ["none", "all", "incremental"]

# QEMU caps a migration at 128 MiB/s by default; the estimates assume that when no bandwidth is given.
DEFAULT_ESTIMATE_BANDWIDTH_MIB_S = 128

OPTIONS: Dict[str, Dict[str, Any]] = dict(
    # connection (fragment: connection)
    uri=dict(type="str", default="qemu:///system"),
    # storage (fragment: storage)
    shared_pools=dict(type="list", elements="str", default=[]),
    copy_storage=dict(type="str", default="none", choices=COPY_STORAGE_MODES),
    unsafe=dict(type="bool", default=False),
    # migration tuning (fragment: migration_tuning)
    tls=dict(type="bool", default=True),
    bandwidth=dict(type="int"),
    max_downtime=dict(type="int", default=500),
    downtime_steps=dict(type="int", default=5),
    parallel_connections=dict(type="int"),
    compression=dict(type="str", default="none", choices=COMPRESSION_METHODS),
    poll_interval=dict(type="float", default=0.5),
    convergence_watch=dict(type="bool", default=True),
    # placement (fragment: placement)
    memory_headroom=dict(type="int", default=1024),
    memory_overcommit=dict(type="float", default=1.0),
    cpu_overcommit=dict(type="float", default=4.0),
    anti_affinity=dict(type="dict", default={}),
    priority=dict(type="dict", default={}),
    pinned=dict(type="list", elements="str", default=[]),
    # move limits (fragment: move_limits)
    limits=dict(type="dict", default={}),
    vm_timeout=dict(type="int", default=300),
    max_attempts=dict(type="int", default=3),
    allow_xbzrle=dict(type="bool", default=False),
    allow_auto_converge=dict(type="bool", default=True),
    allow_postcopy=dict(type="bool", default=False),
    allow_suspend=dict(type="bool", default=False),
    on_failure=dict(type="str", default="stop", choices=["stop", "continue"]),
    allow_cold_move=dict(type="bool", default=False),
    cold_shutdown_timeout=dict(type="int", default=120),
    cold_move_force=dict(type="bool", default=False),
    overall_timeout=dict(type="int"),
    # measurement (fragment: measurement)
    link_bandwidth=dict(type="dict", default={}),
    profile_seconds=dict(type="int", default=1),
)


def pick(*names: str) -> Dict[str, Dict[str, Any]]:
    """Fresh copies of the named shared options (a module may add to its own spec without touching these)."""
    return {n: copy.deepcopy(OPTIONS[n]) for n in names}


CONNECTION = pick("uri")
STORAGE = pick("shared_pools", "copy_storage", "unsafe")
MIGRATION_TUNING = pick("tls", "bandwidth", "max_downtime", "downtime_steps", "parallel_connections", "compression",
                        "poll_interval", "convergence_watch")
# What the estimates of a preview read (plan_evacuation, migration_check): the same defaults as the move.
ESTIMATE = pick("bandwidth", "max_downtime")
PLACEMENT = pick("memory_headroom", "memory_overcommit", "cpu_overcommit", "anti_affinity", "priority", "pinned")
MOVE_LIMITS = pick("limits", "vm_timeout", "max_attempts", "allow_xbzrle", "allow_auto_converge", "allow_postcopy",
                   "allow_suspend", "on_failure", "allow_cold_move", "cold_shutdown_timeout", "cold_move_force", "overall_timeout")
MEASUREMENT = pick("link_bandwidth", "profile_seconds")
