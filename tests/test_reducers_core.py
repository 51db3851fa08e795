"""Token reducers on their own: each one's defining property against an independent oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidtok.models.layers.attention import weighted_attention
from vidtok.models.reducers import (
    AdaptiveTokenSampling,
    DynamicViTPruning,
    ForwardContext,
    ModelFacts,
    TokenPooling,
    build_reducer,
    fill_masked,
)
from vidtok.models.reducers.mixed_scale import batch_shaping_loss, beta_cdf


# ----------------------------------------------------------------------------------------------- masked attention
def test_weighted_attention_all_ones_is_plain_softmax_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 4, generator=g) for _ in range(3))
    out = weighted_attention(q, k, v, torch.ones(3, 7))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)


def test_weighted_attention_binary_mask_equals_attention_over_the_kept_subset():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 9, 4, generator=g) for _ in range(3))
    w = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 1, 0]], dtype=torch.float32)
    kept = w[0].bool()
    out = weighted_attention(q, k, v, w)
    # oracle: kept queries attend over the kept keys only (plain attention on the subset)
    ref = F.scaled_dot_product_attention(q[:, :, kept], k[:, :, kept], v[:, :, kept])
    torch.testing.assert_close(out[:, :, kept], ref, rtol=1e-5, atol=1e-6)
    # a masked query still attends to itself and the kept keys
    i = 1
    sel = kept.clone()
    sel[i] = True
    ref_i = F.scaled_dot_product_attention(q[:, :, i : i + 1], k[:, :, sel], v[:, :, sel])
    torch.testing.assert_close(out[:, :, i : i + 1], ref_i, rtol=1e-5, atol=1e-6)


def test_fill_masked_makes_the_plain_mean_the_masked_mean():
    g = torch.Generator().manual_seed(2)
    p = torch.randn(2, 3, 5, 4, generator=g)
    keep = (torch.rand(2, 3, 5, generator=g) > 0.4).float()
    keep[:, 0, 0] = 1
    filled = fill_masked(p, keep)
    w = keep[..., None]
    ref = (p * w).sum((1, 2)) / w.sum((1, 2))
    torch.testing.assert_close(filled.mean((1, 2)), ref)
    assert torch.equal(filled[keep > 0], p[keep > 0])


# ------------------------------------------------------------------------------------------------- Token Pooling
@pytest.mark.parametrize("method", ["kmedoids", "kmeans"])
@pytest.mark.parametrize("weighted", [False, True])
def test_token_pooling_with_as_many_clusters_as_tokens_is_identity(method, weighted):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 10, 8, generator=g)
    scores = torch.rand(2, 3, 10, generator=g) if weighted else None
    out = TokenPooling(at_blocks=1, num_tokens=10, method=method, weighted=weighted)(x, ForwardContext(scores=scores))
    torch.testing.assert_close(out.tokens, x, rtol=0, atol=1e-6)
    assert out.keep is None
    assert torch.equal(out.info["assign"], torch.arange(10).expand(2, 3, 10))


def test_token_pooling_recovers_well_separated_clusters():
    """Oracle: 3 tight blobs far apart; every method must put each blob in one cluster."""
    g = torch.Generator().manual_seed(4)
    centres = torch.tensor([[10.0, 0, 0, 0], [0, 10.0, 0, 0], [0, 0, 10.0, 0]])
    label = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 1])
    x = (centres[label] + 0.1 * torch.randn(12, 4, generator=g))[None, None]  # (1, 1, 12, 4)
    for method in ("kmedoids", "kmeans"):
        out = TokenPooling(at_blocks=1, num_tokens=3, method=method, weighted=False)(x)
        assign = out.info["assign"][0, 0]
        for c in range(3):
            assert assign[label == c].unique().numel() == 1, (method, assign, label)
        assert assign.unique().numel() == 3
        # each output token sits on its blob (medoid = a member; mean = the blob mean)
        for c in range(3):
            tok = out.tokens[0, 0, assign[label == c][0]]
            assert torch.linalg.vector_norm(tok - x[0, 0, label == c].mean(0)) < 0.3


def test_token_pooling_kmedoids_output_is_the_weighted_medoid():
    """Brute-force oracle for one cluster: the member minimising the weighted distance sum."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 1, 7, 3, generator=g)
    w = torch.rand(1, 1, 7, generator=g)
    out = TokenPooling(at_blocks=1, num_tokens=1, method="kmedoids", weighted=True)(x, ForwardContext(scores=w))
    d = torch.cdist(x[0, 0], x[0, 0])
    best = ((w[0, 0] + 1e-6)[:, None] * d).sum(0).argmin()
    torch.testing.assert_close(out.tokens[0, 0, 0], x[0, 0, best])
    assert int(out.info["index"][0, 0, 0]) == int(best)


def test_token_pooling_gradients_reach_the_inputs():
    x = torch.randn(2, 2, 9, 6, requires_grad=True)
    for method in ("kmedoids", "kmeans"):
        x.grad = None
        TokenPooling(at_blocks=1, num_tokens=4, method=method)(x).tokens.square().sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------------ ATS
def ats_loop(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Inverse-transform sampling written out: for each point u = (i + 0.5) / k the first token whose CDF ≥ u."""
    rows = []
    for s in scores.tolist():
        tot = sum(s)
        cdf, acc = [], 0.0
        for v in s:
            acc += v / tot
            cdf.append(acc)
        picks = []
        for i in range(k):
            u = (i + 0.5) / k
            j = next((j for j, c in enumerate(cdf) if c >= u - 1e-7), len(cdf) - 1)
            picks.append(j)
        rows.append(sorted(set(picks)))
    return rows


def test_ats_sampling_matches_the_loop_and_never_exceeds_its_budget():
    g = torch.Generator().manual_seed(6)
    for k in (1, 3, 8, 20):
        scores = torch.rand(50, 20, generator=g) ** 4  # peaky: many points share tokens
        idx, valid = AdaptiveTokenSampling.sample(scores, k)
        assert idx.shape == (50, k) and valid.sum(1).le(k).all()
        for r, ref in enumerate(ats_loop(scores, k)):
            assert idx[r][valid[r]].tolist() == ref


def test_ats_keeps_fewer_tokens_for_peaked_scores_and_pads_with_masks():
    x = torch.randn(2, 1, 16, 8)
    scores = torch.full((2, 1, 16), 1e-3)
    scores[0, 0, 3] = 1.0  # one dominant token: sample 0 keeps very few
    out = AdaptiveTokenSampling(at_blocks=1, num_tokens=8)(x, ForwardContext(scores=scores))
    kept = out.keep.sum(-1)
    assert out.tokens.shape == (2, 1, 8, 8)
    assert kept[0, 0] < kept[1, 0] <= 8
    valid = out.keep[0, 0] > 0
    assert (out.info["index"][0, 0][~valid] == -1).all()
    assert torch.equal(out.tokens[0, 0][valid], x[0, 0][out.info["index"][0, 0][valid]])


# ---------------------------------------------------------------------------------------------------- DynamicViT
def test_dynamicvit_inference_keeps_the_ratio_and_training_masks():
    torch.manual_seed(0)
    red = DynamicViTPruning(dim=16, at_blocks=[1, 2, 3], keep_ratio=0.5)
    x = torch.randn(2, 3, 16, 16)
    red.eval()
    h, keep, idx = x, None, None
    for s, n in enumerate((8, 4, 2)):
        out = red(h, ForwardContext(keep=keep, index=idx, stage=s))
        h, keep, idx = out.tokens, out.keep, out.info["index"]
        assert h.shape == (2, 3, n, 16) and keep is None
        # kept tokens are input tokens, in original order
        assert (idx[..., 1:] > idx[..., :-1]).all()
        assert torch.equal(h, x.gather(2, idx[..., None].expand(-1, -1, -1, 16)))
    red.train()
    red.generator = torch.Generator().manual_seed(0)
    keep = None
    for s in range(3):
        out = red(x, ForwardContext(keep=keep, stage=s))
        assert out.tokens is x  # masked, not dropped
        assert out.keep.shape == (2, 3, 16) and set(out.keep.unique().tolist()) <= {0.0, 1.0}
        if keep is not None:
            assert (out.keep <= keep).all()  # pruned tokens stay pruned
        keep = out.keep
    loss = red.aux_loss()
    loss.backward()
    assert loss > 0 and all(p.grad is not None for p in red.predictors.parameters())


# ---------------------------------------------------------------------------------------------------- mixed scale
def test_beta_cdf_matches_scipy_and_batch_shaping_loss_prefers_the_prior():
    special = pytest.importorskip("scipy.special")
    x = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)
    for a, b in ((0.25, 0.75), (2.0, 3.0), (1.0, 1.0)):
        ref = torch.from_numpy(special.betainc(a, b, x.numpy()))
        torch.testing.assert_close(beta_cdf(x, a, b), ref, rtol=0, atol=5e-3)
    g = torch.Generator().manual_seed(7)
    bimodal = (torch.rand(400, generator=g) < 0.25).double() * 0.98 + 0.01  # 25 % near 1, 75 % near 0
    assert batch_shaping_loss(bimodal, 0.25, 0.75) < batch_shaping_loss(torch.full((400,), 0.5).double(), 0.25, 0.75)


def test_build_reducer_validates():
    facts = ModelFacts(dim=8)
    with pytest.raises(ValueError, match="kind must be one of"):
        build_reducer({"kind": "nope"}, facts)
    with pytest.raises(ValueError, match="needs a 'kind'"):
        build_reducer({"at_block": 1}, facts)
    with pytest.raises(ValueError, match="at_block must be 0"):
        build_reducer({"kind": "mixed_scale", "at_block": 2}, facts)
    with pytest.raises(ValueError, match="num_tokens must be >= 1, got 0"):
        build_reducer({"kind": "ats", "at_block": 1, "num_tokens": 0}, facts)
    with pytest.raises(ValueError, match="keep_ratio"):
        build_reducer({"kind": "dynamicvit", "at_block": [1, 2], "keep_ratio": 1.5}, facts)
    with pytest.raises(ValueError, match="increasing"):
        build_reducer({"kind": "dynamicvit", "at_block": [2, 1]}, facts)
    with pytest.raises(ValueError, match=r"'token_pooling' has no argument 'clusters' \(it takes at_block, iters"):
        build_reducer({"kind": "token_pooling", "at_block": 1, "clusters": 3}, facts)
    with pytest.raises(ValueError, match="'ats' has no argument 'dim'"):  # the model's width is not a spec key
        build_reducer({"kind": "ats", "dim": 4}, facts)


def test_reducer_defaults_come_from_the_model():
    facts = ModelFacts(dim=8, depth=12, at_block=4, norm_eps=1e-5, kwargs={"num_tokens": 3})
    assert build_reducer({"kind": "ats"}, facts).at_blocks == (4,)
    assert build_reducer({"kind": "token_pooling"}, facts).at_blocks == (4,)
    assert build_reducer({"kind": "dynamicvit"}, facts).at_blocks == (4, 6, 9)
    assert build_reducer({"kind": "dynamicvit"}, ModelFacts(dim=8, depth=3, at_block=1)).at_blocks == (1, 2)
    assert build_reducer({"kind": "mixed_scale"}, facts).at_blocks == (0,)
    tl = build_reducer({"kind": "tokenlearner"}, facts)  # the family's token_reducer_kwargs reach TokenLearner only
    assert tl.at_blocks == (4,) and tl.num_tokens == 3 and tl.learner.norm.eps == 1e-5
    assert build_reducer({"kind": "ats"}, facts).num_tokens == 16
    fuser = build_reducer({"kind": "tokenlearner_fuser", "at_block": 9}, facts)
    assert fuser.at_blocks == (9, 10, 11) and len(fuser.learners) == len(fuser.fusers) == 3


def test_weighted_attention_gradient_stays_bounded_when_a_masked_key_dominates():
    """A masked key scoring far above every kept one must not blow up the straight-through gradient (it did before
    the softmax was stabilised over kept keys: DynamicViT training diverged)."""
    q = torch.zeros(1, 1, 4, 2)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, 4, 2)
    k[0, 0, 3, 0] = 200.0  # key 3 dominates every row
    v = torch.randn(1, 1, 4, 2, generator=torch.Generator().manual_seed(8))
    w = torch.tensor([[1.0, 1.0, 0.0, 0.0]], requires_grad=True)
    out = weighted_attention(q, k, v, w)
    ref = F.scaled_dot_product_attention(q[:, :, :2], k[:, :, :2], v[:, :, :2])
    torch.testing.assert_close(out[:, :, :2], ref)  # masked key 3 has no effect on kept queries
    out.sum().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().max() < 10 * v.abs().max()
