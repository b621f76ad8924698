# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After a post-copy migration broke: the guest already runs on the destination and cannot go back.

Its memory is split between the hosts, so the only way out is forward: watch until the guest runs on the
destination alone (removing the stale source definition), resuming the post-copy from the source whenever it
sits in 'post-copy failed' (libvirt's post-copy recovery, peer-to-peer moves). Used at the end of a failed
move (``migration_job``) and when a re-run finds a move an earlier run left half done (``finish_interrupted``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.domains import lookup, placement
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError, libvirt_message
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import libvirt
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import parse_domain
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_flags import resume_flags

POSTCOPY_SETTLE_S = 180  # how long a broken post-copy is watched (and resumed) before giving up
POSTCOPY_RESUME_EVERY_S = 10


def postcopy_failed(dom: Any) -> bool:
    """Is this side of a post-copy migration in libvirt's 'post-copy failed' state?"""
    st, reason = dom.state()
    return (st == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED) or \
        (st == libvirt.VIR_DOMAIN_RUNNING and reason == libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED)


def settle_postcopy(p: Dict[str, Any], name: str, sconn: Any, dconn: Any, peer_uri: str,
                    event: Callable[..., None], wait_s: float = POSTCOPY_SETTLE_S) -> str:
    """'completed' when the guest ended on the destination alone (its stale source definition removed),
    'broken' when it did not within wait_s. A source left paused in 'post-copy failed' is resumed as soon as
    the link allows."""
    flags = resume_flags(p)
    deadline = time.monotonic() + wait_s
    last_resume = 0.0
    while True:
        try:
            sdom = lookup(sconn, name, None)
            ddom = lookup(dconn, name, None)
        except libvirt.libvirtError as exc:
            event("settle_error", error=libvirt_message(exc))
            sdom = ddom = None
        if ddom is not None and ddom.isActive() and not postcopy_failed(ddom) and \
                (sdom is None or not sdom.isActive()):
            if sdom is not None and sdom.isPersistent() and ddom.isPersistent():
                sdom.undefine()  # the definition only: the guest and its disks are on the destination
                event("stale_definition_removed", on=sconn.getHostname())
            return "completed"
        if p["p2p"] and sdom is not None and sdom.isActive() and postcopy_failed(sdom) and \
                time.monotonic() - last_resume >= POSTCOPY_RESUME_EVERY_S:
            last_resume = time.monotonic()
            try:
                event("postcopy_resume")
                sdom.migrateToURI3(peer_uri, {}, flags)
            except libvirt.libvirtError as exc:
                event("postcopy_resume_failed", error=libvirt_message(exc))
        if time.monotonic() >= deadline:
            return "broken"
        time.sleep(2)


def finish_interrupted(p: Dict[str, Any], sdom: Any, sconn: Any, dconn: Any, peer_uri: str,
                       result: Dict[str, Any], ctx: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The VM is on both hosts because an earlier migration was interrupted: a post-copy that broke (resume
    it), or a migration that completed but whose source definition stayed (remove it). None otherwise."""
    if sdom.isActive() and not postcopy_failed(sdom):
        return None  # running on the source: a real second copy or a migration in progress - not ours to fix
    ddom = lookup(dconn, sdom.name(), None)
    if not sdom.isActive() and not (ddom.isActive() and ddom.isPersistent()):
        return None

    def event(kind: str, **kw: Any) -> None:
        result["events"].append(dict(event=kind, **kw))

    outcome = settle_postcopy(p, sdom.name(), sconn, dconn, peer_uri, event)
    result.update(vm=sdom.name(), uuid=sdom.UUIDString(), changed=True, placement=placement(sconn, dconn, sdom.name()))
    if outcome != "completed":
        raise FleetmaintError(
            f"{ctx['vm']}: an interrupted post-copy migration from {ctx['source']} to {ctx['destination']} could "
            f"not be resumed within {POSTCOPY_SETTLE_S} s: {ctx['destination']} runs the guest, part of its memory "
            f"is still on {ctx['source']}; keep both, restore the link between them and re-run",
            step="postcopy", result=result, reason="postcopy_unfinished", **ctx)
    result["home_host"] = parse_domain(ddom.XMLDesc(0))["home_host"]
    result["msg"] = (f"{ctx['vm']} finished on {ctx['destination']}: an interrupted migration was completed "
                     f"({', '.join(e['event'] for e in result['events'])})")
    return result
