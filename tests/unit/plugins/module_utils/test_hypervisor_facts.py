import pytest

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


# --- the capability probes, classified by libvirt's error code (never its message) ---

def _error(code, msg):
    import libvirt
    err = libvirt.libvirtError(msg)
    err.get_error_code = lambda: code
    err.get_error_message = lambda: msg
    return err


class ProbeDom:
    """A running domain whose probe migrations fail as the lab's hosts answered them (measured there): ``old`` is
    libvirt 9.0 (zlib/zstd refused with or without parallel migration), ``new`` libvirt 11.3 (zlib/zstd only with
    parallel migration). The connect failure's message says "Unsupported" on purpose: only the codes may decide."""

    def __init__(self, stack):
        self.stack, self.calls = stack, []

    def name(self):
        return "probe-vm"

    def jobInfo(self):  # noqa: N802 - libvirt's names
        return [0, 0, 0]  # VIR_DOMAIN_JOB_NONE

    def migrateToURI3(self, uri, params, flags):  # noqa: N802
        import libvirt
        assert uri == hf.PROBE_DEST_URI
        self.calls.append((dict(params), flags))
        method = params.get(libvirt.VIR_MIGRATE_PARAM_COMPRESSION)
        connect = _error(libvirt.VIR_ERR_SYSTEM_ERROR, "Unsupported: failed to connect to socket")
        if method in ("zlib", "zstd"):
            if self.stack == "old":
                raise _error(libvirt.VIR_ERR_INVALID_ARG, f"Unsupported compression method '{method}'")
            if not flags & libvirt.VIR_MIGRATE_PARALLEL:
                raise _error(libvirt.VIR_ERR_INVALID_ARG,
                             f"Compression method '{method}' is only supported with parallel migration")
        raise connect


class ProbeConn:
    """A connection to the lab's hosts: QEMU 7.2.22 on the old stack, 10.0.13 on the new one."""

    def __init__(self, dom):
        self.dom = dom

    def getVersion(self):  # noqa: N802
        return 10000013 if self.dom is not None and self.dom.stack == "new" else 7002022

    def listAllDomains(self, _flags=0):  # noqa: N802
        return [self.dom] if self.dom else []


def test_compression_probe_on_libvirt_9_refuses_multifd_methods():
    pytest.importorskip("libvirt")
    res = hf.probe_compression(ProbeConn(ProbeDom("old")))
    assert res["probed"] is True and res["probe_domain"] == "probe-vm"
    assert res["accepted"] == ["xbzrle", "mt"] and res["multifd"] == []
    assert set(res["rejected"]) == {"zlib", "zstd"}


def test_compression_probe_on_libvirt_11_probes_multifd_methods_with_parallel():
    libvirt = pytest.importorskip("libvirt")
    dom = ProbeDom("new")
    res = hf.probe_compression(ProbeConn(dom))
    assert res["accepted"] == ["xbzrle", "zlib", "zstd"] and res["multifd"] == ["zlib", "zstd"]
    # libvirt 11 accepts the name 'mt', but QEMU 10 has no multi-thread compression any more (removed in 9.1).
    assert list(res["rejected"]) == ["mt"] and "9.1.0" in res["rejected"]["mt"]
    by_method = {params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION]: (params, flags) for params, flags in dom.calls}
    for method in ("zlib", "zstd"):
        params, flags = by_method[method]
        assert flags & libvirt.VIR_MIGRATE_PARALLEL and flags & libvirt.VIR_MIGRATE_COMPRESSED
        assert params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] == 2
    for method in ("xbzrle", "mt"):
        params, flags = by_method[method]
        assert not flags & libvirt.VIR_MIGRATE_PARALLEL and libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS not in params


def test_a_driver_that_cannot_migrate_teaches_nothing():
    libvirt = pytest.importorskip("libvirt")

    class NoMigrate(ProbeDom):
        def migrateToURI3(self, uri, params, flags):  # noqa: N802
            raise _error(libvirt.VIR_ERR_NO_SUPPORT, "this function is not supported")

    res = hf.probe_compression(ProbeConn(NoMigrate("new")))
    assert res["probed"] is False and res["accepted"] == [] and res["reason"] == "this function is not supported"
    assert hf.probe_compression(ProbeConn(None))["probed"] is False


def test_preempt_from_versions():
    # libvirt enables postcopy-preempt itself from 9.9 when both ends have it (QEMU 8.0): there is no flag to probe.
    assert hf.preempt_by_version("11.3.0", "10.0.13") is True
    assert hf.preempt_by_version("9.9.0", "8.0.0") is True
    assert hf.preempt_by_version("9.0.0", "7.2.22") is False
    assert hf.preempt_by_version("11.3.0", "7.2.22") is False
    assert hf.preempt_by_version(None, None) is False


@pytest.mark.parametrize("stack,methods,multifd,preempt", [
    ("old", ["xbzrle", "mt"], [], False),
    ("new", ["xbzrle", "zlib", "zstd"], ["zlib", "zstd"], True),
])
def test_migration_capabilities_show_the_probe_and_preempt(monkeypatch, stack, methods, multifd, preempt):
    pytest.importorskip("libvirt")
    monkeypatch.setattr(hf, "tls_configured", lambda _uri: {"configured": False})
    versions = {"old": ("9.0.0", "7.2.22"), "new": ("11.3.0", "10.0.13")}[stack]
    dom = ProbeDom(stack)
    caps = hf.migration_capabilities(ProbeConn(dom), "qemu+tcp://h/system", *versions)
    assert caps["compression_methods"] == methods and caps["compression_multifd"] == multifd
    assert caps["postcopy_preempt"] is preempt and caps["sources"]["postcopy_preempt"] == "version"
    assert len(dom.calls) == 4  # one probe a method; nothing sent for preempt


def test_host_context_probes_compression_once():
    pytest.importorskip("libvirt")
    dom = ProbeDom("new")
    ctx = hf.HostContext.__new__(hf.HostContext)  # the probes only: no host facts to read from a fake
    ctx.conn, ctx.host, ctx._compression = ProbeConn(dom), \
        {"libvirt_version": "11.3.0", "hypervisor_version": "10.0.13"}, None
    assert ctx.compression()["multifd"] == ["zlib", "zstd"] and ctx.compression() is ctx.compression()
    assert len(dom.calls) == 4
    assert ctx.postcopy_preempt() is True
    ctx.host = {"libvirt_version": "9.0.0", "hypervisor_version": "7.2.22"}
    assert ctx.postcopy_preempt() is False
