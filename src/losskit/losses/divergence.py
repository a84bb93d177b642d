"""Divergences between a target distribution and the model's softmax."""

from __future__ import annotations

from .._loss import CLASS_AXIS, Option, declare
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


kl_divergence = declare(
    name="kl_divergence",
    family="divergence",
    kind=CLASS_AXIS,
    formula=r"\ell(z, t) = \sum_k t_k (\log t_k - \log \operatorname{softmax}(z)_k)",
    gradient=r"\partial_z \ell = (\textstyle\sum_k t_k)\operatorname{softmax}(z) - t",
    hessian=r"\partial_{z_k}^2 \ell = (\textstyle\sum_k t_k)\, p_k (1 - p_k)",
    domain="logits real or -inf where t = 0; target probabilities (or log-probabilities with log_target=True)",
    reference="Kullback & Leibler, On Information and Sufficiency, Ann. Math. Statist. 22 (1951); Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network (2015)",
    use_when="Matching a target distribution (distillation, soft labels); zero when softmax(z) equals t.",
    value=_kl_value,
    grad=_kl_grad,
    hess=_kl_hess,
    value_and_grad=_kl_value_and_grad,
    options={"axis": Option(-1, "int"), "log_target": Option(False, "bool")},
    prepare=_softmax.prepare_dense_target,
    pred_name="logits",
    doc=r"""Kullback–Leibler divergence KL(target ‖ softmax(logits)).

.. math:: \ell(z, t) = \sum_k t_k\,(\log t_k - \log\operatorname{softmax}(z)_k), \qquad
          \partial_z\ell = (\textstyle\sum_k t_k)\operatorname{softmax}(z) - t

Hessian diagonal: (Σt)·p_k(1 − p_k). 0·log 0 = 0 in value and gradient, so zero-probability
targets are fine even where the logit is −inf. With ``log_target=True`` the target is given as
log-probabilities. ``"mean"`` averages the per-sample KL (summed over the class axis) over
samples: the true KL, PyTorch's ``reduction="batchmean"`` for 2-D inputs (for more leading
axes PyTorch's batchmean divides by the first axis only; losskit by every sample).

Takes logits, not log-probabilities: ``lk.kl_divergence(z, t)`` equals
``F.kl_div(F.log_softmax(z, -1), t, reduction="batchmean")``.

Use it for knowledge distillation and for fitting soft targets; it differs from soft-target
cross-entropy only by the target entropy, a constant in z.

References: Kullback & Leibler, *Ann. Math. Statist.* 22 (1951); Hinton, Vinyals & Dean,
"Distilling the Knowledge in a Neural Network" (2015).

Example:
    >>> import numpy as np, losskit as lk
    >>> t = np.array([[0.5, 0.5, 0.0]])
    >>> round(float(lk.kl_divergence(np.log(np.array([[0.25, 0.5, 0.25]])), t)), 6)
    0.346574
""",
)
