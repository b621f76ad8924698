"""Passwords in URIs: redacted in messages."""

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.redaction import redact_uri


@pytest.mark.parametrize("uri,redacted", [
    ("qemu+ssh://admin:s3cret@hv1/system", "qemu+ssh://admin:********@hv1/system"),
    ("qemu+tcp://hv1/system?password=hunter2&x=1", "qemu+tcp://hv1/system?password=********&x=1"),
    ("qemu+tls://hv1/system", "qemu+tls://hv1/system"),
    ("qemu:///system", "qemu:///system"),
    (None, None),
])
def test_redact_uri(uri, redacted):
    assert redact_uri(uri) == redacted
