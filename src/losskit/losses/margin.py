"""Margin losses: binary hinge and squared hinge (targets ±1) and the multi-class margin loss
(``torch.nn.functional.multi_margin_loss``)."""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import gather_classes, nan_where
from .._loss import CLASS_AXIS, ELEMENTWISE, Checks, Option, Peer, declare
from .._spec import peer_reduction
from .classification import _ce_prepare

# --- binary hinge -----------------------------------------------------------------------


def _margin(p, y):
    return 1.0 - y * p


def _hinge_value(p, y, o, xp):
    m = _margin(p, y)
    return xp.maximum(m, xp.zeros_like(m))


def _hinge_grad(p, y, o, xp):
    m = _margin(p, y)
    return nan_where(m, xp.where(m > 0, -y, xp.zeros_like(m)), xp=xp)


def _hinge_hess(p, y, o, xp):
    return nan_where(_margin(p, y), xp.zeros_like(p), xp=xp)


def _sq_hinge_value(p, y, o, xp):
    m = _margin(p, y)
    m = xp.maximum(m, xp.zeros_like(m))
    return m * m


def _sq_hinge_grad(p, y, o, xp):
    m = _margin(p, y)
    return -2.0 * y * xp.maximum(m, xp.zeros_like(m))


def _sq_hinge_hess(p, y, o, xp):
    m = _margin(p, y)
    return nan_where(m, xp.where(m > 0, 2.0 * xp.ones_like(m), xp.zeros_like(m)), xp=xp)


def _check_signs(p, y, o, xp, loss, valid):
    _validate.check_signs(y, "target", loss, xp, valid)


def _sample_hinge(rng, shape, o):
    return rng.standard_normal(shape) * 1.5, np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def _edges_hinge(o):
    return np.array([1e4, -1e4, 1e4, -1e4, 0.0, 3.0]), np.array([1.0, 1.0, -1.0, -1.0, 1.0, -1.0])


def _kinks_hinge(p, y, **o):
    return np.abs(1.0 - y * p) < 2e-2


def _minimum_hinge(y, o):
    return y.astype(float), np.zeros(y.shape)


def _optax_hinge(p, y, reduction):
    import optax

    per = np.asarray(optax.losses.hinge_loss(p, y))
    return peer_reduction(per, reduction)


def _keras(fn_name):
    def peer(p, y, reduction):
        import os

        os.environ.setdefault("KERAS_BACKEND", "jax")
        import keras

        per = np.asarray(getattr(keras.losses, fn_name)(y.reshape(-1, 1), p.reshape(-1, 1)), dtype=np.float64).reshape(p.shape)
        return peer_reduction(per, reduction)

    return peer


_HINGE_DETAILS = """
        Targets are −1 or +1; {0, 1} labels are an error with a hint (pass ``2 * target − 1``),
        never mapped silently (Keras maps them). The per-sample loss is elementwise; for a
        multi-class margin use ``multi_margin``.
"""

# What hinge and squared_hinge share: the ±1 labels, their checks and sample inputs.
_HINGE_FAMILY = dict(family="margin", kind=ELEMENTWISE, domain="scores p real; targets y in {-1, +1}",
                     check_values=_check_signs, inputs=("pred",))
_HINGE_CHECKS = dict(sample=_sample_hinge, edges=_edges_hinge, kinks=_kinks_hinge, minimum=_minimum_hinge)

hinge = declare(
    name="hinge",
    **_HINGE_FAMILY,
    title="Hinge loss (targets ±1).",
    formula=r"\ell(p, y) = \max(0,\ 1 - y p)",
    gradient=r"\partial_p \ell = -y\,\mathbb{1}[y p < 1]",
    hessian=r"\partial_p^2 \ell = 0",
    hessian_kind="zero",
    reference="Cortes & Vapnik, \"Support-Vector Networks\", Machine Learning 20 (1995)",
    use_when="Binary classification with a margin (linear SVM objective on scores).",
    details=_HINGE_DETAILS + "        Subgradient 0 at y·p = 1. Equals ``optax.losses.hinge_loss`` and ``keras.losses.hinge``.\n",
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.hinge(np.array([0.5, 2.0]), np.array([1.0, -1.0]))), 6)
        1.75
    """,
    value=_hinge_value,
    grad=_hinge_grad,
    hess=_hinge_hess,
    checks=Checks(
        **_HINGE_CHECKS,
        peers=(
            Peer("optax.losses.hinge_loss", _optax_hinge, requires="optax"),
            Peer("keras.losses.hinge", _keras("hinge"), requires="keras"),
        ),
    ),
)

squared_hinge = declare(
    name="squared_hinge",
    **_HINGE_FAMILY,
    title="Squared hinge loss (targets ±1).",
    formula=r"\ell(p, y) = \max(0,\ 1 - y p)^2",
    gradient=r"\partial_p \ell = -2 y \max(0,\ 1 - y p)",
    hessian=r"\partial_p^2 \ell = 2\,\mathbb{1}[y p < 1]",
    hessian_kind="piecewise",
    reference="Cortes & Vapnik, \"Support-Vector Networks\", Machine Learning 20 (1995); L2-SVM",
    use_when="Binary classification with a margin and a differentiable loss (L2-SVM).",
    details=_HINGE_DETAILS + "        Equals ``keras.losses.squared_hinge``; the Hessian jumps from 0 to 2 at y·p = 1.\n",
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.squared_hinge(np.array([0.5, 2.0]), np.array([1.0, -1.0]))), 6)
        4.625
    """,
    value=_sq_hinge_value,
    grad=_sq_hinge_grad,
    hess=_sq_hinge_hess,
    checks=Checks(
        **_HINGE_CHECKS,
        peers=(Peer("keras.losses.squared_hinge", _keras("squared_hinge"), requires="keras"),),
    ),
)

# --- multi-class margin -----------------------------------------------------------------


def onehot_to_ids(pred, target, o, xp, validate, loss):
    """Integer ids; a one-hot float target of the logits' shape is read as its class. Soft
    labels (probabilities) have no meaning for a loss on a single true class: with
    ``validate`` they are an error, never silently rounded to their argmax."""
    if not _validate.is_floating(target, xp):
        return target
    axis = _validate.normalize_axis(o["axis"], pred.ndim, loss)
    if tuple(target.shape) != tuple(pred.shape):
        raise TypeError(f"{loss}: `target` must hold integer class ids, got dtype {target.dtype}.")
    if validate:
        _check_one_hot(target, axis, loss, xp)
    return xp.argmax(target, axis=axis)


def _check_one_hot(target, axis, loss, xp):
    if _validate.is_tracing(target) or 0 in tuple(target.shape):
        return
    entry_bad = (target != 0) & (target != 1)
    row_bad = xp.sum(target, axis=axis) != 1
    bad = _validate._host_read(lambda: (bool(xp.any(entry_bad)), bool(xp.any(row_bad))))
    if bad and (bad[0] or bad[1]):
        where = _validate._first_position(entry_bad if bad[0] else row_bad, xp)
        raise ValueError(
            f"{loss}: a float `target` must be one-hot (0s and a single 1 along axis {axis}); "
            f"it is not at position {where}. Soft labels have no single true class: pass integer "
            f"class ids, or use cross_entropy for probability targets."
        )


def _mm_prepare(pred, target, o, xp, validate, loss, mask=None):
    target = onehot_to_ids(pred, target, o, xp, validate, loss)
    o2 = {**o, "ignore_index": None, "label_smoothing": 0.0}
    prep = _ce_prepare(pred, target, o2, xp, validate, loss, mask)
    o["class_weight"] = o2["class_weight"]
    return prep


def _mm_check(o, loss):
    if o["p"] not in (1, 2):
        raise ValueError(f"{loss}: `p` must be 1 or 2 (as in PyTorch), got {o['p']!r}.")


def _mm_parts(z, t, o, xp):
    """(terms max(0, margin − z_y + z_k) for k ≠ y, active mask, off-target indicator, w/C)."""
    C = z.shape[-1]
    zy = xp.take_along_axis(z, t[..., None], axis=-1)
    other = xp.astype(t[..., None] != xp.arange(C), z.dtype)
    m = o["margin"] - zy + z
    active = ((m > 0) | xp.isnan(m)) & (other > 0)
    scale = 1.0 / C
    cw = o["class_weight"]
    if cw is not None:
        scale = gather_classes(cw, t, xp)[..., None] / C
    return xp.where(active, m, xp.zeros_like(m)), xp.astype(active, z.dtype), scale


def _mm_value(z, t, o, xp):
    m, _, scale = _mm_parts(z, t, o, xp)
    per = m if o["p"] == 1 else m * m
    return xp.sum(per * scale, axis=-1)


def _mm_grad(z, t, o, xp):
    m, active, scale = _mm_parts(z, t, o, xp)
    gk = (nan_where(m, active, xp=xp) if o["p"] == 1 else 2.0 * m) * scale  # NaN logits reach the gradient
    onehot = xp.astype(t[..., None] == xp.arange(z.shape[-1]), z.dtype)
    return gk - onehot * xp.sum(gk, axis=-1)[..., None]


def _mm_hess(z, t, o, xp):
    m, active, scale = _mm_parts(z, t, o, xp)
    if o["p"] == 1:
        return nan_where(z, xp.zeros_like(z), xp=xp)
    hk = 2.0 * active * scale
    onehot = xp.astype(t[..., None] == xp.arange(z.shape[-1]), z.dtype)
    return nan_where(z, hk + onehot * xp.sum(hk, axis=-1)[..., None], xp=xp)


def _sample_mm(rng, shape, o):
    z = rng.standard_normal(shape)
    axis = o.get("axis", -1) % len(shape)
    ids_shape = tuple(s for i, s in enumerate(shape) if i != axis)
    return z, rng.integers(0, shape[axis], ids_shape)


def _edges_mm(o):
    z = np.array([[1e4, -1e4, 0.0, 0.0, 0.0], [-1e4, 1e4, -1e4, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    return z, np.array([0, 0, 3])


def _kinks_mm(z, t, axis=-1, margin=1.0, **_):
    z = np.moveaxis(z, axis, -1)
    zy = np.take_along_axis(z, t[..., None], axis=-1)
    near = np.any((np.abs(margin - zy + z) < 2e-2) & (t[..., None] != np.arange(z.shape[-1])), axis=-1)
    return np.moveaxis(np.broadcast_to(near[..., None], z.shape), -1, axis)


def _torch_mm(z, t, reduction, axis=-1, p=1, margin=1.0, class_weight=None):
    """torch's multi-margin loss restated with torch ops: ``F.multi_margin_loss`` has no second
    derivative, which the Hessian check through the peer's autograd needs. tests/losses/
    test_multi_margin.py compares this with ``F.multi_margin_loss`` itself."""
    import torch

    z, t = torch.movedim(torch.as_tensor(z), axis, -1), torch.as_tensor(t)
    shape, num_classes = tuple(z.shape[:-1]), z.shape[-1]
    zz, tt = z.reshape(-1, num_classes), t.reshape(-1, 1)
    gap = torch.clamp(margin - zz.gather(1, tt) + zz, min=0) ** p
    per = gap.scatter(1, tt, 0.0).sum(1) / num_classes
    if class_weight is not None:
        per = per * torch.as_tensor(class_weight)[tt[:, 0]]
    out = {"none": per.reshape(shape), "sum": per.sum(), "mean": per.mean()}[reduction]
    return out.numpy()


_CW5 = np.array([0.2, 1.0, 3.0, 0.7, 1.5])

multi_margin = declare(
    name="multi_margin",
    family="margin",
    kind=CLASS_AXIS,
    title="Multi-class margin loss (Crammer–Singer style hinge over classes, as in PyTorch).",
    formula=r"\ell(z, y) = \frac{w_y}{C} \sum_{k \ne y} \max(0,\ m - z_y + z_k)^p",
    gradient=r"\partial_{z_k} \ell = \frac{w_y}{C}\, p \max(0,\ m - z_y + z_k)^{p - 1}\ (k \ne y),\quad \partial_{z_y} \ell = -\sum_{k \ne y} \partial_{z_k} \ell",
    hessian=r"\partial_{z_k}^2 \ell = \frac{2 w_y}{C} \mathbb{1}[m - z_y + z_k > 0]\ (p = 2,\ k \ne y),\quad \partial_{z_y}^2 \ell = \sum_{k \ne y} \partial_{z_k}^2 \ell;\ 0 \text{ for } p = 1",
    hessian_kind="piecewise",
    domain="logits real; integer class ids in [0, C); p in {1, 2}; margin >= 0",
    reference="Weston & Watkins, \"Support Vector Machines for Multi-Class Pattern Recognition\", ESANN 1999; torch.nn.MultiMarginLoss",
    use_when="Multi-class classification with a margin on scores (multi-class SVM).",
    details="""
        Divides by the number of classes C, as PyTorch does. Equals
        ``torch.nn.functional.multi_margin_loss`` for every option and reduction without
        ``class_weight``. With ``class_weight``, w_y multiplies each sample and ``"mean"``
        divides by Σ w_y over valid samples, as ``cross_entropy`` does; PyTorch divides by N
        (a documented difference; ``"none"`` and ``"sum"`` agree). Subgradients at the
        kinks are those of the active set {m − z_y + z_k > 0}; the Hessian is 0 for p = 1.
        A one-hot float target of the logits' shape is read as its class; soft labels
        (probabilities) are an error, since the loss has a single true class.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.multi_margin(np.array([[1.0, 0.5, -1.0]]), np.array([0]))), 6)
        0.166667
    """,
    value=_mm_value,
    grad=_mm_grad,
    hess=_mm_hess,
    options={
        "p": Option(1, "int", doc="exponent of the hinge, 1 or 2"),
        "margin": Option(1.0, "number", low=0.0, doc="the margin m"),
        "class_weight": Option(None, "array", low=0.0, doc="per-class weights, shape (C,)"),
        "axis": Option(-1, "int", doc="the class axis"),
    },
    prepare=_mm_prepare,
    check=_mm_check,
    inputs=("logits",),
    checks=Checks(
        sample=_sample_mm,
        shape=(7, 5),
        option_sets=({}, {"p": 2}, {"margin": 0.5, "p": 2}, {"class_weight": _CW5}, {"class_weight": _CW5, "p": 2, "margin": 2.0}),
        edges=_edges_mm,
        kinks=_kinks_mm,
        shift_invariant=True,
        peers=(
            Peer("torch.nn.functional.multi_margin_loss", _torch_mm, requires="torch", options=("axis", "p", "margin")),
            Peer("torch.nn.functional.multi_margin_loss(weight=)", _torch_mm, requires="torch",
                 options=("axis", "p", "margin", "class_weight"), reductions=("none", "sum")),
        ),
    ),
)
