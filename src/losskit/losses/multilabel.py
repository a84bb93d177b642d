"""The multi-label soft margin loss: binary cross-entropy on logits, averaged over a class axis."""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import nan_where, sigmoid, sigmoid_and_slope
from .._loss import CLASS_AXIS, Checks, Option, Peer, Prepared, declare, upcast_target
from .binary import _bce_value

_CW5 = np.array([0.2, 1.0, 3.0, 0.7, 1.5])

# --- multi-label soft margin ------------------------------------------------------------


def _mlsm_prepare(pred, target, o, xp, validate, loss, mask=None):
    axis = _validate.normalize_axis(o["axis"], pred.ndim, loss)
    num_classes = _validate.check_classes(pred, axis, "logits", loss)
    _validate.check_same_shape(pred, target, "logits", "target", loss)
    cw = o["class_weight"]
    if cw is not None and tuple(cw.shape) != (num_classes,):
        raise ValueError(f"{loss}: `class_weight` must have shape ({num_classes},) (one weight per class), got {tuple(cw.shape)}.")
    target = upcast_target(target, pred, xp)
    moved = axis != pred.ndim - 1
    if moved:
        pred, target = xp.moveaxis(pred, axis, -1), xp.moveaxis(target, axis, -1)
    return Prepared(pred, target, tuple(pred.shape[:-1]), axis=axis if moved else None)


def _mlsm_check_values(z, y, o, xp, loss, valid):
    _validate.check_probabilities(y, "target", loss, xp, None if valid is None else valid[..., None])


def _mlsm_scale(z, o):
    cw = o["class_weight"]
    return 1.0 / z.shape[-1] if cw is None else cw / z.shape[-1]


def _mlsm_value(z, y, o, xp):
    return xp.sum(_bce_value(z, y, {"pos_weight": None}, xp) * _mlsm_scale(z, o), axis=-1)


def _mlsm_grad(z, y, o, xp):
    return (sigmoid(z, xp=xp) - y) * _mlsm_scale(z, o)


def _mlsm_grad_and_hess(z, y, o, xp):
    s, h = sigmoid_and_slope(z, xp=xp)
    c = _mlsm_scale(z, o)
    return (s - y) * c, nan_where(y, h, xp=xp) * c


def _mlsm_hess(z, y, o, xp):
    return _mlsm_grad_and_hess(z, y, o, xp)[1]


def _sample_mlsm(rng, shape, o):
    return rng.standard_normal(shape) * 2, (rng.random(shape) < 0.4).astype(float)


def _edges_mlsm(o):
    inf = np.inf
    z = np.array([[1e4, -1e4, inf, -inf, 0.0], [-1e4, 1e4, 30.0, -30.0, 1.0]])
    return z, np.array([[1.0, 0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.5]])


def _minimum_mlsm(y, o):
    if o.get("axis", -1) % y.ndim != y.ndim - 1:
        return None
    with np.errstate(divide="ignore"):
        z = np.log(y) - np.log1p(-y)
    return z, np.zeros(y.shape[:-1])


def _torch_mlsm(z, y, reduction, axis=-1, class_weight=None):
    import torch
    import torch.nn.functional as F

    z, y = torch.movedim(torch.as_tensor(z), axis, -1), torch.movedim(torch.as_tensor(y), axis, -1)
    shape = tuple(z.shape[:-1])
    w = None if class_weight is None else torch.as_tensor(class_weight)
    C = z.shape[-1]
    out = F.multilabel_soft_margin_loss(z.reshape(-1, C), y.reshape(-1, C), weight=w, reduction=reduction)
    return out.reshape(shape).numpy() if reduction == "none" else out.numpy()


multilabel_soft_margin = declare(
    name="multilabel_soft_margin",
    family="margin",
    kind=CLASS_AXIS,
    title="Multi-label soft margin loss: the class mean of binary cross-entropy on logits.",
    formula=r"\ell(z, y) = \frac{1}{C} \sum_k w_k \left[\operatorname{softplus}(z_k) - y_k z_k\right]",
    gradient=r"\partial_{z_k} \ell = \frac{w_k}{C} (\sigma(z_k) - y_k)",
    hessian=r"\partial_{z_k}^2 \ell = \frac{w_k}{C} \sigma(z_k)(1 - \sigma(z_k))",
    domain="logits real or ±inf; targets in [0, 1] of the logits' shape",
    reference="torch.nn.MultiLabelSoftMarginLoss; Bishop, *Pattern Recognition and Machine Learning* (2006), §4.3.2",
    use_when="Multi-label classification where each sample's loss is the mean over its labels.",
    details="""
        The per-sample loss is ``binary_cross_entropy`` (its stable form) averaged over the
        class axis, with optional per-class ``class_weight``; ``"mean"`` then averages over
        samples. Equals ``torch.nn.functional.multilabel_soft_margin_loss`` (which takes
        ``axis=1`` of 2-D inputs).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.multilabel_soft_margin(np.array([[0.0, 2.0]]), np.array([[1.0, 0.0]]))), 6)
        1.410038
    """,
    value=_mlsm_value,
    grad=_mlsm_grad,
    hess=_mlsm_hess,
    grad_and_hess=_mlsm_grad_and_hess,
    options={
        "axis": Option(-1, "int", doc="the class axis"),
        "class_weight": Option(None, "array", low=0.0, doc="per-class weights, shape (C,)"),
    },
    prepare=_mlsm_prepare,
    check_values=_mlsm_check_values,
    inputs=("logits",),
    checks=Checks(
        sample=_sample_mlsm,
        shape=(6, 5),
        option_sets=({}, {"class_weight": _CW5}),
        edges=_edges_mlsm,
        minimum=_minimum_mlsm,
        peers=(Peer("torch.nn.functional.multilabel_soft_margin_loss", _torch_mlsm, requires="torch", options=("axis", "class_weight")),),
    ),
)
