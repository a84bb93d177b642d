r"""The math of a vocabulary-parallel softmax cross-entropy, written once with array-API calls
(``xp``) and shared by the torch.distributed and the JAX ``shard_map`` bridges.

Each rank holds the logits of a contiguous block of classes [start, start + V_r) for every
token. A token's loss needs four things of the whole row: its max, its sum of exponentials,
the target's logit and, with label smoothing or probability targets, a weighted sum of
(max − z_k). Every rank reduces its block to a few numbers per row (**local statistics**,
relative to its own maximum m_r, so that a chunked kernel can produce them before the global
maximum is known), the ranks exchange them with two all-reduces (MAX of m_r, then SUM of the
rescaled statistics) and every rank finishes the same per-row values. The backward pass is
local: each rank's gradient is its slice of (Σq + 2λ·LSE)·softmax − q.

Precision: the loss is written as ``cross_entropy`` writes it (``_array.logsumexp_split``),
LSE − z_y = (M − z_y) + log1p(T + (C − 1)), where M is the global maximum, T the sum of
e^{z − M} over the entries below M and C the number of entries equal to M: T and C travel
separately, so the tiny loss of a confident right prediction keeps its relative precision.
The smoothing sums Σ w_k (M − z_k) are sums of non-negative terms on every rank, rescaled to
the global M with (M − m_r)·Σ w_k. NaN in any shard reaches every output of its row (T is
NaN-propagating); −inf logits (impossible classes) contribute nothing, as in
``cross_entropy``.

Exchanged columns per row (besides the max): ``t``, ``c``; for class ids the target's logit
``zy`` (from the rank that holds it, 0 elsewhere), its class weight ``cwy`` (with
``class_weight``) and, with label smoothing, ``a`` = Σ_k w_k (m − z_k) and ``b`` = Σ_k w_k
over the classes whose logit is not −inf; for probability targets ``a`` = Σ_k q_k (m − z_k)
and ``b`` = Σ_k q_k of the (weighted, smoothed) target q, and with ``validate`` the target's
row sum ``tsum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .._array import backend, gather_classes

__all__ = ["Spec", "RowStats", "local_stats", "combine", "finish_rows", "grad_chunk"]


@dataclass(frozen=True)
class Spec:
    """The static part of one call (hashable: a JAX static argument)."""

    name: str
    target_kind: str  # "ids" | "probs"
    num_classes: int  # V, the global number of classes
    alpha: float  # effective α of the PyTorch formula (1 − α)·onehot + α/V
    z_loss: float
    softcap: float | None
    class_weight: bool
    check_rows: bool = False  # probability targets with validate: exchange each row's target sum

    @property
    def columns(self) -> tuple:
        if self.target_kind == "ids":
            cols = ("t", "c", "zy")
            if self.class_weight:
                cols += ("cwy",)
            if self.alpha:
                cols += ("a", "b")
            return cols
        return ("t", "c", "a", "b") + (("tsum",) if self.check_rows else ())


class RowStats(NamedTuple):
    """Per-row results of the exchange, identical on every rank: the global max ``m`` and
    ``r`` = log1p(T + C − 1) (LSE = m + r), the loss before the reduction, ``coef`` = Σq + 2λ·LSE
    (the softmax's factor in the gradient), ``hot`` = (1 − α)·class_weight[y] (the target's
    own weight; class ids only), ``cwy`` = class_weight[y] (the "mean" denominator weight;
    None without class weights) and ``tsum`` (target row sums; only when checked)."""

    m: Any
    r: Any
    value: Any
    coef: Any
    hot: Any
    cwy: Any
    tsum: Any


def capped(zraw, spec: Spec, xp):
    """Soft-capped logits s·tanh(z/s) and tanh(z/s) (None without a cap)."""
    if spec.softcap is None:
        return zraw, None
    th = xp.tanh(zraw / spec.softcap)
    return spec.softcap * th, th


def _shift(m, xp):
    return xp.where(xp.isfinite(m), m, xp.zeros_like(m))


def _own(tgt, start, vr: int, xp):
    """Which rows' target class lies in this block, and its local index (0 where not)."""
    local = tgt - start
    own = (local >= 0) & (local < vr)
    return own, xp.where(own, local, xp.zeros_like(local))


def _finite_weights(z, cw, xp):
    """w_k = class_weight_k (or 1) for the classes whose logit is not −inf, 0 for the others
    (times the weight, as ``cross_entropy``'s smoothing spread: a NaN weight still shows)."""
    fin = xp.astype(z != -xp.inf, z.dtype)
    return fin if cw is None else fin * cw


def _probs_q(z, tgt, cw, spec: Spec, xp):
    """The weighted, smoothed target of a block of probability targets (``_ce_q`` with the
    global number of classes in α/V)."""
    q = tgt if cw is None else tgt * cw
    if spec.alpha:
        q = (1.0 - spec.alpha) * q + (spec.alpha / spec.num_classes) * _finite_weights(z, cw, xp)
    return q


def local_stats(zraw, tgt, cw, spec: Spec, xp, start):
    """Statistics of one block of rows: ``(m, S)`` with m (rows,) this block's max and S
    (rows, len(spec.columns)) relative to it. ``zraw`` (rows, V_r) in the compute dtype;
    ``tgt`` global class ids (rows,) (ignored rows hold any valid id) or this block's
    probabilities (rows, V_r); ``cw`` this block's class weights (V_r,) or None."""
    z, _ = capped(zraw, spec, xp)
    rows, vr = int(z.shape[0]), int(z.shape[1])
    if vr == 0:
        m = xp.full((rows,), -xp.inf, dtype=z.dtype)
        return m, xp.zeros((rows, len(spec.columns)), dtype=z.dtype)
    m = xp.max(z, axis=-1)
    mc = m[:, None]
    shift = _shift(m, xp)[:, None]
    below = z < mc
    zero = xp.zeros_like(z)
    # entries below the max count e^{z − m}; NaN entries count NaN (neither below nor >= m)
    t = xp.sum(xp.where(below, xp.exp(z - shift), xp.where(z >= mc, zero, z)), axis=-1)
    c = xp.sum(xp.astype(z >= mc, z.dtype), axis=-1)
    cols = [t, c]
    if spec.target_kind == "ids":
        own, idx = _own(tgt, start, vr, xp)
        zy = xp.take_along_axis(z, idx[:, None], axis=-1)[:, 0]
        cols.append(xp.where(own, zy, xp.zeros_like(zy)))
        if cw is not None:
            cwy = gather_classes(cw, idx, xp)
            cols.append(xp.where(own, cwy, xp.zeros_like(cwy)))
        if spec.alpha:
            w = _finite_weights(z, cw, xp)
            gap = xp.where(z == -xp.inf, zero, shift - z)
            cols += [xp.sum(gap if cw is None else gap * cw, axis=-1), xp.sum(w, axis=-1)]
    else:
        q = _probs_q(z, tgt, cw, spec, xp)
        gap = xp.where(q == 0, zero, shift - z)
        cols += [xp.sum(q * gap, axis=-1), xp.sum(q, axis=-1)]
        if spec.check_rows:
            cols.append(xp.sum(tgt, axis=-1))
    return m, xp.stack(cols, axis=-1)


def combine(m, gmax, stats, spec: Spec, xp):
    """A rank's statistics rescaled from its own max ``m`` to the global max ``gmax``, ready to
    be summed over the ranks."""
    cols = list(spec.columns)
    same = m == gmax
    t, c = stats[:, 0], stats[:, 1]
    scale = xp.exp(xp.where(same, xp.zeros_like(m), m - gmax))  # 0 for a block of −inf
    out = [xp.where(same, t, scale * (t + c)), xp.where(same, c, xp.zeros_like(c))]
    shift = _shift(m, xp)
    for j, name in enumerate(cols[2:], start=2):
        col = stats[:, j]
        if name == "a":
            b = stats[:, cols.index("b")]
            col = col + xp.where(b == 0, xp.zeros_like(b), (gmax - shift) * b)
        out.append(col)
    return xp.stack(out, axis=-1)


def finish_rows(gmax, total, spec: Spec, xp) -> RowStats:
    """Per-row values from the global max and the summed statistics."""
    cols = spec.columns
    col = lambda k: total[:, cols.index(k)]  # noqa: E731
    r = xp.log1p(col("t") + (col("c") - 1.0))
    lse = gmax + r
    alpha, v = spec.alpha, spec.num_classes
    cwy = tsum = hot = None
    if spec.target_kind == "ids":
        nll = (gmax - col("zy")) + r
        if spec.class_weight:
            cwy = col("cwy")
            nll = nll * cwy
        own_weight = 1.0 if cwy is None else cwy
        if alpha:
            value = (1.0 - alpha) * nll + (alpha / v) * (col("a") + r * col("b"))
            sumq = (1.0 - alpha) * own_weight + (alpha / v) * col("b")
        else:
            value = nll
            sumq = own_weight if cwy is not None else xp.ones_like(r)
        hot = (1.0 - alpha) * own_weight if cwy is not None else xp.full_like(r, 1.0 - alpha)
    else:
        value = col("a") + r * col("b")
        sumq = col("b")
        if spec.check_rows:
            tsum = col("tsum")
    coef = sumq
    if spec.z_loss:
        value = value + spec.z_loss * lse * lse
        coef = sumq + (2.0 * spec.z_loss) * lse
    return RowStats(gmax, r, value, coef, hot, cwy, tsum)


def _sub_at(g, idx, own, amount, xp):
    """g[i, idx_i] −= amount_i on the rows that own their target (in place where allowed)."""
    amount = xp.where(own, amount, xp.zeros_like(amount))
    kind = backend(xp)
    if kind == "torch":
        return g.scatter_add_(1, idx[:, None], -amount[:, None])
    if kind == "jax":
        import jax.numpy as jnp

        return g.at[jnp.arange(g.shape[0]), idx].add(-amount)
    hot = xp.astype(idx[:, None] == xp.arange(int(g.shape[1]))[None, :], g.dtype)
    return g - hot * amount[:, None]


def grad_chunk(zraw, tgt, cw, spec: Spec, xp, start, m, r, coef, hot, s, valid):
    """∂(Σ_i s_i ℓ_i)/∂zraw for one block of rows: s·[coef·softmax − q] (times the soft cap's
    derivative), 0 on rows that are not ``valid``. ``m``, ``r``, ``coef``, ``hot`` are this
    block's rows of :class:`RowStats`; ``s`` the per-row incoming gradients."""
    z, th = capped(zraw, spec, xp)
    vr = int(z.shape[1])
    p = xp.exp(-((m[:, None] - z) + r[:, None]))
    g = (coef * s)[:, None] * p
    if spec.target_kind == "ids":
        own, idx = _own(tgt, start, vr, xp)
        g = _sub_at(g, idx, own, hot * s, xp)
        if spec.alpha:
            g = g - ((spec.alpha / spec.num_classes) * s)[:, None] * _finite_weights(z, cw, xp)
    else:
        g = g - s[:, None] * _probs_q(z, tgt, cw, spec, xp)
    if th is not None:
        g = g * (1.0 - th * th)
    if valid is not None:
        g = xp.where(valid[:, None], g, xp.zeros_like(g))
    return g
