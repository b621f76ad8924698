"""Limits across jobs: two evacuations at once into one destination (and then two restores out of it) never run
more moves into (out of) that host than its limit, because each move takes a slot counted on the host itself.
Real migrations, slowed by libvirt's bandwidth cap so that the two jobs really contend."""

from __future__ import annotations

import json
import threading

import libvirt
import pytest

ON = {"lab1": ["sl-a", "sl-b"], "lab2": ["sl-c", "sl-d"]}
VMS = [vm for vms in ON.values() for vm in vms]
ONE = {"per_source": 1, "per_destination": 1, "fleet": 2}


@pytest.fixture
def two_hosts_of_vms(lab):
    with lab.booted({vm: host for host, vms in ON.items() for vm in vms}, "--disk", "shared"):
        yield ON


class Moves(threading.Thread):
    """The migration jobs running on the given hosts (one per VM leaving them), sampled until stop()."""

    def __init__(self, uris: list) -> None:
        super().__init__(daemon=True, name="moves")
        self.uris, self.peak, self.samples, self.errors = uris, 0, 0, []
        self._halt = threading.Event()

    def run(self) -> None:
        conns = [libvirt.openReadOnly(u) for u in self.uris]
        while not self._halt.is_set():
            try:
                n = sum(1 for c in conns for d in c.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                        if d.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE)
                self.peak, self.samples = max(self.peak, n), self.samples + 1
            except libvirt.libvirtError as exc:  # a VM that left between the list and its job info
                self.errors.append(exc.get_error_code())
            self._halt.wait(0.1)
        for c in conns:
            c.close()

    def __enter__(self) -> "Moves":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self.join(timeout=30)


def both_at_once(lab, action: str, jobs: dict) -> dict:
    """Run one host_move job per host at the same time; host -> its result."""
    started = {}
    for host, extra in jobs.items():
        cmd, out = lab.playbook_cmd("host_move.yml", "hm", dict(uris=lab.uris(), host=host, limits=ONE, bandwidth=20,
                                                                **extra), "-e", f"action={action}")
        started[host] = (lab.start_playbook(cmd), out)
    results = {}
    for host, (proc, out) in started.items():
        proc.communicate(timeout=600)
        results[host] = json.loads(out.read_text())
    return results


def slot_waits(results: dict) -> list:
    return [e["why"] for r in results.values() for vm in r.get("vms", []) for e in vm.get("log", [])
            if e.get("kind") == "waiting" and e["why"].startswith("waiting for a move slot")]


def test_two_evacuations_into_one_host_keep_its_limit_and_so_do_two_restores_out_of_it(lab, two_hosts_of_vms):
    with Moves([lab.uri("lab1"), lab.uri("lab2")]) as into_lab3:
        out = both_at_once(lab, "evacuate", {"lab1": {"exclude_destinations": ["lab2"]},
                                             "lab2": {"exclude_destinations": ["lab1"]}})
    for host, r in out.items():
        assert not r.get("failed"), f"{host}: {r['msg']}"
        assert r["totals"]["moved"] == 2
    assert set(lab.invariant(VMS).values()) == {"lab3"}
    assert into_lab3.samples > 20 and into_lab3.peak == 1, \
        f"at most one move into lab3 at a time (its per_destination limit), saw {into_lab3.peak}"
    waits = slot_waits(out)
    assert waits and all("lab3's move slots: 1 move(s) into it already, its limit is 1" in w for w in waits), waits
    assert any("'evacuate lab1'" in w for w in waits) or any("'evacuate lab2'" in w for w in waits)

    with Moves([lab.uri("lab3")]) as out_of_lab3:
        back = both_at_once(lab, "restore", {"lab1": {}, "lab2": {}})
    for host, r in back.items():
        assert not r.get("failed"), f"{host}: {r['msg']}"
    assert lab.invariant(VMS) == {vm: host for host, vms in ON.items() for vm in vms}
    assert out_of_lab3.peak == 1, f"at most one move out of lab3 at a time (per_source), saw {out_of_lab3.peak}"
    assert any("lab3's move slots: 1 move(s) out of it already" in w for w in slot_waits(back))
    assert "fleetmaint-move" not in lab.virsh("lab3", "secret-list").stdout, "every slot freed"
