"""The timeline SVG (pure): a row per host, a bar per move placed in time and coloured by method."""

import xml.etree.ElementTree as ET

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import timeline

SVG = "{http://www.w3.org/2000/svg}"


def vm(name, start, end, mode="precopy", result="moved", predicted=None, attempts=1):
    atts = [{"mode": "precopy", "started_at": start + i, "ended_at": start + i + 1} for i in range(attempts - 1)]
    atts.append({"mode": mode, "started_at": start + attempts - 1, "ended_at": end})
    return {"vm": name, "source": "hv1", "destination": "hv2", "result": result, "started_at": start,
            "ended_at": end, "attempts": atts, "predicted": {"time_s": predicted} if predicted else None}


def parse(svg):
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    return root, [r for r in root.iter(f"{SVG}rect") if r.get("class") == "move"]


def test_one_bar_per_move_placed_in_time_and_coloured_by_method():
    bars = [timeline.move_bar(v) for v in (vm("a", 100, 110), vm("b", 105, 130, mode="postcopy"),
                                           vm("c", 120, 125, mode="cold", result="cold_moved"),
                                           vm("d", 112, 118, result="failed"))]
    root, moves = parse(timeline.svg([], bars))
    assert [m.get("data-vm") for m in moves] == ["a", "b", "d", "c"], "in the order they started"
    x = {m.get("data-vm"): float(m.get("x")) for m in moves}
    w = {m.get("data-vm"): float(m.get("width")) for m in moves}
    assert x["a"] == timeline.LABEL and x["a"] < x["b"] < x["d"] < x["c"]
    assert abs(w["b"] / w["a"] - 2.5) < 0.01, "widths proportional to durations (25 s against 10 s)"
    assert abs(x["b"] + w["b"] - (timeline.WIDTH - timeline.RIGHT)) < 0.2, "the last end is the right edge"
    fill = {m.get("data-vm"): m.get("fill") for m in moves}
    assert fill == {"a": timeline.METHOD_COLOURS["precopy"], "b": timeline.METHOD_COLOURS["postcopy"],
                    "c": timeline.METHOD_COLOURS["cold"], "d": timeline.METHOD_COLOURS["failed"]}
    assert root.get("aria-label") == "maintenance timeline: 0 hosts, 4 VM moves"
    assert "d hv1 → hv2: pre-copy, failed, 6.0 s" in ET.tostring(root, encoding="unicode")


def test_moves_at_once_and_predictions_and_later_attempts():
    bars = [timeline.move_bar(v) for v in (vm("a", 0, 10, predicted=5), vm("b", 2, 8), vm("c", 9, 12, attempts=2))]
    assert timeline.concurrency(bars) == [(0, 1), (2, 2), (8, 1), (9, 2), (10, 1), (12, 0)]
    root, moves = parse(timeline.svg([], bars))
    conc = [p for p in root.iter(f"{SVG}polygon") if p.get("class") == "concurrency"]
    assert len(conc) == 1 and conc[0].get("data-max") == "2"
    pred = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "predicted"]
    a = next(m for m in moves if m.get("data-vm") == "a")
    assert len(pred) == 1 and abs(float(pred[0].get("width")) - float(a.get("width")) / 2) < 0.2
    ticks = [ln for ln in root.iter(f"{SVG}line") if ln.get("class") == "attempt"]
    assert len(ticks) == 1, "c's second attempt is marked"


def test_host_rows_from_marks_and_from_jobs():
    recs = [{"host": "hv1", "marks": [["preflight", 0], ["evacuate", 1], ["patch", 9], ["restore", 20], ["end", 25]]},
            {"host": "hv2", "marks": [["preflight", 30]]}]
    lanes = timeline.lanes_from_marks(recs)
    assert lanes == [{"host": "hv1", "status": None, "phases": [("preflight", 0, 1), ("evacuate", 1, 9),
                                                                ("patch", 9, 20), ("restore", 20, 25)]}]
    jobs = timeline.lanes_from_jobs([("hv1", "host_restore", 50, 60), ("hv1", "host_evacuate", 0, 20),
                                     ("hv3", "host_evacuate", 5, 9)])
    assert jobs[0] == {"host": "hv1", "status": None,
                       "phases": [("evacuate", 0, 20), ("out", 20, 50), ("restore", 50, 60)]}
    assert jobs[1]["phases"] == [("evacuate", 5, 9)]
    root, _moves = parse(timeline.svg(jobs, []))
    phases = [(r.get("data-host"), r.get("data-phase")) for r in root.iter(f"{SVG}rect") if r.get("class") == "host-phase"]
    assert phases == [("hv1", "evacuate"), ("hv1", "out"), ("hv1", "restore"), ("hv3", "evacuate")]


def test_nothing_with_a_time_draws_nothing():
    assert timeline.svg([], []) == ""
    assert timeline.move_bar({"vm": "a", "result": "not_started", "attempts": []}) is None


def test_names_are_escaped():
    drawn = timeline.move_bar(vm("<b>&x", 0, 1))
    svg = timeline.svg([{"host": "h<1>", "phases": [("evacuate", 0, 1)]}], [drawn])
    parse(svg)
    assert "<b>" not in svg and "&lt;b&gt;&amp;x" in svg
