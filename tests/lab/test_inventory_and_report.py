"""The libvirt_fleet inventory plugin and the migration_report callback against the lab."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import REPO

ENV = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "tests" / "ansible.cfg"))


def inventory(cfg, *flags) -> tuple:
    res = subprocess.run(["ansible-inventory", "-i", str(cfg), "--list", *flags], capture_output=True, text=True,
                         env=ENV, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    # ansible-core 2.19 writes values that came from a plugin as {"__ansible_unsafe": value}
    return json.loads(res.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d)), res.stderr


def test_inventory_places_vms_under_their_hypervisor_and_follows_a_move(lab, tmp_path):
    lab.ctl("vm", "create", "inv-a", "--host", "lab1", "--disk", "shared")
    try:
        hosts = [{"name": h["name"], "uri": h["uri"]} for h in lab.status()["hosts"]]
        cfg = tmp_path / "fleet.libvirt_fleet.yml"
        cfg.write_text(json.dumps({  # JSON is YAML
            "plugin": "fleetmaint.libvirt.libvirt_fleet",
            "hypervisors": hosts + [{"name": "lab9", "uri": "qemu+tcp://127.0.0.99/system"}],
            "shared_pools": ["shared"], "connect_timeout": 60,  # a fresh libvirtd probes QEMU first
            "keyed_groups": [{"key": "fleetmaint_vm.storage", "prefix": "storage"}],
            "groups": {"away_from_home": "fleetmaint_current_host != fleetmaint_home_host"},
            "cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache"),
            "cache_timeout": 3600}))
        inv, err = inventory(cfg, "--flush-cache")
        assert "inv-a" in inv["vms_on_lab1"]["hosts"] and "inv-a" in inv["storage_shared"]["hosts"]
        assert set(inv["hypervisors"]["hosts"]) == {"lab1", "lab2", "lab3", "lab9"}
        assert inv["unreachable_hypervisors"]["hosts"] == ["lab9"] and "lab9" in err and "did not answer" in err
        hv = inv["_meta"]["hostvars"]["inv-a"]
        assert hv["fleetmaint_current_host"] == "lab1" and hv["fleetmaint_home_host"] == "lab1"
        assert hv["fleetmaint_state"] == "running" and hv["fleetmaint_vm"]["vcpus"] == 1
        assert "inv-a" not in inv.get("away_from_home", {}).get("hosts", [])

        lab.migrate(name="inv-a", uri=lab.uri("lab1"), dest_uri=lab.uri("lab2"))
        cached, _err = inventory(cfg)
        assert "inv-a" in cached["vms_on_lab1"]["hosts"], "served from the cache"
        fresh, _err = inventory(cfg, "--flush-cache")
        assert "inv-a" in fresh["vms_on_lab2"]["hosts"] and "inv-a" not in fresh.get("vms_on_lab1", {}).get("hosts", [])
        assert "inv-a" in fresh["away_from_home"]["hosts"]
        assert fresh["_meta"]["hostvars"]["inv-a"]["fleetmaint_home_host"] == "lab1"
    finally:
        lab.ctl("vm", "delete", "inv-a", check=False)


def test_callback_reports_every_move_of_a_run(lab, tmp_path):
    lab.create_at_once(dict.fromkeys(("rep-a", "rep-b"), "lab3"), "--disk", "shared")
    report_dir = tmp_path / "reports"
    env = dict(ENV, ANSIBLE_CALLBACKS_ENABLED="fleetmaint.libvirt.migration_report",
               FLEETMAINT_MIGRATION_REPORT_DIR=str(report_dir))
    try:
        res = subprocess.run(["ansible-playbook", "-i", str(lab.inventory), str(REPO / "playbooks" / "evacuate_host.yml"),
                              "-e", "host=lab3"], capture_output=True, text=True, env=env, timeout=600, check=False)
        assert res.returncode == 0, res.stdout[-3000:]
        assert "MIGRATION REPORT" in res.stdout
        data = json.loads((report_dir / "latest.json").read_text())
        rows = {r["vm"]: r for r in data["rows"]}
        assert set(rows) == {"rep-a", "rep-b"}
        for vm, r in rows.items():
            running_on = lab.where(vm)["running_on"]
            assert r["result"] == "moved" and r["source"] == "lab3" and [r["destination"]] == running_on, r
            assert r["job"] == "host_evacuate" and r["downtime_ms"] is not None
            assert any(line.split()[:2] == [vm, "lab3"] and "moved" in line for line in res.stdout.splitlines())
        md = (report_dir / "latest.md").read_text()
        assert "2 VM moves: 2 moved, 0 failed" in md
        # The same run as a timeline (a bar per move, the host's evacuation), and every move's history.
        page = (report_dir / "latest.html").read_text()
        assert page.count("class='move'") == 2 and "data-host='lab3' data-phase='evacuate'" in page
        assert data["move_log"] and (report_dir / "latest.jsonl").read_text() == Path(data["move_log"]).read_text()
        log = [json.loads(line) for line in Path(data["move_log"]).read_text().splitlines()]
        for vm in ("rep-a", "rep-b"):
            whats = [ln["what"] for ln in log if ln["vm"] == vm]
            assert whats[0] == "dispatch" and whats[-1] == "moved" and "done" in whats, whats
        res = subprocess.run(["ansible-playbook", "-i", str(lab.inventory), str(REPO / "playbooks" / "restore_host.yml"),
                              "-e", "host=lab3"], capture_output=True, text=True, env=env, timeout=600, check=False)
        assert res.returncode == 0, res.stdout[-3000:]
        back = json.loads((report_dir / "latest.json").read_text())["rows"]
        assert {(r["vm"], r["destination"], r["job"]) for r in back} == {("rep-a", "lab3", "host_restore"),
                                                                         ("rep-b", "lab3", "host_restore")}
    finally:
        for vm in ("rep-a", "rep-b"):
            lab.ctl("vm", "delete", vm, check=False)
