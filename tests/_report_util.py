"""Helpers for the report tests: a real classify + embed job on a folder mixing good and bad files, the page's data
read back, and a Playwright browser on the system Chromium that records every request the page makes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests._infer_util import make_bad_files, make_checkpoint, make_good_videos


def make_job(root: Path) -> dict:
    """Five good videos (one real sample), five bad files, a tiny TokenLearner checkpoint, and its classify (CSV)
    and windowed embed (NPY) outputs over the folder."""
    from vidtok.engine.infer import classify, embed

    good = make_good_videos(root / "videos", n=4)
    bad = make_bad_files(root / "videos", good[0])
    ckpt = make_checkpoint(root)
    preds, emb = root / "preds.csv", root / "emb.npy"
    classify([root / "videos"], ckpt, topk=3, out=preds, num_workers=1, backend="pyav")
    embed([root / "videos"], ckpt, out=emb, window="0.4s", num_workers=1, backend="pyav")
    return {"root": root, "good": good, "bad": bad, "ckpt": ckpt, "preds": preds, "emb": emb}


def read_data(report: Path) -> dict:
    """The page's data (``data/report-data.js`` is ``window.VIDTOK_REPORT = {json};``)."""
    text = (report / "data" / "report-data.js").read_text(encoding="utf-8")
    head, tail = "window.VIDTOK_REPORT = ", ";\n"
    assert text.startswith(head) and text.endswith(tail), text[:80]
    return json.loads(text[len(head) : -len(tail)])


def chromium() -> str:
    """The system Chromium (Playwright is pointed at it; its own browser download is never used)."""
    pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install 'vidtok[dev]'")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("system Chromium missing: run tools/setup_system.sh (apt-get install -y chromium)")
    return path


class Browser:
    """One headless Chromium for a test module; ``page(url)`` opens a page in a fresh context whose every request
    is recorded in ``requests``; anything that is not ``file://`` is aborted and recorded in ``blocked``."""

    def __init__(self):
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.errors: list[str] = []

    def page(self, url: str, *, width: int = 1280, height: int = 900):
        ctx = self.browser.new_context(viewport={"width": width, "height": height})

        def guard(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                self.blocked.append(route.request.url)
                route.abort()

        ctx.route("**/*", guard)
        page = ctx.new_page()
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.wait_for_function("window.vidtokReport && window.vidtokReport.ready === true")
        return page

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()
