"""Host jobs: their limits are validated before anything is read."""

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import host_jobs as hj
from ansible_collections.fleetmaint.libvirt.plugins.module_utils.errors import FleetmaintError


def params(**kw):
    p = {k: v.get("default") for k, v in hj.EVACUATE_SPEC.items()}
    p.update(uris=["test:///default"], host="x")
    p.update(kw)
    return p


def test_limits_default_and_validation():
    assert hj._limits(params()) == {"per_source": 2, "per_destination": 2, "fleet": 4}  # pylint: disable=protected-access
    assert hj._limits(params(limits={"fleet": 8}))["fleet"] == 8  # pylint: disable=protected-access
    for bad in ({"fleet": 0}, {"per_host": 2}):
        with pytest.raises(FleetmaintError, match="invalid limits"):
            hj._limits(params(limits=bad))  # pylint: disable=protected-access
