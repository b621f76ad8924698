"""libvirt_fleet on libvirt's test:///default driver, with one hypervisor that does not answer."""

import pytest
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.fleetmaint.libvirt.plugins.inventory import libvirt_fleet

pytest.importorskip("libvirt")

try:  # ansible-core >= 2.19 evaluates only expressions it trusts (a config file's are)
    from ansible.template import trust_as_template
except ImportError:  # pragma: no cover
    def trust_as_template(value):
        return value

OPTIONS = {"hypervisors": [{"name": "hv1", "uri": "test:///default"},
                           {"name": "hv9", "uri": "qemu+tcp://127.0.0.1:1/system"}],
           "shared_pools": [], "hypervisor_group": "hypervisors", "vm_group": "vms",
           "unreachable_group": "unreachable_hypervisors", "connect_timeout": 5, "strict": False,
           "compose": {"fleetmaint_is_up": trust_as_template("fleetmaint_state == 'running'")},
           "groups": {"home_unknown": trust_as_template("fleetmaint_home_host is none")},
           "keyed_groups": [{"key": trust_as_template("fleetmaint_state"), "prefix": "state"}], "cache": False}


@pytest.fixture
def plugin():
    p = libvirt_fleet.InventoryModule()
    p.inventory = InventoryData()
    p.templar = Templar(loader=DataLoader())
    p.get_option = OPTIONS.get
    warnings = []
    p.display = type("D", (), {"warning": lambda self, m: warnings.append(m)})()
    p.warnings = warnings
    return p


def test_vms_are_hosts_under_their_hypervisor_and_a_dead_hypervisor_is_a_warning(plugin):
    data = plugin._read()  # pylint: disable=protected-access
    plugin._populate(data)  # pylint: disable=protected-access
    inv = plugin.inventory
    assert set(inv.groups["hypervisors"].get_hosts()) >= {inv.get_host("hv1"), inv.get_host("hv9")}
    assert [h.name for h in inv.groups["unreachable_hypervisors"].get_hosts()] == ["hv9"]
    assert "hv9" in plugin.warnings[0] and "did not answer" in plugin.warnings[0]
    test_vm = inv.get_host("test")
    assert [h.name for h in inv.groups["vms_on_hv1"].get_hosts()] == ["test"]
    v = test_vm.vars
    assert v["fleetmaint_current_host"] == "hv1" and v["fleetmaint_state"] == "running"
    assert v["fleetmaint_vm"]["running_on"] == ["hv1"] and v["fleetmaint_vm"]["memory_mib"] > 0
    assert v["fleetmaint_is_up"] is True, "compose"
    assert "test" in [h.name for h in inv.groups["home_unknown"].get_hosts()], "groups"
    assert "test" in [h.name for h in inv.groups["state_running"].get_hosts()], "keyed_groups"
    assert inv.get_host("hv1").vars["fleetmaint_libvirt_uri"] == "test:///default"


def test_a_vm_on_two_hosts_is_one_host_where_it_runs():
    reading = {"host": {}, "domains": [
        {"name": "a", "uuid": "u", "active": False, "persistent": True, "state": "shutoff", "memory_mib": 1,
         "vcpus": 1, "autostart": False, "home_host": "hv1", "disks": []}]}
    running = {"host": {}, "domains": [dict(reading["domains"][0], active=True, state="running")]}
    vms = libvirt_fleet.fleet_vms({"hv1": reading, "hv2": running})
    assert vms["a"]["current_host"] == "hv2" and vms["a"]["defined_on"] == ["hv1", "hv2"]
    assert vms["a"]["running_on"] == ["hv2"] and vms["a"]["storage"] == "none"


def test_verify_file_wants_the_plugin_suffix(tmp_path):
    ok, bad = tmp_path / "fleet.libvirt_fleet.yml", tmp_path / "fleet.yml"
    ok.write_text("plugin: fleetmaint.libvirt.libvirt_fleet\n")
    bad.write_text("plugin: fleetmaint.libvirt.libvirt_fleet\n")
    p = libvirt_fleet.InventoryModule()
    assert p.verify_file(str(ok)) and not p.verify_file(str(bad))
