"""Argument checks of the vocabulary-parallel losses, shared by the torch and JAX bridges.

Everything is checked through the shared rules (``_validate``, ``_loss.check_option``, the
fused loss's ``_check_options`` and cross-entropy's ``_ce_check``), in two phases: ``local``
checks need only this rank's arrays and run before any collective; ``finish`` needs the global
number of classes V (known after the layout is resolved) and checks what depends on it: the
Megatron smoothing bound and the class-id range. Ranks of one group pass the same targets and
options, so the second phase raises the same error on every rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from .. import _validate
from .._array import backend, coerce_like, compute_dtype, is_floating, is_tracing
from .._loss import _NORMALIZER, check_option
from .._reduce import combine_masks
from ..fused.linear_cross_entropy import _check_options
from ..losses.classification import _ce_check
from ._math import Spec


@dataclass(frozen=True)
class Args:
    """Checked inputs in kernel layout: ``rows`` the logits (N, V_r) or hidden states (N, H),
    ``weight`` (V_r, H) and ``bias`` (V_r,) for the linear loss, ``tgt`` class ids (N,) with
    the rows that are not valid set to 0, or this rank's probabilities (N, V_r) in the compute
    dtype; ``ids`` the class ids as given (for the range check), ``valid`` (N,) or None."""

    name: str
    xp: Any
    kind: str
    rows: Any
    weight: Any
    bias: Any
    tgt: Any
    ids: Any
    valid: Any
    sample_weight: Any
    class_weight: Any
    lead: tuple
    vr: int
    axis: int | None
    reduction: str
    normalizer: Any
    validate: bool
    ignore_index: Any
    spec: Spec | None = None

    @property
    def n(self) -> int:
        return math.prod(self.lead)

    @property
    def compute_dtype(self):
        return compute_dtype(self.rows.dtype, self.xp)


def _shape(a) -> tuple:
    return tuple(int(d) for d in a.shape)


def _common(name, xp, pred, target, reduction, normalizer, validate, ignore_index, label_smoothing):
    _validate.check_real(target, "target", name)
    _validate.check_reduction(reduction, normalizer, name)
    if normalizer is not None:
        normalizer = check_option(_NORMALIZER, normalizer, "normalizer", name, pred, xp, validate)
    if not isinstance(validate, bool):
        raise TypeError(f"{name}: `validate` must be True or False, got {validate!r}.")
    _ce_check({"label_smoothing": label_smoothing, "ignore_index": ignore_index}, name)
    return normalizer


def _targets(name, xp, target, lead, ignore_index, mask, probs_shape, sample_arg):
    """(kind, tgt, ids, valid) with ids (N,) or probabilities (N, V_r)."""
    n = math.prod(lead)
    if mask is not None:
        _validate.check_sample_array(mask, lead, "mask", name, xp, boolean=True, class_axis=True)
        mask = xp.reshape(mask, (n,))
    if xp.isdtype(target.dtype, "integral"):
        if _shape(target) != lead:
            hint = " It has a trailing axis of size 1: pass target[..., 0]." if _shape(target) == lead + (1,) else ""
            raise ValueError(
                f"{name}: integer `target` (global class ids) must have the shape of the {sample_arg} without the class axis, "
                f"{lead}; got {_shape(target)}.{hint}"
            )
        ids = xp.reshape(target, (n,))
        if backend(xp) == "torch" and ids.dtype != xp.int64:
            ids = xp.astype(ids, xp.int64)  # torch indexes with int64 only
        valid = None if ignore_index is None else ids != ignore_index
        valid = combine_masks(mask, valid, xp)
        tgt = ids if valid is None else xp.where(valid, ids, xp.zeros_like(ids))
        return "ids", tgt, ids, valid
    if not is_floating(target, xp):
        raise TypeError(f"{name}: `target` must hold integer class ids or float probabilities, got dtype {target.dtype}.")
    if ignore_index is not None:
        raise ValueError(f"{name}: `ignore_index` applies to integer class ids; with probability targets use `mask`.")
    if _shape(target) != probs_shape:
        raise ValueError(
            f"{name}: probability `target` must hold this rank's block of classes, shape {probs_shape} (the shape of the "
            f"{sample_arg} block); got {_shape(target)}."
        )
    return "probs", target, None, mask


def _class_weight(name, xp, class_weight, vr, cd, validate):
    if class_weight is None:
        return None
    if not hasattr(class_weight, "shape"):
        raise TypeError(f"{name}: `class_weight` must be an array of shape ({vr},) (this rank's block of class weights), got {class_weight!r}.")
    if _shape(class_weight) != (vr,):
        raise ValueError(
            f"{name}: `class_weight` must hold this rank's block of class weights, shape ({vr},); got {_shape(class_weight)}."
        )
    _validate.check_option_array(class_weight, "class_weight", name, xp, low=0.0, validate=validate)
    return xp.astype(class_weight, cd)


def logits_args(name, logits, target, *, axis, weight, mask, class_weight, ignore_index, label_smoothing, reduction,
                normalizer, validate) -> Args:
    """Local checks of ``vocab_parallel_cross_entropy``."""
    target, weight, mask, class_weight = coerce_like(logits, target, weight, mask, class_weight)
    xp = _validate.input_namespace(name, "logits_shard", logits, target=target, weight=weight, mask=mask, class_weight=class_weight)
    _validate.check_floating(logits, "logits_shard", name, xp)
    normalizer = _common(name, xp, logits, target, reduction, normalizer, validate, ignore_index, label_smoothing)
    ax = _validate.normalize_axis(axis, logits.ndim, name)
    vr = _validate.check_classes(logits, ax, "logits_shard", name)
    moved = ax != logits.ndim - 1
    z = xp.moveaxis(logits, ax, -1) if moved else logits
    lead = _shape(z)[:-1]
    n = math.prod(lead)
    cd = compute_dtype(logits.dtype, xp)
    kind, tgt, ids, valid = _targets(name, xp, target, lead, ignore_index, mask, _shape(logits), "logits")
    if kind == "probs":
        t = xp.moveaxis(tgt, ax, -1) if moved else tgt
        tgt = xp.reshape(t, (n, vr))
        tgt = tgt if tgt.dtype == cd else xp.astype(tgt, cd)
    if weight is not None:
        _validate.check_sample_array(weight, lead, "weight", name, xp, boolean=False, class_axis=True)
        weight = xp.reshape(weight, (n,))
    cw = _class_weight(name, xp, class_weight, vr, cd, validate)
    return Args(name, xp, kind, xp.reshape(z, (n, vr)), None, None, tgt, ids, valid, weight, cw, lead, vr,
                ax if moved else None, reduction, normalizer, validate, ignore_index)


def linear_args(name, x, weight, target, *, bias, sample_weight, mask, class_weight, ignore_index, label_smoothing, reduction,
                normalizer, validate) -> Args:
    """Local checks of ``vocab_parallel_linear_cross_entropy``."""
    weight, target, bias, sample_weight, mask, class_weight = coerce_like(x, weight, target, bias, sample_weight, mask, class_weight)
    xp = _validate.input_namespace(
        name, "x", x, weight_shard=weight, target=target, bias_shard=bias, sample_weight=sample_weight, mask=mask,
        class_weight=class_weight,
    )
    _validate.check_floating(x, "x", name, xp)
    _validate.check_floating(weight, "weight_shard", name, xp)
    normalizer = _common(name, xp, x, target, reduction, normalizer, validate, ignore_index, label_smoothing)
    if x.ndim < 1:
        raise ValueError(f"{name}: `x` must have at least one axis (the hidden axis last), got a 0-d array.")
    if weight.ndim != 2:
        raise ValueError(
            f"{name}: `weight_shard` must have shape (V_r, H) (this rank's rows of the (V, H) head, as in torch.nn.Linear), "
            f"got {_shape(weight)}."
        )
    vr, hidden = _shape(weight)
    if vr == 0:
        raise ValueError(f"{name}: `weight_shard` holds no classes (shape {_shape(weight)}); every rank needs at least one.")
    if int(x.shape[-1]) != hidden:
        raise ValueError(f"{name}: the last axis of `x` must equal weight_shard.shape[1] (H), got x {_shape(x)} and weight_shard {_shape(weight)}.")
    if x.dtype != weight.dtype:
        raise TypeError(f"{name}: `x` and `weight_shard` must have the same dtype, got {x.dtype} and {weight.dtype}.")
    if bias is not None:
        if not hasattr(bias, "shape") or _shape(bias) != (vr,):
            got = _shape(bias) if hasattr(bias, "shape") else type(bias).__name__
            raise ValueError(f"{name}: `bias_shard` must have shape ({vr},) (this rank's block of the bias), got {got}.")
        if bias.dtype != x.dtype:
            raise TypeError(f"{name}: `bias_shard` must have the dtype of `x` ({x.dtype}), got {bias.dtype}.")
    lead = _shape(x)[:-1]
    n = math.prod(lead)
    cd = compute_dtype(x.dtype, xp)
    kind, tgt, ids, valid = _targets(name, xp, target, lead, ignore_index, mask, lead + (vr,), "tokens (x)")
    if kind == "probs":
        tgt = xp.reshape(tgt, (n, vr))
        tgt = tgt if tgt.dtype == cd else xp.astype(tgt, cd)
    if sample_weight is not None:
        _validate.check_sample_array(sample_weight, lead, "sample_weight", name, xp, boolean=False)
        sample_weight = xp.reshape(sample_weight, (n,))
    cw = _class_weight(name, xp, class_weight, vr, cd, validate)
    return Args(name, xp, kind, xp.reshape(x, (n, hidden)), weight, bias, tgt, ids, valid, sample_weight, cw, lead, vr,
                None, reduction, normalizer, validate, ignore_index)


def finish(args: Args, num_classes: int, label_smoothing, smoothing_formula, z_loss, softcap) -> Args:
    """The checks that need V, and the static :class:`Spec` of the call."""
    name, xp = args.name, args.xp
    z_loss = _validate.check_number(z_loss, "z_loss", name, low=0.0)  # cross_entropy's name for λ
    alpha, zl, cap = _check_options(label_smoothing, smoothing_formula, z_loss, softcap, None, None, args.ignore_index,
                                    num_classes, name=name)
    if args.validate and args.n:
        if args.kind == "ids":
            ids = xp.reshape(args.ids, args.lead)
            valid = None if args.valid is None else xp.reshape(args.valid, args.lead)
            _validate.check_class_ids(ids, num_classes, args.ignore_index, name, xp, valid)
        else:
            _validate.check_probabilities(args.tgt, "target", name, xp, None if args.valid is None else args.valid[:, None])
    check_rows = bool(args.validate and args.kind == "probs")
    spec = Spec(name, args.kind, int(num_classes), float(alpha), float(zl), cap, args.class_weight is not None, check_rows)
    return replace(args, spec=spec)


def check_row_sums(args: Args, tsum) -> None:
    """Each valid row of probability targets sums to 1 over all ranks' blocks (within √ε of the
    compute dtype, as ``cross_entropy``'s check); ``tsum`` comes from the exchange, so every
    rank raises the same error."""
    xp = args.xp
    if tsum is None or is_tracing(tsum) or not args.n:
        return
    tol = float(xp.finfo(args.tgt.dtype).eps) ** 0.5
    bad = xp.abs(tsum - 1.0) > tol
    if args.valid is not None:
        bad = bad & args.valid
    if not _validate._any(bad, xp):
        return
    pos = _validate._first_position(xp.reshape(bad, args.lead), xp)
    flat = _validate._first_position(bad, xp)
    raise ValueError(
        f"{args.name}: each row of `target` must be a distribution over all V classes (the blocks of every rank summing to "
        f"1 within {tol:.2g}); the row at target{list(pos)} sums to {float(tsum[flat])!r}. Normalise it over the whole "
        "vocabulary, or pass validate=False to skip this check."
    )
