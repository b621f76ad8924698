# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure inspection of libvirt XML: domains, host capabilities, pools, and our metadata.

No libvirt or Ansible imports: everything here takes XML text and returns plain data,
so it is unit-tested on recorded XML and shared by modules and plugins.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterable, List, Optional

# Our own data on a VM lives in the domain's <metadata> under this namespace.
# It travels with the domain through migrations and survives the controller.
METADATA_NS = "https://github.com/fleetmaint/libvirt/xmlns/1"
METADATA_PREFIX = "fleetmaint"
METADATA_ROOT = "instance"

# Pool types whose storage every host of a fleet sees: only memory has to move.
SHARED_POOL_TYPES = frozenset(["netfs", "rbd", "gluster", "iscsi", "iscsi-direct", "sheepdog", "vstorage"])

DOMAIN_STATES = {
    0: "nostate", 1: "running", 2: "blocked", 3: "paused",
    4: "shutdown", 5: "shutoff", 6: "crashed", 7: "pmsuspended",
}


class XMLInspectError(ValueError):
    """The XML could not be parsed or lacks what is needed."""


def _parse(xml: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise XMLInspectError(f"cannot parse {what} XML: {exc}") from exc


def _int(text: Optional[str], default: int = 0) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def memory_to_mib(value: Optional[str], unit: Optional[str]) -> int:
    """Convert a libvirt memory element (default unit KiB) to MiB."""
    factors = {"b": 1 / 1048576, "bytes": 1 / 1048576, "k": 1 / 1024, "kib": 1 / 1024, "kb": 1000 / 1048576,
               "m": 1, "mib": 1, "mb": 1e6 / 1048576, "g": 1024, "gib": 1024, "gb": 1e9 / 1048576,
               "t": 1048576, "tib": 1048576, "tb": 1e12 / 1048576}
    return int(round(_int(value) * factors.get((unit or "KiB").lower(), 1 / 1024)))


def version_string(number: int) -> str:
    """libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release."""
    return f"{number // 1000000}.{(number // 1000) % 1000}.{number % 1000}"


# --------------------------------------------------------------------------- domain
def parse_domain(xml: str) -> Dict[str, Any]:
    """Everything migration work needs to know about a domain definition."""
    root = _parse(xml, "domain")
    if root.tag != "domain":
        raise XMLInspectError(f"expected a <domain> document, got <{root.tag}>")
    mem = root.find("memory")
    cur = root.find("currentMemory")
    os_type = root.find("os/type")
    cpu = root.find("cpu")
    return {
        "name": root.findtext("name"),
        "uuid": root.findtext("uuid"),
        "virt_type": root.get("type"),
        "memory_mib": memory_to_mib(mem.text if mem is not None else None,
                                    mem.get("unit") if mem is not None else None),
        "current_memory_mib": memory_to_mib(cur.text, cur.get("unit")) if cur is not None else None,
        "vcpus": _int(root.findtext("vcpu"), 1),
        "arch": os_type.get("arch") if os_type is not None else None,
        "machine": os_type.get("machine") if os_type is not None else None,
        "emulator": root.findtext("devices/emulator"),
        "cpu": parse_domain_cpu(cpu),
        "disks": parse_disks(root),
        "interfaces": parse_interfaces(root),
        "hostdevs": parse_hostdevs(root),
        "home_host": read_home_host(root),
        "arrived_by": read_arrival(root),
    }


def parse_domain_cpu(cpu: Optional[ET.Element]) -> Dict[str, Any]:
    if cpu is None:
        return {"mode": None, "model": None, "features": []}
    model = cpu.find("model")
    return {
        "mode": cpu.get("mode", "custom"),
        "match": cpu.get("match"),
        "model": model.text if model is not None else None,
        "features": [{"name": f.get("name"), "policy": f.get("policy", "require")} for f in cpu.findall("feature")],
    }


def parse_disks(root: ET.Element) -> List[Dict[str, Any]]:
    disks = []
    for d in root.findall("devices/disk"):
        src = d.find("source")
        drv = d.find("driver")
        tgt = d.find("target")
        dtype = d.get("type", "file")
        entry: Dict[str, Any] = {
            "target": tgt.get("dev") if tgt is not None else None,
            "device": d.get("device", "disk"),
            "type": dtype,
            "format": drv.get("type") if drv is not None else None,
            "readonly": d.find("readonly") is not None,
            "shareable": d.find("shareable") is not None,
            "path": None, "pool": None, "volume": None, "protocol": None,
        }
        if src is not None:
            if dtype == "file":
                entry["path"] = src.get("file")
            elif dtype == "block":
                entry["path"] = src.get("dev")
            elif dtype == "dir":
                entry["path"] = src.get("dir")
            elif dtype == "volume":
                entry["pool"], entry["volume"] = src.get("pool"), src.get("volume")
            elif dtype == "network":
                entry["protocol"] = src.get("protocol")
                entry["path"] = src.get("name")
        disks.append(entry)
    return disks


def parse_interfaces(root: ET.Element) -> List[Dict[str, Any]]:
    out = []
    for i in root.findall("devices/interface"):
        src = i.find("source")
        mac = i.find("mac")
        model = i.find("model")
        itype = i.get("type")
        src_attr = src.attrib if src is not None else {}
        # A running domain's live XML turns type='network' into type='bridge' but keeps
        # the network name on <source>: the network is what the destination must have.
        if src_attr.get("network"):
            itype = "network"
        out.append({
            "type": itype,
            "network": src_attr.get("network"),
            "bridge": src_attr.get("bridge"),
            "dev": src_attr.get("dev") if itype == "direct" else None,
            "mac": mac.get("address") if mac is not None else None,
            "model": model.get("type") if model is not None else None,
        })
    return out


def parse_hostdevs(root: ET.Element) -> List[Dict[str, Any]]:
    """Devices that tie a VM to its host: passthrough PCI/USB/SCSI/mdev."""
    out = []
    for h in root.findall("devices/hostdev"):
        addr = h.find("source/address")
        vendor = h.find("source/vendor")
        product = h.find("source/product")
        out.append({
            "type": h.get("type"),
            "mode": h.get("mode", "subsystem"),
            "address": dict(addr.attrib) if addr is not None else {},
            "vendor": vendor.get("id") if vendor is not None else None,
            "product": product.get("id") if product is not None else None,
        })
    return out


def read_home_host(root_or_xml: Any) -> Optional[str]:
    """The home host recorded in our metadata, or None."""
    root = _parse(root_or_xml, "domain") if isinstance(root_or_xml, str) else root_or_xml
    if root.tag != "domain":
        node = root if root.tag == f"{{{METADATA_NS}}}{METADATA_ROOT}" else None
    else:
        node = root.find(f"metadata/{{{METADATA_NS}}}{METADATA_ROOT}")
    if node is None:
        return None
    home = node.findtext(f"{{{METADATA_NS}}}home")
    return home.strip() if home else None


def read_arrival(root: ET.Element) -> Optional[str]:
    """How the running VM came to its host, as live_migrate recorded it in the live metadata ("migration"),
    or None. It is written to the live definition only, so a fresh start of the VM forgets it."""
    node = root.find(f"metadata/{{{METADATA_NS}}}{METADATA_ROOT}/{{{METADATA_NS}}}arrived")
    return node.get("how") if node is not None else None


def build_metadata(home_host: str, arrived: Optional[str] = None) -> str:
    """The XML fragment for virDomainSetMetadata (the namespace prefix is applied by libvirt)."""
    root = ET.Element(METADATA_ROOT)
    ET.SubElement(root, "home").text = home_host
    if arrived:
        ET.SubElement(root, "arrived", how=arrived)
    return ET.tostring(root, encoding="unicode")


# ------------------------------------------------------------------ capabilities
def parse_capabilities(xml: str) -> Dict[str, Any]:
    """Host CPU and topology from virConnectGetCapabilities."""
    root = _parse(xml, "capabilities")
    cpu = root.find("host/cpu")
    topo = cpu.find("topology") if cpu is not None else None
    counter = cpu.find("counter") if cpu is not None else None
    migration = root.find("host/migration_features")
    transports = [t.text for t in root.findall("host/migration_features/uri_transports/uri_transport")]
    guests = []
    for g in root.findall("guest"):
        arch = g.find("arch")
        if arch is None:
            continue
        machines = sorted({m.text for m in arch.findall("machine") if m.text} |
                          {m.get("canonical") for m in arch.findall("machine") if m.get("canonical")})
        guests.append({
            "os_type": g.findtext("os_type"),
            "arch": arch.get("name"),
            "emulator": arch.findtext("emulator"),
            "machines": machines,
            "domain_types": sorted({d.get("type") for d in arch.findall("domain")}),
        })
    return {
        "uuid": root.findtext("host/uuid"),
        "cpu": {
            "arch": cpu.findtext("arch") if cpu is not None else None,
            "model": cpu.findtext("model") if cpu is not None else None,
            "vendor": cpu.findtext("vendor") if cpu is not None else None,
            "features": sorted(f.get("name") for f in cpu.findall("feature")) if cpu is not None else [],
            "topology": {k: _int(topo.get(k), 1) for k in ("sockets", "dies", "cores", "threads")}
            if topo is not None else {},
            "tsc_frequency": _int(counter.get("frequency")) if counter is not None else None,
        },
        "live_migration": migration is not None and migration.find("live") is not None,
        "migration_transports": transports,
        "guests": guests,
    }


# ------------------------------------------------------------------------ pools
def parse_pool(xml: str) -> Dict[str, Any]:
    root = _parse(xml, "pool")
    return {
        "name": root.findtext("name"),
        "type": root.get("type"),
        "path": root.findtext("target/path"),
    }


def classify_storage(disk: Dict[str, Any], pools: Iterable[Dict[str, Any]],
                     shared_pools: Iterable[str] = ()) -> Dict[str, Any]:
    """Find a disk's pool and say whether it is on shared or local storage.

    A pool is shared when its type is a network or cluster type, or when the operator
    declares it shared (a directory on a cluster filesystem that libvirt cannot detect).
    A disk in no known pool is ``unknown``: callers treat that as local.
    """
    shared_names = set(shared_pools)
    pools = list(pools)
    pool = None
    if disk.get("pool"):
        pool = next((p for p in pools if p["name"] == disk["pool"]), None)
    elif disk.get("path") and disk.get("type") in ("file", "block", "dir"):
        parent = os.path.dirname(os.path.normpath(disk["path"]))
        pool = next((p for p in pools if p.get("path") and os.path.normpath(p["path"]) == parent), None)
    if disk.get("type") == "network":
        storage = "shared"
    elif pool is None:
        storage = "unknown"
    elif pool["name"] in shared_names or pool.get("type") in SHARED_POOL_TYPES:
        storage = "shared"
    else:
        storage = "local"
    return {"pool": pool["name"] if pool else disk.get("pool"), "storage": storage}
