# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Passwords never leave the collection: redacted from URIs in messages, masked in Ansible's own output.

Pure: no libvirt or Ansible imports.
"""

from __future__ import annotations

import re
from typing import Any, Optional

# One pattern each for the two places a URI carries a password; redact_uri and uri_secrets both read them.
_PASSWORD_IN_URI = re.compile(r"^(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")
_PASSWORD_IN_QUERY = re.compile(r"(?i)(?P<key>(?:password|passwd|secret)=)(?P<pw>[^&]*)")


def redact_uri(uri: Optional[str]) -> Optional[str]:
    """Hide any password embedded in a URI (user:pass@host or ?password=...)."""
    return redact_text(uri)


# The same two places, anywhere in a text (a libvirt message quoting a URI, a log line).
_PASSWORD_IN_TEXT = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]*)@")


def redact_text(text: Optional[str]) -> Optional[str]:
    """Hide the password of every URI in a text (user:pass@host, or password=... in a query)."""
    if not text:
        return text
    text = _PASSWORD_IN_TEXT.sub(r"\g<scheme>\g<user>:********@", text)
    return _PASSWORD_IN_QUERY.sub(r"\g<key>********", text)


def uri_secrets(value: Any) -> set:
    """The password parts of every URI in a module's parameters (strings, lists and dicts of them)."""
    out: set = set()
    if isinstance(value, str):
        m = _PASSWORD_IN_URI.match(value)
        if m and m.group("pw"):
            out.add(m.group("pw"))
        out.update(q.group("pw") for q in _PASSWORD_IN_QUERY.finditer(value) if q.group("pw"))
    elif isinstance(value, dict):
        for v in value.values():
            out |= uri_secrets(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            out |= uri_secrets(v)
    return out
