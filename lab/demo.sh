#!/usr/bin/env bash
# 'make demo': a lab fleet of 3 hosts and 7 VMs (two dirtying memory as they run), then the main job -
# a rolling patch of every host (evacuate live, patch, health check with a canary, bring the VMs home) -
# and its report. Re-running it patches to a new level (each run's level is the time it starts).
set -euo pipefail
cd "$(dirname "$0")/.."
labctl() { python3 lab/labctl.py --state-dir "${FLEETMAINT_LAB_DIR:-/var/tmp/fleetmaint-lab}" "$@"; }

# name host memory disk [dirty-mb dirty-rate]
while read -r name host mem disk dmb drate; do
  [ -z "$name" ] && continue
  if labctl status --json | python3 -c "import json,sys; sys.exit(0 if '$name' in json.load(sys.stdin)['vms'] else 1)"; then
    echo "demo: $name exists"
  else
    labctl vm create "$name" --host "$host" --memory "$mem" --disk "$disk" --dirty-mb "${dmb:-0}" --dirty-rate "${drate:-0}"
  fi
done <<'VMS'
web1   lab1 128 shared
web2   lab2 128 shared
web3   lab3 128 shared
db1    lab3 256 local
cache1 lab1 192 shared 64 20
queue1 lab2 160 shared 48 10
batch1 lab2 96  local
VMS

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
