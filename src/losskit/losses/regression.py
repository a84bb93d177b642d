"""Regression losses on the residual r = pred − target."""

from __future__ import annotations

from .._array import nan_where
from .._loss import ELEMENTWISE, Option, declare

# --- mse ---------------------------------------------------------------------------------


def _mse_value(p, y, o, xp):
    r = p - y
    return r * r


def _mse_grad(p, y, o, xp):
    return 2.0 * (p - y)


def _mse_hess(p, y, o, xp):
    return nan_where(p - y, xp.full_like(p, 2.0), xp=xp)


def _mse_value_and_grad(p, y, o, xp):
    r = p - y
    return r * r, 2.0 * r


mse = declare(
    name="mse",
    family="regression",
    kind=ELEMENTWISE,
    formula=r"\ell(p, y) = (p - y)^2",
    gradient=r"\partial_p \ell = 2 (p - y)",
    hessian=r"\partial_p^2 \ell = 2",
    domain="p, y real",
    reference="Gauss (1809); any regression textbook, e.g. Hastie, Tibshirani & Friedman, ESL §2.4",
    use_when="Regression with roughly Gaussian noise; punishes large errors quadratically, so outliers dominate.",
    value=_mse_value,
    grad=_mse_grad,
    hess=_mse_hess,
    value_and_grad=_mse_value_and_grad,
    doc=r"""Mean squared error.

.. math:: \ell(p, y) = (p - y)^2, \qquad \partial_p\ell = 2(p - y), \qquad \partial_p^2\ell = 2

The plain (not "half") squared error, equal to ``torch.nn.functional.mse_loss`` and
``optax.squared_error``'s mean. Use it for regression with Gaussian-like noise; it is the
maximum-likelihood loss there, but a few outliers dominate its gradient (see ``huber``).

Reference: Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, §2.4.

Example:
    >>> import numpy as np, losskit as lk
    >>> float(lk.mse(np.array([1.0, 2.0]), np.array([1.5, 2.0])))
    0.125
""",
)

# --- mae ---------------------------------------------------------------------------------


def _mae_value(p, y, o, xp):
    return xp.abs(p - y)


def _mae_grad(p, y, o, xp):
    return xp.sign(p - y)


def _mae_hess(p, y, o, xp):
    return nan_where(p - y, xp.zeros_like(p), xp=xp)


mae = declare(
    name="mae",
    family="regression",
    kind=ELEMENTWISE,
    formula=r"\ell(p, y) = |p - y|",
    gradient=r"\partial_p \ell = \operatorname{sign}(p - y) \quad (0 \text{ at } p = y)",
    hessian=r"\partial_p^2 \ell = 0",
    domain="p, y real",
    reference="Laplace (1774); Koenker, Quantile Regression (2005), median regression",
    use_when="Regression robust to outliers (fits the conditional median); gradient magnitude is constant.",
    value=_mae_value,
    grad=_mae_grad,
    hess=_mae_hess,
    doc=r"""Mean absolute error.

.. math:: \ell(p, y) = |p - y|, \qquad \partial_p\ell = \operatorname{sign}(p - y), \qquad \partial_p^2\ell = 0

The subgradient at ``p == y`` is 0. Equals ``torch.nn.functional.l1_loss``. Use it when
outliers should not dominate: it estimates the conditional median. Its Hessian is zero, so
Newton-type boosting needs a surrogate (``huber`` or ``pseudo_huber``).

Reference: Koenker, *Quantile Regression* (2005), ch. 1.

Example:
    >>> import numpy as np, losskit as lk
    >>> float(lk.mae(np.array([1.0, 2.0]), np.array([1.5, 4.0])))
    1.25
""",
)

# --- huber -------------------------------------------------------------------------------


def _huber_value(p, y, o, xp):
    d = o["delta"]
    r = p - y
    a = xp.abs(r)
    return xp.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))


def _huber_grad(p, y, o, xp):
    d = o["delta"]
    return xp.clip(p - y, -d, d)


def _huber_hess(p, y, o, xp):
    r = p - y
    return nan_where(r, xp.astype(xp.abs(r) <= o["delta"], p.dtype), xp=xp)


def _huber_value_and_grad(p, y, o, xp):
    d = o["delta"]
    r = p - y
    a = xp.abs(r)
    return xp.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d)), xp.clip(r, -d, d)


huber = declare(
    name="huber",
    family="regression",
    kind=ELEMENTWISE,
    formula=r"\ell(p, y) = \begin{cases} \tfrac12 r^2 & |r| \le \delta \\ \delta (|r| - \tfrac12 \delta) & \text{otherwise} \end{cases},\ r = p - y",
    gradient=r"\partial_p \ell = \operatorname{clip}(r, -\delta, \delta)",
    hessian=r"\partial_p^2 \ell = \mathbb{1}[|r| \le \delta]",
    domain="p, y real; delta > 0",
    reference="Huber, Robust Estimation of a Location Parameter, Ann. Math. Statist. 35 (1964)",
    use_when="Regression with outliers: quadratic near zero, linear beyond delta; bounded gradient.",
    value=_huber_value,
    grad=_huber_grad,
    hess=_huber_hess,
    value_and_grad=_huber_value_and_grad,
    options={"delta": Option(1.0, "number", low=0.0, low_open=True)},
    doc=r"""Huber loss.

.. math::
    \ell(p, y) = \begin{cases} \tfrac12 r^2 & |r| \le \delta \\
                 \delta\,(|r| - \tfrac12\delta) & |r| > \delta \end{cases}, \quad r = p - y

.. math:: \partial_p\ell = \operatorname{clip}(r, -\delta, \delta), \qquad \partial_p^2\ell = \mathbb{1}[|r| \le \delta]

Equals ``torch.nn.functional.huber_loss(pred, target, delta=delta)`` and ``optax.huber_loss``.
Not ``smooth_l1`` (which divides by delta). Use it for regression with outliers: squared error
for small residuals, absolute error (gradient capped at delta) for large ones. ``delta`` must
be > 0.

Reference: P. J. Huber, "Robust Estimation of a Location Parameter", *Ann. Math. Statist.* 35 (1964).

Example:
    >>> import numpy as np, losskit as lk
    >>> float(lk.huber(np.array([0.5, 3.0]), np.array([0.0, 0.0]), delta=1.0))
    1.3125
""",
)
