"""Regression losses on relative errors: squared log error, absolute percentage error, and the
cosine distance between vectors (the error in direction, whatever the scale)."""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import nan_where
from .._loss import CLASS_AXIS, ELEMENTWISE, Checks, Option, Peer, Prepared, declare, upcast_target
from .._spec import peer_reduction


def _per_sample(fn, p, y):
    return np.array([fn(np.array([b]), np.array([a])) for a, b in zip(p.ravel(), y.ravel())], dtype=np.float64).reshape(p.shape)


def _at_target(y, o):
    return y, np.zeros_like(y)


# --- msle ------------------------------------------------------------------------------------


def _msle_value(p, y, o, xp):
    d = xp.log1p(p) - xp.log1p(y)
    return d * d


def _msle_grad_and_hess(p, y, o, xp):
    d = xp.log1p(p) - xp.log1p(y)
    q = 1.0 / (1.0 + p)
    return 2.0 * d * q, 2.0 * (1.0 - d) * q * q


def _msle_check(p, y, o, xp, loss, valid):
    _validate.check_domain(p, "pred", loss, xp, valid, low=-1.0, low_open=True, hint="log1p needs values > -1.")
    _validate.check_domain(y, "target", loss, xp, valid, low=-1.0, low_open=True, hint="log1p needs values > -1.")


def _msle_baseline(y, w, o, xp):
    ly = xp.log1p(y)
    return xp.expm1(xp.mean(ly) if w is None else xp.sum(w * ly) / xp.sum(w))


def _sklearn_msle(p, y, reduction):
    from sklearn.metrics import mean_squared_log_error

    return peer_reduction(_per_sample(mean_squared_log_error, p, y), reduction)


msle = declare(
    name="msle",
    family="regression",
    kind=ELEMENTWISE,
    title="Mean squared logarithmic error.",
    formula=r"\ell(p, y) = \left(\log(1 + p) - \log(1 + y)\right)^2",
    gradient=r"\partial_p \ell = \frac{2\,(\log(1 + p) - \log(1 + y))}{1 + p}",
    hessian=r"\partial_p^2 \ell = \frac{2\,(1 - \log(1 + p) + \log(1 + y))}{(1 + p)^2}",
    domain="p, y > -1",
    reference="sklearn.metrics.mean_squared_log_error",
    use_when="Non-negative targets spanning orders of magnitude, where relative (not absolute) errors matter.",
    details="""
        Equals ``sklearn.metrics.mean_squared_log_error`` (which needs values > −1). Keras's
        ``mean_squared_logarithmic_error`` clips predictions and targets at 0 instead (its
        log(max(p, ε) + 1)), so the two differ for values in (−1, 0). ``validate=True``
        checks both arguments are > −1. The Hessian is negative where log(1 + p) −
        log(1 + y) > 1 (the loss is not convex in p there). Optimal constant:
        expm1 of the (weighted) mean of log1p(y).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.msle(np.array([1.0, 9.0]), np.array([3.0, 9.0]))), 6)
        0.240227
    """,
    value=_msle_value,
    grad=lambda p, y, o, xp: _msle_grad_and_hess(p, y, o, xp)[0],
    hess=lambda p, y, o, xp: _msle_grad_and_hess(p, y, o, xp)[1],
    grad_and_hess=_msle_grad_and_hess,
    check_values=_msle_check,
    baseline=_msle_baseline,
    checks=Checks(
        sample=lambda rng, shape, o: (rng.uniform(-0.5, 4.0, shape), rng.uniform(-0.5, 4.0, shape)),
        edges=lambda o: (np.array([1e4, -0.99, 0.0, 3.0]), np.array([-0.99, 1e4, 0.0, 3.0])),
        minimum=_at_target,
        peers=(Peer("sklearn.metrics.mean_squared_log_error", _sklearn_msle, requires="sklearn"),),
    ),
)

# --- mape ------------------------------------------------------------------------------------


def _mape_scale(y, xp):
    return xp.clip(xp.abs(y), min=float(xp.finfo(y.dtype).eps))


def _mape_value(p, y, o, xp):
    return xp.abs(p - y) / _mape_scale(y, xp)


def _mape_grad(p, y, o, xp):
    r = p - y
    s = nan_where(r, xp.astype(r > 0, r.dtype) - xp.astype(r < 0, r.dtype), xp=xp)
    return s / _mape_scale(y, xp)


def _mape_hess(p, y, o, xp):
    return nan_where(p - y, xp.zeros_like(p), xp=xp)


def _mape_baseline(y, w, o, xp):
    from .robust import weighted_quantile

    s = 1.0 / _mape_scale(y, xp)
    return weighted_quantile(y, s if w is None else w * s, 0.5, xp)


def _sklearn_mape(p, y, reduction):
    from sklearn.metrics import mean_absolute_percentage_error

    return peer_reduction(_per_sample(mean_absolute_percentage_error, p, y), reduction)


mape = declare(
    name="mape",
    family="regression",
    kind=ELEMENTWISE,
    title="Mean absolute percentage error, as a fraction.",
    formula=r"\ell(p, y) = \frac{|p - y|}{\max(|y|, \varepsilon)}",
    gradient=r"\partial_p \ell = \frac{\operatorname{sign}(p - y)}{\max(|y|, \varepsilon)}",
    hessian=r"\partial_p^2 \ell = 0",
    hessian_kind="zero",
    domain="p, y real; epsilon = machine epsilon of the compute dtype",
    reference="Hyndman & Koehler, \"Another look at measures of forecast accuracy\", *IJF* 22 (2006); sklearn.metrics.mean_absolute_percentage_error",
    use_when="Forecasts judged by relative error; targets far from 0 (near 0 the loss explodes).",
    details="""
        A fraction, not a percentage: equals ``sklearn.metrics.mean_absolute_percentage_error``
        (ε = machine epsilon, 2.2e-16 in float64); Keras's ``mean_absolute_percentage_error``
        is 100 times this (and uses ε = 1e-7). For positive targets an under-prediction
        costs at most 1 per sample while over-predictions are unbounded, so a model trained
        on it predicts low. The Hessian is zero. Optimal constant: the median of y weighted by
        w / max(abs(y), ε).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> float(lk.mape(np.array([110.0, 45.0]), np.array([100.0, 50.0])))
        0.1
    """,
    value=_mape_value,
    grad=_mape_grad,
    hess=_mape_hess,
    baseline=_mape_baseline,
    checks=Checks(
        sample=lambda rng, shape, o: (rng.standard_normal(shape) * 2, rng.uniform(0.5, 3.0, shape) * rng.choice([-1.0, 1.0], shape)),
        edges=lambda o: (np.array([1e4, -1e4, 0.0, 3.0, 1.0]), np.array([-1e4, 1e4, 0.0, -3.0, 0.0])),
        kinks=lambda p, y: np.abs(p - y) < 1e-2,
        minimum=_at_target,
        peers=(Peer("sklearn.metrics.mean_absolute_percentage_error", _sklearn_mape, requires="sklearn"),),
    ),
)

# --- cosine_distance ---------------------------------------------------------------------------


def _cos_parts(p, y, xp):
    """(cos, gradient of 1 − cos in p, ‖p‖ (1 where 0), unit y); 0 gradient for a zero p or y."""
    np_ = xp.sqrt(xp.sum(p * p, axis=-1, keepdims=True))
    ny = xp.sqrt(xp.sum(y * y, axis=-1, keepdims=True))
    zp, zy = np_ == 0, ny == 0
    np_s = xp.where(zp, xp.ones_like(np_), np_)
    yh = y / xp.where(zy, xp.ones_like(ny), ny)
    ph = p / np_s
    c = xp.sum(ph * yh, axis=-1, keepdims=True)
    g = -(yh - c * ph) / np_s
    g = xp.where(zp | zy, xp.zeros_like(g), g)
    return c, g, np_s, yh, ph


def _cos_value(p, y, o, xp):
    return 1.0 - _cos_parts(p, y, xp)[0][..., 0]


def _cos_grad(p, y, o, xp):
    return _cos_parts(p, y, xp)[1]


def _cos_hess(p, y, o, xp):
    c, g, n, yh, ph = _cos_parts(p, y, xp)
    # ∂g_i/∂p_i with g = −(ŷ − c p̂)/n and ∂c/∂p_i = −g_i
    h = (yh * ph - g * ph * n + c - 2.0 * c * ph * ph) / (n * n)
    return h


def _cos_prepare(pred, target, o, xp, validate, loss, mask=None):
    axis = _validate.normalize_axis(o["axis"], pred.ndim, loss)
    _validate.check_classes(pred, axis, "pred", loss)
    _validate.check_same_shape(pred, target, "pred", "target", loss)
    _validate.check_floating(target, "target", loss, xp)
    target = upcast_target(target, pred, xp)
    moved = axis != pred.ndim - 1
    if moved:
        pred, target = xp.moveaxis(pred, axis, -1), xp.moveaxis(target, axis, -1)
    return Prepared(pred, target, tuple(pred.shape[:-1]), axis=axis if moved else None)


def _optax_cosine(p, y, reduction, axis=-1):
    import jax.numpy as jnp
    import optax

    per = np.asarray(optax.losses.cosine_distance(jnp.asarray(p), jnp.asarray(y), axis=axis), dtype=np.float64)
    return peer_reduction(per, reduction)


def _cos_minimum(y, o):
    return y, np.zeros(np.delete(np.shape(y), o.get("axis", -1) % np.ndim(y)))


cosine_distance = declare(
    name="cosine_distance",
    family="regression",
    kind=CLASS_AXIS,
    title="Cosine distance between vectors.",
    formula=r"\ell(p, y) = 1 - \frac{p \cdot y}{\lVert p \rVert\,\lVert y \rVert}",
    gradient=r"\partial_p \ell = -\frac{1}{\lVert p \rVert}\left(\hat y - \cos(p, y)\,\hat p\right),\ \hat u = u / \lVert u \rVert",
    hessian=r"\partial_{p_i}^2 \ell = \frac{\hat y_i \hat p_i + \cos(p, y)\,(1 - 2\hat p_i^2) - \lVert p \rVert\, g_i \hat p_i}{\lVert p \rVert^2},\ g = \partial_p \ell",
    domain="p, y real vectors along axis; a zero vector has cosine 0 (distance 1) and zero gradient",
    reference="optax.losses.cosine_distance",
    use_when="Embeddings or directions, where only the angle between prediction and target matters.",
    details="""
        Taken along ``axis`` (the last by default); the per-sample loss drops that axis, so
        ``weight`` and ``mask`` have the shape without it. In [0, 2]; invariant to positive
        scaling of either vector. A zero vector (prediction or target) has cosine 0, so
        distance 1 and zero gradient, where optax (epsilon=0) returns NaN. Equals
        ``optax.losses.cosine_distance(pred, target, axis=axis)`` (and 1 +
        ``keras.losses.cosine_similarity``, which Keras negates). No optimal constant in
        closed form that Newton steps reach (the loss is scale-invariant).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> float(lk.cosine_distance(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 2.0], [3.0, 3.0]])))
        0.5
    """,
    value=_cos_value,
    grad=_cos_grad,
    hess=_cos_hess,
    options={"axis": Option(-1, "int", doc="the vector axis")},
    prepare=_cos_prepare,
    checks=Checks(
        sample=lambda rng, shape, o: (rng.standard_normal(shape), rng.standard_normal(shape)),
        option_sets=({}, {"axis": 0}),
        edges=lambda o: (np.array([[1e4, -1e4, 1.0], [0.0, 0.0, 0.0], [3.0, 1.0, -2.0]]), np.array([[-1e4, 1e4, 1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])),
        minimum=_cos_minimum,
        peers=(Peer("optax.losses.cosine_distance", _optax_cosine, requires="optax", options=("axis",)),),
    ),
)
