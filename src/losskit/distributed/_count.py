"""The local part of ``global_count``: the denominator that ``reduction="mean"`` would use for a
set of targets (one array or the micro-batches of one optimizer step), by the shared rule of
``_reduce``: D = Σ over valid samples of weight · class_weight[y]. Framework-free; the torch
and JAX bridges add the sum over ranks or devices."""

from __future__ import annotations

from .. import _validate
from .._array import backend, coerce_like, gather_classes, is_floating
from .._loss import check_option
from .._reduce import combine_masks, multiplier, reduce_terms
from ..losses.classification import cross_entropy

NAME = "global_count"


def _per_batch(value, n: int, arg: str) -> list:
    if value is None:
        return [None] * n
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{NAME}: `{arg}` must be given once per micro-batch ({n} arrays, as `targets`), got {len(value)}.")
        return list(value)
    if n != 1:
        raise TypeError(f"{NAME}: with {n} micro-batches of `targets`, `{arg}` must be a list of {n} arrays (or None).")
    return [value]


def count_dtype(xp):
    """float64 where the backend has it enabled (JAX without x64: float32, exact to 2**24)."""
    if backend(xp) == "jax":
        import jax

        return xp.float64 if jax.config.jax_enable_x64 else xp.float32
    return xp.float64


def local_count(targets, *, ignore_index=None, weight=None, mask=None, class_weight=None, axis=None, validate=True, name=NAME):
    """``(xp, D)``: D a 0-d array of :func:`count_dtype`, summed over the micro-batches."""
    if isinstance(targets, (list, tuple)):
        batches = list(targets)
        if not batches:
            raise ValueError(f"{name}: `targets` is an empty list; pass at least one array of targets.")
    else:
        batches = [targets]
    weights = _per_batch(weight, len(batches), "weight")
    masks = _per_batch(mask, len(batches), "mask")
    if ignore_index is not None:
        ignore_index = check_option(cross_entropy._rules["ignore_index"], ignore_index, "ignore_index", name, None, None, True)
    if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
        raise TypeError(f"{name}: `axis` must be None or an int (the class axis of probability targets), got {axis!r}.")
    if not isinstance(validate, bool):
        raise TypeError(f"{name}: `validate` must be True or False, got {validate!r}.")
    total = None
    xp0 = None
    for i, (t, w, m) in enumerate(zip(batches, weights, masks)):
        arg = "targets" if len(batches) == 1 else f"targets[{i}]"
        w, m, cw = coerce_like(t, w, m, class_weight)
        xp = _validate.input_namespace(name, arg, t, weight=w, mask=m, class_weight=cw)
        if xp0 is None:
            xp0 = xp
        elif backend(xp) != backend(xp0):
            raise TypeError(f"{name}: every micro-batch must be an array of one library; {arg} is a {_validate.describe(t)}.")
        _validate.check_real(t, arg, name)
        dt = count_dtype(xp)
        shape = tuple(int(d) for d in t.shape)
        valid = None
        denom = None
        if xp.isdtype(t.dtype, "integral") or t.dtype == xp.bool:
            if t.dtype == xp.bool:
                raise TypeError(f"{name}: `{arg}` must hold class ids or float targets, got dtype bool.")
            if axis is not None:
                raise ValueError(f"{name}: `axis` is the class axis of probability targets; class ids have none (got axis={axis}).")
            if ignore_index is not None:
                valid = t != ignore_index
        elif is_floating(t, xp):
            if ignore_index is not None:
                raise ValueError(f"{name}: `ignore_index` applies to integer class ids; with float targets use `mask`.")
            if axis is not None:
                ax = _validate.normalize_axis(axis, t.ndim, name)
                shape = shape[:ax] + shape[ax + 1 :]
        else:
            raise TypeError(f"{name}: `{arg}` must hold class ids or float targets, got dtype {t.dtype}.")
        if m is not None:
            _validate.check_sample_array(m, shape, "mask", name, xp, boolean=True)
            valid = combine_masks(m, valid, xp)
        if w is not None:
            _validate.check_sample_array(w, shape, "weight", name, xp, boolean=False)
        if cw is not None and xp.isdtype(t.dtype, "integral"):
            # class ids: each sample's denominator weight is class_weight[y] (probability targets
            # divide by the sample count, as cross_entropy does)
            if not hasattr(cw, "shape") or cw.ndim != 1:
                raise ValueError(f"{name}: `class_weight` must be a 1-d array (one weight per class, the whole vocabulary).")
            _validate.check_option_array(cw, "class_weight", name, xp, low=0.0, validate=validate)
            if validate:
                _validate.check_class_ids(t, int(cw.shape[0]), ignore_index, name, xp, valid)
            ids = t if valid is None else xp.where(valid, t, xp.zeros_like(t))
            denom = gather_classes(xp.astype(cw, dt), ids if backend(xp) != "torch" else xp.astype(ids, xp.int64), xp)
        per_sample = denom if denom is not None else xp.ones(shape, dtype=dt, device=_device(t, xp))
        # the "sum" reduction of the per-sample denominator weights: Σ_valid weight · d
        c = multiplier(shape, w, valid, None, "sum", None, dt, xp)
        d = reduce_terms(per_sample, c, valid, "sum", xp)
        total = d if total is None else total + d
    if backend(xp0) == "numpy":
        total = xp0.asarray(total)  # a 0-d array, as the other backends give (not a NumPy scalar)
    return xp0, total


def _device(x, xp):
    try:
        return x.device
    except AttributeError:
        return None
