"""Robust regression losses on the residual r = pred − target: smooth L1, pseudo-Huber and the
quantile (pinball) loss, with one or several quantile levels."""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import compute_dtype, nan_where
from .._loss import ELEMENTWISE, Checks, Option, Peer, Prepared, declare
from .._spec import peer_reduction


def _sign(r, xp):
    """sign(r), 0 at r = 0, NaN propagated (without a boolean-mask assignment)."""
    return nan_where(r, xp.astype(r > 0, r.dtype) - xp.astype(r < 0, r.dtype), xp=xp)


def _sample(rng, shape, o):
    return rng.standard_normal(shape) * 2, rng.standard_normal(shape) * 2


def _edges(o):
    big = np.array([1e4, -1e4, 0.0, 3.0])
    return big, -big * np.array([1.0, 1.0, 1.0, -1.0])


def _at_target(y, o):
    return y, np.zeros_like(y)


def _per_sample(fn, p, y):
    """A peer that only reduces, evaluated one sample at a time (per-sample values)."""
    return np.array([fn(np.array([a]), np.array([b])) for a, b in zip(p.ravel(), y.ravel())], dtype=np.float64).reshape(p.shape)


def _sorted_cumulative(y, w, xp):
    flat = xp.reshape(y, (-1,))
    ws = xp.ones_like(flat) if w is None else xp.reshape(xp.astype(w, flat.dtype), (-1,))
    order = xp.argsort(flat)
    return xp.take(flat, order), xp.cumulative_sum(xp.take(ws, order))


def weighted_quantile(y, w, tau: float, xp):
    """The weighted τ-quantile: the smallest y whose cumulative weight reaches τ of the total
    (a minimiser of Σ w·pinball_τ; the weighted median at τ = ½)."""
    ys, cw = _sorted_cumulative(y, w, xp)
    k = xp.sum(xp.astype(cw < tau * cw[-1], xp.int64))
    return ys[int(k)]


def monotone_root(y, w, slope, xp, steps: int = 200):
    """The constant c minimising Σ w·ℓ(c − y) for a convex ℓ whose derivative ``slope(r)`` is
    non-decreasing and changes sign at r = 0: the root of Σ w·slope(c − y), by bisection on
    [min y, max y] (where the root lies) down to adjacent floats."""
    flat = xp.reshape(y, (-1,))
    ws = xp.ones_like(flat) if w is None else xp.reshape(xp.astype(w, flat.dtype), (-1,))
    lo, hi = xp.min(flat), xp.max(flat)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        up = xp.sum(ws * slope(mid - flat)) > 0
        lo, hi = xp.where(up, lo, mid), xp.where(up, mid, hi)
    return 0.5 * (lo + hi)


def huber_location(y, w, beta: float, xp):
    """Huber's location estimate: the optimal constant of ``huber`` and ``smooth_l1``."""
    return monotone_root(y, w, lambda r: xp.clip(r / beta, -1.0, 1.0), xp)


def _torch_peer(fn_name):
    def fn(p, y, reduction, **o):
        import torch
        import torch.nn.functional as F

        return getattr(F, fn_name)(torch.as_tensor(p), torch.as_tensor(y), reduction=reduction, **o).numpy()

    return fn


# --- smooth_l1 ---------------------------------------------------------------------------


def _sl1_value(p, y, o, xp):
    b = o["beta"]
    r = p - y
    a = xp.abs(r)
    if b == 0:
        return a
    return xp.where(a < b, (0.5 / b) * r * r, a - 0.5 * b)


def _sl1_grad(p, y, o, xp):
    b = o["beta"]
    r = p - y
    return _sign(r, xp) if b == 0 else xp.clip(r / b, -1.0, 1.0)


def _sl1_hess(p, y, o, xp):
    b = o["beta"]
    r = p - y
    if b == 0:
        return nan_where(r, xp.zeros_like(r), xp=xp)
    return nan_where(r, xp.astype(xp.abs(r) < b, r.dtype) / b, xp=xp)


def _sl1_baseline(y, w, o, xp):
    b = o["beta"]
    return weighted_quantile(y, w, 0.5, xp) if b == 0 else huber_location(y, w, b, xp)


smooth_l1 = declare(
    name="smooth_l1",
    family="regression",
    kind=ELEMENTWISE,
    title="Smooth L1 loss (Huber divided by beta).",
    formula=r"\ell(p, y) = \begin{cases} \tfrac{1}{2\beta} r^2 & |r| < \beta \\ |r| - \tfrac12 \beta & \text{otherwise} \end{cases},\ r = p - y",
    gradient=r"\partial_p \ell = \operatorname{clip}(r / \beta, -1, 1) \quad (\operatorname{sign}(r) \text{ at } \beta = 0)",
    hessian=r"\partial_p^2 \ell = \mathbb{1}[|r| < \beta] / \beta \quad (0 \text{ at } \beta = 0)",
    hessian_kind="piecewise",
    hessian_kind_for=lambda o: "zero" if o["beta"] == 0 else "piecewise",
    domain="p, y real; beta >= 0 (beta = 0 is mae)",
    reference='R. Girshick, "Fast R-CNN", ICCV 2015 (smooth L1); torch.nn.functional.smooth_l1_loss',
    use_when="Box regression and other regression with outliers where the gradient should be capped at 1 whatever beta.",
    details="""
        smooth_l1 = huber(delta=beta) / beta: the gradient is capped at 1 (Huber's at delta),
        and the quadratic zone shrinks with beta. ``beta=0`` is exactly ``mae`` (value,
        subgradient 0 at r = 0, and a zero Hessian: ``hessian_kind_for(beta=0) == "zero"``).
        Equals ``torch.nn.functional.smooth_l1_loss(beta=beta)``. Optimal constant: the
        (weighted) median at beta = 0, otherwise Huber's location estimate (found by
        bisection on the monotone gradient sum).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> float(lk.smooth_l1(np.array([0.5, 3.0]), np.array([0.0, 0.0]), beta=1.0))
        1.3125
        >>> lk.smooth_l1.hessian_kind_for(beta=0.0)
        'zero'
    """,
    value=_sl1_value,
    grad=_sl1_grad,
    hess=_sl1_hess,
    options={"beta": Option(1.0, "number", low=0.0, doc="where the loss turns from quadratic to linear (0: mae)")},
    baseline=_sl1_baseline,
    checks=Checks(
        sample=_sample,
        option_sets=({}, {"beta": 0.5}, {"beta": 0.0}, {"beta": 2.5}),
        edges=_edges,
        kinks=lambda p, y, beta=1.0: (np.abs(np.abs(p - y) - beta) < 1e-2) | (np.abs(p - y) < 1e-2),
        minimum=_at_target,
        peers=(Peer("torch.nn.functional.smooth_l1_loss", _torch_peer("smooth_l1_loss"), requires="torch", options=("beta",)),),
    ),
)

# --- pseudo_huber ------------------------------------------------------------------------


def _ph_parts(p, y, o, xp):
    d = o["delta"]
    x = (p - y) / d
    s = xp.sqrt(1.0 + x * x)
    return d, x, s


def _ph_value(p, y, o, xp):
    d, x, s = _ph_parts(p, y, o, xp)
    a = xp.abs(x)
    # δ²(√(1+x²) − 1) = δ²|x|·|x|/(√(1+x²) + 1): no cancellation for small x
    return (d * d) * a * (a / (s + 1.0))


def _ph_grad(p, y, o, xp):
    d, x, s = _ph_parts(p, y, o, xp)
    return d * (x / s)


def _ph_hess(p, y, o, xp):
    d, x, s = _ph_parts(p, y, o, xp)
    return 1.0 / (s * s * s)


def _mpmath_pseudo_huber(p, y, reduction, delta=1.0):
    import mpmath

    with mpmath.workdps(50):
        d = mpmath.mpf(delta)
        per = np.array(
            [float(d * d * (mpmath.sqrt(1 + ((mpmath.mpf(a) - mpmath.mpf(b)) / d) ** 2) - 1)) for a, b in zip(p.ravel(), y.ravel())]
        ).reshape(p.shape)
    return peer_reduction(per, reduction)


pseudo_huber = declare(
    name="pseudo_huber",
    family="regression",
    kind=ELEMENTWISE,
    title="Pseudo-Huber loss.",
    formula=r"\ell(p, y) = \delta^2 \left(\sqrt{1 + (r/\delta)^2} - 1\right),\ r = p - y",
    gradient=r"\partial_p \ell = \frac{r}{\sqrt{1 + (r/\delta)^2}}",
    hessian=r"\partial_p^2 \ell = \left(1 + (r/\delta)^2\right)^{-3/2}",
    domain="p, y real; delta > 0",
    reference="Charbonnier et al., \"Deterministic edge-preserving regularization in computed imaging\", IEEE TIP 6 (1997); Hartley & Zisserman, *Multiple View Geometry* (2003), A6.8",
    use_when="Regression with outliers where a Newton method (gradient boosting) needs a positive Hessian everywhere.",
    details="""
        About r²/2 for small residuals and delta·(abs(r) − delta) for large ones: a smooth
        Huber, twice differentiable everywhere with a positive Hessian, which is why
        XGBoost's ``reg:pseudohubererror`` (``huber_slope`` = delta) uses it. Written as
        delta²·x²/(√(1 + x²) + 1), x = r/delta, which keeps full relative precision for tiny
        residuals. The peer is the formula itself at 50 digits (mpmath). The optimal
        constant has no closed form: ``baseline`` finds the root of the summed gradient by
        bisection.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.pseudo_huber(np.array([0.0, 3.0]), np.array([0.0, 0.0]), delta=1.0)), 6)
        1.081139
    """,
    value=_ph_value,
    grad=_ph_grad,
    hess=_ph_hess,
    options={"delta": Option(1.0, "number", low=0.0, low_open=True, doc="scale where the loss turns from quadratic to linear")},
    baseline=lambda y, w, o, xp: monotone_root(y, w, lambda r: r / xp.sqrt(1.0 + (r / o["delta"]) ** 2), xp),
    checks=Checks(
        sample=_sample,
        option_sets=({}, {"delta": 0.5}, {"delta": 3.0}),
        edges=_edges,
        minimum=_at_target,
        peers=(Peer("mpmath δ²(√(1 + (r/δ)²) − 1) at 50 digits", _mpmath_pseudo_huber, requires="mpmath", options=("delta",), rtol=1e-13),),
    ),
)

# --- quantile ----------------------------------------------------------------------------


def _levels(o):
    q = o["quantile"]
    return q if isinstance(q, tuple) else None


def _pinball_parts(p, y, tau, xp):
    """(pinball value, its derivative in p) for one level: r' = y − p."""
    r = y - p
    value = xp.maximum(tau * r, (tau - 1.0) * r)
    grad = (1.0 - tau) * xp.astype(r < 0, r.dtype) - tau * xp.astype(r > 0, r.dtype)
    return value, nan_where(r, grad, xp=xp)


def _q_value(p, y, o, xp):
    levels = _levels(o)
    if levels is None:
        return _pinball_parts(p, y, o["quantile"], xp)[0]
    total = None
    for k, tau in enumerate(levels):
        v = _pinball_parts(p[..., k], y, tau, xp)[0]
        total = v if total is None else total + v
    return total / len(levels)


def _q_grad(p, y, o, xp):
    levels = _levels(o)
    if levels is None:
        return _pinball_parts(p, y, o["quantile"], xp)[1]
    return xp.stack([_pinball_parts(p[..., k], y, tau, xp)[1] for k, tau in enumerate(levels)], axis=-1) / len(levels)


def _q_hess(p, y, o, xp):
    yy = y if _levels(o) is None else y[..., None]
    return nan_where(p - yy, xp.zeros_like(p), xp=xp)


def _q_check(o, loss):
    q = o["quantile"]
    if isinstance(q, (bool, str)) or q is None:
        raise TypeError(f"{loss}: `quantile` must be a number in (0, 1) or a sequence of them, got {q!r}.")
    if isinstance(q, (list, tuple)) or (hasattr(q, "shape") and len(getattr(q, "shape", ())) == 1):
        levels = tuple(_validate.check_number(v, "quantile", loss) for v in (q.tolist() if hasattr(q, "tolist") else q))
        if not levels:
            raise ValueError(f"{loss}: `quantile` must hold at least one level.")
        for v in levels:
            if not 0.0 < v < 1.0:
                raise ValueError(f"{loss}: `quantile` levels must be in (0, 1), got {v!r}.")
        if any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(f"{loss}: `quantile` levels must be strictly increasing (sorted, no repeats), got {levels!r}.")
        o["quantile"] = levels
        return
    v = _validate.check_number(q, "quantile", loss)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{loss}: `quantile` must be in (0, 1), got {v!r}.")
    o["quantile"] = v


def _q_prepare(pred, target, o, xp, validate, loss, mask=None):
    levels = _levels(o)
    dt = compute_dtype(pred.dtype, xp)
    target = target if target.dtype == dt else xp.astype(target, dt)
    if levels is None:
        _validate.check_same_shape(pred, target, "pred", "target", loss)
        return Prepared(pred, target, tuple(pred.shape))
    if pred.ndim == 0 or pred.shape[-1] != len(levels):
        raise ValueError(
            f"{loss}: with {len(levels)} quantile levels `pred` needs a trailing axis of size {len(levels)} "
            f"(one prediction per level), got pred {tuple(pred.shape)}."
        )
    if tuple(target.shape) != tuple(pred.shape[:-1]):
        raise ValueError(
            f"{loss}: with several quantile levels `target` must have pred.shape[:-1] = {tuple(pred.shape[:-1])}, "
            f"got target {tuple(target.shape)}."
        )
    return Prepared(pred, target, tuple(pred.shape[:-1]))


def _q_baseline(y, w, o, xp):
    levels = _levels(o)
    if levels is None:
        return weighted_quantile(y, w, o["quantile"], xp)
    return xp.stack([weighted_quantile(y, w, tau, xp) for tau in levels])


def _q_sample(rng, shape, o):
    q = o.get("quantile", 0.5)
    if isinstance(q, tuple):
        y = rng.standard_normal(shape) * 2
        return y[..., None] + rng.standard_normal(shape + (len(q),)) * 2, y
    return _sample(rng, shape, o)


def _q_kinks(p, y, quantile=0.5):
    yy = y[..., None] if isinstance(quantile, tuple) else y
    return np.abs(p - yy) < 1e-2


def _q_minimum(y, o):
    q = o.get("quantile", 0.5)
    if isinstance(q, tuple):
        return np.repeat(y[..., None], len(q), axis=-1), np.zeros_like(y)
    return y, np.zeros_like(y)


def _q_edges(o):
    q = o.get("quantile", 0.5)
    p, y = _edges(o)
    if isinstance(q, tuple):
        return np.stack([p + k for k in range(len(q))], axis=-1), y
    return p, y


def _sklearn_pinball(p, y, reduction, quantile=0.5):
    from sklearn.metrics import mean_pinball_loss

    if isinstance(quantile, tuple):
        per = np.mean([_per_sample(lambda a, b, t=t: mean_pinball_loss(b, a, alpha=t), p[..., k], y) for k, t in enumerate(quantile)], axis=0)
    else:
        per = _per_sample(lambda a, b: mean_pinball_loss(b, a, alpha=quantile), p, y)
    return peer_reduction(per, reduction)


quantile = declare(
    name="quantile",
    family="regression",
    kind=ELEMENTWISE,
    title="Quantile (pinball) loss, for one level or several at once.",
    formula=r"\ell(p, y) = \max(\tau r', (\tau - 1) r'),\ r' = y - p \quad (\text{several levels: } \tfrac1Q \textstyle\sum_k \ell_{\tau_k}(p_k, y))",
    gradient=r"\partial_p \ell = \begin{cases} -\tau & p < y \\ 1 - \tau & p > y \\ 0 & p = y \end{cases}",
    hessian=r"\partial_p^2 \ell = 0",
    hessian_kind="zero",
    domain="p, y real; quantile in (0, 1), or a strictly increasing sequence of levels in (0, 1)",
    reference="Koenker & Bassett, \"Regression Quantiles\", *Econometrica* 46 (1978); sklearn.metrics.mean_pinball_loss",
    use_when="Predicting a conditional quantile (a prediction interval from two levels), robust to outliers.",
    details="""
        With one level tau, the minimiser is the conditional tau-quantile (tau = 0.5 is half of
        ``mae``). Equals ``sklearn.metrics.mean_pinball_loss(y, p, alpha=tau)``.

        Several levels: ``quantile=(0.1, 0.5, 0.9)`` takes ``pred`` with a trailing axis of
        size Q (one prediction per level, in the order of the levels) and ``target`` of shape
        ``pred.shape[:-1]``; the per-sample loss is the mean over the Q levels (so ``weight``
        and ``mask`` have the target's shape), and one level in a sequence gives the scalar
        loss. Levels must lie in (0, 1) and be strictly increasing. Predictions are never
        sorted: if the model's 0.9-prediction falls below its 0.5-prediction (crossing
        quantiles), each level is still scored against its own tau, which is what a proper
        scoring rule does; sort the predictions afterwards (rearrangement, Chernozhukov et
        al. 2010) or penalise crossings if you need monotone bands. The Hessian is zero, so
        Newton-type boosting needs a surrogate. Optimal constant: the weighted tau-quantile
        of the target (one per level).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> float(lk.quantile(np.array([1.0, 3.0]), np.array([2.0, 2.0]), quantile=0.9))
        0.5
        >>> float(lk.quantile(np.array([[1.0, 2.0, 3.0]]), np.array([2.0]), quantile=(0.1, 0.5, 0.9)))
        0.06666666666666667
    """,
    value=_q_value,
    grad=_q_grad,
    hess=_q_hess,
    options={"quantile": Option(0.5, "any", doc="the level tau in (0, 1), or a sorted sequence of levels (one prediction each along the last axis)")},
    check=_q_check,
    prepare=_q_prepare,
    reduces_axis=lambda o: isinstance(o.get("quantile"), tuple),
    baseline=_q_baseline,
    checks=Checks(
        sample=_q_sample,
        option_sets=({}, {"quantile": (0.1, 0.5, 0.9)}, {"quantile": (0.25,)}, {"quantile": 0.1}, {"quantile": 0.9}),
        edges=_q_edges,
        kinks=_q_kinks,
        minimum=_q_minimum,
        peers=(Peer("sklearn.metrics.mean_pinball_loss", _sklearn_pinball, requires="sklearn", options=("quantile",)),),
    ),
)
