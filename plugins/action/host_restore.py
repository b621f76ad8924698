# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for host_restore: run on the controller and print progress (see plugin_utils.controller_run)."""

from __future__ import annotations

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.host_jobs import RESTORE_SPEC, restore_host
from ansible_collections.fleetmaint.libvirt.plugins.plugin_utils.controller_run import ControllerRunAction


class ActionModule(ControllerRunAction):
    module_name = "fleetmaint.libvirt.host_restore"
    argument_spec = RESTORE_SPEC

    def engine(self, params, check_mode, progress):
        return restore_host(params, check_mode=check_mode, progress=progress)
