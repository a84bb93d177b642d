"""Ranking and pairwise ±1 losses: soft margin (logistic on ±1 labels), margin ranking of two
scores, and the cosine embedding loss of two embeddings (the embedding axis last)."""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import nan_where, sigmoid, sigmoid_and_slope, softplus
from .._loss import CLASS_AXIS, ELEMENTWISE, Checks, Option, Peer, declare
from .._spec import peer_reduction


def _signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def _reduce(per, reduction):
    return peer_reduction(per, reduction)


# --- soft margin: log(1 + exp(−y p)) ---------------------------------------------------------


def _sm_value(p, y, o, xp):
    return softplus(-y * p, xp=xp)


def _sm_grad(p, y, o, xp):
    return -y * sigmoid(-y * p, xp=xp)


def _sm_hess(p, y, o, xp):
    return sigmoid_and_slope(y * p, xp=xp)[1] * (y * y)


def _sm_check(p, y, o, xp, loss, valid):
    _validate.check_same_shape(p, y, "pred", "target", loss)
    _validate.check_signs(y, "target", loss, xp, valid)


def _with_target_grad(out, y, formula):
    """torch's ±1-label losses refuse ``target.requires_grad``: the value and input gradients
    are torch's, and a target that requires grad gets autograd of ``formula()`` (value 0 added)."""
    if not y.requires_grad:
        return out
    extra = formula()
    return out + (extra - extra.detach())


def _torch_soft_margin(p, y, reduction):
    import torch
    import torch.nn.functional as F

    p, y = torch.as_tensor(p), torch.as_tensor(y)
    out = F.soft_margin_loss(p, y.detach(), reduction=reduction)
    per = lambda: F.softplus(-y * p.detach())  # noqa: E731  torch's log(1 + exp(−y p)), for the target gradient
    return _with_target_grad(out, y, lambda: _reduce(per(), reduction)).numpy()


soft_margin = declare(
    name="soft_margin",
    family="ranking",
    kind=ELEMENTWISE,
    title="Soft margin loss: logistic loss on scores with targets ±1.",
    formula=r"\ell(p, y) = \log(1 + e^{-y p})",
    gradient=r"\partial_p \ell = -y\,\sigma(-y p)",
    hessian=r"\partial_p^2 \ell = \sigma(y p)\,\sigma(-y p)",
    domain="scores p real; targets y in {-1, +1}",
    reference="torch.nn.SoftMarginLoss; the logistic loss of binary classification with labels ±1",
    use_when="Binary classification on raw scores with ±1 labels (binary cross-entropy on logits with y = (1 + t)/2).",
    details="""
        Targets are −1 or +1; {0, 1} labels are an error with a hint (pass ``2 * target − 1``).
        Computed as a stable softplus, finite for every finite score. Equals
        ``torch.nn.functional.soft_margin_loss``.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.soft_margin(np.array([0.0, 2.0]), np.array([1.0, -1.0]))), 6)
        1.410038
    """,
    value=_sm_value,
    grad=_sm_grad,
    hess=_sm_hess,
    check_values=_sm_check,
    checks=Checks(
        sample=lambda rng, shape, o: (rng.standard_normal(shape) * 2.0, _signs(rng, shape)),
        edges=lambda o: (np.array([1e4, -1e4, 1e4, -1e4, 0.0]), np.array([1.0, 1.0, -1.0, -1.0, -1.0])),
        peers=(Peer("torch.nn.functional.soft_margin_loss", _torch_soft_margin, requires="torch"),),
    ),
)


# --- margin ranking: max(0, −y (x1 − x2) + m) ------------------------------------------------


def _mr_parts(x1, x2, y, o, xp):
    hinge = -y * (x1 - x2) + o["margin"]
    value = xp.maximum(hinge, xp.zeros_like(hinge))
    active = xp.astype((value > 0) | xp.isnan(value), x1.dtype)
    g = nan_where(value, -y * active, xp=xp)
    return value, (g, -g)


def _mr_value(x1, x2, y, o, xp):
    return _mr_parts(x1, x2, y, o, xp)[0]


def _mr_grad(x1, x2, y, o, xp):
    return _mr_parts(x1, x2, y, o, xp)[1]


def _mr_check(x1, x2, y, o, xp, loss, valid):
    _validate.check_same_shape(x1, y, "input1", "target", loss)
    _validate.check_signs(y, "target", loss, xp, valid)


def _mr_kinks(x1, x2, y, margin=0.0):
    return np.abs(-y * (x1 - x2) + margin) < 2e-2


def _torch_margin_ranking(x1, x2, y, reduction, margin=0.0):
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor
    return F.margin_ranking_loss(t(x1), t(x2), t(y), margin=margin, reduction=reduction).numpy()


margin_ranking = declare(
    name="margin_ranking",
    family="ranking",
    kind=ELEMENTWISE,
    title="Margin ranking loss of two scores (target ±1: which should rank higher).",
    formula=r"\ell(x_1, x_2, y) = \max(0,\ -y (x_1 - x_2) + m)",
    gradient=r"\partial_{x_1} \ell = -y\,\mathbb{1}[\ell > 0],\ \partial_{x_2} \ell = y\,\mathbb{1}[\ell > 0]",
    hessian=r"\text{not provided (0 almost everywhere)}",
    hessian_kind="none",
    domain="scores x1, x2 real arrays of one shape; target y in {-1, +1}, same shape",
    reference="torch.nn.MarginRankingLoss; Herbrich, Graepel & Obermayer, \"Large margin rank boundaries for ordinal regression\" (2000)",
    use_when="Pairwise ranking: x1 should score higher than x2 by a margin when y = 1, lower when y = −1.",
    details="""
        Elementwise over two score arrays of one shape; ``target`` holds −1 or +1 (an error
        otherwise, with a hint for {0, 1} labels). Subgradient 0 at the hinge.
        Equals ``torch.nn.functional.margin_ranking_loss``. ``.grad`` returns
        ``(d_input1, d_input2)``.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> x1, x2, y = np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 1.0])
        >>> float(lk.margin_ranking(x1, x2, y, margin=0.5, reduction="sum"))
        1.5
        >>> [g.tolist() for g in lk.margin_ranking.grad(x1, x2, y, margin=0.5, reduction="sum")]
        [[-0.0, -1.0], [0.0, 1.0]]
    """,
    value=_mr_value,
    grad=_mr_grad,
    check_values=_mr_check,
    inputs=("input1", "input2"),
    target="target",
    options={"margin": Option(0.0, "number", doc="the margin m")},
    checks=Checks(
        sample=lambda rng, shape, o: (rng.standard_normal(shape), rng.standard_normal(shape), _signs(rng, shape)),
        option_sets=({}, {"margin": 0.5}, {"margin": -0.3}),
        edges=lambda o: (np.array([1e4, -1e4, 0.0, 3.0]), np.array([-1e4, 1e4, 0.0, 1.0]), np.array([1.0, 1.0, -1.0, -1.0])),
        kinks=_mr_kinks,
        peers=(Peer("torch.nn.functional.margin_ranking_loss", _torch_margin_ranking, requires="torch", options=("margin",)),),
    ),
)


# --- cosine embedding: 1 − cos for y = 1, max(0, cos − m) for y = −1 --------------------------

_COS_EPS = 1e-12  # torch's: added to each squared norm, so zero vectors have cos = 0


def _cos_parts(x1, x2, y, o, xp):
    s = xp.sum(x1 * x2, axis=-1)
    a = xp.sum(x1 * x1, axis=-1) + _COS_EPS
    b = xp.sum(x2 * x2, axis=-1) + _COS_EPS
    den = xp.sqrt(a * b)
    cos = s / den
    pos = y == 1
    neg_active = (cos - o["margin"]) > 0
    value = xp.where(pos, 1.0 - cos, xp.where(y == -1, xp.maximum(cos - o["margin"], xp.zeros_like(cos)), xp.zeros_like(cos)))
    value = nan_where(y, value, xp=xp)
    # d cos / d x1 = x2 / den − cos x1 / a; d cos / d x2 = x1 / den − cos x2 / b
    coef = xp.where(pos, -xp.ones_like(cos), xp.where((y == -1) & neg_active, xp.ones_like(cos), xp.zeros_like(cos)))
    coef = nan_where(value, coef, xp=xp)[..., None]
    g1 = coef * (x2 / den[..., None] - (cos / a)[..., None] * x1)
    g2 = coef * (x1 / den[..., None] - (cos / b)[..., None] * x2)
    return value, (g1, g2)


def _cos_value(x1, x2, y, o, xp):
    return _cos_parts(x1, x2, y, o, xp)[0]


def _cos_grad(x1, x2, y, o, xp):
    return _cos_parts(x1, x2, y, o, xp)[1]


def _cos_check(x1, x2, y, o, xp, loss, valid):
    if tuple(y.shape) != tuple(x1.shape[:-1]):
        raise ValueError(
            f"{loss}: `target` must have the shape of `input1` without its embedding axis, "
            f"{tuple(x1.shape[:-1])}, got {tuple(y.shape)}."
        )
    _validate.check_signs(y, "target", loss, xp, valid)


def _cos_sample(rng, shape, o):
    return rng.standard_normal(shape), rng.standard_normal(shape), _signs(rng, shape[:-1])


def _cos_kinks(x1, x2, y, margin=0.0, axis=-1):
    cos = np.sum(x1 * x2, -1) / np.sqrt((np.sum(x1 * x1, -1) + _COS_EPS) * (np.sum(x2 * x2, -1) + _COS_EPS))
    return np.broadcast_to((np.abs(cos - margin) < 2e-2)[..., None], x1.shape)


def _torch_cosine(x1, x2, y, reduction, margin=0.0):
    import torch
    import torch.nn.functional as F

    x1, x2, y = torch.as_tensor(x1), torch.as_tensor(x2), torch.as_tensor(y)
    if x1.ndim > 2:  # torch takes (N, D) or (D,): rows of the leading axes
        d = x1.shape[-1]
        per = F.cosine_embedding_loss(x1.reshape(-1, d), x2.reshape(-1, d), y.detach().reshape(-1), margin=margin, reduction="none")
        out = _reduce(per.reshape(y.shape), reduction)
    else:
        out = F.cosine_embedding_loss(x1, x2, y.detach(), margin=margin, reduction=reduction)
    return _with_target_grad(out, y, lambda: 0.0 * y.sum()).numpy()  # piecewise constant in y: gradient 0


cosine_embedding = declare(
    name="cosine_embedding",
    family="ranking",
    kind=CLASS_AXIS,
    title="Cosine embedding loss of two embeddings (target ±1: similar or dissimilar).",
    formula=r"\ell(x_1, x_2, y) = \begin{cases} 1 - \cos(x_1, x_2) & y = 1 \\ \max(0,\ \cos(x_1, x_2) - m) & y = -1 \end{cases},\ \cos = \frac{x_1 \cdot x_2}{\sqrt{(\lVert x_1 \rVert^2 + \epsilon)(\lVert x_2 \rVert^2 + \epsilon)}}",
    gradient=r"\partial_{x_1} \cos = \frac{x_2}{\sqrt{(\lVert x_1 \rVert^2 + \epsilon)(\lVert x_2 \rVert^2 + \epsilon)}} - \frac{\cos\, x_1}{\lVert x_1 \rVert^2 + \epsilon},\ \partial_{x_1} \ell = -\partial_{x_1} \cos\ (y = 1),\ \mathbb{1}[\cos > m]\,\partial_{x_1} \cos\ (y = -1)",
    hessian=r"\text{not provided}",
    hessian_kind="none",
    domain="x1, x2: real arrays of one shape, the embedding axis `axis`; target y in {-1, +1} with the shape without that axis; margin in [-1, 1]",
    reference="torch.nn.CosineEmbeddingLoss",
    use_when="Learning embeddings whose cosine similarity says whether two items match (e.g. paraphrase pairs).",
    details="""
        The cosine uses torch's rule ε = 1e-12 added to each squared norm, so a zero vector has
        cosine 0 and a finite gradient. ``target`` (−1 or +1, an error otherwise) and
        ``weight`` / ``mask`` have the shape without the embedding axis. Equals
        ``torch.nn.functional.cosine_embedding_loss`` (which takes only (N, D) or (D,): here
        any leading shape). ``.grad`` returns ``(d_input1, d_input2)``.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> x1, x2 = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])
        >>> [round(v, 6) for v in lk.cosine_embedding(x1, x2, np.array([1.0, -1.0]), reduction="none").tolist()]
        [1.0, 0.707107]
    """,
    value=_cos_value,
    grad=_cos_grad,
    check_values=_cos_check,
    inputs=("input1", "input2"),
    target="target",
    options={
        "margin": Option(0.0, "number", low=-1.0, high=1.0, doc="the margin m for dissimilar pairs"),
        "axis": Option(-1, "int", doc="the embedding axis"),
    },
    checks=Checks(
        sample=_cos_sample,
        option_sets=({}, {"margin": 0.3}, {"margin": -0.5}),
        edges=lambda o: (np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0], [1e-8, 2.0, 3.0]]), np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [-1e4, 2.0, 1e4]]), np.array([1.0, -1.0, -1.0])),
        kinks=_cos_kinks,
        peers=(Peer("torch.nn.functional.cosine_embedding_loss", _torch_cosine, requires="torch", options=("margin",)),),
    ),
)
