"""Contrastive losses over pairs of embeddings (the embedding axis last): the margin contrastive
loss of Hadsell, Chopra & LeCun."""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import nan_where
from .._loss import CLASS_AXIS, Checks, Option, Peer, declare
from .embedding import _distance


def _con_parts(x1, x2, y, o, xp):
    u = x1 - x2 + o["eps"]
    d, g_d = _distance(u, 2.0, xp)
    gap = o["margin"] - d
    hinge = xp.maximum(gap, xp.zeros_like(gap))
    value = 0.5 * y * d * d + 0.5 * (1.0 - y) * hinge * hinge
    # ∂/∂x1 = y u − (1 − y) max(0, m − d) ∇d; ∂/∂x2 = −∂/∂x1
    g = y[..., None] * u - ((1.0 - y) * hinge)[..., None] * g_d
    g = nan_where(value[..., None], g, xp=xp)
    return value, (g, -g)


def _con_value(x1, x2, y, o, xp):
    return _con_parts(x1, x2, y, o, xp)[0]


def _con_grad(x1, x2, y, o, xp):
    return _con_parts(x1, x2, y, o, xp)[1]


def _con_check(x1, x2, y, o, xp, loss, valid):
    if tuple(y.shape) != tuple(x1.shape[:-1]):
        raise ValueError(
            f"{loss}: `similar` must have the shape of `input1` without its embedding axis, "
            f"{tuple(x1.shape[:-1])}, got {tuple(y.shape)}."
        )
    if _validate.is_tracing(y) or 0 in tuple(y.shape):
        return
    bad = ~((y == 0) | (y == 1) | xp.isnan(y))
    if valid is not None:
        bad = bad & valid
    if _validate._any(bad, xp):
        pos = _validate._first_position(bad, xp)
        raise ValueError(f"{loss}: `similar` must hold 0 (dissimilar) or 1 (similar), got {float(y[pos])} at similar{list(pos)}.")


def _con_sample(rng, shape, o):
    x1 = rng.standard_normal(shape)
    return x1, x1 + 0.5 * rng.standard_normal(shape), np.where(rng.random(shape[:-1]) < 0.5, 0.0, 1.0)


def _con_kinks(x1, x2, y, margin=1.0, eps=1e-6):
    d = np.linalg.norm(x1 - x2 + eps, axis=-1)
    return np.broadcast_to(((np.abs(d - margin) < 2e-2) | (d < 2e-2))[..., None], x1.shape)


def _torch_contrastive(x1, x2, y, reduction, margin=1.0, eps=1e-6):
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor
    d = F.pairwise_distance(t(x1), t(x2), p=2.0, eps=eps)
    yy = t(y)
    per = (0.5 * yy * d**2 + 0.5 * (1 - yy) * torch.clamp(margin - d, min=0) ** 2).numpy()
    return {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]


contrastive = declare(
    name="contrastive",
    family="contrastive",
    kind=CLASS_AXIS,
    title="Contrastive (margin) loss of embedding pairs.",
    formula=r"\ell(x_1, x_2, y) = \tfrac12\,y\,d^2 + \tfrac12\,(1 - y)\max(0,\ m - d)^2,\ d = \lVert x_1 - x_2 + \epsilon \rVert_2",
    gradient=r"\partial_{x_1} \ell = y\,u - (1 - y)\max(0, m - d)\,\frac{u}{d},\ u = x_1 - x_2 + \epsilon,\ \partial_{x_2} \ell = -\partial_{x_1} \ell",
    hessian=r"\text{not provided}",
    hessian_kind="none",
    domain="input1, input2: real arrays of one shape, the embedding axis last; similar in {0, 1} with the shape without it; margin >= 0",
    reference='Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006',
    use_when="Siamese networks: pull similar pairs together, push dissimilar pairs at least a margin apart.",
    details="""
        ``similar`` is 1 for a similar pair and 0 otherwise (an error for other values);
        ``weight`` / ``mask`` are per pair. The distance follows torch's
        ``pairwise_distance`` rule (ε added to the difference), and its gradient u/d is taken
        as 0 at d = 0, so coincident dissimilar embeddings get a zero (sub)gradient.
        Equals the formula written with ``torch.nn.functional.pairwise_distance``.
        pytorch-metric-learning's ``ContrastiveLoss`` differs: no ½, unsquared hinges
        ``max(0, d − pos_margin)`` and ``max(0, neg_margin − d)``, and a mean over the pairs
        with non-zero loss. ``.grad`` returns ``(d_input1, d_input2)``.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> x1, x2 = np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[0.6, 0.8], [0.3, 0.4]])
        >>> [round(v, 6) for v in lk.contrastive(x1, x2, np.array([1.0, 0.0]), eps=0.0, reduction="none").tolist()]
        [0.5, 0.125]
    """,
    value=_con_value,
    grad=_con_grad,
    check_values=_con_check,
    inputs=("input1", "input2"),
    target="similar",
    options={
        "margin": Option(1.0, "number", low=0.0, doc="the margin m for dissimilar pairs"),
        "eps": Option(1e-6, "number", low=0.0, doc="added to the difference before the norm"),
    },
    checks=Checks(
        sample=_con_sample,
        option_sets=({}, {"margin": 2.0}, {"margin": 0.5, "eps": 0.0}),
        edges=lambda o: (np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, -2.0]]), np.array([[-1e4, 1e4, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, -2.0]]), np.array([0.0, 0.0, 1.0])),
        kinks=_con_kinks,
        peers=(Peer("the formula with torch.nn.functional.pairwise_distance", _torch_contrastive, requires="torch", options=("margin", "eps")),),
    ),
)
