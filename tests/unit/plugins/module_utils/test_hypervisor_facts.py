from ansible_collections.fleetmaint.libvirt.plugins.module_utils import hypervisor_facts as hf


def test_host_facts_from_test_driver(test_conn):
    facts = hf.host_facts(test_conn, "test:///default")
    assert facts["hostname"]
    assert facts["hypervisor"] == "TEST"
    assert facts["memory_total_mib"] > 0
    assert facts["cpu"]["count"] >= 1
    assert facts["libvirt_version"].count(".") == 2


def test_domains_pools_networks(test_conn):
    pools = hf.pool_facts(test_conn, "test:///default", shared_pools=["default-pool"])
    assert pools[0]["name"] == "default-pool" and pools[0]["shared"] is True and pools[0]["active"] is True
    doms = hf.all_domain_facts(test_conn, "test:///default", pools)
    assert [d["name"] for d in doms] == ["test"]
    d = doms[0]
    assert d["state"] == "running" and d["active"] and d["persistent"]
    assert d["memory_mib"] == 8192 and d["vcpus"] == 2
    assert d["home_host"] is None
    assert hf.all_domain_facts(test_conn, "test:///default", pools, names=["other"]) == []
    assert {n["name"] for n in hf.network_facts(test_conn, "test:///default")} == {"default"}


def test_transient_domain_is_reported_transient(test_conn):
    dom = test_conn.createXML("<domain type='test'><name>tmp1</name><memory>65536</memory>"
                              "<os><type>hvm</type></os></domain>", 0)
    try:
        doms = {d["name"]: d for d in hf.all_domain_facts(test_conn, "test:///default", [])}
        assert doms["tmp1"]["persistent"] is False
        assert doms["tmp1"]["autostart"] is False
        assert doms["tmp1"]["memory_mib"] == 64
    finally:
        dom.destroy()


def test_compression_probe_reports_unsupported_driver(test_conn):
    caps = hf.migration_capabilities(test_conn, "test:///default", "9.0.0", "7.2.0")
    probe = caps["compression_probe"]
    # The test driver cannot migrate at all: the result must say it was not probed, not guess.
    assert probe["probed"] is False and "p2p migration is not supported" in probe["reason"]
    assert caps["compression_methods"] == []
    assert caps["sources"]["compression_methods"] == "not probed"
    assert caps["parallel_connections"] is True and caps["postcopy"] is True


def test_capabilities_from_versions_are_conservative(test_conn):
    caps = hf.migration_capabilities(test_conn, "test:///default", "5.1.0", "3.1.0", probe=False)
    assert caps["parallel_connections"] is False
    assert caps["compression_probe"]["reason"] == "probe disabled"


def test_tls_check_against_closed_port():
    res = hf.tls_configured("qemu+tls://127.0.0.1:1/system", timeout=0.5)
    assert res["configured"] is False and "127.0.0.1:1" in res["how"]
