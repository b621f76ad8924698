# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The attributes every module shares; a module adds its own support level and what check and diff mode do."""

    DOCUMENTATION = r'''
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying anything.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
  platform:
    support: full
    platforms: posix
    description: Runs on any POSIX host with what the module needs (libvirt-python, for the modules that open
      libvirt URIs); usually the controller.
'''

    ACTION = r'''
attributes:
  action:
    support: full
    description: The action plugin runs the work on the controller when the connection is local, and prints
      progress while it runs.
'''
