# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this VM move to that host? Pure rules over facts, no libvirt or Ansible imports.

The inputs are the plain dicts that ``hypervisor_facts`` returns (a domain, and the
destination's host facts, pools and networks). Each rule yields findings with a stable
``code``, a ``severity`` (``blocker`` or ``warning``) and a message naming what is wrong.
live_migrate runs these before moving anything; migration_check and the planner use the
same rules, so a check and a move never disagree.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

BLOCKER = "blocker"
WARNING = "warning"

# Stable codes: playbooks may match on them.
CODES = (
    "cpu_incompatible", "machine_type_unsupported", "emulator_missing", "disk_not_shared",
    "disk_path_missing", "pool_missing", "network_missing", "insufficient_memory", "hostdev_passthrough",
    "vm_not_running", "vm_paused", "vm_transient", "same_host", "dest_unreachable", "tls_not_configured",
    "vcpus_exceed_host", "compression_unsupported", "storage_unknown", "vm_paused_disks_inactive",
    "older_destination", "postcopy_preempt_unsupported",
)

# QEMU before 10.0 aborts (block.c bdrv_inactivate_recurse: assertion '!(bs->open_flags & BDRV_O_INACTIVE)')
# when it migrates a paused guest whose disks are still inactive, which they are from an incoming migration
# until the guest first runs: the guest is lost. Seen here with QEMU 7.2; QEMU 10.0 moves it (it can
# inactivate nodes that are inactive already).
QEMU_PAUSED_REMIGRATION_FIXED = (10, 0)


def _version(text: Optional[str]) -> Optional[tuple]:
    try:
        return tuple(int(x) for x in str(text).split(".")[:2])
    except (TypeError, ValueError):
        return None


def version_tuple(text: Optional[str]) -> Optional[Tuple[int, int, int]]:
    """A version string (``10.0.13``, ``9.0``) as (major, minor, micro) for numeric comparison, or None when there is
    none or it does not parse (then nothing is compared)."""
    if not text:
        return None
    try:
        parts = [int(x) for x in str(text).split(".")[:3]]
    except ValueError:
        return None
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def stack_of(host: Dict[str, Any]) -> str:
    """A host's stack in words: ``QEMU 10.0.13 / libvirt 11.3.0`` (``?`` for a version not known)."""
    if not host.get("hypervisor_version") and not host.get("libvirt_version"):
        return "versions not known"
    return f"QEMU {host.get('hypervisor_version') or '?'} / libvirt {host.get('libvirt_version') or '?'}"


Stack = Tuple[Optional[Tuple[int, int, int]], Optional[Tuple[int, int, int]]]


def stack_versions(host: Dict[str, Any]) -> Stack:
    """A host's (QEMU, libvirt) versions as tuples, from ``hypervisor_version`` and ``libvirt_version``."""
    return version_tuple(host.get("hypervisor_version")), version_tuple(host.get("libvirt_version"))


def older_versions(source: Stack, dest: Stack) -> bool:
    """The one comparison: True when the destination's QEMU or libvirt is older than the source's; a version either
    side does not know compares as not older."""
    return any(s is not None and d is not None and d < s for s, d in zip(source, dest))


def older_stack(source: Dict[str, Any], dest: Dict[str, Any]) -> bool:
    """True when the destination host's QEMU (``hypervisor_version``) or libvirt (``libvirt_version``) is older than
    the source host's (see older_versions)."""
    return older_versions(stack_versions(source), stack_versions(dest))


# Devices whose content is the guest's own data (not read-only media): the one local-disk rule.
DATA_DISK_DEVICES = ("disk", "lun")


def is_local_disk(disk: Dict[str, Any], storage: Optional[str] = None) -> bool:
    """A disk or LUN whose storage is not shared: it lives on its host only, so a live move must copy it, a cold
    move cannot take the VM, and a disaster-recovery restart elsewhere cannot run it. ``storage``: the disk's
    classification (``shared``, ``local``, ``unknown``) when the dict does not carry it."""
    return disk.get("device", "disk") in DATA_DISK_DEVICES and (storage or disk.get("storage", "unknown")) != "shared"


def storage_kind(disks: List[Dict[str, Any]]) -> str:
    """A VM's storage in one word, by the same rule: ``none`` (no data disk), ``shared``, ``local`` or ``mixed``."""
    kinds = {"local" if is_local_disk(d) else "shared" for d in disks if d.get("device", "disk") in DATA_DISK_DEVICES}
    if not kinds:
        return "none"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def same_host(name: str, source: Dict[str, Any], dest: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The ``same_host`` blocker when source and destination are one host (same host UUID or hostname).

    live_migrate asks this before it looks for the VM on both ends: on one host the VM is found "on both"."""
    if source.get("uuid") and source.get("uuid") == dest.get("uuid") or source.get("hostname") == dest.get("hostname"):
        return finding("same_host", BLOCKER, f"{name}: source and destination are the same host "
                       f"({dest.get('hostname')})", host=dest.get("hostname"))
    return None


def paused_move_risk(vm: Dict[str, Any], source: Dict[str, Any]) -> Optional[str]:
    """Why QEMU on ``source`` cannot move this paused VM safely, or None when it can.

    From facts only: the VM is paused, has disks, its vCPUs have not run in this QEMU process, it arrived
    by migration (or nothing says it was started here), and the source's QEMU is older than the fix."""
    if vm.get("state") != "paused" or not any(d.get("path") or d.get("type") == "network"
                                              for d in vm.get("disks", [])):
        return None
    if vm.get("vcpu_time_ns") != 0 or vm.get("arrived_by") == "start":
        return None  # it ran here (a resume activates its disks), or it was started here: disks are active
    if str(source.get("hypervisor", "QEMU")).upper() != "QEMU":
        return None
    ver = _version(source.get("hypervisor_version"))
    if ver is not None and ver >= QEMU_PAUSED_REMIGRATION_FIXED:
        return None
    how = ("it arrived by migration and has not run since" if vm.get("arrived_by") == "migration"
           else "it has not run since its QEMU process started there, and nothing says it was not by migration")
    return (f"{vm['name']} is paused on {source.get('hostname')} and {how}, so QEMU still holds its disks "
            f"inactive; QEMU {source.get('hypervisor_version') or '(version unknown)'} there crashes such a guest "
            f"when it is migrated again (fixed in QEMU {'.'.join(map(str, QEMU_PAUSED_REMIGRATION_FIXED))}). "
            f"Resume it first (virsh resume {vm['name']}) and it can move, or leave it on "
            f"{source.get('hostname')}")


def finding(code: str, severity: str, message: str, **detail: Any) -> Dict[str, Any]:
    if code not in CODES:
        raise ValueError(f"unknown finding code {code}")
    return {"code": code, "severity": severity, "message": message, "detail": detail}


def machine_offered(vm: Dict[str, Any], dest: Dict[str, Any]) -> Optional[bool]:
    """Does ``dest`` offer the VM's machine type for its architecture and domain type? None when not known (no
    machine type, or no capabilities). The same reading as check_move's machine rule."""
    if not vm.get("machine") or dest.get("guests") is None:
        return None
    arch, vtype = vm.get("arch"), vm.get("virt_type") or "kvm"
    return any(vm["machine"] in g.get("machines", []) for g in dest["guests"]
               if (not arch or g.get("arch") == arch) and vtype in g.get("domain_types", []))


def _pool_for_path(path: str, pools: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    import os

    parent = os.path.dirname(os.path.normpath(path))
    return next((p for p in pools if p.get("path") and os.path.normpath(p["path"]) == parent), None)


def check_move(vm: Dict[str, Any], source: Dict[str, Any], dest: Dict[str, Any],
               dest_pools: List[Dict[str, Any]], dest_networks: List[Dict[str, Any]],
               copy_storage: str = "none", tls: bool = False, dest_tls: Optional[Dict[str, Any]] = None,
               memory_headroom_mib: int = 256, cpu_comparison: Optional[Dict[str, Any]] = None,
               compression: Optional[str] = None, compression_accepted: Optional[List[str]] = None,
               live: bool = True, dest_compression_accepted: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """All findings for moving ``vm`` from ``source`` to ``dest`` (host facts dicts).

    ``compression_accepted`` / ``dest_compression_accepted``: the compression methods libvirt accepts on the source /
    destination (probed), each None when not known. A destination whose QEMU or libvirt is older than the source's is
    ``older_destination``: a warning when the VM's machine type is offered there, a blocker when it is not."""
    out: List[Dict[str, Any]] = []
    name = vm["name"]

    # --- where and in what state
    same = same_host(name, source, dest)
    if same:
        out.append(same)
    state = vm.get("state")
    if live and state not in ("running", "paused"):
        out.append(finding("vm_not_running", BLOCKER, f"{name} is {state} on {source.get('hostname')}: "
                           "only a running or paused VM can be live-migrated", state=state))
    elif state == "paused":
        risk = paused_move_risk(vm, source)
        if risk:
            out.append(finding("vm_paused_disks_inactive", BLOCKER, risk, state=state,
                               qemu=source.get("hypervisor_version"), arrived_by=vm.get("arrived_by")))
        else:
            out.append(finding("vm_paused", WARNING, f"{name} is paused; it will arrive paused", state=state))
    if not vm.get("persistent", True):
        out.append(finding("vm_transient", WARNING, f"{name} is transient on {source.get('hostname')}; "
                           "a persistent move defines it on the destination"))

    # --- devices that pin the VM
    for hd in vm.get("hostdevs", []):
        out.append(finding("hostdev_passthrough", BLOCKER, f"{name} has a passthrough {hd.get('type')} device "
                           f"{hd.get('address') or hd.get('vendor') or ''} that ties it to "
                           f"{source.get('hostname')}", device=hd))

    # --- emulator, machine type, CPU
    guests = [g for g in dest.get("guests", []) if g.get("arch") == vm.get("arch", "x86_64")] \
        if vm.get("arch") else dest.get("guests", [])
    vtype = vm.get("virt_type") or "kvm"
    older = older_stack(source, dest)
    usable: List[Dict[str, Any]] = []
    if dest.get("guests") is not None:
        usable = [g for g in guests if vtype in g.get("domain_types", [])]
        if not usable:
            out.append(finding("emulator_missing", BLOCKER, f"{dest.get('hostname')} has no emulator for "
                               f"{vm.get('arch') or 'this architecture'} with domain type {vtype}",
                               arch=vm.get("arch"), virt_type=vtype))
        elif vm.get("machine") and not any(vm["machine"] in g.get("machines", []) for g in usable):
            why = (f" ({dest.get('hostname')} runs {stack_of(dest)}, older than {source.get('hostname')}'s "
                   f"{stack_of(source)}: a VM keeps the machine type it was defined with, and the older QEMU lacks it)"
                   if older else "")
            out.append(finding("machine_type_unsupported", BLOCKER, f"{dest.get('hostname')} does not offer "
                               f"machine type {vm['machine']} that {name} uses{why}", machine=vm["machine"],
                               older_destination=older))
    if older:
        out.append(_older_destination(name, vm.get("machine"), source, dest, usable if dest.get("guests") is not None
                                      else None))
    if cpu_comparison and cpu_comparison.get("compatible") is False:
        out.append(finding("cpu_incompatible", BLOCKER, f"{name}'s CPU cannot run on {dest.get('hostname')}: "
                           f"{cpu_comparison.get('reason', 'incompatible')}", **cpu_comparison))
    dest_cpus = (dest.get("cpu") or {}).get("count")
    if dest_cpus and vm.get("vcpus", 0) > dest_cpus:
        out.append(finding("vcpus_exceed_host", BLOCKER, f"{name} has {vm['vcpus']} vCPUs, "
                           f"{dest.get('hostname')} only {dest_cpus} CPUs", vcpus=vm["vcpus"], host_cpus=dest_cpus))

    # --- memory
    avail = dest.get("memory_available_mib", dest.get("memory_free_mib"))
    need = vm.get("memory_mib", 0) + memory_headroom_mib
    if avail is not None and need > avail:
        out.append(finding("insufficient_memory", BLOCKER, f"{dest.get('hostname')} has {avail} MiB available; "
                           f"{name} needs {vm.get('memory_mib')} MiB plus {memory_headroom_mib} MiB headroom",
                           available_mib=avail, needed_mib=need))

    # --- networks
    active_nets = {n["name"] for n in dest_networks if n.get("active")}
    all_nets = {n["name"] for n in dest_networks}
    for iface in vm.get("interfaces", []):
        net = iface.get("network")
        if net and net not in active_nets:
            why = "is defined but not active" if net in all_nets else "does not exist"
            out.append(finding("network_missing", BLOCKER, f"network '{net}' of {name} ({iface.get('mac')}) "
                               f"{why} on {dest.get('hostname')}", network=net))

    # --- disks
    active_pools = [p for p in dest_pools if p.get("active")]
    for disk in vm.get("disks", []):
        if disk.get("device") in ("cdrom", "floppy") and not disk.get("path"):
            continue
        target = disk.get("target")
        storage = disk.get("storage", "unknown")
        if disk.get("readonly") and disk.get("device") in ("cdrom", "floppy"):
            if disk.get("path") and not _pool_for_path(disk["path"], active_pools):
                out.append(finding("disk_path_missing", WARNING, f"{name}'s {disk.get('device')} {target} "
                                   f"({disk['path']}) is in no pool on {dest.get('hostname')}; the path must "
                                   "exist there", target=target, path=disk["path"]))
            continue
        if storage == "shared":
            if disk.get("type") == "network":
                continue
            if disk.get("pool") and disk.get("type") == "volume":
                if not any(p["name"] == disk["pool"] for p in active_pools):
                    out.append(finding("pool_missing", BLOCKER, f"{name}'s disk {target} is in pool "
                                       f"'{disk['pool']}', which {dest.get('hostname')} does not have active",
                                       target=target, pool=disk["pool"]))
            elif disk.get("path") and not _pool_for_path(disk["path"], active_pools):
                out.append(finding("disk_path_missing", BLOCKER, f"{name}'s disk {target} ({disk['path']}) is "
                                   f"on shared storage that {dest.get('hostname')} does not have as a pool",
                                   target=target, path=disk.get("path")))
            continue
        # local or unknown: the disk must be copied
        if copy_storage == "none":
            sev_code = "disk_not_shared" if storage == "local" else "storage_unknown"
            out.append(finding(sev_code, BLOCKER, f"{name}'s disk {target} ({disk.get('path')}) is on "
                               f"{storage} storage of {source.get('hostname')}: set copy_storage to copy it, "
                               "or declare its pool shared", target=target, path=disk.get("path")))
            continue
        out.append(finding("disk_not_shared", WARNING, f"{name}'s disk {target} will be copied "
                           f"({copy_storage})", target=target, path=disk.get("path")))
        pool = disk.get("pool")
        if not pool:
            out.append(finding("pool_missing", BLOCKER, f"{name}'s disk {target} ({disk.get('path')}) is in no "
                               f"storage pool on {source.get('hostname')}: cannot pre-create it on the "
                               "destination", target=target))
        elif not any(p["name"] == pool for p in active_pools):
            out.append(finding("pool_missing", BLOCKER, f"{name}'s disk {target} needs pool '{pool}' on "
                               f"{dest.get('hostname')} to copy into; it has none active by that name",
                               target=target, pool=pool))

    # --- transport
    if tls and dest_tls is not None and not dest_tls.get("configured"):
        out.append(finding("tls_not_configured", BLOCKER, f"tls is requested but {dest.get('hostname')} does not "
                           f"look ready for it ({dest_tls.get('how')}: {dest_tls.get('detail')})"))
    for end, accepted in ((source, compression_accepted), (dest, dest_compression_accepted)):
        if compression and compression != "none" and accepted is not None and compression not in accepted:
            out.append(finding("compression_unsupported", BLOCKER, f"compression '{compression}' is not accepted "
                               f"by libvirt on {end.get('hostname')} (accepted: {', '.join(accepted) or 'none'})",
                               compression=compression, host=end.get("hostname"), accepted=list(accepted)))
    return out


def _older_destination(name: str, machine: Optional[str], source: Dict[str, Any], dest: Dict[str, Any],
                       usable: Optional[List[Dict[str, Any]]]) -> Dict[str, Any]:
    """The ``older_destination`` finding: a warning when the VM's machine type is offered on the older stack (the
    move works, and the VM keeps only what the older QEMU has), a blocker when it is not (QEMU there refuses it)."""
    head = (f"{dest.get('hostname')} runs {stack_of(dest)}, older than {source.get('hostname')}'s "
            f"{stack_of(source)}")
    detail = {"machine": machine, "source_qemu": source.get("hypervisor_version"),
              "source_libvirt": source.get("libvirt_version"), "dest_qemu": dest.get("hypervisor_version"),
              "dest_libvirt": dest.get("libvirt_version")}
    if machine and usable is not None:
        offered = any(machine in g.get("machines", []) for g in usable)
        if not offered:
            return finding("older_destination", BLOCKER, f"{head}: machine type {machine} of {name} is not offered "
                           "there", offered=False, **detail)
        return finding("older_destination", WARNING, f"{head}: machine type {machine} of {name} is offered there; "
                       "once it runs there it cannot use what the newer QEMU added", offered=True, **detail)
    return finding("older_destination", WARNING, f"{head}: whether machine type {machine or '(not known)'} of {name} "
                   "is offered there is not known", offered=None, **detail)


def blockers(findings: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [f for f in findings if f["severity"] == BLOCKER]


# Blockers about the VM itself on its source, whatever the destination: such a VM stays where it is.
# An evacuation reports it as staying (its host is not empty); a restore leaves it away from home.
STAYS_CODES = ("vm_paused_disks_inactive",)


def stays(findings: List[Dict[str, Any]]) -> bool:
    """True when every blocker says the VM cannot leave its host now (STAYS_CODES)."""
    bad = blockers(findings)
    return bool(bad) and all(f["code"] in STAYS_CODES for f in bad)
