"""Regression losses on the residual r = pred − target."""

from __future__ import annotations

import math

import numpy as np

from .._array import add_scaled, clip, nan_where, sign
from .._loss import ELEMENTWISE, Checks, Option, Peer, declare
from .._spec import peer_reduction

# --- mse ---------------------------------------------------------------------------------


def _mse_value(p, y, o, xp):
    r = p - y
    return r * r


def _mse_grad(p, y, o, xp):
    r = p - y
    return r + r  # 2r exactly, without a scalar operand (one op less on torch)


def _mse_hess(p, y, o, xp):
    return nan_where(p - y, xp.full_like(p, 2.0), xp=xp)


def _mse_value_and_grad(p, y, o, xp):
    r = p - y
    return r * r, r + r


def _sample_regression(rng, shape, o):
    return rng.standard_normal(shape) * 2, rng.standard_normal(shape) * 2


def _edges_regression(o):
    big = np.array([1e4, -1e4, 0.0, 3.0])
    return big, -big * np.array([1.0, 1.0, 1.0, -1.0])


def _minimum_at_target(y, o):
    return y, np.zeros_like(y)


def _torch_peer(fn_name, **fixed):
    """``torch.nn.functional.<fn_name>(pred, target, reduction=..., **options)``."""

    def fn(p, y, reduction, **o):
        import torch
        import torch.nn.functional as F

        return getattr(F, fn_name)(torch.as_tensor(p), torch.as_tensor(y), reduction=reduction, **fixed, **o).numpy()

    return fn


def _huber_location(y, w, delta, xp):
    """Huber's location estimate (the optimal constant of ``huber``), shared with ``smooth_l1``."""
    from .robust import huber_location

    return huber_location(y, w, delta, xp)


def _monotone_root(y, w, slope, xp):
    from .robust import monotone_root

    return monotone_root(y, w, slope, xp)


def _weighted_mean(y, w, xp):
    return xp.mean(y) if w is None else xp.sum(w * y) / xp.sum(w)


def _weighted_median(y, w, xp):
    """The weighted median: the smallest y whose cumulative weight reaches half the total."""
    flat = xp.reshape(y, (-1,))
    ws = xp.ones_like(flat) if w is None else xp.reshape(xp.astype(w, flat.dtype), (-1,))
    order = xp.argsort(flat)
    ys, cw = xp.take(flat, order), xp.cumulative_sum(xp.take(ws, order))
    k = xp.sum(xp.astype(cw < 0.5 * cw[-1], xp.int64))
    return ys[int(k)]


mse = declare(
    name="mse",
    family="regression",
    kind=ELEMENTWISE,
    title="Mean squared error.",
    formula=r"\ell(p, y) = (p - y)^2",
    gradient=r"\partial_p \ell = 2 (p - y)",
    hessian=r"\partial_p^2 \ell = 2",
    domain="p, y real",
    reference="Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, §2.4",
    use_when="Regression with roughly Gaussian noise; punishes large errors quadratically, so outliers dominate.",
    details="""
        The plain (not "half") squared error, equal to ``torch.nn.functional.mse_loss`` and
        ``optax.squared_error``'s mean. It is the maximum-likelihood loss under Gaussian noise,
        but a few outliers dominate its gradient (see ``huber``). Optimal constant: the
        (weighted) mean.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> float(lk.mse(np.array([1.0, 2.0]), np.array([1.5, 2.0])))
        0.125
    """,
    value=_mse_value,
    grad=_mse_grad,
    hess=_mse_hess,
    value_and_grad=_mse_value_and_grad,
    baseline=lambda y, w, o, xp: _weighted_mean(y, w, xp),
    checks=Checks(
        sample=_sample_regression,
        edges=_edges_regression,
        minimum=_minimum_at_target,
        peers=(Peer("torch.nn.functional.mse_loss", _torch_peer("mse_loss"), requires="torch"),),
    ),
)

# --- mae ---------------------------------------------------------------------------------


def _mae_value(p, y, o, xp):
    return xp.abs(p - y)


def _mae_grad(p, y, o, xp):
    return sign(p - y, xp=xp)


def _mae_hess(p, y, o, xp):
    return nan_where(p - y, xp.zeros_like(p), xp=xp)


mae = declare(
    name="mae",
    family="regression",
    kind=ELEMENTWISE,
    title="Mean absolute error.",
    formula=r"\ell(p, y) = |p - y|",
    gradient=r"\partial_p \ell = \operatorname{sign}(p - y) \quad (0 \text{ at } p = y)",
    hessian=r"\partial_p^2 \ell = 0",
    hessian_kind="zero",
    domain="p, y real",
    reference="Koenker, *Quantile Regression* (2005), ch. 1",
    use_when="Regression robust to outliers (fits the conditional median); gradient magnitude is constant.",
    details="""
        The subgradient at ``p == y`` is 0. Equals ``torch.nn.functional.l1_loss``. It
        estimates the conditional median, so outliers do not dominate. Its Hessian is zero,
        so Newton-type boosting needs a surrogate (``huber`` or ``pseudo_huber``). Optimal
        constant: the (weighted) median.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> float(lk.mae(np.array([1.0, 2.0]), np.array([1.5, 4.0])))
        1.25
    """,
    value=_mae_value,
    grad=_mae_grad,
    hess=_mae_hess,
    baseline=lambda y, w, o, xp: _weighted_median(y, w, xp),
    checks=Checks(
        sample=_sample_regression,
        edges=_edges_regression,
        kinks=lambda p, y, **o: np.abs(p - y) < 1e-2,
        minimum=_minimum_at_target,
        peers=(Peer("torch.nn.functional.l1_loss", _torch_peer("l1_loss"), requires="torch"),),
    ),
)

# --- huber -------------------------------------------------------------------------------


def _huber_terms(r, d, xp):
    # with m = min(|r|, δ): m(|r| − m/2) is ½r² inside (exactly: |r| − |r|/2 is exact) and
    # δ(|r| − δ/2) outside, in four ops instead of a select between two branches
    a = xp.abs(r)
    m = clip(a, None, d, xp=xp)
    return m * (a - 0.5 * m)


def _huber_value(p, y, o, xp):
    return _huber_terms(p - y, o["delta"], xp)


def _huber_grad(p, y, o, xp):
    d = o["delta"]
    return clip(p - y, -d, d, xp=xp)


def _huber_hess(p, y, o, xp):
    r = p - y
    return nan_where(r, xp.astype(xp.abs(r) <= o["delta"], p.dtype), xp=xp)


def _huber_value_and_grad(p, y, o, xp):
    # with the gradient g = clip(r, −δ, δ): g(r − g/2) is ½r² inside and δ(|r| − δ/2)
    # outside, rounded exactly as ``_huber_terms`` (g/2 is exact, r − r/2 too, and for
    # r < −δ it is the same product with both signs flipped), reusing g: five ops, not seven
    d = o["delta"]
    r = p - y
    g = clip(r, -d, d, xp=xp)
    return g * add_scaled(r, g, -0.5, xp=xp), g


huber = declare(
    name="huber",
    family="regression",
    kind=ELEMENTWISE,
    title="Huber loss.",
    formula=r"\ell(p, y) = \begin{cases} \tfrac12 r^2 & |r| \le \delta \\ \delta (|r| - \tfrac12 \delta) & \text{otherwise} \end{cases},\ r = p - y",
    gradient=r"\partial_p \ell = \operatorname{clip}(r, -\delta, \delta)",
    hessian=r"\partial_p^2 \ell = \mathbb{1}[|r| \le \delta]",
    hessian_kind="piecewise",
    domain="p, y real; delta > 0",
    reference='P. J. Huber, "Robust Estimation of a Location Parameter", *Ann. Math. Statist.* 35 (1964)',
    use_when="Regression with outliers: quadratic near zero, linear beyond delta; bounded gradient.",
    details="""
        Equals ``torch.nn.functional.huber_loss(pred, target, delta=delta)`` and
        ``optax.huber_loss``. Not ``smooth_l1`` (which divides by delta): squared error for
        small residuals, absolute error (gradient capped at delta) for large ones. ``delta``
        must be > 0. Optimal constant: Huber's location estimate (the root of the weighted
        sum of clipped residuals, found by bisection).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> float(lk.huber(np.array([0.5, 3.0]), np.array([0.0, 0.0]), delta=1.0))
        1.3125
    """,
    value=_huber_value,
    grad=_huber_grad,
    hess=_huber_hess,
    value_and_grad=_huber_value_and_grad,
    baseline=lambda y, w, o, xp: _huber_location(y, w, o["delta"], xp),
    options={"delta": Option(1.0, "number", low=0.0, low_open=True, doc="where the loss turns from quadratic to linear")},
    checks=Checks(
        sample=_sample_regression,
        option_sets=({}, {"delta": 0.5}, {"delta": 2.5}),
        edges=_edges_regression,
        kinks=lambda p, y, delta=1.0: np.abs(np.abs(p - y) - delta) < 1e-2,
        minimum=_minimum_at_target,
        peers=(Peer("torch.nn.functional.huber_loss", _torch_peer("huber_loss"), requires="torch", options=("delta",)),),
    ),
)

# --- log_cosh ----------------------------------------------------------------------------


def _log_cosh_value(p, y, o, xp):
    r = p - y
    a = xp.abs(r)
    small = xp.where(a < 1.0, r, xp.zeros_like(r))  # sinh would overflow where it is not used
    s = xp.sinh(0.5 * small)
    # log cosh r = log1p(2 sinh²(r/2)) keeps full relative precision for small r;
    # |r| + log1p(e^{-2|r|}) - log 2 never overflows for large r
    return xp.where(a < 1.0, xp.log1p(2.0 * s * s), a + xp.log1p(xp.exp(-2.0 * a)) - math.log(2.0))


def _log_cosh_grad(p, y, o, xp):
    return xp.tanh(p - y)


def _log_cosh_hess(p, y, o, xp):
    e = xp.exp(-2.0 * xp.abs(p - y))
    return 4.0 * e / ((1.0 + e) * (1.0 + e))  # sech², without 1 - tanh² cancelling


def _optax_log_cosh(p, y, reduction):
    import jax.numpy as jnp
    import optax

    # float64 where JAX runs with x64 enabled (the test suite does)
    per = np.asarray(optax.losses.log_cosh(jnp.asarray(p), jnp.asarray(y)), dtype=np.float64)
    return peer_reduction(per, reduction)


def _mpmath_log_cosh(p, y, reduction):
    import mpmath

    with mpmath.workdps(50):
        per = np.array([float(mpmath.log(mpmath.cosh(mpmath.mpf(a) - mpmath.mpf(b)))) for a, b in zip(p.ravel(), y.ravel())]).reshape(p.shape)
    return peer_reduction(per, reduction)


log_cosh = declare(
    name="log_cosh",
    family="regression",
    kind=ELEMENTWISE,
    title="Log-cosh loss.",
    formula=r"\ell(p, y) = \log\cosh(p - y)",
    gradient=r"\partial_p \ell = \tanh(p - y)",
    hessian=r"\partial_p^2 \ell = \operatorname{sech}^2(p - y)",
    domain="p, y real; finite for residuals up to the dtype's largest value",
    reference="Saleh & Saleh, \"Statistical Properties of the log-cosh Loss Function Used in Machine Learning\" (2022); optax.losses.log_cosh",
    use_when="Regression: like mse for small residuals and mae for large ones, twice differentiable everywhere.",
    details="""
        About r²/2 for small residuals and abs(r) − log 2 for large ones: a smooth Huber with a
        positive Hessian everywhere. Computed as log1p(2 sinh²(r/2)) below abs(r) = 1, which keeps
        full relative precision for tiny residuals (optax's logaddexp(r, −r) − log 2 returns
        rounding noise there), and as abs(r) + log1p(exp(−2 abs(r))) − log 2 above, which never
        overflows. Equals ``optax.losses.log_cosh`` and ``keras.losses.log_cosh`` (whose
        reduction is a mean over the last axis). The optimal constant has no closed form:
        ``baseline`` finds the root of the summed gradient Σ w·tanh(c − y) by bisection.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.log_cosh(np.array([0.0, 2.0]), np.array([0.0, 0.0]))), 6)
        0.662501
    """,
    value=_log_cosh_value,
    baseline=lambda y, w, o, xp: _monotone_root(y, w, xp.tanh, xp),
    grad=_log_cosh_grad,
    hess=_log_cosh_hess,
    checks=Checks(
        sample=_sample_regression,
        edges=_edges_regression,
        minimum=_minimum_at_target,
        peers=(
            Peer("optax.losses.log_cosh", _optax_log_cosh, requires="optax", less_accurate=lambda p, y: np.abs(p - y) < 1e-4),
            Peer("mpmath log(cosh(r)) at 50 digits", _mpmath_log_cosh, requires="mpmath", rtol=1e-13),
        ),
    ),
)
