#!/usr/bin/env bash
# 'make demo': a lab fleet of 3 hosts and 7 VMs (two dirtying memory as they run), then the main job -
# a rolling upgrade of every host from Debian 12's libvirt 9.0 / QEMU 7.2 to Debian 13's libvirt 11.3 /
# QEMU 10.0 (evacuate live, upgrade, health check with a canary, bring the VMs home) - and its report.
# Re-running it starts the lab over on the old stack and upgrades again, to a new level (the time it starts).
set -euo pipefail
cd "$(dirname "$0")/.."
labctl() { python3 lab/labctl.py --state-dir "${FLEETMAINT_LAB_DIR:-/var/tmp/fleetmaint-lab}" "$@"; }

# The stack the hosts are upgraded to: Debian 13's libvirt 11.3 and QEMU 10.0, built once per machine
# (debootstrap, about 30 s and 400 MiB here) and cached in /var/cache/fleetmaint-lab/stacks.
labctl stack build new >/dev/null

# The demo starts from Debian 12's stack on every host. An earlier run left them upgraded, running the
# fleet's guests on QEMU 10.0, which the older libvirt cannot take over: the lab starts over.
if ! labctl --json status | python3 -c 'import json, sys; sys.exit(any(h["stack"] != "old" for h in json.load(sys.stdin)["hosts"]))'; then
  echo "=== the hosts run the new stack (an earlier 'make demo' upgraded them): the lab starts over on Debian 12's ==="
  labctl down
  labctl up
fi

# The fleet (lab/demo-fleet.txt): created, or repaired whatever an earlier run or an interrupted
# 'make lab-down' left (defined but stopped: started; on two hosts or transient: made again).
labctl fleet ensure lab/demo-fleet.txt
echo
echo "=== the lab before: every host on Debian 12's libvirt and QEMU ==="
labctl status

LEVEL="${FLEETMAINT_DEMO_LEVEL:-demo-$(date -u +%Y%m%dT%H%M%S)}"
REPORTS="$PWD/.build/reports"
echo
echo "=== rolling upgrade of the lab fleet to level $LEVEL (ansible-playbook playbooks/rolling_patch.yml) ==="
start=$(date +%s)
ansible-playbook -i "${FLEETMAINT_INVENTORY}" playbooks/rolling_patch.yml \
  -e rolling_patch_target_level="$LEVEL" -e rolling_patch_tasks=patch_lab.yml \
  -e rolling_patch_copy_storage=all -e rolling_patch_memory_headroom=256 \
  -e '{"rolling_patch_canary_xml": "{{ fleetmaint_lab_canary_xml }}"}' \
  -e rolling_patch_report_dir="$REPORTS/rolling-patch-$LEVEL"
echo
echo "=== lab status after $(( $(date +%s) - start )) s: every host upgraded, every VM on its home host ==="
labctl status
python3 - "$(labctl --json status)" <<'PY'
import json, sys
st = json.loads(sys.argv[1])
away = {n: v for n, v in st["vms"].items()
        if v["created_on"] and (v["running_on"] != [v["created_on"]] or v["defined_on"] != [v["created_on"]])}
print("every VM runs, and is defined, on its home host only" if not away else f"NOT HOME: {away}")
old = [h["name"] for h in st["hosts"] if h["stack"] != "new"]
print("every host runs the new stack" if not old else f"NOT UPGRADED: {old}")
sys.exit(1 if away or old else 0)
PY
echo
echo "Report: $REPORTS/rolling-patch-$LEVEL/report.md (also report.json, report.html)"
echo "The lab keeps running: 'make lab-status', 'make lab-down'."
