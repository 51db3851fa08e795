"""Benchmark vidtok models on this machine's CPU and print markdown tables.

Part 1 (``--part hf``): vidtok's ViViT vs HF ``VivitModel`` (attn_implementation "eager" and "sdpa") with the same
config and the same weights (HF tensors mapped into vidtok's fused-QKV layout; outputs checked to match), same
input, forward clips/s and peak memory (RSS growth during one forward, each peer in its own child process).

Part 2 (``--part family``): FLOPs (multiply-adds, counted on the meta device), parameters and CPU clips/s of
vivit_b16x2, vivit_b16x2_tl8, vidtok_b and tokshift_b16 at their default inputs, and the same at Ti/S sizes.

Usage::

    .venv/bin/python tools/bench_model.py                 # both parts
    .venv/bin/python tools/bench_model.py --part hf --sizes b --repeats 5
    .venv/bin/python tools/bench_model.py --part family --sizes ti,s --threads 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidtok.models import count_macs, count_params, create_model  # noqa: E402

SIZES = {
    "ti": dict(embed_dim=192, depth=12, num_heads=3),
    "s": dict(embed_dim=384, depth=12, num_heads=6),
    "b": dict(embed_dim=768, depth=12, num_heads=12),
}


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except (OSError, subprocess.CalledProcessError):
        name = platform.processor() or "?"
    return f"{name}, {mp.cpu_count()} cores visible, torch {torch.__version__}, {torch.get_num_threads()} threads"


# ------------------------------------------------------------------------------------------------ HF comparison
def hf_config(size: str, frames: int, img: int):
    from transformers import VivitConfig

    s = SIZES[size]
    return VivitConfig(
        image_size=img, num_frames=frames, hidden_size=s["embed_dim"], num_hidden_layers=s["depth"],
        num_attention_heads=s["num_heads"], intermediate_size=4 * s["embed_dim"],
    )  # fmt: skip


def build_hf(size: str, frames: int, img: int, impl: str, seed: int = 0):
    from transformers import VivitModel

    torch.manual_seed(seed)
    cfg = hf_config(size, frames, img)
    cfg._attn_implementation = impl  # "eager" | "sdpa"
    m = VivitModel(cfg, add_pooling_layer=False).eval()
    assert m.config._attn_implementation == impl, m.config._attn_implementation
    return m


def hf_to_vidtok(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF VivitModel tensor names -> vidtok ViViT names (q, k, v fused into one qkv)."""
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed.table": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    i = 0
    while f"layers.{i}.mlp.fc1.weight" in sd:
        a, b = f"layers.{i}", f"blocks.{i}"
        out[f"{b}.attn.qkv.weight"] = torch.cat([sd[f"{a}.attention.{p}_proj.weight"] for p in "qkv"])
        out[f"{b}.attn.qkv.bias"] = torch.cat([sd[f"{a}.attention.{p}_proj.bias"] for p in "qkv"])
        out[f"{b}.attn.proj.weight"] = sd[f"{a}.attention.o_proj.weight"]
        out[f"{b}.attn.proj.bias"] = sd[f"{a}.attention.o_proj.bias"]
        for src, dst in (("layernorm_before", "norm1"), ("layernorm_after", "norm2"), ("mlp.fc1", "mlp.fc1")):
            out[f"{b}.{dst}.weight"] = sd[f"{a}.{src}.weight"]
            out[f"{b}.{dst}.bias"] = sd[f"{a}.{src}.bias"]
        out[f"{b}.mlp.fc2.weight"] = sd[f"{a}.mlp.fc2.weight"]
        out[f"{b}.mlp.fc2.bias"] = sd[f"{a}.mlp.fc2.bias"]
        i += 1
    return out


def build_vidtok(size: str, frames: int, img: int, backend: str = "sdpa", seed: int = 0):
    hf = build_hf(size, frames, img, "eager", seed)
    m = create_model(
        "vivit_b16x2", **SIZES[size], num_frames=frames, img_size=img, num_classes=0, act="gelu_fast",
        attn_backend=backend,
    )  # fmt: skip
    m.load_state_dict(hf_to_vidtok(hf.state_dict()))
    return m.eval(), hf


def run_peer(kind: str, size: str, frames: int, img: int, batch: int, seed: int = 0):
    """(model, input, fn) for one peer; fn() runs one forward."""
    torch.manual_seed(123)
    x = torch.randn(batch, 3, frames, img, img)
    if kind == "vidtok":
        m, _ = build_vidtok(size, frames, img, "sdpa", seed)
        return lambda: m.forward_features(x)
    m = build_hf(size, frames, img, kind, seed)
    xh = x.permute(0, 2, 1, 3, 4).contiguous()  # HF layout (B, T, C, H, W), converted before timing
    return lambda: m(pixel_values=xh).last_hidden_state


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _mem_child(kind, size, frames, img, batch, threads, q):
    torch.set_num_threads(threads)
    fn = run_peer(kind, size, frames, img, batch)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    before = _rss_kb("VmRSS")
    with torch.inference_mode():
        fn()
    q.put((_rss_kb("VmHWM") - before) / 1024)


def peak_memory_mb(kind, size, frames, img, batch, threads) -> float:
    """Peak RSS growth during one forward pass, over the state just before it (a fresh child process per peer;
    Linux only: resets VmHWM through /proc/self/clear_refs)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_mem_child, args=(kind, size, frames, img, batch, threads, q))
    p.start()
    out = q.get()
    p.join()
    return out


def time_peers(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call, peers interleaved round-robin so machine-load drift hits all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def part_hf(sizes: list[str], frames: int, img: int, batch: int, repeats: int, threads: int) -> None:
    print(f"\n### vidtok vs HF VivitModel (forward, batch {batch}, {frames}×{img}², CPU)\n")
    print("| size | tokens | peer | s / batch | clips/s | vs HF eager | vs HF sdpa | peak mem (MB) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        ours, hf = build_vidtok(size, frames, img)
        torch.manual_seed(123)
        x = torch.randn(batch, 3, frames, img, img)
        with torch.inference_mode():
            diff = (ours.forward_features(x)[:, 0] - hf(pixel_values=x.transpose(1, 2)).last_hidden_state).abs().max()
        del ours, hf
        fns = {k: run_peer(k, size, frames, img, batch) for k in ("eager", "sdpa", "vidtok")}
        t = time_peers(fns, repeats)
        del fns
        mem = {k: peak_memory_mb(k, size, frames, img, batch, threads) for k in ("eager", "sdpa", "vidtok")}
        n_tok = (frames // 2) * (img // 16) ** 2 + 1
        for k, label in (("eager", "HF eager"), ("sdpa", "HF sdpa"), ("vidtok", "vidtok (sdpa)")):
            print(
                f"| {size.upper()} | {n_tok} | {label} | {t[k]:.3f} | {batch / t[k]:.2f} | {t['eager'] / t[k]:.2f}× "
                f"| {t['sdpa'] / t[k]:.2f}× | {mem[k]:.0f} | {diff.item() if k == 'vidtok' else 0:.1e} |"
            )


# ------------------------------------------------------------------------------------------------ model family
def part_family(sizes: list[str], repeats: int) -> None:
    print("\n### Model family (default inputs, batch 1, CPU forward)\n")
    cols = "model | input (T×H²) | tokens | params (M) | GFLOPs (MACs) | FLOPs vs ViViT | s / clip | clips/s"
    cols += " | speed vs ViViT"
    print(f"| {cols} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        s = SIZES[size]
        tag = {"ti": "ti", "s": "s", "b": "b"}[size]
        peers = {
            f"vivit_{tag}16x2": ("vivit_b16x2", s),
            f"vivit_{tag}16x2_tl8": ("vivit_b16x2_tl8", s),
            f"vidtok_{tag}": (f"vidtok_{tag}", {}),
            f"tokshift_{tag}16": (f"tokshift_{tag}16", {}),
        }
        models, rows = {}, {}
        for label, (name, kw) in peers.items():
            with torch.device("meta"):
                meta = create_model(name, **kw)
            shape = (1, 3, meta.num_frames, *meta.img_size)
            rows[label] = (shape, count_params(meta), count_macs(meta, shape), meta)
            torch.manual_seed(0)
            models[label] = (create_model(name, **kw, attn_backend="sdpa").eval(), torch.randn(shape))
        fns = {k: (lambda m=m, x=x: m(x)) for k, (m, x) in models.items()}
        t = time_peers(fns, repeats)
        base = f"vivit_{tag}16x2"
        for label, (shape, n, macs, meta) in rows.items():
            g = meta.grid
            tokens = f"{g[0] * g[1] * g[2]}"
            if meta.token_reducer:
                tokens += f" → {g[0] * 8}"
            print(
                f"| {label} | {shape[2]}×{shape[3]}² | {tokens} | {n / 1e6:.1f} | {macs / 1e9:.1f} "
                f"| {macs / rows[base][2]:.2f}× | {t[label]:.2f} | {1 / t[label]:.2f} | {t[base] / t[label]:.2f}× |"
            )
        del models, fns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["hf", "family", "all"], default="all")
    ap.add_argument("--sizes", default="ti,b", help="comma-separated of ti, s, b")
    ap.add_argument("--family-sizes", default="b,s,ti")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--img", type=int, default=160)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"Machine: {machine()}")
    if args.part in ("hf", "all"):
        part_hf(args.sizes.split(","), args.frames, args.img, args.batch, args.repeats, torch.get_num_threads())
    if args.part in ("family", "all"):
        part_family(args.family_sizes.split(","), args.repeats)


if __name__ == "__main__":
    main()
