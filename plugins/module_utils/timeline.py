# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The maintenance as it happened in time, as one SVG: pure (no libvirt, no Ansible), no script, no fonts to
fetch - the page opens offline in any browser.

Rows, top to bottom: one per host (its phases coloured, from the first mark to the last: out of service from
evacuation start to restore end), one bar per VM move placed in time (coloured by the method that moved it:
pre-copy, auto-converge, post-copy, suspend, cold; a failed move red; a tick where a later attempt began; a
dashed outline as long as the prediction, where there was one), then how many moves ran at once.
Shapes carry classes (``host-phase``, ``move``, ``predicted``, ``concurrency``) and ``data-`` attributes, so
tests and stylesheets can find them; each has a ``<title>`` (a tooltip in a browser).
"""

from __future__ import annotations

import html
from typing import Any, Dict, Iterable, List, Optional, Tuple

PHASE_COLOURS = {"preflight": "#bdc3c7", "evacuate": "#f5b041", "patch": "#8e44ad", "health": "#48c9b0",
                 "restore": "#5dade2", "out": "#d5d8dc"}
METHOD_COLOURS = {"precopy": "#2874a6", "xbzrle": "#5b2c6f", "auto_converge": "#d68910", "postcopy": "#1e8449",
                  "suspend": "#616a6b", "cold": "#17a589", "failed": "#c0392b"}
METHOD_NAMES = {"precopy": "pre-copy", "xbzrle": "XBZRLE", "auto_converge": "auto-converge", "postcopy": "post-copy",
                "suspend": "suspend", "cold": "cold", "failed": "failed"}
MOVED = ("moved", "cold_moved", "already_there")

WIDTH, LABEL, RIGHT = 1100, 240, 30
HOST_ROW, MOVE_ROW, CONC_H = 22, 16, 70


def move_bar(v: Dict[str, Any], label: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """One VM entry of a host job (``vms[]``) as a bar: when, how, whether it worked; None if it never ran."""
    attempts = v.get("attempts") or []
    start = v.get("started_at", attempts[0].get("started_at") if attempts else None)
    end = v.get("ended_at", attempts[-1].get("ended_at") if attempts else None)
    if start is None or end is None:
        return None
    last = attempts[-1] if attempts else {}
    ok = v.get("result") in MOVED
    return {"vm": v.get("vm"), "label": label or f"{v.get('vm')} {v.get('source')} → {v.get('destination')}",
            "start": float(start), "end": max(float(end), float(start)),
            "method": last.get("mode") or v.get("method") or "precopy", "ok": ok, "result": v.get("result"),
            "attempt_starts": [float(a["started_at"]) for a in attempts[1:] if a.get("started_at") is not None],
            "predicted_s": (v.get("predicted") or {}).get("time_s")}


def lanes_from_marks(records: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Host rows from the rolling patch's records: [[phase, epoch], ..., ['end', epoch]] each."""
    lanes = []
    for rec in records:
        marks = [m for m in rec.get("marks") or [] if m and m[1] is not None]
        phases = [(name, float(t0), float(t1)) for (name, t0), (_n, t1) in zip(marks, marks[1:])]
        if phases:
            lanes.append({"host": rec.get("host"), "phases": phases, "status": rec.get("status")})
    return lanes


def lanes_from_jobs(jobs: Iterable[Tuple[str, str, float, float]]) -> List[Dict[str, Any]]:
    """Host rows from (host, job, started, ended) of host_evacuate / host_restore tasks: out of service from an
    evacuation's start to the next restore's end."""
    by_host: Dict[str, List[Tuple[str, float, float]]] = {}
    for host, job, t0, t1 in sorted(jobs, key=lambda j: j[2]):
        phases = by_host.setdefault(host, [])
        name = "restore" if job.endswith("restore") else "evacuate"
        if phases and name == "restore" and phases[-1][0] == "evacuate" and t0 > phases[-1][2]:
            phases.append(("out", phases[-1][2], t0))
        phases.append((name, float(t0), float(t1)))
    return [{"host": h, "phases": ph, "status": None} for h, ph in sorted(by_host.items())]


def concurrency(bars: List[Dict[str, Any]]) -> List[Tuple[float, int]]:
    """(time, moves running from then on) at every start and end."""
    edges = sorted([(b["start"], 1) for b in bars] + [(b["end"], -1) for b in bars], key=lambda e: (e[0], e[1]))
    out, n = [], 0
    for t, d in edges:
        n += d
        if out and out[-1][0] == t:
            out[-1] = (t, n)
        else:
            out.append((t, n))
    return out


def _tick_step(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if span / step <= 10:
            return step
    return 14400


def _tick_label(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else (f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h")


def svg(lanes: List[Dict[str, Any]], bars: List[Dict[str, Any]]) -> str:
    """The timeline; an empty string when nothing has a time."""
    times = [t for ln in lanes for ph in ln["phases"] for t in ph[1:]] + [t for b in bars for t in (b["start"], b["end"])]
    if not times:
        return ""
    e = html.escape
    t_min, t_max = min(times), max(times)
    span = max(1.0, t_max - t_min)
    plot = WIDTH - LABEL - RIGHT

    def x(t: float) -> float:
        return round(LABEL + (t - t_min) / span * plot, 1)

    y = 30
    out: List[str] = []
    step = _tick_step(span)
    n = 0
    while n * step <= span:
        tx = x(t_min + n * step)
        out.append(f"<line x1='{tx}' y1='22' x2='{tx}' y2='@H@' stroke='#eee'/>"
                   f"<text x='{tx}' y='16' font-size='11' text-anchor='middle'>{_tick_label(n * step)}</text>")
        n += 1
    if lanes:
        out.append(f"<text x='0' y='{y + 12}' font-size='12' font-weight='bold'>Hosts</text>")
        y += 18
    for ln in lanes:
        out.append(f"<text x='0' y='{y + 15}' font-size='12'>{e(str(ln['host']))}</text>")
        for name, t0, t1 in ln["phases"]:
            w = max(1.0, round(x(t1) - x(t0), 1))
            out.append(f"<rect class='host-phase' data-host='{e(str(ln['host']))}' data-phase='{e(name)}' "
                       f"x='{x(t0)}' y='{y + 3}' width='{w}' height='{HOST_ROW - 6}' "
                       f"fill='{PHASE_COLOURS.get(name, '#999')}'><title>{e(str(ln['host']))}: {e(name)} "
                       f"{t1 - t0:.1f} s</title></rect>")
        y += HOST_ROW
    if bars:
        out.append(f"<text x='0' y='{y + 16}' font-size='12' font-weight='bold'>VM moves</text>")
        y += 22
    for b in sorted(bars, key=lambda b: (b["start"], b["label"])):
        colour = METHOD_COLOURS.get(b["method"], "#999") if b["ok"] else METHOD_COLOURS["failed"]
        took = b["end"] - b["start"]
        what = METHOD_NAMES.get(b["method"], b["method"]) + ("" if b["ok"] else f", {b['result']}")
        pred = f", predicted {b['predicted_s']:g} s" if b.get("predicted_s") else ""
        out.append(f"<text x='0' y='{y + 12}' font-size='11'>{e(b['label'])}</text>"
                   f"<rect class='move' data-vm='{e(str(b['vm']))}' data-method='{e(b['method'])}' "
                   f"data-ok='{str(b['ok']).lower()}' x='{x(b['start'])}' y='{y + 2}' "
                   f"width='{max(2.0, round(x(b['end']) - x(b['start']), 1))}' height='{MOVE_ROW - 4}' fill='{colour}'>"
                   f"<title>{e(b['label'])}: {e(what)}, {took:.1f} s{pred}</title></rect>")
        for t in b["attempt_starts"]:
            out.append(f"<line class='attempt' x1='{x(t)}' y1='{y}' x2='{x(t)}' y2='{y + MOVE_ROW}' "
                       "stroke='#000' stroke-width='2'/>")
        if b.get("predicted_s"):
            pw = max(2.0, round(x(b["start"] + b["predicted_s"]) - x(b["start"]), 1))
            out.append(f"<rect class='predicted' x='{x(b['start'])}' y='{y + 1}' width='{pw}' height='{MOVE_ROW - 2}' "
                       "fill='none' stroke='#000' stroke-dasharray='3,2'/>")
        y += MOVE_ROW
    if bars:
        steps = concurrency(bars)
        top = max(n for _t, n in steps) or 1
        y += 10
        out.append(f"<text x='0' y='{y + 12}' font-size='12' font-weight='bold'>Moves at once</text>"
                   f"<text x='0' y='{y + 28}' font-size='11'>at most {top}</text>")
        base = y + CONC_H

        def cy(k: int) -> float:
            return round(base - k / top * (CONC_H - 8), 1)

        pts = [f"{x(steps[0][0])},{base}"]
        prev = 0
        for t, k in steps:
            pts += [f"{x(t)},{cy(prev)}", f"{x(t)},{cy(k)}"]
            prev = k
        pts.append(f"{x(steps[-1][0])},{base}")
        out.append(f"<polygon class='concurrency' data-max='{top}' points='{' '.join(pts)}' fill='#aed6f1' "
                   "stroke='#2874a6'/>"
                   f"<line x1='{LABEL}' y1='{base}' x2='{WIDTH - RIGHT}' y2='{base}' stroke='#999'/>")
        y = base + 8
    y += 8
    legend = [(PHASE_COLOURS[p], p) for p in ("preflight", "evacuate", "out", "patch", "health", "restore") if lanes] + \
        [(METHOD_COLOURS[m], METHOD_NAMES[m]) for m in METHOD_COLOURS if bars]
    lx = 0
    for colour, name in legend:
        out.append(f"<rect x='{lx}' y='{y}' width='12' height='12' fill='{colour}'/>"
                   f"<text x='{lx + 16}' y='{y + 11}' font-size='11'>{e(name)}</text>")
        lx += 30 + 7 * len(name)
    if bars and any(b.get("predicted_s") for b in bars):
        out.append(f"<rect x='{lx}' y='{y}' width='24' height='12' fill='none' stroke='#000' stroke-dasharray='3,2'/>"
                   f"<text x='{lx + 28}' y='{y + 11}' font-size='11'>predicted</text>")
    height = y + 24
    body = "".join(out).replace("@H@", str(height - 30))
    return (f"<svg xmlns='http://www.w3.org/2000/svg' class='timeline' width='{WIDTH}' height='{height}' "
            f"viewBox='0 0 {WIDTH} {height}' font-family='sans-serif' role='img' "
            f"aria-label='maintenance timeline: {len(lanes)} hosts, {len(bars)} VM moves'>{body}</svg>")
