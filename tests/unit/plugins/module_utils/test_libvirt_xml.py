import xml.etree.ElementTree as ET

import pytest

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import libvirt_xml as lx


def test_parse_inactive_domain_with_every_device_kind(fixture_text):
    d = lx.parse_domain(fixture_text("domain_inactive_mixed.xml"))
    assert d["name"] == "db01"
    assert d["memory_mib"] == 4096
    assert d["current_memory_mib"] == 2048
    assert d["vcpus"] == 4
    assert d["machine"] == "pc-q35-7.2"
    assert d["virt_type"] == "kvm"
    assert d["cpu"]["model"] == "Skylake-Server-IBRS"
    assert {"name": "hle", "policy": "disable"} in d["cpu"]["features"]
    disks = {x["target"]: x for x in d["disks"]}
    assert disks["vda"]["pool"] == "ceph-vms" and disks["vda"]["volume"] == "db01-root"
    assert disks["vdb"]["path"] == "/var/lib/libvirt/images/db01-data.img"
    assert disks["vdc"]["protocol"] == "rbd" and disks["vdc"]["path"] == "rbd/db01-logs"
    assert disks["sda"]["readonly"] is True and disks["sda"]["device"] == "cdrom"
    nets = d["interfaces"]
    assert nets[0]["network"] == "prod" and nets[0]["mac"] == "52:54:00:aa:bb:01"
    assert nets[1]["type"] == "bridge" and nets[1]["bridge"] == "br-storage" and nets[1]["network"] is None
    assert [h["type"] for h in d["hostdevs"]] == ["pci", "usb"]
    assert d["hostdevs"][0]["address"]["bus"] == "0x3b"
    assert d["hostdevs"][1]["vendor"] == "0x0781"
    # Only our namespace counts as the home host, not another application's <home>.
    assert d["home_host"] == "hv7"


def test_parse_live_domain_keeps_network_name(fixture_text):
    d = lx.parse_domain(fixture_text("domain_running_local_disk.xml"))
    assert d["virt_type"] == "qemu"
    assert d["memory_mib"] == 128
    iface = d["interfaces"][0]
    # The live XML says type='bridge'; the network name is still what migration needs.
    assert iface["type"] == "network"
    assert iface["network"] == "lab-net"
    assert iface["bridge"] == "br-lab"
    assert d["disks"][0]["path"].endswith("/images/vm2.img")


def test_home_host_absent_and_metadata_roundtrip():
    assert lx.read_home_host("<domain><name>x</name></domain>") is None
    frag = lx.build_metadata("hv3")
    # libvirt stores the fragment under our namespace; emulate that and read it back.
    el = ET.fromstring(frag)
    ns_el = ET.Element(f"{{{lx.METADATA_NS}}}{el.tag}")
    for child in el:
        ET.SubElement(ns_el, f"{{{lx.METADATA_NS}}}{child.tag}").text = child.text
    assert lx.read_home_host(ns_el) == "hv3"


@pytest.mark.parametrize("value,unit,mib", [
    ("131072", None, 128), ("131072", "KiB", 128), ("2", "GiB", 2048), ("512", "MiB", 512),
    ("1073741824", "bytes", 1024), ("1", "TiB", 1048576),
])
def test_memory_units(value, unit, mib):
    assert lx.memory_to_mib(value, unit) == mib


def test_version_string():
    assert lx.version_string(9000000) == "9.0.0"
    assert lx.version_string(7002022) == "7.2.22"


def test_bad_xml_is_a_clear_error():
    with pytest.raises(lx.XMLInspectError, match="cannot parse domain XML"):
        lx.parse_domain("<domain><name>")
    with pytest.raises(lx.XMLInspectError, match="expected a <domain>"):
        lx.parse_domain("<pool/>")


def test_parse_capabilities(fixture_text):
    caps = lx.parse_capabilities(fixture_text("capabilities_lab_tcg.xml"))
    assert caps["cpu"]["arch"] == "x86_64"
    assert caps["cpu"]["model"]
    assert caps["cpu"]["topology"]["cores"] >= 1
    assert "tcp" in caps["migration_transports"]
    assert caps["live_migration"] is True
    x86 = next(g for g in caps["guests"] if g["arch"] == "x86_64")
    assert "qemu" in x86["domain_types"]
    assert any(m.startswith("pc-i440fx") for m in x86["machines"])


POOLS = [
    {"name": "local", "type": "dir", "path": "/var/lib/libvirt/images"},
    {"name": "vmstore", "type": "dir", "path": "/srv/cluster/vms"},
    {"name": "ceph-vms", "type": "rbd", "path": None},
    {"name": "nfs", "type": "netfs", "path": "/mnt/nfs/"},
]


@pytest.mark.parametrize("disk,expected", [
    ({"type": "file", "path": "/var/lib/libvirt/images/a.img"}, {"pool": "local", "storage": "local"}),
    ({"type": "file", "path": "/srv/cluster/vms/a.qcow2"}, {"pool": "vmstore", "storage": "shared"}),
    ({"type": "file", "path": "/mnt/nfs/a.qcow2"}, {"pool": "nfs", "storage": "shared"}),
    ({"type": "volume", "pool": "ceph-vms", "volume": "a"}, {"pool": "ceph-vms", "storage": "shared"}),
    ({"type": "volume", "pool": "gone", "volume": "a"}, {"pool": "gone", "storage": "unknown"}),
    ({"type": "file", "path": "/somewhere/else.img"}, {"pool": None, "storage": "unknown"}),
    ({"type": "network", "protocol": "rbd", "path": "rbd/a"}, {"pool": None, "storage": "shared"}),
])
def test_classify_storage(disk, expected):
    assert lx.classify_storage(disk, POOLS, shared_pools=["vmstore"]) == expected


def test_parse_pool():
    p = lx.parse_pool("<pool type='dir'><name>local</name><target><path>/var/lib/x</path></target></pool>")
    assert p == {"name": "local", "type": "dir", "path": "/var/lib/x"}
