# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for fleet_rebalance: run on the controller and print progress (see plugin_utils.controller_run)."""

from __future__ import annotations

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.fleet_jobs import REBALANCE_SPEC, rebalance_fleet
from ansible_collections.fleetmaint.libvirt.plugins.plugin_utils.controller_run import ControllerRunAction


class ActionModule(ControllerRunAction):
    module_name = "fleetmaint.libvirt.fleet_rebalance"
    argument_spec = REBALANCE_SPEC

    def engine(self, params, check_mode, progress):
        return rebalance_fleet(params, check_mode=check_mode, progress=progress)
