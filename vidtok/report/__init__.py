"""A review page for ``vidtok classify`` and ``vidtok embed`` outputs: ``vidtok report OUTPUT... --out report/``.

The page is a static folder (``index.html``, ``assets/``, ``data/``, ``thumbs/``, ``overlays/``) that opens from disk
in any browser with no server and no network::

    classify / embed outputs ─► vidtok.engine.infer_io readers ─► vidtok.report.build ─► data/report-data.js
    video files ─► vidtok.open_video ─► vidtok.report.thumbs ─► thumbs/*.jpg, *.webp
    checkpoint (TokenLearner) ─► vidtok.viz explain / draw ─► overlays/*.jpg
    assets/report.js + report.css ─► classify view (cards, filters, per-class summary, failed files)
                                   ─► embed view (2-D map, hover thumbnail, click: cosine nearest neighbours)

Names are resolved lazily, so ``import vidtok.report`` imports neither numpy nor Pillow.
"""

from __future__ import annotations

from vidtok._lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(
        ["write_report", "load_outputs", "class_summary", "pca_2d", "cosine_neighbours"], "vidtok.report.build"
    ),
    **dict.fromkeys(["make_thumbnails"], "vidtok.report.thumbs"),
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
