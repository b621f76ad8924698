# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for choosing VMs from facts: select_vms (common selections) and jmespath (your own)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.migration_rules import storage_kind

try:
    import jmespath

    HAS_JMESPATH = True
except ImportError:  # pragma: no cover - a declared requirement
    HAS_JMESPATH = False


def _domains(data):
    """Domains from a hypervisor_info result, a list of them (a loop's results), or a list of domains."""
    if isinstance(data, dict):
        if "results" in data:
            return _domains(data["results"])
        host = (data.get("host") or {}).get("hostname")
        return [dict(d, hypervisor=d.get("hypervisor", host)) for d in data.get("domains") or []]
    if isinstance(data, list):
        out = []
        for item in data:
            out += _domains(item) if isinstance(item, dict) and "domains" in item else [item]
        return out
    raise AnsibleFilterError(f"select_vms: expected hypervisor_info results or a list of domains, got {type(data).__name__}")


def _storage(d):
    return storage_kind(d.get("disks") or [])


def select_vms(data, state=None, storage=None, home_host=None, away_from_home=None, persistent=None):
    states = [state] if isinstance(state, str) else state
    storages = [storage] if isinstance(storage, str) else storage
    out = []
    for d in _domains(data):
        if states and d.get("state") not in states:
            continue
        if storages and _storage(d) not in storages:
            continue
        if home_host is not None and d.get("home_host") != home_host:
            continue
        if away_from_home is not None and bool(d.get("home_host") and d.get("home_host") != d.get("hypervisor")) \
                != bool(away_from_home):
            continue
        if persistent is not None and bool(d.get("persistent")) != bool(persistent):
            continue
        out.append(dict(d, storage=_storage(d)))
    return out


def jmespath_query(data, expression):
    if not HAS_JMESPATH:
        raise AnsibleFilterError("the jmespath filter needs the jmespath library (pip install jmespath)")
    try:
        return jmespath.search(expression, data)
    except jmespath.exceptions.JMESPathError as exc:
        raise AnsibleFilterError(f"jmespath: bad expression {expression!r}: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"select_vms": select_vms, "jmespath": jmespath_query}
