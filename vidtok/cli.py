"""The ``vidtok`` command line. Commands are thin: parse, build a config, call vidtok's Python API.

torch and everything heavy is imported inside command bodies so ``vidtok --help`` is instant. Any
:class:`~vidtok.errors.VidtokError` is printed as one line ``error: ...`` on stderr with a non-zero exit code;
``vidtok --debug CMD`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from importlib import metadata
from pathlib import Path

import click

from vidtok import __version__
from vidtok.config import TEST_SAMPLERS, VIDEO_BACKENDS
from vidtok.errors import ConfigError, Terminated, VidtokError, format_error


class _Group(click.Group):
    """Every failure a user can cause ends as one line ``error: ...`` on stderr (:func:`vidtok.errors.format_error`):
    exit 2 for usage and config errors, 1 for other vidtok errors, 130 / 143 for Ctrl-C / SIGTERM."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (VidtokError, KeyboardInterrupt, OSError) as e:
            if ctx.params.get("debug"):
                e._vidtok_debug = True  # main() lets it through with its traceback
                raise
            if isinstance(e, OSError) and not _user_os_error(e):
                raise
            line, code = format_error(e)
            click.echo(line, err=True)
            ctx.exit(code)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        with _sigterm_as_interrupt():
            try:
                rc = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except click.exceptions.NoArgsIsHelpError as e:  # bare `vidtok`: the help, as click prints it
                click.echo(e.ctx.get_help())
                rc = 0
            except (click.ClickException, VidtokError, KeyboardInterrupt) as e:
                if getattr(e, "_vidtok_debug", False):
                    raise
                line, rc = format_error(e)
                click.echo(line, err=True)
            except click.exceptions.Abort:
                click.echo("error: interrupted", err=True)
                rc = 130
        sys.exit(rc if isinstance(rc, int) else 0)


def _user_os_error(e: OSError) -> bool:
    """An OSError about a user's file (disk full, permission denied, a folder where a file is expected)."""
    return e.filename is not None or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`~vidtok.errors.Terminated` (a KeyboardInterrupt) in the main thread, so a stopped job
    shuts down as after Ctrl-C: the writer flushes and closes, decode workers are stopped, exit 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, "--version", prog_name="vidtok")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """vidtok: video understanding with tubelet tokens.

    \b
    Examples:
      vidtok info
      vidtok synth data/synth
      vidtok train --config demo_vidtok_ti --out runs/demo
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    from vidtok.logs import setup_logging

    setup_logging(capture_warnings=True)  # one handler for every command: lines never run into a progress bar


def config_options(f):
    """``--config FILE`` and repeatable ``--set key.sub=value`` for commands that build a Config."""
    f = click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable)."
    )(f)
    f = click.option(
        "--config",
        "config_path",
        metavar="FILE|NAME",
        help="YAML config file, or a bundled recipe name (e.g. demo_vidtok_ti).",
    )(f)
    return f


def load_cli_config(config_path: str | None, overrides: tuple[str, ...]):
    """The config of ``--config`` + ``--set``, validated, its model name checked (nothing heavy imported)."""
    from vidtok.config import load_config
    from vidtok.models.registry import check_model_name

    cfg = load_config(config_path, overrides)
    check_model_name(cfg.model.name)
    return cfg


# Option checks run by click before a command body imports anything heavy: a typo fails in well under a second.


def _device(ctx, param, value):
    from vidtok.config import check_device

    return check_device(value, f"--{param.name}") if value is not None else value


def _finite_positive(ctx, param, value):
    if value is not None and not (value > 0 and value != float("inf")):  # NaN fails `value > 0`
        raise click.BadParameter(f"must be a finite number > 0, got {value}")
    return value


def _existing(ctx, param, value):
    """An input that must exist: a file / folder path, or ``@list.txt`` for PATHS."""
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is None:
            continue
        path = v[1:] if v.startswith("@") and not os.path.lexists(v) else v
        if not os.path.lexists(path):
            raise click.BadParameter(f"{path}: no such file or directory", param=param)
    return value


def _refuse_existing_output(what: str, out: str | None, resume: bool, overwrite: bool, retry_failed: bool) -> None:
    """A known --out format; --resume / --overwrite / --retry-failed make sense together only one way; an existing
    --out needs one of them."""
    from vidtok.engine.infer_io import CLASSIFY_FORMATS, EMBED_FORMATS, output_exists
    from vidtok.engine.infer_io.files import _fmt_of

    if out is not None:
        _fmt_of(Path(out), CLASSIFY_FORMATS if what == "classify" else EMBED_FORMATS, what)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other (continue the output, or start it again)")
    if retry_failed and not resume:
        raise ConfigError("--retry-failed needs --resume (it retries the failed videos of an existing output)")
    if out is None or resume or overwrite:
        return
    if output_exists(out):
        raise ConfigError(f"{out} exists; pass --resume to continue it or --overwrite to start again", key="out")


_BACKEND = click.Choice(list(VIDEO_BACKENDS))
_POS_INT = click.IntRange(min=1)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@cli.command()
@click.option("--model", "model_name", default=None, help="Also show parameters and FLOPs of this registry model.")
@config_options
def info(model_name: str | None, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Versions, video decoders, attention backends and devices on this machine.

    \b
    Examples:
      vidtok info
      vidtok info --model vivit_b16x2
    """
    cfg = load_cli_config(config_path, overrides) if (config_path or overrides) else None
    if model_name:  # an unknown model fails before the table is printed (and before torch loads)
        from vidtok.models.registry import check_model_name

        check_model_name(model_name)

    import torch

    from vidtok import io as vio
    from vidtok import kernels

    rows = [("vidtok", __version__), ("python", sys.version.split()[0])]
    for dist in ("torch", "torchvision", "av", "decord", "torchcodec", "triton", "transformers"):
        rows.append((dist, _version(dist)))
    rows.append(("video backends", ", ".join(vio.available_backends()) + f"  (auto: {vio.resolve_backend('auto')})"))
    rows.append(("video extensions", " ".join(vio.VIDEO_EXTENSIONS)))
    cuda = torch.cuda.is_available()
    probe = torch.empty(1, 1, 1, 1, 64, device="cuda" if cuda else "cpu")  # Dh=64: a head dim triton supports
    rows.append(
        (
            "attention backends",
            ", ".join(kernels.available_backends()) + f"  (auto: {kernels.resolve_backend('auto', probe)})",
        )
    )
    device = f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu"
    rows.append(("device", device))
    rows.append(("cpu threads", str(torch.get_num_threads())))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
    if cfg is not None and model_name is None:
        model_name = cfg.model.name
    if model_name:
        from vidtok.models import describe_model

        click.echo("")
        from vidtok.config import resolved_model_config

        for k, v in describe_model(model_name, resolved_model_config(cfg) if cfg is not None else None).items():
            click.echo(f"{k:<{width}}  {v}")


@cli.command()
@click.argument("video", type=click.Path(dir_okay=False), callback=_existing)
@click.option(
    "--checkpoint",
    "-c",
    required=True,
    type=click.Path(),
    callback=_existing,
    help="Model checkpoint (.safetensors) or run folder.",
)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Output: .png/.jpg, .gif or .mp4.")
@click.option(
    "--mode",
    type=click.Choice(["tokens", "argmax", "cls"]),
    default=None,
    help="tokens: one map per learned token; argmax: strongest token per pixel; cls: last-block CLS attention. "
    "Default: tokens with a TokenLearner, else cls.",
)
@click.option("--start", "start_sec", type=float, default=None, help="Clip start in seconds (default: centred clip).")
@click.option("--backend", type=_BACKEND, default="auto", show_default=True, help="Video decoder.")
@click.option(
    "--cell", type=_POS_INT, default=None, help="Panel size in pixels (default 128 for images, 160 for video)."
)
@click.option(
    "--fps", type=float, default=4.0, show_default=True, callback=_finite_positive, help="Frame rate of GIF / MP4."
)
@click.option("--max-rows", type=_POS_INT, default=None, help="Show at most this many temporal slices in a PNG.")
@click.option("--device", default="cpu", show_default=True, callback=_device, help="cpu | cuda | cuda:N | auto.")
def viz(
    video: str,
    checkpoint: str,
    out: str,
    mode: str | None,
    start_sec: float | None,
    backend: str,
    cell: int | None,
    fps: float,
    max_rows: int | None,
    device: str,
) -> None:
    """Overlay where a model looks on a video: TokenLearner maps or last-block CLS attention.

    A PNG shows one row per temporal slice (tubelet) and one column per learned token; a GIF or MP4 animates the
    overlay over the clip's frames. The title holds the model's top-3 predictions.

    \b
    Examples:
      vidtok viz clip.mp4 --checkpoint runs/demo --out overlay.png
      vidtok viz clip.mp4 -c runs/demo -o overlay.gif --mode argmax
      vidtok viz clip.mp4 -c vivit_b16x2.safetensors -o attn.mp4 --mode cls
    """
    from vidtok.engine.device import resolve_device
    from vidtok.viz.attention import visualize

    device = str(resolve_device(device, key="--device"))
    view = visualize(
        video,
        checkpoint,
        out,
        mode=mode,
        backend=backend,
        start_sec=start_sec,
        cell=cell,
        fps=fps,
        max_rows=max_rows,
        device=device,
    )
    click.echo(f"{view.title}")
    click.echo(f"wrote {out} ({view.mode}: {view.maps.shape[0]} temporal slices x {view.maps.shape[1]} maps)")


@cli.command()
@click.argument("run_dir", type=click.Path(), callback=_existing)
@click.option("--out", "-o", default=None, type=click.Path(dir_okay=False), help="Image (default RUN_DIR/curves.png).")
@click.option("--title", default=None, help="Figure title (default: the run folder name).")
def plot(run_dir: str, out: str | None, title: str | None) -> None:
    """Plot loss, learning rate and train / val top-1 over steps from RUN_DIR/metrics.jsonl (needs matplotlib).

    \b
    Examples:
      vidtok plot runs/demo
      vidtok plot runs/demo --out curves.png
    """
    from vidtok.viz.plots import plot_training_curves

    if out is None:
        p = Path(run_dir)
        out = str((p if p.is_dir() else p.parent) / "curves.png")
    click.echo(f"wrote {plot_training_curves(run_dir, out, title=title)}")


@cli.command()
@click.argument("src", type=click.Path(), callback=_existing)
@click.argument("out", type=click.Path())
@click.option(
    "--to",
    "target",
    type=click.Choice(["vidtok", "hf"]),
    default="vidtok",
    show_default=True,
    help="vidtok: SRC (HF or 2D ViT) -> a vidtok checkpoint. hf: SRC (a vidtok checkpoint) -> a Hugging Face folder.",
)
@click.option("--overwrite", is_flag=True, help="--to hf: write into an existing non-empty OUT folder.")
@click.option(
    "--arch",
    type=click.Choice(["auto", "vivit", "videomae", "timesformer", "vit2d"]),
    default="auto",
    show_default=True,
    help="Source architecture; auto reads config.json (HF) or the state-dict layout (2D ViT).",
)
@click.option("--model", "model_name", default=None, help="vidtok registry model to build (required for vit2d).")
@click.option("--num-frames", type=_POS_INT, default=None, help="vit2d: input frames of the inflated model.")
@click.option("--img-size", type=_POS_INT, default=None, help="vit2d: crop size (positional embeddings are resized).")
@click.option(
    "--num-classes", type=_POS_INT, default=None, help="vit2d: classes; a new head unless it matches the 2D one."
)
@click.option(
    "--num-heads", type=_POS_INT, default=None, help="vit2d: attention heads (default: the model's, else D/64)."
)
@click.option(
    "--tubelet-init",
    type=click.Choice(["central", "average"]),
    default="central",
    show_default=True,
    help="vit2d: inflate the 2D patch kernel to the central frame, or average it over the tubelet.",
)
@click.option("--frame-stride", type=_POS_INT, default=None, help="Stored preprocessing: frame stride to sample with.")
@click.option(
    "--classes",
    "classes_file",
    default=None,
    type=click.Path(dir_okay=False),
    callback=_existing,
    help="Class names file.",
)
def convert(
    src: str,
    out: str,
    target: str,
    overwrite: bool,
    arch: str,
    model_name: str | None,
    num_frames: int | None,
    img_size: int | None,
    num_classes: int | None,
    num_heads: int | None,
    tubelet_init: str,
    frame_stride: int | None,
    classes_file: str | None,
) -> None:
    """Convert SRC (HF ViViT / VideoMAE / TimeSformer, or a 2D ViT to inflate) into a vidtok checkpoint OUT.

    \b
    Examples:
      vidtok convert hf/vivit-b-16x2-kinetics400 vivit_k400.safetensors
      vidtok convert hf/videomae-base-finetuned-kinetics videomae_k400.safetensors
      vidtok convert vit_b_16.pth vivit_b16x2_in1k.safetensors --arch vit2d --model vivit_b16x2 --num-frames 32
      vidtok convert vit_b_16.pth tokshift_b16.safetensors --arch vit2d --model tokshift_b16 --num-frames 8
      vidtok convert --to hf runs/vivit/model.safetensors hf/my-vivit   # ViViT Model 1 / VideoMAE / TimeSformer
    """
    if target == "hf":
        vit2d = {"--arch": arch != "auto", "--model": model_name, "--num-frames": num_frames, "--img-size": img_size,
                 "--num-classes": num_classes, "--num-heads": num_heads, "--tubelet-init": tubelet_init != "central",
                 "--frame-stride": frame_stride}  # fmt: skip
        bad = [k for k, v in vit2d.items() if v]
        if bad:
            raise ConfigError(f"{', '.join(bad)}: not used by --to hf (the checkpoint fixes the architecture)")
        if os.path.exists(out) and (not os.path.isdir(out) or (os.listdir(out) and not overwrite)):
            raise ConfigError(f"{out} exists; pass --overwrite to write into it (--to hf writes a folder)", key="out")
    elif os.path.isdir(out):
        raise ConfigError(f"{out} is a folder; OUT is the .safetensors file to write", key="out")
    from vidtok.convert import convert as run_convert

    pcfg: dict = {}
    if frame_stride is not None:
        pcfg["frame_stride"] = frame_stride
    if classes_file is not None:
        from vidtok.config import read_text

        text = read_text(classes_file, what="class names file")
        pcfg["class_names"] = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if target == "hf":
        from vidtok.convert import convert_to_hf

        click.echo(f"wrote {convert_to_hf(src, out, overwrite=overwrite, class_names=pcfg.get('class_names'))}")
        return
    path = run_convert(
        src,
        out,
        arch=arch,
        model_name=model_name,
        num_frames=num_frames,
        img_size=img_size,
        num_classes=num_classes,
        num_heads=num_heads,
        tubelet_init=tubelet_init,
        pretrained_cfg=pcfg,
    )
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--classes",
    "num_classes",
    type=click.IntRange(1, 8),
    default=4,
    show_default=True,
    help="Number of motion classes (the first K of: right left up down rotate_cw rotate_ccw grow shrink).",
)
@click.option("--per-class", type=_POS_INT, default=100, show_default=True, help="Training videos per class.")
@click.option(
    "--val-per-class",
    type=click.IntRange(min=0),
    default=None,
    help="Held-out videos per class [default: per-class // 4].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Everything generated is a function of it.")
@click.option(
    "--size", type=click.IntRange(min=16), default=64, show_default=True, help="Frame side in pixels (square, even)."
)
@click.option("--frames", type=click.IntRange(min=2), default=32, show_default=True, help="Frames per video.")
@click.option("--fps", type=_POS_INT, default=25, show_default=True, help="Frame rate written into the files.")
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Encoding processes (0 = this one)."
)
@click.option("--overwrite", is_flag=True, help="OUT is not empty: delete its contents first.")
def synth(out, num_classes, per_class, val_per_class, seed, size, frames, fps, workers, overwrite) -> None:
    """Write a synthetic motion-only action dataset (H.264 files, Kinetics layout) to OUT.

    Each video is a shape moving on a textured background; the class depends only on the motion, never on
    appearance. Writes OUT/train/<class>/*.mp4, OUT/val/..., OUT/train.csv, OUT/val.csv and OUT/classes.txt.
    Train on it with data.root=OUT (format kinetics) and data.hflip=false. The defaults are the demo's data:
    `vidtok train --config demo_vidtok_ti --set data.root=OUT` trains the demo's recipe on it.

    \b
    Examples:
      vidtok synth data/synth
      vidtok synth data/synth8 --classes 8 --per-class 100 --val-per-class 25 --size 96 --seed 1
    """
    import time

    from vidtok.data.synthetic import make_synthetic_dataset

    t0 = time.perf_counter()
    try:
        info = make_synthetic_dataset(
            out,
            num_classes=num_classes,
            per_class=per_class,
            val_per_class=val_per_class,
            seed=seed,
            size=size,
            frames=frames,
            fps=fps,
            workers=workers,
            overwrite=overwrite,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    counts = info["counts"]
    click.echo(
        f"wrote {counts['train']} train + {counts['val']} val videos of {len(info['classes'])} classes "
        f"({', '.join(info['classes'])}) to {out} in {time.perf_counter() - t0:.1f} s"
    )


def _infer_options(f):
    """Options shared by `classify` and `embed` (decoding, batching, resume, device)."""
    for opt in reversed(
        [
            click.option("--batch-size", type=_POS_INT, default=16, show_default=True, help="Clips per forward pass."),
            click.option(
                "--workers", "num_workers", type=_POS_INT, default=2, show_default=True, help="Decode processes."
            ),
            click.option(
                "--timeout",
                default=120.0,
                show_default=True,
                callback=_finite_positive,
                help="Seconds one file may take to decode.",
            ),
            click.option(
                "--streams",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="CPU only: model calls run side by side on parts of each batch (0 = one per core).",
            ),
            click.option("--resume", is_flag=True, help="Skip videos already in --out (repairs a half-written one)."),
            click.option("--retry-failed", is_flag=True, help="With --resume: try failed videos again."),
            click.option("--overwrite", is_flag=True, help="Start --out again if it exists."),
            click.option(
                "--device", default="auto", show_default=True, callback=_device, help="auto | cpu | cuda | cuda:N."
            ),
            click.option(
                "--amp",
                type=click.Choice(["auto", "none", "bf16", "fp16"]),
                default="auto",
                show_default=True,
                help="Autocast dtype (auto: bf16 on CUDA, off on CPU).",
            ),
            click.option("--backend", type=_BACKEND, default="auto", show_default=True, help="Video decoder."),
            click.option(
                "--video-stream",
                "stream",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="Video stream of each file, counted among its video streams (0 = the first).",
            ),
            click.option(
                "--ext",
                "extensions",
                default=None,
                help="Comma-separated extensions searched for in folders [default: the video extensions "
                "`vidtok info` lists].",
            ),
            click.option("--quiet", is_flag=True, help="No progress bar or summary."),
            click.option(
                "--engine",
                type=click.Choice(["local", "ray"]),
                default="local",
                show_default=True,
                help="local: this machine; ray: Ray Data decode tasks feeding model replicas (vidtok[ray] extra).",
            ),
            click.option(
                "--address",
                default=None,
                help="--engine ray: cluster to join, auto | HOST:PORT (default: a local one).",
            ),
            click.option(
                "--sampler",
                type=click.Choice(TEST_SAMPLERS),
                default="uniform",
                show_default=True,
                help="Where the clips sit in time (embed: with --per-video): evenly spaced, or a peer's test protocol.",
            ),
            click.option(
                "--replicas",
                default=None,
                help="--engine ray: model replicas, N or MIN:MAX (default: 1 to one per GPU; CPU-only: 1 to CPUs / 4).",
            ),
        ]
    ):
        f = opt(f)
    return f


@cli.command()
@click.argument("paths", nargs=-1, required=True, callback=_existing)
@click.option(
    "--checkpoint", "-c", required=True, callback=_existing, help="vidtok checkpoint (.safetensors) or run folder."
)
@click.option("--topk", type=_POS_INT, default=5, show_default=True, help="Labels per video.")
@click.option("--views", default=None, help="CLIPSxCROPS, e.g. 4x3 (default: the checkpoint's test views).")
@click.option("--out", "-o", default=None, help="preds.csv | .jsonl | .parquet (default: print CSV to stdout).")
@_infer_options
def classify(paths, checkpoint, topk, views, out, **kw) -> None:
    """Top-k classes of every video in PATHS (files, folders searched recursively, or @list.txt).

    Each video is cut into uniform clips x crops, probabilities are averaged over the views, and one row is written
    per video as soon as it is done (path, status, duration, views, label_i/prob_i/index_i, error; without --out the
    same CSV on stdout). A file that cannot be decoded is a row with status=error. Under torchrun every process
    takes a shard and rank 0 merges; with --engine ray, Ray Data spreads decoding and the model over a cluster.

    \b
    Examples:
      vidtok classify videos/ --checkpoint runs/k400 --out preds.csv
      vidtok classify a.mp4 b.mkv -c model.safetensors --topk 3 --views 4x3 --out preds.jsonl
      vidtok classify videos/ -c model.safetensors --out preds.parquet --resume
      torchrun --nproc-per-node 4 -m vidtok.cli classify videos/ -c model.safetensors --out preds.csv
      vidtok classify videos/ -c model.safetensors --out preds.csv --engine ray --address auto
    """
    _refuse_existing_output("classify", out, kw["resume"], kw["overwrite"], kw["retry_failed"])
    if views is not None:
        from vidtok.engine.infer import parse_views

        parse_views(views)
    from vidtok.engine.infer import classify as run

    quiet = kw.pop("quiet")
    kw["streams"] = kw["streams"] or None
    kw["extensions"] = kw["extensions"].split(",") if kw["extensions"] is not None else None
    rows = run(list(paths), checkpoint, topk=topk, views=views, out=out, verbose=not quiet, **kw)
    if out is None:  # the CSV the file would hold, on stdout
        import csv

        from vidtok.engine.infer_io import csv_header, csv_row

        k = max((len(r["labels"]) for r in rows), default=0)
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(csv_header(k))
        w.writerows(csv_row(r, k) for r in rows)


@cli.command()
@click.argument("paths", nargs=-1, required=True, callback=_existing)
@click.option(
    "--checkpoint", "-c", required=True, callback=_existing, help="vidtok checkpoint (.safetensors) or run folder."
)
@click.option("--out", "-o", required=True, help="emb.parquet | emb.npy | emb.safetensors (+ OUT.index.csv).")
@click.option("--window", default=None, help="Window length, e.g. 2s (default: the model's clip length).")
@click.option("--hop", default=None, help="Hop between windows, e.g. 1s (default: the window).")
@click.option("--per-video", is_flag=True, help="One vector per video (mean over the checkpoint's test clips).")
@click.option("--normalize", is_flag=True, help="L2-normalise every vector.")
@click.option("--fp16", is_flag=True, help="Store float16 vectors (default float32).")
@click.option("--tokens", is_flag=True, help="Also store the TokenLearner tokens of every row.")
@_infer_options
def embed(paths, checkpoint, out, window, hop, per_video, normalize, fp16, tokens, **kw) -> None:
    """Clip embeddings (pre-logits features) of every video in PATHS, over sliding windows or one per video.

    Vectors go to --out (.parquet holds the index columns too; .npy / .safetensors get OUT.index.csv with
    path, clip_start, clip_end, row). Videos that fail are listed in OUT.errors.csv. Under torchrun every process
    takes a shard and rank 0 merges.

    \b
    Examples:
      vidtok embed videos/ --checkpoint runs/k400 --out emb.parquet --window 2s --hop 1s
      vidtok embed videos/ -c model.safetensors --out emb.npy --per-video --normalize --fp16
      vidtok embed videos/ -c model.safetensors --out emb.safetensors --tokens --resume
      vidtok embed videos/ -c model.safetensors --out emb.npy --engine ray --address auto --replicas 1:4
    """
    _refuse_existing_output("embed", out, kw["resume"], kw["overwrite"], kw["retry_failed"])
    from vidtok.engine.infer import parse_seconds

    parse_seconds(window, "window"), parse_seconds(hop, "hop")
    from vidtok.engine.infer import embed as run

    quiet = kw.pop("quiet")
    kw["streams"] = kw["streams"] or None
    kw["extensions"] = kw["extensions"].split(",") if kw["extensions"] is not None else None
    run(
        list(paths),
        checkpoint,
        out=out,
        window=window,
        hop=hop,
        per_video=per_video,
        normalize=normalize,
        fp16=fp16,
        tokens=tokens,
        verbose=not quiet,
        load=False,  # the vectors are in --out; nothing is read back
        **kw,
    )


def _report_inputs(ctx, param, value):
    """Classify / embed outputs that exist (or have unmerged parts), by extension; checked before heavy imports."""
    from vidtok.report.build import check_input

    for v in value:
        check_input(v)
    return value


@cli.command()
@click.argument("outputs", nargs=-1, required=True, callback=_report_inputs)
@click.option(
    "--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False), help="Report folder (empty or new)."
)
@click.option(
    "--checkpoint", "-c", default=None, callback=_existing, help="The classify model: TokenLearner overlays on cards."
)
@click.option(
    "--overlays",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Overlays for at most this many videos (the least confident).",
)
@click.option(
    "--map",
    "map_method",
    type=click.Choice(["pca", "tsne"]),
    default="pca",
    show_default=True,
    help="2-D map of the embeddings (tsne needs scikit-learn: pip install 'vidtok[report]').",
)
@click.option("--neighbours", type=_POS_INT, default=10, show_default=True, help="Nearest neighbours per embed row.")
@click.option("--no-thumbnails", is_flag=True, help="No posters, previews or clip frames (no video is decoded).")
@click.option("--workers", type=_POS_INT, default=None, help="Decoding threads for the pictures [default: CPUs, <= 8].")
@click.option("--title", default=None, help="Page title (default: the output file names).")
@click.option("--overwrite", is_flag=True, help="Replace the report in a non-empty --out (only its own files).")
def report(outputs, out_dir, checkpoint, overlays, map_method, neighbours, no_thumbnails, workers, title, overwrite):
    """A review page of classify / embed OUTPUTS: a static folder that opens from disk (no server, no network).

    Classify outputs (.csv, .jsonl, .parquet) become a grid of cards (poster, animated preview, top-k bars) with
    filters, sorting, search, a per-class summary and the failed files; embed outputs (.npy, .safetensors,
    .parquet) a 2-D map (PCA) where hovering shows a clip and clicking lists its cosine nearest neighbours.

    \b
    Examples:
      vidtok report preds.csv emb.parquet --out report/
      vidtok report preds.jsonl --checkpoint runs/demo --out report/ --overwrite
      vidtok report emb.npy --out emb_report/ --map tsne
    """
    from vidtok.report.build import check_out

    check_out(out_dir, overwrite)
    from vidtok.report.build import write_report

    res = write_report(
        list(outputs),
        out_dir,
        overwrite=overwrite,
        checkpoint=checkpoint,
        overlays=overlays,
        map_method=map_method,
        neighbours=neighbours,
        thumbnails=not no_thumbnails,
        workers=workers,
        title=title,
        echo=click.echo,
    )
    click.echo(
        f"wrote {res['index']} ({res['classify_rows']} classify rows, {res['embed_rows']} embed rows, "
        f"{res['videos']} videos pictured, {res['overlays']} overlays) in {res['seconds']['total']:.1f} s"
    )


@cli.command()
@config_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder (created).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest good checkpoint.")
@click.option("--overwrite", is_flag=True, help="--out holds a run: delete it and start again.")
@click.option("--init", "init", default=None, help="Checkpoint / run folder to fine-tune from (head re-initialised).")
@click.option(
    "--max-steps", type=_POS_INT, default=None, help="Stop after this many optimizer steps (schedule length)."
)
@click.option("--epochs", type=_POS_INT, default=None, help="Number of epochs (overrides train.epochs).")
@click.option("--device", default=None, callback=_device, help="auto | cpu | cuda | cuda:N (overrides train.device).")
@click.option("--no-progress", is_flag=True, help="No progress bar: a progress log line every 15 s instead.")
def train(config_path, overrides, out_dir, resume, overwrite, init, max_steps, epochs, device, no_progress) -> None:
    """Train a model: checkpoints, metrics.jsonl and model.safetensors go to --out.

    Runs on several processes / nodes under torchrun (DDP; nccl on CUDA, gloo on CPU); only rank 0 writes.
    A run resumes exactly from its last checkpoint with --resume (the run's own config.yaml is used).

    \b
    Examples:
      vidtok train --config demo_vidtok_ti --set data.root=demo_out/data --out runs/demo
      vidtok train --config k400_vivit_b16x2 --init vit_b16_inflated.safetensors --out runs/k400
      vidtok train --out runs/k400 --resume
      torchrun --nproc-per-node 8 -m vidtok.cli train --config k400_vidtok_b --out runs/k400_b
    """
    from vidtok.config import check_config_paths
    from vidtok.engine.run_dir import check_run_dir

    check_run_dir(out_dir, resume=resume, overwrite=overwrite)
    run_cfg = Path(out_dir) / "config.yaml"
    if resume and config_path is None and run_cfg.is_file():
        config_path = str(run_cfg)  # resume with the run's own resolved config
    extra = list(overrides)
    if init is not None:
        extra.append(f"train.init={init}")
    if max_steps is not None:
        extra.append(f"train.max_steps={max_steps}")
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if device is not None:
        extra.append(f"train.device={device}")
    cfg = load_cli_config(config_path, tuple(extra))
    check_config_paths(cfg)
    from vidtok.engine.train import train as run_train

    res = run_train(cfg, out_dir, resume=resume, overwrite=overwrite, progress=not no_progress)
    if res["model_path"]:
        val = res["val"]
        acc = f"; val top-1 {val['top1']:.2f} %, top-5 {val['top5']:.2f} %" if val else ""
        click.echo(f"done: {res['step']} steps in {res['seconds']:.0f} s{acc}; model: {res['model_path']}")


@cli.command(name="eval")
@click.option(
    "--checkpoint", "-c", required=True, callback=_existing, help="vidtok checkpoint (.safetensors) or run folder."
)
@click.option(
    "--data",
    "data_path",
    default=None,
    callback=_existing,
    help="Annotations: Kinetics CSV, 'path label' list or class folder.",
)
@click.option("--root", default=None, callback=_existing, help="Folder the listed videos live under.")
@config_options
@click.option("--clips", type=_POS_INT, default=None, help="Temporal views per video (default: the checkpoint's).")
@click.option(
    "--sampler",
    type=click.Choice(TEST_SAMPLERS),
    default=None,
    help="Where the views sit: vidtok's evenly spaced windows or a peer's test protocol (default: data.test_sampler).",
)
@click.option(
    "--crops",
    type=click.IntRange(1, 3),
    default=None,
    help="Spatial crops per view: 1 or 3 (default: the checkpoint's).",
)
@click.option("--batch-size", type=_POS_INT, default=8, show_default=True, help="Videos per forward pass.")
@click.option(
    "--workers", "num_workers", type=click.IntRange(min=0), default=2, show_default=True, help="Decode processes."
)
@click.option("--device", default="auto", show_default=True, callback=_device, help="auto | cpu | cuda | cuda:N.")
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none", show_default=True)
@click.option("--shuffle-frames", is_flag=True, help="Permute the frames of every view (motion control).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Report folder.")
def eval_cmd(
    checkpoint, data_path, root, config_path, overrides, clips, sampler, crops, batch_size, num_workers, device, amp,
    shuffle_frames, out_dir,
) -> None:  # fmt: skip
    """Evaluate a checkpoint: multi-view top-1 / top-5, per-class accuracy, confusion-matrix PNG.

    Preprocessing (frames, stride, crop, mean/std, views) and class names come from the checkpoint; --data
    defaults to the validation annotations of the checkpoint's run config. Writes metrics.json, per_class.csv,
    predictions.csv and confusion_matrix.png to --out (default: <checkpoint folder>/eval).

    \b
    Examples:
      vidtok eval --checkpoint demo_out/run --data demo_out/data/val.csv --root demo_out/data
      vidtok eval -c runs/k400/model.safetensors --data k400/val.csv --root k400 --clips 4 --crops 3
    """
    if crops == 2:
        raise click.BadParameter("must be 1 (centre) or 3 (three crops)", param_hint="'--crops'")
    if config_path is not None or overrides:
        load_cli_config(config_path, overrides)  # a bad config fails here, before the checkpoint is read
    from vidtok.engine.evaluate import evaluate_checkpoint, format_report

    res, files = evaluate_checkpoint(
        checkpoint,
        data=data_path,
        root=root,
        config_path=config_path,
        overrides=overrides,
        clips=clips,
        crops=crops,
        sampler=sampler,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        amp=amp,
        shuffle_frames=shuffle_frames,
        out_dir=Path(out_dir) if out_dir else None,
    )
    click.echo(format_report(res))
    click.echo(f"\nreport: {files['metrics'].parent} (confusion matrix: {files['confusion']})")


@cli.command()
@click.option("--out", "out_dir", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--shuffle-frames", is_flag=True, help="Control: train and evaluate with frames shuffled in time.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value (repeatable).")
@click.option("--no-progress", is_flag=True, help="No progress bar: a progress log line every 15 s instead.")
def demo(out_dir, shuffle_frames, overrides, no_progress) -> None:
    """The end-to-end demo: synthetic motion videos -> train vidtok_ti on the CPU -> evaluate held-out videos.

    The classes differ only in how a shape moves, so the model must use motion: expect >= 90 % held-out top-1
    in a few minutes on a laptop CPU; with --shuffle-frames (frames permuted in time) it stays near chance.

    \b
    Examples:
      vidtok demo --out demo_out
      vidtok demo --out demo_out --shuffle-frames
    """
    from vidtok.engine.demo import demo_config, run_demo
    from vidtok.models.registry import check_model_name

    # a bad --set fails here, before any video is written
    check_model_name(demo_config(Path(out_dir) / "data", overrides).model.name)
    run_demo(out_dir, shuffle_frames=shuffle_frames, overrides=overrides, progress=not no_progress, echo=click.echo)


@cli.command(name="export")
@click.argument("checkpoint", type=click.Path(), callback=_existing)
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "torch-export"]),
    default=None,
    help="onnx (onnxruntime) or torch-export (.pt2, torch.export.load). Default: from OUT's suffix (.pt2 or .onnx).",
)
@click.option("--opset", type=click.IntRange(min=7), default=None, help="ONNX opset (default: torch's).")
@click.option("--no-verify", is_flag=True, help="Skip running the exported file against PyTorch.")
@click.option("--overwrite", is_flag=True, help="Replace OUT (and OUT.json) if they exist.")
def export_cmd(checkpoint: str, out: str, fmt: str | None, opset: int | None, no_verify: bool, overwrite: bool) -> None:
    """Export CHECKPOINT (file or run folder) to ONNX or a torch.export program, dynamic batch size.

    The preprocessing (mean, std, frames, stride, crop, resize) and class names travel inside the file (ONNX
    metadata_props / the .pt2's extra files) and in OUT.json beside it. Input "video" float32 (B, C, T, H, W),
    output "logits" (B, num_classes).

    \b
    Examples:
      vidtok export runs/demo model.onnx
      vidtok export runs/demo model.pt2 --format torch-export
      vidtok export runs/demo model.onnx --overwrite --no-verify
    """
    for p in (out, out + ".json"):
        if os.path.lexists(p) and not overwrite:
            raise ConfigError(f"{p} exists; pass --overwrite to replace it", key="out")
    from vidtok.export import export_model

    res = export_model(checkpoint, out, format=fmt, overwrite=overwrite, verify=not no_verify, opset=opset)
    click.echo(f"wrote {res['path']} ({res['format']}) and {res['json']}")
    if res["max_abs_diff"] is not None:
        click.echo(f"verified: max |logits - PyTorch| = {res['max_abs_diff']:.2e} on a random batch of 3")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="vidtok")


if __name__ == "__main__":  # pragma: no cover
    main()
