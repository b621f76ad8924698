#!/usr/bin/env bash
# 'make demo': a lab fleet of 3 hosts and 7 VMs (two dirtying memory as they run), then the main job -
# a rolling patch of every host (evacuate live, patch, health check with a canary, bring the VMs home) -
# and its report. Re-running it patches to a new level (each run's level is the time it starts).
set -euo pipefail
cd "$(dirname "$0")/.."
labctl() { python3 lab/labctl.py --state-dir "${FLEETMAINT_LAB_DIR:-/var/tmp/fleetmaint-lab}" "$@"; }

# The fleet (lab/demo-fleet.txt): created, or repaired whatever an earlier run or an interrupted
# 'make lab-down' left (defined but stopped: started; on two hosts or transient: made again).
labctl fleet ensure lab/demo-fleet.txt

LEVEL="${FLEETMAINT_DEMO_LEVEL:-demo-$(date -u +%Y%m%dT%H%M%S)}"
REPORTS="$PWD/.build/reports"
echo
echo "=== rolling patch of the lab fleet to level $LEVEL (ansible-playbook playbooks/rolling_patch.yml) ==="
start=$(date +%s)
ansible-playbook -i "${FLEETMAINT_INVENTORY}" playbooks/rolling_patch.yml \
  -e rolling_patch_target_level="$LEVEL" -e rolling_patch_tasks=patch_lab.yml \
  -e rolling_patch_copy_storage=all -e rolling_patch_memory_headroom=256 \
  -e '{"rolling_patch_canary_xml": "{{ fleetmaint_lab_canary_xml }}"}' \
  -e rolling_patch_report_dir="$REPORTS/rolling-patch-$LEVEL"
echo
echo "=== lab status after $(( $(date +%s) - start )) s: every VM on its home host ==="
labctl status
python3 - "$(labctl --json status)" <<'PY'
import json, sys
st = json.loads(sys.argv[1])
away = {n: v for n, v in st["vms"].items()
        if v["created_on"] and (v["running_on"] != [v["created_on"]] or v["defined_on"] != [v["created_on"]])}
print("every VM runs, and is defined, on its home host only" if not away else f"NOT HOME: {away}")
sys.exit(1 if away else 0)
PY
echo
echo "Report: $REPORTS/rolling-patch-$LEVEL/report.md (also report.json, report.html)"
echo "The lab keeps running: 'make lab-status', 'make lab-down'."
