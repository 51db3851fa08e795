"""Helpers for the viz tests: a generated video with a moving bright square, and a tiny stand-in model.

The stand-in follows the model contract (``forward_features(x, return_aux=True)`` -> tokens, aux with
``token_maps`` / ``grid`` / ``last_attn``; ``forward_head``; ``pretrained_cfg``) and derives its maps from the input
itself, so the tests know where the maps must peak: token 0 on the bright square, token 1 on the background.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Video: 24 frames, 48x64, a 12x12 white square moving right 2 px a frame over a dark textured background.
VIDEO_T, VIDEO_H, VIDEO_W, SQUARE = 24, 48, 64, 12


def square_xy(t: int) -> tuple[int, int]:
    """Top-left (x, y) of the square in frame t."""
    return 4 + 2 * t, 18


def make_frames() -> np.ndarray:
    yy, xx = np.mgrid[:VIDEO_H, :VIDEO_W]
    frames = np.empty((VIDEO_T, VIDEO_H, VIDEO_W, 3), np.uint8)
    for t in range(VIDEO_T):
        bg = 30 + 20 * (((xx // 8) + (yy // 8)) % 2)  # dark checkerboard
        frames[t] = np.stack([bg, bg + 10, bg + 20], -1)
        x, y = square_xy(t)
        frames[t, y : y + SQUARE, x : x + SQUARE] = 250
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = 12) -> Path:
    """Lossless H.264 (libx264rgb, crf 0) so decoded frames equal ``frames``."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        s.options = {"crf": "0", "preset": "ultrafast"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


class TinyMapModel(nn.Module):
    """Contract-following stand-in: tubelets 2x8x8; 3 "learned tokens" whose maps are computed from brightness.

    token 0: softmax(+k * brightness) over the grid (peaks on the square); token 1: softmax(-k * brightness)
    (background); token 2: uniform. With ``tokenlearner=False`` no token maps; the last block's CLS attends
    softmax(+k * brightness) over the full grid. With TokenLearner, the CLS attends to token 0 only.
    """

    def __init__(self, *, tokenlearner: bool = True, num_frames: int = 8, crop: int = 32):
        super().__init__()
        self.tokenlearner = tokenlearner
        self.head = nn.Linear(3, 4)
        self.model_name = "tiny_map_model"
        self.model_kwargs = {"tokenlearner": tokenlearner}
        self.pretrained_cfg = {
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "num_frames": num_frames,
            "frame_stride": 2,
            "crop_size": crop,
            "short_side": crop,
            "class_names": ["left", "right", "up", "down"],
        }

    def forward_features(self, x: torch.Tensor, *, return_aux: bool = False):
        b, _, t, h, w = x.shape
        pooled = F.avg_pool3d(x, (2, 8, 8))  # (B, C, T', Hp, Wp)
        tp, hp, wp = pooled.shape[2:]
        bright = pooled.mean(1).flatten(2)  # (B, T', Hp*Wp)
        maps = torch.stack(
            [(8 * bright).softmax(-1), (-8 * bright).softmax(-1), torch.full_like(bright, 1.0 / (hp * wp))], 2
        )  # (B, T', S, Hp*Wp)
        maps = maps.reshape(b, tp, 3, hp, wp)
        tokens = torch.stack([maps.amax((-2, -1)).mean(1)[:, i] for i in range(3)], -1)  # (B, 3)
        if not return_aux:
            return tokens
        aux = {"grid": (tp, hp, wp)}
        if self.tokenlearner:
            n = 1 + tp * 3
            attn = torch.full((b, n, n), 1.0 / n)
            attn[:, 0] = 0
            attn[:, 0, 1::3] = 1.0 / tp  # CLS -> token 0 of every slice
            aux.update(token_maps=maps, learned_tokens=maps.flatten(3))
        else:
            n = 1 + tp * hp * wp
            attn = torch.full((b, n, n), 1.0 / n)
            attn[:, 0, 0] = 0
            attn[:, 0, 1:] = (8 * bright).flatten(1).softmax(-1)
        aux["last_attn"] = attn
        return tokens, aux

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return tokens if pre_logits else self.head(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
