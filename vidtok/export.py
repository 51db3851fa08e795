"""Deployment export: a vidtok checkpoint → an ONNX file (onnxruntime) or a ``torch.export`` program (``.pt2``),
with the preprocessing inside, so a consumer needs nothing else.

Dataflow::

    CKPT ─► load_model (eval; attention on the sdpa path, which both exporters trace)
         ─► check_exportable     refuse reducers whose token count depends on the input values (one line, why)
         ─► torch.export.export(model, (video (2, C, T, H, W),), dynamic batch 1..4096) ─► ExportedProgram
              ├─ torch-export: torch.export.save(ep, OUT.pt2, extra_files={"vidtok.json": metadata})
              └─ onnx:         torch.onnx.export(ep, dynamo=True) ─► metadata_props["vidtok"] = metadata ─► OUT.onnx
         ─► OUT.<suffix>.json beside it: the same metadata (input/output names and layout, preprocessing, classes)
         ─► verify: the runtime's logits vs PyTorch's on a random clip (max |Δ|)

Input ``video`` float32 ``(B, C, T, H, W)``, normalised as the metadata's ``preprocessing`` says; output ``logits``
``(B, num_classes)``. :func:`load_exported` opens either format as a ``tensor -> tensor`` callable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidtok.errors import VidtokError, one_line

__all__ = [
    "FORMATS",
    "ExportError",
    "export_model",
    "export_metadata",
    "check_exportable",
    "load_exported",
    "read_export_metadata",
]

FORMATS = ("onnx", "torch-export")
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2"}
INPUT_NAME, OUTPUT_NAME = "video", "logits"
MAX_BATCH = 4096
_INSTALL = "ONNX export needs onnx, onnxscript and onnxruntime: pip install 'vidtok[export]'"


class ExportError(VidtokError):
    """The model cannot be exported to the requested format (the message says why), or the output exists."""


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"{_INSTALL} ({e})") from None


def check_exportable(model: Any, fmt: str) -> None:
    """Raise :class:`ExportError` (one line, naming the reason) when ``model`` cannot be exported to ``fmt``.

    Fixed-shape reducers export: TokenLearner, ATS (at most K tokens, padded to K with a mask), DynamicViT at
    inference (top-k with a fixed k) and, to ``.pt2`` only, Token Pooling. Mixed-scale tubelets keep a number of
    tokens only known after the gate ran, which neither exporter can express.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    name = getattr(model, "model_name", None) or type(model).__name__
    red = getattr(model, "reducer", None)
    kind = getattr(red, "kind", None)
    if kind == "mixed_scale":
        raise ExportError(
            f"model {name!r} with token reducer 'mixed_scale' cannot be exported: its token count depends on the "
            "input (the gate picks fine or coarse tokens per region at run time), and exported graphs need shapes "
            "that do not depend on values"
        )
    if kind == "token_pooling" and fmt == "onnx":
        raise ExportError(
            f"model {name!r} with token reducer 'token_pooling' cannot be exported to ONNX: its clustering uses "
            "torch.cdist, which has no ONNX operator; use --format torch-export"
        )


def export_metadata(model: Any, *, source: str | None = None) -> dict[str, Any]:
    """What travels with an exported file: model, input/output contract, preprocessing and class names."""
    import torch

    from vidtok import __version__
    from vidtok.models.hub import make_pretrained_cfg

    cfg = make_pretrained_cfg(model)
    class_names = cfg.pop("class_names", [])
    C = int(model.patch_embed.in_chans)
    T = int(model.num_frames)
    H, W = (int(v) for v in model.img_size)
    cfg["pipeline"] = (
        f"decode RGB frames; take num_frames={cfg['num_frames']} frames every frame_stride={cfg['frame_stride']}; "
        f"resize the short side to short_side={cfg['short_side']} ({cfg['interpolation']}, antialiased); centre-crop "
        f"crop_size={cfg['crop_size']}; x / 255; (x - mean) / std per channel; layout (C, T, H, W), batched "
        "(B, C, T, H, W)"
    )
    return {
        "format": "vidtok-export",
        "format_version": "1",
        "vidtok_version": __version__,
        "torch_version": torch.__version__,
        "model": {"name": getattr(model, "model_name", None), "kwargs": dict(getattr(model, "model_kwargs", {}))},
        "source": source,
        "input": {"name": INPUT_NAME, "layout": "B,C,T,H,W", "shape": ["batch", C, T, H, W], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", int(model.num_classes)], "dtype": "float32"},
        "preprocessing": cfg,
        "class_names": class_names,
    }


def _example(model: Any, batch: int = 2) -> Any:
    import torch

    H, W = model.img_size
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, model.patch_embed.in_chans, model.num_frames, H, W, generator=g)


def export_program(model: Any) -> Any:
    """``torch.export.export`` of ``model`` (eval) on its own input size, with a dynamic batch dimension."""
    import torch

    dyn = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
    try:
        return torch.export.export(model, (_example(model),), dynamic_shapes=dyn, strict=False)
    except Exception as e:  # a model this module does not know to refuse: report torch's first line
        first = one_line(str(e).split("\n")[0], 300)
        raise ExportError(f"torch.export failed for {getattr(model, 'model_name', 'model')!r}: {first}") from e


def _write_onnx(ep: Any, path: Path, meta: dict[str, Any], opset: int | None) -> None:
    import torch

    try:
        prog = torch.onnx.export(
            ep,
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    except Exception as e:
        cause = one_line(str(e).split("Exception summary")[-1], 300)
        raise ExportError(f"ONNX conversion failed: {cause}") from e
    props = prog.model.metadata_props
    props["vidtok"] = json.dumps(meta)
    pre = meta["preprocessing"]
    for key in ("mean", "std", "num_frames", "frame_stride", "crop_size", "short_side", "interpolation"):
        props[key] = json.dumps(pre[key])
    props["class_names"] = json.dumps(meta["class_names"])
    props["input_layout"] = meta["input"]["layout"]
    prog.save(str(path))


def export_model(
    src: Any,
    out: str | os.PathLike,
    *,
    format: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
    opset: int | None = None,
) -> dict[str, Any]:
    """Export a vidtok checkpoint (file or run folder) or a model to ``out``.

    Args:
        src: checkpoint path / run folder, or a vidtok model (``create_model`` / ``load_model``).
        out: the ``.onnx`` or ``.pt2`` file to write; ``<out>.json`` is written beside it.
        format: ``"onnx"`` or ``"torch-export"``; default from ``out``'s suffix (``.pt2`` → torch-export, else onnx).
        overwrite: replace existing files (otherwise an existing ``out`` or its JSON is an error).
        verify: run the exported file and report the largest logit difference to PyTorch (``max_abs_diff``).
        opset: ONNX opset (default: torch's).

    Returns:
        ``{"path", "json", "format", "max_abs_diff" (None without verify), "metadata"}``.

    Raises:
        ExportError: the output exists, the format is unknown or the model cannot be exported (one line, why).
        CheckpointError: ``src`` is not a readable vidtok checkpoint.
    """
    import torch

    out = Path(out)
    if format is None:
        format = "torch-export" if out.suffix == ".pt2" else "onnx"
    if format not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    side = out.with_name(out.name + ".json")
    for p in (out, side):
        if p.exists() and not overwrite:
            raise ExportError(f"{p}: exists; pass --overwrite to replace it")
    if format == "onnx":
        _need_onnx()
    source = None
    if isinstance(src, (str, os.PathLike)):
        from vidtok.models.hub import load_model

        source = str(src)
        model = load_model(src)
    else:
        model = src
    check_exportable(model, format)
    was_training = model.training
    from vidtok.models.layers.attention import Attention

    backends = {m: m.backend for m in model.modules() if isinstance(m, Attention)}
    try:
        model.eval()
        for m in backends:
            m.backend = "sdpa"  # one fused op both exporters know; the Triton kernels cannot be traced
        meta = export_metadata(model, source=source)
        with torch.no_grad():
            ep = export_program(model)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.part{out.suffix}")
        if format == "torch-export":
            torch.export.save(ep, str(tmp), extra_files={"vidtok.json": json.dumps(meta)})
        else:
            _write_onnx(ep, tmp, meta, opset)
        os.replace(tmp, out)
        side.write_text(json.dumps(meta, indent=2) + "\n")
        diff = None
        if verify:
            x = _example(model, batch=3)
            with torch.no_grad():
                ref = model(x)
            got = load_exported(out)(x)
            diff = float((got - ref).abs().max())
    finally:
        for m, b in backends.items():
            m.backend = b
        model.train(was_training)
    return {"path": str(out), "json": str(side), "format": format, "max_abs_diff": diff, "metadata": meta}


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata stored *inside* an exported ``.onnx`` / ``.pt2`` file."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    if path.suffix == ".pt2":
        import torch

        extra = {"vidtok.json": ""}
        torch.export.load(str(path), extra_files=extra)
        return json.loads(extra["vidtok.json"])
    _need_onnx()
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "vidtok" not in props:
        raise ExportError(f"{path}: not a vidtok export (no 'vidtok' metadata)")
    return json.loads(props["vidtok"])


def load_exported(path: str | os.PathLike, *, threads: int | None = None) -> Callable[[Any], Any]:
    """Open an exported file as ``fn(video (B, C, T, H, W) float32 tensor) -> logits tensor``.

    ``.pt2``: ``torch.export.load(path).module()``; ``.onnx``: an onnxruntime CPU session (``threads`` intra-op
    threads, default onnxruntime's).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    if path.suffix == ".pt2":
        module = torch.export.load(str(path)).module()

        def run_pt2(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(x)

        return run_pt2
    _need_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run_onnx(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {name: x.detach().cpu().float().contiguous().numpy()})[0])

    return run_onnx
