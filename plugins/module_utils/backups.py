# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Domain definitions saved on the controller for disaster recovery: where each VM is defined and runs, and
its XML, written atomically with an index.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.files import read_text, write_atomic
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import connection, libvirt
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_xml import DOMAIN_STATES, read_home_host


PRIVATE = 0o600  # definitions name storage and networks: not world-readable


def gather(uris):
    """vm -> {uuid, defined_on, running_on, state, home_host, xml} over every host."""
    vms = {}
    for uri in uris:
        with connection(uri, readonly=True) as conn:
            host = conn.getHostname()
            for dom in conn.listAllDomains(0):
                name = dom.name()
                v = vms.setdefault(name, {"uuid": dom.UUIDString(), "defined_on": [], "running_on": [], "state": None,
                                          "home_host": None, "xml": None, "autostart": False})
                if dom.isActive():
                    v["running_on"].append(host)
                    v["state"] = DOMAIN_STATES.get(dom.state()[0], "unknown")
                if dom.isPersistent():
                    v["defined_on"].append(host)
                    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                    v["xml"] = xml
                    v["autostart"] = bool(dom.autostart())
                    v["home_host"] = read_home_host(xml) or v["home_host"]
                    v["state"] = v["state"] or "shutoff"
    return vms


def backup(p: Dict[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    """domain_backup's engine: save every persistent definition and the index (idempotent; diff of each file)."""
    path = p["path"]
    vms = gather(p["uris"])
    index = {}
    written, diffs = [], []
    old_index_text = read_text(os.path.join(path, "index.json"))
    old_index = json.loads(old_index_text or "{}")
    for name, v in sorted(vms.items()):
        if v["xml"] is None:
            continue  # transient: nothing to restore from
        entry = {k: v[k] for k in ("uuid", "defined_on", "running_on", "state", "home_host", "autostart")}
        entry["sha256"] = hashlib.sha256(v["xml"].encode()).hexdigest()
        index[name] = entry
        before = read_text(os.path.join(path, f"{name}.xml"))
        if before != v["xml"]:
            written.append(name)
            diffs.append({"before_header": f"{name}.xml", "after_header": f"{name}.xml",
                          "before": before or "", "after": v["xml"]})
    removed = sorted(set(old_index) - set(index))
    twice = {n: e["defined_on"] for n, e in index.items() if len(e["defined_on"]) > 1}
    new_index_text = json.dumps(index, indent=1, sort_keys=True) + "\n"
    changed = bool(written or removed) or old_index_text != new_index_text
    if changed:
        diffs.insert(0, {"before_header": "index.json", "after_header": "index.json",
                         "before": old_index_text or "", "after": new_index_text})
    if changed and not check_mode:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            for name in written:
                write_atomic(os.path.join(path, f"{name}.xml"), vms[name]["xml"], PRIVATE)
            for name in removed:
                src = os.path.join(path, f"{name}.xml")
                if os.path.exists(src):
                    os.makedirs(os.path.join(path, "removed"), mode=0o700, exist_ok=True)
                    os.replace(src, os.path.join(path, "removed", f"{name}.xml"))
            write_atomic(os.path.join(path, "index.json"), new_index_text, PRIVATE)  # last: the index names only saved files
        except OSError as exc:
            raise FleetmaintError(f"cannot write the backup in {path}: {exc}", step="write backup",
                                  result={"changed": False}) from exc
    result = dict(changed=changed, vms=index, written=written, removed=removed, defined_twice=twice, path=path,
                  diff=diffs)
    if twice and p["fail_on_defined_twice"]:
        raise FleetmaintError("defined on more than one host (restoring could start them twice): " + "; ".join(
            f"{n} on {', '.join(h)}" for n, h in sorted(twice.items())), step="backup", reason="two_copies",
            result=result)
    return result
