"""Cross-entropy relatives written in the probability of the target: Poly-1 cross-entropy and
generalized (noise-robust) cross-entropy, both over a class axis with ``cross_entropy``'s
targets and options (ids or probabilities, ``class_weight``, ``label_smoothing``,
``ignore_index``, the same "mean" denominator)."""

from __future__ import annotations

import numpy as np

from .._loss import CLASS_AXIS, Checks, Option, Peer, declare
from .._spec import peer_reduction
from . import _softmax
from .classification import _ce_prepare, _ce_q, _sample_ce
from .focal import _CE_SETS, _edges_focal

_CE_OPTIONS = {
    "axis": Option(-1, "int", doc="the class axis"),
    "ignore_index": Option(None, "int", doc="class id whose samples count nowhere"),
    "class_weight": Option(None, "array", low=0.0, doc="per-class weights, shape (C,)"),
    "label_smoothing": Option(0.0, "number", low=0.0, high=1.0, doc="α of (1 − α)·onehot + α/C"),
}

# --- Poly-1 ----------------------------------------------------------------------------------


def _poly_parts(z, t, o, xp):
    q = _ce_q(z, t, o, xp)
    lse = _softmax.lse_parts(z, xp)
    p = _softmax.softmax_from_lse(z, lse, xp)
    P = xp.sum(q * p, axis=-1)
    return q, lse, p, P


def _poly_value(z, t, o, xp):
    q, lse, p, P = _poly_parts(z, t, o, xp)
    return _softmax.weighted_nll(z, q, xp, lse) + o["epsilon"] * (xp.sum(q, axis=-1) - P)


def _poly_grad(z, t, o, xp):
    q, lse, p, P = _poly_parts(z, t, o, xp)
    return _softmax.weighted_nll_grad(z, q, xp, lse) + o["epsilon"] * p * (P[..., None] - q)


def _poly_value_and_grad(z, t, o, xp):
    q, lse, p, P = _poly_parts(z, t, o, xp)
    e = o["epsilon"]
    value = _softmax.weighted_nll(z, q, xp, lse) + e * (xp.sum(q, axis=-1) - P)
    return value, _softmax.weighted_nll_grad(z, q, xp, lse) + e * p * (P[..., None] - q)


def _poly_grad_and_hess(z, t, o, xp):
    q, lse, p, P = _poly_parts(z, t, o, xp)
    e = o["epsilon"]
    s = xp.sum(q, axis=-1)[..., None]
    d = P[..., None] - q
    return s * p - q + e * p * d, s * p * (1.0 - p) + e * p * d * (1.0 - 2.0 * p)


def _poly_hess(z, t, o, xp):
    return _poly_grad_and_hess(z, t, o, xp)[1]


def _optax_poly(z, y, reduction, axis=-1, epsilon=2.0, label_smoothing=0.0):
    import optax

    z = np.moveaxis(z, axis, -1)
    t = np.eye(z.shape[-1])[y] if not np.issubdtype(y.dtype, np.floating) else np.moveaxis(y, axis, -1)
    if label_smoothing:
        t = np.asarray(optax.smooth_labels(t, label_smoothing))
    per = np.asarray(optax.losses.poly_loss_cross_entropy(z, t, epsilon=epsilon))
    return peer_reduction(per, reduction)


poly1_cross_entropy = declare(
    name="poly1_cross_entropy",
    family="classification",
    kind=CLASS_AXIS,
    title="Poly-1 cross-entropy from logits.",
    formula=r"\ell(z, y) = \sum_k q_k (\operatorname{LSE}(z) - z_k) + \varepsilon \left(\textstyle\sum_k q_k - \sum_k q_k p_k\right),\ p = \operatorname{softmax}(z)",
    gradient=r"\partial_z \ell = (\textstyle\sum_k q_k)\, p - q + \varepsilon\, p \odot (P - q),\ P = \sum_k q_k p_k",
    hessian=r"\partial_{z_j}^2 \ell = (\textstyle\sum_k q_k)\, p_j (1 - p_j) + \varepsilon\, p_j (P - q_j)(1 - 2 p_j)",
    domain="logits real or -inf (impossible classes); integer ids in [0, C) or probabilities",
    reference='Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions", ICLR 2022',
    use_when="Classification where tuning the first polynomial coefficient of cross-entropy helps (ε > 0 for image classification).",
    details="""
        q is ``cross_entropy``'s effective target (class ids or probabilities, ``class_weight``,
        ``label_smoothing``, ``ignore_index``), so for one class id y the loss is
        w_y (CE + ε(1 − p_y)) and ``epsilon=0`` is ``cross_entropy`` exactly, option by
        option, with the same "mean" denominator. p_t = Σ_k q_k p_k uses the smoothed
        target, as ``optax.losses.poly_loss_cross_entropy`` does on smoothed labels. ε may be
        negative (≥ −1 keeps the loss non-negative for one-hot targets).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
        >>> round(float(lk.poly1_cross_entropy(logits, np.array([0, 2]))), 6)
        1.457101
    """,
    value=_poly_value,
    grad=_poly_grad,
    hess=_poly_hess,
    value_and_grad=_poly_value_and_grad,
    grad_and_hess=_poly_grad_and_hess,
    options={"epsilon": Option(2.0, "number", low=-1.0, doc="coefficient ε of (1 − p_t)"), **_CE_OPTIONS},
    prepare=_ce_prepare,
    inputs=("logits",),
    checks=Checks(
        sample=_sample_ce,
        shape=(7, 5),
        option_sets=_CE_SETS + ({"epsilon": 0.0}, {"epsilon": -0.5, "label_smoothing": 0.1}, {"epsilon": 1.0, "_probs": True}),
        edges=_edges_focal,
        shift_invariant=True,
        peers=(Peer("optax.losses.poly_loss_cross_entropy", _optax_poly, requires="optax", options=("axis", "epsilon", "label_smoothing")),),
    ),
)

# --- generalized cross-entropy ----------------------------------------------------------


def _gce_parts(z, t, o, xp):
    """(q, p, a = q·p^r) with r the exponent, p^r = exp(−r(LSE − z)) from the log-softmax."""
    q = _ce_q(z, t, o, xp)
    gap = _softmax._gap(z, _softmax.lse_parts(z, xp))
    return q, xp.exp(-gap), q * xp.exp(-o["q"] * gap), gap


def _gce_value(z, t, o, xp):
    r = o["q"]
    q = _ce_q(z, t, o, xp)
    gap = _softmax._gap(z, _softmax.lse_parts(z, xp))
    per = -xp.expm1(-r * gap) / r  # (1 − p^r)/r without cancellation as p → 1
    return xp.sum(xp.where(q == 0, xp.zeros_like(per), q * per), axis=-1)


def _gce_grad(z, t, o, xp):
    q, p, a, _ = _gce_parts(z, t, o, xp)
    return p * xp.sum(a, axis=-1)[..., None] - a


def _gce_grad_and_hess(z, t, o, xp):
    r = o["q"]
    q, p, a, _ = _gce_parts(z, t, o, xp)
    A = xp.sum(a, axis=-1)[..., None]
    return p * A - a, p * (1.0 - p) * A + r * p * (a - p * A) - r * a * (1.0 - p)


def _gce_hess(z, t, o, xp):
    return _gce_grad_and_hess(z, t, o, xp)[1]


def _scipy_gce(z, y, reduction, axis=-1, q=0.7):
    from scipy.special import log_softmax

    logp = np.moveaxis(log_softmax(z, axis=axis), axis, -1)
    if np.issubdtype(y.dtype, np.floating):
        t = np.moveaxis(y, axis, -1)
        per = np.sum(t * (1 - np.exp(q * logp)) / q, axis=-1)
    else:
        per = (1 - np.exp(q * np.take_along_axis(logp, y[..., None], axis=-1)[..., 0])) / q
    return peer_reduction(per, reduction)


generalized_cross_entropy = declare(
    name="generalized_cross_entropy",
    family="classification",
    kind=CLASS_AXIS,
    title="Generalized cross-entropy (noise-robust), from logits.",
    formula=r"\ell(z, y) = \sum_k q_k \frac{1 - p_k^{r}}{r},\ p = \operatorname{softmax}(z),\ r = \texttt{q}",
    gradient=r"\partial_{z_j} \ell = p_j A - a_j,\ a_k = q_k p_k^{r},\ A = \textstyle\sum_k a_k",
    hessian=r"\partial_{z_j}^2 \ell = p_j (1 - p_j) A + r p_j (a_j - p_j A) - r a_j (1 - p_j)",
    domain="logits real or -inf (impossible classes); integer ids in [0, C) or probabilities; 0 < q <= 1",
    reference='Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels", NeurIPS 2018',
    use_when="Classification with noisy labels: between cross-entropy (q → 0) and the bounded MAE-like 1 − p_y (q = 1).",
    details="""
        (1 − p^q)/q is computed as −expm1(−q·(LSE(z) − z_k))/q from the log-softmax, exact
        for confident right predictions. As q → 0 it tends to ``cross_entropy`` (tested); at
        q = 1 it is 1 − p_y. Targets and options are ``cross_entropy``'s (q_k the weighted,
        smoothed target; the option ``q`` is the paper's exponent). No framework ships this
        loss: the peer is the formula on SciPy's ``log_softmax``.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
        >>> round(float(lk.generalized_cross_entropy(logits, np.array([0, 2]))), 6)
        0.46331
    """,
    value=_gce_value,
    grad=_gce_grad,
    hess=_gce_hess,
    grad_and_hess=_gce_grad_and_hess,
    options={"q": Option(0.7, "number", low=0.0, high=1.0, low_open=True, doc="exponent q in (0, 1]"), **_CE_OPTIONS},
    prepare=_ce_prepare,
    inputs=("logits",),
    checks=Checks(
        sample=_sample_ce,
        shape=(7, 5),
        option_sets=_CE_SETS + ({"q": 1.0}, {"q": 0.05, "label_smoothing": 0.1}, {"q": 0.3, "_probs": True}),
        edges=_edges_focal,
        shift_invariant=True,
        peers=(Peer("1 - softmax**q over q (scipy log_softmax)", _scipy_gce, requires="scipy", options=("axis", "q")),),
    ),
)
