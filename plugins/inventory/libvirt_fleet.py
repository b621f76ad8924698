# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
name: libvirt_fleet
short_description: Hypervisors of a libvirt fleet and every VM on them, as an inventory
version_added: 0.1.0
description:
  - Reads several hypervisors (libvirt URIs) and adds each as a host of O(hypervisor_group), and each VM as a
    host of O(vm_group) and of C(vms_on_<hypervisor>) (the hypervisor it runs on, or is defined on when it does
    not run).
  - Each VM gets C(fleetmaint_vm) - C(current_host), C(home_host) (recorded in the VM by this collection),
    C(state), C(memory_mib), C(vcpus), C(disks), C(storage) (C(shared), C(local) or C(mixed)), C(persistent),
    C(autostart), C(uuid), C(defined_on), C(running_on) - and C(fleetmaint_current_host),
    C(fleetmaint_home_host), C(fleetmaint_state) for short. Each hypervisor gets C(fleetmaint_libvirt_uri)
    and C(fleetmaint_hypervisor) (hostname, versions, CPU, memory).
  - A hypervisor that does not answer within O(connect_timeout) is a warning, not a failure - it is added to
    O(unreachable_group) and its VMs are simply missing.
  - Supports C(groups), C(keyed_groups) and C(compose) (constructed) and inventory caching. Use it as an AWX
    inventory source by putting the config file in a project (sourced from a project).
  - The configuration file name must end in C(libvirt_fleet.yml) or C(libvirt_fleet.yaml).
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks this file as a source for this plugin.
    required: true
    type: str
    choices: [fleetmaint.libvirt.libvirt_fleet]
  hypervisors:
    description:
      - The hypervisors - each a C(uri) and optionally a C(name) (default - the hostname libvirt reports, or
        the URI's host when it does not answer).
    type: list
    elements: dict
    required: true
  shared_pools:
    description: Storage pools every host sees although libvirt cannot tell (a directory on a cluster filesystem).
    type: list
    elements: str
    default: []
  hypervisor_group:
    description: Group of the hypervisors.
    type: str
    default: hypervisors
  vm_group:
    description: Group of every VM.
    type: str
    default: vms
  unreachable_group:
    description: Group of the hypervisors that did not answer.
    type: str
    default: unreachable_hypervisors
  connect_timeout:
    description: Seconds to wait for each hypervisor.
    type: float
    default: 10
requirements:
  - libvirt-python >= 9.0
'''

EXAMPLES = r'''
# fleet.libvirt_fleet.yml
plugin: fleetmaint.libvirt.libvirt_fleet
hypervisors:
  - {name: hv1, uri: "qemu+tls://hv1.example.com/system"}
  - {name: hv2, uri: "qemu+tls://hv2.example.com/system"}
shared_pools: [cephpool]
keyed_groups:
  - key: fleetmaint_state
    prefix: state
  - key: fleetmaint_vm.storage
    prefix: storage
groups:
  away_from_home: fleetmaint_home_host is not none and fleetmaint_current_host != fleetmaint_home_host
compose:
  ansible_host: fleetmaint_vm.name
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/cache/fleetmaint-inventory
cache_timeout: 300
'''

import re
from urllib.parse import urlparse

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import (
    all_domain_facts, host_facts, pool_facts,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.libvirt_connection import (
    HAS_LIBVIRT, call_with_timeout, open_uri,
)
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import storage_kind

HYPERVISOR_KEYS = ("hostname", "uri", "uuid", "libvirt_version", "hypervisor", "hypervisor_version", "cpu",
                   "memory_total_mib", "memory_free_mib")


def read_hypervisor(uri, shared_pools):
    """One hypervisor's facts and domains (plain data, cacheable)."""
    conn = open_uri(uri, readonly=True)
    try:
        host = host_facts(conn, redact_uri(uri))
        pools = pool_facts(conn, uri, shared_pools)
        return {"host": {k: host[k] for k in HYPERVISOR_KEYS}, "domains": all_domain_facts(conn, uri, pools, shared_pools)}
    finally:
        conn.close()


def storage_of(disks):
    return storage_kind(disks)


def fleet_vms(readings):
    """VM name -> its record across hypervisors (readings: hypervisor name -> read_hypervisor() or None)."""
    vms = {}
    for hv, reading in sorted(readings.items()):
        if not reading:
            continue
        for d in reading["domains"]:
            v = vms.setdefault(d["name"], {"name": d["name"], "uuid": d["uuid"], "running_on": [], "defined_on": [],
                                           "current_host": None})
            if d["active"]:
                v["running_on"].append(hv)
            if d["persistent"]:
                v["defined_on"].append(hv)
            if d["active"] or v["current_host"] is None:
                v.update(current_host=hv, state=d["state"], memory_mib=d["memory_mib"], vcpus=d["vcpus"],
                         persistent=d["persistent"], autostart=d["autostart"], home_host=d["home_host"],
                         disks=[{k: disk.get(k) for k in ("target", "path", "pool", "storage", "format")}
                                for disk in d["disks"]],
                         storage=storage_of(d["disks"]))
    return vms


def safe_group(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "fleetmaint.libvirt.libvirt_fleet"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("libvirt_fleet.yml", "libvirt_fleet.yaml"))

    def _read(self):
        readings, names = {}, {}
        timeout = float(self.get_option("connect_timeout"))
        for i, hv in enumerate(self.get_option("hypervisors")):
            if not isinstance(hv, dict) or not hv.get("uri"):
                raise AnsibleParserError(f"hypervisors[{i}] needs a 'uri' (got {hv!r})")
            uri = hv["uri"]
            try:
                reading = call_with_timeout(lambda u=uri: read_hypervisor(u, self.get_option("shared_pools")), timeout)
                name = hv.get("name") or reading["host"]["hostname"]
            except Exception as exc:  # pylint: disable=broad-except
                name = hv.get("name") or urlparse(uri).hostname or redact_uri(uri)
                self.display.warning(f"libvirt_fleet: hypervisor {name} ({redact_uri(uri)}) did not answer: {exc}; "
                                     f"it is in group '{self.get_option('unreachable_group')}' and its VMs are missing")
                reading = {"host": {"uri": redact_uri(uri)}, "domains": [], "unreachable": str(exc)}
            readings[name] = reading
            names[name] = uri
        return {"readings": readings, "uris": {n: redact_uri(u) for n, u in names.items()}}

    def _populate(self, data):
        hv_group = self.inventory.add_group(self.get_option("hypervisor_group"))
        vm_group = self.inventory.add_group(self.get_option("vm_group"))
        down_group = self.inventory.add_group(self.get_option("unreachable_group"))
        strict = self.get_option("strict")
        live = {}
        for hv, reading in data["readings"].items():
            self.inventory.add_host(hv, group=hv_group)
            self.inventory.set_variable(hv, "fleetmaint_libvirt_uri", data["uris"][hv])
            self.inventory.set_variable(hv, "fleetmaint_hypervisor", reading["host"])
            if reading.get("unreachable"):
                self.inventory.add_host(hv, group=down_group)
                self.inventory.set_variable(hv, "fleetmaint_unreachable", reading["unreachable"])
            else:
                live[hv] = reading
        for name, vm in sorted(fleet_vms(live).items()):
            if name in data["readings"]:
                self.display.warning(f"libvirt_fleet: VM {name} has the name of a hypervisor; skipped")
                continue
            self.inventory.add_host(name, group=vm_group)
            on = self.inventory.add_group(f"vms_on_{safe_group(vm['current_host'])}")
            self.inventory.add_host(name, group=on)
            hostvars = {"fleetmaint_vm": vm, "fleetmaint_current_host": vm["current_host"],
                        "fleetmaint_home_host": vm["home_host"], "fleetmaint_state": vm["state"]}
            for k, v in hostvars.items():
                self.inventory.set_variable(name, k, v)
            self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        if not HAS_LIBVIRT:
            raise AnsibleError("the libvirt_fleet inventory plugin needs libvirt-python (pip install libvirt-python)")
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        data = None
        if use_cache:
            try:
                data = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if data is None:
            data = self._read()
        if update_cache:
            self._cache[cache_key] = data
        self._populate(data)
