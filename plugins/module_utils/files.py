# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files the modules keep on the controller (reports, backups): read if there, replace atomically."""

from __future__ import annotations

import os
import tempfile
from typing import Optional


def read_text(path: str) -> Optional[str]:
    """The file's text, or None when it cannot be read (missing)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Write to a temporary file in the same directory, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
