"""Divergences between a target distribution and the model's softmax."""

from __future__ import annotations

import math

import numpy as np

from .._array import backend, torch_may_overwrite, xlogx, zero_where
from .._loss import CLASS_AXIS, Checks, Option, Peer, declare
from .._spec import peer_reduction
from . import _softmax


def _kl_parts(t, o, xp):
    """(target probabilities, Σ_k t_k log t_k) with 0·log 0 = 0."""
    if o["log_target"]:
        prob = xp.exp(t)
        log_prob = xp.where(prob == 0, xp.zeros_like(t), t)
    else:
        return t, xp.sum(xlogx(t, xp=xp), axis=-1)
    return prob, xp.sum(prob * log_prob, axis=-1)


def _reverse_parts(z, t, o, xp):
    """KL(Q ‖ t), Q = softmax(z): (Q, c = log Q − log t, value, gradient Q(c − value)); classes
    with Q = 0 contribute 0 (0·log 0 = 0) to the value and the gradient."""
    log_q = -_softmax._gap(z, _softmax.lse_parts(z, xp))
    q = xp.exp(log_q)
    if o["log_target"]:
        log_t = t
    else:
        pos = t > 0
        log_t = xp.where(pos, xp.log(xp.where(pos, t, xp.ones_like(t))), -xp.inf)
    zero = q == 0
    c = xp.where(zero, xp.zeros_like(q), xp.where(zero, xp.zeros_like(q), log_q) - xp.where(zero, xp.zeros_like(q), log_t))
    value = xp.sum(q * c, axis=-1)
    return q, c, value, q * (c - value[..., None])


def _kl_jax(z, t, o, want_grad):
    """Forward KL on JAX in the passes XLA's CPU compiler fuses (see
    ``_softmax.lse_split_jax``): the same per-class terms t_k·log t_k + t_k·((m − z_k) + r)
    (0 where t_k = 0) and gradient (Σt)·softmax(z) − t as the array-API path."""
    import jax.numpy as jnp

    anchor, exps, total, r = _softmax.lse_split_jax(z)
    prob = jnp.exp(t) if o["log_target"] else t
    log_prob = t if o["log_target"] else jnp.log(t)
    # one select around both terms: one N×C array written for the sum, not two
    terms = prob * log_prob + prob * ((anchor - z) + r)
    value = jnp.sum(jnp.where(prob == 0, jnp.zeros_like(terms), terms), axis=-1)
    if not want_grad:
        return value, None
    return value, jnp.sum(prob, axis=-1, keepdims=True) * (exps / total) - prob


def _kl_torch(z, t, want_value, want_grad):
    """Forward KL on torch (probability targets) in fewer ops than the array-API form (each
    op costs ~1.5-3 µs on a small batch), with the same split: d = z − m (m the row max),
    r = log1p(Σ_{k≠argmax} e^{d_k}) (other maxima counting 1 each, as in
    ``logsumexp_split``; the argmax comes with the max from ``torch.max``, the rest is the
    sum of e = e^d with that one entry zeroed), and

        ℓ = Σ_k [t_k log t_k − t_k d_k] + r·Σ_k t_k,   ∂ℓ/∂z = (Σt)·e/Σe − t,

    the terms 0 where t_k = 0 (also where the logit is −inf), so a one-hot target gives
    (m − z_y) + r, the tiny value of a confident right prediction to full precision. The
    shift is m itself: a row with a +inf logit gets the value of the split (inf, or NaN
    where t puts mass on that class) and a NaN gradient. In-place updates only where
    autograd records nothing (a double backward and ``torch.func`` transforms
    differentiate through this code)."""
    import torch

    m, top = torch.max(z, -1, keepdim=True)
    d = z - m
    e = torch.exp(d)
    value = grad = None
    mass = t.sum(-1)
    if want_value:
        r = torch.log1p(e.scatter(-1, top, 0.0).sum(-1))
        # t log t − t·d, with 0 where t = 0 (logical_not: t == 0 without a scalar operand;
        # NaN stays NaN): 0·log 0 = 0, and 0·(−d) = 0 also where d = −inf
        terms = torch.addcmul(torch.special.xlogy(t, t), t, d, value=-1).masked_fill_(torch.logical_not(t), 0.0)
        value = torch.addcmul(terms.sum(-1), r, mass)
    if want_grad:
        scale = (mass / e.sum(-1)).unsqueeze(-1)
        grad = e.mul_(scale).sub_(t) if torch_may_overwrite(z, t) else e * scale - t
    return value, grad


def _kl_value(z, t, o, xp):
    if o["reverse"]:
        return _reverse_parts(z, t, o, xp)[2]
    name = backend(xp)
    if name == "jax":
        return _kl_jax(z, t, o, False)[0]
    if name == "torch" and not o["log_target"]:
        return _kl_torch(z, t, True, False)[0]
    prob, neg_entropy = _kl_parts(t, o, xp)
    return neg_entropy + _softmax.weighted_nll(z, prob, xp)


def _kl_grad(z, t, o, xp):
    if o["reverse"]:
        return _reverse_parts(z, t, o, xp)[3]
    name = backend(xp)
    if name == "jax":
        return _kl_jax(z, t, o, True)[1]
    if name == "torch" and not o["log_target"]:
        return _kl_torch(z, t, False, True)[1]
    return _softmax.weighted_nll_grad(z, _kl_parts(t, o, xp)[0], xp)


def _kl_hess(z, t, o, xp):
    if o["reverse"]:
        q, c, value, g = _reverse_parts(z, t, o, xp)
        return q * (1.0 - q) * (c - value[..., None] + 1.0) - q * g
    return _softmax.weighted_nll_hess(z, _kl_parts(t, o, xp)[0], xp)


def _kl_value_and_grad(z, t, o, xp):
    if o["reverse"]:
        return _reverse_parts(z, t, o, xp)[2:]
    name = backend(xp)
    if name == "jax":
        return _kl_jax(z, t, o, True)
    if name == "torch" and not o["log_target"]:
        return _kl_torch(z, t, True, True)
    prob, neg_entropy = _kl_parts(t, o, xp)
    # the gap LSE(z) − z once, for the value and for softmax(z) = exp(−gap) (NumPy's
    # ``probabilities`` from an LSE; on torch two ops where its fused softmax costs ~3)
    gap = _softmax._gap(z, _softmax.lse_parts(z, xp, keepdims=True))
    value = neg_entropy + xp.sum(prob * zero_where(prob == 0, gap, xp=xp), axis=-1)
    return value, xp.sum(prob, axis=-1, keepdims=True) * xp.exp(-gap) - prob


def _sample_kl(rng, shape, o):
    z = rng.standard_normal(shape) * 2
    t = rng.random(shape) ** 2
    t = t / t.sum(axis=-1, keepdims=True)
    return z, (np.log(t) if o.get("log_target") else t)


def _edges_kl(o):
    inf = np.inf
    z = np.array([[1e4, -1e4, 0.0], [0.0, -inf, 2.0], [-1e4, 1e4, -inf]])
    t = np.array([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    if o.get("log_target"):
        with np.errstate(divide="ignore"):
            t = np.log(t)
    return z, t


def _minimum_kl(t, o):
    with np.errstate(divide="ignore"):
        z = t if o.get("log_target") else np.log(t)
    return z, np.zeros(t.shape[:-1])


def _torch_kl(z, t, reduction, axis=-1, log_target=False):
    """``F.kl_div`` on log-softmax, summed over the class axis; "mean" is the true KL
    (PyTorch's batchmean for 2-D inputs)."""
    import torch
    import torch.nn.functional as F

    z, t = torch.as_tensor(z), torch.as_tensor(t)
    per = F.kl_div(F.log_softmax(z, dim=axis), t, reduction="none", log_target=log_target).sum(axis)
    out = {"none": per, "sum": per.sum(), "mean": per.sum() / per.numel()}[reduction]
    return out.numpy()


def _torch_reverse_kl(z, t, reduction, axis=-1, log_target=False, reverse=False):
    """KL(softmax(z) ‖ t) as ``F.kl_div`` with the roles swapped: input log t, target log_softmax(z)."""
    if not reverse:
        return _torch_kl(z, t, reduction, axis=axis, log_target=log_target)
    import torch
    import torch.nn.functional as F

    z, t = torch.as_tensor(z), torch.as_tensor(t)
    log_t = t if log_target else torch.log(t)
    per = F.kl_div(log_t, F.log_softmax(z, dim=axis), reduction="none", log_target=True).sum(axis)
    out = {"none": per, "sum": per.sum(), "mean": per.sum() / per.numel()}[reduction]
    return out.numpy()


kl_divergence = declare(
    name="kl_divergence",
    family="divergence",
    kind=CLASS_AXIS,
    title="Kullback–Leibler divergence KL(target ‖ softmax(logits)).",
    formula=r"\ell(z, t) = \sum_k t_k (\log t_k - \log \operatorname{softmax}(z)_k)",
    gradient=r"\partial_z \ell = (\textstyle\sum_k t_k)\operatorname{softmax}(z) - t",
    hessian=r"\partial_{z_k}^2 \ell = (\textstyle\sum_k t_k)\, p_k (1 - p_k)",
    domain="logits real or -inf where t = 0; target probabilities (or log-probabilities with log_target=True)",
    reference=(
        "Kullback & Leibler, *Ann. Math. Statist.* 22 (1951); Hinton, Vinyals & Dean, "
        '"Distilling the Knowledge in a Neural Network" (2015)'
    ),
    use_when="Matching a target distribution (distillation, soft labels); zero when softmax(z) equals t.",
    details="""
        0·log 0 = 0 in value and gradient, so zero-probability targets are fine even where the
        logit is −inf. With ``log_target=True`` the target is given as log-probabilities.
        ``"mean"`` averages the per-sample KL (summed over the class axis) over samples: the
        true KL, PyTorch's ``reduction="batchmean"`` for 2-D inputs (for more leading axes
        PyTorch's batchmean divides by the first axis only; losskit by every sample).

        Takes logits, not log-probabilities: ``lk.kl_divergence(z, t)`` equals
        ``F.kl_div(F.log_softmax(z, -1), t, reduction="batchmean")``. It differs from
        soft-target cross-entropy only by the target entropy, a constant in z. Optimal
        constant logits: the log of the mean target distribution.

        ``reverse=True`` gives KL(softmax(z) ‖ target) = Σ_k Q_k (log Q_k − log t_k), the
        mode-seeking direction used in distillation (Q the model): gradient
        Q_j (c_j − ℓ), c = log Q − log t, Hessian diagonal Q_j(1 − Q_j)(c_j − ℓ + 1) − Q_j g_j.
        It is +inf where the target is 0 on a class the model gives probability; classes the
        model gives exactly 0 (logit −inf, or underflow) contribute 0. Its optimal constant
        logits are the (weighted) mean of log t (the normalised geometric mean).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> t = np.array([[0.5, 0.5, 0.0]])
        >>> round(float(lk.kl_divergence(np.log(np.array([[0.25, 0.5, 0.25]])), t)), 6)
        0.346574
    """,
    value=_kl_value,
    grad=_kl_grad,
    hess=_kl_hess,
    value_and_grad=_kl_value_and_grad,
    options={
        "axis": Option(-1, "int", doc="the class axis"),
        "log_target": Option(False, "bool", doc="the target holds log-probabilities"),
        "reverse": Option(False, "bool", doc="KL(model ‖ target) instead of KL(target ‖ model)"),
    },
    prepare=_softmax.prepare_dense_target,
    inputs=("logits",),
    baseline=lambda t, w, o, xp: _mean_distribution_logits(t, w, o, xp),
    checks=Checks(
        sample=_sample_kl,
        shape=(7, 5),
        option_sets=({}, {"log_target": True}, {"reverse": True}, {"reverse": True, "log_target": True}),
        edges=_edges_kl,
        minimum=_minimum_kl,
        shift_invariant=True,
        peers=(
            Peer("torch.nn.functional.kl_div(log_softmax(z))", _torch_kl, requires="torch", options=("axis", "log_target")),
            Peer("torch.nn.functional.kl_div(log t, log_softmax(z), log_target=True)", _torch_reverse_kl, requires="torch",
                 options=("axis", "log_target", "reverse")),
        ),
    ),
)


def _mean_distribution_logits(t, w, o, xp):
    if o.get("reverse"):
        log_t = t if o.get("log_target") else xp.log(t)
        flat = xp.reshape(log_t, (-1, t.shape[-1]))
        if w is None:
            return xp.mean(flat, axis=0)
        wf = xp.reshape(w, (-1, 1))
        return xp.sum(wf * flat, axis=0) / xp.sum(wf)
    prob = xp.exp(t) if o.get("log_target") else t
    q = prob if w is None else prob * w[..., None]
    mean = xp.sum(xp.reshape(q, (-1, t.shape[-1])), axis=0)
    return xp.log(mean / xp.sum(mean))


# --- generalized Jensen–Shannon divergence (two differentiable inputs) ----------------------


def _js_parts(z, zt, o, xp):
    """Per class: (Q, P, log Q, log P, log M) with Q = softmax(z) the model, P = softmax(zt) the
    target and M = βP + (1 − β)Q, log M from the log-softmaxes (log-add-exp)."""
    b = o["beta"]
    log_q = -_softmax._gap(z, _softmax.lse_parts(z, xp))
    log_p = -_softmax._gap(zt, _softmax.lse_parts(zt, xp))
    q, p = xp.exp(log_q), xp.exp(log_p)
    if b == 0.0:
        log_m = log_q
    elif b == 1.0:
        log_m = log_p
    else:
        u, v = log_p + math.log(b), log_q + math.log(1.0 - b)
        hi, lo = xp.maximum(u, v), xp.minimum(u, v)
        log_m = xp.where(hi == -xp.inf, hi, hi + xp.log1p(xp.exp(lo - xp.where(hi == -xp.inf, xp.zeros_like(hi), hi))))
    return q, p, log_q, log_p, log_m


def _js_terms(z, zt, o, xp):
    b = o["beta"]
    q, p, log_q, log_p, log_m = _js_parts(z, zt, o, xp)
    zero = xp.zeros_like(q)
    qz, pz = q == 0, p == 0  # the -inf - (-inf) of impossible classes never evaluated
    a = xp.where(qz, zero, (1.0 - b) * (xp.where(qz, zero, log_q) - xp.where(qz, zero, log_m)))  # ∂JS/∂Q_k
    c = xp.where(pz, zero, b * (xp.where(pz, zero, log_p) - xp.where(pz, zero, log_m)))  # ∂JS/∂P_k
    return q, p, a, c, log_m


def _js_value(z, zt, o, xp):
    q, p, a, c, _ = _js_terms(z, zt, o, xp)
    v = xp.sum(p * c + q * a, axis=-1)
    return xp.maximum(v, xp.zeros_like(v))  # ≥ 0 (rounding of log M could give -1e-17 for P = Q)


def _js_grad(z, zt, o, xp):
    q, p, a, c, _ = _js_terms(z, zt, o, xp)
    return q * (a - xp.sum(q * a, axis=-1)[..., None]), p * (c - xp.sum(p * c, axis=-1)[..., None])


def _js_value_and_grad(z, zt, o, xp):
    q, p, a, c, _ = _js_terms(z, zt, o, xp)
    qa, pc = xp.sum(q * a, axis=-1)[..., None], xp.sum(p * c, axis=-1)[..., None]
    v = (qa + pc)[..., 0]
    return xp.maximum(v, xp.zeros_like(v)), (q * (a - qa), p * (c - pc))


def _js_hess(z, zt, o, xp):
    """H_jj = (1 − 2Q_j)(G_j + r_j) + Q_j² Σr for the model logits (P for the target logits),
    with r_k = β(1 − β)P_k Q_k / M_k and G the gradient."""
    b = o["beta"]
    q, p, log_q, log_p, log_m = _js_parts(z, zt, o, xp)
    _, _, a, c, _ = _js_terms(z, zt, o, xp)
    both = (q > 0) & (p > 0)
    zero = xp.zeros_like(q)
    expo = xp.where(both, log_p, zero) + xp.where(both, log_q, zero) - xp.where(both, log_m, zero)
    r = xp.where(both, b * (1.0 - b) * xp.exp(expo), zero)
    R = xp.sum(r, axis=-1)[..., None]
    gq = q * (a - xp.sum(q * a, axis=-1)[..., None])
    gp = p * (c - xp.sum(p * c, axis=-1)[..., None])
    return (1.0 - 2.0 * q) * (gq + r) + q * q * R, (1.0 - 2.0 * p) * (gp + r) + p * p * R


def _sample_js(rng, shape, o):
    return rng.standard_normal(shape) * 2, rng.standard_normal(shape) * 2


def _edges_js(o):
    inf = np.inf
    z = np.array([[1e4, -1e4, 0.0], [0.0, -inf, 2.0], [-1e4, 1e4, -inf]])
    zt = np.array([[-1e4, 1e4, 0.0], [0.0, 1.0, -inf], [-1e4, 1e4, -inf]])
    return z, zt


def _scipy_js(z, zt, reduction, axis=-1, beta=0.5):
    from scipy.special import rel_entr, softmax
    from scipy.spatial.distance import jensenshannon

    q, p = softmax(z, axis=axis), softmax(zt, axis=axis)
    if beta == 0.5:
        per = jensenshannon(p, q, axis=axis) ** 2
    else:
        m = beta * p + (1 - beta) * q
        per = beta * rel_entr(p, m).sum(axis) + (1 - beta) * rel_entr(q, m).sum(axis)
    return peer_reduction(per, reduction)


jensen_shannon = declare(
    name="jensen_shannon",
    family="divergence",
    kind=CLASS_AXIS,
    title="Generalized Jensen–Shannon divergence between softmax(target_logits) and softmax(logits).",
    formula=r"\ell(z, z') = \beta\,\mathrm{KL}(P \Vert M) + (1 - \beta)\,\mathrm{KL}(Q \Vert M),\ Q = \operatorname{softmax}(z),\ P = \operatorname{softmax}(z'),\ M = \beta P + (1 - \beta) Q",
    gradient=r"\partial_{z_j} \ell = Q_j (a_j - \textstyle\sum_k Q_k a_k),\ a = (1 - \beta)\log(Q / M);\quad \partial_{z'_j} \ell = P_j (c_j - \sum_k P_k c_k),\ c = \beta \log(P / M)",
    hessian=r"\partial_{z_j}^2 \ell = (1 - 2Q_j)(\partial_{z_j}\ell + r_j) + Q_j^2 \textstyle\sum_k r_k,\ r_k = \beta(1 - \beta) P_k Q_k / M_k \text{ (and the same with } P \text{ for } z')",
    domain="logits and target_logits real or -inf, of one shape; 0 <= beta <= 1",
    reference='Lin, "Divergence Measures Based on the Shannon Entropy", IEEE Trans. Inf. Theory 37 (1991); Liger-Kernel\'s generalized JSD (Hsu et al., 2024)',
    use_when="Distillation or consistency losses between two models' distributions, bounded and symmetric at β = ½.",
    details="""
        Both inputs are differentiable: ``.grad`` returns ``(d_logits, d_target_logits)``.
        P = softmax(target_logits) is the target (teacher), Q = softmax(logits) the model, as
        in Liger-Kernel's generalized JSD. At β = ½ it is the Jensen–Shannon divergence
        (natural log; ``scipy.spatial.distance.jensenshannon(p, q) ** 2``), symmetric in
        its two inputs, bounded by log 2 and 0 iff the distributions are equal. At β = 0 or
        β = 1, M equals Q or P and this formula gives 0 for every input (it does not tend to
        a KL divergence); use ``kl_divergence`` for those. log M is formed by log-add-exp of
        the two log-softmaxes, so −inf logits (classes impossible under one distribution)
        and ±1e4 stay finite.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> z, zt = np.log(np.array([[0.5, 0.5]])), np.log(np.array([[0.9, 0.1]]))
        >>> round(float(lk.jensen_shannon(z, zt)), 6)
        0.101749
    """,
    value=_js_value,
    grad=_js_grad,
    hess=_js_hess,
    value_and_grad=_js_value_and_grad,
    inputs=("logits", "target_logits"),
    target=None,
    options={
        "beta": Option(0.5, "number", low=0.0, high=1.0, doc="weight β of the target in M = βP + (1 − β)Q"),
        "axis": Option(-1, "int", doc="the class axis"),
    },
    checks=Checks(
        sample=_sample_js,
        shape=(6, 4),
        option_sets=({}, {"beta": 0.2}, {"beta": 0.9}),
        edges=_edges_js,
        shift_invariant=True,
        peers=(Peer("scipy.spatial.distance.jensenshannon(p, q)**2 (β = ½), else the formula on scipy.special.rel_entr", _scipy_js, requires="scipy", options=("axis", "beta")),),
    ),
)
