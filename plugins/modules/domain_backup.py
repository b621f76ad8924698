#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: domain_backup
short_description: Save every VM's persistent definition, placement and home host to a backup directory
version_added: 0.1.0
description:
  - Reads every hypervisor of O(uris) and writes, under O(path), one C(<vm>.xml) per persistently defined VM
    (its inactive definition, as C(virsh dumpxml --inactive) gives it) and C(index.json) - for each VM its
    UUID, the hosts it is defined and running on, its state, its home host and the checksum of its definition.
  - Writes atomically (a temporary file renamed over the old one) and only what changed, so a repeated run is
    C(changed=false); C(--diff) shows the changed index entries and definitions. Definitions of VMs no longer
    defined anywhere are kept (moved to C(removed/)), never silently dropped.
  - A VM defined on more than one host is reported in RV(defined_twice) (and fails the task with
    O(fail_on_defined_twice)), since restoring from such a backup could start it twice.
  - Secrets in definitions (graphics passwords) are not saved; C(VIR_DOMAIN_XML_SECURE) is never requested.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: Reports what would change; writes nothing.
  diff_mode:
    support: full
    description: Index entries and definitions before and after.
options:
  uris:
    description: libvirt URIs of every hypervisor to back up.
    type: list
    elements: str
    required: true
  path:
    description: Backup directory (created if missing) - on the controller, or on storage every host sees.
    type: path
    required: true
  fail_on_defined_twice:
    description: Fail when a VM is persistently defined on more than one host (the backup is still written).
    type: bool
    default: true
requirements:
  - libvirt-python >= 9.0
'''

EXAMPLES = r'''
- name: Back up the fleet's definitions before maintenance
  fleetmaint.libvirt.domain_backup:
    uris: "{{ groups['hypervisors'] | map('extract', hostvars, 'fleetmaint_libvirt_uri') | list }}"
    path: /srv/fleetmaint/definitions
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
vms:
  description: Per VM name - uuid, defined_on, running_on, state, home_host, autostart, sha256 of the saved
    definition.
  returned: always
  type: dict
written:
  description: VMs whose definition file was (or in check mode would be) written.
  returned: always
  type: list
  elements: str
removed:
  description: VMs no longer defined anywhere; their saved definition was moved to C(removed/).
  returned: always
  type: list
  elements: str
defined_twice:
  description: VMs persistently defined on more than one host, with the hosts.
  returned: always
  type: dict
path:
  description: The backup directory.
  returned: always
  type: str
'''

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import connection, libvirt
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import (
    fail_from_exception, require_libvirt,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.files import read_text, write_atomic
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


def main() -> None:
    module = AnsibleModule(argument_spec=dict(uris=dict(type="list", elements="str", required=True),
                                              path=dict(type="path", required=True),
                                              fail_on_defined_twice=dict(type="bool", default=True)),
                           supports_check_mode=True)
    require_libvirt(module)
    path = module.params["path"]
    try:
        vms = gather(module.params["uris"])
    except Exception as exc:  # pylint: disable=broad-except
        fail_from_exception(module, exc, changed=False)
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
    if changed and not module.check_mode:
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
            module.fail_json(msg=f"cannot write the backup in {path}: {exc}", changed=False)
    result = dict(changed=changed, vms=index, written=written, removed=removed, defined_twice=twice, path=path,
                  diff=diffs)
    if twice and module.params["fail_on_defined_twice"]:
        module.fail_json(msg="defined on more than one host (restoring could start them twice): " + "; ".join(
            f"{n} on {', '.join(h)}" for n, h in sorted(twice.items())), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
