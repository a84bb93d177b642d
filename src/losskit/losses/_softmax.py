"""Softmax-family math shared by cross-entropy, KL divergence and their relatives.

Every softmax loss here is written as a cross-entropy against an *effective target weight*
vector q (per class, non-negative) plus terms that do not depend on the logits z:

    ℓ = Σ_k q_k (LSE(z) − z_k),   ∂ℓ/∂z = (Σq)·softmax(z) − q,   ∂²ℓ/∂z_k² = (Σq)·p_k(1 − p_k)

LSE(z) − z_k is computed as (max − z_k) + log1p(Σ_{j≠argmax} e^{z_j − max}), two
non-negative terms, so confident right predictions keep their tiny losses to full relative
precision. Classes with q_k = 0 contribute nothing, even where z_k = −inf (action masks), so rows with
impossible classes stay finite. The class axis is the last one here; ``prepare`` moves it.
"""

from __future__ import annotations

from .. import _validate
from .._array import backend, logsumexp_split, softmax
from .._loss import Prepared, upcast_target


def lse_parts(z, xp):
    """LSE(z) as ``(max, rest)`` (see ``_array.logsumexp_split``): the form every kernel here
    uses, so that LSE(z) − z_k is a sum of two non-negative terms."""
    return logsumexp_split(z, xp=xp)


def _gap(z, lse):
    """LSE(z) − z per class; ``lse`` is ``(max, rest)`` or a plain LSE array."""
    if isinstance(lse, tuple):
        m, rest = lse
        return (m[..., None] - z) + rest[..., None]
    return lse[..., None] - z


def weighted_nll(z, q, xp, lse=None):
    """Σ_k q_k (LSE(z) − z_k), with 0·∞ = 0."""
    gap = _gap(z, lse_parts(z, xp) if lse is None else lse)
    return xp.sum(q * xp.where(q == 0, xp.zeros_like(gap), gap), axis=-1)


def softmax_from_lse(z, lse, xp):
    return xp.exp(-_gap(z, lse))


def probabilities(z, xp, lse=None):
    """softmax(z) for the derivatives. The (max, rest) split keeps tiny *losses* exact, but
    buys nothing for p (see ``_array.softmax``): the backend's fused softmax where there is
    one, or exp(−gap) from an ``lse`` the caller already has (NumPy: one pass less)."""
    if lse is not None and backend(xp) not in ("torch", "jax"):
        return softmax_from_lse(z, lse, xp)
    return softmax(z, xp=xp)


def weighted_nll_grad(z, q, xp, lse=None):
    p = probabilities(z, xp, lse)
    return xp.sum(q, axis=-1)[..., None] * p - q


def weighted_nll_hess(z, q, xp, lse=None):
    p = probabilities(z, xp, lse)
    return xp.sum(q, axis=-1)[..., None] * p * (1.0 - p)


def prepare_dense_target(pred, target, o, xp, validate, loss, mask=None, target_name="target"):
    """Logits and a target distribution of the same shape, class axis moved last; with
    ``validate``, each valid row of the target must be a distribution (``log_target``: a
    log-distribution), within a tolerance of √ε of the target's dtype."""
    axis = _validate.normalize_axis(o["axis"], pred.ndim, loss)
    _validate.check_classes(pred, axis, "logits", loss)
    _validate.check_same_shape(pred, target, "logits", target_name, loss)
    _validate.check_floating(target, target_name, loss, xp)
    tol = float(xp.finfo(target.dtype).eps) ** 0.5
    target = upcast_target(target, pred, xp)
    moved = axis != pred.ndim - 1
    if moved:
        pred, target = xp.moveaxis(pred, axis, -1), xp.moveaxis(target, axis, -1)
    if validate:
        log = bool(o.get("log_target", False))
        _validate.check_distribution(target, target_name, loss, xp, mask, log=log, tol=tol, flag="log_target" if "log_target" in o else None)
    return Prepared(pred, target, tuple(pred.shape[:-1]), axis=axis if moved else None)
