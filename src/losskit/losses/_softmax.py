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

import functools

from .. import _validate
from .._array import _device, backend, logsumexp_split, softmax, torch_may_overwrite, torch_scalar
from .._loss import Prepared, upcast_target


def lse_parts(z, xp, keepdims=False):
    """LSE(z) as ``(max, rest)`` (see ``_array.logsumexp_split``): the form every kernel here
    uses, so that LSE(z) − z_k is a sum of two non-negative terms. ``keepdims``: with the
    reduced axis kept (size 1), ready to broadcast against ``z``."""
    return logsumexp_split(z, xp=xp, keepdims=keepdims)


def _gap(z, lse):
    """LSE(z) − z per class; ``lse`` is ``(max, rest)`` (reduced axis dropped or kept) or a
    plain LSE array."""
    if isinstance(lse, tuple):
        m, rest = lse
        if m.ndim == z.ndim:
            return (m - z) + rest
        return (m[..., None] - z) + rest[..., None]
    return lse[..., None] - z


def weighted_nll(z, q, xp, lse=None):
    """Σ_k q_k (LSE(z) − z_k), with 0·∞ = 0."""
    gap = _gap(z, lse_parts(z, xp, keepdims=True) if lse is None else lse)
    return xp.sum(q * xp.where(q == 0, 0.0, gap), axis=-1)


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


def ids_nll(z, ids, xp, want_grad: bool):
    """``ids_nll_numpy`` in array-API ops, for torch and other backends (JAX has
    ``ids_nll_jax``): the exponentials once, the first maximum left out of the sum by index
    (the other maxima count 1 each, as in ``logsumexp_split``), no one-hot array in the value."""
    num_classes = z.shape[-1]
    classes = xp.arange(num_classes, device=_device(z))
    if backend(xp) == "torch":
        top = xp.argmax(z, axis=-1, keepdims=True)
    else:
        # the first maximum as a min-reduction: XLA's CPU argmax (a variadic reduce) runs
        # ~20x slower than max; a NaN row has no match and takes the last class (its m is NaN)
        m = xp.max(z, axis=-1, keepdims=True)
        top = xp.min(xp.where(z == m, classes, num_classes - 1), axis=-1, keepdims=True)
    m = xp.take_along_axis(z, top, axis=-1)
    shift = xp.where(xp.isfinite(m), m, 0.0)
    e = xp.exp(z - shift)
    is_top = classes == top
    rest = xp.sum(xp.where(is_top, 0.0, e), axis=-1, keepdims=True)
    z_y = xp.take_along_axis(z, ids[..., None], axis=-1)
    value = ((m - z_y) + xp.log1p(rest))[..., 0]
    if not want_grad:
        return value, None
    total = xp.exp(m - shift) + rest
    onehot = classes == ids[..., None]
    return value, e / total - xp.astype(onehot, z.dtype)


def ids_nll_torch(z, ids, want_grad: bool):
    """``ids_nll`` in torch's fused ops (each op costs ~1.5-3 µs on a small batch, so the
    count matters more than the passes): one ``log_softmax`` l, the softmax as exp(l) from
    the same pass, and the precise value without locating the argmax:

    * q = Σ_{k≠y} p_k, a sum of non-negative terms each accurate to a few ulps relative
      (the label's entry zeroed in p);
    * ℓ = −log1p(−q) where q < ½ (the label is the maximum, p_y > ½): the tiny loss of a
      confident right prediction to full relative precision, where −l_y = (m − z_y) − log S
      rounds log S = log(1 + rest) to multiples of ε;
    * ℓ = −l_y elsewhere: at least log 2, where −log1p(−q) would cancel (p_y tiny) and
      −l_y is accurate (its rounding is relative to max(|z_y − m|, log S) ≤ ℓ·(1 + ...)).

    The gradient is p − onehot(y) with the label's entry −q (not fl(p_y) − 1: exact to a
    few ulps of q). Non-finite rows as ``log_softmax``: −inf entries give p = 0 and a −inf
    label an infinite loss; a +inf or NaN logit makes its row NaN."""
    import torch

    lp = torch.log_softmax(z, -1)
    idx = ids.unsqueeze(-1)
    lp_y = lp.gather(-1, idx)
    inplace = torch_may_overwrite(z)
    others = lp.exp().scatter_(-1, idx, 0.0) if inplace else lp.exp().scatter(-1, idx, 0.0)
    q = others.sum(-1, keepdim=True)
    neg_q = q.neg()
    value = torch.where(q < torch_scalar(0.5, q), torch.log1p(neg_q), lp_y).neg().squeeze(-1)
    if not want_grad:
        return value, None
    return value, (others.scatter_(-1, idx, neg_q) if inplace else others.scatter(-1, idx, neg_q))


def lse_split_jax(z):
    """The split LSE of ``logsumexp_split`` for dense targets under XLA's CPU compiler:
    ``(anchor, exps, total, r)`` with LSE = anchor + r, r = log1p(Σ_{k≠argmax} e^{z_k − m})
    (other maxima counting 1 each), ``exps`` = e^{z − m} (written once; softmax = exps /
    total) and ``total`` = Σ exps; the class axis kept (size 1).

    No argmax and no select before a reduction (XLA would write that N×C array out first):
    the maxima are the entries with e = 1 exactly, so Σ_{e<1} e = Σ (e − ⌊e⌋), one more
    read of ``exps``. Without a tie (Σe < 2) that is the sum without the maximum; with
    ties (Σe ≥ 2, two entries exactly 1) r = log1p(Σe − 1), where the subtraction is
    exact to a few ulps. A row whose maximum is not finite gets anchor = m (±inf or NaN
    through every gap, as the split gives) and shift 0.

    The shift is a stop-gradient: JAX's autodiff of expressions in these parts
    (``jax.hessian`` runs it through the gradient) is the exact derivative."""
    import jax
    import jax.numpy as jnp

    m = jnp.max(z, axis=-1, keepdims=True)
    finite = jnp.isfinite(m)
    shift = jax.lax.stop_gradient(jnp.where(finite, m, jnp.zeros_like(m)))
    anchor = jnp.where(finite, shift, m)
    exps = jnp.exp(z - shift)
    total = jnp.sum(exps, axis=-1, keepdims=True)
    below = jnp.sum(exps - jnp.floor(exps), axis=-1, keepdims=True)
    rest = jnp.where(total < 2.0, below, total - 1.0)
    return anchor, exps, total, jnp.log1p(rest)


def ids_nll_jax(z, ids, want_grad: bool):
    """``ids_nll`` written for XLA's CPU compiler, whose reductions fuse only arithmetic
    producers: a ``where`` or ``==`` before a sum costs a written N×C array. So the one N×C
    array written is the exponentials with the *label's* entry left out, e'_k = e^{z_k − m}
    for k ≠ y, and the sum and the gradient both read it: max, exp, sum, gradient, the
    passes of optax's softmax cross-entropy.

    The precise split is kept without locating the argmax. With R = Σ_{k≠y} e^{z_k − m}
    (every term non-negative) and e_y = e^{z_y − m}:

    * y a maximum (e_y = 1): ℓ = log1p(R / e_y) = log1p(Σ_{k≠argmax} e^{z_k − m}), other
      maxima counting 1 each: the split's value, tiny losses to full relative precision;
    * otherwise ℓ = (m − z_y) + log(R + e_y), at least log 2, so nothing cancels;
    * a row whose maximum is not finite gets (m − z_y) (±inf or NaN, as the split gives).

    The shift m is a stop-gradient and both forms differentiate to the exact derivative, so
    JAX's autodiff through the gradient (``jax.hessian`` runs it) is exact too."""
    import jax
    import jax.numpy as jnp

    lax = jax.lax
    m = jnp.max(z, axis=-1, keepdims=True)
    finite = jnp.isfinite(m)
    shift = lax.stop_gradient(jnp.where(finite, m, jnp.zeros_like(m)))
    is_label = jnp.arange(z.shape[-1]) == ids[..., None]
    others = jnp.where(is_label, jnp.zeros_like(z), jnp.exp(z - shift))
    rest = jnp.sum(others, axis=-1, keepdims=True)
    z_y = jnp.take_along_axis(z, ids[..., None], axis=-1)
    e_y = jnp.exp(z_y - shift)
    label_is_max = z_y == m
    total = rest + e_y
    confident = jnp.log1p(rest / jnp.where(label_is_max, e_y, jnp.ones_like(e_y)))
    value = jnp.where(finite, jnp.where(label_is_max, confident, (shift - z_y) + jnp.log(total)), m - z_y)[..., 0]
    if not want_grad:
        return value, None
    return value, jnp.where(is_label, e_y / total - 1.0, others / total)


def ids_nll_numpy(z, ids, want_grad: bool):
    """NumPy: per-sample −log softmax(z)_y for integer ``ids`` and, with ``want_grad``, its
    gradient softmax(z) − onehot(y), in five passes over the logits with one N×C buffer (the
    gradient), where the array-API form makes a dozen temporaries.

    The value keeps the precise split, (max − z_y) + log1p(Σ_{k≠argmax} e^{z_k − max}): the
    exponentials are computed once into the buffer, the argmax entry is set to 0 for the sum
    (other maxima count 1 each, as in ``logsumexp_split``) and put back for the softmax."""
    import numpy as np

    shape = z.shape
    z2 = z.reshape(-1, shape[-1])
    y = ids.reshape(-1)
    rows = np.arange(z2.shape[0])
    top = np.argmax(z2, axis=-1)  # the first maximum; NaN rows: the first NaN
    m = z2[rows, top]
    finite = np.isfinite(m)
    shift = m if finite.all() else np.where(finite, m, 0)  # ±inf maxima: as logsumexp_split
    e = np.subtract(z2, shift[:, None])
    np.exp(e, out=e)
    e_top = e[rows, top]
    e[rows, top] = 0
    rest = e.sum(axis=-1)
    value = ((m - z2[rows, y]) + np.log1p(rest)).reshape(shape[:-1])
    if not want_grad:
        return value, None
    e[rows, top] = e_top
    rest += e_top
    np.divide(1, rest, out=rest)
    e *= rest[:, None]
    e[rows, y] -= 1
    return value, e.reshape(shape)


@functools.lru_cache(maxsize=None)
def _sqrt_eps(dtype, xp) -> float:
    return float(xp.finfo(dtype).eps) ** 0.5


def prepare_dense_target(pred, target, o, xp, validate, loss, mask=None, target_name="target"):
    """Logits and a target distribution of the same shape, class axis moved last; with
    ``validate``, each valid row of the target must be a distribution (``log_target``: a
    log-distribution), within √ε of the coarser of the target's given dtype and the logits'
    compute dtype it is checked in."""
    axis = _validate.normalize_axis(o["axis"], pred.ndim, loss)
    _validate.check_classes(pred, axis, "logits", loss)
    _validate.check_same_shape(pred, target, "logits", target_name, loss)
    _validate.check_floating(target, target_name, loss, xp)
    given = target.dtype
    target = upcast_target(target, pred, xp)
    # √ε of the coarser of the given and the checked dtype: a float64 distribution rounded to
    # float32 logits' dtype sums to 1 within float32's rounding, not float64's
    tol = max(_sqrt_eps(given, xp), _sqrt_eps(target.dtype, xp))
    moved = axis != pred.ndim - 1
    if moved:
        pred, target = xp.moveaxis(pred, axis, -1), xp.moveaxis(target, axis, -1)
    if validate:
        log = bool(o.get("log_target", False))
        _validate.check_distribution(target, target_name, loss, xp, mask, log=log, tol=tol, flag="log_target" if "log_target" in o else None)
    return Prepared(pred, target, tuple(pred.shape[:-1]), axis=axis if moved else None)
