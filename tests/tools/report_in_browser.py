"""Open a report's HTML in headless Chromium (Debian's, driven by playwright): what the page really renders.

    python tests/tools/report_in_browser.py REPORT.html [--screenshot PNG] [--timeline-only]

Prints JSON: the title, how many bars and host phases the timeline shows, each bar's box on the page, whether the
page asked the network for anything or ran a script. The unit tests call ``render``; the README's screenshot of
the demo's report (docs/images/report-timeline.png) is made with ``--timeline-only``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Any, Dict, Optional

CHROMIUM = os.environ.get("FLEETMAINT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def render(path: str, screenshot: Optional[str] = None, timeline_only: bool = False) -> Dict[str, Any]:
    from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel

    requests = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto("file://" + os.path.abspath(path), wait_until="load")
            svg = page.locator("svg.timeline")
            bars = page.locator("svg.timeline rect.move")
            out = {
                "title": page.title(),
                "timeline": svg.count(),
                "timeline_box": svg.first.bounding_box() if svg.count() else None,
                "bars": [dict(vm=bars.nth(i).get_attribute("data-vm"), method=bars.nth(i).get_attribute("data-method"),
                              ok=bars.nth(i).get_attribute("data-ok"), box=bars.nth(i).bounding_box())
                         for i in range(bars.count())],
                "host_phases": page.locator("svg.timeline rect.host-phase").count(),
                "scripts": page.evaluate("document.scripts.length"),
                "other_requests": [u for u in requests if not u.startswith("file://")],
            }
            # What a click at each bar's centre would hit: the bar itself, so it is drawn there and on top.
            out["hit"] = [page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y); "
                                        "return e && e.getAttribute('data-vm'); }",
                                        [b["box"]["x"] + b["box"]["width"] / 2, b["box"]["y"] + b["box"]["height"] / 2])
                          for b in out["bars"] if b["box"]]
            if screenshot:
                if timeline_only and svg.count():
                    svg.first.screenshot(path=screenshot)
                else:
                    page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html")
    ap.add_argument("--screenshot")
    ap.add_argument("--timeline-only", action="store_true")
    a = ap.parse_args()
    print(json.dumps(render(a.html, a.screenshot, a.timeline_only), indent=1))


if __name__ == "__main__":
    main()
