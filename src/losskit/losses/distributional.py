"""Distributional regression: the prediction is a Gaussian N(mean, var) (or N(mean, std²)) and
the loss scores it against the observation. Mean, target and the spread are all
differentiable inputs, in PyTorch's order ``(mean, target, var)``."""

from __future__ import annotations

import math

import numpy as np

from .. import _validate
from .._array import nan_where
from .._loss import ELEMENTWISE, Checks, Option, Peer, declare
from .._spec import peer_reduction

_LOG_2PI = math.log(2.0 * math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(x, xp):
    """erf(x) with array-API calls only (the standard has no erf): 2/√π·e^{−x²}·Σ 2ⁿx^{2n+1}/(2n+1)!!,
    a series of positive terms (no cancellation), to within 2e-15 absolute; erf = ±1 past |x| = 6."""
    a = xp.clip(xp.abs(x), max=6.0)
    a2 = 2.0 * a * a
    t = a
    s = a
    for n in range(1, 100):
        t = t * a2 / (2 * n + 1)
        s = s + t
    v = xp.clip((2.0 * _INV_SQRT_PI) * xp.exp(-a * a) * s, max=1.0)
    return xp.where(x < 0, -v, v)


def _weighted_mean(y, w, xp):
    return xp.mean(y) if w is None else xp.sum(w * y) / xp.sum(w)


def _sample_gaussian(rng, shape, o):
    return rng.standard_normal(shape) * 2, rng.standard_normal(shape) * 2, rng.uniform(0.2, 3.0, shape)


# --- gaussian_nll --------------------------------------------------------------------------


def _gnll_value(m, y, v, o, xp):
    vc = xp.clip(v, min=o["eps"])
    r = m - y
    out = 0.5 * (xp.log(vc) + r * r / vc)
    return out + 0.5 * _LOG_2PI if o["full"] else out


def _gnll_grad(m, y, v, o, xp):
    eps = o["eps"]
    vc = xp.clip(v, min=eps)
    r = m - y
    dm = r / vc
    dv = 0.5 * (1.0 - r * r / vc) / vc
    dv = xp.where(v < eps, xp.zeros_like(dv), dv)  # the clamp is flat: zero gradient (NaN kept)
    return dm, -dm, dv


def _gnll_hess(m, y, v, o, xp):
    eps = o["eps"]
    vc = xp.clip(v, min=eps)
    r = m - y
    h = nan_where(r, 1.0 / vc, xp=xp)
    hv = (r * r / vc - 0.5) / (vc * vc)
    hv = xp.where(v < eps, xp.zeros_like(hv), hv)
    return h, h + 0.0, hv  # distinct arrays: each is scaled in place


def _gnll_check(m, y, v, o, xp, loss, valid):
    _validate.check_domain(v, "var", loss, xp, valid, low=0.0, hint="A variance cannot be negative (PyTorch raises too).")


def _torch_gnll(m, y, v, reduction, full=False, eps=1e-6):
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor
    return F.gaussian_nll_loss(t(m), t(y), t(v), full=full, eps=eps, reduction=reduction).numpy()


def _gnll_baseline(y, w, o, xp):
    m = _weighted_mean(y, w, xp)
    d = (y - m) * (y - m)
    return m, _weighted_mean(d, w, xp)


gaussian_nll = declare(
    name="gaussian_nll",
    family="regression",
    kind=ELEMENTWISE,
    title="Gaussian negative log-likelihood with a predicted variance.",
    formula=r"\ell(\mu, y, v) = \tfrac12\left(\log \tilde v + \frac{(\mu - y)^2}{\tilde v}\right) \left(+ \tfrac12\log 2\pi \text{ when full}\right),\ \tilde v = \max(v, \epsilon)",
    gradient=r"\partial_\mu \ell = -\partial_y \ell = \frac{\mu - y}{\tilde v},\ \partial_v \ell = \mathbb{1}[v \ge \epsilon]\,\frac{1}{2\tilde v}\left(1 - \frac{(\mu - y)^2}{\tilde v}\right)",
    hessian=r"\partial_\mu^2 \ell = \partial_y^2 \ell = \frac{1}{\tilde v},\ \partial_v^2 \ell = \mathbb{1}[v \ge \epsilon]\,\frac{1}{\tilde v^2}\left(\frac{(\mu - y)^2}{\tilde v} - \frac12\right)",
    domain="mean, target real; var >= 0 (clamped at eps > 0)",
    reference="Nix & Weigend, \"Estimating the mean and variance of the target probability distribution\", ICNN 1994; torch.nn.functional.gaussian_nll_loss",
    use_when="Heteroscedastic regression: the model predicts a mean and a variance per sample.",
    details="""
        Called as PyTorch's ``gaussian_nll_loss(input, target, var)``: ``lk.gaussian_nll(mean,
        target, var, full=False, eps=1e-6)`` (``var=`` may also be passed by name), all three arrays of one shape (no implicit
        broadcasting of a homoscedastic ``var``: broadcast it yourself). All three are
        differentiable: ``.grad`` returns ``(d_mean, d_target, d_var)``. The variance is
        clamped at ``eps`` for stability; where the clamp is active the loss does not depend
        on ``var``, so its gradient and Hessian in ``var`` are 0 (PyTorch clamps under
        ``no_grad`` and returns the unclamped formula's gradient at eps there; elsewhere the
        two agree). Equals ``torch.nn.functional.gaussian_nll_loss(full=, eps=)``. A
        negative ``var`` is a ValueError when ``validate=True`` (as in PyTorch). ``baseline``
        returns the optimal constant ``(mean, var)``: the weighted mean and variance.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.gaussian_nll(np.array([0.0, 1.0]), np.array([1.0, 1.0]), np.array([1.0, 2.0]))), 6)
        0.423287
        >>> [g.tolist() for g in lk.gaussian_nll.grad(np.array([0.0]), np.array([1.0]), np.array([2.0]))]
        [[-0.5], [0.5], [0.125]]
    """,
    value=_gnll_value,
    grad=_gnll_grad,
    hess=_gnll_hess,
    inputs=("mean", "target", "var"),
    target=None,
    options={
        "full": Option(False, "bool", doc="add the constant ½ log 2π"),
        "eps": Option(1e-6, "number", low=0.0, low_open=True, doc="the variance is clamped at eps"),
    },
    check_values=_gnll_check,
    baseline=_gnll_baseline,
    checks=Checks(
        sample=_sample_gaussian,
        option_sets=({}, {"full": True}, {"eps": 0.1, "full": True}),
        edges=lambda o: (np.array([1e4, -1e4, 0.0, 3.0]), np.array([-1e4, 1e4, 0.0, 3.0]), np.array([1e4, 0.0, 1e-8, 1.0])),
        peers=(Peer("torch.nn.functional.gaussian_nll_loss", _torch_gnll, requires="torch", options=("full", "eps")),),
    ),
)

# --- crps_gaussian ---------------------------------------------------------------------------


def _crps_parts(m, y, s, xp):
    z = (y - m) / s
    pdf = _INV_SQRT_2PI * xp.exp(-0.5 * z * z)
    return z, erf(z * (1.0 / math.sqrt(2.0)), xp), pdf


def _crps_value(m, y, s, o, xp):
    z, e, pdf = _crps_parts(m, y, s, xp)
    return s * (z * e + 2.0 * pdf - _INV_SQRT_PI)  # 2Φ(z) − 1 = erf(z/√2)


def _crps_grad(m, y, s, o, xp):
    z, e, pdf = _crps_parts(m, y, s, xp)
    return -e, e, 2.0 * pdf - _INV_SQRT_PI


def _crps_hess(m, y, s, o, xp):
    z, e, pdf = _crps_parts(m, y, s, xp)
    h = 2.0 * pdf / s
    return h, h + 0.0, h * z * z  # distinct arrays: each is scaled in place


def _crps_check(m, y, s, o, xp, loss, valid):
    _validate.check_domain(s, "std", loss, xp, valid, low=0.0, low_open=True, hint="A standard deviation must be positive.")


def _properscoring_crps(m, y, s, reduction):
    import properscoring

    return peer_reduction(np.asarray(properscoring.crps_gaussian(y, m, s), dtype=np.float64), reduction)


def _mpmath_crps(m, y, s, reduction):
    import mpmath

    def one(a, b, c):
        a, b, c = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(c)
        z = (b - a) / c
        return float(c * (z * mpmath.erf(z / mpmath.sqrt(2)) + 2 * mpmath.npdf(z) - 1 / mpmath.sqrt(mpmath.pi)))

    with mpmath.workdps(40):
        per = np.array([one(a, b, c) for a, b, c in zip(m.ravel(), y.ravel(), s.ravel())]).reshape(m.shape)
    return peer_reduction(per, reduction)


crps_gaussian = declare(
    name="crps_gaussian",
    family="regression",
    kind=ELEMENTWISE,
    title="Continuous ranked probability score of a Gaussian forecast.",
    formula=r"\ell(\mu, y, \sigma) = \sigma\left(z\,(2\Phi(z) - 1) + 2\varphi(z) - \tfrac{1}{\sqrt\pi}\right),\ z = \frac{y - \mu}{\sigma}",
    gradient=r"\partial_\mu \ell = -\partial_y \ell = 1 - 2\Phi(z),\ \partial_\sigma \ell = 2\varphi(z) - \tfrac{1}{\sqrt\pi}",
    hessian=r"\partial_\mu^2 \ell = \partial_y^2 \ell = \frac{2\varphi(z)}{\sigma},\ \partial_\sigma^2 \ell = \frac{2\varphi(z)\,z^2}{\sigma}",
    domain="mean, target real; std > 0",
    reference="Gneiting & Raftery, \"Strictly Proper Scoring Rules, Prediction, and Estimation\", *JASA* 102 (2007), eq. 21; properscoring.crps_gaussian",
    use_when="Probabilistic regression scored like mae (in the target's units), more robust to outliers than gaussian_nll.",
    details="""
        Called ``lk.crps_gaussian(mean, target, std)``, all three arrays of one shape and all
        three differentiable (``.grad`` returns ``(d_mean, d_target, d_std)``). It is the
        closed form of the integral of (F(x) − 1[x ≥ y])² over x for F = N(mean, std²);
        with std → 0 it tends to abs(y − mean). Unlike ``gaussian_nll`` it stays bounded by
        abs(y − mean) + std/√π for a wrong, over-confident forecast. erf is evaluated with
        array-API calls only (a positive series, 2e-15 absolute), so every backend runs the
        same formula. Equals ``properscoring.crps_gaussian(target, mean, std)`` (argument
        order: observation first). ``validate=True`` checks std > 0.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.crps_gaussian(np.array([0.0]), np.array([0.0]), np.array([1.0]))), 6)
        0.233695
    """,
    value=_crps_value,
    grad=_crps_grad,
    hess=_crps_hess,
    inputs=("mean", "target", "std"),
    target=None,
    check_values=_crps_check,
    checks=Checks(
        sample=_sample_gaussian,
        edges=lambda o: (np.array([1e4, -1e4, 0.0, 3.0]), np.array([-1e4, 1e4, 0.0, 3.0]), np.array([1e4, 1e-3, 1e-3, 1.0])),
        peers=(
            Peer("properscoring.crps_gaussian", _properscoring_crps, requires="properscoring"),
            Peer("mpmath Gneiting-Raftery formula at 40 digits", _mpmath_crps, requires="mpmath", rtol=1e-12),
        ),
    ),
)
