"""Overlay rendering: attention maps on video frames, composed into panels and written as PNG, GIF or MP4.

Pure numpy + Pillow (+ PyAV for MP4), so ``vidtok viz`` works without the optional matplotlib extra. Everything
here takes plain arrays; :mod:`vidtok.viz.attention` turns a model and a video into those arrays.

Dataflow::

    frames uint8 (T, H, W, 3) ─┐
    maps float (T', K, h, w) ──┴─► upsample to (H, W) ─► per-panel colour overlay ─► grid (PNG) / one row per
                                                                                      frame (GIF, MP4)
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vidtok.errors import VidtokError

__all__ = [
    "IMAGE_EXTS",
    "ANIMATION_EXTS",
    "SUPPORTED_EXTS",
    "check_output_path",
    "turbo",
    "palette",
    "upsample_maps",
    "NORMALIZE",
    "normalize_maps",
    "heat_overlay",
    "argmax_overlay",
    "render_grid",
    "render_animation",
    "save_png",
    "save_gif",
    "save_mp4",
    "save_output",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
ANIMATION_EXTS = (".gif", ".mp4")
SUPPORTED_EXTS = IMAGE_EXTS + ANIMATION_EXTS

# Matplotlib's tab20, reordered so the first ten are the saturated tab10 colours: distinct for up to 20 tokens.
_TAB20 = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]  # fmt: skip


def check_output_path(path: str | os.PathLike) -> str:
    """Return the lower-case extension of ``path`` or raise a one-line error if it cannot be written."""
    ext = Path(path).suffix.lower()
    if ext not in SUPPORTED_EXTS:
        got = f"'{ext}'" if ext else "no extension"
        raise VidtokError(f"{path}: unsupported output extension {got} (use .png, .jpg, .gif or .mp4)")
    return ext


# Google's Turbo colormap sampled at 17 evenly spaced points (from matplotlib's "turbo" table); linear interpolation
# between them stays within 8/255 of the full 256-entry table.
_TURBO_17 = np.array(
    [
        [48, 18, 59], [64, 64, 162], [70, 107, 227], [66, 148, 255], [40, 188, 235], [24, 221, 194],
        [50, 242, 152], [109, 254, 98], [164, 252, 60], [205, 236, 52], [238, 207, 58], [253, 172, 52],
        [251, 126, 33], [235, 80, 14], [208, 47, 5], [169, 22, 1], [122, 4, 3],
    ],
    dtype=np.float32,
)  # fmt: skip


def turbo(x: np.ndarray) -> np.ndarray:
    """Google's Turbo colormap: values in [0, 1] -> uint8 RGB, without needing matplotlib.

    Args:
        x: any shape; clipped to [0, 1].

    Returns:
        uint8 array of shape ``x.shape + (3,)``.
    """
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) * (len(_TURBO_17) - 1)
    lo = np.minimum(np.floor(x).astype(np.int64), len(_TURBO_17) - 2)
    frac = (x - lo)[..., None]
    rgb = _TURBO_17[lo] * (1.0 - frac) + _TURBO_17[lo + 1] * frac
    return (rgb + 0.5).astype(np.uint8)


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (uint8 ``(n, 3)``): tab20 first, then evenly spaced golden-ratio hues."""
    if n < 0:
        raise ValueError(f"palette: n must be >= 0, got {n}")
    cols = list(_TAB20[:n])
    h = 0.0
    while len(cols) < n:
        h = (h + 0.618033988749895) % 1.0
        cols.append(tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, 0.75, 0.95)))
    return np.asarray(cols, dtype=np.uint8).reshape(n, 3)


def upsample_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize maps ``(..., h, w)`` to ``(..., H, W)`` (float32)."""
    import torch
    import torch.nn.functional as F

    maps = np.asarray(maps, dtype=np.float32)
    lead, (h, w) = maps.shape[:-2], maps.shape[-2:]
    t = torch.from_numpy(np.ascontiguousarray(maps)).reshape(-1, 1, h, w)  # (N, 1, h, w)
    if (h, w) != tuple(size):
        t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return t.reshape(*lead, *size).numpy()


NORMALIZE = ("clip", "panel", "none")


def normalize_maps(maps: np.ndarray, per: str = "panel", eps: float = 1e-8) -> np.ndarray:
    """Min-max normalise maps to [0, 1]; a constant map becomes all zeros.

    Args:
        maps: ``(..., h, w)`` for ``per="panel"`` (each map on its own); ``(T', K, h, w)`` for ``per="clip"`` (each
            of the K maps over all slices of the clip, so a token that looks elsewhere in a slice stays dark there).
        per: ``"panel"``, ``"clip"``, or ``"none"`` (values clipped to [0, 1] as they are).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if per == "none":
        return np.clip(maps, 0.0, 1.0)
    if per == "panel":
        axes: tuple[int, ...] = (-2, -1)
    elif per == "clip":
        if maps.ndim != 4:
            raise ValueError(f"per='clip' needs maps of shape (T', K, h, w), got {maps.shape}")
        axes = (0, 2, 3)
    else:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {per!r}")
    lo = maps.min(axis=axes, keepdims=True)
    hi = maps.max(axis=axes, keepdims=True)
    return (maps - lo) / np.maximum(hi - lo, eps)


def heat_overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heat map (H, W) over an RGB frame (H, W, 3) with the Turbo colormap."""
    colour = turbo(heat).astype(np.float32)
    out = (1.0 - alpha) * frame.astype(np.float32) + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def argmax_overlay(frame: np.ndarray, maps: np.ndarray, colours: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Colour each pixel of ``frame`` (H, W, 3) by the token whose map (K, H, W) is largest there."""
    idx = np.argmax(maps, axis=0)  # (H, W)
    colour = colours[idx].astype(np.float32)  # (H, W, 3)
    out = (1.0 - alpha) * frame.astype(np.float32) + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# Panel composition (Pillow).


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable bundled font
    except (TypeError, OSError, ImportError):  # older Pillow / no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _fit(draw, text: str, font, width: int) -> str:
    """Truncate ``text`` with an ellipsis so it fits in ``width`` pixels."""
    if _text_width(draw, text, font) <= width:
        return text
    while text and _text_width(draw, text + "…", font) > width:
        text = text[:-1]
    return text + "…"


def _resize(img: np.ndarray, cell: int):
    from PIL import Image

    im = Image.fromarray(img)
    h, w = img.shape[:2]
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Upscaling tiny model inputs: nearest keeps tubelet-sized blocks honest; downscaling: smooth.
    return im.resize(size, Image.Resampling.NEAREST if scale > 2 else Image.Resampling.BILINEAR)


def _panels(frame: np.ndarray, maps_t: np.ndarray, mode: str, colours: np.ndarray, alpha: float) -> list[np.ndarray]:
    """The overlay panels of one frame: ``maps_t`` (K, H, W) at frame resolution, already normalised for heat."""
    if mode == "argmax":
        return [argmax_overlay(frame, maps_t, colours, alpha=alpha)]
    return [heat_overlay(frame, maps_t[k], alpha=alpha) for k in range(maps_t.shape[0])]


def _check_inputs(frames: np.ndarray, maps: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    frames = np.asarray(frames)
    maps = np.asarray(maps, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got shape {tuple(frames.shape)}")
    if maps.ndim != 4:
        raise ValueError(f"maps must be (T', K, h, w), got shape {tuple(maps.shape)}")
    if maps.shape[0] > frames.shape[0]:
        raise ValueError(f"more map slices ({maps.shape[0]}) than frames ({frames.shape[0]})")
    if mode not in ("heat", "argmax"):
        raise ValueError(f"mode must be 'heat' or 'argmax', got {mode!r}")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    return frames, maps


def _slice_of_frame(i: int, num_frames: int, num_slices: int) -> int:
    """Temporal slice (tubelet index) that input frame ``i`` belongs to."""
    return min(i * num_slices // num_frames, num_slices - 1)


def _frame_of_slice(t: int, num_frames: int, num_slices: int) -> int:
    """The frame shown for temporal slice ``t``: the middle of its tubelet."""
    return min((2 * t + 1) * num_frames // (2 * num_slices), num_frames - 1)


def _font_h(font) -> int:
    return int(getattr(font, "size", 11))


class _Canvas:
    """A title bar, a header row of column labels, rows of equally sized cells, and an optional colour legend."""

    def __init__(
        self,
        *,
        title: str,
        labels: Sequence[str],
        cell_w: int,
        cell_h: int,
        rows: int,
        legend: np.ndarray | None = None,
    ):
        from PIL import Image, ImageDraw

        self.pad = 4
        self.font = _font(max(10, min(15, cell_w // 9)))
        self.title_font = _font(max(11, min(17, cell_w // 7)))
        self.title_h = _font_h(self.title_font) + 14 if title else 0
        self.header_h = _font_h(self.font) + 10
        self.cell_w, self.cell_h = cell_w, cell_h
        width = self.pad + len(labels) * (cell_w + self.pad)
        self.image = Image.new("RGB", (1, 1))
        self.draw = ImageDraw.Draw(self.image)
        if title:  # a narrow grid (argmax: 2 columns) widens to show the predictions, up to 3 more cells
            need = _text_width(self.draw, title, self.title_font) + 2 * self.pad + 8
            width = max(width, min(need, width + 3 * (cell_w + self.pad)))
        # Legend: "■ i" entries wrapped over as many lines as the width needs.
        entry_w = _font_h(self.font) * 3
        per_line = max(1, (width - 2 * self.pad) // entry_w)
        legend_lines = 0 if legend is None else -(-len(legend) // per_line)
        line_h = _font_h(self.font) + 8
        body_h = rows * (cell_h + self.pad) + self.pad
        height = self.title_h + self.header_h + body_h + legend_lines * line_h
        self.image = Image.new("RGB", (width, height), (255, 255, 255))
        self.draw = ImageDraw.Draw(self.image)
        if title:
            text = _fit(self.draw, title, self.title_font, width - 2 * self.pad - 4)
            self.draw.text((self.pad + 2, 6), text, fill=(0, 0, 0), font=self.title_font)
        y = self.title_h + 3
        for c, label in enumerate(labels):
            x = self.pad + c * (cell_w + self.pad)
            self.draw.text((x, y), _fit(self.draw, label, self.font, cell_w), fill=(40, 40, 40), font=self.font)
        if legend is not None:
            y0 = self.title_h + self.header_h + body_h
            sw = _font_h(self.font) - 2
            for i, col in enumerate(legend):
                x = self.pad + (i % per_line) * entry_w
                y = y0 + (i // per_line) * line_h
                self.draw.rectangle([x, y + 2, x + sw, y + 2 + sw], fill=tuple(int(v) for v in col))
                self.draw.text((x + sw + 3, y), str(i), fill=(40, 40, 40), font=self.font)

    def paste(self, row: int, col: int, img: np.ndarray, tag: str | None = None) -> None:
        from PIL import Image

        x = self.pad + col * (self.cell_w + self.pad)
        y = self.title_h + self.header_h + row * (self.cell_h + self.pad)
        self.image.paste(_resize(img, max(self.cell_w, self.cell_h)), (x, y))
        if tag:
            tag = _fit(self.draw, tag, self.font, self.cell_w - 6)
            tw = _text_width(self.draw, tag, self.font)
            box = (x, y, x + tw + 6, y + _font_h(self.font) + 5)
            # Half-transparent backing so the tag reads on any frame without hiding what is under it.
            region = np.asarray(self.image.crop(box), dtype=np.float32) * 0.45
            self.image.paste(Image.fromarray(region.astype(np.uint8)), box[:2])
            self.draw.text((x + 3, y + 1), tag, fill=(255, 255, 255), font=self.font)


def _cell_size(frames: np.ndarray, cell: int) -> tuple[int, int]:
    h, w = frames.shape[1:3]
    scale = cell / max(h, w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _labels(mode: str, k: int, map_labels: Sequence[str] | None) -> list[str]:
    if mode == "argmax":
        return ["frame", "strongest token"]
    if map_labels is None:
        map_labels = [f"token {i}" for i in range(k)] if k > 1 else ["attention"]
    if len(map_labels) != k:
        raise ValueError(f"{len(map_labels)} map labels for {k} maps")
    return ["frame", *map_labels]


def _prepare(frames, maps, mode: str, map_labels, normalize: str, frame_numbers) -> tuple:
    """Checked frames, the maps upsampled to the frames ``(T', K, H, W)`` (normalised for "heat"), the column labels
    and the K colours: what both renderers start from."""
    frames, maps = _check_inputs(frames, maps, mode)
    num_frames, height, width = frames.shape[:3]
    if frame_numbers is not None and len(frame_numbers) != num_frames:
        raise ValueError(f"{len(frame_numbers)} frame numbers for {num_frames} frames")
    k = maps.shape[1]
    full = upsample_maps(maps, (height, width))  # (T', K, H, W)
    if mode == "heat":
        full = normalize_maps(full, normalize)
    return frames, full, _labels(mode, k, map_labels), palette(k)


def render_grid(
    frames: np.ndarray,
    maps: np.ndarray,
    *,
    mode: str = "heat",
    title: str = "",
    map_labels: Sequence[str] | None = None,
    cell: int = 128,
    alpha: float = 0.5,
    normalize: str = "clip",
    max_rows: int | None = None,
    frame_numbers: Sequence[int] | None = None,
):
    """One panel row per temporal slice: the slice's middle frame, then its overlays.

    Args:
        frames: uint8 ``(T, H, W, 3)`` frames as the model saw them (after resize and crop).
        maps: ``(T', K, h, w)`` maps per temporal slice; ``T'`` divides the frames into equal tubelet spans.
        mode: ``"heat"`` (one Turbo overlay column per map) or ``"argmax"`` (one column, each pixel coloured by
            its strongest map).
        title: text for the title bar (e.g. the top-3 predictions).
        map_labels: column labels for the K maps (default ``token i``).
        cell: longest side of each panel in pixels.
        alpha: overlay opacity.
        normalize: min-max normalisation before colouring (softmax maps are tiny otherwise): ``"clip"`` each of the
            K maps over all slices, ``"panel"`` every panel on its own, ``"none"`` as is (clipped to [0, 1]).
        max_rows: show at most this many slices, evenly spaced.
        frame_numbers: the video frame number of each of the T frames, for the row tags (default 0..T-1).

    Returns:
        A ``PIL.Image.Image`` (RGB).
    """
    frames, full, labels, colours = _prepare(frames, maps, mode, map_labels, normalize, frame_numbers)
    num_frames, num_slices = frames.shape[0], full.shape[0]
    rows = list(range(num_slices))
    if max_rows is not None and max_rows < num_slices:
        rows = sorted({round(i * (num_slices - 1) / max(max_rows - 1, 1)) for i in range(max_rows)})
    cw, ch = _cell_size(frames, cell)
    legend = colours if mode == "argmax" else None
    canvas = _Canvas(title=title, labels=labels, cell_w=cw, cell_h=ch, rows=len(rows), legend=legend)
    span = max(num_frames // num_slices, 1)
    for r, t in enumerate(rows):
        fi = _frame_of_slice(t, num_frames, num_slices)
        frame = frames[fi]
        lo, hi = t * span, min((t + 1) * span, num_frames) - 1
        if frame_numbers is not None:
            lo, hi = frame_numbers[lo], frame_numbers[hi]
        canvas.paste(r, 0, frame, tag=f"frames {lo}-{hi}")
        for c, panel in enumerate(_panels(frame, full[t], mode, colours, alpha)):
            canvas.paste(r, c + 1, panel)
    return canvas.image


def render_animation(
    frames: np.ndarray,
    maps: np.ndarray,
    *,
    mode: str = "heat",
    title: str = "",
    map_labels: Sequence[str] | None = None,
    cell: int = 128,
    alpha: float = 0.5,
    normalize: str = "clip",
    frame_numbers: Sequence[int] | None = None,
) -> list:
    """One image per input frame: the frame and the overlays of the temporal slice it belongs to.

    Arguments are as for :func:`render_grid`. Returns a list of ``T`` ``PIL.Image.Image`` of equal size.
    """
    frames, full, labels, colours = _prepare(frames, maps, mode, map_labels, normalize, frame_numbers)
    num_frames, num_slices = frames.shape[0], full.shape[0]
    cw, ch = _cell_size(frames, cell)
    legend = colours if mode == "argmax" else None
    out = []
    for i in range(num_frames):
        t = _slice_of_frame(i, num_frames, num_slices)
        number = frame_numbers[i] if frame_numbers is not None else i
        row_labels = [f"frame {number}, slice {t}", *labels[1:]]  # in the header: nothing covers the small frame
        canvas = _Canvas(title=title, labels=row_labels, cell_w=cw, cell_h=ch, rows=1, legend=legend)
        canvas.paste(0, 0, frames[i])
        for c, panel in enumerate(_panels(frames[i], full[t], mode, colours, alpha)):
            canvas.paste(0, c + 1, panel)
        out.append(canvas.image)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Writers.


def _out_path(path: str | os.PathLike, images: Sequence | None = None, writer: str = "") -> Path:
    """``path`` with its folder created; refuses an empty ``images`` sequence (naming ``writer``)."""
    if images is not None and not images:
        raise ValueError(f"{writer}: no images")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_png(image, path: str | os.PathLike) -> Path:
    """Write one image (PNG, or JPEG by extension)."""
    path = _out_path(path)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.convert("RGB").save(path, quality=90)
    else:
        image.save(path, optimize=True)
    return path


def save_gif(images: Sequence, path: str | os.PathLike, *, fps: float = 4.0) -> Path:
    """Write an endlessly looping GIF, one image per frame (identical neighbours are kept as separate frames)."""
    from PIL import Image

    path = _out_path(path, images, "save_gif")
    # One shared adaptive palette, so colours don't flicker between frames.
    first = images[0].convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    frames = [first] + [im.convert("RGB").quantize(palette=first, dither=Image.Dither.NONE) for im in images[1:]]
    frames[0].save(
        path,
        save_all=True,
        append_images=frames[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
        optimize=False,
        disposal=1,
    )
    return path


def save_mp4(images: Sequence, path: str | os.PathLike, *, fps: float = 4.0) -> Path:
    """Write an H.264 MP4 (yuv420p, so any player shows it; MPEG-4 part 2 if libx264 is missing) with PyAV."""
    import av

    path = _out_path(path, images, "save_mp4")
    w, h = images[0].size
    w2, h2 = w + (w % 2), h + (h % 2)  # yuv420p needs even sides
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    from fractions import Fraction

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "medium"}
        for im in images:
            arr = np.zeros((h2, w2, 3), dtype=np.uint8) + 255
            arr[:h, :w] = np.asarray(im.convert("RGB"))
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def save_output(
    frames: np.ndarray,
    maps: np.ndarray,
    path: str | os.PathLike,
    *,
    mode: str = "heat",
    title: str = "",
    map_labels: Sequence[str] | None = None,
    cell: int | None = None,
    alpha: float = 0.5,
    fps: float = 4.0,
    max_rows: int | None = None,
    normalize: str = "clip",
    frame_numbers: Sequence[int] | None = None,
) -> Path:
    """Render and write by extension: ``.png``/``.jpg`` a grid, ``.gif``/``.mp4`` an animation."""
    ext = check_output_path(path)
    common = dict(mode=mode, title=title, map_labels=map_labels, alpha=alpha, normalize=normalize)
    if ext in IMAGE_EXTS:
        img = render_grid(frames, maps, cell=cell or 128, max_rows=max_rows, frame_numbers=frame_numbers, **common)
        return save_png(img, path)
    images = render_animation(frames, maps, cell=cell or 160, frame_numbers=frame_numbers, **common)
    return save_gif(images, path, fps=fps) if ext == ".gif" else save_mp4(images, path, fps=fps)
