"""Integration tests against a real lab: real libvirtd daemons, real TCG guests, real migrations.

The lab under test has its own state directory, loopback addresses and bridge, so it
never collides with the demo lab. It is brought up once per session and brought down
at the end (the last test checks that nothing is left behind).

One failure stays one failure: before each test the lab is snapshotted (``labctl snapshot``), and
after a test that failed it is brought back to that snapshot (``labctl restore``: hosts revived, faults
healed, the test's VMs deleted, moved ones put back, marks, leases and fence records removed). A test
that needs an earlier one to have passed says so with ``@pytest.mark.after("test_name")`` and is
skipped when that one failed; any other test starts without the links earlier jobs kept on the hosts.
Every ansible-playbook a test runs writes its whole output under ``.build/test-logs/``; a failure names
the file, and the end of the run lists those of failed tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LABCTL = [sys.executable, str(REPO / "lab" / "labctl.py")]
STATE_DIR = os.environ.get("FLEETMAINT_TEST_LAB_DIR", "/var/tmp/fleetmaint-lab-test")
FIRST_ADDR = os.environ.get("FLEETMAINT_TEST_LAB_ADDR", "127.0.0.12")
BRIDGE = os.environ.get("FLEETMAINT_TEST_LAB_BRIDGE", "br-labtest")
LOG_DIR = Path(os.environ.get("FLEETMAINT_TEST_LOG_DIR", REPO / ".build" / "test-logs"))
CRASHES = Path(STATE_DIR) / "guest-crashes.jsonl"  # labctl appends a line when it deletes a crashed guest

_CURRENT = {"test": "session", "logs": []}  # the running test and the playbook logs it wrote
_OUTCOMES: dict = {}  # test name -> "passed" / "failed" (for @pytest.mark.after)
_FAILED_LOGS: list = []  # (test, [log files]) of failed tests, listed at the end of the run


def _keep_log(playbook: str, cmd: list, res) -> Path:
    """Write one ansible-playbook run's whole output under .build/test-logs/; the path."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", _CURRENT["test"])[-120:]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    f = LOG_DIR / f"{test}-{len(_CURRENT['logs']) + 1:02d}-{Path(playbook).stem}.log"
    f.write_text(f"$ {' '.join(cmd)}\n# exit {res.returncode}\n\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}\n")
    _CURRENT["logs"].append(f)
    return f


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.inventory = tmp / "inventory.yml"
        self._uris: dict = {}  # host name -> libvirt URI (see uri)

    def ctl(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        res = subprocess.run(LABCTL + ["--state-dir", STATE_DIR, *args], capture_output=True, text=True,
                             timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"labctl {' '.join(args)} failed: {res.stderr}")
        return res

    def status(self) -> dict:
        return json.loads(self.ctl("status", "--json").stdout)

    def host(self, name: str) -> dict:
        return next(h for h in self.status()["hosts"] if h["name"] == name)

    def uri(self, name: str) -> str:
        """A host's libvirt URI. It follows from the host's address, which stays the same for the lab's life
        (a host restarted, killed or moved to another stack keeps it), so it is read once: every virsh call of a
        test used to cost a whole 'labctl status' (0.4 s, 9 virsh calls) just for it."""
        if name not in self._uris:
            self._read_uris()
        return self._uris[name]

    def _read_uris(self) -> None:
        self._uris.update({h["name"]: h["uri"] for h in self.status()["hosts"]})

    def where(self, vm: str) -> dict:
        return self.status()["vms"].get(vm, {"running_on": [], "defined_on": [], "states": {}})

    def marker(self, vm: str) -> dict:
        return json.loads(self.ctl("vm", "marker", vm).stdout)

    def markers(self, vms) -> dict:
        """vm -> marker of several VMs, read in one labctl call (one listing of the hosts for all)."""
        vms = list(vms)
        if len(vms) == 1:
            return {vms[0]: self.marker(vms[0])}
        return json.loads(self.ctl("vm", "marker", *vms).stdout)

    def home_host(self, vm: str, host: str):
        """The home host recorded in the VM's own metadata (as the collection writes it), or None."""
        xml = self.virsh(host, "metadata", vm, "https://github.com/fleetmaint/libvirt/xmlns/1",
                         check=False).stdout
        m = re.search(r"<home>([^<]+)</home>", xml)
        return m.group(1).strip() if m else None

    def virsh(self, host: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        res = subprocess.run(["virsh", "-q", "-c", self.uri(host), *args], capture_output=True, text=True,
                             timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} on {host} failed: {res.stderr}")
        return res

    def note(self, host: str, usage: str):
        """A note the collection keeps on the host (the JSON of its libvirt secret of that usage), or None."""
        uuid_ = next((ln.split()[0] for ln in self.virsh(host, "secret-list").stdout.splitlines() if usage in ln), None)
        if uuid_ is None:
            return None
        return json.loads(ET.fromstring(self.virsh(host, "secret-dumpxml", uuid_).stdout).findtext("description"))

    def playbook(self, playbook: str, *flags: str, check: bool = True, **extra_vars) -> subprocess.CompletedProcess:
        cmd = ["ansible-playbook", "-i", str(self.inventory), str(REPO / playbook),
               "-e", json.dumps(extra_vars), *flags]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                             env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "tests" / "ansible.cfg")), check=False)
        log = _keep_log(playbook, cmd, res)
        if check and res.returncode != 0:
            raise AssertionError(f"ansible-playbook {playbook} failed (whole output: {log}):\n"
                                 f"{res.stdout[-6000:]}\n{res.stderr[-3000:]}")
        return res

    def playbook_cmd(self, playbook: str, var: str, args: dict, *flags: str) -> tuple:
        """The command running one of tests/lab/playbooks with its options in 'var', and its result file."""
        out = self.tmp / f"{var}-{time.monotonic_ns()}.json"
        cmd = ["ansible-playbook", str(REPO / "tests" / "lab" / "playbooks" / playbook),
               "-e", json.dumps({var: args, "result_file": str(out)}), *flags]
        return cmd, out

    def run_test_playbook(self, playbook: str, var: str, args: dict, *flags: str) -> dict:
        """Run one of tests/lab/playbooks; the registered result, with 'stdout' added."""
        cmd, out = self.playbook_cmd(playbook, var, args, *flags)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                             env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "tests" / "ansible.cfg")))
        log = _keep_log(playbook, cmd, res)
        if not out.exists():
            raise AssertionError(f"{playbook} produced no result (whole output: {log}):\n"
                                 f"{res.stdout[-4000:]}\n{res.stderr[-2000:]}")
        result = json.loads(out.read_text())
        result["stdout"] = res.stdout
        result["log"] = str(log)
        return result

    def migrate_cmd(self, mig: dict) -> tuple:
        """The ansible-playbook command for one live_migrate (to run in the background), and its result file."""
        return self.playbook_cmd("live_migrate.yml", "mig", mig)

    def migrate(self, check_mode: bool = False, **mig) -> dict:
        """Run live_migrate through ansible-playbook."""
        return self.run_test_playbook("live_migrate.yml", "mig", mig, *(["--check"] if check_mode else []))

    def check(self, **chk) -> dict:
        """Run migration_check through ansible-playbook."""
        return self.run_test_playbook("migration_check.yml", "chk", chk)

    def baseline(self, *flags: str, **bl) -> dict:
        """Run cpu_baseline through ansible-playbook (flags such as --check, --diff)."""
        return self.run_test_playbook("cpu_baseline.yml", "bl", bl, *flags)

    def evacuate(self, *flags: str, **hm) -> dict:
        """Run host_evacuate through ansible-playbook."""
        return self.run_test_playbook("host_move.yml", "hm", hm, "-e", "action=evacuate", *flags)

    def restore(self, *flags: str, **hm) -> dict:
        """Run host_restore through ansible-playbook."""
        return self.run_test_playbook("host_move.yml", "hm", hm, "-e", "action=restore", *flags)

    def dr_vars(self, hosts: str, backup_dir: str, **extra) -> dict:
        """Variables of playbooks/disaster_recovery.yml for this lab: the lab's probes (libvirt, and
        'labctl fault power' as the BMC), its fence step, and fence records under the lab's directory."""
        v = {"hosts_": hosts, "disaster_recovery_backup_dir": backup_dir,
             "disaster_recovery_fence_record_dir": f"{STATE_DIR}/fence",
             "disaster_recovery_probe_tcp_ports": [],
             "disaster_recovery_probe_commands": [["{{ fleetmaint_lab_labctl }}", "--state-dir",
                                                   "{{ fleetmaint_lab_dir }}", "fault", "power",
                                                   "{{ inventory_hostname }}"]],
             "disaster_recovery_probe_timeout": 3,
             "disaster_recovery_fence_tasks": "fence_labctl.yml",
             "disaster_recovery_memory_headroom": 256}
        v.update(extra)
        return v

    def uris(self) -> list:
        if not self._uris:
            self._read_uris()
        return list(self._uris.values())

    def invariant(self, vms) -> dict:
        """Every VM runs on exactly one host and is defined on exactly that one; returns vm -> host."""
        st = self.status()["vms"]
        where = {}
        for vm in vms:
            v = st.get(vm, {"running_on": [], "defined_on": []})
            assert len(v["running_on"]) == 1, f"{vm} runs on {v['running_on']}"
            assert v["defined_on"] == v["running_on"], f"{vm} runs on {v['running_on']}, defined on {v['defined_on']}"
            where[vm] = v["running_on"][0]
        return where

    def create_at_once(self, on: dict, *create_args: str, timeout: float = 120, each: dict | None = None) -> list:
        """Create VMs (name -> host) and boot them all at once (one after another is slower on TCG); returns
        once every guest says it is up, its disk marker written (a guest crashing at boot fails it).
        ``create_args`` are given to every VM, ``each`` (name -> list) to one VM more; every VM needs a disk."""
        for vm, host in on.items():
            self.ctl("vm", "create", vm, "--host", host, *create_args, *(each or {}).get(vm, ()), "--no-wait")

        def up() -> bool:
            ms = list(self.markers(on).values())
            crashed = [m["guest"]["crash"] for m in ms if m["guest"]["crashed"]]
            assert not crashed, f"a guest crashed while booting: {crashed}"
            return all(m["intact"] and m["guest"]["booted"] for m in ms)
        wait_for(up, timeout, interval=0.5, what=f"{', '.join(on)} to boot")
        return list(on)

    @contextlib.contextmanager
    def booted(self, on: dict, *create_args: str, timeout: float = 120):
        """create_at_once, and the VMs deleted afterwards whatever happened."""
        try:
            yield self.create_at_once(on, *create_args, timeout=timeout)
        finally:
            for vm in on:
                self.ctl("vm", "delete", vm, check=False)

    def start_playbook(self, cmd: list, **popen) -> subprocess.Popen:
        """Start an ansible-playbook command in the background (for faults injected while it runs)."""
        popen.setdefault("stdout", subprocess.DEVNULL)
        popen.setdefault("stderr", subprocess.DEVNULL)
        return subprocess.Popen(cmd, text=True, env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "tests" / "ansible.cfg")),
                                **popen)

    def wait_for_migration_job(self, host: str, vms: list, timeout: float = 90) -> None:
        """Wait until one of ``vms`` has a migration job running on ``host``."""
        wait_for(lambda: any("Unbounded" in self.virsh(host, "domjobinfo", vm, check=False).stdout for vm in vms),
                 timeout, interval=0.3, what=f"a migration to start on {host}")

    def placement(self, vm: str) -> tuple:
        w = self.where(vm)
        return sorted(w["running_on"]), sorted(w["defined_on"])

    def facts(self) -> dict:
        """hypervisor_info of every lab host, gathered through ansible-playbook."""
        out = self.tmp / f"facts-{time.monotonic_ns()}"
        out.mkdir()
        self.playbook("playbooks/fleet_facts.yml", fleetmaint_facts_dir=str(out))
        return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def wait_for(pred, timeout: float = 60, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        val = pred()
        if val:
            return val
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the lab needs root")
    tmp = tmp_path_factory.mktemp("lab")
    lab = Lab(tmp)
    lab.ctl("down", check=False)
    CRASHES.unlink(missing_ok=True)
    lab.ctl("up", "--hosts", "3", "--first-addr", FIRST_ADDR, "--bridge", BRIDGE, timeout=900)
    inventory = lab.ctl("inventory").stdout
    # The lab patch step only restarts libvirtd where it is (the rolling patch tests are about moves); the
    # rolling upgrade tests ask for the new stack themselves (test_rolling_upgrade.py).
    assert "fleetmaint_lab_patch_stack: new" in inventory
    lab.inventory.write_text(inventory.replace("fleetmaint_lab_patch_stack: new", "fleetmaint_lab_patch_stack: current"))
    yield lab
    # Normally the last test already brought it down; make sure even after failures.
    lab.ctl("down", check=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "after(test): run only if that earlier test of the session passed")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep
    if rep.failed or (rep.when == "call" and rep.passed and item.name not in _OUTCOMES):
        _OUTCOMES[item.originalname if hasattr(item, "originalname") else item.name] = \
            "failed" if rep.failed else "passed"


@pytest.fixture(autouse=True)
def lab_restored_after_failure(request):
    """Snapshot the lab before each test that uses it; after a failure, bring it back to that snapshot."""
    for m in request.node.iter_markers("after"):
        for dep in m.args:
            if _OUTCOMES.get(dep) == "failed":
                pytest.skip(f"needs {dep}, which failed")
    _CURRENT.update(test=request.node.nodeid.split("::", 1)[-1], logs=[])
    if "lab" not in request.fixturenames:
        yield
        return
    lab = request.getfixturevalue("lab")
    snap = lab.tmp / f"snapshot-{time.monotonic_ns()}.json"
    snap.write_text(lab.ctl("snapshot", timeout=120).stdout)
    if not any(request.node.iter_markers("after")) and \
            any("fleetmaint-link" in usages for usages in json.loads(snap.read_text())["secrets"].values()):
        # The links jobs measured and kept on the hosts: a test that does not continue another starts without
        # them, so that what a host's link is taken to be never depends on the tests that ran before.
        lab.ctl("forget-links", timeout=60)
    yield
    logs = list(_CURRENT["logs"])
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        if logs:
            _FAILED_LOGS.append((request.node.nodeid, logs))
        res = lab.ctl("restore", str(snap), check=False, timeout=600)
        print(f"\nlab restored after {request.node.name} failed:\n{res.stdout}{res.stderr}")
        if res.returncode != 0:
            pytest.exit(f"the lab could not be restored after {request.node.nodeid}: {res.stderr}", returncode=1)


def guest_crashes() -> list:
    """Guest kernels that crashed in this run's lab (see docs/lab.md: QEMU 7.2's TCG loses dirty pages)."""
    try:
        return [json.loads(line) for line in CRASHES.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def pytest_terminal_summary(terminalreporter):
    """Guest crashes seen, and the playbook logs of failed tests, at the very end where CI's output ends."""
    crashes = guest_crashes()
    terminalreporter.write_sep("=", f"lab guest kernels that crashed in this run: {len(crashes)}")
    for c in crashes:
        terminalreporter.write_line(f"  {c['vm']}: {c['crash']}")
    if not _FAILED_LOGS:
        return
    terminalreporter.write_sep("=", "ansible-playbook output of failed tests")
    for nodeid, logs in _FAILED_LOGS:
        terminalreporter.write_line(nodeid)
        for f in logs:
            terminalreporter.write_line(f"  {f}")
