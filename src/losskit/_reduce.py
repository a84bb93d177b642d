"""Weights, masks, ignored targets, reductions and normalizers: the one rule for every loss.

Every reduction is written as a per-sample multiplier ``c`` applied to the per-sample loss ℓ
over the valid samples V (not masked, not ignored):

* ``"none"``: out_i = c_i ℓ_i with c_i = w_i (0 where invalid)
* ``"sum"``:  out = Σ_{i∈V} c_i ℓ_i with c_i = w_i
* ``"mean"``: out = Σ_{i∈V} c_i ℓ_i with c_i = w_i / D, D = ``normalizer`` if given, else
  Σ_{i∈V} w_i d_i, where d_i is the loss's own denominator weight (``class_weight[y_i]`` for
  cross-entropy with integer targets, 1 otherwise). D = 0 (empty selection) gives c = 0.

and the gradient (and Hessian diagonal) of any of them is c_i times the per-sample one. Only
this module knows these rules; the framework hooks reuse them by multiplying ``c`` by the
incoming cotangent.
"""

from __future__ import annotations

from . import _validate
from ._array import can_write_inplace


def combine_masks(a, b, xp):
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def is_scalar(c) -> bool:
    return isinstance(c, float) or getattr(c, "ndim", 1) == 0


def count_multiplier(n: int, reduction: str) -> float:
    """``multiplier`` of n samples with no weight, mask, denominator or normalizer: 1/n for
    ``"mean"`` (0 for none), 1 otherwise."""
    if reduction != "mean":
        return 1.0
    return 0.0 if n == 0 else 1.0 / n


def multiplier(sample_shape, weight, valid, denom, reduction, normalizer, dtype, xp, check=None):
    """The per-sample multiplier ``c``: a Python float, or an array of ``sample_shape``
    (``weight``, ``valid`` and ``denom`` are arrays of that shape or None). ``check`` (the
    loss's name, when validating) makes a zero denominator with valid samples an error: only
    an empty selection gives 0."""
    # weights already in the compute dtype are used as they are (read, never written): astype
    # would copy them, a full pass (on torch a parallel op) every call
    w = weight if weight is None or weight.dtype == dtype else xp.astype(weight, dtype)
    if reduction != "mean":
        return 1.0 if w is None else w
    if normalizer is not None:
        if isinstance(normalizer, (int, float)):
            if normalizer == 0 and check:
                _validate.check_denominator(0.0, "normalizer", sample_shape, valid, check, xp)
            inv = 0.0 if normalizer == 0 else 1.0 / float(normalizer)
        else:
            d = xp.astype(normalizer, dtype)
            if check:
                _validate.check_denominator(d, "normalizer", sample_shape, valid, check, xp)
            inv = xp.where(d == 0, xp.zeros_like(d), 1.0 / xp.where(d == 0, xp.ones_like(d), d))
        return inv if w is None else w * inv
    if w is None and valid is None and denom is None:
        n = 1
        for s in sample_shape:
            n *= int(s)
        return count_multiplier(n, reduction)
    # D = Σ over valid samples of w·d
    wd = w
    if denom is not None:
        d = xp.astype(denom, dtype)
        wd = d if wd is None else wd * d
    if wd is None:
        wd = xp.ones(tuple(sample_shape), dtype=dtype, device=_device(valid, xp))
    if valid is not None:
        wd = xp.where(valid, wd, xp.zeros_like(wd))
    total = xp.sum(wd)
    if check and (w is not None or denom is not None):
        _validate.check_denominator(total, "weight" if denom is None else "class_weight" if w is None else "weight", sample_shape, valid, check, xp)
    inv = xp.where(total == 0, xp.zeros_like(total), 1.0 / xp.where(total == 0, xp.ones_like(total), total))
    return inv if w is None else w * inv


def _device(x, xp):
    try:
        return xp.__array_namespace_info__().default_device() if x is None else x.device
    except AttributeError:
        return None


_SUM_METHOD = frozenset({"numpy", "torch"})  # modules of array types whose .sum() is the full sum


def reduce_terms(per_sample, c, valid, reduction, xp):
    """Apply ``c`` and ``valid`` to per-sample values and reduce."""
    if reduction != "none" and valid is None and is_scalar(c):
        # the array's own method where it has one (NumPy, torch): the array-API wrapper
        # adds a Python layer (~1 µs) that a small loss feels
        total = per_sample.sum() if type(per_sample).__module__ in _SUM_METHOD else xp.sum(per_sample)
        return total if isinstance(c, float) and c == 1.0 else total * c
    terms = per_sample if isinstance(c, float) and c == 1.0 else per_sample * c
    if valid is not None:
        terms = xp.where(valid, terms, xp.zeros_like(terms))
    return terms if reduction == "none" else xp.sum(terms)


def scale_elementwise(g, c, valid, class_axis: bool, xp):
    """c ⊙ g over valid samples, zero elsewhere; for class-axis losses ``c``/``valid`` have the
    sample shape and are broadcast along the trailing class axis. ``g`` is a temporary the
    kernel just made (kernels never return an input), so it is scaled in place when safe."""
    out = g
    if isinstance(c, float):
        if c != 1.0:
            if can_write_inplace(g, xp):
                out *= c
            else:
                out = g * c
    else:
        if class_axis and c.ndim:
            c = c[..., None]
        if c.dtype == g.dtype and can_write_inplace(g, xp, c):
            out *= c
        else:
            out = g * c
    if valid is not None:
        v = valid[..., None] if class_axis else valid
        out = xp.where(v, out, xp.zeros_like(out))
    return out

