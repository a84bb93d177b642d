"""Focal and polynomial relatives of cross-entropy: sigmoid and softmax focal loss, Poly-1 and
generalized (robust) cross-entropy, all from logits.

The focal factor (1 − p_t)^γ is computed as exp(γ·log(1 − p_t)) with 1 − p_t itself taken from
the log-sigmoid / log-softmax form (σ(−z), or −expm1(−(LSE − z_k))), never as 1 − σ(z): it keeps
its relative precision as p_t → 1, and every derivative is written so that the (1 − p_t)^(γ−1)
of the chain rule never appears on its own (it is unbounded there for γ < 1).
"""

from __future__ import annotations

import numpy as np

from .._array import sigmoid
from .._loss import CLASS_AXIS, ELEMENTWISE, Checks, Option, Peer, declare
from .._spec import peer_reduction
from . import _softmax
from .binary import _bce_value, _sample_bce
from .classification import _CW, _ce_prepare, _ce_q, _edges_ce, _sample_ce

# --- sigmoid focal ------------------------------------------------------------------------


def _smooth_binary(y, o):
    e = o["label_smoothing"]
    return y * (1.0 - e) + 0.5 * e if e else y


def _pow(u, gamma, xp):
    """u**γ for u >= 0 from log u (0 at u = 0 for γ > 0; exactly 1 for γ = 0)."""
    if gamma == 0:
        return xp.ones_like(u)
    zero = u == 0  # NaN is not 0: it propagates
    return xp.where(zero, xp.zeros_like(u), xp.exp(gamma * xp.log(xp.where(zero, xp.ones_like(u), u))))


def _sf_parts(z, y, o, xp):
    """(u^γ, u, k, p, ce, α_t, y) with u = 1 − p_t = yσ(−z) + (1 − y)σ(z) (a sum of
    non-negative terms) and k = σ(z)σ(−z)/u (→ p_t where u = 0)."""
    y = _smooth_binary(y, o)
    p, pm = sigmoid(z, xp=xp), sigmoid(-z, xp=xp)
    u = y * pm + (1.0 - y) * p
    h = p * pm
    pos = u > 0
    k = xp.where(pos, h / xp.where(pos, u, xp.ones_like(u)), 1.0 - u)
    ce = _bce_value(z, y, {"pos_weight": None}, xp)
    a = o["alpha"]
    at = 1.0 if a is None else a * y + (1.0 - a) * (1.0 - y)
    return _pow(u, o["gamma"], xp), u, k, p, ce, at, y


def _sf_value(z, y, o, xp):
    ug, _, _, _, ce, at, _ = _sf_parts(z, y, o, xp)
    return at * ug * ce


def _sf_grad(z, y, o, xp):
    ug, _, k, p, ce, at, y = _sf_parts(z, y, o, xp)
    g = o["gamma"]
    return at * ug * (g * (1.0 - 2.0 * y) * k * ce + (p - y))


def _sf_value_and_grad(z, y, o, xp):
    ug, _, k, p, ce, at, y = _sf_parts(z, y, o, xp)
    g = o["gamma"]
    return at * ug * ce, at * ug * (g * (1.0 - 2.0 * y) * k * ce + (p - y))


def _sf_grad_and_hess(z, y, o, xp):
    ug, _, k, p, ce, at, y = _sf_parts(z, y, o, xp)
    g = o["gamma"]
    c = 1.0 - 2.0 * y
    h = p * sigmoid(-z, xp=xp)
    grad = at * ug * (g * c * k * ce + (p - y))
    hess = at * ug * (g * (g - 1.0) * c * c * k * k * ce + g * c * (1.0 - 2.0 * p) * k * ce + 2.0 * g * c * k * (p - y) + h)
    return grad, hess


def _sf_hess(z, y, o, xp):
    return _sf_grad_and_hess(z, y, o, xp)[1]


def _sf_check_values(z, y, o, xp, loss, valid):
    from .. import _validate

    _validate.check_probabilities(y, "target", loss, xp, valid)


def _sf_check(o, loss):
    from .. import _validate

    if o["alpha"] is not None:
        o["alpha"] = _validate.check_number(o["alpha"], "alpha", loss, low=0.0, high=1.0)


def _sf_prepare(pred, target, o, xp, validate, loss, mask=None):
    from .binary import _bce_prepare

    return _bce_prepare(pred, target, {**o, "pos_weight": None}, xp, validate, loss, mask)


def _edges_sf(o):
    z = np.array([1e4, -1e4, np.inf, -np.inf, 1e4, -1e4, 0.0, 30.0, -40.0])
    return z, np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5, 1.0, 0.0])


def _sf_u(z, y, label_smoothing=0.0, **_):
    y = y * (1 - label_smoothing) + 0.5 * label_smoothing
    p = 1 / (1 + np.exp(-np.clip(z, -700, 700)))
    return y * (1 - p) + (1 - y) * p


def _optax_sf(z, y, reduction, alpha=0.25, gamma=2.0):
    import optax

    per = np.asarray(optax.losses.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma))
    return peer_reduction(per, reduction)


def _torchvision_formula_sf(z, y, reduction, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss's formula, evaluated at 50 digits: p = σ(z),
    ce = BCE(z, y), p_t = p y + (1 − p)(1 − y), loss = α_t ce (1 − p_t)^γ with
    α_t = α y + (1 − α)(1 − y), no α for α < 0 (losskit's None). Its wheel does not import
    beside this CPU torch, so the formula of its ops/focal_loss.py is re-stated."""
    import mpmath

    def one(zi, yi):
        zi, yi = mpmath.mpf(zi), mpmath.mpf(yi)
        p, q = 1 / (1 + mpmath.exp(-zi)), 1 / (1 + mpmath.exp(zi))  # σ(z), 1 − σ(z) without cancelling
        ce = yi * mpmath.log(1 + mpmath.exp(-zi)) + (1 - yi) * mpmath.log(1 + mpmath.exp(zi))
        p_t = p * yi + q * (1 - yi)
        loss = ce * (1 - p_t) ** gamma if gamma else ce
        if alpha is not None:
            loss *= alpha * yi + (1 - alpha) * (1 - yi)
        return float(loss)

    with mpmath.workdps(50):
        per = np.array([one(a, b) for a, b in zip(z.ravel(), y.ravel())], dtype=np.float64).reshape(z.shape)
    return peer_reduction(per, reduction)


def _keras_sf(z, y, reduction, alpha=0.25, gamma=2.0, label_smoothing=0.0):
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    per = keras.losses.binary_focal_crossentropy(
        y.reshape(-1, 1), z.reshape(-1, 1), apply_class_balancing=alpha is not None, alpha=0.25 if alpha is None else alpha,
        gamma=gamma, from_logits=True, label_smoothing=label_smoothing,
    )
    per = np.asarray(per, dtype=np.float64).reshape(z.shape)
    return peer_reduction(per, reduction)


sigmoid_focal = declare(
    name="sigmoid_focal",
    family="classification",
    kind=ELEMENTWISE,
    title="Sigmoid focal loss on logits (binary / multi-label).",
    formula=r"\ell(z, y) = -\alpha_t (1 - p_t)^\gamma \log p_t,\ p_t = y\sigma(z) + (1 - y)\sigma(-z),\ \alpha_t = \alpha y + (1 - \alpha)(1 - y)",
    gradient=r"\partial_z \ell = \alpha_t (1 - p_t)^\gamma \left[\gamma (1 - 2y) \tfrac{\sigma(z)\sigma(-z)}{1 - p_t} \operatorname{bce}(z, y) + \sigma(z) - y\right]",
    hessian=r"\partial_z^2 \ell = \alpha_t u^\gamma \left[\gamma(\gamma - 1) c^2 k^2 b + \gamma c (1 - 2\sigma(z)) k b + 2\gamma c k (\sigma(z) - y) + \sigma(z)\sigma(-z)\right],\ u = 1 - p_t,\ c = 1 - 2y,\ k = \sigma(z)\sigma(-z)/u,\ b = \operatorname{bce}(z, y)",
    domain="logits z real or ±inf; targets y in [0, 1]; gamma >= 0; alpha in [0, 1] or None",
    reference='Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017',
    use_when="Binary or multi-label classification with many easy negatives (dense detection, 1:50 imbalance).",
    details="""
        −log p_t is the stable binary cross-entropy on logits and 1 − p_t = yσ(−z) + (1 − y)σ(z)
        (a sum of non-negative terms, from σ(−z) rather than 1 − σ(z)), so value, gradient and
        Hessian are finite at logits ±1e4 and ±inf in every dtype and keep their precision
        as p_t → 1 (optax and torchvision form 1 − p_t by subtraction and return 0 there).
        For any γ > 0 the gradient tends to 0 as p_t → 1 (like (1 − p_t)^(γ+1)), also for
        γ < 1 where the derivative of (1 − p_t)^γ alone is unbounded: the factor σ(z)σ(−z)/u
        is bounded (it tends to p_t), so the gradient and Hessian are exactly 0 at p_t = 1.
        ``alpha=None`` disables α (torchvision's α = −1); with ``alpha=None, gamma=0`` this is
        ``binary_cross_entropy``. ``label_smoothing`` ε replaces y by y(1 − ε) + ε/2
        everywhere in the formula (p_t and α_t), as Keras does. Equals
        ``optax.losses.sigmoid_focal_loss`` and ``keras.losses.binary_focal_crossentropy``
        (``from_logits=True``; losskit's ``alpha`` is Keras's ``alpha`` with
        ``apply_class_balancing=True``).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.sigmoid_focal(np.array([0.0, 2.0]), np.array([1.0, 0.0]))), 6)
        0.64044
    """,
    value=_sf_value,
    grad=_sf_grad,
    hess=_sf_hess,
    value_and_grad=_sf_value_and_grad,
    grad_and_hess=_sf_grad_and_hess,
    options={
        "alpha": Option(0.25, "any", doc="weight α in [0, 1] of the positive term, or None for no weighting"),
        "gamma": Option(2.0, "number", low=0.0, doc="focusing exponent γ"),
        "label_smoothing": Option(0.0, "number", low=0.0, high=1.0, doc="ε of y(1 − ε) + ε/2"),
    },
    prepare=_sf_prepare,
    check=_sf_check,
    check_values=_sf_check_values,
    inputs=("logits",),
    checks=Checks(
        sample=_sample_bce,
        option_sets=(
            {},
            {"alpha": None, "gamma": 0.0},
            {"alpha": None, "gamma": 1.5},
            {"alpha": 0.6, "gamma": 0.5},
            {"gamma": 3.0, "label_smoothing": 0.1},
            {"alpha": None, "gamma": 0.0, "label_smoothing": 0.2},
        ),
        edges=_edges_sf,
        peers=(
            Peer("torchvision.ops.sigmoid_focal_loss (its formula at 50 digits, mpmath)", _torchvision_formula_sf,
                 requires="mpmath", options=("alpha", "gamma"), rtol=1e-12),
            Peer("optax.losses.sigmoid_focal_loss", _optax_sf, requires="optax", options=("alpha", "gamma"),
                 less_accurate=lambda z, y, **o: _sf_u(z, y, **o) < 1e-6),
            Peer("keras.losses.binary_focal_crossentropy(from_logits=True)", _keras_sf, requires="keras",
                 options=("alpha", "gamma", "label_smoothing"),
                 # Keras clips σ(z) to [1e-7, 1 − 1e-7]
                 less_accurate=lambda z, y, **o: (_sf_u(z, y, **o) < 1e-6) | (np.abs(z) > 13.0)),
        ),
    ),
)

# --- softmax focal --------------------------------------------------------------------------


def _focal_classes(z, q, gamma, xp):
    """Per class: L = LSE − z (≥ 0), p = e^{−L}, s = 1 − p = −expm1(−L), s^γ, and
    pr = p·L/s (→ p where s = 0, 0 where L = inf)."""
    L = _softmax._gap(z, _softmax.lse_parts(z, xp))
    p = xp.exp(-L)
    s = -xp.expm1(-L)
    sg = _pow(s, gamma, xp)
    pos = s > 0
    pr = xp.where(pos, p * xp.where(xp.isinf(L), xp.zeros_like(L), L) / xp.where(pos, s, xp.ones_like(s)), p)
    return L, p, s, sg, pr


def _smf_value(z, t, o, xp):
    q = _ce_q(z, t, o, xp)
    L, _, _, sg, _ = _focal_classes(z, q, o["gamma"], xp)
    return xp.sum(q * sg * xp.where(q == 0, xp.zeros_like(L), L), axis=-1)  # 0·∞ = 0


def _smf_ab(z, q, gamma, xp):
    L, p, s, sg, pr = _focal_classes(z, q, gamma, xp)
    a = q * sg
    b = gamma * a * pr  # q γ (1 − p)^(γ−1) p L, written without the unbounded power
    return L, p, s, sg, pr, a, b


def _smf_grad(z, t, o, xp):
    q = _ce_q(z, t, o, xp)
    _, p, _, _, _, a, b = _smf_ab(z, q, o["gamma"], xp)
    return p * xp.sum(a + b, axis=-1)[..., None] - a - b


def _smf_value_and_grad(z, t, o, xp):
    q = _ce_q(z, t, o, xp)
    L, p, _, sg, _, a, b = _smf_ab(z, q, o["gamma"], xp)
    value = xp.sum(a * xp.where(q == 0, xp.zeros_like(L), L), axis=-1)
    return value, p * xp.sum(a + b, axis=-1)[..., None] - a - b


def _smf_grad_and_hess(z, t, o, xp):
    """With ψ(p) = p·φ'(p), φ(p) = −(1 − p)^γ log p per class: g = pC' − c', c' = a + b, and
    H_jj = d_j(1 − p_j)² + p_j² Σ_{k≠j} d_k − p_j(1 − p_j)C with d = q p ψ'(p) =
    qγ s^(γ−1) p [(γ − 1)p·L/s + 2 − L] and C = −Σ(a + b). s^(γ−1) is floored at the dtype's
    tiny; d_j(1 − p_j)² is formed as qγ s^(γ+1) p[...] and Σ_{k≠j} d_k leaves out the class
    with p > ½ (at most one), so nothing huge cancels."""
    g = o["gamma"]
    q = _ce_q(z, t, o, xp)
    L, p, s, sg, pr, a, b = _smf_ab(z, q, g, xp)
    Lf = xp.where(xp.isinf(L), xp.zeros_like(L), L)
    e = q * g * (p * ((g - 1.0) * pr + 2.0) - p * Lf)  # qγ p[(γ−1)pL/s + 2 − L]
    fi = xp.finfo(z.dtype)
    tiny = float(getattr(fi, "smallest_normal", None) or fi.tiny)
    d = e * (_pow(xp.where(s > tiny, s, tiny), g - 1.0, xp) if g != 1.0 else 1.0)
    ds2 = e * sg * s  # d·s² without the unbounded power
    big = p > 0.5
    d_small = xp.sum(xp.where(big, xp.zeros_like(d), d), axis=-1)[..., None]
    d_others = xp.where(big, d_small, xp.sum(d, axis=-1)[..., None] - d)
    ab = xp.sum(a + b, axis=-1)[..., None]
    grad = p * ab - a - b
    hess = ds2 + p * p * d_others + p * s * ab
    return grad, hess


def _smf_hess(z, t, o, xp):
    return _smf_grad_and_hess(z, t, o, xp)[1]


def _keras_smf(z, y, reduction, axis=-1, gamma=2.0, class_weight=None, label_smoothing=0.0):
    """Keras's focal CE, ``alpha`` = class_weight (1 without), "mean" by the documented rule."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    z = np.moveaxis(z, axis, -1)
    ids = not np.issubdtype(y.dtype, np.floating)
    t = np.eye(z.shape[-1])[y] if ids else np.moveaxis(y, axis, -1)
    alpha = 1.0 if class_weight is None else np.asarray(class_weight)
    per = keras.losses.categorical_focal_crossentropy(t, z, alpha=alpha, gamma=gamma, from_logits=True, label_smoothing=label_smoothing)
    per = np.asarray(per, dtype=np.float64)
    den = per.size if not ids or class_weight is None else np.sum(np.asarray(class_weight)[y])
    return {"none": per, "sum": per.sum(), "mean": per.sum() / den}[reduction]


def _keras_less_accurate(z, y, axis=-1, **_):
    """Keras clips probabilities to [1e-7, 1 − 1e-7]."""
    from scipy.special import softmax

    p = np.moveaxis(softmax(z, axis=axis), axis, -1)
    return np.any((p < 1e-6) | (p > 1 - 1e-6), axis=-1)


def _edges_focal(o):
    """cross_entropy's edges and one row of moderate logits (every peer compares there)."""
    z, t = _edges_ce(o)
    z = np.concatenate([z, [[0.5, -0.3, 0.2, 1.0, -1.0]]])
    row = [[0.1, 0.2, 0.3, 0.2, 0.2]] if o.get("_probs") else [3]
    return z, np.concatenate([t, np.asarray(row, dtype=t.dtype)])


_CE_SETS = (
    {},
    {"label_smoothing": 0.1},
    {"class_weight": _CW},
    {"ignore_index": -100},
    {"ignore_index": 2},
    {"class_weight": _CW, "label_smoothing": 0.25, "ignore_index": -1},
    {"_probs": True},
    {"_probs": True, "label_smoothing": 0.2, "class_weight": _CW},
)

softmax_focal = declare(
    name="softmax_focal",
    family="classification",
    kind=CLASS_AXIS,
    title="Softmax focal loss from logits (multi-class).",
    formula=r"\ell(z, y) = -\sum_k q_k (1 - p_k)^\gamma \log p_k,\ p = \operatorname{softmax}(z)",
    gradient=r"\partial_{z_j} \ell = p_j \textstyle\sum_k (a_k + b_k) - a_j - b_j,\ a_k = q_k (1 - p_k)^\gamma,\ b_k = \gamma a_k \tfrac{p_k (-\log p_k)}{1 - p_k}",
    hessian=r"\partial_{z_j}^2 \ell = d_j (1 - p_j)^2 + p_j^2 \textstyle\sum_{k \ne j} d_k + p_j (1 - p_j) \sum_k (a_k + b_k),\ d_k = q_k \gamma (1 - p_k)^{\gamma - 1} p_k [(\gamma - 1) \tfrac{p_k (-\log p_k)}{1 - p_k} + 2 + \log p_k]",
    domain="logits real or -inf (impossible classes); integer ids in [0, C) or probabilities; gamma >= 0",
    reference='Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017',
    use_when="Multi-class classification dominated by easy examples; down-weights well-classified samples.",
    details="""
        q is ``cross_entropy``'s effective target (ids or probabilities, ``class_weight``,
        ``label_smoothing``, ``ignore_index``, the same "mean" denominator): with ``gamma=0``
        this is ``cross_entropy`` exactly, option by option. −log p_k = LSE(z) − z_k and
        1 − p_k = −expm1(−(LSE(z) − z_k)) come from the log-softmax, so logits of ±1e4 and −inf
        (action masks) stay finite in every dtype. For any γ > 0 the gradient tends to 0 as
        p_k → 1 (b_k ~ γ q_k (1 − p_k)^γ): the unbounded (1 − p)^(γ−1) of the chain rule is
        never formed on its own. For γ < 1 the Hessian term d_k grows like (1 − p_k)^(γ−1)
        but enters the diagonal only through bounded products; it is capped at the dtype's
        smallest normal 1 − p. Equals ``keras.losses.categorical_focal_crossentropy``
        (``from_logits=True``) with Keras's per-class ``alpha`` passed as ``class_weight``
        (Keras's default α = 0.25 scales the loss; losskit's default is no weighting).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
        >>> round(float(lk.softmax_focal(logits, np.array([0, 2]))), 6)
        0.246208
    """,
    value=_smf_value,
    grad=_smf_grad,
    hess=_smf_hess,
    value_and_grad=_smf_value_and_grad,
    grad_and_hess=_smf_grad_and_hess,
    options={
        "gamma": Option(2.0, "number", low=0.0, doc="focusing exponent γ"),
        "axis": Option(-1, "int", doc="the class axis"),
        "ignore_index": Option(None, "int", doc="class id whose samples count nowhere"),
        "class_weight": Option(None, "array", low=0.0, doc="per-class weights, shape (C,)"),
        "label_smoothing": Option(0.0, "number", low=0.0, high=1.0, doc="α of (1 − α)·onehot + α/C"),
    },
    prepare=_ce_prepare,
    inputs=("logits",),
    checks=Checks(
        sample=_sample_ce,
        shape=(7, 5),
        option_sets=_CE_SETS + ({"gamma": 0.0}, {"gamma": 0.5, "label_smoothing": 0.1}, {"gamma": 3.0, "_probs": True}),
        edges=_edges_focal,
        shift_invariant=True,
        peers=(
            Peer("keras.losses.categorical_focal_crossentropy(from_logits=True)", _keras_smf, requires="keras",
                 options=("axis", "gamma", "class_weight", "label_smoothing"), less_accurate=_keras_less_accurate),
        ),
    ),
)
