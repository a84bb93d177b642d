"""Binary cross-entropy, on logits and on probabilities (one probability per element)."""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import backend, clip, compute_dtype, finite_bound, log_sigmoid, nan_where, positive_part, sigmoid, sigmoid_and_slope, softplus_nonpositive, sub_product
from .._loss import ELEMENTWISE, Checks, Option, Peer, Prepared, declare
from .._spec import peer_reduction

# --- binary cross-entropy on logits ------------------------------------------------------


def _bce_clip(z, xp):
    # ±inf logits are sure predictions: clipping to half the dtype's range keeps y·z finite,
    # so a right sure prediction costs exactly 0 and a wrong one a huge finite value.
    b = finite_bound(z.dtype, xp)
    return clip(z, -b, b, xp=xp)


def _bce_smooth(y, o):
    """Label smoothing ε: y(1 − ε) + ε/2 (Keras's binary formula)."""
    e = o.get("label_smoothing")
    return y * (1.0 - e) + 0.5 * e if e else y


def _bce_posw(y, o):
    pw = o["pos_weight"]
    return None if pw is None else (1.0 + (pw - 1.0) * y, pw * y)


def _bce_terms(z, y, o, xp):
    """(ℓ, softplus(−|z|) (None on torch without pos_weight), clipped z, |z|). ℓ is a sum of
    non-negative terms,

        ℓ = (1 + (w − 1)y)·softplus(−|z|) + ½[w·y(|z| − z) + (1 − y)(|z| + z)],

    so the tiny losses of confident right predictions keep full relative precision, where
    softplus(z) − y·z cancels (a loss of 2e-9 at z = 20 would keep 6 digits in float64 and
    none in float32)."""
    zc = _bce_clip(z, xp)
    a = xp.abs(zc)
    pw = _bce_posw(y, o)
    if pw is None:
        # ½[y(|z| − z) + (1 − y)(|z| + z)] = max(z, 0) − y·z: max(z, 0) is exact and
        # fl(y·z) <= max(z, 0) for y in [0, 1], so the term stays >= 0 (two roundings, no
        # scalar operands)
        if backend(xp) == "torch":
            # softplus(−|z|) as −log σ(|z|): one fused op for neg + softplus, and one addcmul
            # for the product and its subtraction (the tail is not reused on torch)
            return sub_product(positive_part(zc, xp=xp), y, zc, xp=xp) - log_sigmoid(a, xp=xp), None, zc, a
        tail = softplus_nonpositive(-a, xp=xp)
        return tail + (positive_part(zc, xp=xp) - y * zc), tail, zc, a
    tail = softplus_nonpositive(-a, xp=xp)
    # max(−z, 0) is capped so that w·y·max(−z, 0) stays finite (at most ~max/2, with a margin
    # for the rounding of the division) for a wrong sure logit (z = −inf)
    neg = xp.minimum(0.5 * (a - zc), 0.99 * finite_bound(z.dtype, xp) / xp.maximum(pw[1], xp.ones_like(pw[1])))
    return pw[0] * tail + pw[1] * neg + 0.5 * (1.0 - y) * (a + zc), tail, zc, a


def _bce_value(z, y, o, xp):
    return _bce_terms(z, _bce_smooth(y, o), o, xp)[0]


def _bce_grad(z, y, o, xp):
    y = _bce_smooth(y, o)
    pw = _bce_posw(y, o)
    s = sigmoid(z, xp=xp)
    return s - y if pw is None else pw[0] * s - pw[1]


def _bce_value_and_grad(z, y, o, xp):
    y = _bce_smooth(y, o)
    value, tail, zc, a = _bce_terms(z, y, o, xp)
    if backend(xp) == "torch":
        # torch.sigmoid is one op (the reuse below is five, ~8 µs on a small batch) and the
        # same σ(z) that ``grad`` uses
        s = sigmoid(z, xp=xp)
    else:
        s = xp.exp(-(tail + 0.5 * (a - zc)))  # σ(z) = exp(−softplus(−z)), reusing softplus(−|z|)
    pw = _bce_posw(y, o)
    return value, (s - y if pw is None else pw[0] * s - pw[1])


def _bce_hess(z, y, o, xp):
    return _bce_grad_and_hess(z, y, o, xp)[1]


def _bce_grad_and_hess(z, y, o, xp):
    y = _bce_smooth(y, o)
    s, h = sigmoid_and_slope(z, xp=xp)
    h = nan_where(y, h, xp=xp)  # the Hessian does not involve y, but a NaN target must reach it
    pw = _bce_posw(y, o)
    if pw is None:
        return s - y, h
    return pw[0] * s - pw[1], pw[0] * h


def _bce_prepare(pred, target, o, xp, validate, loss, mask=None):
    _validate.check_same_shape(pred, target, "logits", "target", loss)
    pw = o["pos_weight"]
    if pw is not None and not isinstance(pw, (int, float)):
        shape = tuple(pw.shape)
        if shape not in ((), (pred.shape[-1] if pred.ndim else 1,)):
            raise ValueError(
                f"{loss}: `pos_weight` must be a number, a 0-d array or have shape ({pred.shape[-1] if pred.ndim else 1},) "
                f"(one weight per column of the last axis), got shape {shape}."
            )
        o["pos_weight"] = xp.astype(pw, compute_dtype(pred.dtype, xp))
    dt = compute_dtype(pred.dtype, xp)
    return Prepared(pred, target if target.dtype == dt else xp.astype(target, dt), tuple(pred.shape))


def _bce_check_values(z, y, o, xp, loss, valid):
    _validate.check_probabilities(y, "target", loss, xp, valid)


def _sample_bce(rng, shape, o):
    return rng.standard_normal(shape) * 3, rng.random(shape)


def _edges_bce(o):
    """Two rows of four (so a per-column pos_weight of 4 applies). With label smoothing every
    sure logit is partly wrong (an infinite loss), so ±inf becomes ±1e4 there."""
    z = np.array([[1e4, -1e4, np.inf, -np.inf], [np.inf, -np.inf, 0.0, 30.0]])
    if o.get("label_smoothing"):
        z = np.clip(z, -1e4, 1e4)
    return z, np.array([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.5, 0.5]])


def _minimum_bce(y, o):
    """σ(z) = y minimises soft BCE, where it equals the binary entropy of y (z = ±inf, value 0,
    for y = 1 or 0)."""
    if o.get("pos_weight") is not None:
        return None
    y = _bce_smooth(y, o)
    with np.errstate(divide="ignore"):
        z = np.log(y) - np.log1p(-y)
    entropy = -(np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0)), 0.0) + np.where(y < 1, (1 - y) * np.log1p(-np.where(y < 1, y, 0.0)), 0.0))
    return z, entropy


def _torch_bce(z, y, reduction, pos_weight=None):
    import torch
    import torch.nn.functional as F

    pw = None if pos_weight is None else torch.as_tensor(pos_weight)
    return F.binary_cross_entropy_with_logits(torch.as_tensor(z), torch.as_tensor(y), reduction=reduction, pos_weight=pw).numpy()


def _keras_bce(z, y, reduction, label_smoothing=0.0):
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    per = keras.losses.binary_crossentropy(y.reshape(-1, 1), z.reshape(-1, 1), from_logits=True, label_smoothing=label_smoothing)
    per = np.asarray(per, dtype=np.float64).reshape(z.shape)
    return peer_reduction(per, reduction)


def _log_odds_baseline(y, w, o, xp):
    """The optimal constant logit: σ(c) = Σ w·pw·y / Σ w·(1 + (pw − 1)y) (the log-odds of the
    weighted mean target without pos_weight); one per column of the last axis when pos_weight
    has one weight per column."""
    pw = o["pos_weight"]
    y = _bce_smooth(y, o)
    w = xp.ones_like(y) if w is None else w
    pw = 1.0 if pw is None else (pw if isinstance(pw, (int, float)) else xp.astype(xp.asarray(pw), y.dtype))
    pos = w * pw * y
    total = w * (1.0 + (pw - 1.0) * y)
    if getattr(pw, "ndim", 0) == 1:
        cols = y.shape[-1]
        pos, total = xp.sum(xp.reshape(pos, (-1, cols)), axis=0), xp.sum(xp.reshape(total, (-1, cols)), axis=0)
    else:
        pos, total = xp.sum(pos), xp.sum(total)
    return xp.log(pos) - xp.log(total - pos)


binary_cross_entropy = declare(
    name="binary_cross_entropy",
    family="classification",
    kind=ELEMENTWISE,
    title="Binary cross-entropy on logits (log-loss), in the stable softplus form.",
    formula=r"\ell(z, y) = \operatorname{softplus}(z) - y z = \log(1 + e^{-|z|}) + (1 - y)\max(z, 0) + y \max(-z, 0)",
    gradient=r"\partial_z \ell = \sigma(z) - y",
    hessian=r"\partial_z^2 \ell = \sigma(z)(1 - \sigma(z))",
    domain="logits z real or ±inf; targets y in [0, 1] (soft labels allowed); pos_weight >= 0",
    reference="Bishop, *Pattern Recognition and Machine Learning* (2006), §4.3.2",
    use_when="Binary or multi-label classification from logits; the stable form of log-loss.",
    details=r"""
        With ``pos_weight`` = w (a number, or one per column of the last axis, as in PyTorch):
        :math:`\ell = (1 + (w - 1)y)\,\operatorname{softplus}(z) - w y z`, the positive term
        weighted by w. Equals ``torch.nn.functional.binary_cross_entropy_with_logits`` and
        ``optax.sigmoid_binary_cross_entropy``. Targets may be soft (any y in [0, 1]; checked
        when ``validate=True``). Prefer it to ``binary_cross_entropy_from_probs`` whenever
        logits are available (no clamping, exact gradients). Logits of ±inf are sure
        predictions: a right one costs 0, a wrong one a huge finite value; gradients stay
        exact. Optimal constant: the log-odds of the (weighted) mean target.
        ``label_smoothing`` ε replaces every target y by y(1 − ε) + ε/2 (as
        ``keras.losses.binary_crossentropy(label_smoothing=ε)``), in the value and the
        derivatives, also with ``pos_weight``.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.binary_cross_entropy(np.array([0.0, 2.0]), np.array([1.0, 1.0]))), 6)
        0.410038
    """,
    value=_bce_value,
    grad=_bce_grad,
    hess=_bce_hess,
    grad_and_hess=_bce_grad_and_hess,
    value_and_grad=_bce_value_and_grad,
    options={
        "pos_weight": Option(None, "array", low=0.0, doc="weight of the positive term: a number or one per column of the last axis"),
        "label_smoothing": Option(0.0, "number", low=0.0, high=1.0, doc="ε of y(1 − ε) + ε/2"),
    },
    prepare=_bce_prepare,
    check_values=_bce_check_values,
    inputs=("logits",),
    baseline=_log_odds_baseline,
    checks=Checks(
        sample=_sample_bce,
        option_sets=({}, {"pos_weight": 3.0}, {"pos_weight": np.array([0.5, 1.0, 2.0, 4.0])}, {"label_smoothing": 0.1}, {"label_smoothing": 0.2, "pos_weight": 2.0}),
        edges=_edges_bce,
        minimum=_minimum_bce,
        peers=(
            Peer("torch.nn.functional.binary_cross_entropy_with_logits", _torch_bce, requires="torch", options=("pos_weight",)),
            Peer("keras.losses.binary_crossentropy(from_logits=True)", _keras_bce, requires="keras", options=("label_smoothing",)),
        ),
    ),
)

# --- binary cross-entropy on probabilities -----------------------------------------------


def _clip_probs(p, xp):
    eps = float(xp.finfo(p.dtype).eps)
    return xp.clip(p, eps, 1.0 - eps)


def _bcep_value(p, y, o, xp):
    # each log term clipped on its own, so a perfect prediction (p = y = 0 or 1) costs exactly 0
    eps = float(xp.finfo(p.dtype).eps)
    return -(y * xp.log(xp.clip(p, eps, 1.0)) + (1.0 - y) * xp.log1p(-xp.clip(p, 0.0, 1.0 - eps)))


def _bcep_grad(p, y, o, xp):
    pc = _clip_probs(p, xp)
    return (pc - y) / (pc * (1.0 - pc))


def _bcep_hess(p, y, o, xp):
    pc = _clip_probs(p, xp)
    q = 1.0 - pc
    return y / (pc * pc) + (1.0 - y) / (q * q)


def _bcep_check_values(p, y, o, xp, loss, valid):
    _validate.check_probabilities(p, "probs", loss, xp, valid)
    _validate.check_probabilities(y, "target", loss, xp, valid)


def _torch_bce_probs(p, y, reduction):
    import torch
    import torch.nn.functional as F

    return F.binary_cross_entropy(torch.as_tensor(p), torch.as_tensor(y), reduction=reduction).numpy()


def _minimum_bce_probs(y, o):
    yc = np.clip(y, 1e-300, 1.0)
    entropy = -(y * np.log(yc) + (1 - y) * np.log(np.clip(1 - y, 1e-300, 1.0)))
    return y, entropy


binary_cross_entropy_from_probs = declare(
    name="binary_cross_entropy_from_probs",
    family="classification",
    kind=ELEMENTWISE,
    title="Binary cross-entropy on probabilities.",
    formula=r"\ell(p, y) = -[y \log \max(p, \varepsilon) + (1 - y) \log \max(1 - p, \varepsilon)]",
    gradient=r"\partial_p \ell = \frac{\tilde p - y}{\tilde p (1 - \tilde p)},\ \tilde p = \operatorname{clip}(p, \varepsilon, 1 - \varepsilon)",
    hessian=r"\partial_p^2 \ell = \frac{y}{\tilde p^2} + \frac{1 - y}{(1 - \tilde p)^2}",
    domain="probabilities p and targets y in [0, 1]; epsilon = machine epsilon of the compute dtype",
    reference="Bishop, *Pattern Recognition and Machine Learning* (2006), §4.3.2; clamp as in Keras (epsilon) rather than PyTorch (log >= -100)",
    use_when="Only when the model outputs probabilities; prefer binary_cross_entropy on logits.",
    details="""
        ε is the machine epsilon of the compute dtype (1.19e-7 in float32 and for half
        inputs, 2.2e-16 in float64), so ``p`` = 0 or 1 gives a finite value (at most −log ε:
        15.9 in float32, 36.0 in float64) and a finite gradient. Each log term is clipped on
        its own, so a perfect prediction (p = y ∈ {0, 1}) costs exactly 0. Inside
        [ε, 1 − ε] this equals ``torch.nn.functional.binary_cross_entropy``; PyTorch instead
        clamps each log at −100, so the two differ only for p within ε of 0 or 1. The
        gradient outside the clip is the formula at the clipped p (it keeps its sign instead
        of vanishing). ``validate=True`` checks that ``probs`` and ``target`` lie in [0, 1].
        Optimal constant: the (weighted) mean target.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.binary_cross_entropy_from_probs(np.array([0.5, 0.9]), np.array([1.0, 1.0]))), 6)
        0.399254
    """,
    value=_bcep_value,
    grad=_bcep_grad,
    hess=_bcep_hess,
    check_values=_bcep_check_values,
    inputs=("probs",),
    baseline=lambda y, w, o, xp: xp.mean(y) if w is None else xp.sum(w * y) / xp.sum(w),
    checks=Checks(
        sample=lambda rng, shape, o: (rng.uniform(0.02, 0.98, shape), rng.random(shape)),
        edges=lambda o: (np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30]), np.array([1.0, 0.0, 0.0, 1.0, 0.5, 1.0])),
        minimum=_minimum_bce_probs,
        peers=(
            Peer(
                "torch.nn.functional.binary_cross_entropy",
                _torch_bce_probs,
                requires="torch",
                # torch clamps each log at -100 where losskit clips p to [eps, 1 - eps] (documented)
                less_accurate=lambda p, y: (p < 2.3e-16) | (p > 1.0 - 2.3e-16),
            ),
        ),
    ),
)
