#!/usr/bin/env bash
# 'make demo' before the rolling patch exists: a lab fleet with a few VMs, and the facts
# fleetmaint.libvirt.hypervisor_info gathers from every host.
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
db1    lab3 256 local
cache1 lab1 192 shared 64 20
VMS

sleep 3
echo
echo "=== fleet facts (ansible-playbook playbooks/fleet_facts.yml) ==="
ansible-playbook -i "${FLEETMAINT_INVENTORY}" playbooks/fleet_facts.yml
echo
echo "=== live migration: cache1 (dirtying memory) lab1 -> lab2 and back home ==="
for hop in lab1:lab2 lab2:lab1; do
  ansible-playbook -i "${FLEETMAINT_INVENTORY}" playbooks/live_migrate.yml -e vm=cache1 \
    -e from="${hop%%:*}" -e to="${hop##*:}"
done
echo
echo "=== lab status ==="
labctl status
echo
echo "The lab keeps running: 'make lab-status', 'make lab-down'."
