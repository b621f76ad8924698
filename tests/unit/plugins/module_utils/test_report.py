"""The maintenance report from per-host records (pure)."""

from html.parser import HTMLParser

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import report


def attempt(ok, why, total_ms=None, downtime_ms=None, msg="done"):
    return {"ok": ok, "why": why, "msg": msg, "metrics": {"total_time_ms": total_ms, "downtime_ms": downtime_ms}}


def timed(records):
    """Give every move of the records a start and an end inside its host's evacuate or restore phase."""
    for rec in records:
        marks = dict((name, t) for name, t in rec["marks"])
        for key in ("evacuate", "restore"):
            for i, v in enumerate((rec.get(key) or {}).get("vms") or []):
                v.update(started_at=marks[key] + i, ended_at=marks[key] + i + 3)
    return records


RECORDS = timed([
    {"host": "hv1", "target_level": "2026-11", "level_before": "2026-10", "level_after": "2026-11",
     "versions_before": {"libvirt": "9.0.0", "hypervisor": "QEMU", "hypervisor_version": "7.2.22"},
     "versions_after": {"libvirt": "11.3.0", "hypervisor": "QEMU", "hypervisor_version": "10.0.13"},
     "status": "patched", "state_after": "in service",
     "marks": [["preflight", 100.0], ["evacuate", 102.0], ["patch", 110.5], ["health", 140.0], ["restore", 145.0],
               ["end", 150.0]],
     "evacuate": {"totals": {"moved": 2, "cold_moved": 0}, "vms": [
         {"vm": "web1", "source": "hv1", "destination": "hv2", "result": "moved", "method": "precopy",
          "method_why": "dirties 1 MiB/s, converges at 24 MiB/s", "predicted": {"time_s": 7.9, "downtime_ms": 40},
          "attempts": [attempt(False, "pre-copy with the downtime ladder", msg="timeout"),
                       attempt(True, "auto-converge (vCPU throttling)", 8400, 120)]},
         {"vm": "db1", "source": "hv1", "destination": "hv3", "result": "moved",
          "attempts": [attempt(True, "pre-copy with the downtime ladder", 2100, 40)]}]},
     "restore": {"totals": {"moved": 2}, "vms": [
         {"vm": "web1", "source": "hv2", "destination": "hv1", "result": "moved",
          "attempts": [attempt(True, "pre-copy with the downtime ladder", 1900, 30)]},
         {"vm": "db1", "source": "hv3", "destination": "hv1", "result": "moved",
          "attempts": [attempt(True, "pre-copy with the downtime ladder", 2000, 35)]}]}},
    {"host": "hv2", "target_level": "2026-11", "level_before": "2026-10", "level_after": "2026-10",
     "status": "failed", "failed_phase": "patch", "msg": "apt failed | badly", "state_after": "maintenance, empty",
     "marks": [["preflight", 200.0], ["evacuate", 201.0], ["patch", 205.0], ["end", 206.0]],
     "evacuate": {"totals": {"moved": 0}, "vms": [
         {"vm": "app1", "source": "hv2", "destination": "hv3", "result": "failed", "msg": "no progress",
          "attempts": [attempt(False, "pre-copy with the downtime ladder", msg="no progress")]}]}},
])


def test_phase_durations_until_the_next_mark():
    want = {"preflight": 2.0, "evacuate": 8.5, "patch": 29.5, "health": 5.0, "restore": 5.0}
    assert report.phase_durations(RECORDS[0]["marks"]) == want
    assert report.phase_durations([["preflight", 1.0]]) == {}


def test_vm_rows_take_the_successful_attempt_and_list_escalations():
    rows = report.vm_rows(RECORDS)
    web1_out = next(r for r in rows if r["vm"] == "web1" and r["direction"] == "out")
    assert web1_out["attempts"] == 2 and web1_out["escalations"] == ["auto-converge (vCPU throttling)"]
    assert web1_out["total_time_s"] == 8.4 and web1_out["downtime_ms"] == 120 and web1_out["msg"] is None
    app1 = next(r for r in rows if r["vm"] == "app1")
    assert app1["result"] == "failed" and app1["msg"] == "no progress"


def test_build_summary_counts_and_downtime():
    rep = report.build(list(reversed(RECORDS)))
    s = rep["summary"]
    assert (s["hosts"], s["patched"], s["failed"], s["already_at_level"]) == (2, 1, 1, 0)
    assert s["vm_moves"] == 4 and s["vm_moves_failed"] == 1 and s["escalations"] == 1
    assert s["max_downtime_ms"] == 120 and s["mean_downtime_ms"] == 56.2
    assert [h["host"] for h in rep["hosts"]] == ["hv1", "hv2"], "hosts in the order they started"


def test_markdown_tables_escape_pipes_and_list_failures():
    md = report.markdown(report.build(RECORDS))
    assert "| hv2 | failed (patch) | 2026-10 | 2026-10 |" in md
    assert "apt failed \\| badly" in md
    assert "| web1 | hv1 | out | hv1 | hv2 | moved | precopy | 2 | auto-converge (vCPU throttling) | 8.4 | 7.9 | 120 |" in md
    assert "## Failures" in md
    failures = md.split("## Failures", maxsplit=1)[1]
    assert "| hv2 | apt failed \\| badly |" in failures and "| app1 | no progress |" in failures


def test_html_is_well_formed_and_charts_every_move():
    page = report.html_page(report.build(RECORDS))
    stack = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag not in ("meta", "rect"):
                stack.append(tag)

        def handle_endtag(self, tag):
            if tag == "rect":
                return
            assert stack and stack.pop() == tag, f"unbalanced </{tag}>"

    P().feed(page)
    assert stack == []
    charts = page.split("<h2>Downtime per move</h2>", 1)[1]
    assert charts.count("<rect") == 8, "4 moves x (downtime, time)"
    timeline = page.split("<h2>Timeline</h2>", 1)[1].split("</svg>", 1)[0]
    assert timeline.count("class='host-phase' data-host='hv1'") == 5 and timeline.count("data-host='hv2'") == 3
    assert timeline.count("class='move'") == 5, "every move that ran has a bar, the failed one too"
    assert "web1 out (hv1 → hv2)" in timeline and "web1 home (hv2 → hv1)" in timeline
    assert "data-vm='app1' data-method='precopy' data-ok='false'" in timeline


def test_the_report_names_its_move_log():
    rep = dict(report.build(RECORDS), move_log="/r/moves.jsonl")
    assert "Every move's history (JSON lines): `/r/moves.jsonl`" in report.markdown(rep)
    assert "<code>/r/moves.jsonl</code>" in report.html_page(rep)


def test_migration_rows_from_live_migrate_and_evacuate_results():
    from ansible_collections.fleetmaint.libvirt.plugins.module_utils.report import (
        migration_markdown, migration_rows, migration_table)
    lm = {"changed": True, "vm": "web1", "source": {"hostname": "hv1"}, "destination": {"hostname": "hv2"},
          "metrics": {"total_time_ms": 2500, "downtime_ms": 40, "postcopy_used": True}}
    rows = migration_rows("fleetmaint.libvirt.live_migrate", lm)
    assert rows == [{"job": "live_migrate", "host": None, "vm": "web1", "source": "hv1", "destination": "hv2",
                     "result": "moved", "attempts": 1, "escalations": [], "total_time_s": 2.5, "downtime_ms": 40,
                     "postcopy": True, "msg": None, "reason": None}]
    failed = migration_rows("live_migrate", {"failed": True, "vm": "db", "msg": "destination unreachable",
                                             "reason": "dest_unreachable"})
    assert failed[0]["result"] == "failed" and failed[0]["msg"] == "destination unreachable"
    assert failed[0]["reason"] == "dest_unreachable"
    # A failure after the hosts were known names them (failure_result: the error's context wins over the dicts).
    named = migration_rows("live_migrate", {"failed": True, "vm": "db", "source": "hv1", "destination": "hv2",
                                            "msg": "same host", "reason": "same_host"})
    assert (named[0]["source"], named[0]["destination"], named[0]["result"]) == ("hv1", "hv2", "failed")
    evac = {"host": "hv1", "vms": [
        {"vm": "a", "source": "hv1", "destination": "hv3", "result": "moved",
         "attempts": [{"why": "initial", "ok": False, "metrics": {"total_time_ms": 9000}},
                      {"why": "auto_converge", "ok": True, "metrics": {"total_time_ms": 4000, "downtime_ms": 12}}]}]}
    erows = migration_rows("fleetmaint.libvirt.host_evacuate", evac)
    assert erows[0]["escalations"] == ["auto_converge"] and erows[0]["total_time_s"] == 4.0
    assert erows[0]["job"] == "host_evacuate" and erows[0]["host"] == "hv1"
    assert migration_rows("ansible.builtin.debug", {"msg": "x"}) == []
    table = migration_table(rows + failed + erows)
    assert table.splitlines()[0].split()[:3] == ["VM", "FROM", "TO"] and "post-copy" in table
    md = migration_markdown(rows + failed + erows)
    assert "3 VM moves: 2 moved, 1 failed; downtime max 40 ms" in md and "| web1 | hv1 | hv2 | moved |" in md
    assert "dest_unreachable: destination unreachable" in md and "dest_unreachable: destination" in table


def test_a_vm_the_rules_kept_in_place_has_a_row_saying_why():
    rec = dict(RECORDS[0], restore={"totals": {"moved": 0}, "vms": [], "staying": [
        {"vm": "pz", "host": "hv2", "reason": "vm_paused_disks_inactive", "msg": "pz is paused on hv2 and ..."}]})
    rows = [r for r in report.vm_rows([rec]) if r["direction"] == "home"]
    assert rows == [{"vm": "pz", "source": "hv2", "destination": None, "result": "stayed", "attempts": 0,
                     "escalations": [], "total_time_s": None, "downtime_ms": None,
                     "msg": "vm_paused_disks_inactive: pz is paused on hv2 and ...",
                     "reason": "vm_paused_disks_inactive", "maintenance_of": "hv1", "direction": "home"}]
    md = report.markdown(report.build([rec]))
    html = report.html_page(report.build([rec]))
    assert "vm_paused_disks_inactive" in md and "pz" in html


def test_the_hosts_table_shows_what_each_host_ran_before_and_after():
    rep = report.build(RECORDS)
    hosts = dict((t[0], t) for t in report.tables(rep))["Hosts"]
    col = {name: i for i, name in enumerate(hosts[1])}
    rows = {r[0]: r for r in hosts[2]}
    assert rows["hv1"][col["runs before"]] == "libvirt 9.0.0, QEMU 7.2.22"
    assert rows["hv1"][col["runs after"]] == "libvirt 11.3.0, QEMU 10.0.13"
    assert rows["hv2"][col["runs before"]] == "-" and rows["hv2"][col["runs after"]] == "-", "unknown, not guessed"
    assert "| libvirt 9.0.0, QEMU 7.2.22 | libvirt 11.3.0, QEMU 10.0.13 |" in report.markdown(rep)
