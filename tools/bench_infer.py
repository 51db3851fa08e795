"""Benchmark of ``vidtok classify``: end-to-end videos/s and clips/s vs the model alone vs a naive loop.

Three ways to classify the same folder of generated Kinetics-like videos (340-pixel short side, 10 s, 25 fps, H.264
with one keyframe every 250 frames, as YouTube-sourced Kinetics clips commonly are), side by side in one process:

* ``model only``: the views of every video already decoded and cut in memory (uint8), only normalise + model on
  batches of ``--batch-size`` clips, run the way classify runs it (on CPU: each batch split over
  ``vidtok.engine.infer.cpu_streams`` model threads). The ceiling: decoding costs nothing. A second row runs one
  plain call per batch with torch's default threads, for reference.
* ``vidtok classify``: ``vidtok.classify`` end to end (discovery, ``--workers`` decode processes overlapped with the
  model, batches across videos, CSV written as videos finish), timed from the call to its return.
* ``naive loop``: what a user would write: for each video, open, decode its views, transform, run the model, next.
* ``decode only``: the views of every video prepared in this process with one torch thread, no model (what the
  workers do, on one core).
* ``bound``: what any pipeline overlapping decoding with the model can reach: the slowest of the model alone, the
  decoding spread over the workers and, on CPU, the CPU time of both (each measured alone with
  ``time.process_time``) spread over the cores they share. On C cores with a model that keeps them all busy this
  gives classify / naive <= 1 + (C - 1) * (1 - classify / model-only): on 2 cores the two ratios sum to at most 2.

The modes take turns for ``--rounds`` rounds and each keeps its best (machine noise only ever slows a run down).
Ratios: end-to-end / model-only (target >= 0.8 with 2 workers: decoding hides behind the model) and end-to-end /
naive (target >= 1.5). The model is random-initialised (speed does not depend on the weights).

With ``--engine ray`` one more mode runs ``vidtok.classify(..., engine="ray")`` on a local Ray cluster of this
machine's cores (started once, before the rounds) and the ratio to the local engine is printed.

Usage::

    python tools/bench_infer.py                        # 50 videos, vidtok_ti, 8 frames 160², 4x1 views
    python tools/bench_infer.py --engine ray           # the same, plus classify --engine ray beside local
    python tools/bench_infer.py --videos 100 --model vivit_ti16x2 --num-frames 16 --crop 224 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except OSError:
        name = platform.processor()
    return f"{name or 'unknown CPU'}, {os.cpu_count()} cores"


def _write_one(args: tuple[str, int, int, int, int]) -> str:
    """A 'Kinetics-like' clip: textured background panning, two moving blobs, sensor noise; H.264 yuv420p."""
    import av

    path, seed, h, w, frames = args
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    tex = np.kron(tex, np.ones((8, 8, 1), np.float32))  # blocky texture, panned below
    vx, vy = rng.uniform(-3, 3, 2)
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=25, options={"crf": "23", "preset": "veryfast", "g": "250"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for t in range(frames):
            ox, oy = int(abs(t * 0.5)) % 8, int(abs(t * 0.3)) % 8
            img = tex[oy : oy + h, ox : ox + w].copy()
            for k in range(2):
                cx = (w / 2 + (k * 2 - 1) * w / 4 + vx * t * (k + 1)) % w
                cy = (h / 2 + vy * t) % h
                img += 120 * np.exp(-(((xx - cx) / 40) ** 2 + ((yy - cy) / 30) ** 2))[..., None]
            img += rng.normal(0, 4, img.shape).astype(np.float32)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_videos(folder: Path, n: int, short: int = 340, seconds: float = 10.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    h, w = short, (short * 4 // 3) // 2 * 2  # 340 x 452 (4:3, even width for yuv420p)
    jobs = [(str(folder / f"video_{i:03d}.mp4"), i, h, w, int(seconds * 25)) for i in range(n)]
    todo = [j for j in jobs if not Path(j[0]).exists()]
    if todo:
        print(f"generating {len(todo)} videos in {folder} ...", file=sys.stderr)
        with ProcessPoolExecutor(max(1, (os.cpu_count() or 2))) as ex:
            list(ex.map(_write_one, todo))
    return [Path(j[0]) for j in jobs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "vidtok_bench_infer_videos"))
    ap.add_argument("--model", default="vidtok_ti")
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--frame-stride", type=int, default=2)
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--short-side", type=int, default=182)
    ap.add_argument("--views", default="4x1")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all modes; each keeps its best")
    ap.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="ray: also run classify --engine ray on a local Ray cluster of this machine's cores, beside local",
    )
    args = ap.parse_args()
    if args.crop > args.short_side:
        ap.error(f"--crop {args.crop} is larger than --short-side {args.short_side}")

    import torch

    import vidtok
    from vidtok.data.clip_sampling import uniform_clips
    from vidtok.data.transforms import EvalTransform
    from vidtok.engine.device import amp_dtype, resolve_device
    from vidtok.engine.infer import classify, cpu_streams, parse_views
    from vidtok.engine.infer_workers import ViewSpec, prepare_views
    from vidtok.io import open_video, resolve_backend
    from vidtok.models.hub import save_model
    from vidtok.preprocessing import Preprocessing

    paths = make_videos(Path(args.data), args.videos)
    clips, crops = parse_views(args.views)
    device = resolve_device(args.device, key="--device")
    backend = resolve_backend(args.backend)
    extra = {"token_reducer_layer": 2} if args.model.startswith("vidtok") else {}
    torch.manual_seed(0)
    model = vidtok.create_model(args.model, num_classes=400, num_frames=args.num_frames, img_size=args.crop, **extra)
    cfg = dict(
        num_frames=args.num_frames,
        frame_stride=args.frame_stride,
        crop_size=args.crop,
        short_side=args.short_side,
        test_clips=clips,
        test_crops=crops,
        mean=[0.45] * 3,
        std=[0.225] * 3,
    )
    tmp = Path(tempfile.mkdtemp(prefix="vidtok_bench_infer_"))
    ckpt = save_model(model, tmp / "model.safetensors", pretrained_cfg=cfg)
    model = model.eval().to(device)
    amp = amp_dtype("auto", device)
    prep = Preprocessing.from_pretrained_cfg(cfg)
    norm = prep.normalizer(device)
    n_views = len(paths) * clips * crops

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:  # uint8 views -> probabilities, normalised here as classify does
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return model(norm(x)).float().softmax(-1)

    # warm-up (allocator, kernels, lazy imports) so no mode pays it
    spec = ViewSpec(
        mode="uniform",
        prep=prep,
        clips=clips,
        crops=crops,
        backend=backend,
    )
    _, v0 = prepare_views(str(paths[0]), spec)
    for _ in range(2):
        run(torch.from_numpy(np.concatenate([v0] * (args.batch_size // len(v0) + 1))[: args.batch_size]).to(device))
    sync()

    def prepare_all() -> tuple[float, float, np.ndarray]:  # one process, no model: (wall s, CPU s, views)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a decode worker (the resize would otherwise use torch's intra-op pool)
        t0, c0 = time.perf_counter(), time.process_time()
        out = np.concatenate([prepare_views(str(p), spec)[1] for p in paths])  # (N, 3, T, c, c) uint8
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        torch.set_num_threads(threads)
        return dt, dc, out

    t_prep, cpu_prep, views = prepare_all()
    default_threads = torch.get_num_threads()
    n_streams, per_stream = cpu_streams(args.batch_size) if device.type == "cpu" else (1, default_threads)
    pool = ThreadPoolExecutor(n_streams) if n_streams > 1 else None

    def run_streams(x: torch.Tensor) -> list:
        if pool is None:
            return [run(x)]
        return list(pool.map(run, [c for c in x.tensor_split(n_streams) if len(c)]))

    cpu_model = float("inf")  # CPU seconds (all threads) of the best model-only round as classify runs it

    def model_only(fn, threads: int, record: bool = False) -> float:
        nonlocal cpu_model
        torch.set_num_threads(threads)
        fn(torch.from_numpy(views[: args.batch_size]).to(device))  # warm-up at this thread count
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(views), args.batch_size):
            fn(torch.from_numpy(views[i : i + args.batch_size]).to(device))
        sync()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        torch.set_num_threads(default_threads)
        if record and dt < best["model"]:
            cpu_model = dc
        return dt

    def end_to_end() -> float:
        t0 = time.perf_counter()
        rows = classify(
            [str(p) for p in paths],  # the files, not the folder, which may hold more from a larger run
            ckpt,
            out=tmp / "preds.csv",
            overwrite=True,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device,
            backend=backend,
            topk=5,
        )
        dt = time.perf_counter() - t0
        assert sum(r["status"] == "ok" for r in rows) == len(paths), [r["error"] for r in rows if r["error"]][:3]
        return dt

    ray_start = 0.0
    if args.engine == "ray":  # one local cluster for every round (started once, as a cluster is in real use)
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_worker_niceness", "0")  # as vidtok's own local cluster: the decoders' priority
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0

    def end_to_end_ray(inputs: list | None = None) -> float:
        t0 = time.perf_counter()
        rows = classify(
            inputs or [str(p) for p in paths],
            ckpt,
            out=tmp / "preds_ray.csv",
            overwrite=True,
            batch_size=args.batch_size,
            device=args.device,
            backend=backend,
            topk=5,
            engine="ray",
        )
        dt = time.perf_counter() - t0
        assert sum(r["status"] == "ok" for r in rows) == len(inputs or paths), [r["error"] for r in rows][:3]
        return dt

    tf = EvalTransform(
        crop_size=args.crop, short_side=args.short_side, num_crops=crops, mean=cfg["mean"], std=cfg["std"]
    )

    def naive() -> float:  # decode one video, transform, run the model, next
        t0 = time.perf_counter()
        for p in paths:
            with open_video(p, backend) as v:
                cl = uniform_clips(
                    v.metadata.num_frames,
                    v.metadata.fps,
                    clip_len=args.num_frames,
                    frame_stride=args.frame_stride,
                    num_clips=clips,
                )
                frames = v.get_clips([c.indices.tolist() for c in cl])
            x = torch.cat([tf(f) for f in frames]).to(device)
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                model(x).float().softmax(-1)
        sync()
        return time.perf_counter() - t0

    # the four modes take turns, --rounds times; each keeps its best round (machine noise only ever slows one down)
    def decode_only() -> float:
        nonlocal cpu_prep
        dt, dc, _ = prepare_all()
        if dt < best["decode"]:
            cpu_prep = dc
        return dt

    modes = {
        "model": lambda: model_only(run_streams, per_stream, record=True),
        "plain": lambda: model_only(run, default_threads),
        "decode": decode_only,
        "e2e": end_to_end,
        "naive": naive,
    }
    if args.engine == "ray":
        modes["ray"] = end_to_end_ray
        modes["ray1"] = lambda: end_to_end_ray([paths[0]])  # a job's fixed cost: replica start, pipeline set-up
    best = dict.fromkeys(modes, float("inf"))
    best["decode"] = t_prep
    for r in range(args.rounds):
        for name, fn in modes.items():
            best[name] = min(best[name], fn())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.1f} s" for k, v in best.items()), file=sys.stderr)
    if pool is not None:
        pool.shutdown()
    t_model, t_plain, t_e2e, t_naive = best["model"], best["plain"], best["e2e"], best["naive"]
    # The bound on any overlapped pipeline: the model alone, the decoders alone (spread over the workers), and, on
    # CPU, the CPU time both need spread over the cores they share (each measured above, alone).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    t_bound = max(t_model, cpu_prep / max(1, min(args.workers, cores)))
    if device.type == "cpu":
        t_bound = max(t_bound, (cpu_model + cpu_prep) / cores)

    n = len(paths)
    print(
        f"\nvidtok classify benchmark: {n} generated videos (340x452, 10 s, 25 fps, H.264, GOP 250), model "
        f"{args.model} (random init) {args.num_frames}x{args.crop}² frame stride {args.frame_stride}, views "
        f"{args.views} = {clips * crops} clips/video, batch {args.batch_size}, {args.workers} decode workers, "
        f"decoder {backend}, device {device}{' bf16' if amp else ''}; model as classify runs it: {n_streams} "
        f"stream(s) x {per_stream} thread(s); naive loop: {default_threads} threads; best of {args.rounds} "
        "interleaved rounds"
    )
    print(f"machine: {_machine()}\n")
    print("| mode | videos/s | clips/s | vs model only | vs naive loop |")
    print("|---|---:|---:|---:|---:|")
    shared = f", CPU time of model + decoders over {cores} cores" if device.type == "cpu" else ""
    for name, t in (
        ("model only (clips in memory), as classify runs it", t_model),
        (f"model only, one call per batch, {default_threads} threads", t_plain),
        ("decode only (views prepared in one process, no model)", best["decode"]),
        ("vidtok classify (end to end)", t_e2e),
        *((("vidtok classify --engine ray (end to end, local Ray cluster)", best["ray"]),) if "ray" in best else ()),
        ("naive loop (decode one, run model)", t_naive),
        (f"bound for an overlapped pipeline (max of model, decode / {args.workers} workers{shared})", t_bound),
    ):
        print(f"| {name} | {n / t:.2f} | {n_views / t:.2f} | {t_model / t:.2f} | {t_naive / t:.2f} |")
    print(
        f"\nper video: model {cpu_model / n:.3f} CPU s ({t_model / n:.3f} s wall), view preparation "
        f"{cpu_prep / n:.3f} CPU s; classify runs at {t_bound / t_e2e:.2f}x the bound"
    )
    if "ray" in best:
        t_ray, t_fixed = best["ray"], best["ray1"]
        steady = (n - 1) / max(t_ray - t_fixed, 1e-9)
        print(
            f"--engine ray / local: {t_e2e / t_ray:.2f}x the local engine's videos/s end to end "
            f"({t_bound / t_ray:.2f}x the bound). Fixed cost of a Ray job (one video): {t_fixed:.1f} s; past it, "
            f"{steady:.2f} videos/s = {steady / (n / t_e2e):.2f}x local. Ray cluster start {ray_start:.1f} s (once)."
        )
        # the job size from which Ray reaches 0.8x local, if both run at their rates of this run:
        # N / local = 0.8 * (fixed + (N - 1) / steady)
        gap = t_e2e / n - 0.8 / steady
        at = f"from about {0.8 * (t_fixed - 1 / steady) / gap:.0f} videos" if gap > 0 else "never (steady rate < 0.8x)"
        print(f"--engine ray reaches 0.8x the local engine {at}")
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
