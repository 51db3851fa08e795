"""The report page in a real browser (headless system Chromium driven by Playwright), loaded from disk: cards,
filters, sorting, search, paging, the failed-files list, the TokenLearner overlay, the embed map's hover and click,
and that the page makes no request other than ``file://``. Screenshots of both views are taken."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests._report_util import Browser, chromium, make_job, read_data
from vidtok.engine.infer_io import read_classify_output
from vidtok.report.build import write_report

pytestmark = pytest.mark.xdist_group("report_browser")


@pytest.fixture(scope="module")
def browser():
    chromium()  # skips cleanly before any work when the browser is missing
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_browser")
    job = make_job(root)
    out = root / "report"
    write_report([job["preds"], job["emb"]], out, checkpoint=job["ckpt"])
    return {"job": job, "out": out, "url": (out / "index.html").as_uri(), "data": read_data(out)}


@pytest.fixture(autouse=True)
def no_network(browser):
    """Every test: whatever the page requested was a local file."""
    browser.requests.clear()
    browser.blocked.clear()
    browser.errors.clear()
    yield
    assert browser.requests, "the page made no request at all: the monitor is not listening"
    assert browser.blocked == [] and all(u.startswith("file://") for u in browser.requests), browser.requests
    assert browser.errors == []


def cards(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#grid .card",
        "cs => cs.map(c => ({name: c.dataset.name, status: c.dataset.status, label: c.dataset.label || null,"
        " pct: Array.from(c.querySelectorAll('.topk .pct')).map(e => e.textContent),"
        " bars: Array.from(c.querySelectorAll('.topk .bar span')).map(e => e.style.width),"
        " err: (c.querySelector('.err') || {}).textContent || null}))",
    )


def test_cards_summary_errors_and_overlay(browser, report, tmp_path):
    page = browser.page(report["url"] + "#classify")
    rows = {
        os.path.relpath(r["path"], report["job"]["root"] / "videos"): r
        for r in read_classify_output(report["job"]["preds"])
    }
    shown = cards(page)
    assert len(shown) == len(rows) == 10 and {c["name"] for c in shown} == set(rows)
    confs = []
    for c in shown:
        row = rows[c["name"]]
        assert c["status"] == row["status"]
        if row["status"] == "ok":
            assert c["label"] == row["labels"][0] and c["pct"] == [f"{round(100 * p)}%" for p in row["probs"]]
            assert [float(w.rstrip("%")) for w in c["bars"]] == pytest.approx([100 * p for p in row["probs"]], abs=0.06)
            confs.append(row["probs"][0])
        else:
            assert c["err"] == row["error"] and c["pct"] == []
    assert confs == sorted(confs, reverse=True)  # default: confidence, high first; failed files last
    assert [c["status"] for c in shown] == ["ok"] * 5 + ["error"] * 5
    assert page.text_content("#count") == "showing 1–10 of 10"
    # per-class summary: counts and mean confidence of the predicted top-1 class
    summary = page.eval_on_selector_all(
        "#class-summary tbody tr", "trs => trs.map(tr => Array.from(tr.cells).map(td => td.textContent))"
    )
    ok = [r for r in rows.values() if r["status"] == "ok"]
    for cls, count, _share, mean in summary:
        mine = [r["probs"][0] for r in ok if r["labels"][0] == cls]
        assert int(count) == len(mine) and mean == f"{100 * np.mean(mine):.1f}%"
    assert sum(int(s[1]) for s in summary) == 5
    # failed files with their messages
    errs = page.eval_on_selector_all("#error-table tbody tr", "trs => trs.map(tr => tr.cells[2].textContent)")
    assert page.text_content("#error-count") == "5" and sorted(errs) == sorted(
        r["error"] for r in rows.values() if r["error"]
    )
    # the poster has loaded; hovering a card swaps in its animated preview
    first = page.locator("#grid .card").first
    img = first.locator("img.poster")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    assert img.get_attribute("src").endswith(".jpg")
    first.hover()
    assert img.get_attribute("src").endswith(".webp")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    page.mouse.move(1, 1)
    assert img.get_attribute("src").endswith(".jpg")
    # the TokenLearner overlay opens in a dialog
    first.locator("button.overlay-btn").click()
    assert page.is_visible("#overlay-dialog") and page.text_content("#overlay-name") == shown[0]["name"]
    page.wait_for_function("() => document.getElementById('overlay-img').naturalWidth > 200")
    page.click("#overlay-close")
    assert not page.is_visible("#overlay-dialog")
    page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)
    assert (tmp_path / "classify.png").read_bytes()[:4] == b"\x89PNG"


def test_filters_sort_and_search(browser, report):
    page = browser.page(report["url"])  # no hash: the first view (classify)
    assert page.is_visible("#view-classify") and not page.is_visible("#view-embed")
    page.fill("#search", "GOOD")  # case-insensitive substring of the file name
    names = [c["name"] for c in cards(page)]
    assert sorted(names) == ["good0.mp4", "good1.mp4", "good2.mp4", "sub/good3.mkv"]
    page.fill("#search", "sub/")
    assert [c["name"] for c in cards(page)] == ["sub/good3.mkv"]
    page.fill("#search", "")
    page.select_option("#filter-status", "error")
    shown = cards(page)
    assert len(shown) == 5 and all(c["status"] == "error" and c["err"] for c in shown)
    page.fill("#search", "trunc")
    assert [c["name"] for c in cards(page)] == ["truncated.mp4"]
    page.fill("#search", "zzz")
    assert cards(page) == [] and page.text_content("#count") == "no video matches (10 in all)"
    page.fill("#search", "")
    page.select_option("#filter-status", "ok")
    page.select_option("#sort", "conf-asc")
    confs = [float(c["pct"][0].rstrip("%")) for c in cards(page)]
    assert len(confs) == 5 and confs == sorted(confs)
    page.select_option("#sort", "name-desc")
    assert [c["name"] for c in cards(page)] == [
        "sub/good3.mkv",
        "sample_carphone.mp4",
        "good2.mp4",
        "good1.mp4",
        "good0.mp4",
    ]
    page.select_option("#sort", "name-asc")
    assert [c["name"] for c in cards(page)][0] == "good0.mp4"
    page.select_option("#sort", "margin-asc")
    data = {r["n"]: r for r in report["data"]["classify"]["rows"]}
    margins = [data[c["name"]]["p"][0] - data[c["name"]]["p"][1] for c in cards(page)]
    assert margins == sorted(margins)
    # the label filter, from its menu and from the summary table (clicking the active class clears it)
    label = page.eval_on_selector("#filter-label option:nth-child(2)", "o => o.value")
    page.select_option("#filter-label", label)
    shown = cards(page)
    name = report["data"]["classify"]["classes"][int(label)]
    assert shown and all(c["label"] == name for c in shown)
    page.select_option("#filter-label", "")
    row = page.locator(f'#class-summary tbody tr[data-label="{label}"]')
    row.click()
    assert [c["name"] for c in cards(page)] == [c["name"] for c in shown] and page.input_value("#filter-label") == label
    row.click()
    assert len(cards(page)) == 5 and page.input_value("#filter-label") == ""


def test_paging_of_many_videos(browser, report, tmp_path):
    """130 rows (links to the real videos): 48 cards a page, only the page's pictures exist in the document."""
    good = report["job"]["good"]
    links = tmp_path / "many"
    links.mkdir()
    with open(tmp_path / "preds.jsonl", "w") as f:
        for i in range(130):
            link = links / f"clip{i:03d}.mp4"
            link.symlink_to(good[i % len(good)])
            p = 0.3 + 0.7 * ((i * 37) % 130) / 130
            row = {"path": str(link), "status": "ok", "error": "", "duration": 1.0, "views": 1}
            f.write(json.dumps({**row, "labels": ["x", "y"], "probs": [p, 1 - p], "indices": [0, 1]}) + "\n")
    res = write_report([tmp_path / "preds.jsonl"], tmp_path / "r")
    assert res["videos"] == len(good)  # the links share their file's pictures
    page = browser.page((tmp_path / "r" / "index.html").as_uri())
    assert len(cards(page)) == 48 and page.locator("#grid img").count() == 48
    assert page.text_content("#page") == "page 1 of 3" and page.is_disabled("#prev")
    page.click("#next")
    page.click("#next")
    assert len(cards(page)) == 130 - 96 and page.text_content("#count") == "showing 97–130 of 130"
    assert page.is_disabled("#next")
    page.fill("#search", "clip12")  # a filter goes back to page 1
    assert sorted(c["name"] for c in cards(page)) == [f"clip{i}.mp4" for i in range(120, 130)]
    assert page.text_content("#page") == "page 1 of 1"
    posters = {u for u in browser.requests if "/thumbs/" in u and u.endswith(".jpg")}
    assert 0 < len(posters) <= len(good)
    # a long failed-files list shows its first 200 rows and a button for the rest
    with open(tmp_path / "bad.jsonl", "w") as f:
        for i in range(205):
            row = {"path": f"/nowhere/bad{i:03d}.mp4", "status": "error", "error": f"file not found ({i})"}
            f.write(json.dumps({**row, "duration": None, "views": 0, "labels": [], "probs": [], "indices": []}) + "\n")
    write_report([tmp_path / "bad.jsonl"], tmp_path / "bad")
    page = browser.page((tmp_path / "bad" / "index.html").as_uri())
    assert page.locator("#error-table tbody tr").count() == 200 and page.text_content("#errors-more") == "show all 205"
    page.click("#errors-more")
    assert page.locator("#error-table tbody tr").count() == 205 and not page.is_visible("#errors-more")
    assert page.text_content("#error-table tbody tr:last-child td.msg") == "file not found (204)"


def test_embed_hover_and_nearest_neighbours(browser, report, tmp_path):
    e = report["data"]["embed"]
    page = browser.page(report["url"] + "#embed")
    assert page.is_visible("#view-embed") and not page.is_visible("#view-classify")
    assert page.text_content("#embed-meta").startswith(f"{len(e['v'])} clips of 5 videos · 32-d embeddings · PCA")
    i = int(np.argmax(np.asarray(e["xy"][0::2])))  # the right-most point: nothing else under the cursor
    pt = page.evaluate(f"window.vidtokReport.pointClient({i})")
    page.mouse.move(pt["x"] + 40, pt["y"] + 40)
    page.mouse.move(pt["x"], pt["y"])
    page.wait_for_selector("#tooltip:not([hidden])")
    assert page.get_attribute("#tooltip", "data-row") == str(i)
    assert page.text_content("#tip-name") == e["videos"][e["v"][i]]
    assert page.text_content("#tip-span").startswith(f"{e['t0'][i]:.2f}–{e['t1'][i]:.2f} s")
    assert page.get_attribute("#tip-img", "src") == "thumbs/" + e["th"][i]
    page.wait_for_function("() => document.getElementById('tip-img').naturalWidth > 0")
    page.mouse.click(pt["x"], pt["y"])
    items = page.eval_on_selector_all(
        "#nn-list li", "ls => ls.map(l => [Number(l.dataset.row), l.querySelector('.nn-sim').textContent])"
    )
    k = e["k"]
    assert items == [[e["nn"][i * k + j], f"{e['sim'][i * k + j]:.3f}"] for j in range(k)]
    assert [s for _, s in items] == sorted((s for _, s in items), reverse=True)
    assert page.get_attribute("#nn-query > *", "data-row") == str(i)
    page.screenshot(path=str(tmp_path / "embed.png"))
    # clicking a neighbour makes it the query
    j = items[0][0]
    page.click("#nn-list li >> nth=0")
    assert page.get_attribute("#nn-query > *", "data-row") == str(j)
    assert [int(x) for x in page.eval_on_selector_all("#nn-list li", "ls => ls.map(l => l.dataset.row)")] == e["nn"][
        j * k : (j + 1) * k
    ]
    page.mouse.move(1, 1)
    page.wait_for_selector("#tooltip", state="hidden")
    # the tab switches back to the classify view
    page.click("#tab-classify")
    assert page.is_visible("#view-classify") and page.url.endswith("#classify")


def test_the_network_monitor_sees_requests(browser, report):
    """The autouse check could not pass by deafness: a request the page did not make is caught and blocked."""
    page = browser.page(report["url"])
    page.evaluate("fetch('http://example.invalid/x').catch(() => null)")
    page.wait_for_timeout(100)
    assert browser.blocked == ["http://example.invalid/x"]
    browser.blocked.clear()
    browser.requests.remove("http://example.invalid/x")
    browser.errors[:] = [m for m in browser.errors if "example.invalid" not in m and "ERR_FAILED" not in m]
