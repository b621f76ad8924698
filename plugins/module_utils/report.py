# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The maintenance report: per-host records in, JSON, Markdown and HTML out. Pure (no libvirt, no Ansible).

A host record is what the rolling patch role collects for one host::

    {host, target_level, level_before, level_after, versions_before, versions_after (host_patch_level's versions:
     libvirt, hypervisor, hypervisor_version), status (patched, already_at_level, failed),
     failed_phase, msg, state_after, marks: [[phase, epoch], ..., ["end", epoch]],
     evacuate: <host_evacuate result>, restore: <host_restore result>, health: [checks]}
"""

from __future__ import annotations

import html
import time
from typing import Any, Dict, List, Optional

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import timeline

PHASES = ("preflight", "evacuate", "patch", "health", "restore")


def _metric(a: Optional[Dict[str, Any]], key: str) -> Optional[float]:
    m = (a or {}).get("metrics") or {}
    return m.get(key)


def hostname(end: Any) -> Optional[str]:
    """A live_migrate result's source or destination: a dict with its hostname, or (a failure's) the name."""
    return end.get("hostname") if isinstance(end, dict) else end


def move_row(v: Dict[str, Any]) -> Dict[str, Any]:
    """One VM move of a host_evacuate / host_restore result (its per-VM entry) as a report row."""
    attempts = v.get("attempts") or []
    ok = [a for a in attempts if a.get("ok")]
    last = ok[-1] if ok else (attempts[-1] if attempts else None)
    total_ms = _metric(last, "total_time_ms")
    downtime_ms = _metric(last, "downtime_ms")
    if downtime_ms is None and _metric(last, "downtime_s") is not None:  # cold move
        downtime_ms = _metric(last, "downtime_s") * 1000
    return {
        "vm": v.get("vm"), "source": v.get("source"), "destination": v.get("destination"), "result": v.get("result"),
        "attempts": len(attempts),
        # A change of method is an escalation; the same attempt restarted is not.
        "escalations": [b.get("why") for a, b in zip(attempts, attempts[1:]) if b.get("why") != a.get("why")],
        "total_time_s": round(total_ms / 1000.0, 1) if total_ms is not None else None,
        "downtime_ms": downtime_ms,
        "postcopy": bool(_metric(last, "postcopy_used")),
        "msg": v.get("msg") if v.get("result") not in ("moved", "already_there") else None,
        "reason": v.get("reason") if v.get("result") not in ("moved", "already_there", "cold_moved") else None,
        # Chosen before it moved (move_methods), and what the model said it would take.
        "method": v.get("method"), "method_why": v.get("method_why"),
        "predicted_s": (v.get("predicted") or {}).get("time_s"),
        "predicted_downtime_ms": (v.get("predicted") or {}).get("downtime_ms"),
    }


def vm_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per VM move (out of a host for its maintenance, or home again)."""
    rows = []
    for rec in records:
        for direction, key in (("out", "evacuate"), ("home", "restore")):
            for v in (rec.get(key) or {}).get("vms") or []:
                row = move_row(v)
                row.pop("postcopy")
                rows.append(dict(row, maintenance_of=rec.get("host"), direction=direction))
            # VMs the move rules kept where they were (a paused VM QEMU would crash): a row each, saying why.
            for st in (rec.get(key) or {}).get("staying") or []:
                rows.append({"vm": st.get("vm"), "source": st.get("host"), "destination": None, "result": "stayed",
                             "attempts": 0, "escalations": [], "total_time_s": None, "downtime_ms": None,
                             "msg": f"{st.get('reason')}: {st.get('msg')}", "reason": st.get("reason"),
                             "maintenance_of": rec.get("host"),
                             "direction": direction})
    return rows


MIGRATING_ACTIONS = ("live_migrate", "host_evacuate", "host_restore")


def migration_rows(action: str, result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Rows for one task result of live_migrate, host_evacuate or host_restore (any other action: none)."""
    short = action.rsplit(".", 1)[-1]
    if short not in MIGRATING_ACTIONS:
        return []
    if short != "live_migrate":
        return [dict(move_row(v), job=short, host=result.get("host")) for v in result.get("vms") or []]
    if not result.get("vm") and not result.get("failed"):
        return []
    m = result.get("metrics") or {}
    total = m.get("total_time_ms")
    if result.get("failed"):
        outcome = "failed"
    else:
        outcome = "moved" if result.get("changed") else "already_there"
    return [{"job": short, "host": None, "vm": result.get("vm"),
             "source": hostname(result.get("source")),
             "destination": hostname(result.get("destination")), "result": outcome,
             "attempts": 1, "escalations": [], "total_time_s": round(total / 1000.0, 1) if total is not None else None,
             "downtime_ms": m.get("downtime_ms"), "postcopy": bool(m.get("postcopy_used")),
             "msg": result.get("msg") if outcome == "failed" else None,
             "reason": result.get("reason") if outcome == "failed" else None}]


def task_timeline(action: str, result: Dict[str, Any]) -> Dict[str, Any]:
    """A task result's part of a run's timeline: ``bars`` (its moves) and ``jobs`` ((host, job, start, end))."""
    short = action.rsplit(".", 1)[-1]
    if short not in MIGRATING_ACTIONS or not isinstance(result, dict):
        return {"bars": [], "jobs": []}
    if short == "live_migrate":
        m = result.get("metrics") or {}
        mode = "postcopy" if m.get("postcopy_used") else ("auto_converge" if m.get("auto_converge_throttle") else "precopy")
        entry = {"vm": result.get("vm"), "source": hostname(result.get("source")),
                 "destination": hostname(result.get("destination")),
                 "result": "failed" if result.get("failed") else "moved", "started_at": result.get("started_at"),
                 "ended_at": result.get("ended_at"), "attempts": [{"mode": mode}]}
        drawn = timeline.move_bar(entry)
        return {"bars": [drawn] if drawn else [], "jobs": []}
    bars = [b for b in (timeline.move_bar(v) for v in result.get("vms") or []) if b]
    jobs = [(result["host"], short, result["started_at"], result["ended_at"])] \
        if result.get("host") and None not in (result.get("started_at"), result.get("ended_at")) else []
    return {"bars": bars, "jobs": jobs}


def migration_html(rows: List[Dict[str, Any]], bars: List[Dict[str, Any]], jobs: List[Any],
                   title: str = "Migrations", move_log: Optional[str] = None) -> str:
    """The migration_report callback's page: the run's timeline and its table of moves."""
    e = html.escape
    head = migration_markdown(rows, title).splitlines()[2]
    parts = [f"<h1>{e(title)}</h1><p>{e(head)}</p>"]
    if move_log:
        parts.append(f"<p>Every move's history: <code>{e(move_log)}</code> (JSON lines).</p>")
    svg = timeline.svg(timeline.lanes_from_jobs(jobs), bars)
    if svg:
        parts.append(f"<h2>Timeline</h2>{svg}")
    header = ["VM", "from", "to", "result", "method", "time s", "predicted s", "downtime ms", "job", "note"]
    body = [[_fmt(r["vm"]), _fmt(r["source"]), _fmt(r["destination"]), _fmt(r["result"]), _fmt(r.get("method")),
             _fmt(r["total_time_s"]), _fmt(r.get("predicted_s")), _fmt(r["downtime_ms"]), _fmt(r.get("job")),
             _fmt(_reason_note(r))] for r in rows]
    parts.append("<h2>Moves</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in header) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
    return page(title, parts)


def _reason_note(r: Dict[str, Any]) -> str:
    """A failed or staying row's note: its reason code first, then the message (without repeating the code)."""
    msg, reason = r.get("msg") or "", r.get("reason")
    if reason and not msg.startswith(f"{reason}:"):
        return f"{reason}: {msg}" if msg else reason
    return msg


def migration_table(rows: List[Dict[str, Any]]) -> str:
    """A compact fixed-width table for a terminal."""
    head = ("VM", "FROM", "TO", "RESULT", "METHOD", "TIME s", "PREDICTED s", "DOWNTIME ms", "NOTE")
    body = [(str(r["vm"]), str(r["source"] or "-"), str(r["destination"] or "-"), str(r["result"]),
             str(r.get("method") or "-"),
             "-" if r["total_time_s"] is None else f"{r['total_time_s']:g}",
             "-" if r.get("predicted_s") is None else f"{r['predicted_s']:g}",
             "-" if r["downtime_ms"] is None else f"{r['downtime_ms']:g}",
             ", ".join(filter(None, ["post-copy" if r.get("postcopy") else "", *r.get("escalations", []),
                                     _reason_note(r)[:60]])))
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*line).rstrip() for line in [head, *body])


def migration_markdown(rows: List[Dict[str, Any]], title: str = "Migrations") -> str:
    moved = sum(1 for r in rows if r["result"] == "moved")
    failed = sum(1 for r in rows if r["result"] == "failed")
    downs = [r["downtime_ms"] for r in rows if r["downtime_ms"] is not None]
    out = [f"# {title}", "", f"{len(rows)} VM moves: {moved} moved, {failed} failed"
           + (f"; downtime max {max(downs):g} ms" if downs else ""), "",
           "| VM | from | to | result | method | time s | predicted s | downtime ms | job | note |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        note = ", ".join(filter(None, ["post-copy" if r.get("postcopy") else "", *r.get("escalations", []),
                                       (r.get("method_why") or "").replace("|", "/"),
                                       _reason_note(r).replace("|", "/")]))
        out.append(f"| {r['vm']} | {r['source'] or '-'} | {r['destination'] or '-'} | {r['result']} | "
                   f"{r.get('method') or '-'} | {'-' if r['total_time_s'] is None else r['total_time_s']} | "
                   f"{'-' if r.get('predicted_s') is None else r['predicted_s']} | "
                   f"{'-' if r['downtime_ms'] is None else r['downtime_ms']} | {r.get('job')} | {note} |")
    return "\n".join(out) + "\n"


def phase_durations(marks: List[Any]) -> Dict[str, float]:
    """[[phase, epoch], ..., ['end', epoch]] -> seconds per phase (a phase lasts until the next mark)."""
    out: Dict[str, float] = {}
    for (name, t0), (_n, t1) in zip(marks, marks[1:]):
        if name in PHASES and t0 is not None and t1 is not None:
            out[name] = round(out.get(name, 0.0) + float(t1) - float(t0), 1)
    return out


def host_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for rec in records:
        durations = phase_durations(rec.get("marks") or [])
        ev = (rec.get("evacuate") or {}).get("totals") or {}
        rs = (rec.get("restore") or {}).get("totals") or {}
        rows.append({
            "host": rec.get("host"), "status": rec.get("status"), "failed_phase": rec.get("failed_phase"),
            "level_before": rec.get("level_before"), "level_after": rec.get("level_after"),
            "versions_before": rec.get("versions_before") or {}, "versions_after": rec.get("versions_after") or {},
            "state_after": rec.get("state_after"), "durations_s": durations,
            "vms_out": ev.get("moved", 0) + ev.get("cold_moved", 0), "vms_home": rs.get("moved", 0),
            "msg": rec.get("msg"),
        })
    return rows


def build(records: List[Dict[str, Any]], title: str = "Rolling patch") -> Dict[str, Any]:
    """The whole report as one JSON-able dict."""
    records = sorted(records, key=lambda r: (float((r.get("marks") or [[None, 0]])[0][1] or 0), r.get("host") or ""))
    hosts = host_rows(records)
    vms = vm_rows(records)
    moved = [v for v in vms if v["result"] in ("moved", "cold_moved")]
    downtimes = [v["downtime_ms"] for v in moved if v["downtime_ms"] is not None]
    count = {s: sum(1 for h in hosts if h["status"] == s) for s in ("patched", "already_at_level", "failed")}
    summary = {
        "hosts": len(hosts), **count,
        "vm_moves": len(moved), "vm_moves_failed": sum(1 for v in vms if v["result"] == "failed"),
        "escalations": sum(len(v["escalations"]) for v in vms),
        "max_downtime_ms": max(downtimes) if downtimes else None,
        "mean_downtime_ms": round(sum(downtimes) / len(downtimes), 1) if downtimes else None,
        "targets": sorted({r.get("target_level") for r in records if r.get("target_level")}),
    }
    return {"title": title, "generated": int(time.time()), "summary": summary, "hosts": hosts, "vms": vms,
            "records": records}


def _fmt(v: Any) -> str:
    if v is None or v == []:
        return "-"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v).replace("\n", " ")


def stack(versions: Dict[str, Any]) -> str:
    """'libvirt 11.3.0, QEMU 10.0.13' from host_patch_level's versions ('-' when unknown)."""
    if not versions or not versions.get("libvirt"):
        return "-"
    hv = f", {versions.get('hypervisor') or 'hypervisor'} {versions['hypervisor_version']}" \
        if versions.get("hypervisor_version") else ""
    return f"libvirt {versions['libvirt']}{hv}"


def sentence(rep: Dict[str, Any]) -> str:
    s = rep["summary"]
    return (f"Target level {_fmt(s['targets'])}: {s['hosts']} hosts - {s['patched']} patched, "
            f"{s['already_at_level']} already at the level, {s['failed']} failed. "
            f"{s['vm_moves']} live moves, {s['vm_moves_failed']} failed, {s['escalations']} escalations; "
            f"downtime max {_fmt(s['max_downtime_ms'])} ms, mean {_fmt(s['mean_downtime_ms'])} ms.")


def tables(rep: Dict[str, Any]) -> List[Any]:
    """(title, header, rows) of the report's tables, as text cells."""
    hosts = [[_fmt(h["host"]), h["status"] + (f" ({h['failed_phase']})" if h.get("failed_phase") else ""),
              _fmt(h["level_before"]), _fmt(h["level_after"]), stack(h["versions_before"]), stack(h["versions_after"])]
             + [_fmt(h["durations_s"].get(p)) for p in PHASES]
             + [str(h["vms_out"]), str(h["vms_home"]), _fmt(h["state_after"]), _fmt(h["msg"])]
             for h in rep["hosts"]]
    vms = [[_fmt(v["vm"]), _fmt(v["maintenance_of"]), v["direction"], _fmt(v["source"]), _fmt(v["destination"]),
            _fmt(v["result"]), _fmt(v.get("method")), str(v["attempts"]), _fmt(v["escalations"]),
            _fmt(v["total_time_s"]), _fmt(v.get("predicted_s")), _fmt(v["downtime_ms"])] for v in rep["vms"]]
    out = [("Hosts", ["host", "status", "level before", "level after", "runs before", "runs after"]
            + [f"{p} s" for p in PHASES]
            + ["VMs out", "VMs home", "state after", "note"], hosts),
           ("VM moves", ["VM", "for", "direction", "from", "to", "result", "method", "attempts", "escalations",
                         "time s", "predicted s", "downtime ms"], vms)]
    failures = [[_fmt(v["vm"]), _fmt(v["msg"])] for v in rep["vms"] if v["msg"]] + \
        [[_fmt(h["host"]), _fmt(h["msg"])] for h in rep["hosts"] if h["status"] == "failed"]
    if failures:
        out.append(("Failures", ["who", "what happened"], failures))
    return out


def markdown(rep: Dict[str, Any]) -> str:
    out = [f"# {rep['title']} report", "", sentence(rep)]
    if rep.get("move_log"):
        out += ["", f"Every move's history (JSON lines): `{rep['move_log']}`"]
    for title, header, rows in tables(rep):
        out += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _bars(vms: List[Dict[str, Any]], key: str, unit: str, colour: str) -> str:
    rows = [v for v in vms if v.get(key) is not None and v["result"] in ("moved", "cold_moved")]
    if not rows:
        return "<p>No moves.</p>"
    top = max(v[key] for v in rows) or 1
    h, w, label = 18, 420, 220
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{label + w + 90}' height='{h * len(rows) + 10}' "
             f"role='img' aria-label='{html.escape(key)} per VM move'>"]
    for i, v in enumerate(rows):
        y = 5 + i * h
        bw = max(1, int(w * v[key] / top))
        name = html.escape(f"{v['vm']} {v['direction']} ({v['source']} → {v['destination']})")
        parts.append(f"<text x='0' y='{y + 13}' font-size='12'>{name}</text>"
                     f"<rect x='{label}' y='{y + 2}' width='{bw}' height='{h - 5}' fill='{colour}'/>"
                     f"<text x='{label + bw + 4}' y='{y + 13}' font-size='12'>{v[key]} {unit}</text>")
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(records: List[Dict[str, Any]]) -> str:
    """The rolling patch as it happened: each host's phases, each VM move out and home, moves at once."""
    bars = []
    for rec in records:
        for direction, key in (("out", "evacuate"), ("home", "restore")):
            for v in (rec.get(key) or {}).get("vms") or []:
                drawn = timeline.move_bar(v, f"{v.get('vm')} {direction} ({v.get('source')} → {v.get('destination')})")
                if drawn:
                    bars.append(drawn)
    return timeline.svg(timeline.lanes_from_marks(records), bars)


def page(title: str, parts: List[str]) -> str:
    """A self-contained HTML page: inline style and SVG, nothing to fetch, no script."""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
            "td,th{border:1px solid #ccc;padding:2px 6px}table{border-collapse:collapse}</style></head><body>"
            + "".join(parts) + "</body></html>\n")


def html_page(rep: Dict[str, Any]) -> str:
    e = html.escape
    parts = [f"<h1>{e(rep['title'])} report</h1><p>{e(sentence(rep))}</p>"]
    if rep.get("move_log"):
        parts.append(f"<p>Every move's history: <code>{e(rep['move_log'])}</code> (JSON lines).</p>")
    svg = timeline_svg(rep.get("records") or [])
    if svg:
        parts.append(f"<h2>Timeline</h2>{svg}")
    for title, header, rows in tables(rep):
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in header) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                     + "</table>")
    parts.append(f"<h2>Downtime per move</h2>{_bars(rep['vms'], 'downtime_ms', 'ms', '#c0392b')}"
                 f"<h2>Time per move</h2>{_bars(rep['vms'], 'total_time_s', 's', '#2874a6')}")
    return page(f"{rep['title']} report", parts)
