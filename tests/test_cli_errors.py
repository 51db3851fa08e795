"""Every bad value a user can give any command ends as exactly one stderr line ``error: ...``, exit 2, no traceback;
usage errors are reported before anything heavy is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vidtok.cli import cli

REPO = Path(__file__).resolve().parents[1]
LATIN1 = "caf\xe9: 1\n".encode("latin-1")  # not UTF-8


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    from tests._infer_util import make_checkpoint

    d = tmp_path_factory.mktemp("cli_errors")
    (d / "v.mp4").write_bytes(b"not decoded: every case fails before")
    (d / "latin1.yaml").write_bytes(b"train:\n  init: " + LATIN1)
    (d / "latin1.csv").write_bytes(b"label,youtube_id,time_start,time_end,split\n" + LATIN1)
    (d / "latin1.txt").write_bytes(LATIN1)
    (d / "dup.yaml").write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    (d / "data").mkdir()
    (d / "synth_full").mkdir()
    (d / "synth_full" / "old.txt").write_text("a user's file")
    (d / "run" / "checkpoints").mkdir(parents=True)
    (d / "run" / "config.yaml").write_text("{}\n")
    (d / "preds.csv").write_text("path,status\n")
    return {
        "dir": str(d),
        "video": str(d / "v.mp4"),
        "ckpt": str(make_checkpoint(d)),
        "latin1_yaml": str(d / "latin1.yaml"),
        "latin1_csv": str(d / "latin1.csv"),
        "latin1_txt": str(d / "latin1.txt"),
        "dup_yaml": str(d / "dup.yaml"),
        "data": str(d / "data"),
        "synth_full": str(d / "synth_full"),
        "run": str(d / "run"),
        "preds": str(d / "preds.csv"),
        "missing": str(d / "missing"),
    }


# (command, bad value kind, argv with {placeholders} from `files`); the kinds cover: unknown choice, missing path,
# impossible device, zero, negative, NaN, wrong type, unknown key, non-UTF-8 file (and a few more of each).
CASES = [
    ("info", "unknown key", "info --set train.epochz=1"),
    ("info", "unknown choice", "info --model vivit_typo"),
    ("info", "missing path", "info --config {missing}.yaml"),
    ("info", "non-UTF-8 file", "info --config {latin1_yaml}"),
    ("info", "duplicate key", "info --config {dup_yaml}"),
    ("info", "wrong type", "info --set train.epochs=abc"),
    ("train", "zero", "train --out {dir}/t --set data.num_frames=0"),
    ("train", "negative", "train --out {dir}/t --set data.num_frames=-4"),
    ("train", "zero", "train --out {dir}/t --set data.frame_stride=0"),
    ("train", "zero", "train --out {dir}/t --set data.test_clips=0"),
    ("train", "unknown choice", "train --out {dir}/t --set data.test_crops=2"),
    ("train", "zero", "train --out {dir}/t --set data.crop_size=0"),
    ("train", "too large", "train --out {dir}/t --set data.crop_size=300"),
    ("train", "zero", "train --out {dir}/t --set data.batch_size=0"),
    ("train", "negative", "train --out {dir}/t --set data.batch_size=-1"),
    ("train", "negative", "train --out {dir}/t --set data.num_workers=-1"),
    ("train", "negative", "train --out {dir}/t --set train.lr=-0.1"),
    ("train", "NaN", "train --out {dir}/t --set train.lr=nan"),
    ("train", "too large", "train --out {dir}/t --set train.label_smoothing=2"),
    ("train", "wrong order", "train --out {dir}/t --set data.scale_range=[90,60]"),
    ("train", "zero", "train --out {dir}/t --set data.std=[0,0,0]"),
    ("train", "zero", "train --out {dir}/t --set train.epochs=0"),
    ("train", "negative", "train --out {dir}/t --set train.epochs=-1"),
    ("train", "negative", "train --out {dir}/t --set train.max_steps=-1"),
    ("train", "negative", "train --out {dir}/t --set train.warmup_steps=-1"),
    ("train", "negative", "train --out {dir}/t --set train.clip_grad=-1"),
    ("train", "negative", "train --out {dir}/t --set train.ckpt_every=-1"),
    ("train", "zero", "train --out {dir}/t --set train.log_every=0"),
    ("train", "impossible device", "train --out {dir}/t --device tpu"),
    ("train", "impossible device", "train --out {dir}/t --set data.root={data} --device cuda:99"),
    ("train", "unknown choice", "train --out {dir}/t --set data.backend=ffmpegx"),
    ("train", "unknown choice", "train --out {dir}/t --set model.attn_backend=flash9"),
    ("train", "unknown choice", "train --out {dir}/t --set data.format=csv"),
    ("train", "missing path", "train --out {dir}/t --set data.root={missing}"),
    ("train", "missing path", "train --out {dir}/t --config {missing}.yaml"),
    ("train", "non-UTF-8 file", "train --out {dir}/t --config {latin1_yaml}"),
    ("train", "duplicate key", "train --out {dir}/t --config {dup_yaml}"),
    ("train", "unknown key", "train --out {dir}/t --set train.epochz=1"),
    ("train", "wrong type", "train --out {dir}/t --set data.batch_size=many"),
    ("train", "zero", "train --out {dir}/t --epochs 0"),
    ("train", "existing run", "train --out {run}"),
    ("train", "conflicting flags", "train --out {run} --resume --overwrite"),
    ("eval", "missing path", "eval -c {ckpt} --data {missing}.csv"),
    ("eval", "missing path", "eval -c {missing} --data {latin1_csv}"),
    ("eval", "non-UTF-8 file", "eval -c {ckpt} --data {latin1_csv} --root {data} --workers 0"),
    ("eval", "zero", "eval -c {ckpt} --data {latin1_csv} --clips 0"),
    ("eval", "unknown choice", "eval -c {ckpt} --data {latin1_csv} --crops 2"),
    ("eval", "impossible device", "eval -c {ckpt} --data {latin1_csv} --device tpu"),
    ("eval", "impossible device", "eval -c {ckpt} --data {latin1_csv} --device cuda:99"),
    ("eval", "unknown key", "eval -c {ckpt} --data {latin1_csv} --set data.nope=1"),
    ("eval", "wrong type", "eval -c {ckpt} --data {latin1_csv} --batch-size x"),
    ("classify", "unknown choice", "classify {video} -c {ckpt} --backend ffmpeg"),
    ("classify", "unknown choice", "classify {video} -c {ckpt} --amp fp8"),
    ("classify", "missing path", "classify {missing}.mp4 -c {ckpt}"),
    ("classify", "missing path", "classify {video} -c {missing}"),
    ("classify", "impossible device", "classify {video} -c {ckpt} --device tpu"),
    ("classify", "impossible device", "classify {video} -c {ckpt} --device cuda:99"),
    ("classify", "zero", "classify {video} -c {ckpt} --batch-size 0"),
    ("classify", "zero", "classify {video} -c {ckpt} --views 0x1"),
    ("classify", "negative", "classify {video} -c {ckpt} --topk -1"),
    ("classify", "NaN", "classify {video} -c {ckpt} --timeout nan"),
    ("classify", "wrong type", "classify {video} -c {ckpt} --workers two"),
    ("classify", "impossible size", "classify {video} -c {ckpt} --views 100000000x1"),
    ("classify", "unknown choice", "classify {video} -c {ckpt} --out {dir}/p.txt"),
    ("classify", "existing output", "classify {video} -c {ckpt} --out {preds}"),
    ("classify", "conflicting flags", "classify {video} -c {ckpt} --out {preds} --resume --overwrite"),
    ("classify", "conflicting flags", "classify {video} -c {ckpt} --out {dir}/new.csv --retry-failed"),
    ("classify", "zero", "classify {video} -c {ckpt} --engine ray --replicas 0"),
    ("classify", "unknown choice", "classify {video} -c {ckpt} --engine spark"),
    ("classify", "conflicting flags", "classify {video} -c {ckpt} --address auto"),
    ("embed", "wrong order", "embed {video} -c {ckpt} --out {dir}/e.npy --engine ray --replicas 3:1"),
    ("embed", "unknown choice", "embed {video} -c {ckpt} --out {dir}/e.npy --backend ffmpeg"),
    ("embed", "missing path", "embed {missing} -c {ckpt} --out {dir}/e.npy"),
    ("embed", "impossible device", "embed {video} -c {ckpt} --out {dir}/e.npy --device cuda:99"),
    ("embed", "negative", "embed {video} -c {ckpt} --out {dir}/e.npy --window -1s"),
    ("embed", "zero", "embed {video} -c {ckpt} --out {dir}/e.npy --workers 0"),
    ("embed", "NaN", "embed {video} -c {ckpt} --out {dir}/e.npy --hop nan"),
    ("embed", "unknown choice", "embed {video} -c {ckpt} --out {dir}/e.csv"),
    ("embed", "conflicting flags", "embed {video} -c {ckpt} --out {dir}/e.npy --sampler mmaction2"),
    ("classify", "unknown choice", "classify {video} -c {ckpt} --sampler slowfast"),
    ("viz", "unknown choice", "viz {video} -c {ckpt} -o {dir}/o.png --backend ffmpeg"),
    ("viz", "missing path", "viz {missing}.mp4 -c {ckpt} -o {dir}/o.png"),
    ("viz", "impossible device", "viz {video} -c {ckpt} -o {dir}/o.png --device cuda:99"),
    ("viz", "NaN", "viz {video} -c {ckpt} -o {dir}/o.gif --fps nan"),
    ("viz", "zero", "viz {video} -c {ckpt} -o {dir}/o.png --cell 0"),
    ("synth", "zero", "synth {dir}/s --classes 0"),
    ("synth", "negative", "synth {dir}/s --per-class -1"),
    ("synth", "wrong type", "synth {dir}/s --size big"),
    ("synth", "existing output", "synth {synth_full}"),
    ("convert", "missing path", "convert {missing} {dir}/c.safetensors"),
    ("convert", "unknown choice", "convert {ckpt} {dir}/c.safetensors --arch vit3d"),
    ("convert", "zero", "convert {ckpt} {dir}/c.safetensors --num-frames 0"),
    ("convert", "non-UTF-8 file", "convert {ckpt} {dir}/c.safetensors --classes {latin1_txt}"),
    ("convert", "unknown choice", "convert {ckpt} {dir}/hf --to keras"),
    ("convert", "existing output", "convert {ckpt} {synth_full} --to hf"),
    ("export", "missing path", "export {missing} {dir}/m.onnx"),
    ("export", "unknown choice", "export {ckpt} {dir}/m.onnx --format tflite"),
    ("export", "existing output", "export {ckpt} {preds}"),
    ("export", "too small", "export {ckpt} {dir}/m.onnx --opset 1"),
    ("plot", "missing path", "plot {missing}"),
    ("demo", "unknown key", "demo --out {dir}/demo --set train.epochz=1"),
    ("demo", "NaN", "demo --out {dir}/demo --set train.lr=nan"),
    ("demo", "zero", "demo --out {dir}/demo --set data.num_frames=0"),
    ("report", "missing path", "report {preds} --out {dir}/r -c {missing}"),
    ("report", "unknown choice", "report {latin1_txt} --out {dir}/r"),
    ("report", "zero", "report {preds} --out {dir}/r --workers 0"),
    ("report", "existing output", "report {preds} --out {preds}"),
    ("export", "missing path", "export {missing} {dir}/m.onnx"),
    ("export", "unknown choice", "export {ckpt} {dir}/m.onnx --format tflite"),
    ("export", "zero", "export {ckpt} {dir}/m.onnx --opset 0"),
    ("export", "existing output", "export {ckpt} {preds}"),
    ("report", "missing path", "report {missing}.csv --out {dir}/rep"),
    ("report", "unknown choice", "report {preds} --out {dir}/rep --map umap"),
    ("report", "zero", "report {preds} --out {dir}/rep --neighbours 0"),
    ("report", "negative", "report {preds} --out {dir}/rep --overlays -1"),
    ("report", "existing output", "report {preds} --out {synth_full}"),
    ("(none)", "unknown choice", "bogus"),
]


@pytest.mark.parametrize(("command", "kind", "argv"), CASES, ids=[f"{c}-{k}-{i}" for i, (c, k, _) in enumerate(CASES)])
def test_bad_value_is_one_line_exit_2(files, command, kind, argv):
    args = [a.format(**files) for a in argv.split()]
    r = CliRunner().invoke(cli, args)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2, (r.exit_code, r.stderr, r.exception)
    assert "Traceback" not in r.output and "Traceback" not in r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert not Path(files["dir"], "t").exists() and not Path(files["dir"], "demo").exists(), "something was written"


def test_choice_lists_match_the_modules_that_own_them():
    import vidtok.io
    import vidtok.kernels
    from vidtok.config import ATTN_BACKENDS, VIDEO_BACKENDS

    assert set(VIDEO_BACKENDS) == {"auto", *vidtok.io.BACKENDS}
    assert set(ATTN_BACKENDS) == set(vidtok.kernels.BACKENDS)
    from vidtok.config import TEST_SAMPLERS
    from vidtok.data.clip_sampling import SAMPLERS

    assert set(TEST_SAMPLERS) <= set(SAMPLERS)  # every test protocol is a sampler clip_sampling has


def test_every_command_has_a_row():
    assert {c for c, _, _ in CASES} >= set(cli.commands)


def test_non_utf8_classes_names_the_byte(files):
    r = CliRunner().invoke(cli, ["info", "--config", files["latin1_yaml"]])
    assert "not UTF-8" in r.stderr and "0xe9" in r.stderr and "line 2" in r.stderr


def test_convert_messages_say_what_is_wrong(files, tmp_path):
    r = CliRunner().invoke(cli, ["convert", files["ckpt"], str(tmp_path / "o.safetensors")])
    assert r.exit_code == 1 and "already a vidtok checkpoint (vidtok_ti)" in r.stderr, r.stderr
    (tmp_path / "notes.txt").write_text("hello\n")
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "notes.txt"), str(tmp_path / "o.safetensors")])
    assert r.exit_code == 1 and "not a weights file" in r.stderr and "(101)" not in r.stderr, r.stderr


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys, runpy; sys.argv = ['vidtok', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('vidtok.cli', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    heavy = [m for m in ('torch', 'av', 'cv2', 'decord', 'torchcodec', 'torchvision') if m in sys.modules]\n"
        "    print('HEAVY=' + ','.join(heavy), file=sys.stderr); raise\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--out", "d", "--set", "train.epochz=1"],
        ["classify", "missing_dir/", "-c", "model.safetensors", "--out", "p.csv"],
        ["train", "--config", "missing.yaml", "--out", "r"],
        ["train", "--out", "r", "--set", "data.num_frames=0"],
        ["eval", "-c", "missing.safetensors"],
        ["embed", "x", "-c", "y", "--out", "e.txt"],
        ["report", "preds.csv", "--out", "r"],
        ["info", "--model", "vivit_b16x3"],
        ["train", "--out", "r", "--set", "model.name=vivit_b16x3"],
        ["demo", "--out", "d", "--set", "model.name=vidtok_tiny"],
    ],
    ids=[
        *("demo-key", "classify-path", "train-config", "train-value", "eval-ckpt", "embed-format", "report-input"),
        *("info-model", "train-model", "demo-model"),
    ],
)
def test_usage_errors_fail_before_heavy_imports(tmp_path, argv):
    """Fail fast: a typo is reported without importing torch or a decoder (and before anything is written)."""
    r = _run(argv, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[-1] == "HEAVY=", r.stderr
    assert list(tmp_path.iterdir()) == []


def test_special_files_are_named_for_what_they_are(tmp_path):
    """A FIFO would block a decoder and /dev/zero never ends: both are refused by kind, not called "empty"."""
    import vidtok
    from vidtok.errors import VideoDecodeError

    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(VideoDecodeError, match=r"is a FIFO \(named pipe\), not a regular video file"):
        vidtok.open_video(tmp_path / "pipe.mp4")
    if os.path.exists("/dev/zero"):
        with pytest.raises(VideoDecodeError, match="is a device, not a regular video file"):
            vidtok.open_video("/dev/zero")


def test_synth_overwrite_clears_the_folder(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "old.mp4").write_bytes(b"a video of an earlier dataset")
    args = ["synth", str(out), "--classes", "1", "--per-class", "1", "--val-per-class", "0", "--size", "16"]
    r = CliRunner().invoke(cli, [*args, "--frames", "2"])
    assert r.exit_code == 2 and "--overwrite" in r.stderr and (out / "old.mp4").exists()
    r = CliRunner().invoke(cli, [*args, "--frames", "2", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not (out / "old.mp4").exists() and len(list(out.rglob("*.mp4"))) == 1
