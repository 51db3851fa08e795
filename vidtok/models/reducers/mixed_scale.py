"""Mixed-scale tubelets (MSViT: Havtorn et al., "MSViT: Dynamic Mixed-Scale Tokenization for Vision
Transformers", ICCV-W 2023), on video tubelets.

A light gate decides, for every 2×2 group of fine tubelets (a region of ``2·p × 2·p`` pixels over the tubelet's
``t`` frames), whether the region is tokenised finely (four ``t×p×p`` tokens) or coarsely (one token from the
region downsampled 2× in space through the *same* tubelet embedding, with the 2×2-averaged positional
embedding), so the token count follows the content::

    video (B, C, T, H, W) ─avgpool 2×2─► patch_embed ─► coarse (B, T', R, D) + pooled pos     R = Hp·Wp / 4
    coarse ─LN → Linear(D, D/4) → GELU → Linear(D/4, 1) → sigmoid─► g (B, T', R)  P(fine)
    training: z = 1[g + logistic noise > 0.5] straight-through; fine tokens × z, coarse tokens × (1 − z)
    inference: z = 1[g > 0.5]
    tokens per slice = [fine tokens of fine regions (raster order), coarse tokens of coarse regions], padded to the
    batch's longest slice with keep = 0

The batch-shaping loss (Ehteshami Bejnordi et al., 2020) pulls the empirical distribution of g over the batch to a
Beta(a, b) prior whose mean is ``fine_ratio`` (a + b = ``prior_strength``), so about that share of regions is fine
and the gate stays decisive. A gate forced to "fine" gives exactly the plain tubelet tokens.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidtok.models.reducers.base import NO_CONTEXT, ForwardContext, ModelFacts, ReducerOutput, TokenReducer

__all__ = ["MixedScaleTubelets", "beta_cdf", "batch_shaping_loss"]

FORCE = (None, "fine", "coarse")


def beta_cdf(x: torch.Tensor, a: float, b: float, *, steps: int = 4096) -> torch.Tensor:
    """Beta(a, b) CDF at ``x`` ∈ [0, 1] from a tabulated integral, linearly interpolated (differentiable in ``x``:
    the slope is the tabulated density). Each cell integrates the factor that may be singular at its end of [0, 1]
    exactly (x^(a-1) on the left half, (1-x)^(b-1) on the right) times the other factor at the cell midpoint."""
    e = torch.arange(steps + 1, device=x.device, dtype=torch.float64) / steps  # knots
    x0, x1 = e[:-1], e[1:]
    m = (x0 + x1) / 2
    left = (x1**a - x0**a) / a * (1 - m) ** (b - 1)
    right = ((1 - x0) ** b - (1 - x1) ** b) / b * m ** (a - 1)
    cell = torch.where(m < 0.5, left, right)
    cdf = torch.cat([cell.new_zeros(1), cell.cumsum(0)])
    cdf = (cdf / cdf[-1]).to(x.dtype)  # (steps + 1,) at knots i / steps
    pos = x.clamp(0, 1) * steps
    i = pos.detach().floor().clamp(max=steps - 1).long()
    frac = pos - i.to(pos.dtype)
    return cdf[i] + frac * (cdf[i + 1] - cdf[i])


def batch_shaping_loss(g: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Σ_i (F_prior(g_(i)) − i / (n + 1))² / n over the sorted gate values ``g`` (any shape, flattened)."""
    x = g.flatten().sort().values
    n = x.numel()
    emp = torch.arange(1, n + 1, device=x.device, dtype=x.dtype) / (n + 1)
    return (beta_cdf(x, a, b) - emp).pow(2).mean()


class MixedScaleTubelets(TokenReducer):
    """Per-region gate between fine and 2×-coarser tubelets, on the embedding.

    Args:
        dim: token width D.
        at_blocks: 0 (it works on the embedding, before block 0).
        fine_ratio: target share of fine regions (mean of the batch-shaping prior).
        prior_strength: a + b of the Beta prior (< 2: U-shaped, decisive gates).
        loss_weight: weight of the batch-shaping loss.
        gumbel: logistic noise on the gate logits in training.
        threshold: gate probability above which a region is fine at inference.
        force: None, ``"fine"`` or ``"coarse"`` (every region; for ablations and the equivalence test).
        norm_eps: LayerNorm epsilon.
    """

    kind = "mixed_scale"
    uses_mask = True
    at_embed = True

    def __init__(
        self,
        *,
        dim: int,
        at_blocks: int | list[int] = 0,
        fine_ratio: float = 0.25,
        prior_strength: float = 1.0,
        loss_weight: float = 1.0,
        gumbel: bool = True,
        threshold: float = 0.5,
        force: str | None = None,
        norm_eps: float = 1e-6,
    ) -> None:
        if at_blocks not in (0, [0], (0,)):
            raise ValueError(f"mixed_scale works on the embedding; at_block must be 0, got {at_blocks!r}")
        super().__init__(at_blocks=0)
        if not 0 < fine_ratio < 1:
            raise ValueError(f"fine_ratio must be in (0, 1), got {fine_ratio}")
        if prior_strength <= 0:
            raise ValueError(f"prior_strength must be > 0, got {prior_strength}")
        if force not in FORCE:
            raise ValueError(f"force must be one of {FORCE}, got {force!r}")
        self.fine_ratio = fine_ratio
        self.prior = (fine_ratio * prior_strength, (1 - fine_ratio) * prior_strength)
        self.loss_weight = loss_weight
        self.gumbel = gumbel
        self.threshold = threshold
        self.force = force
        hidden = max(dim // 4, 8)
        self.gate = nn.Sequential(
            nn.LayerNorm(dim, eps=norm_eps), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )
        self.reset_parameters()
        self.generator: torch.Generator | None = None  # gate noise source (None: torch's global generator)
        self._loss: torch.Tensor | None = None

    @classmethod
    def defaults(cls, facts: ModelFacts) -> dict[str, Any]:
        return {"dim": facts.dim}

    def reset_parameters(self) -> None:
        """The gate starts undecided-by-content: P(fine) = ``fine_ratio`` for every region."""
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.constant_(self.gate[-1].bias, math.log(self.fine_ratio / (1 - self.fine_ratio)))

    def extra_repr(self) -> str:
        return f"fine_ratio={self.fine_ratio}, force={self.force}"

    def aux_loss(self) -> torch.Tensor:
        if self._loss is None:
            return self.gate[-1].bias.new_zeros(())
        return self.loss_weight * self._loss

    def forward(self, x: torch.Tensor, ctx: ForwardContext = NO_CONTEXT) -> ReducerOutput:
        """``x`` fine tokens ``(B, T', N, D)`` with positions added, ``ctx`` the model input (``video``), its
        ``patch_embed``, the fine positional table ``pos`` broadcastable to ``(T', N, D)`` (or None) and the
        ``grid`` → mixed tokens ``(B, T', L, D)`` and keep.

        ``info``: ``"gate"`` ``(B, T', R)`` P(fine), ``"fine"`` ``(B, T', R)`` decisions, ``"index"`` fine position of
        each token (``N + r`` for the coarse token of region r, -1 for padding).
        """
        if ctx.video is None or ctx.patch_embed is None or ctx.grid is None:
            raise ValueError("mixed_scale needs the model input and its patch embedding (ForwardContext)")
        video, patch_embed, pos = ctx.video, ctx.patch_embed, ctx.pos
        B, T, N, D = x.shape
        _, Hp, Wp = ctx.grid
        if Hp % 2 or Wp % 2:
            raise ValueError(f"mixed-scale tubelets need an even token grid, got {Hp}×{Wp}")
        ph, pw = patch_embed.tubelet_size[1:]
        v = video[..., : Hp * ph, : Wp * pw]
        v = F.avg_pool3d(v, kernel_size=(1, 2, 2))  # (B, C, T, H/2, W/2)
        coarse = patch_embed(v)[:, :T]  # (B, T', R, D)
        if pos is not None:
            pe = pos.to(x.dtype).expand(T, N, D).reshape(T, Hp, Wp, D).permute(0, 3, 1, 2)  # (T', D, Hp, Wp)
            coarse = coarse + F.avg_pool2d(pe, 2).flatten(2).transpose(1, 2)  # (T', R, D)
        g = torch.sigmoid(self.gate(coarse)[..., 0])  # (B, T', R)
        if self.force is not None:
            z = torch.full_like(g, 1.0 if self.force == "fine" else 0.0)
            self._loss = None
        elif self.training:
            logit = torch.logit(g.clamp(1e-6, 1 - 1e-6))
            if self.gumbel:
                u = torch.rand(g.shape, generator=self.generator, device=g.device, dtype=g.dtype).clamp(1e-6, 1 - 1e-6)
                logit = logit + torch.log(u) - torch.log1p(-u)
            soft = torch.sigmoid(logit)
            z = (soft > self.threshold).to(g.dtype) - soft.detach() + soft  # straight-through
            self._loss = batch_shaping_loss(g, *self.prior)
        else:
            z = (g > self.threshold).to(g.dtype)
            self._loss = None
        # region of each fine token (raster order over the Hp × Wp grid)
        rows = torch.arange(Hp, device=x.device)[:, None] // 2 * (Wp // 2)
        region = (rows + torch.arange(Wp, device=x.device)[None] // 2).flatten()  # (N,)
        zf = z[..., region]  # (B, T', N)
        cand = torch.cat([x * zf[..., None], coarse * (1 - z)[..., None]], dim=2)  # (B, T', N + R, D)
        sel = torch.cat([zf, 1 - z], dim=2).detach() > 0.5  # (B, T', N + R)
        if x.device.type == "meta":  # shape-only pass (FLOP counting on the meta device): the all-fine upper bound
            return ReducerOutput(x, None, {"gate": g, "fine": z.detach()})
        L = int(sel.sum(-1).max())
        order = torch.sort((~sel).to(torch.int8), dim=2, stable=True).indices[..., :L]  # selected first, in order
        out = cand.gather(2, order[..., None].expand(B, T, L, D))  # (B, T', L, D)
        valid = sel.gather(2, order)
        src = torch.where(valid, order, torch.full_like(order, -1))
        keep_out = valid.to(x.dtype)
        info = {"gate": g, "fine": z.detach(), "index": src}
        return ReducerOutput(out, None if bool(valid.all()) else keep_out, info)
