"""Log-link losses for counts and positive targets: Poisson negative log-likelihood, Gamma and
Tweedie deviances. The prediction is the log of the mean, z = log μ, and every formula is
written in z (no exp(z) that overflows where the loss is finite, exact at y = 0)."""

from __future__ import annotations

import math

import numpy as np

from .. import _validate
from .._array import finite_bound, nan_where
from .._loss import ELEMENTWISE, Checks, Option, Peer, declare
from .._spec import peer_reduction


def _log_weighted_mean(y, w, xp):
    m = xp.mean(y) if w is None else xp.sum(w * y) / xp.sum(w)
    return xp.log(m)


def _per_sample(fn, z, y):
    return np.array([fn(np.array([b]), np.exp(np.array([a]))) for a, b in zip(z.ravel(), y.ravel())], dtype=np.float64).reshape(z.shape)


def _expm1_ratio(u, c, xp):
    """expm1(−c·u)/c, which tends to −u as c → 0."""
    return -u if c == 0 else xp.expm1(-c * u) / c


# --- poisson_nll ---------------------------------------------------------------------------


def _stirling(y, xp):
    """y log y − y + ½ log(2πy) where y > 1, else 0 (torch's `full=True` term)."""
    big = y > 1
    ys = xp.where(big, y, xp.ones_like(y))
    return xp.where(big, ys * xp.log(ys) - ys + 0.5 * xp.log(2.0 * math.pi * ys), xp.zeros_like(y))


def _pois_value(z, y, o, xp):
    b = finite_bound(z.dtype, xp)
    v = xp.exp(z) - y * xp.clip(z, -b, b)  # z = −inf with y = 0 is a sure zero: exactly 0
    return v + _stirling(y, xp) if o["full"] else v


def _pois_grad(z, y, o, xp):
    return xp.exp(z) - y


def _pois_hess(z, y, o, xp):
    return nan_where(y, xp.exp(z), xp=xp)


def _pois_grad_and_hess(z, y, o, xp):
    e = xp.exp(z)
    return e - y, nan_where(y, e, xp=xp)


def _pois_check(z, y, o, xp, loss, valid):
    _validate.check_domain(y, "target", loss, xp, valid, low=0.0, hint="Poisson targets are counts (or rates) >= 0.")


def _sample_counts(rng, shape, o):
    y = rng.poisson(2.5, shape).astype(np.float64)
    if o.get("full"):  # the Stirling term (PyTorch's) jumps at y = 1: keep finite differences in y off it
        y = np.where(y == 1, 2.0, y)
    return rng.standard_normal(shape), y


def _edges_log(o):
    z = np.array([80.0, -80.0, 0.0, 30.0, -30.0, 1.0])
    return z, np.array([0.0, 3.0, 0.0, 1e3, 0.0, 2.0])


def _minimum_pois(y, o):
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log(y)
        v = np.where(y > 0, y - y * np.where(y > 0, z, 0.0), 0.0)
        if o.get("full"):
            ys = np.where(y > 1, y, 1.0)
            v = v + np.where(y > 1, ys * np.log(ys) - ys + 0.5 * np.log(2 * np.pi * ys), 0.0)
    return z, v


def _torch_poisson(z, y, reduction, full=False):
    import torch
    import torch.nn.functional as F

    return F.poisson_nll_loss(torch.as_tensor(z), torch.as_tensor(y), log_input=True, full=full, reduction=reduction).numpy()


poisson_nll = declare(
    name="poisson_nll",
    family="counts",
    kind=ELEMENTWISE,
    title="Poisson negative log-likelihood on the log-rate.",
    formula=r"\ell(z, y) = e^{z} - y z \;\left(+\ y \log y - y + \tfrac12 \log(2\pi y) \text{ for } y > 1 \text{ when full}\right)",
    gradient=r"\partial_z \ell = e^{z} - y",
    hessian=r"\partial_z^2 \ell = e^{z}",
    domain="log-rates z real (−inf allowed for y = 0); counts y >= 0 (not necessarily integers)",
    reference="McCullagh & Nelder, *Generalized Linear Models* (1989), §6.2; torch.nn.functional.poisson_nll_loss",
    use_when="Counts (events, visits, claims): a log-linear model of the mean with Poisson noise.",
    details="""
        The prediction is the log of the rate, z = log μ, as ``torch.nn.functional.
        poisson_nll_loss(log_input=True)``, which it equals for both values of ``full``. The
        log(y!) term is dropped (it does not depend on z); ``full=True`` adds PyTorch's
        Stirling approximation y log y − y + ½ log(2πy), only where y > 1 (as PyTorch does;
        it is not log(y!) for small y). Finite in value, gradient and Hessian for log-rates
        up to ±700 in float64 (±80 in float32); exact at y = 0, where z = −inf (rate 0) costs
        exactly 0. ``validate=True`` checks y >= 0. Optimal constant: the log of the
        (weighted) mean count.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.poisson_nll(np.log(np.array([2.0, 1.0])), np.array([2.0, 0.0]))), 6)
        0.806853
    """,
    value=_pois_value,
    grad=_pois_grad,
    hess=_pois_hess,
    grad_and_hess=_pois_grad_and_hess,
    inputs=("log_rate",),
    options={"full": Option(False, "bool", doc="add the Stirling term y log y − y + ½ log(2πy) for y > 1")},
    check_values=_pois_check,
    baseline=lambda y, w, o, xp: _log_weighted_mean(y, w, xp),
    checks=Checks(
        sample=_sample_counts,
        option_sets=({}, {"full": True}),
        edges=_edges_log,
        minimum=_minimum_pois,
        peers=(Peer("torch.nn.functional.poisson_nll_loss(log_input=True)", _torch_poisson, requires="torch", options=("full",)),),
    ),
)

# --- tweedie_deviance (gamma_deviance is power 2) ------------------------------------------


def _tw_value(z, y, p, xp):
    if p == 0:
        d = y - xp.exp(z)
        return d * d
    a, b = 1.0 - p, 2.0 - p
    zero = y == 0
    ys = y if p >= 2 else xp.where(zero, xp.ones_like(y), y)  # NaN targets stay NaN
    zz = z if p >= 2 else xp.where(zero, xp.zeros_like(z), z)  # y = 0 is handled below
    u = xp.log(ys) - zz  # log(y/μ)
    # 2 y^b [expm1(−b u)/b − expm1(−a u)/a]: the terms of the textbook form cancel exactly
    inner = 2.0 * (ys if b == 1 else ys**b) * (_expm1_ratio(u, b, xp) - _expm1_ratio(u, a, xp))
    if p >= 2:
        return inner
    at_zero = (2.0 / b) * xp.exp(b * z)  # y = 0: only μ^b / b remains
    return xp.where(zero, at_zero, inner)


def _tw_grad_and_hess(z, y, p, xp):
    if p == 0:
        e = xp.exp(z)
        return 2.0 * e * (e - y), 2.0 * e * (2.0 * e - y)
    a, b = 1.0 - p, 2.0 - p
    eb = xp.exp(b * z)
    ya = y * xp.exp(a * xp.where(y == 0, xp.zeros_like(z), z))  # 0 · e^{az} is 0 even where e^{az} overflows
    return 2.0 * (eb - ya), 2.0 * (b * eb - a * ya)


def _tw_check(o, loss):
    p = o["power"]
    if 0.0 < p < 1.0:
        raise ValueError(f"{loss}: `power` in (0, 1) has no Tweedie distribution; use 0 (normal), 1 (Poisson), (1, 2) (compound Poisson-gamma), 2 (gamma) or more, got {p!r}.")


def _tw_check_values(z, y, o, xp, loss, valid):
    p = o["power"]
    if p >= 2:
        _validate.check_domain(y, "target", loss, xp, valid, low=0.0, low_open=True, hint=f"Tweedie power {p:g} >= 2 needs targets > 0.")
    elif p >= 1:
        _validate.check_domain(y, "target", loss, xp, valid, low=0.0, hint=f"Tweedie power {p:g} in [1, 2) needs targets >= 0.")


def _sample_positive(rng, shape, o):
    y = rng.gamma(2.0, 0.75, shape) + 0.05
    if 1 <= o.get("power", 2.0) < 2:
        y = np.where(rng.random(shape) < 0.25, 0.0, y)
    return rng.standard_normal(shape) * 0.7 + 0.3, y


def _minimum_tw(y, o):
    p = o.get("power", 2.0)
    if p == 0:
        return None
    with np.errstate(divide="ignore"):
        return np.log(y), np.zeros_like(y)


def _edges_tw(o):
    p = o.get("power", 2.0)
    z = np.array([80.0, -80.0, 0.0, 30.0, -30.0, 1.0])
    if p >= 2:
        return (np.array([40.0, -40.0, 0.0, 30.0, -30.0, 1.0]) if p > 2 else z), np.array([2.0, 3.0, 1.0, 1e3, 1e-3, 2.0])
    if p == 0:
        return np.array([40.0, -80.0, 0.0, 30.0, -30.0, 1.0]), np.array([0.0, 3.0, -1.0, 1e3, 0.0, 2.0])
    return z, np.array([0.0, 3.0, 0.0, 1e3, 0.0, 2.0])


def _sklearn_tweedie(z, y, reduction, power=1.5):
    from sklearn.metrics import mean_tweedie_deviance

    return peer_reduction(_per_sample(lambda a, b: mean_tweedie_deviance(a, b, power=power), z, y), reduction)


def _sklearn_gamma(z, y, reduction):
    from sklearn.metrics import mean_gamma_deviance

    return peer_reduction(_per_sample(mean_gamma_deviance, z, y), reduction)


tweedie_deviance = declare(
    name="tweedie_deviance",
    family="counts",
    kind=ELEMENTWISE,
    title="Tweedie deviance on the log-mean.",
    formula=r"\ell(z, y) = 2\left(\frac{y^{2-p}}{(1-p)(2-p)} - \frac{y\,\mu^{1-p}}{1-p} + \frac{\mu^{2-p}}{2-p}\right),\ \mu = e^{z}",
    gradient=r"\partial_z \ell = 2\left(\mu^{2-p} - y\,\mu^{1-p}\right)",
    hessian=r"\partial_z^2 \ell = 2\left((2-p)\,\mu^{2-p} - (1-p)\,y\,\mu^{1-p}\right)",
    domain="log-means z real; power p = 0 (y real), 1 <= p < 2 (y >= 0) or p >= 2 (y > 0); p in (0, 1) is rejected",
    reference="Jørgensen, *The Theory of Dispersion Models* (1997); sklearn.metrics.mean_tweedie_deviance",
    use_when="Non-negative targets with a point mass at 0 and a skewed positive part (insurance claims, rainfall): 1 < power < 2.",
    details="""
        The unit deviance of the Tweedie family at μ = exp(z), with the limits power 0
        (squared error (y − μ)²), 1 (Poisson deviance 2(y log(y/μ) − y + μ)) and 2 (Gamma
        deviance, ``gamma_deviance``). Written as 2y^(2−p)[expm1(−(2−p)u)/(2−p) −
        expm1(−(1−p)u)/(1−p)] with u = log(y/μ), so the three textbook terms do not cancel
        near the minimum, and as 2μ^(2−p)/(2−p) at y = 0 (exact). Equals
        ``sklearn.metrics.mean_tweedie_deviance(y, exp(z), power=p)`` (the deviance, with
        its factor 2: twice the half-deviance of sklearn's GLM losses and LightGBM's
        objective). A power in (0, 1) is an error whatever ``validate`` says, since no
        distribution exists there; negative powers are not supported. ``validate=True``
        checks the target domain. Optimal constant: the log of the (weighted) mean target.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.tweedie_deviance(np.array([0.0, 0.5]), np.array([0.0, 2.0]), power=1.5)), 6)
        2.0264
    """,
    value=lambda z, y, o, xp: _tw_value(z, y, o["power"], xp),
    grad=lambda z, y, o, xp: _tw_grad_and_hess(z, y, o["power"], xp)[0],
    hess=lambda z, y, o, xp: _tw_grad_and_hess(z, y, o["power"], xp)[1],
    grad_and_hess=lambda z, y, o, xp: _tw_grad_and_hess(z, y, o["power"], xp),
    inputs=("log_mean",),
    options={"power": Option(1.5, "number", low=0.0, doc="the Tweedie power p: 0, or >= 1")},
    check=_tw_check,
    check_values=_tw_check_values,
    baseline=lambda y, w, o, xp: _log_weighted_mean(y, w, xp),
    checks=Checks(
        sample=_sample_positive,
        option_sets=({}, {"power": 0.0}, {"power": 1.0}, {"power": 1.2}, {"power": 2.0}, {"power": 3.0}),
        edges=_edges_tw,
        minimum=_minimum_tw,
        peers=(Peer("sklearn.metrics.mean_tweedie_deviance", _sklearn_tweedie, requires="sklearn", options=("power",)),),
    ),
)

gamma_deviance = declare(
    name="gamma_deviance",
    family="counts",
    kind=ELEMENTWISE,
    title="Gamma deviance on the log-mean.",
    formula=r"\ell(z, y) = 2\left(\log\frac{\mu}{y} + \frac{y}{\mu} - 1\right),\ \mu = e^{z}",
    gradient=r"\partial_z \ell = 2\left(1 - y e^{-z}\right)",
    hessian=r"\partial_z^2 \ell = 2 y e^{-z}",
    domain="log-means z real; targets y > 0",
    reference="McCullagh & Nelder, *Generalized Linear Models* (1989), §8.3; sklearn.metrics.mean_gamma_deviance",
    use_when="Positive, right-skewed targets whose spread grows with the mean (costs, durations): errors count relative to the mean.",
    details="""
        ``tweedie_deviance`` with power 2, written in u = log(y/μ) as 2(expm1(u) − u), which
        keeps its precision near the minimum and stays finite for log-means of ±700 in
        float64. Equals ``sklearn.metrics.mean_gamma_deviance(y, exp(z))`` (the deviance,
        with its factor 2). ``validate=True`` checks y > 0. Optimal constant: the log of the
        (weighted) mean target.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.gamma_deviance(np.log(np.array([1.0, 4.0])), np.array([2.0, 2.0]))), 6)
        0.5
    """,
    value=lambda z, y, o, xp: _tw_value(z, y, 2.0, xp),
    grad=lambda z, y, o, xp: _tw_grad_and_hess(z, y, 2.0, xp)[0],
    hess=lambda z, y, o, xp: _tw_grad_and_hess(z, y, 2.0, xp)[1],
    grad_and_hess=lambda z, y, o, xp: _tw_grad_and_hess(z, y, 2.0, xp),
    inputs=("log_mean",),
    check_values=lambda z, y, o, xp, loss, valid: _validate.check_domain(y, "target", loss, xp, valid, low=0.0, low_open=True, hint="Gamma targets must be positive."),
    baseline=lambda y, w, o, xp: _log_weighted_mean(y, w, xp),
    checks=Checks(
        sample=_sample_positive,
        edges=lambda o: _edges_tw({"power": 2.0}),
        minimum=_minimum_tw,
        peers=(Peer("sklearn.metrics.mean_gamma_deviance", _sklearn_gamma, requires="sklearn"),),
    ),
)
