#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: hypervisor_info
short_description: Facts about a libvirt hypervisor, its VMs and what it can migrate
version_added: 0.1.0
description:
  - Reads one libvirt hypervisor and returns its identity, versions, CPU, memory, storage pools,
    networks, every domain with the details migration work needs (disks and where they live,
    interfaces, passthrough devices, the home host recorded by this collection), and the host's
    migration capabilities.
  - Compression methods are probed on the host, not assumed from versions. The probe asks libvirt
    to validate each method on a running domain with a peer-to-peer migration to a local socket
    that cannot exist; libvirt rejects unknown methods before connecting, and nothing is migrated.
    Parallel connections, post-copy and auto-converge cannot be probed without a real migration
    and are reported from the libvirt and QEMU versions (see RV(migration.sources)).
  - Read-only apart from that probe; never changes the host.
author:
  - fleetmaint.libvirt contributors (@fleetmaint)
extends_documentation_fragment:
  - fleetmaint.libvirt.connection
  - fleetmaint.libvirt.storage.shared_pools
  - fleetmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode returns the same facts.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
options:
  domains:
    description:
      - Only report these domains (names). Default is every domain on the host.
    type: list
    elements: str
  probe_migration:
    description:
      - Probe which migration compression methods the host accepts. Needs a read-write connection
        and a running domain that has no job in progress; without one the result says it was not probed.
    type: bool
    default: true
notes:
  - Memory figures are in MiB; pool sizes in bytes.
seealso:
  - name: libvirt domain XML format
    description: The source of the disk, interface and hostdev details.
    link: https://libvirt.org/formatdomain.html
'''

EXAMPLES = r'''
- name: Read the hypervisor the task runs on
  fleetmaint.libvirt.hypervisor_info:
  register: hv

- name: Read every hypervisor of the fleet from the controller
  fleetmaint.libvirt.hypervisor_info:
    uri: "qemu+tls://{{ inventory_hostname }}/system"
    shared_pools: [vmstore]
  delegate_to: localhost
  register: hv

- name: Names of running VMs that have passthrough devices (cannot live-migrate)
  ansible.builtin.debug:
    msg: "{{ hv.domains | selectattr('active') | selectattr('hostdevs') | map(attribute='name') | list }}"

- name: VMs running here whose recorded home is another host
  ansible.builtin.debug:
    msg: >-
      {{ hv.domains | selectattr('active') | rejectattr('home_host', 'none')
         | rejectattr('home_host', 'equalto', hv.host.hostname) | map(attribute='name') | list }}
'''

RETURN = r'''
host:
  description: The hypervisor itself.
  returned: success
  type: dict
  contains:
    hostname: {description: "Host name as libvirt reports it; the identity recorded as a VM's home host.", type: str, sample: hv1}
    uri: {description: "The URI used (passwords redacted).", type: str, sample: "qemu+tls://hv1/system"}
    uuid: {description: "Host UUID.", type: str}
    libvirt_version:
      description: libvirt daemon version (major.minor.micro). The move rules compare it between source and
        destination (C(older_destination)).
      type: str
      sample: 9.0.0
    hypervisor: {description: "Hypervisor driver name.", type: str, sample: QEMU}
    hypervisor_version:
      description: QEMU version (major.minor.micro), as the running hypervisor reports it. Compared like
        C(libvirt_version).
      type: str
      sample: 7.2.22
    cpu:
      description: Host CPU model, vendor, arch, features, topology, logical CPU count.
      type: dict
      sample: {arch: x86_64, model: Skylake-Client-IBRS, vendor: Intel, features: [vmx, ssbd], topology: {sockets: 1, dies: 1, cores: 2, threads: 1}, count: 2}
    memory_total_mib: {description: "Physical memory.", type: int}
    memory_free_mib: {description: "Free memory now.", type: int}
    memory_available_mib: {description: "Free memory plus page cache and buffers (what guests could get).", type: int}
    live_migration: {description: "Whether capabilities advertise live migration.", type: bool}
    migration_transports: {description: "URI transports for migration.", type: list, elements: str, sample: [tcp, rdma]}
    guests:
      description: Guest architectures, emulators and machine types the host offers. A VM can move here only if its
        machine type (RV(domains[].machine)) is in C(machines) of an entry of its architecture and domain type.
      type: list
      elements: dict
      contains:
        os_type: {description: "Guest OS type.", type: str, sample: hvm}
        arch: {description: "Guest architecture.", type: str, sample: x86_64}
        emulator: {description: "Emulator binary.", type: str, sample: /usr/bin/qemu-system-x86_64}
        machines:
          description: Machine types, versioned ones and aliases with what they stand for (C(pc) is C(pc-i440fx-7.2)
            on QEMU 7.2, C(pc-i440fx-10.0) on QEMU 10.0), sorted.
          type: list
          elements: str
          sample: [pc, pc-i440fx-7.2, pc-q35-7.2, q35]
        domain_types: {description: "Domain types (kvm, qemu).", type: list, elements: str, sample: [kvm, qemu]}
domains:
  description: Every domain on the host (or those named in O(domains)), sorted by name.
  returned: success
  type: list
  elements: dict
  contains:
    name: {description: "Domain name.", type: str}
    uuid: {description: "Domain UUID.", type: str}
    state: {description: "One of running, paused, shutoff, shutdown, crashed, blocked, pmsuspended, nostate.", type: str}
    active: {description: "Whether it runs (or is paused) here.", type: bool}
    persistent: {description: "Whether it is defined here (false means transient).", type: bool}
    autostart: {description: "Autostart flag.", type: bool}
    memory_mib: {description: "Maximum memory.", type: int}
    vcpus: {description: "vCPU count.", type: int}
    virt_type: {description: "Domain type: kvm or qemu (TCG).", type: str}
    machine: {description: "Machine type.", type: str}
    cpu: {description: "Guest CPU definition: mode, model, features.", type: dict}
    disks:
      description: Disks with target, path, format, pool, and storage (shared, local or unknown when in no pool).
      type: list
      elements: dict
    interfaces: {description: "Interfaces: type, network or bridge, MAC, model.", type: list, elements: dict}
    hostdevs: {description: "Passthrough devices (they pin the VM to this host).", type: list, elements: dict}
    home_host: {description: "The home host recorded in this collection's domain metadata, or null.", type: str}
pools:
  description: Storage pools with type, path, shared flag and sizes in bytes.
  returned: success
  type: list
  elements: dict
networks:
  description: Virtual networks with active and autostart flags.
  returned: success
  type: list
  elements: dict
migration:
  description: Migration capabilities of this host and how each was determined.
  returned: success
  type: dict
  contains:
    compression_methods: {description: "Compression methods libvirt accepted in the probe.", type: list, elements: str, sample: [xbzrle, mt]}
    compression_rejected:
      description: "Methods rejected, with libvirt's message."
      type: dict
      sample: {zstd: "invalid argument: Unsupported compression method 'zstd'"}
    compression_multifd:
      description: "The accepted methods that run in multifd channels, so need parallel migration (they were probed
        with C(VIR_MIGRATE_PARALLEL) and 2 parallel connections, and a move with one of them uses parallel migration)."
      type: list
      elements: str
      sample: [zlib, zstd]
    compression_probe: {description: "Whether the probe ran, with which domain, or why not.", type: dict}
    parallel_connections: {description: "Multifd parallel connections available.", type: bool}
    postcopy: {description: "Post-copy available.", type: bool}
    postcopy_preempt:
      description: "Whether post-copy migrations here run with QEMU's postcopy-preempt (urgent pages on a channel of
        their own): libvirt 9.9 or later and QEMU 8.0 or later. libvirt has no flag for it (it enables it itself
        when both ends have it), so this comes from the versions (C(sources))."
      type: bool
    auto_converge: {description: "Auto-converge available.", type: bool}
    tls: {description: "Whether TLS looks configured (configured, how, detail).", type: dict}
    sources: {description: "For each capability: probe, version or connect.", type: dict}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.hypervisor_facts import hypervisor_info
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.module_runner import run_engine
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.options import CONNECTION, pick


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            **CONNECTION,
            domains=dict(type="list", elements="str"),
            **pick("shared_pools"),
            probe_migration=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run_engine(module, hypervisor_info)


if __name__ == "__main__":
    main()
