# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options shared by every module that talks to one hypervisor."""

    DOCUMENTATION = r'''
options:
  uri:
    description:
      - libvirt connection URI of the hypervisor, for example C(qemu:///system) when the module runs on the
        hypervisor itself, or C(qemu+tls://hv1.example.com/system) from a controller.
      - Passwords embedded in the URI are redacted from all output.
    type: str
    default: qemu:///system
requirements:
  - libvirt-python >= 9.0 (C(pip install libvirt-python) or Debian's C(python3-libvirt))
'''
