"""domain_backup on the lab: definitions, placement and home hosts saved; a move shows up as a change."""

from __future__ import annotations

import json
import re

from conftest import wait_for


def test_backup_follows_placement_and_is_idempotent(lab, tmp_path):
    lab.ctl("vm", "create", "bk-a", "--host", "lab1", "--memory", "96")
    try:
        wait_for(lambda: lab.marker("bk-a")["intact"], 60, what="bk-a to boot")
        backup = tmp_path / "defs"
        res = lab.playbook("playbooks/backup_definitions.yml", backup_dir=str(backup))
        index = json.loads((backup / "index.json").read_text())
        assert index["bk-a"]["defined_on"] == ["lab1"] and index["bk-a"]["running_on"] == ["lab1"]
        assert index["bk-a"]["home_host"] == "lab1" and index["bk-a"]["state"] == "running"
        assert "<name>bk-a</name>" in (backup / "bk-a.xml").read_text()
        assert "changed=1" in res.stdout.split("PLAY RECAP", 1)[1]
        assert "changed=0" in lab.playbook("playbooks/backup_definitions.yml",
                                           backup_dir=str(backup)).stdout.split("PLAY RECAP", 1)[1]
        # After a live migration the backup records the new placement; --diff shows it.
        r = lab.migrate(name="bk-a", uri=lab.uri("lab1"), dest_uri=lab.uri("lab2"))
        assert not r.get("failed"), r.get("msg")
        res = lab.playbook("playbooks/backup_definitions.yml", "--diff", backup_dir=str(backup))
        index = json.loads((backup / "index.json").read_text())
        assert index["bk-a"]["defined_on"] == ["lab2"] and index["bk-a"]["running_on"] == ["lab2"]
        assert index["bk-a"]["home_host"] == "lab1", "the home host is kept through the move"
        assert re.search(r'^-\s+"lab1"', res.stdout, re.M) and re.search(r'^\+\s+"lab2"', res.stdout, re.M), \
            "--diff shows the placement change"
    finally:
        lab.ctl("vm", "delete", "bk-a", check=False)
