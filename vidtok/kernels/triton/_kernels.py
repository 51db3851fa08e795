"""Triton kernel bodies for space-time attention (FlashAttention-2 style), as plain Python functions.

They are *not* decorated here: :mod:`vidtok.kernels.triton.ops` wraps them with ``triton.jit`` on first use (and
:mod:`vidtok.kernels.triton.aot` with ``JITFunction`` for ahead-of-time compilation), so importing costs nothing.

Addressing. Every tensor is ``(B, T, S, H, Dh)`` read through its own strides. An attention problem is selected by
``(b, g2, h)`` and runs over a sequence index ``n < L``; the wrapper maps the axes onto that:

=========  =====================  ==================================================
axis       problem ``g2`` (stride)  sequence ``n`` -> offset
=========  =====================  ==================================================
joint      -- (``G2 = 1``)          ``(n // S) * stride_t + (n % S) * stride_s``  (``n * stride_s`` if ``FLAT``)
space      ``t`` (stride_t)         ``n * stride_s``
time       ``s`` (stride_s)         ``n * stride_t``
=========  =====================  ==================================================

Short ``time`` sequences (``T <= 64``) use the ``*_time_*`` kernels instead: one program packs ``BLOCK_G``
(b, s, h) problems of length ``T_P`` (T padded to a power of two) into a ``BLOCK_G * T_P`` tile and masks the
score matrix block-diagonally, so tensor cores see 64-row tiles rather than 8- or 16-row ones.

Softmax runs in base 2 (``exp2``) with ``scale * log2(e)`` folded into the scores; the saved "lse" is therefore
``log2(sum(exp2(s - m))) + m`` in those units. Accumulation is float32 for every input dtype.
"""

from __future__ import annotations

import triton.language as tl

# ruff: noqa: E741  (Triton kernels conventionally use capitalised pointer names: Q, K, V, O)


def attn_fwd(
    Q, K, V, O, LSE,
    sqb, sqg, sqh, sqhi, sqlo, sqd,
    skb, skg, skh, skhi, sklo, skd,
    svb, svg, svh, svhi, svlo, svd,
    sob, sog, soh, sohi, solo, sod,
    slb, slg, slh, slhi, sllo,
    H, G2, L, L_LO, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    FLAT: tl.constexpr, DOT_PREC: tl.constexpr,
):  # fmt: skip
    """Forward: one program = BLOCK_M queries of one (b, g2, h) problem; loops over all keys (online softmax)."""
    pid_p = tl.program_id(0)
    pid_m = tl.program_id(1)
    h = pid_p % H
    bg = pid_p // H
    g2 = bg % G2
    b = bg // G2
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < L
    mask_d = offs_d < HEAD_DIM
    if FLAT:
        q_rows = offs_m * sqlo
        o_rows = offs_m * solo
        l_rows = offs_m * sllo
    else:
        q_rows = (offs_m // L_LO) * sqhi + (offs_m % L_LO) * sqlo
        o_rows = (offs_m // L_LO) * sohi + (offs_m % L_LO) * solo
        l_rows = (offs_m // L_LO) * slhi + (offs_m % L_LO) * sllo
    q_ptrs = Q + (b * sqb + g2 * sqg + h * sqh) + q_rows[:, None] + offs_d[None, :] * sqd
    q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0)
    k_base = K + (b * skb + g2 * skg + h * skh)
    v_base = V + (b * svb + g2 * svg + h * svh)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, L, BLOCK_N):
        n = start_n + offs_n
        mask_n = n < L
        if FLAT:
            k_rows = n * sklo
            v_rows = n * svlo
        else:
            k_rows = (n // L_LO) * skhi + (n % L_LO) * sklo
            v_rows = (n // L_LO) * svhi + (n % L_LO) * svlo
        kt = tl.load(
            k_base + k_rows[None, :] + offs_d[:, None] * skd, mask=mask_n[None, :] & mask_d[:, None], other=0.0
        )
        s = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = tl.load(v_base + v_rows[:, None] + offs_d[None, :] * svd, mask=mask_n[:, None] & mask_d[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
        m_i = m_new
    acc = acc / l_i[:, None]
    o_ptrs = O + (b * sob + g2 * sog + h * soh) + o_rows[:, None] + offs_d[None, :] * sod
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])
    tl.store(LSE + (b * slb + g2 * slg + h * slh) + l_rows, m_i + tl.log2(l_i), mask=mask_m)


def attn_bwd_delta(
    O, DO, DELTA,
    sob, sog, soh, sohi, solo, sod,
    sdb, sdg, sdh, sdhi, sdlo, sdd,
    slb, slg, slh, slhi, sllo,
    H, G2, L, L_LO,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, FLAT: tl.constexpr,
):  # fmt: skip
    """Backward pre-pass: delta = rowsum(O * dO) in float32 (the softmax-gradient correction term)."""
    pid_p = tl.program_id(0)
    pid_m = tl.program_id(1)
    h = pid_p % H
    bg = pid_p // H
    g2 = bg % G2
    b = bg // G2
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < L
    mask = mask_m[:, None] & (offs_d < HEAD_DIM)[None, :]
    if FLAT:
        o_rows = offs_m * solo
        d_rows = offs_m * sdlo
        l_rows = offs_m * sllo
    else:
        o_rows = (offs_m // L_LO) * sohi + (offs_m % L_LO) * solo
        d_rows = (offs_m // L_LO) * sdhi + (offs_m % L_LO) * sdlo
        l_rows = (offs_m // L_LO) * slhi + (offs_m % L_LO) * sllo
    o = tl.load(O + (b * sob + g2 * sog + h * soh) + o_rows[:, None] + offs_d[None, :] * sod, mask=mask, other=0.0)
    do = tl.load(DO + (b * sdb + g2 * sdg + h * sdh) + d_rows[:, None] + offs_d[None, :] * sdd, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + (b * slb + g2 * slg + h * slh) + l_rows, delta, mask=mask_m)


def attn_bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE, DELTA,
    sqb, sqg, sqh, sqhi, sqlo, sqd,
    skb, skg, skh, skhi, sklo, skd,
    svb, svg, svh, svhi, svlo, svd,
    sdb, sdg, sdh, sdhi, sdlo, sdd,
    sob, sog, soh, sohi, solo, sod,
    slb, slg, slh, slhi, sllo,
    H, G2, L, L_LO, qk_scale, sm_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    FLAT: tl.constexpr, DOT_PREC: tl.constexpr,
):  # fmt: skip
    """Backward dK, dV: one program = BLOCK_N keys of one problem; loops over all queries (no atomics).

    DK and DV share the strides ``so*`` (both freshly allocated contiguous).
    """
    pid_p = tl.program_id(0)
    pid_n = tl.program_id(1)
    h = pid_p % H
    bg = pid_p // H
    g2 = bg % G2
    b = bg // G2
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < L
    mask_d = offs_d < HEAD_DIM
    if FLAT:
        k_rows = offs_n * sklo
        v_rows = offs_n * svlo
        o_rows = offs_n * solo
    else:
        k_rows = (offs_n // L_LO) * skhi + (offs_n % L_LO) * sklo
        v_rows = (offs_n // L_LO) * svhi + (offs_n % L_LO) * svlo
        o_rows = (offs_n // L_LO) * sohi + (offs_n % L_LO) * solo
    kv_mask = mask_n[:, None] & mask_d[None, :]
    k = tl.load(K + (b * skb + g2 * skg + h * skh) + k_rows[:, None] + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
    v = tl.load(V + (b * svb + g2 * svg + h * svh) + v_rows[:, None] + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
    q_base = Q + (b * sqb + g2 * sqg + h * sqh)
    do_base = DO + (b * sdb + g2 * sdg + h * sdh)
    l_base = b * slb + g2 * slg + h * slh

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start_m in range(0, L, BLOCK_M):
        m = start_m + offs_m
        mask_m = m < L
        if FLAT:
            q_rows = m * sqlo
            d_rows = m * sdlo
            l_rows = m * sllo
        else:
            q_rows = (m // L_LO) * sqhi + (m % L_LO) * sqlo
            d_rows = (m // L_LO) * sdhi + (m % L_LO) * sdlo
            l_rows = (m // L_LO) * slhi + (m % L_LO) * sllo
        qt_mask = mask_d[:, None] & mask_m[None, :]
        qt = tl.load(q_base + q_rows[None, :] + offs_d[:, None] * sqd, mask=qt_mask, other=0.0)  # (D, M)
        lse = tl.load(LSE + l_base + l_rows, mask=mask_m, other=0.0)
        st = tl.dot(k, qt, input_precision=DOT_PREC) * qk_scale  # (N, M)
        pt = tl.exp2(st - lse[None, :])
        pt = tl.where(mask_m[None, :], pt, 0.0)
        do = tl.load(
            do_base + d_rows[:, None] + offs_d[None, :] * sdd, mask=mask_m[:, None] & mask_d[None, :], other=0.0
        )
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=DOT_PREC)
        delta = tl.load(DELTA + l_base + l_rows, mask=mask_m, other=0.0)
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)  # (N, M)
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=DOT_PREC)
    dk = dk * sm_scale
    out_off = (b * sob + g2 * sog + h * soh) + o_rows[:, None] + offs_d[None, :] * sod
    tl.store(DK + out_off, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


def attn_bwd_dq(
    Q, K, V, DO, DQ, LSE, DELTA,
    sqb, sqg, sqh, sqhi, sqlo, sqd,
    skb, skg, skh, skhi, sklo, skd,
    svb, svg, svh, svhi, svlo, svd,
    sdb, sdg, sdh, sdhi, sdlo, sdd,
    sob, sog, soh, sohi, solo, sod,
    slb, slg, slh, slhi, sllo,
    H, G2, L, L_LO, qk_scale, sm_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    FLAT: tl.constexpr, DOT_PREC: tl.constexpr,
):  # fmt: skip
    """Backward dQ: one program = BLOCK_M queries of one problem; loops over all keys."""
    pid_p = tl.program_id(0)
    pid_m = tl.program_id(1)
    h = pid_p % H
    bg = pid_p // H
    g2 = bg % G2
    b = bg // G2
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < L
    mask_d = offs_d < HEAD_DIM
    if FLAT:
        q_rows = offs_m * sqlo
        d_rows = offs_m * sdlo
        o_rows = offs_m * solo
        l_rows = offs_m * sllo
    else:
        q_rows = (offs_m // L_LO) * sqhi + (offs_m % L_LO) * sqlo
        d_rows = (offs_m // L_LO) * sdhi + (offs_m % L_LO) * sdlo
        o_rows = (offs_m // L_LO) * sohi + (offs_m % L_LO) * solo
        l_rows = (offs_m // L_LO) * slhi + (offs_m % L_LO) * sllo
    qd_mask = mask_m[:, None] & mask_d[None, :]
    q = tl.load(Q + (b * sqb + g2 * sqg + h * sqh) + q_rows[:, None] + offs_d[None, :] * sqd, mask=qd_mask, other=0.0)
    do = tl.load(DO + (b * sdb + g2 * sdg + h * sdh) + d_rows[:, None] + offs_d[None, :] * sdd, mask=qd_mask, other=0.0)
    l_base = b * slb + g2 * slg + h * slh
    lse = tl.load(LSE + l_base + l_rows, mask=mask_m, other=0.0)
    delta = tl.load(DELTA + l_base + l_rows, mask=mask_m, other=0.0)
    k_base = K + (b * skb + g2 * skg + h * skh)
    v_base = V + (b * svb + g2 * svg + h * svh)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, L, BLOCK_N):
        n = start_n + offs_n
        mask_n = n < L
        if FLAT:
            k_rows = n * sklo
            v_rows = n * svlo
        else:
            k_rows = (n // L_LO) * skhi + (n % L_LO) * sklo
            v_rows = (n // L_LO) * svhi + (n % L_LO) * svlo
        t_mask = mask_d[:, None] & mask_n[None, :]
        kt = tl.load(k_base + k_rows[None, :] + offs_d[:, None] * skd, mask=t_mask, other=0.0)  # (D, N)
        vt = tl.load(v_base + v_rows[None, :] + offs_d[:, None] * svd, mask=t_mask, other=0.0)  # (D, N)
        s = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale
        p = tl.exp2(s - lse[:, None])
        p = tl.where(mask_n[None, :], p, 0.0)
        dp = tl.dot(do, vt, input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=DOT_PREC)
    dq = dq * sm_scale
    tl.store(DQ + (b * sob + g2 * sog + h * soh) + o_rows[:, None] + offs_d[None, :] * sod, dq.to(DQ.dtype.element_ty),
             mask=qd_mask)  # fmt: skip


def attn_time_fwd(
    Q, K, V, O, LSE,
    sqb, sqt, sqs, sqh, sqd,
    skb, skt, sks, skh, skd,
    svb, svt, svs, svh, svd,
    sob, sot, sos, soh, sod,
    slb, slt, sls, slh,
    T, S, H, G, qk_scale,
    BLOCK_G: tl.constexpr, T_P: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    DOT_PREC: tl.constexpr,
):  # fmt: skip
    """Forward over a short T: one program = BLOCK_G (b, s, h) problems packed into one block-diagonal tile."""
    pid = tl.program_id(0)
    r = tl.arange(0, BLOCK_G * T_P)
    gl = r // T_P
    t = r % T_P
    g = pid * BLOCK_G + gl
    h = g % H
    s = (g // H) % S
    b = g // (H * S)
    valid = (g < G) & (t < T)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    rd_mask = valid[:, None] & mask_d[None, :]
    q = tl.load(Q + (b * sqb + t * sqt + s * sqs + h * sqh)[:, None] + offs_d[None, :] * sqd, mask=rd_mask, other=0.0)
    kt = tl.load(K + (b * skb + t * skt + s * sks + h * skh)[None, :] + offs_d[:, None] * skd,
                 mask=mask_d[:, None] & valid[None, :], other=0.0)  # fmt: skip
    v = tl.load(V + (b * svb + t * svt + s * svs + h * svh)[:, None] + offs_d[None, :] * svd, mask=rd_mask, other=0.0)
    allowed = (gl[:, None] == gl[None, :]) & valid[None, :]
    sc = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale
    sc = tl.where(allowed, sc, float("-inf"))
    m = tl.max(sc, 1)
    m = tl.where(m == float("-inf"), 0.0, m)  # rows of padded problems: no valid key at all
    p = tl.exp2(sc - m[:, None])
    l_i = tl.sum(p, 1)
    l_i = tl.where(l_i == 0.0, 1.0, l_i)
    o = tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC) / l_i[:, None]
    tl.store(O + (b * sob + t * sot + s * sos + h * soh)[:, None] + offs_d[None, :] * sod, o.to(O.dtype.element_ty),
             mask=rd_mask)  # fmt: skip
    tl.store(LSE + b * slb + t * slt + s * sls + h * slh, m + tl.log2(l_i), mask=valid)


def attn_time_bwd(
    Q, K, V, O, DO, DQ, DK, DV, LSE,
    sqb, sqt, sqs, sqh, sqd,
    skb, skt, sks, skh, skd,
    svb, svt, svs, svh, svd,
    sdb, sdt, sds, sdh, sdd,
    sob, sot, sos, soh, sod,
    slb, slt, sls, slh,
    T, S, H, G, qk_scale, sm_scale,
    BLOCK_G: tl.constexpr, T_P: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    DOT_PREC: tl.constexpr,
):  # fmt: skip
    """Backward over a short T: the whole (block-diagonal) tile fits one program, so dQ, dK, dV come out at once.

    O, DQ, DK, DV share the strides ``so*`` (all allocated contiguous by the wrapper).
    """
    pid = tl.program_id(0)
    r = tl.arange(0, BLOCK_G * T_P)
    gl = r // T_P
    t = r % T_P
    g = pid * BLOCK_G + gl
    h = g % H
    s = (g // H) % S
    b = g // (H * S)
    valid = (g < G) & (t < T)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    rd_mask = valid[:, None] & mask_d[None, :]
    dr_mask = mask_d[:, None] & valid[None, :]
    q_rows = b * sqb + t * sqt + s * sqs + h * sqh
    k_rows = b * skb + t * skt + s * sks + h * skh
    v_rows = b * svb + t * svt + s * svs + h * svh
    d_rows = b * sdb + t * sdt + s * sds + h * sdh
    o_rows = b * sob + t * sot + s * sos + h * soh
    q = tl.load(Q + q_rows[:, None] + offs_d[None, :] * sqd, mask=rd_mask, other=0.0)
    kt = tl.load(K + k_rows[None, :] + offs_d[:, None] * skd, mask=dr_mask, other=0.0)  # (D, R)
    vt = tl.load(V + v_rows[None, :] + offs_d[:, None] * svd, mask=dr_mask, other=0.0)  # (D, R)
    do = tl.load(DO + d_rows[:, None] + offs_d[None, :] * sdd, mask=rd_mask, other=0.0)
    o = tl.load(O + o_rows[:, None] + offs_d[None, :] * sod, mask=rd_mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    lse = tl.load(LSE + b * slb + t * slt + s * sls + h * slh, mask=valid, other=0.0)
    allowed = (gl[:, None] == gl[None, :]) & valid[None, :] & valid[:, None]
    sc = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale
    p = tl.where(allowed, tl.exp2(sc - lse[:, None]), 0.0)  # (R, R)
    dv = tl.dot(tl.trans(p).to(do.dtype), do, input_precision=DOT_PREC)
    tl.store(DV + o_rows[:, None] + offs_d[None, :] * sod, dv.to(DV.dtype.element_ty), mask=rd_mask)
    dp = tl.dot(do, vt, input_precision=DOT_PREC)
    ds = p * (dp - delta[:, None])
    dk = tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=DOT_PREC) * sm_scale
    tl.store(DK + o_rows[:, None] + offs_d[None, :] * sod, dk.to(DK.dtype.element_ty), mask=rd_mask)
    dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=DOT_PREC) * sm_scale
    tl.store(DQ + o_rows[:, None] + offs_d[None, :] * sod, dq.to(DQ.dtype.element_ty), mask=rd_mask)


KERNELS = (attn_fwd, attn_bwd_delta, attn_bwd_dkdv, attn_bwd_dq, attn_time_fwd, attn_time_bwd)
