# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fence record of a host: written before any of its VMs starts elsewhere, read by the guard hook on every
host (which refuses every start on the fenced host while it exists), removed only after failback.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.files import read_text, write_atomic


RECORD_MODE = 0o644  # the guard hook on every host reads it


def record_path(directory: str, host: str) -> str:
    return os.path.join(directory, f"{host}.fenced")


def read_record(directory: str, host: str) -> Optional[Dict[str, Any]]:
    text = read_text(record_path(directory, host))
    return json.loads(text) if text else None


def write_record(directory: str, host: str, record: Dict[str, Any]) -> None:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    write_atomic(record_path(directory, host), json.dumps(record, indent=1, sort_keys=True) + "\n", RECORD_MODE)
