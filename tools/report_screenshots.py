"""Screenshots of a report's two views for the docs (docs/images/report_classify.png, report_embed.png).

Drives the system Chromium with Playwright (as tests/test_report_browser.py does), opens REPORT/index.html from
disk, and shoots the classify view (sorted by confidence, low first: where the model hesitated) and the embed view
with one point hovered and its nearest neighbours listed.

Usage::

    vidtok demo --out demo_out                       # ends by writing demo_out/report
    python tools/report_screenshots.py demo_out/report --out docs/images
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path, help="A folder written by vidtok report.")
    ap.add_argument("--out", type=Path, default=Path("docs/images"), help="Where the PNGs go.")
    ap.add_argument("--point", type=int, default=None, help="Embed row to hover and select (default: the middle).")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    url = (args.report.resolve() / "index.html").as_uri()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        ctx = browser.new_context(viewport={"width": 1280, "height": 860})
        ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else r.abort())
        page = ctx.new_page()
        page.goto(url + "#classify")
        page.wait_for_function("window.vidtokReport && window.vidtokReport.ready === true")
        page.select_option("#sort", "conf-asc")
        page.evaluate("document.getElementById('summary').open = true")
        page.wait_for_function("Array.from(document.querySelectorAll('#grid img')).slice(0, 10).every(i => i.complete)")
        page.screenshot(path=str(args.out / "report_classify.png"))
        page.goto(url + "#embed")
        page.wait_for_function("window.vidtokReport && window.vidtokReport.ready === true")
        n = page.evaluate("window.VIDTOK_REPORT.embed.v.length")
        i = args.point if args.point is not None else n // 2
        page.evaluate(f"window.vidtokReport.select({i})")
        pt = page.evaluate(f"window.vidtokReport.pointClient({i})")
        page.mouse.move(pt["x"] + 30, pt["y"] + 30)
        page.mouse.move(pt["x"], pt["y"])
        page.wait_for_selector("#tooltip:not([hidden])")
        page.wait_for_function("Array.from(document.querySelectorAll('#nn-list img')).every(i => i.complete)")
        page.wait_for_function("document.getElementById('tip-img').complete")
        page.screenshot(path=str(args.out / "report_embed.png"))
        browser.close()
    print(f"wrote {args.out / 'report_classify.png'} and {args.out / 'report_embed.png'}")


if __name__ == "__main__":
    main()
