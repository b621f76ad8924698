"""Fake domains and connections with the few libvirt calls the migration's end and post-copy recovery
make (state, isActive, undefine, a post-copy resume), for tests that need a host in a given state; and a
move's options with live_migrate's defaults; and a connection that keeps secrets as libvirtd does (the notes of
maintenance.py: marks, leases, move slots)."""

from ansible_collections.fleetmaint.libvirt.plugins.module_utils.live_migration import ARGUMENT_SPEC


def move_params(**kw):
    """live_migrate's options, defaults but for a VM name and a test destination, updated with kw."""
    p = {k: v.get("default") for k, v in ARGUMENT_SPEC.items()}
    p.update(name="vm1", dest_uri="test:///default")
    p.update(kw)
    return p


class FakeDom:
    def __init__(self, host, state, reason=0, persistent=True):
        self.host, self.st, self.reason, self.persistent, self.undefined = host, state, reason, persistent, False
        self.resumes = 0

    def name(self):
        return "vm1"

    def UUIDString(self):  # noqa: N802 - libvirt's names
        return "u-1"

    def state(self):
        return [self.st, self.reason]

    def isActive(self):  # noqa: N802
        return self.st in (1, 3)

    def isPersistent(self):  # noqa: N802
        return self.persistent and not self.undefined

    def undefine(self):
        self.undefined = True

    def XMLDesc(self, _flags=0):  # noqa: N802
        return "<domain type='qemu'><name>vm1</name><memory unit='MiB'>64</memory><vcpu>1</vcpu></domain>"

    def migrateToURI3(self, _uri, _params, flags):  # noqa: N802
        import libvirt
        assert flags & libvirt.VIR_MIGRATE_POSTCOPY_RESUME
        self.resumes += 1
        self.st, self.reason = 5, 0  # the resumed post-copy completes: the source is shut off (migrated)


class FakeConn:
    def __init__(self, host, dom):
        self.host, self.dom = host, dom

    def getHostname(self):  # noqa: N802
        return self.host

    def lookupByName(self, _name):  # noqa: N802
        import libvirt
        if self.dom is None or (self.dom.undefined and not self.dom.isActive()):
            err = libvirt.libvirtError("no domain")
            err.get_error_code = lambda: libvirt.VIR_ERR_NO_DOMAIN
            raise err
        return self.dom


class CrashDom(FakeDom):
    def resume(self):
        self.resumes += 1
        self.st, self.reason = 1, 1


class UriConn(FakeConn):
    def getURI(self):  # noqa: N802
        return f"qemu+tcp://{self.host}/system"


class FakeSecret:
    def __init__(self, store, uuid, xml):
        self.store, self.uuid, self.xml = store, uuid, xml

    def UUIDString(self):  # noqa: N802 - libvirt's names
        return self.uuid

    def XMLDesc(self, _flags):  # noqa: N802
        return self.xml

    def undefine(self):
        del self.store.secrets[self.uuid]


class SecretConn:
    """Secrets as libvirtd keeps them: one per usage; redefining with the same UUID updates it."""

    def __init__(self):
        self.secrets = {}

    @staticmethod
    def _usage(xml):
        import re
        return re.search(r"<name>(.*)</name>", xml).group(1)

    def secretDefineXML(self, xml, _flags):  # noqa: N802
        import re
        import uuid as uuidlib
        import libvirt
        usage = self._usage(xml)
        given = re.search(r"<uuid>(.*)</uuid>", xml)
        for s in self.secrets.values():
            if self._usage(s.xml) == usage and (given is None or s.uuid != given.group(1)):
                raise libvirt.libvirtError(f"a secret with UUID {s.uuid} already defined for use with {usage}")
        u = given.group(1) if given else str(uuidlib.uuid4())
        self.secrets[u] = FakeSecret(self, u, xml)
        return self.secrets[u]

    def secretLookupByUsage(self, _type, usage):  # noqa: N802
        import libvirt
        for s in self.secrets.values():
            if self._usage(s.xml) == usage:
                return s
        err = libvirt.libvirtError("no secret")
        err.get_error_code = lambda: libvirt.VIR_ERR_NO_SECRET
        raise err

    def usages(self):
        return sorted(self._usage(s.xml) for s in self.secrets.values())

    def close(self):
        pass
