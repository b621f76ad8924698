"""What every fault must keep (brief, section 5), checked the same way by every lab test that injects one.

- ``NeverTwice`` samples the whole lab over and over while something runs and records any VM found
  running on two hosts at once. A host whose libvirtd does not answer is read from its QEMU processes
  (its cgroup), so a VM still running on a "dead" host is seen.
- ``check`` asserts the steady-state invariants: every VM runs on exactly one host, is persistently
  defined there only, its disk marker is intact, its home host is unchanged.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import libvirt

libvirt.registerErrorHandler(lambda *_: None, None)  # probing dead hosts is expected to fail quietly


def _qemu_guests(cgroup: str) -> set:
    """Names of the guests whose QEMU process lives in this host's cgroup."""
    names = set()
    try:
        pids = (Path(cgroup) / "cgroup.procs").read_text().split()
    except OSError:
        return names
    for pid in pids:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not args or b"qemu-system" not in args[0]:
            continue
        for i, a in enumerate(args[:-1]):
            if a == b"-name":
                names.add(args[i + 1].decode().split(",")[0].removeprefix("guest="))
    return names


class NeverTwice(threading.Thread):
    """Sample until stop(); ``violations`` lists (time, vm, hosts) seen running on two hosts at once."""

    def __init__(self, hosts: list, vms: list, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="never-twice")
        self.hosts = hosts  # labctl status "hosts" entries: name, uri, cgroup
        self.vms = set(vms)
        self.interval = interval
        self.samples = 0
        self.violations: list = []
        self.seen_on: dict = {vm: set() for vm in vms}
        self.errors: list = []
        self._halt = threading.Event()
        self._conns: dict = {}

    def _running(self, h: dict) -> set:
        conn = self._conns.get(h["name"])
        try:
            if conn is None:
                conn = self._conns[h["name"]] = libvirt.openReadOnly(h["uri"])
            return {d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                    if d.state()[0] == libvirt.VIR_DOMAIN_RUNNING} & self.vms
        except libvirt.libvirtError:
            self._conns.pop(h["name"], None)
            # libvirtd does not answer: whatever QEMU still runs there counts as running.
            return _qemu_guests(h["cgroup"]) & self.vms

    def sample(self) -> dict:
        where: dict = {}
        for h in self.hosts:
            for vm in self._running(h):
                where.setdefault(vm, []).append(h["name"])
        return where

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                where = self.sample()
                self.samples += 1
                for vm, hs in where.items():
                    self.seen_on[vm].update(hs)
                suspects = {vm for vm, hs in where.items() if len(hs) > 1}
                if suspects:
                    # Hosts are read one after the other: a live migration's hand-over between two reads
                    # looks like two copies. Read again; a real second copy is still there.
                    again = self.sample()
                    for vm in suspects:
                        if len(again.get(vm, [])) > 1:
                            self.violations.append((time.time(), vm, again[vm]))
            except Exception as exc:  # pylint: disable=broad-except
                self.errors.append(repr(exc))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)
        for c in self._conns.values():
            try:
                c.close()
            except libvirt.libvirtError:
                pass


def check(lab, vms: dict, markers: bool = True) -> dict:
    """vms: name -> expected home host (or None to skip). Asserts every invariant; returns vm -> host it runs on.

    Every VM runs on exactly one host and is persistently defined on exactly that one, its disk marker
    reads back intact, and its recorded home host is unchanged.
    """
    st = lab.status()["vms"]
    where = {}
    for vm, home in vms.items():
        v = st.get(vm, {"running_on": [], "defined_on": []})
        assert len(v["running_on"]) == 1, f"{vm} runs on {v['running_on'] or 'no host'}"
        assert v["defined_on"] == v["running_on"], f"{vm} runs on {v['running_on']}, defined on {v['defined_on']}"
        where[vm] = v["running_on"][0]
        if markers:
            m = lab.marker(vm)
            assert m["intact"], f"{vm}'s disk marker: {m}"
        if home:
            got = lab.home_host(vm, where[vm])
            assert got == home, f"{vm}'s home host is {got}, expected {home}"
    return where


def verify(lab, vms: dict, *, message: str | None = None, names: tuple = (), rerun=None,
           markers: bool = True) -> list:
    """The invariants of brief section 5 as a list of (check, passed, detail), asserting nothing.

    vms: name -> expected home host. message/names: a failure message must name each of names (the VM,
    the hosts, the step). rerun: a callable running the same job again; it must succeed, and the
    placement invariants must hold again afterwards.
    """
    checks = []

    def placement_checks(when: str) -> None:
        st = lab.status()["vms"]
        for vm, home in vms.items():
            v = st.get(vm, {"running_on": [], "defined_on": []})
            one = len(v["running_on"]) == 1
            checks.append((f"{vm} runs on exactly one host{when}", one, f"runs on {v['running_on']}"))
            checks.append((f"{vm} is defined on that host only{when}", one and v["defined_on"] == v["running_on"],
                           f"defined on {v['defined_on']}"))
            if not one:
                continue
            host = v["running_on"][0]
            if markers:
                m = lab.marker(vm)
                checks.append((f"{vm} disk marker intact{when}", bool(m.get("intact")), str(m.get("found"))))
            if home:
                got = lab.home_host(vm, host)
                checks.append((f"{vm} home host unchanged{when}", got == home, f"home {got}, expected {home}"))

    placement_checks("")
    if message is not None:
        missing = [n for n in names if n not in message]
        checks.append(("failure message names " + ", ".join(names), not missing,
                       f"missing {missing} in: {message[:300]}"))
    if rerun is not None:
        res = rerun()
        ok = not res.get("failed")
        checks.append(("re-run succeeds", ok, str(res.get("msg"))[:300]))
        placement_checks(" after re-run")
    return checks


def failed_checks(checks: list) -> list:
    return [f"{name}: {detail}" for name, ok, detail in checks if not ok]
