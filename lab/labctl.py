"""labctl: a lab of real libvirt hosts on one machine, for fleetmaint.libvirt.

Each lab "host" is a real libvirtd running in its own mount and UTS namespace,
with per-host directories bind-mounted over libvirt's state, config and PKI
paths, its own hostname and host UUID, and listening on its own loopback
address (127.0.0.2, .3, ...). Guests run under TCG and boot a Debian kernel
with a busybox initramfs built here from Debian packages.

Everything the lab creates lives under one state directory (``--state-dir``,
``$FLEETMAINT_LAB_DIR``, default ``/var/tmp/fleetmaint-lab``) so ``down`` can
remove it all. Only the standard library and the ``virsh`` client are used, so
the tool works before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

DEFAULT_STATE = os.environ.get("FLEETMAINT_LAB_DIR", "/var/tmp/fleetmaint-lab")
HERE = Path(__file__).resolve().parent
NETWORK = "lab-net"
SHARED_POOL = "shared"
LOCAL_POOL = "local"
LOCAL_POOL_PATH = "/var/lib/libvirt/images"
BIND_PATHS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
    "etc": "/etc/libvirt",
    "pki": "/etc/pki",
}
GUEST_MODULES = [
    "drivers/virtio/virtio.ko", "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko", "drivers/block/virtio_blk.ko",
    "net/core/failover.ko", "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko",
]
MIN_GUEST_MIB = 96  # the Debian cloud kernel and initramfs hang silently in a 64 MiB guest
VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
METADATA_NS = "https://github.com/fleetmaint/libvirt/xmlns/1"
# What a guest kernel prints when it dies or corrupts itself; libvirt still says "running" then.
# Soft lockups and RCU stalls are not in it: a starved TCG vCPU prints those and goes on.
GUEST_CRASH_RE = re.compile(r"Kernel panic|kernel BUG at|BUG: kernel NULL pointer|BUG: unable to handle|Oops: |"
                            r"general protection fault|Fixing recursive fault|Attempted to kill init")
BOOT_TIMEOUT = 180.0  # seconds a lab guest gets to boot; TCG on two loaded cores takes 2-10 s
# Every lab host's libvirtd, and the QEMU processes it starts, live in a cgroup of their own.
# All hosts share one network namespace, and the kernel gives every unbound loopback
# connection the source address 127.0.0.1, so addresses alone cannot tell which host sent
# a packet; the sender's cgroup can (iptables' cgroup match on cgroup v2 paths).
CGROUP_ROOT = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
# Two software stacks a lab host can run: "old" is this machine's own /usr (Debian 12: libvirt 9.0, QEMU 7.2);
# "new" is a Debian 13 (trixie) root built once per machine with debootstrap (libvirt 11.3, QEMU 10.0), whose
# /usr is bind-mounted over /usr in the host's own mount namespace before its libvirtd starts (both roots are
# merged-/usr). It is cached outside every lab's state directory, so all labs of the machine share it.
STACKS = ("old", "new")
STACK_DIR = Path(os.environ.get("FLEETMAINT_STACK_DIR", "/var/cache/fleetmaint-lab/stacks"))
STACK_SUITE = "trixie"
STACK_MIRROR = os.environ.get("FLEETMAINT_STACK_MIRROR", "http://deb.debian.org/debian")
# One 'debootstrap --include' of these fails on a dependency-order problem: they go in a second step.
STACK_PACKAGES = ("libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-daemon-driver-network",
                  "libvirt-daemon-driver-storage", "libvirt-daemon-driver-secret", "libvirt-daemon-driver-nwfilter",
                  "qemu-system-x86", "qemu-utils", "libvirt-clients")


class LabError(Exception):
    """A lab operation failed; the message says what and where."""


def log(msg: str) -> None:
    print(f"labctl: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    if check and res.returncode != 0:
        raise LabError(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr.strip()}")
    return res


class Lab:
    def __init__(self, state_dir: str):
        self.root = Path(state_dir).resolve()
        self.state_file = self.root / "lab.json"

    # ------------------------------------------------------------------ state
    def load(self) -> dict:
        if not self.state_file.exists():
            raise LabError(f"no lab at {self.root}: run 'labctl up' first")
        return json.loads(self.state_file.read_text())

    def save(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(f".tmp.{os.getpid()}")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def locked(self):
        """One command at a time changes this lab: each reads the state, changes hosts and VMs, and writes the
        state back, so two at once (a rolling patch of two hosts in one batch patches both together) would lose
        one's change or run into the other's half-done work. Commands that only read do not wait."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @property
    def lab_id(self) -> str:
        return __import__("hashlib").sha1(str(self.root).encode()).hexdigest()[:6]

    def cgroup(self, h: dict) -> str:
        """The cgroup v2 path (relative to the hierarchy) holding this host's processes."""
        return f"fleetlab-{self.lab_id}-{h['name']}"

    @property
    def chain(self) -> str:
        return f"FLEETLAB-{self.lab_id}"

    def host(self, state: dict, name: str) -> dict:
        for h in state["hosts"]:
            if h["name"] == name or h["addr"] == name:
                return h
        raise LabError(f"unknown lab host '{name}' (known: {', '.join(h['name'] for h in state['hosts'])})")

    def hdir(self, h: dict) -> Path:
        return self.root / "hosts" / h["name"]

    @staticmethod
    def uri(h: dict, tls: bool = False, pkipath: str | None = None) -> str:
        if tls:
            return f"qemu+tls://{h['addr']}/system" + (f"?pkipath={pkipath}" if pkipath else "")
        return f"qemu+tcp://{h['addr']}/system"

    def virsh(self, h: dict, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(["virsh", "-q", "-c", self.uri(h), *args], check=check, timeout=timeout)

    # -------------------------------------------------------------- prereqs
    @staticmethod
    def ensure_system_user() -> None:
        # libvirt resolves the libvirt-qemu user and group before reading qemu.conf.
        if run(["getent", "group", "libvirt-qemu"], check=False).returncode != 0:
            run(["groupadd", "--system", "libvirt-qemu"])
        if run(["getent", "passwd", "libvirt-qemu"], check=False).returncode != 0:
            run(["useradd", "--system", "--no-create-home", "-g", "libvirt-qemu",
                 "-s", "/usr/sbin/nologin", "libvirt-qemu"])
        for tool in ("libvirtd", "virsh", "qemu-system-x86_64", "unshare", "certtool", "busybox"):
            if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
                raise LabError(f"'{tool}' is not installed: run 'make deps' (see bindep.txt)")

    # ---------------------------------------------------------- guest image
    def build_guest(self) -> None:
        gdir = self.root / "guest"
        kernel, initrd = gdir / "vmlinuz", gdir / "initrd.img"
        stamp = gdir / "inputs.sha"
        inputs = (HERE / "guest" / "init").read_bytes() + (HERE / "guest" / "dirtier.c").read_bytes()
        digest = __import__("hashlib").sha256(inputs).hexdigest()
        if kernel.exists() and initrd.exists() and stamp.exists() and stamp.read_text() == digest:
            return
        gdir.mkdir(parents=True, exist_ok=True)
        work = gdir / "build"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        if not kernel.exists() or not (gdir / "modules").exists():
            log("fetching a Debian cloud kernel (apt-get download)")
            dep = run(["apt-cache", "depends", "linux-image-cloud-amd64"]).stdout
            m = re.search(r"Depends:\s*(linux-image-\S+)", dep)
            if not m:
                raise LabError("cannot resolve linux-image-cloud-amd64: run 'apt-get update'")
            run(["apt-get", "download", m.group(1)], cwd=work, timeout=600)
            deb = next(work.glob("linux-image-*.deb"))
            run(["dpkg-deb", "-x", str(deb), str(work / "x")])
            shutil.copy(next((work / "x" / "boot").glob("vmlinuz-*")), kernel)
            moddir = next((work / "x" / "lib" / "modules").iterdir()) / "kernel"
            (gdir / "modules").mkdir(exist_ok=True)
            for rel in GUEST_MODULES:
                shutil.copy(moddir / rel, gdir / "modules" / Path(rel).name)
        log("building the guest initramfs (busybox + dirtier)")
        rootfs = work / "rootfs"
        for d in ("bin", "dev", "proc", "sys", "tmp", "lib/fm"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
        os.symlink("busybox", rootfs / "bin" / "sh")
        run(["gcc", "-O2", "-static", "-o", str(rootfs / "bin" / "dirtier"), str(HERE / "guest" / "dirtier.c")])
        shutil.copy(HERE / "guest" / "init", rootfs / "init")
        os.chmod(rootfs / "init", 0o755)
        for ko in (gdir / "modules").iterdir():
            shutil.copy(ko, rootfs / "lib" / "fm" / ko.name)
        files = run(["sh", "-c", "find . | sort"], cwd=rootfs).stdout
        cpio = subprocess.run(["busybox", "cpio", "-o", "-H", "newc"], input=files.encode(),
                              cwd=rootfs, capture_output=True, check=True).stdout
        initrd.write_bytes(__import__("gzip").compress(cpio))
        stamp.write_text(digest)
        shutil.rmtree(work, ignore_errors=True)

    def build_reaper(self) -> Path:
        """lab/host/reaper.c, compiled once per source: each host's libvirtd runs below it (it says why)."""
        src = HERE / "host" / "reaper.c"
        exe, stamp = self.root / "reaper", self.root / "reaper.sha"
        digest = __import__("hashlib").sha256(src.read_bytes()).hexdigest()
        if not (exe.exists() and stamp.exists() and stamp.read_text() == digest):
            run(["gcc", "-O2", "-static", "-o", str(exe), str(src)])
            stamp.write_text(digest)
        return exe

    # ------------------------------------------------------------------ PKI
    def build_pki(self, state: dict) -> None:
        pki = self.root / "pki"
        client = self.root / "client-pki"
        have_hosts = all((self.hdir(h) / "pki" / "qemu" / "server-cert.pem").exists() for h in state["hosts"])
        if (pki / "cacert.pem").exists() and have_hosts:
            return
        log("generating lab TLS certificates (certtool)")
        pki.mkdir(parents=True, exist_ok=True)
        client.mkdir(parents=True, exist_ok=True)
        if not (pki / "cakey.pem").exists():
            run(["certtool", "--generate-privkey", "--outfile", str(pki / "cakey.pem")])
            (pki / "ca.info").write_text("cn = fleetmaint lab CA\nca\ncert_signing_key\nexpiration_days = 3650\n")
            run(["certtool", "--generate-self-signed", "--load-privkey", str(pki / "cakey.pem"),
                 "--template", str(pki / "ca.info"), "--outfile", str(pki / "cacert.pem")])
        for h in state["hosts"] + [{"name": "controller", "addr": "127.0.0.1"}]:
            key, cert = pki / f"{h['name']}-key.pem", pki / f"{h['name']}-cert.pem"
            if not cert.exists():
                info = pki / f"{h['name']}.info"
                info.write_text(f"organization = fleetmaint lab\ncn = {h['addr']}\nip_address = {h['addr']}\n"
                                "dns_name = localhost\ntls_www_server\ntls_www_client\nencryption_key\n"
                                "signing_key\nexpiration_days = 3650\n")
                run(["certtool", "--generate-privkey", "--outfile", str(key)])
                run(["certtool", "--generate-certificate", "--load-privkey", str(key),
                     "--load-ca-certificate", str(pki / "cacert.pem"),
                     "--load-ca-privkey", str(pki / "cakey.pem"),
                     "--template", str(info), "--outfile", str(cert)])
            if h["name"] == "controller":
                shutil.copy(pki / "cacert.pem", client / "cacert.pem")
                shutil.copy(cert, client / "clientcert.pem")
                shutil.copy(key, client / "clientkey.pem")
                continue
            hp = self.hdir(h) / "pki"
            for d in ("CA", "libvirt/private", "qemu"):
                (hp / d).mkdir(parents=True, exist_ok=True)
            layout = {
                "CA/cacert.pem": pki / "cacert.pem",
                "libvirt/servercert.pem": cert, "libvirt/private/serverkey.pem": key,
                "libvirt/clientcert.pem": cert, "libvirt/private/clientkey.pem": key,
                "qemu/ca-cert.pem": pki / "cacert.pem",
                "qemu/server-cert.pem": cert, "qemu/server-key.pem": key,
                "qemu/client-cert.pem": cert, "qemu/client-key.pem": key,
            }
            for dst, src in layout.items():
                shutil.copy(src, hp / dst)

    # --------------------------------------------------------------- stacks
    @staticmethod
    def stack_root(stack: str) -> Path | None:
        """Where the stack's root is: None for "old" (this machine's own /usr)."""
        if stack not in STACKS:
            raise LabError(f"unknown stack '{stack}' (known: {', '.join(STACKS)})")
        return None if stack == "old" else STACK_DIR / stack

    @staticmethod
    def stack_packages(root: Path | None) -> dict:
        """The versions of the stack's libvirt and QEMU packages, as dpkg records them."""
        admin = ["--admindir", str(root / "var" / "lib" / "dpkg")] if root else []
        out = run(["dpkg-query", *admin, "-W", "-f", "${Package} ${Version}\\n", "libvirt-daemon", "qemu-system-x86"],
                  check=False).stdout
        return dict(line.split(None, 1) for line in out.splitlines() if " " in line)

    def stack_info(self, stack: str) -> dict:
        root = self.stack_root(stack)
        info = {"stack": stack, "root": str(root) if root else "/", "built": root is None}
        if root is not None:
            stamp = root / ".fleetmaint-stack.json"
            if stamp.exists():
                info.update(json.loads(stamp.read_text()), built=True)
        if info["built"]:
            info["packages"] = self.stack_packages(root)
        return info

    def ensure_stack(self, stack: str) -> dict:
        """Build the stack if it is not cached (once per machine; a lock keeps two labs from building at once)."""
        root = self.stack_root(stack)
        if root is None or (root / ".fleetmaint-stack.json").exists():
            return self.stack_info(stack)
        STACK_DIR.mkdir(parents=True, exist_ok=True)
        with open(STACK_DIR / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (root / ".fleetmaint-stack.json").exists():
                return self.stack_info(stack)  # another lab built it while we waited
            t0 = time.time()
            work = STACK_DIR / f".{stack}.build"
            shutil.rmtree(work, ignore_errors=True)
            log(f"building the '{stack}' stack: debootstrap {STACK_SUITE} into {root} (once per machine)")
            run(["debootstrap", "--variant=minbase", STACK_SUITE, str(work), STACK_MIRROR], timeout=1800)
            log(f"installing libvirt and QEMU into the '{stack}' stack")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            run(["chroot", str(work), "apt-get", "install", "-y", "-q", "--no-install-recommends", *STACK_PACKAGES],
                timeout=1800, env=env)
            run(["chroot", str(work), "apt-get", "clean"], check=False)
            if not (work / "usr" / "sbin" / "libvirtd").exists() or not (work / "etc" / "ld.so.cache").exists():
                raise LabError(f"the '{stack}' stack in {work} has no libvirtd or ld.so.cache: see the output above")
            du = run(["du", "-sm", str(work)], check=False).stdout.split()
            stamp = {"suite": STACK_SUITE, "mirror": STACK_MIRROR, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                     time.gmtime()), "build_seconds": round(time.time() - t0, 1),
                     "size_mib": int(du[0]) if du else None}
            (work / ".fleetmaint-stack.json").write_text(json.dumps(stamp, indent=2) + "\n")
            shutil.rmtree(root, ignore_errors=True)
            os.replace(work, root)
            log(f"the '{stack}' stack is built ({stamp['build_seconds']} s, {stamp['size_mib']} MiB)")
        return self.stack_info(stack)

    def daemon_versions(self, h: dict) -> dict:
        """What the host's running libvirtd says of itself: its own version and its hypervisor's."""
        out = self.virsh(h, "version", "--daemon", check=False, timeout=15).stdout
        libvirt_v = re.search(r"Running against daemon: (\S+)", out)
        qemu_v = re.search(r"Running hypervisor: QEMU (\S+)", out)
        return {"libvirt": libvirt_v.group(1) if libvirt_v else None, "qemu": qemu_v.group(1) if qemu_v else None}

    def running_guests(self, h: dict) -> list[str]:
        return self.virsh(h, "list", "--name", check=False, timeout=15).stdout.split()

    def stop_libvirtd(self, h: dict) -> int | None:
        """Stop the host's libvirtd (its guests go on running); returns the pid it had."""
        pid = self.host_pid(h)
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + 30
            while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
                time.sleep(0.1)
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
                while os.path.exists(f"/proc/{pid}"):
                    time.sleep(0.05)
        return pid

    def set_stack(self, state: dict, h: dict, stack: str, restart: bool = False) -> dict:
        """Run the host on ``stack``: its libvirtd restarts there (its guests and definitions stay). A host that
        runs guests is not taken to an older stack: its libvirtd could not take over a newer QEMU's guests."""
        before = h.get("stack", "old")
        self.ensure_stack(stack)
        if before == stack and not restart and self.host_up(h):
            return {"host": h["name"], "stack": stack, "changed": False}
        if STACKS.index(stack) < STACKS.index(before) and self.host_up(h):
            guests = self.running_guests(h)
            if guests:
                raise LabError(f"{h['name']} runs {', '.join(guests)} on the '{before}' stack; the '{stack}' stack's "
                               "libvirtd cannot take over a newer QEMU's guests: move them off or delete them first")
        pid = self.stop_libvirtd(h)
        h["stack"] = stack
        self.save(state)
        self.start_host(state, h)
        return {"host": h["name"], "stack": stack, "previous_stack": before, "changed": True,
                "libvirtd_before": pid, "libvirtd_after": self.host_pid(h), "versions": self.daemon_versions(h)}

    # ---------------------------------------------------------------- hosts
    def write_host_config(self, h: dict) -> None:
        d = self.hdir(h)
        for sub in BIND_PATHS:
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "lib" / "images").mkdir(parents=True, exist_ok=True)
        (d / "log" / "qemu").mkdir(parents=True, exist_ok=True)
        (d / "etc" / "libvirtd.conf").write_text(
            f'listen_tcp = 1\nlisten_tls = 1\nlisten_addr = "{h["addr"]}"\n'
            'auth_tcp = "none"\nauth_tls = "none"\nunix_sock_rw_perms = "0770"\n'
            f'host_uuid = "{h["uuid"]}"\n'
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
            'keepalive_interval = 5\nkeepalive_count = 3\n'
        )
        (d / "etc" / "qemu.conf").write_text(
            'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
            'security_driver = "none"\nstdio_handler = "file"\nnamespaces = [ ]\n'
            # QEMU stays in libvirtd's cgroup, so faults can tell the hosts' traffic apart.
            'cgroup_controllers = [ ]\n'
            f'migration_address = "{h["addr"]}"\nmigration_host = "{h["addr"]}"\n'
            'default_tls_x509_cert_dir = "/etc/pki/qemu"\ndefault_tls_x509_verify = 1\n'
            'migrate_tls_x509_cert_dir = "/etc/pki/qemu"\nmigrate_tls_x509_verify = 1\n'
        )

    def host_pid(self, h: dict) -> int | None:
        pidfile = self.hdir(h) / "run" / "libvirtd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "libvirtd":
                    return None
            return pid
        except (OSError, ValueError):
            return None

    def listing(self, h: dict, *flags: str, timeout: float = 15) -> str | None:
        """``virsh list --all`` (with ``flags``) of a host whose daemon runs and answers; None for any other host.
        The listing is the call that asks whether the host is up: no separate 'virsh uri' first (a third fewer
        virsh calls in ``status``, which tests call hundreds of times)."""
        if not self.host_pid(h):
            return None
        res = self.virsh(h, "list", "--all", *flags, check=False, timeout=timeout)
        return res.stdout if res.returncode == 0 else None

    def host_up(self, h: dict) -> bool:
        if not self.host_pid(h):
            return False
        return self.virsh(h, "uri", check=False, timeout=10).returncode == 0

    def start_host(self, state: dict, h: dict) -> None:
        if self.host_up(h):
            return
        self.write_host_config(h)
        d = self.hdir(h)
        (d / "run" / "libvirtd.pid").unlink(missing_ok=True)
        for p in BIND_PATHS.values():
            os.makedirs(p, exist_ok=True)
        binds = [(d / k, v) for k, v in BIND_PATHS.items()]
        root = self.stack_root(h.get("stack", "old"))
        if root is not None:
            # The stack's loader cache first (its libraries, by their paths there), then its /usr.
            binds = [(root / "etc" / "ld.so.cache", "/etc/ld.so.cache"), (root / "usr", "/usr")] + binds
        mounts = " && ".join(f"mount --bind {src} {dst}" for src, dst in binds)
        cg = Path(CGROUP_ROOT) / self.cgroup(h)
        cg.mkdir(exist_ok=True)
        script = (f"echo $$ > {cg / 'cgroup.procs'} && {mounts} && hostname {h['name']} && "
                  f"exec {self.build_reaper()} libvirtd --listen -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid")
        logf = open(d / "libvirtd.stdout", "ab")
        proc = subprocess.Popen(["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script],
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if proc.poll() is not None:
                raise LabError(f"libvirtd for {h['name']} exited ({proc.returncode}); see {d}/libvirtd.stdout")
            if self.host_up(h):
                break
            time.sleep(0.3)
        else:
            raise LabError(f"libvirtd for {h['name']} did not answer on {self.uri(h)} within 30s")
        # What it runs changes only when it starts again: read once here, shown by status.
        h["versions"] = self.daemon_versions(h)
        self.save(state)
        self.setup_host_objects(state, h)

    def setup_host_objects(self, state: dict, h: dict) -> None:
        d = self.hdir(h)
        nets = self.virsh(h, "net-list", "--all", "--name").stdout.split()
        if NETWORK not in nets:
            xml = d / "net.xml"
            xml.write_text(f"<network><name>{NETWORK}</name><forward mode='bridge'/>"
                           f"<bridge name='{state['bridge']}'/></network>")
            self.virsh(h, "net-define", str(xml))
            self.virsh(h, "net-autostart", NETWORK)
        if NETWORK not in self.virsh(h, "net-list", "--name").stdout.split():
            self.virsh(h, "net-start", NETWORK)
        pools = self.virsh(h, "pool-list", "--all", "--name").stdout.split()
        for pool, path in ((SHARED_POOL, str(self.root / "shared")), (LOCAL_POOL, LOCAL_POOL_PATH)):
            if pool not in pools:
                self.virsh(h, "pool-define-as", pool, "dir", "--target", path)
                self.virsh(h, "pool-autostart", pool)
            if pool not in self.virsh(h, "pool-list", "--name").stdout.split():
                self.virsh(h, "pool-start", pool)

    def host_processes(self, h: dict) -> list[int]:
        """Every process of this host (libvirtd, QEMU, hooks): the members of its cgroup and of any cgroup below.

        Membership is the only identity used: the cgroup's name carries this lab's id (a hash of its state
        directory) and the host's name, and a process cannot leave it by itself. Namespace ids are not used:
        the kernel reuses them once a namespace is gone, so they could name another lab's processes.
        """
        pids = set()
        top = Path(CGROUP_ROOT) / self.cgroup(h)
        for procs in (top.glob("**/cgroup.procs") if top.is_dir() else ()):
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except (OSError, ValueError):
                continue
        return sorted(pids)

    def kill_host(self, h: dict, sig: int = signal.SIGKILL) -> list[int]:
        pids = self.host_processes(h)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.1)
        # QEMU is gone: libvirt's status files would make a new libvirtd think it still runs.
        return pids

    # ------------------------------------------------------------------ up
    def up(self, nhosts: int, first_addr: str, bridge: str, stack: str | None = None,
           only: list[str] | None = None) -> dict:
        self.ensure_system_user()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "shared").mkdir(exist_ok=True)
        if self.state_file.exists():
            state = self.load()
            if len(state["hosts"]) != nhosts:
                raise LabError(f"lab at {self.root} has {len(state['hosts'])} hosts; "
                               f"run 'labctl down' before 'up --hosts {nhosts}'")
        else:
            base = first_addr.rsplit(".", 1)
            if not first_addr.startswith("127."):
                raise LabError("lab hosts must use loopback addresses (127.x.y.z)")
            state = {"bridge": bridge, "hosts": [], "vms": {}, "cuts": [], "slows": []}
            for i in range(nhosts):
                addr = f"{base[0]}.{int(base[1]) + i}"
                state["hosts"].append({"name": f"lab{i + 1}", "addr": addr, "uuid": str(uuid.uuid4())})
            self.save(state)
        self.build_guest()
        self.build_pki(state)
        if run(["ip", "link", "show", state["bridge"]], check=False).returncode != 0:
            run(["ip", "link", "add", state["bridge"], "type", "bridge"])
        run(["ip", "link", "set", state["bridge"], "up"])
        chosen = {self.host(state, n)["name"] for n in only} if only else {h["name"] for h in state["hosts"]}
        for h in state["hosts"]:
            if stack is not None and h["name"] in chosen:
                self.set_stack(state, h, stack)
            else:
                self.start_host(state, h)
        self.apply_faults(state)
        return state

    # ------------------------------------------------------------------ VMs
    def console_logs(self, state: dict, name: str) -> dict:
        """host name -> path of this VM's serial console log on that host (where one exists)."""
        out = {}
        for h in state["hosts"]:
            f = self.hdir(h) / "log" / "qemu" / f"{name}-console.log"
            if f.exists():
                out[h["name"]] = f
        return out

    def guest_health(self, state: dict, name: str, since: dict | None = None) -> dict:
        """What the guest's own console says, on every host it ran on: booted, and any crash line.

        ``since``: host -> console size to read from (what a new boot wrote, not an earlier life's lines)."""
        booted, crash = False, None
        for hn, f in self.console_logs(state, name).items():
            with open(f, "rb") as fh:
                off = (since or {}).get(hn, 0)
                # A console that is shorter than it was has been truncated by a start: read it all.
                fh.seek(off if off <= os.fstat(fh.fileno()).st_size else 0)
                text = fh.read().decode(errors="replace")
            booted = booted or f"fleetmaint: guest {name} up" in text
            m = GUEST_CRASH_RE.search(text)
            if m and crash is None:
                line = text[max(0, text.rfind("\n", 0, m.start()) + 1):].split("\n", 1)[0]
                crash = f"{hn}: {line.strip()}"
        return {"booted": booted, "crashed": crash is not None, "crash": crash}

    def wait_booted(self, state: dict, h: dict, name: str, timeout: float = BOOT_TIMEOUT,
                    since: dict | None = None) -> float:
        """Wait until a guest just started on h says it is up (its disk marker is written by then).

        A guest must not be moved while its kernel boots: under TCG (QEMU 7.2) a live migration in that
        window corrupts the guest now and then (docs/lab.md, "Guests that are still booting")."""
        since = {hn: f.stat().st_size for hn, f in self.console_logs(state, name).items()} if since is None else since
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            health = self.guest_health(state, name, since)
            if health["crashed"]:
                raise LabError(f"guest {name} crashed while booting on {h['name']}: {health['crash']}")
            if health["booted"]:
                return time.monotonic() - t0
            time.sleep(0.2)
        raise LabError(f"guest {name} on {h['name']} did not boot within {timeout:.0f}s "
                       f"(see {self.hdir(h) / 'log' / 'qemu' / (name + '-console.log')})")

    def vm_create(self, name: str, host: str, memory: int, vcpus: int, dirty_mb: int,
                  dirty_rate: float, disk: str, size: int, start: bool = True, home: bool = True,
                  network: str = NETWORK, pool: str | None = None, wait: bool = True,
                  crash_after: float | None = None) -> dict:
        state = self.load()
        if not VM_NAME_RE.match(name):
            raise LabError(f"invalid VM name '{name}'")
        h = self.host(state, host)
        if not self.host_up(h):
            raise LabError(f"lab host {h['name']} is down")
        where = self.locate(state, name)
        if where["defined_on"] or where["running_on"]:
            raise LabError(f"VM '{name}' already exists on {', '.join(where['defined_on'] + where['running_on'])}")
        if memory < MIN_GUEST_MIB:
            raise LabError(f"--memory {memory}: the lab's guest kernel does not boot with less than "
                           f"{MIN_GUEST_MIB} MiB")
        if dirty_mb > memory - 48:
            raise LabError(f"--dirty-mb {dirty_mb} leaves too little of {memory} MiB for the guest kernel")
        token = secrets.token_hex(8)
        disk_xml = ""
        disk_path = None
        if disk != "none":
            pool = pool or (SHARED_POOL if disk == "shared" else LOCAL_POOL)
            vol = f"{name}.img"
            self.virsh(h, "vol-create-as", pool, vol, f"{size}M", "--format", "raw")
            disk_path = self.virsh(h, "vol-path", vol, "--pool", pool).stdout.strip()
            disk_xml = (f"<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>"
                        f"<source file='{disk_path}'/><target dev='vda' bus='virtio'/></disk>")
        cmdline = f"console=ttyS0 panic=-1 quiet fm.name={name} fm.token={token}"
        if dirty_mb:
            cmdline += f" fm.dirty_mb={dirty_mb} fm.dirty_rate={dirty_rate:g}"
        if crash_after is not None:
            cmdline += f" fm.crash_after={crash_after:g}"
        meta = ""
        if home:
            meta = (f"<metadata><fleetmaint:instance xmlns:fleetmaint='{METADATA_NS}'>"
                    f"<fleetmaint:home>{h['name']}</fleetmaint:home></fleetmaint:instance></metadata>")
        g = self.root / "guest"
        xml = f"""<domain type='qemu'>
  <name>{name}</name>
  {meta}
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{g / 'vmlinuz'}</kernel><initrd>{g / 'initrd.img'}</initrd>
    <cmdline>{cmdline}</cmdline></os>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {disk_xml}
    <interface type='network'><source network='{network}'/><model type='virtio'/></interface>
    <serial type='file'><source path='/var/log/libvirt/qemu/{name}-console.log' append='on'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""
        xf = self.root / "vms" / f"{name}.xml"
        xf.parent.mkdir(exist_ok=True)
        xf.write_text(xml)
        for f in self.console_logs(state, name).values():
            f.unlink()  # an earlier VM of this name: its lines would read as this one's
        self.virsh(h, "define", str(xf))
        boot_s = None
        if start:
            self.virsh(h, "start", name)
            if wait:
                boot_s = round(self.wait_booted(state, h, name, since={}), 1)
        state = self.load()
        state["vms"][name] = {"token": token, "created_on": h["name"], "memory": memory, "pool": pool,
                              "disk": disk, "disk_path": disk_path, "dirty_mb": dirty_mb, "dirty_rate": dirty_rate,
                              "vcpus": vcpus, "size": size, "network": network, "home": home}
        self.save(state)
        return {"name": name, "host": h["name"], "disk_path": disk_path, "token": token, "boot_s": boot_s}

    def vm_ensure(self, name: str, host: str, **spec) -> str:
        """Make a VM run once, defined once, whatever an earlier run or an interrupted 'down' left.

        Running and defined on one host: left alone ("ok"); paused there: resumed; defined on one host and
        running nowhere (hosts restarted under it): started there; anything else (missing, transient, on
        two hosts): deleted and created again on ``host``."""
        state = self.load()
        w = self.locate(state, name)
        if len(w["defined_on"]) == 1 and w["running_on"] in ([], w["defined_on"]):
            h = self.host(state, w["defined_on"][0])
            st = w["states"][h["name"]]
            if st == "running":
                return "ok"
            if st == "paused":
                self.virsh(h, "resume", name)
                return f"resumed on {h['name']}"
            if not w["running_on"]:
                since = {hn: f.stat().st_size for hn, f in self.console_logs(state, name).items()}
                self.virsh(h, "start", name)
                self.wait_booted(state, h, name, since=since)
                return f"started on {h['name']}"
        if w["defined_on"] or w["running_on"]:
            self.vm_delete(name)
            self.vm_create(name, host, **spec)
            return f"recreated on {host} (was running on {w['running_on'] or 'no host'}, defined on {w['defined_on'] or 'no host'})"
        self.vm_create(name, host, **spec)
        return f"created on {host}"

    def fleet_ensure(self, path: str) -> dict:
        """vm_ensure for every line of a fleet file: ``name host memory disk [dirty-mb dirty-rate]``."""
        out = {}
        for line in Path(path).read_text().splitlines():
            f = line.split("#", 1)[0].split()
            if not f:
                continue
            name, host, mem, disk = f[:4]
            dmb, drate = (int(f[4]), float(f[5])) if len(f) >= 6 else (0, 0.0)
            out[name] = self.vm_ensure(name, host, memory=int(mem), vcpus=1, dirty_mb=dmb, dirty_rate=drate,
                                       disk=disk, size=16)
        return out

    def vm_delete(self, name: str) -> list[str]:
        state = self.load()
        touched = []
        for h in state["hosts"]:
            listed = self.listing(h, "--name", timeout=60)
            if listed is None:
                continue  # the host is down (or does not answer): nothing of the VM to delete there now
            names = listed.split()
            if name in names:
                self.virsh(h, "destroy", name, check=False)
                self.virsh(h, "undefine", name, "--nvram", check=False)
                touched.append(h["name"])
            for pool in sorted({SHARED_POOL, LOCAL_POOL, state["vms"].get(name, {}).get("pool") or LOCAL_POOL}):
                if self.virsh(h, "vol-info", f"{name}.img", "--pool", pool, check=False).returncode == 0:
                    self.virsh(h, "vol-delete", f"{name}.img", "--pool", pool, check=False)
        health = self.guest_health(state, name)
        if health["crashed"]:
            # Kept past 'down' (the state directory's root stays): the suites list every guest crash of a run.
            with open(self.root / "guest-crashes.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"vm": name, "crash": health["crash"], "time": time.time()}) + "\n")
        for f in self.console_logs(state, name).values():
            f.unlink(missing_ok=True)
        state["vms"].pop(name, None)
        self.save(state)
        return touched

    def locate(self, state: dict, name: str) -> dict:
        out = {"running_on": [], "defined_on": [], "states": {}}
        for h in state["hosts"]:
            if not self.host_pid(h):
                continue
            # No separate 'is the host up' call: domstate fails on a host that does not answer as on one
            # without the VM, and either way the VM is not there (a third fewer virsh calls per look-up).
            res = self.virsh(h, "domstate", name, check=False, timeout=15)
            if res.returncode != 0:
                continue
            out["states"][h["name"]] = res.stdout.strip()
            if res.stdout.strip() in ("running", "paused", "in shutdown"):
                out["running_on"].append(h["name"])
            if name in self.virsh(h, "list", "--all", "--persistent", "--name").stdout.split():
                out["defined_on"].append(h["name"])
        return out

    def marker(self, name: str, where: dict | None = None) -> dict:
        """Read the disk marker of a VM from the image on the host that holds it (``where``: the VM's place as
        ``locate`` or ``status`` gave it, when the caller has it already)."""
        state = self.load()
        vm = state["vms"].get(name)
        if not vm or not vm.get("disk_path"):
            raise LabError(f"VM '{name}' is not a lab VM with a disk")
        if where is None:
            where = self.locate(state, name)
        holders = where["running_on"] or where["defined_on"]
        found = {}
        for hn in holders:
            h = self.host(state, hn)
            path = vm["disk_path"]
            if path.startswith("/var/lib/libvirt/"):
                path = str(self.hdir(h) / "lib" / os.path.relpath(path, "/var/lib/libvirt"))
            try:
                with open(path, "rb") as f:
                    head = f.read(512).split(b"\n")[0].decode(errors="replace")
            except OSError as exc:
                head = f"<unreadable: {exc}>"
            found[hn] = head
        expected = f"FLEETMAINT-MARKER name={name} token={vm['token']}"
        # The disk says whether the collection kept the VM's storage; the console whether its guest survived
        # (QEMU 7.2's TCG can corrupt a guest it migrates, docs/lab.md): two facts, reported apart.
        return {"name": name, "expected": expected, "found": found, "guest": self.guest_health(state, name),
                "intact": bool(found) and all(v == expected for v in found.values())}

    # ------------------------------------------------------------- status
    def status(self) -> dict:
        state = self.load()
        hosts, vms = [], {}
        for h in state["hosts"]:
            listing = self.listing(h)
            up = listing is not None
            hosts.append({"name": h["name"], "addr": h["addr"], "uri": self.uri(h), "up": up,
                          "stack": h.get("stack", "old"),
                          "versions": (h.get("versions") or self.daemon_versions(h)) if up else {},
                          "tls_uri": self.uri(h, tls=True, pkipath=str(self.root / "client-pki")),
                          "cgroup": str(Path(CGROUP_ROOT) / self.cgroup(h))})
            if listing is None:
                continue
            persistent = set(self.virsh(h, "list", "--all", "--persistent", "--name",
                                        check=False, timeout=15).stdout.split())
            for line in listing.splitlines():
                parts = line.split(None, 2)
                if len(parts) < 3:
                    continue
                name, st = parts[1], parts[2].strip()
                v = vms.setdefault(name, {"running_on": [], "defined_on": [], "states": {}})
                v["states"][h["name"]] = st
                if st in ("running", "paused", "in shutdown"):
                    v["running_on"].append(h["name"])
                if name in persistent:
                    v["defined_on"].append(h["name"])
        for name, v in vms.items():
            v["created_on"] = state["vms"].get(name, {}).get("created_on")
        return {"state_dir": str(self.root), "hosts": hosts, "vms": vms,
                "faults": {"cuts": state["cuts"], "slows": state["slows"], "nics": state.get("nics", {})}}

    def inventory(self) -> str:
        state = self.load()
        lines = [
            "# Generated by 'labctl inventory': the fleetmaint lab as an Ansible inventory.",
            "all:",
            "  children:",
            "    hypervisors:",
            "      vars:",
            "        ansible_connection: local",
            "        ansible_python_interpreter: \"{{ ansible_playbook_python }}\"",
            f"        fleetmaint_libvirt_shared_pools: [{SHARED_POOL}]",
            "        # Lab only: plain TCP migration streams on loopback, and a shared directory that",
            "        # libvirt cannot recognise as shared storage (see docs/lab.md). Never in production.",
            "        fleetmaint_migration_tls: false",
            "        fleetmaint_migration_unsafe: true",
            f"        fleetmaint_lab_pkipath: {self.root / 'client-pki'}",
            "        # The lab's own tool and its state, for the lab patch step (roles/rolling_patch/tasks/patch_lab.yml).",
            f"        fleetmaint_lab_labctl: {HERE / 'labctl'}",
            f"        fleetmaint_lab_dir: {self.root}",
            f"        fleetmaint_lab_canary_xml: {json.dumps(self.canary_xml())}",
            "        # The stack the lab patch step upgrades a host to (new: libvirt 11.3 / QEMU 10.0; current: only",
            "        # restart its libvirtd where it is).",
            "        fleetmaint_lab_patch_stack: new",
            "      hosts:",
        ]
        for h in state["hosts"]:
            lines += [f"        {h['name']}:",
                      f"          fleetmaint_libvirt_uri: {self.uri(h)}",
                      f"          fleetmaint_libvirt_tls_uri: {self.uri(h, True, str(self.root / 'client-pki'))}",
                      f"          fleetmaint_libvirt_migration_uri: {self.uri(h)}",
                      f"          fleetmaint_lab_addr: {h['addr']}",
                      # Where this host's libvirtd reads /etc/libvirt from (the DR guard hook goes there).
                      f"          fleetmaint_libvirt_etc_dir: {self.hdir(h) / 'etc'}"]
        return "\n".join(lines) + "\n"

    # --------------------------------------------------------------- patch
    def patch(self, name: str, level: str, stack: str = "new") -> dict:
        """The lab's patch step, a real upgrade: the host's libvirtd restarts on ``stack`` (by default the new one:
        libvirt 11.3, QEMU 10.0), as after a package upgrade; its running guests and definitions stay. The
        "installed" patch level is recorded in the host's directory."""
        state = self.load()
        h = self.host(state, name)
        stack = h.get("stack", "old") if stack == "current" else stack
        f = self.hdir(h) / "patch-level"
        previous = f.read_text().strip() if f.exists() else None
        before = self.daemon_versions(h) if self.host_up(h) else {}
        done = self.set_stack(state, h, stack, restart=True)
        f.write_text(level + "\n")
        return {"host": h["name"], "previous": previous, "level": level, "stack": stack,
                "previous_stack": done["previous_stack"], "versions_before": before, "versions": done["versions"],
                "libvirtd_before": done["libvirtd_before"], "libvirtd_after": done["libvirtd_after"]}

    def canary_xml(self) -> str:
        """A tiny guest for health checks: no disk, no NIC, gone on reboot or crash."""
        g = self.root / "guest"
        return (f"<domain type='qemu'><name>fleetmaint-canary</name><memory unit='MiB'>{MIN_GUEST_MIB}</memory>"
                f"<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type><kernel>{g / 'vmlinuz'}</kernel>"
                f"<initrd>{g / 'initrd.img'}</initrd><cmdline>console=ttyS0 panic=-1 quiet fm.name=canary</cmdline>"
                "</os><cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>"
                "<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>"
                "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/></devices>"
                "</domain>")

    # -------------------------------------------------------------- faults
    def _ipt(self, table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["iptables", "-w", "-t", table, *args], check=check)

    def apply_faults(self, state: dict) -> None:
        """Rebuild iptables and tc from the recorded faults (idempotent).

        A cut drops what one host's processes send to the other's address, both ways.
        A slow link classifies those packets into an htb class on lo that limits their rate. A slow network
        card (``nic``) classifies everything one host's processes send into one class: all its migrations
        share that rate, as they would share the host's card.
        """
        hosts = {h["addr"]: h for h in state["hosts"]}
        for table in ("filter", "mangle"):
            if self._ipt(table, "-S", self.chain, check=False).returncode != 0:
                self._ipt(table, "-N", self.chain)
            if self._ipt(table, "-C", "OUTPUT", "-o", "lo", "-j", self.chain, check=False).returncode:
                self._ipt(table, "-I", "OUTPUT", "-o", "lo", "-j", self.chain)
            self._ipt(table, "-F", self.chain)
        for a, b in state["cuts"]:
            for s_, d in ((a, b), (b, a)):
                self._ipt("filter", "-A", self.chain, "-m", "cgroup", "--path", self.cgroup(hosts[s_]),
                          "-d", d, "-j", "DROP")
        run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
        nics = state.get("nics", {})
        if state["slows"] or nics:
            run(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1"])
            run(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "40gbit"])
            for i, (addr, mbps) in enumerate(sorted(nics.items()), start=100):
                rate = f"{int(mbps * 8)}mbit"
                run(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", f"1:{i}", "htb",
                     "rate", rate, "ceil", rate])
                self._ipt("mangle", "-A", self.chain, "-m", "cgroup", "--path", self.cgroup(hosts[addr]),
                          "-j", "CLASSIFY", "--set-class", f"1:{i}")
            for i, (a, b, mbps) in enumerate(state["slows"], start=10):
                rate = f"{int(mbps * 8)}mbit"
                run(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", f"1:{i}", "htb",
                     "rate", rate, "ceil", rate])
                # iptables puts the packet straight into the class: this kernel has no fw classifier.
                for s_, d in ((a, b), (b, a)):
                    self._ipt("mangle", "-A", self.chain, "-m", "cgroup", "--path", self.cgroup(hosts[s_]),
                              "-d", d, "-j", "CLASSIFY", "--set-class", f"1:{i}")

    def clear_faults(self) -> None:
        for table in ("filter", "mangle"):
            if self._ipt(table, "-S", self.chain, check=False).returncode == 0:
                self._ipt(table, "-D", "OUTPUT", "-o", "lo", "-j", self.chain, check=False)
                self._ipt(table, "-F", self.chain, check=False)
                self._ipt(table, "-X", self.chain, check=False)
        run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)

    def fault(self, action: str, args: list[str]) -> dict:
        state = self.load()
        if action in ("kill-host", "kill-libvirtd", "revive-host", "power"):
            h = self.host(state, args[0])
            if action == "kill-host":
                pids = self.kill_host(h)
                # A power cut empties /run (tmpfs): the next libvirtd starts as after a boot, so it
                # autostarts domains (libvirt autostarts once per boot, remembered under /run/libvirt).
                run_dir = self.hdir(h) / "run"
                for p in run_dir.iterdir() if run_dir.is_dir() else ():
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                return {"host": h["name"], "killed": pids}
            if action == "kill-libvirtd":
                pid = self.host_pid(h)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    while os.path.exists(f"/proc/{pid}"):
                        time.sleep(0.05)
                return {"host": h["name"], "killed": [pid] if pid else []}
            if action == "power":
                # What a BMC would say: "on" while any process of the host (libvirtd or a guest) lives.
                return {"host": h["name"], "power": "on" if self.host_processes(h) else "off"}
            self.start_host(state, h)
            return {"host": h["name"], "up": self.host_up(h)}
        if action == "nic":
            # labctl fault nic HOST MBPS: everything HOST sends shares MBPS MB/s (0: no limit).
            addr, mbps = self.host(state, args[0])["addr"], float(args[1])
            nics = {k: v for k, v in state.get("nics", {}).items() if k != addr}
            if mbps > 0:
                nics[addr] = mbps
            state["nics"] = nics
            self.save(state)
            self.apply_faults(state)
            return {"nics": nics}
        a, b = (self.host(state, x)["addr"] for x in args[:2])
        pair = sorted([a, b])
        if action == "cut":
            if pair not in state["cuts"]:
                state["cuts"].append(pair)
        elif action == "heal":
            state["cuts"] = [c for c in state["cuts"] if c != pair]
            state["slows"] = [s for s in state["slows"] if sorted(s[:2]) != pair]
        elif action == "slow":
            mbps = float(args[2])
            state["slows"] = [s for s in state["slows"] if sorted(s[:2]) != pair] + [[a, b, mbps]]
        else:
            raise LabError(f"unknown fault '{action}'")
        self.save(state)
        self.apply_faults(state)
        return {"cuts": state["cuts"], "slows": state["slows"]}

    def reach(self, src: str, dst: str, port: int = 16509, timeout: float = 2.0) -> dict:
        """Can host src's processes open a TCP connection to host dst? (what a cut blocks)"""
        state = self.load()
        a, b = self.host(state, src), self.host(state, dst)
        cg = Path(CGROUP_ROOT) / self.cgroup(a) / "cgroup.procs"
        code = (f"import socket\ntry:\n socket.create_connection(('{b['addr']}', {port}), timeout={timeout})\n"
                "except OSError:\n raise SystemExit(1)")
        res = run(["sh", "-c", f'echo $$ > {cg} && exec "$0" -c "$1"', sys.executable, code],
                  check=False, timeout=timeout + 10)
        return {"from": a["name"], "to": b["name"], "port": port, "reachable": res.returncode == 0}

    # ------------------------------------------------------ snapshot/restore
    # What a test may change and must give back: hosts up, faults, VMs and where they run, the
    # collection's marks and leases (libvirt secrets), fence records. 'restore' brings a lab back to a
    # snapshot after a test failed halfway, so one failure stays one failure.
    RESETTABLE_SECRETS = ("fleetmaint-maintenance", "fleetmaint-job", "fleetmaint-link")

    def forget_links(self) -> list[str]:
        """Remove the links the collection's jobs measured and kept on each host (a test that does not continue
        another starts with none, so that no test depends on what the tests before it measured)."""
        done = []
        for h in self.load()["hosts"]:
            if self.host_up(h):
                uuid_ = self.secrets(h).get("fleetmaint-link")
                if uuid_:
                    self.virsh(h, "secret-undefine", uuid_, check=False)
                    done.append(f"forgot the link kept on {h['name']}")
        return done

    def secrets(self, h: dict) -> dict:
        """usage name -> UUID of this host's fleetmaint secrets."""
        out = {}
        for line in self.virsh(h, "secret-list", check=False, timeout=15).stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].startswith("fleetmaint-"):
                out[parts[2]] = parts[0]
        return out

    def snapshot(self) -> dict:
        state = self.load()
        st = self.status()
        up = {h["name"]: h["up"] for h in st["hosts"]}
        return {"hosts_up": up, "faults": st["faults"],
                "stacks": {h["name"]: h.get("stack", "old") for h in state["hosts"]},
                "vms": {n: {"running_on": sorted(v["running_on"]), "defined_on": sorted(v["defined_on"]),
                            "states": v["states"]} for n, v in st["vms"].items()},
                "secrets": {h["name"]: sorted(self.secrets(h)) for h in state["hosts"] if up[h["name"]]},
                "fence": sorted(p.name for p in (self.root / "fence").glob("*.fenced"))}

    def restore(self, snap: dict) -> list[str]:
        """Bring the lab back to ``snap``; returns what was done, one line each."""
        done = []
        state = self.load()
        for h in state["hosts"]:
            want_stack = snap.get("stacks", {}).get(h["name"], "old")
            if h.get("stack", "old") != want_stack:
                # Back to the snapshot's stack. Guests a newer QEMU runs cannot be handed to an older libvirtd:
                # they go, and the VM pass below makes the snapshot's VMs again.
                if STACKS.index(want_stack) < STACKS.index(h.get("stack", "old")) and self.host_up(h):
                    for name in self.running_guests(h):
                        self.vm_delete(name)
                        done.append(f"deleted {name} from {h['name']} (to take it back to the '{want_stack}' stack)")
                self.set_stack(state, h, want_stack)
                done.append(f"took {h['name']} back to the '{want_stack}' stack")
                state = self.load()
        for h in state["hosts"]:
            if snap["hosts_up"].get(h["name"]) and not self.host_up(h):
                self.start_host(state, h)
                done.append(f"revived {h['name']}")
        state = self.load()
        want = [snap["faults"]["cuts"], snap["faults"]["slows"], snap["faults"].get("nics", {})]
        if [state["cuts"], state["slows"], state.get("nics", {})] != want:
            state["cuts"], state["slows"], state["nics"] = want
            self.save(state)
            self.apply_faults(state)
            done.append("faults reset to the snapshot's")
        now = self.status()["vms"]
        for name, v in sorted(now.items()):
            want = snap["vms"].get(name)
            here = {"running_on": sorted(v["running_on"]), "defined_on": sorted(v["defined_on"]), "states": v["states"]}
            if want is None:
                self.vm_delete(name)
                done.append(f"deleted {name} (created by the test)")
            elif here != want:
                done.append(self._recreate(name, want, here))
        for name, want in sorted(snap["vms"].items()):
            if name not in now:
                done.append(self._recreate(name, want, None))
        for h in state["hosts"]:
            if not self.host_up(h):
                continue
            keep = set(snap["secrets"].get(h["name"], []))
            for usage, uuid_ in self.secrets(h).items():
                if usage in self.RESETTABLE_SECRETS and usage not in keep:
                    self.virsh(h, "secret-undefine", uuid_, check=False)
                    done.append(f"removed {usage} from {h['name']}")
        for f in (self.root / "fence").glob("*.fenced"):
            if f.name not in snap["fence"]:
                f.unlink()
                done.append(f"removed fence record {f.name}")
        return done

    def _recreate(self, name: str, want: dict, here: dict | None) -> str:
        """A VM the snapshot had, now elsewhere or in another state: made again as the snapshot had it."""
        spec = self.load()["vms"].get(name)
        hosts = want["running_on"] or want["defined_on"] or list(want["states"])
        if spec is None or not hosts:
            return f"left {name} as it is: not a lab VM, or the snapshot has no host for it"
        self.vm_delete(name)
        states = set(want["states"].values())
        start = bool(want["running_on"])
        self.vm_create(name, hosts[0], spec["memory"], spec.get("vcpus", 1), spec["dirty_mb"], spec["dirty_rate"],
                       spec["disk"], spec.get("size", 16), start=start, home=spec.get("home", True),
                       network=spec.get("network", NETWORK), pool=spec["pool"] if spec["disk"] != "none" else None)
        h = self.host(self.load(), hosts[0])
        if "paused" in states:
            self.virsh(h, "suspend", name)
        if start and not want["defined_on"]:
            self.virsh(h, "undefine", name)  # it was transient
        return f"recreated {name} on {hosts[0]} (was {here}, snapshot {want})"

    # ---------------------------------------------------------------- down
    def down(self) -> None:
        if not self.state_file.exists():
            log(f"no lab at {self.root}")
            return
        state = self.load()
        for h in state["hosts"]:
            self.kill_host(h, signal.SIGTERM)
            self.kill_host(h)
        self.clear_faults()
        run(["ip", "link", "del", state["bridge"]], check=False)
        leftovers = [p for h in state["hosts"] for p in self.host_processes(h)]
        if leftovers:
            raise LabError(f"processes still alive after down: {leftovers}")
        for h in state["hosts"]:
            try:
                (Path(CGROUP_ROOT) / self.cgroup(h)).rmdir()
            except OSError:
                pass
        shutil.rmtree(self.root / "hosts", ignore_errors=True)
        shutil.rmtree(self.root / "shared", ignore_errors=True)
        shutil.rmtree(self.root / "vms", ignore_errors=True)
        shutil.rmtree(self.root / "pki", ignore_errors=True)
        shutil.rmtree(self.root / "client-pki", ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        # The guest kernel and initramfs stay cached under guest/ ('down --purge' removes them).


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="labctl", description=__doc__.split("\n\n", maxsplit=1)[0])
    p.add_argument("--state-dir", default=DEFAULT_STATE, help="where the lab lives (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the lab (idempotent)")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--first-addr", default="127.0.0.2")
    up.add_argument("--bridge", default="br-lab")
    up.add_argument("--stack", choices=STACKS, help="run the hosts on this stack: old (this machine's libvirt and "
                    "QEMU) or new (Debian 13's, built once per machine); default: each host stays on its own")
    up.add_argument("--host", action="append", dest="only", help="with --stack: only this host (repeatable)")
    sk = sub.add_parser("stack", help="the software stacks hosts run on")
    sk.add_argument("action", choices=["build", "status"])
    sk.add_argument("name", nargs="?", default="new", choices=STACKS)
    dn = sub.add_parser("down", help="stop everything and remove the lab's state")
    dn.add_argument("--purge", action="store_true", help="also remove the cached guest kernel")
    st = sub.add_parser("status", help="hosts and VMs")
    st.add_argument("--json", action="store_true", dest="json_sub")
    sub.add_parser("inventory", help="print an Ansible YAML inventory of the lab")
    sub.add_parser("snapshot", help="print what a test may change (hosts, faults, VMs, marks, leases, fence records)")
    rs = sub.add_parser("restore", help="bring the lab back to a snapshot (after a failed test)")
    rs.add_argument("snapshot", help="a file written from 'labctl snapshot'")
    sub.add_parser("forget-links", help="remove the migration links the collection's jobs kept on the hosts")
    vm = sub.add_parser("vm", help="create or delete lab VMs")
    vsub = vm.add_subparsers(dest="vmcmd", required=True)
    c = vsub.add_parser("create")
    c.add_argument("name")
    c.add_argument("--host", required=True)
    c.add_argument("--memory", type=int, default=128, help="MiB")
    c.add_argument("--vcpus", type=int, default=1)
    c.add_argument("--dirty-mb", type=int, default=0)
    c.add_argument("--dirty-rate", type=float, default=0.0, help="MB/s")
    c.add_argument("--disk", choices=["shared", "local", "none"], default="shared")
    c.add_argument("--size", type=int, default=16, help="disk MiB")
    c.add_argument("--network", default=NETWORK, help="libvirt network of its NIC (default %(default)s)")
    c.add_argument("--pool", help="storage pool for its disk (default: shared or local by --disk)")
    c.add_argument("--no-start", action="store_true")
    c.add_argument("--no-home", action="store_true", help="do not record the home host in metadata")
    c.add_argument("--no-wait", action="store_true", help="return at once instead of when the guest has booted")
    c.add_argument("--crash-after", type=float, help="the guest kernel crashes this many seconds after booting "
                   "(tests of crash detection)")
    d = vsub.add_parser("delete")
    d.add_argument("name")
    fl = sub.add_parser("fleet", help="make a fleet file's VMs run, once each (creates, starts, repairs)")
    fl.add_argument("action", choices=["ensure"])
    fl.add_argument("file", help="lines of: name host memory-MiB disk(shared|local|none) [dirty-mb dirty-rate]")
    m = vsub.add_parser("marker", help="read a VM's disk marker where it lives (several VMs: name -> marker)")
    m.add_argument("name", nargs="+")
    r = sub.add_parser("reach", help="can host A's processes reach host B's libvirtd? (exit 0 if yes)")
    r.add_argument("src")
    r.add_argument("dst")
    pa = sub.add_parser("patch", help="the lab's patch step: upgrade a host (its libvirtd restarts on the new "
                        "stack), record its patch level")
    pa.add_argument("host")
    pa.add_argument("--level", required=True)
    pa.add_argument("--stack", choices=STACKS + ("current",), default="new",
                    help="the stack it ends on (default %(default)s; current: only restart libvirtd where it is)")
    f = sub.add_parser("fault", help="inject faults")
    f.add_argument("action", choices=["kill-host", "revive-host", "kill-libvirtd", "power", "cut", "heal", "slow", "nic"])
    f.add_argument("args", nargs="+")
    a = p.parse_args(argv)
    lab = Lab(a.state_dir)
    as_json = a.json or getattr(a, "json_sub", False)
    reads_only = (a.cmd in ("status", "snapshot", "inventory", "reach", "stack")
                  or (a.cmd == "vm" and a.vmcmd == "marker") or (a.cmd == "fault" and a.action == "power"))
    with contextlib.ExitStack() as held:
        if not reads_only:
            held.enter_context(lab.locked())
        return _run(lab, a, as_json)


def _run(lab: Lab, a: argparse.Namespace, as_json: bool) -> int:
    try:
        if a.cmd == "up":
            if a.only and not a.stack:
                raise LabError("--host is used with --stack")
            state = lab.up(a.hosts, a.first_addr, a.bridge, stack=a.stack, only=a.only)
            out = {"hosts": [{"name": h["name"], "uri": lab.uri(h), "stack": h.get("stack", "old")}
                             for h in state["hosts"]]}
            text = "\n".join(f"{h['name']}  {lab.uri(h)}  up ({h.get('stack', 'old')} stack)" for h in state["hosts"])
        elif a.cmd == "stack":
            out = lab.ensure_stack(a.name) if a.action == "build" else lab.stack_info(a.name)
            text = json.dumps(out, indent=2)
        elif a.cmd == "down":
            lab.down()
            if a.purge:
                shutil.rmtree(lab.root, ignore_errors=True)
            out, text = {"down": True}, "lab is down"
        elif a.cmd == "status":
            out = lab.status()
            rows = [f"{h['name']:6} {h['addr']:12} {'up' if h['up'] else 'DOWN':4} {h['stack']:3} stack: "
                    f"libvirt {h['versions'].get('libvirt') or '?'}, QEMU {h['versions'].get('qemu') or '?'}"
                    for h in out["hosts"]]
            for n, v in sorted(out["vms"].items()):
                rows.append(f"  vm {n:16} running_on={','.join(v['running_on']) or '-'} "
                            f"defined_on={','.join(v['defined_on']) or '-'} states={v['states']}")
            text = "\n".join(rows)
        elif a.cmd == "fleet":
            out = lab.fleet_ensure(a.file)
            text = "\n".join(f"{n}: {what}" for n, what in out.items())
        elif a.cmd == "snapshot":
            out = lab.snapshot()
            text = json.dumps(out, indent=2, sort_keys=True)
        elif a.cmd == "restore":
            done = lab.restore(json.loads(Path(a.snapshot).read_text()))
            out, text = {"done": done}, "\n".join(done) or "nothing to restore"
        elif a.cmd == "forget-links":
            done = lab.forget_links()
            out, text = {"done": done}, "\n".join(done) or "no link kept"
        elif a.cmd == "inventory":
            text = lab.inventory()
            out = {"inventory": text}
        elif a.cmd == "vm":
            if a.vmcmd == "create":
                out = lab.vm_create(a.name, a.host, a.memory, a.vcpus, a.dirty_mb, a.dirty_rate,
                                    a.disk, a.size, start=not a.no_start, home=not a.no_home,
                                    network=a.network, pool=a.pool, wait=not a.no_wait,
                                    crash_after=a.crash_after)
                text = f"created {a.name} on {out['host']}"
            elif a.vmcmd == "delete":
                out = {"deleted_from": lab.vm_delete(a.name)}
                text = f"deleted {a.name} from {', '.join(out['deleted_from']) or 'nowhere'}"
            elif len(a.name) == 1:
                out = lab.marker(a.name[0])
                text = json.dumps(out)
            else:  # several VMs (tests waiting for guests to boot): one listing of the hosts for all of them
                vms = lab.status()["vms"]
                out = {n: lab.marker(n, where=vms.get(n, {"running_on": [], "defined_on": [], "states": {}}))
                       for n in a.name}
                text = json.dumps(out)
        elif a.cmd == "patch":
            out = lab.patch(a.host, a.level, a.stack)
            vb, va = out["versions_before"], out["versions"]
            text = (f"{out['host']}: libvirtd restarted on the {out['stack']} stack (libvirt {vb.get('libvirt')} -> "
                    f"{va.get('libvirt')}, QEMU {vb.get('qemu')} -> {va.get('qemu')}), "
                    f"patch level {out['previous']} -> {out['level']}")
        elif a.cmd == "reach":
            out = lab.reach(a.src, a.dst)
            text = json.dumps(out)
            print(json.dumps(out, indent=2) if as_json else text)
            return 0 if out["reachable"] else 3
        else:
            out = lab.fault(a.action, a.args)
            text = json.dumps(out)
            if a.action == "power":  # exit 0 when on, 3 when off: usable as a DR probe
                print(json.dumps(out, indent=2) if as_json else out["power"])
                return 0 if out["power"] == "on" else 3
    except LabError as exc:
        print(f"labctl: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2) if as_json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
