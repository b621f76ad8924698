# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for live_migrate: run on the controller and print progress (see plugin_utils.controller_run)."""

from __future__ import annotations

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.live_migration import (
    ARGUMENT_SPEC, MUTUALLY_EXCLUSIVE, REQUIRED_ONE_OF, migrate,
)
from ansible_collections.fleetmaint.libvirt.plugins.plugin_utils.controller_run import ControllerRunAction


class ActionModule(ControllerRunAction):
    module_name = "fleetmaint.libvirt.live_migrate"
    argument_spec = ARGUMENT_SPEC
    validator_kwargs = {"mutually_exclusive": MUTUALLY_EXCLUSIVE, "required_one_of": REQUIRED_ONE_OF}

    def engine(self, params, check_mode, progress):
        return migrate(params, check_mode=check_mode, progress=progress)
