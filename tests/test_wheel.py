"""An installed wheel works anywhere: build the wheel from a copy of the source tree, install it into a fresh virtual
environment, and run the demo's data + train + eval path (the bundled `demo_vidtok_ti` recipe, shortened with
`--set`) from a folder outside the repository.

The fresh environment reuses this environment's torch and friends through a `.pth` line naming this
environment's site-packages. Python does not process the `.pth` files of a folder added that way, so the editable
vidtok of a development checkout is not active there: `vidtok` resolves to the wheel's copy, which the test
checks (`vidtok.__file__` and the recipes folder lie inside the new environment)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SKIP = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "site", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "demo_out"
)


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
def test_wheel_installs_and_runs_the_demo_path_outside_the_repo(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # 1. the wheel, built from a clean copy of the tree (no stale build/ of the checkout can leak into it)
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_SKIP)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src], tmp_path, env)
    (wheel,) = dist.glob("vidtok-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vidtok/configs/demo_vidtok_ti.yaml" in names and "vidtok/data/classes/classes_k400.txt" in names
    assert {f"vidtok/report/assets/{f}" for f in ("index.html", "report.js", "report.css")} <= set(names)
    assert len([n for n in names if n.startswith("vidtok/configs/") and n.endswith(".yaml")]) >= 20
    assert not [n for n in names if n.startswith(("tests/", "tools/", "configs/", "docs/"))]
    package_files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "vidtok").rglob("*") if p.is_file()]
    package_files = [n for n in package_files if "__pycache__" not in n and not n.endswith(".pyc")]
    missing = sorted(set(package_files) - set(names))
    assert not missing, f"files of the package left out of the wheel (package data?): {missing}"

    # 2. a fresh environment that reuses this one's packages, and the wheel installed into it
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    py = venv / "bin" / "python"
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
    (Path(purelib.stdout.strip()) / "_reuse_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([*pip, "--python", py, "install", "--no-deps", "--no-index", "-q", wheel], tmp_path, env)

    # 3. from a folder outside the repository: the installed package, not the checkout
    work = tmp_path / "work"
    work.mkdir()
    check = "import vidtok, vidtok.config as c; print(vidtok.__file__, c.RECIPES_DIR, len(c.list_recipes()))"
    where = _run([py, "-c", check], work, env).stdout.split()
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where[:2]), where
    assert not Path(where[0]).resolve().is_relative_to(ROOT) and int(where[2]) >= 20

    vidtok = str(venv / "bin" / "vidtok")
    _run([vidtok, "synth", "data", "--per-class", "2", "--val-per-class", "1", "--frames", "20"], work, env)
    tiny = ["train.max_steps=2", "model.extra={depth: 2, token_reducer_layer: 1}", "data.num_workers=0"]
    tiny += ["data.batch_size=4", "data.root=data"]
    args = [vidtok, "train", "--config", "demo_vidtok_ti", "--out", "run", "--no-progress"]
    for kv in tiny:
        args += ["--set", kv]
    r = _run(args, work, env)
    assert "train: step 2/2 (100%)" in r.stderr and (work / "run" / "model.safetensors").is_file()
    r = _run([vidtok, "eval", "--checkpoint", "run", "--data", "data/val.csv", "--root", "data", "--workers", "0"]
             + ["--out", "ev"], work, env)  # fmt: skip
    assert "top-1" in r.stdout + r.stderr and (work / "ev" / "metrics.json").is_file()
