"""Where a model looks: TokenLearner maps or last-block attention of a model on one clip of a video.

Dataflow::

    video ─► open_video ─► centred clip (Preprocessing num_frames × frame_stride) ─► Preprocessing resize + centre
    view (uint8, the frames shown) ─► normalize ─► x (1, C, T, H, W) ─► forward_features(x, return_aux=True) ─► aux
        "token_maps" (1, T', S, Hp, Wp)   mode "tokens": one heat map per learned token; "argmax": strongest token
        "last_attn"  (1, N, N)            mode "cls": CLS (or mean) attention of the last block, over the tubelet
                                          grid; after a TokenLearner it is over learned tokens, so it is spread back
                                          onto the grid through their maps
    ─► maps (T', K, Hp, Wp) + frames the model saw (the uint8 view) ─► vidtok.viz.render ─► PNG / GIF / MP4

Example::

    view = visualize("clip.mp4", "runs/demo", "overlay.png")  # checkpoint path, run folder or a loaded model
    print(view.title)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidtok.errors import VidtokError
from vidtok.preprocessing import Preprocessing
from vidtok.viz import render

__all__ = ["MODES", "AttentionView", "load_clip", "explain", "draw", "visualize", "token_map_image"]

MODES = ("tokens", "argmax", "cls")


@dataclass
class AttentionView:
    """What :func:`explain` found: frames, maps and predictions of one clip.

    Attributes:
        frames: uint8 ``(T, H, W, 3)``: the clip as the model saw it (resized, cropped; normalisation undone).
        maps: float32 ``(T', K, Hp, Wp)``: K maps per temporal slice (K = learned tokens, or 1 for ``cls``).
        mode: ``tokens``, ``argmax`` or ``cls``.
        map_labels: a label per map column.
        topk: the top predictions as ``(class name, probability)``.
        indices: the video frame indices of the clip.
        source: the video path.
    """

    frames: np.ndarray
    maps: np.ndarray
    mode: str
    map_labels: list[str]
    topk: list[tuple[str, float]]
    indices: list[int] = field(default_factory=list)
    source: str = ""

    @property
    def title(self) -> str:
        preds = " · ".join(f"{name} {100 * p:.0f}%" for name, p in self.topk)
        return f"top-{len(self.topk)}: {preds}" if self.topk else ""


def _model_name(model) -> str:
    return str(getattr(model, "model_name", type(model).__name__))


def load_clip(
    path: str | os.PathLike,
    preprocessing: Preprocessing | dict[str, Any],
    *,
    backend: str = "auto",
    start_sec: float | None = None,
) -> tuple[np.ndarray, Any, list[int]]:
    """Decode one clip and cut its centre view with the model's preprocessing (centred in time unless ``start_sec``).

    Args:
        preprocessing: a :class:`~vidtok.preprocessing.Preprocessing` or the model's ``pretrained_cfg``.

    Returns:
        ``(frames, x, indices)``: uint8 ``(T, crop, crop, 3)`` frames the model sees, the model input
        ``(1, C, T, crop, crop)`` float32 and the decoded frame indices.

    Raises:
        VideoDecodeError: the video cannot be opened or decoded.
        ConfigError: the preprocessing cannot cut a view (crop larger than the short side).
    """
    import torch

    from vidtok.data.clip_sampling import uniform_clips
    from vidtok.io import open_video

    prep = (
        preprocessing if isinstance(preprocessing, Preprocessing) else Preprocessing.from_pretrained_cfg(preprocessing)
    )
    prep.check("checkpoint preprocessing")
    with open_video(path, backend) as video:
        meta = video.metadata
        total, fps = int(meta.num_frames), float(meta.fps or 25.0)
        if start_sec is None:
            clip = uniform_clips(total, fps, clip_len=prep.num_frames, frame_stride=prep.frame_stride, num_clips=1)
            indices = clip[0].indices
        else:
            first = min(max(int(round(start_sec * fps)), 0), total - 1)
            indices = (first + torch.arange(prep.num_frames) * prep.frame_stride).clamp_(max=total - 1)
        frames = video.get_frames(indices.tolist())  # (T, H, W, 3) uint8
    views = prep.cut_views(prep.resize(frames), [range(len(indices))], crops=1)  # (1, C, T, c, c) uint8
    x = prep.normalize(torch.from_numpy(views))
    return views[0].transpose(1, 2, 3, 0), x, indices.tolist()  # frames (T, c, c, 3)


def _token_maps(aux: dict[str, Any], name: str):
    """TokenLearner maps as ``(T', S, Hp, Wp)``, or None; joint maps ``(1, S, T'·Hp·Wp)`` are split by slice."""
    from einops import rearrange

    maps = aux.get("token_maps")
    if maps is None:
        return None
    tp, hp, wp = (int(v) for v in aux["grid"])
    maps = maps[0].float()
    if maps.ndim == 4:  # (T', S, Hp, Wp): one set of S maps per temporal slice
        return maps
    if maps.ndim == 3 and maps.shape[0] == 1 and maps.shape[-1] == tp * hp * wp:  # joint TokenLearner
        return rearrange(maps[0], "s (t h w) -> t s h w", t=tp, h=hp, w=wp)  # (T', S, Hp, Wp)
    raise VidtokError(f"model {name!r}: token maps of shape {tuple(maps.shape)} do not fit the grid {tp}x{hp}x{wp}")


def _forward_aux(model: Any, x: Any, where: str = "") -> tuple[Any, dict[str, Any]]:
    """``model.forward_features(x, return_aux=True)`` on the model's device, without autograd: (tokens, aux)."""
    import torch

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    with torch.inference_mode():
        try:
            tokens, aux = model.forward_features(x.to(device), return_aux=True)
        except TypeError as e:
            raise VidtokError(f"{where}model {_model_name(model)!r} has no forward_features(x, return_aux=True)") from e
    return tokens, dict(aux or {})


def token_map_image(
    model: Any, clip: Any, *, mean: Any, std: Any, cell: int = 96, max_rows: int = 4
) -> np.ndarray | None:
    """The TokenLearner maps of ``model`` on one normalised clip ``(C, T, H, W)`` as an RGB uint8 ``(H, W, 3)`` grid:
    each temporal slice's middle frame and its pixels coloured by their strongest token (``vidtok viz --mode
    argmax``). None for a model without TokenLearner. Training logs it to TensorBoard as ``val/tokenlearner``.

    Args:
        model: a vidtok model (evaluated as it is: call ``.eval()`` first).
        clip: float ``(C, T, H, W)`` normalised with ``mean`` / ``std`` (a dataset's eval view).
        mean, std: the normalisation, to show the frames as the model saw them.
        cell: panel size in pixels.
        max_rows: at most this many temporal slices.
    """
    import torch

    _, aux = _forward_aux(model, clip[None])
    maps = _token_maps(aux, _model_name(model))
    if maps is None:
        return None
    m, s = (torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1, 1) for v in (mean, std))
    frames = ((clip.float().cpu() * s + m).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0)
    img = render.render_grid(frames.numpy(), maps.cpu().numpy(), mode="argmax", cell=cell, max_rows=max_rows)
    return np.asarray(img.convert("RGB"))


def _cls_maps(aux: dict[str, Any], model: Any) -> tuple[Any, str]:
    """Last-block attention as ``(T', 1, Hp, Wp)`` maps over the tubelet grid, and its column label."""
    import torch

    name = _model_name(model)
    attn, grid = aux.get("last_attn"), aux.get("grid")
    if attn is None or grid is None:
        kind = getattr(model, "reduced_attn_type", None) or getattr(model, "attn_type", None)
        why = f" (its last block uses {kind!r} attention, not joint)" if kind and kind != "joint" else ""
        raise VidtokError(f"model {name!r} exposes no last-block attention map for --mode cls{why}")
    attn = attn[0].float()  # (N, N) head-averaged
    tp, hp, wp = (int(v) for v in grid)
    n = attn.shape[-1]
    tmaps = _token_maps(aux, name)
    learned = aux.get("learned_tokens")
    num_learned = int(learned.shape[1] * learned.shape[2]) if learned is not None else 0
    fused = getattr(model, "token_reducer", None) == "tokenlearner_fuser"  # TokenFuser: last block sees the grid
    if n - tp * hp * wp in (0, 1) and (fused or tmaps is None or n - num_learned not in (0, 1)):
        body, tmaps = tp * hp * wp, None
    elif tmaps is not None and num_learned and n - num_learned in (0, 1):
        body = num_learned  # the last block runs on the learned tokens
    else:
        why = (
            f"it attends over the {tp} temporal slices only (factorised encoder)"
            if n - tp in (0, 1)
            else f"{n} tokens are neither the tubelet grid {tp}x{hp}x{wp}"
            + (f" nor the {num_learned} learned tokens" if num_learned else "")
        )
        raise VidtokError(f"model {name!r}: no spatial map in its last-block attention for --mode cls: {why}")
    prefix = n - body
    # With a CLS token: what it attends to. Without one (mean pooling): attention each token receives on average.
    weights = attn[0, prefix:] if prefix else attn.mean(0)  # (body,)
    label = "CLS attention" if prefix else "mean attention"
    if tmaps is not None:
        # After a TokenLearner each learned token summarises the grid through its map: spread its weight back.
        s = tmaps.shape[1]
        w = weights.reshape(-1, s).expand(tp, s)  # (T', S); a joint TokenLearner's S tokens cover every slice
        maps = torch.einsum("ts,tshw->thw", w, tmaps)  # (T', Hp, Wp)
    else:
        maps = weights.reshape(tp, hp, wp)  # (T', Hp, Wp)
    return maps[:, None], label


def explain(
    model,
    video: str | os.PathLike,
    *,
    mode: str | None = None,
    backend: str = "auto",
    start_sec: float | None = None,
    topk: int = 3,
    checkpoint: str | None = None,
) -> AttentionView:
    """Run ``model`` on a clip of ``video`` and collect its attention maps and top predictions.

    Args:
        model: a vidtok model with ``pretrained_cfg`` (from :func:`vidtok.load_model`).
        video: path of the video.
        mode: ``tokens`` / ``argmax`` (TokenLearner maps) or ``cls`` (last-block attention); default ``tokens`` when
            the model has a TokenLearner, else ``cls``.
        backend: video decoder.
        start_sec: start of the clip; default a centred clip.
        topk: predictions to keep.
        checkpoint: where the model came from (only for error messages).

    Raises:
        VidtokError: a TokenLearner view of a model without TokenLearner, an unknown mode, or a model that returns no
            auxiliary outputs.
        VideoDecodeError: the video cannot be read.
    """
    import torch

    if mode is not None and mode not in MODES:
        raise VidtokError(f"unknown viz mode {mode!r} (choose from {', '.join(MODES)})")
    name = _model_name(model)
    where = f"{checkpoint}: " if checkpoint else ""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    frames, x, indices = load_clip(video, Preprocessing.from_pretrained_cfg(cfg), backend=backend, start_sec=start_sec)
    tokens, aux = _forward_aux(model, x, where)
    with torch.inference_mode():
        logits = model.forward_head(tokens)
    tmaps = _token_maps(aux, name)
    has_tl = tmaps is not None
    if mode is None:
        mode = "tokens" if has_tl else "cls"
    if mode in ("tokens", "argmax") and not has_tl:
        raise VidtokError(
            f"{where}model {name!r} has no TokenLearner, so there are no token maps for --mode {mode} "
            "(use --mode cls for its last-block attention)"
        )
    if mode == "cls":
        maps, label = _cls_maps(aux, model)
        labels = [label]
    else:
        maps = tmaps  # (T', S, Hp, Wp)
        labels = [f"token {i}" for i in range(maps.shape[1])]
    maps = maps.float().cpu().numpy()
    probs = logits.float().softmax(-1)[0].cpu()
    class_names = list(cfg.get("class_names") or [])
    k = min(topk, probs.numel())
    top = probs.topk(k)
    preds = [
        (class_names[i] if i < len(class_names) else f"class {i}", float(p))
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
    return AttentionView(
        frames=frames,
        maps=maps.astype(np.float32),
        mode=mode,
        map_labels=labels,
        topk=preds,
        indices=indices,
        source=os.fspath(video),
    )


def visualize(
    video: str | os.PathLike,
    model: Any,
    out: str | os.PathLike,
    *,
    mode: str | None = None,
    backend: str = "auto",
    start_sec: float | None = None,
    cell: int | None = None,
    fps: float = 4.0,
    max_rows: int | None = None,
    device: str = "cpu",
) -> AttentionView:
    """Write the overlay of ``model``'s attention on ``video`` to ``out`` (``.png``/``.jpg`` grid, ``.gif``/``.mp4``).

    Args:
        video: the video file.
        model: a loaded model, or a checkpoint / run folder for :func:`vidtok.load_model`.
        out: output path; its extension picks the format.
        mode: ``tokens``, ``argmax`` or ``cls`` (see :func:`explain`).
        backend: video decoder.
        start_sec: clip start (default: centred).
        cell: panel size in pixels (default 128 for images, 160 for animations).
        fps: animation frame rate.
        max_rows: at most this many temporal slices in a PNG grid.
        device: where to run a model loaded from a path.

    Returns:
        The :class:`AttentionView` that was drawn.

    Raises:
        VidtokError: unsupported output extension (checked before any work), a TokenLearner view without
            TokenLearner, an unreadable checkpoint (CheckpointError) or video (VideoDecodeError).
    """
    render.check_output_path(out)
    if mode is not None and mode not in MODES:
        raise VidtokError(f"unknown viz mode {mode!r} (choose from {', '.join(MODES)})")
    checkpoint = None
    if isinstance(model, (str, os.PathLike)):
        from vidtok.models.hub import load_model

        checkpoint = os.fspath(model)
        model = load_model(model, device=device)
    view = explain(model, video, mode=mode, backend=backend, start_sec=start_sec, checkpoint=checkpoint)
    draw(view, out, cell=cell, fps=fps, max_rows=max_rows)
    return view


def draw(
    view: AttentionView,
    out: str | os.PathLike,
    *,
    cell: int | None = None,
    fps: float = 4.0,
    max_rows: int | None = None,
) -> Path:
    """Render an :class:`AttentionView` to ``out`` (format by extension; see :func:`visualize`)."""
    return render.save_output(
        view.frames,
        view.maps,
        Path(out),
        mode="argmax" if view.mode == "argmax" else "heat",
        title=view.title,
        map_labels=view.map_labels,
        cell=cell,
        fps=fps,
        max_rows=max_rows,
        frame_numbers=view.indices,
    )
