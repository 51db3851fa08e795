"""The front door: the README's API block runs verbatim on a demo output, the docs site builds with
`mkdocs build --strict` (also a step of `make test`), every relative link in the README resolves, and neither the
README nor the docs narrate history."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _python_block(text: str, heading: str) -> str:
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def tiny_demo_out(tmp_path_factory):
    """What `make demo` leaves in demo_out/ (data + run), on a tiny budget: 2 videos per class, 1 training step."""
    from vidtok.data.synthetic import make_synthetic_dataset
    from vidtok.engine.demo import DEMO_DATA, demo_config
    from vidtok.engine.train import train

    cwd = tmp_path_factory.mktemp("readme")
    data = cwd / "demo_out" / "data"
    make_synthetic_dataset(data, **dict(DEMO_DATA, per_class=2, val_per_class=1, frames=20), seed=0)
    cfg = demo_config(
        data,
        [
            "train.max_steps=1",
            "model.extra={depth: 2, token_reducer_layer: 1}",
            "data.num_workers=0",
            "data.batch_size=4",
        ],
    )
    train(cfg, cwd / "demo_out" / "run", progress=False)
    return cwd


@pytest.mark.xdist_group("readme_demo")
def test_readme_api_block_runs_verbatim_on_a_demo_output(tiny_demo_out, monkeypatch):
    code = _python_block(README.read_text(), "## Python API in one screen")
    assert '"demo_out/run"' in code and "runs/" not in code  # the folder `make demo` writes
    monkeypatch.chdir(tiny_demo_out)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    n_val = 4  # 4 classes x 1 held-out video
    assert tuple(ns["frames"].shape) == (8, 64, 64, 3)
    assert tuple(ns["logits"].shape) == (2, 4) and tuple(ns["emb"].shape) == (2, 192)
    assert ns["model"].pretrained_cfg["class_names"] == ["right", "left", "up", "down"]
    assert len(ns["rows"]) == n_val and all(r["status"] == "ok" for r in ns["rows"])
    assert tuple(ns["out"]["embeddings"].shape) == (n_val, 192)
    assert ns["big"].num_classes == 400


def test_docs_site_builds_strict(tmp_path):
    """A broken link, a missing anchor or a nav entry without its page fails the build."""
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()
    assert (tmp_path / "site" / "images" / "tokenlearner_overlay.png").is_file()


def test_readme_is_a_front_door_with_working_links():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [u for u in links if not re.match(r"[a-z]+://", u)]
    assert local, links
    missing = [u for u in local if not (ROOT / u).exists()]
    assert not missing, missing
    for page in ("video", "data", "models", "reducers", "kernels", "training", "inference", "pictures", "benchmarks"):
        assert f"docs/{page}.md" in text, page
    assert "docs/architecture.md" in text


HISTORY = re.compile(
    r"\b(until 20\d\d|previously|used to be|the earlier (version|policy)|the first version|added by|engineer|issue #)",
    re.I,
)


def test_docs_and_code_do_not_narrate_history():
    hits = []
    code = [*sorted((ROOT / "vidtok").rglob("*.py")), *sorted((ROOT / "tools").glob("*.py"))]
    for f in [README, *sorted((ROOT / "docs").glob("*.md")), *code]:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if HISTORY.search(line):
                hits.append(f"{f.name}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)
