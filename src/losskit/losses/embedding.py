"""Metric-learning losses over several differentiable embeddings (the embedding axis is last)."""

from __future__ import annotations

import numpy as np

from .._array import sign
from .._loss import CLASS_AXIS, Checks, Option, Peer, declare


def _distance(u, p, xp):
    """(‖u‖_p along the last axis, its gradient with respect to u); 0 gradient where ‖u‖ = 0."""
    a = xp.abs(u)
    if p == 2.0:
        d = xp.sqrt(xp.sum(u * u, axis=-1))
        safe = xp.where(d == 0, xp.ones_like(d), d)
        return d, xp.where((d == 0)[..., None], xp.zeros_like(u), u / safe[..., None])
    if p == 1.0:
        return xp.sum(a, axis=-1), sign(u, xp=xp)
    d = xp.sum(a**p, axis=-1) ** (1.0 / p)
    safe = xp.where(d == 0, xp.ones_like(d), d)
    g = sign(u, xp=xp) * a ** (p - 1.0) / (safe**(p - 1.0))[..., None]
    return d, xp.where((d == 0)[..., None], xp.zeros_like(u), g)


def _triplet_parts(a, pos, neg, o, xp):
    p, eps = o["p"], o["eps"]
    d_ap, g_ap = _distance(a - pos + eps, p, xp)
    d_an, g_an = _distance(a - neg + eps, p, xp)
    use_pn = None
    d_neg = d_an
    if o["swap"]:
        d_pn, g_pn = _distance(pos - neg + eps, p, xp)
        use_pn = d_pn < d_an
        d_neg = xp.where(use_pn, d_pn, d_an)
    hinge = d_ap - d_neg + o["margin"]
    value = xp.maximum(hinge, xp.zeros_like(hinge))  # an array operand: a Python 0.0 breaks torch.compile
    # NaN in any input must reach every gradient: `value > 0` alone is False for NaN
    active = xp.astype((value > 0) | xp.isnan(value), a.dtype)[..., None]
    if use_pn is None:
        grads = (active * (g_ap - g_an), -active * g_ap, active * g_an)
    else:
        u = use_pn[..., None]
        zero = xp.zeros_like(g_an)
        grads = (
            active * (g_ap - xp.where(u, zero, g_an)),
            active * (-g_ap - xp.where(u, g_pn, zero)),
            active * xp.where(u, g_pn, g_an),
        )
    return value, grads


def _triplet_value(a, pos, neg, o, xp):
    return _triplet_parts(a, pos, neg, o, xp)[0]


def _triplet_grad(a, pos, neg, o, xp):
    return _triplet_parts(a, pos, neg, o, xp)[1]


def _sample_triplet(rng, shape, o):
    a = rng.standard_normal(shape)
    return a, a + 0.7 * rng.standard_normal(shape), a + 1.2 * rng.standard_normal(shape)


def _edges_triplet(o):
    a = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, -2.0]])
    return a, a * np.array([[1.0], [1.0], [1.0]]) + np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1e-8, 0.0, 0.0]]), -a


def _kinks_triplet(a, pos, neg, margin=1.0, p=2.0, eps=1e-6, swap=False):
    """Samples near the hinge or (with swap) near the switch between the two negatives."""
    d = lambda u: np.linalg.norm(u + eps, ord=p, axis=-1)  # noqa: E731
    d_an = d(a - neg)
    d_neg = np.minimum(d_an, d(pos - neg)) if swap else d_an
    near = np.abs(d(a - pos) - d_neg + margin) < 2e-2
    if swap:
        near |= np.abs(d_an - d(pos - neg)) < 2e-2
    return np.broadcast_to(near[..., None], a.shape)


def _torch_triplet(a, pos, neg, reduction, margin=1.0, p=2.0, eps=1e-6, swap=False):
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor
    return F.triplet_margin_loss(t(a), t(pos), t(neg), margin=margin, p=p, eps=eps, swap=swap, reduction=reduction).numpy()


triplet_margin = declare(
    name="triplet_margin",
    family="embedding",
    kind=CLASS_AXIS,
    title="Triplet margin loss on embeddings.",
    formula=r"\ell(a, p, n) = \max(0,\ d(a, p) - d(a, n) + m),\ d(x, y) = \lVert x - y + \epsilon \rVert_q",
    gradient=r"\partial_a \ell = \mathbb{1}[\ell > 0](\nabla d_{ap} - \nabla d_{an}),\ \partial_p \ell = -\mathbb{1}[\ell > 0]\nabla d_{ap},\ \partial_n \ell = \mathbb{1}[\ell > 0]\nabla d_{an}",
    hessian=r"\text{not provided}",
    hessian_kind="none",
    domain="anchor, positive, negative: real arrays of one shape, the embedding axis last; margin >= 0; p >= 1",
    reference='Schroff, Kalenichenko & Philbin, "FaceNet: A Unified Embedding for Face Recognition and Clustering", CVPR 2015; Balntas et al., "Learning local feature descriptors with triplets and shallow convolutional neural networks", BMVC 2016 (swap)',
    use_when="Metric learning: pull an anchor towards a positive and push it a margin further from a negative.",
    details="""
        The three inputs have one shape; the distance is taken along the last axis, so the
        per-sample loss (and ``weight`` / ``mask``) has the shape without it. The gradient of
        the q-norm is sign(u)|u|^(q−1)/‖u‖^(q−1) with u = x − y + ε (0 where ‖u‖ = 0). With
        ``swap=True`` the negative distance is min(d(a, n), d(p, n)) (distance swap).
        Equals ``torch.nn.functional.triplet_margin_loss`` (which adds ``eps`` to the
        difference, as here). ``.grad`` returns ``(d_anchor, d_positive, d_negative)``.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> a, p, n = np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([[0.0, 1.5]])
        >>> round(float(lk.triplet_margin(a, p, n, eps=0.0)), 6)
        0.5
        >>> [g.tolist() for g in lk.triplet_margin.grad(a, p, n, eps=0.0)]
        [[[-1.0, 1.0]], [[1.0, -0.0]], [[0.0, -1.0]]]
    """,
    value=_triplet_value,
    grad=_triplet_grad,
    inputs=("anchor", "positive", "negative"),
    target=None,
    options={
        "margin": Option(1.0, "number", low=0.0, doc="the margin m"),
        "p": Option(2.0, "number", low=1.0, doc="the norm degree q of the distance"),
        "eps": Option(1e-6, "number", low=0.0, doc="added to the difference before the norm"),
        "swap": Option(False, "bool", doc="use min(d(a, n), d(p, n)) as the negative distance"),
    },
    checks=Checks(
        sample=_sample_triplet,
        option_sets=({}, {"margin": 0.5, "p": 1.0}, {"p": 3.0, "swap": True}, {"margin": 2.0, "eps": 0.0, "swap": True}),
        edges=_edges_triplet,
        kinks=_kinks_triplet,
        peers=(Peer("torch.nn.functional.triplet_margin_loss", _torch_triplet, requires="torch", options=("margin", "p", "eps", "swap")),),
    ),
)
