"""Divergences between a target distribution and the model's softmax."""

from __future__ import annotations

import numpy as np

from .._loss import CLASS_AXIS, Checks, Option, Peer, declare
from . import _softmax


def _kl_parts(t, o, xp):
    """(target probabilities, Σ_k t_k log t_k) with 0·log 0 = 0."""
    if o["log_target"]:
        prob = xp.exp(t)
        log_prob = xp.where(prob == 0, xp.zeros_like(t), t)
    else:
        prob = t
        log_prob = xp.log(xp.where(t > 0, t, xp.ones_like(t)))
    return prob, xp.sum(prob * log_prob, axis=-1)


def _kl_value(z, t, o, xp):
    prob, neg_entropy = _kl_parts(t, o, xp)
    return neg_entropy + _softmax.weighted_nll(z, prob, xp)


def _kl_grad(z, t, o, xp):
    return _softmax.weighted_nll_grad(z, _kl_parts(t, o, xp)[0], xp)


def _kl_hess(z, t, o, xp):
    return _softmax.weighted_nll_hess(z, _kl_parts(t, o, xp)[0], xp)


def _kl_value_and_grad(z, t, o, xp):
    prob, neg_entropy = _kl_parts(t, o, xp)
    lse = _softmax.lse_parts(z, xp)
    return neg_entropy + _softmax.weighted_nll(z, prob, xp, lse), _softmax.weighted_nll_grad(z, prob, xp, lse)


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
    options={"axis": Option(-1, "int", doc="the class axis"), "log_target": Option(False, "bool", doc="the target holds log-probabilities")},
    prepare=_softmax.prepare_dense_target,
    inputs=("logits",),
    baseline=lambda t, w, o, xp: _mean_distribution_logits(t, w, o, xp),
    checks=Checks(
        sample=_sample_kl,
        shape=(7, 5),
        option_sets=({}, {"log_target": True}),
        edges=_edges_kl,
        minimum=_minimum_kl,
        shift_invariant=True,
        peers=(Peer("torch.nn.functional.kl_div(log_softmax(z))", _torch_kl, requires="torch", options=("axis", "log_target")),),
    ),
)


def _mean_distribution_logits(t, w, o, xp):
    prob = xp.exp(t) if o.get("log_target") else t
    q = prob if w is None else prob * w[..., None]
    mean = xp.sum(xp.reshape(q, (-1, t.shape[-1])), axis=0)
    return xp.log(mean / xp.sum(mean))
