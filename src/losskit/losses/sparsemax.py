"""The sparsemax loss (Martins & Astudillo 2016): the Fenchel–Young loss of sparsemax, over a
class axis with integer class ids."""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import nan_where
from .._loss import CLASS_AXIS, Checks, Option, Peer, declare
from .._spec import peer_reduction
from .classification import _ce_prepare


def _sparsemax(z, xp):
    """(sparsemax(z), support size) along the last axis: p = max(z − τ, 0) with τ from the
    sorted logits, k(z) = max{k : 1 + k z_(k) > Σ_{j≤k} z_(j)}."""
    C = z.shape[-1]
    zs = xp.sort(z, axis=-1, descending=True)
    cs = xp.cumulative_sum(zs, axis=-1)
    k = xp.arange(1, C + 1, dtype=z.dtype)
    support = (1.0 + k * zs) > cs
    kz = xp.sum(xp.astype(support, xp.int64), axis=-1)
    kz = xp.where(kz > 0, kz, xp.ones_like(kz))  # all-NaN rows: keep the gather valid
    tau = (xp.take_along_axis(cs, (kz - 1)[..., None], axis=-1) - 1.0) / xp.astype(kz[..., None], z.dtype)
    d = z - tau
    return xp.maximum(d, xp.zeros_like(d)), kz


def _sm_parts(z, t, o, xp):
    p, kz = _sparsemax(z, xp)
    onehot = xp.astype(t[..., None] == xp.arange(z.shape[-1]), z.dtype)
    return p, kz, onehot


def _sm_value(z, t, o, xp):
    """Σ_k p_k (z_k − z_y) − ½‖p‖² + ½ (= ⟨z, p⟩ − ½‖p‖² + ½ − z_y with Σp = 1): exactly 0 when
    the target alone is in the support."""
    p, _, _ = _sm_parts(z, t, o, xp)
    zy = xp.take_along_axis(z, t[..., None], axis=-1)
    gap = xp.where(p == 0, xp.zeros_like(z), z - zy)
    return xp.sum(p * gap - 0.5 * p * p, axis=-1) + 0.5


def _sm_grad(z, t, o, xp):
    p, _, onehot = _sm_parts(z, t, o, xp)
    return p - onehot


def _sm_grad_and_hess(z, t, o, xp):
    p, kz, onehot = _sm_parts(z, t, o, xp)
    s = xp.astype(p > 0, z.dtype)
    return p - onehot, nan_where(p, s * (1.0 - 1.0 / xp.astype(kz[..., None], z.dtype)), xp=xp)


def _sm_hess(z, t, o, xp):
    return _sm_grad_and_hess(z, t, o, xp)[1]


def _sm_prepare(pred, target, o, xp, validate, loss, mask=None):
    from .margin import onehot_to_ids

    target = onehot_to_ids(pred, target, o, xp, validate, loss)
    return _ce_prepare(pred, target, {**o, "ignore_index": None, "class_weight": None, "label_smoothing": 0.0}, xp, validate, loss, mask)


def _np_tau(z):
    zs = -np.sort(-z, axis=-1)
    cs = np.cumsum(zs, axis=-1)
    k = np.arange(1, z.shape[-1] + 1)
    kz = np.sum(1 + k * zs > cs, axis=-1)
    return (np.take_along_axis(cs, kz[..., None] - 1, axis=-1) - 1) / kz[..., None]


def _kinks_sm(z, t, axis=-1):
    """Samples with a logit within 2e-2 of the threshold τ (the support changes there)."""
    zm = np.moveaxis(z, axis, -1)
    near = np.any(np.abs(zm - _np_tau(zm)) < 2e-2, axis=-1)
    return np.moveaxis(np.broadcast_to(near[..., None], zm.shape), -1, axis)


def _sample_sm(rng, shape, o):
    z = rng.standard_normal(shape)
    axis = o.get("axis", -1) % len(shape)
    ids_shape = tuple(s for i, s in enumerate(shape) if i != axis)
    return z, rng.integers(0, shape[axis], ids_shape)


def _edges_sm(o):
    z = np.array([[1e4, -1e4, 0.0, 0.0], [-1e4, 1e4, -1e4, 0.0], [0.0, -np.inf, 2.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    return z, np.array([0, 0, 2, 1])


def _optax_sm(z, t, reduction, axis=-1):
    import optax

    z = np.moveaxis(z, axis, -1)
    per = np.asarray(optax.losses.multiclass_sparsemax_loss(z.reshape(-1, z.shape[-1]), t.reshape(-1))).reshape(t.shape)
    return peer_reduction(per, reduction)


sparsemax_loss = declare(
    name="sparsemax_loss",
    family="classification",
    kind=CLASS_AXIS,
    title="Sparsemax loss from logits (integer class ids).",
    formula=r"\ell(z, y) = \textstyle\sum_k p_k (z_k - z_y) - \tfrac12 \lVert p \rVert^2 + \tfrac12,\ p = \operatorname{sparsemax}(z) = \max(z - \tau(z), 0)",
    gradient=r"\partial_z \ell = \operatorname{sparsemax}(z) - \operatorname{onehot}(y)",
    hessian=r"\partial_{z_k}^2 \ell = s_k (1 - 1/\lvert S \rvert),\ s_k = \mathbb{1}[p_k > 0],\ S = \operatorname{supp}(p)",
    hessian_kind="piecewise",
    domain="logits real or -inf (impossible classes, not the target); integer class ids in [0, C)",
    reference='Martins & Astudillo, "From Softmax to Sparsemax: A Sparse Model of Attention and Multi-Label Classification", ICML 2016',
    use_when="Multi-class classification whose predicted distribution should be sparse (exact zeros).",
    details="""
        The Fenchel–Young loss of sparsemax with ½‖p‖² as regulariser: zero once the target alone
        holds all the probability with a margin of 1. Written as Σ p_k(z_k − z_y) − ½‖p‖² + ½
        (equal to the paper's −z_y + ½Σ_{S}(z_j² − τ²) + ½), so ±1e4 logits do not cancel.
        The Hessian diagonal is that of the sparsemax Jacobian, constant on each support
        pattern (``hessian_kind="piecewise"``). Equals
        ``optax.losses.multiclass_sparsemax_loss``.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.sparsemax_loss(np.array([[1.0, 0.5, -1.0]]), np.array([1]))), 6)
        0.5625
    """,
    value=_sm_value,
    grad=_sm_grad,
    hess=_sm_hess,
    grad_and_hess=_sm_grad_and_hess,
    options={"axis": Option(-1, "int", doc="the class axis")},
    prepare=_sm_prepare,
    inputs=("logits",),
    checks=Checks(
        sample=_sample_sm,
        shape=(7, 5),
        option_sets=({},),
        edges=_edges_sm,
        kinks=_kinks_sm,
        shift_invariant=True,
        peers=(Peer("optax.losses.multiclass_sparsemax_loss", _optax_sm, requires="optax", options=("axis",)),),
    ),
)
