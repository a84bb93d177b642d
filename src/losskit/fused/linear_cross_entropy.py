r"""Fused linear + cross-entropy, computed in row chunks so that the logits ``x @ W.T + b``
never exist in full, in the forward pass or the backward pass.

``linear_cross_entropy(x, W, y, bias=b, **opts)`` is defined as exactly
``cross_entropy(x @ W.T + b, y, **opts)`` (plus two options that ``cross_entropy`` does not
have: ``z_loss_weight`` and ``softcap``). What is shared with the rest of losskit:

* option checks and messages: ``_validate`` and ``classification._ce_check``;
* the reduction rule (weights, masks, ignored ids, ``"mean"`` denominators, ``normalizer``):
  ``_reduce.multiplier`` / ``reduce_terms`` / ``scale_elementwise``;
* the per-row math: ``classification._ce_q`` (the weighted, smoothed target) with
  ``_softmax.weighted_nll`` / ``weighted_nll_grad`` (value and gradient from the row's LSE).

This module holds the options, the checks, the generic array-API chunk math and the loop that
runs it (NumPy and any other array-API namespace). ``interop/torch_fused.py`` (an
``autograd.Function`` with in-place chunk kernels) and ``interop/jax_fused.py`` (a
``jax.custom_vjp`` over ``lax.scan``) are imported only when those arrays are passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import _validate
from .._array import backend, coerce_like, compute_dtype, gather_classes, is_floating, logsumexp
from .._reduce import combine_masks, multiplier, reduce_terms, scale_elementwise
from .._loss import _NORMALIZER, check_option
from ..losses import _softmax
from ..losses.classification import _ce_check, _ce_q

__all__ = [
    "linear_cross_entropy",
    "linear_cross_entropy_with_extras",
    "LinearCrossEntropyExtras",
    "LinearCrossEntropyGrads",
    "Config",
    "default_chunk_size",
    "chunk_math",
    "masked_rows",
]

NAME = "linear_cross_entropy"
SMOOTHING_FORMULAS = ("pytorch", "megatron")


class LinearCrossEntropyGrads(NamedTuple):
    """Gradients of the reduced loss with respect to ``x``, ``weight`` and ``bias`` (``None``
    when no bias was given), each in the dtype and shape of its input."""

    x: Any
    weight: Any
    bias: Any


class LinearCrossEntropyExtras(NamedTuple):
    """What :func:`linear_cross_entropy_with_extras` returns.

    * ``loss``: the reduced loss, exactly what :func:`linear_cross_entropy` returns
      (differentiable).
    * ``lse``: per-token log-sum-exp of the (soft-capped) logits, shape ``x.shape[:-1]``,
      float32 for half inputs (not differentiable).
    * ``target_logprob``: per-token log-probability of the target, log softmax(z)_y (for
      probability targets Σ_k t_k log softmax(z)_k), 0 where the token is ignored or masked
      (not differentiable).
    * ``accuracy``: fraction of valid tokens whose arg-max logit is the target (for probability
      targets: the arg-max of the target), unweighted; 0 when no token is valid.
    """

    loss: Any
    lse: Any
    target_logprob: Any
    accuracy: Any


@dataclass(frozen=True)
class Config:
    """The static (non-array) part of one call: hashable, so the JAX bridge can use it as a
    static argument and the torch bridge can keep it on ``ctx``."""

    reduction: str
    target_kind: str  # "ids" | "probs"
    label_smoothing: float  # effective α of the PyTorch formula (1 − α)·onehot + α/V
    z_loss_weight: float
    softcap: float | None
    chunk_size: int
    num_classes: int
    grad_in_forward: bool | None

    def ce_options(self, class_weight) -> dict:
        """The bound options ``classification._ce_q`` reads."""
        return {"label_smoothing": self.label_smoothing, "class_weight": class_weight, "target_kind": self.target_kind}


def default_chunk_size(n: int, h: int, v: int, itemsize: int = 4) -> int:
    """Rows per chunk when ``chunk_size=None``.

    32/64-bit inputs: the "aspect ratio" rule (rows ≈ N·H / V: the slab is about the size of
    ``x``) clamped to [512, 1024] rows, because each chunk ends with a rank-``rows`` update of
    dW that is memory-bound when ``rows`` is small; the slab never exceeds 2**25 elements
    (128 MiB). Half inputs (``itemsize`` 2) add a float32 read-modify-write of dW (V·H) per
    chunk after the first, against about rows·V of slab work, so rows ≈ 2·H clamped to
    [512, 4096]; their slab stays in the input dtype (the float32 softmax work runs on row
    blocks of it) and never exceeds 2**26 elements (128 MiB). Never more rows than N. For
    N=4096, H=1024, V=32768: 512 rows in float32 (a 64 MiB slab where the logits alone are
    512 MiB), 2048 rows in bfloat16 (a 128 MiB slab, two chunks); for the GPT example's head
    (N=2048, H=256, V=8192) 512 rows in bfloat16 (1024 rows, half its batch, made the slab and
    its float32 work buffer 1.5x the bfloat16 logits they replace).
    """
    if n <= 0:
        return 1
    if itemsize < 4:
        rows = max(512, min(4096, 2 * h))
        rows = min(rows, max(64, (1 << 26) // max(v, 1)))
    else:
        rows = max(512, min(1024, -(-n * h // max(v, 1))))
        rows = min(rows, max(64, (1 << 25) // max(v, 1)))
    return max(1, min(n, rows))


# --- options and inputs -----------------------------------------------------------------


def _itemsize(dtype, xp) -> int:
    return xp.finfo(dtype).bits // 8


def _shape(a) -> tuple:
    return tuple(int(d) for d in a.shape)


def _z_loss(z_loss, z_loss_weight):
    """``z_loss``, or the deprecated ``z_loss_weight`` (checked under the name it was given)."""
    if z_loss_weight is None:
        return _validate.check_number(z_loss, "z_loss", NAME, low=0.0)
    import warnings

    warnings.warn(f"{NAME}: `z_loss_weight` is deprecated; use `z_loss` (the name cross_entropy uses).", DeprecationWarning, stacklevel=3)
    if not (isinstance(z_loss, (int, float)) and z_loss == 0.0):
        raise TypeError(f"{NAME}: pass `z_loss` or its deprecated alias `z_loss_weight`, not both.")
    return _validate.check_number(z_loss_weight, "z_loss_weight", NAME, low=0.0)


def _check_options(label_smoothing, smoothing_formula, z_loss_weight, softcap, chunk_size, grad_in_forward, ignore_index, num_classes,
                   name=NAME):
    """The fused options' rules (also used by ``losskit.distributed``, whose messages carry its
    own function's ``name``). Returns (effective α of the PyTorch formula, λ, softcap or None)."""
    o = {"label_smoothing": label_smoothing, "ignore_index": ignore_index}
    _ce_check(o, name)
    alpha = o["label_smoothing"]
    if smoothing_formula not in SMOOTHING_FORMULAS:
        raise ValueError(f"{name}: `smoothing_formula` must be one of {SMOOTHING_FORMULAS}, got {smoothing_formula!r}.")
    if smoothing_formula == "megatron" and alpha:
        # Megatron-LM / NeMo: the true class keeps 1 − α and every other class gets α/(V − 1),
        # i.e. the PyTorch formula with α' = α·V/(V − 1).
        if num_classes < 2:
            raise ValueError(f"{name}: smoothing_formula='megatron' needs at least 2 classes, got {num_classes}.")
        alpha_eff = alpha * num_classes / (num_classes - 1)
        if alpha_eff > 1.0:
            raise ValueError(
                f"{name}: with smoothing_formula='megatron', `label_smoothing` must be at most (V-1)/V = "
                f"{(num_classes - 1) / num_classes!r} (α·V/(V-1) <= 1), got {label_smoothing!r}."
            )
        alpha = alpha_eff
    zl = _validate.check_number(z_loss_weight, "z_loss_weight", name, low=0.0)
    cap = None if softcap is None else _validate.check_number(softcap, "softcap", name, low=0.0, low_open=True)
    if cap is not None and math.isinf(cap):
        cap = None
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"{name}: `chunk_size` must be a positive int (rows per chunk) or None, got {chunk_size!r}.")
    if grad_in_forward not in (None, True, False):
        raise TypeError(f"{name}: `grad_in_forward` must be None, True or False, got {grad_in_forward!r}.")
    return alpha, zl, cap


@dataclass(frozen=True)
class Inputs:
    """Validated inputs in kernel layout: ``x2`` (N, H), ``weight`` (V, H), ``bias`` (V,) or
    None, ``target`` (N,) class ids (ignored ones replaced by 0) or (N, V) probabilities,
    ``c`` the reduction multiplier of ``_reduce`` (a float or an array), ``valid`` (N,) bool or
    None, ``class_weight`` (V,) in the compute dtype or None."""

    xp: Any
    x2: Any
    weight: Any
    bias: Any
    target: Any
    c: Any
    valid: Any
    class_weight: Any
    cfg: Config
    lead_shape: tuple
    x_shape: tuple


def prepare(x, weight, target, bias, sample_weight, mask, reduction, normalizer, validate, ignore_index, class_weight,
            label_smoothing, smoothing_formula, z_loss_weight, softcap, chunk_size, grad_in_forward) -> Inputs:
    weight, target, bias, sample_weight, mask, class_weight = coerce_like(x, weight, target, bias, sample_weight, mask, class_weight)
    xp = _validate.input_namespace(
        NAME, "x", x, weight=weight, target=target, bias=bias, sample_weight=sample_weight, mask=mask, class_weight=class_weight
    )
    _validate.check_floating(x, "x", NAME, xp)
    _validate.check_floating(weight, "weight", NAME, xp)
    _validate.check_reduction(reduction, normalizer, NAME)
    _validate.check_real(target, "target", NAME)
    if normalizer is not None:
        normalizer = check_option(_NORMALIZER, normalizer, "normalizer", NAME, x, xp, validate)
    if x.ndim < 1:
        raise ValueError(f"{NAME}: `x` must have at least one axis (the hidden axis last), got a 0-d array.")
    if weight.ndim != 2:
        raise ValueError(f"{NAME}: `weight` must have shape (V, H) (one row per class, as in torch.nn.Linear), got {_shape(weight)}.")
    num_classes, hidden = _shape(weight)
    if int(x.shape[-1]) != hidden:
        raise ValueError(
            f"{NAME}: the last axis of `x` must equal weight.shape[1] (H), got x {_shape(x)} and weight {_shape(weight)}."
        )
    if x.dtype != weight.dtype:
        raise TypeError(f"{NAME}: `x` and `weight` must have the same dtype, got {x.dtype} and {weight.dtype}.")
    if bias is not None:
        if not hasattr(bias, "shape") or _shape(bias) != (num_classes,):
            raise ValueError(f"{NAME}: `bias` must have shape ({num_classes},) (one per class), got {_shape(bias) if hasattr(bias, 'shape') else type(bias).__name__}.")
        if bias.dtype != x.dtype:
            raise TypeError(f"{NAME}: `bias` must have the dtype of `x` ({x.dtype}), got {bias.dtype}.")
    alpha, zl, cap = _check_options(label_smoothing, smoothing_formula, z_loss_weight, softcap, chunk_size, grad_in_forward, ignore_index, num_classes)

    lead = _shape(x)[:-1]
    n = math.prod(lead)
    cd = compute_dtype(x.dtype, xp)
    x2 = xp.reshape(x, (n, hidden))
    valid = None
    denom = None
    if class_weight is not None:
        if not hasattr(class_weight, "shape") or _shape(class_weight) != (num_classes,):
            raise ValueError(f"{NAME}: `class_weight` must have shape ({num_classes},) (one weight per class), got {_shape(class_weight) if hasattr(class_weight, 'shape') else type(class_weight).__name__}.")
        _validate.check_option_array(class_weight, "class_weight", NAME, xp, low=0.0, validate=validate)
        class_weight = xp.astype(class_weight, cd)
    if xp.isdtype(target.dtype, "integral"):
        if _shape(target) != lead:
            hint = " It has a trailing axis of size 1: pass target[..., 0]." if _shape(target) == lead + (1,) else ""
            raise ValueError(f"{NAME}: integer `target` must have the shape of x without its last axis, {lead}; got {_shape(target)}.{hint}")
        t2 = xp.reshape(target, (n,))
        if t2.dtype != xp.int64 and backend(xp) == "torch":
            t2 = xp.astype(t2, xp.int64)  # torch's gather / scatter_add_ / indexing want int64 ids
        if ignore_index is not None:
            valid = t2 != ignore_index
        if mask is not None:
            _validate.check_sample_array(mask, lead, "mask", NAME, xp, boolean=True)
            valid = combine_masks(xp.reshape(mask, (n,)), valid, xp)
        if validate and n:
            # ignored and masked ids are exempt (padding may hold anything); no tokens, nothing to check
            _validate.check_class_ids(xp.reshape(t2, lead), num_classes, ignore_index, NAME, xp, None if valid is None else xp.reshape(valid, lead))
        if valid is not None:
            t2 = xp.where(valid, t2, xp.zeros_like(t2))
        if class_weight is not None:
            denom = gather_classes(class_weight, t2, xp)
        kind = "ids"
    elif is_floating(target, xp):
        if ignore_index is not None:
            raise ValueError(f"{NAME}: `ignore_index` applies to integer class ids; with probability targets use `mask`.")
        if _shape(target) != lead + (num_classes,):
            raise ValueError(
                f"{NAME}: probability `target` must have shape x.shape[:-1] + (V,) = {lead + (num_classes,)}, got {_shape(target)}."
            )
        t2 = xp.reshape(target, (n, num_classes))
        t2 = t2 if t2.dtype == cd else xp.astype(t2, cd)
        kind = "probs"
    else:
        raise TypeError(f"{NAME}: `target` must hold integer class ids or float probabilities, got dtype {target.dtype}.")
    sw = None
    if sample_weight is not None:
        _validate.check_sample_array(sample_weight, lead, "sample_weight", NAME, xp, boolean=False)
        sw = xp.reshape(sample_weight, (n,))
    if mask is not None and kind == "probs":
        _validate.check_sample_array(mask, lead, "mask", NAME, xp, boolean=True)
        valid = xp.reshape(mask, (n,))
    c = multiplier((n,), sw, valid, denom, reduction, normalizer, cd, xp, check=validate and NAME)
    rows = chunk_size if chunk_size is not None else default_chunk_size(n, hidden, num_classes, _itemsize(x.dtype, xp))
    cfg = Config(reduction, kind, float(alpha), float(zl), cap, int(rows), num_classes, grad_in_forward)
    return Inputs(xp, x2, weight, bias, t2, c, valid, class_weight, cfg, lead, _shape(x))


# --- the math of one chunk (any array-API namespace) --------------------------------------


def chunk_math(zraw, t, class_weight, cfg: Config, xp, *, grad: bool = False, extras: bool = False, lse=None):
    """Per-row terms of one chunk of logits ``zraw`` (rows, V) in the compute dtype.

    Returns ``(value, lse, g, ext)``: the per-row loss ℓ (before the reduction multiplier), the
    per-row LSE of the soft-capped logits, ∂ℓ/∂zraw (rows, V) when ``grad`` and
    ``(target_logprob, correct)`` when ``extras``. With z = s·tanh(zraw/s) (or z = zraw):

        ℓ = Σ_k q_k (LSE(z) − z_k) + λ·LSE(z)²,
        ∂ℓ/∂z = (Σq)·softmax(z) − q + 2λ·LSE(z)·softmax(z),   ∂z/∂zraw = 1 − (z/s)²

    where q is ``cross_entropy``'s effective target (``classification._ce_q``). A saved
    ``lse`` (from the forward pass) skips its recomputation.
    """
    z, th = zraw, None
    if cfg.softcap is not None:
        th = xp.tanh(zraw / cfg.softcap)
        z = cfg.softcap * th
    if lse is None:
        lse = logsumexp(z, axis=-1, xp=xp)
    q = _ce_q(z, t, cfg.ce_options(class_weight), xp)
    value = _softmax.weighted_nll(z, q, xp, lse)
    zl = cfg.z_loss_weight
    if zl:
        value = value + zl * lse * lse
    g = None
    if grad:
        g = _softmax.weighted_nll_grad(z, q, xp, lse)
        if zl:
            g = g + (2.0 * zl * lse)[..., None] * _softmax.softmax_from_lse(z, lse, xp)
        if th is not None:
            g = g * (1.0 - th * th)
    ext = None
    if extras:
        if cfg.target_kind == "ids":
            zy = xp.take_along_axis(z, t[..., None], axis=-1)[..., 0]
            ext = (zy - lse, xp.argmax(z, axis=-1) == t)
        else:
            logp = z - lse[..., None]
            terms = xp.where(t == 0, xp.zeros_like(logp), t * logp)
            ext = (xp.sum(terms, axis=-1), xp.argmax(z, axis=-1) == xp.argmax(t, axis=-1))
    return value, lse, g, ext


def masked_rows(xc, valid_c, xp):
    """``xc`` with the rows that are not valid set to 0, for dW = Gᵀx: G is 0 on those rows, but
    0·NaN is NaN, so a masked or ignored token whose hidden state is NaN or inf (padding) would
    otherwise poison every entry of dW. Valid rows are untouched (their NaN propagates)."""
    if valid_c is None:
        return xc
    return xp.where(valid_c[:, None], xc, xp.zeros_like(xc))


def accuracy_from(correct, valid, dtype, xp):
    """Fraction of valid rows that are correct (0 when none is valid)."""
    hit = xp.astype(correct, dtype)
    if valid is None:
        n = int(correct.shape[0])
        return xp.sum(hit) / n if n else xp.sum(hit)
    v = xp.astype(valid, dtype)
    total = xp.sum(v)
    return xp.sum(hit * v) / xp.where(total == 0, xp.ones_like(total), total)


def finish(inp: Inputs, values, lse, tlp, correct, xp):
    """Reduce per-row values (the shared rule) and shape the outputs."""
    out = reduce_terms(values, inp.c, inp.valid, inp.cfg.reduction, xp)
    if inp.cfg.reduction == "none":
        out = xp.reshape(out, inp.lead_shape)
    if lse is None:
        return out
    if inp.valid is not None:
        tlp = xp.where(inp.valid, tlp, xp.zeros_like(tlp))
    acc = accuracy_from(correct, inp.valid, lse.dtype, xp)
    return LinearCrossEntropyExtras(out, xp.reshape(lse, inp.lead_shape), xp.reshape(tlp, inp.lead_shape), acc)


def _loop(inp: Inputs, *, need_grad: bool, extras: bool):
    """The chunk loop for NumPy and other array-API namespaces (no autodiff): value, and the
    three gradients of the reduced value when ``need_grad``."""
    xp = inp.xp
    cfg = inp.cfg
    x2 = inp.x2
    n, h = _shape(x2)
    v = cfg.num_classes
    cd = compute_dtype(x2.dtype, xp)
    w = inp.weight if inp.weight.dtype == cd else xp.astype(inp.weight, cd)
    b = None if inp.bias is None else (inp.bias if inp.bias.dtype == cd else xp.astype(inp.bias, cd))
    wt = xp.matrix_transpose(w)
    c = inp.c
    per_row_c = not isinstance(c, float) and getattr(c, "ndim", 0) == 1
    values, lses, tlps, corrects, gxs = [], [], [], [], []
    gw = gb = None
    if need_grad:
        gw = xp.zeros((v, h), dtype=cd)
        gb = xp.zeros((v,), dtype=cd) if b is not None else None
    for r0 in range(0, n, cfg.chunk_size):
        r1 = min(n, r0 + cfg.chunk_size)
        xc = x2[r0:r1, ...]
        xc = xc if xc.dtype == cd else xp.astype(xc, cd)
        z = xc @ wt
        if b is not None:
            z = z + b
        value, lse, g, ext = chunk_math(z, inp.target[r0:r1, ...], inp.class_weight, cfg, xp, grad=need_grad, extras=extras)
        values.append(value)
        if extras:
            lses.append(lse)
            tlps.append(ext[0])
            corrects.append(ext[1])
        if need_grad:
            cc = c[r0:r1] if per_row_c else c
            vc = None if inp.valid is None else inp.valid[r0:r1]
            g = scale_elementwise(g, cc, vc, True, xp)
            gxs.append(g @ w)
            gw = gw + xp.matrix_transpose(g) @ masked_rows(xc, vc, xp)
            if gb is not None:
                gb = gb + xp.sum(g, axis=0)
    cat = lambda parts, shape, dt: xp.concat(parts, axis=0) if parts else xp.zeros(shape, dtype=dt)  # noqa: E731
    values = cat(values, (0,), cd)
    if extras:
        out = finish(inp, values, cat(lses, (0,), cd), cat(tlps, (0,), cd), cat(corrects, (0,), xp.bool), xp)
    else:
        out = finish(inp, values, None, None, None, xp)
    if not need_grad:
        return out
    gx = xp.reshape(xp.astype(cat(gxs, (0, h), cd), x2.dtype), inp.x_shape)
    grads = LinearCrossEntropyGrads(
        gx,
        xp.astype(gw, inp.weight.dtype),
        None if gb is None else xp.astype(gb, inp.bias.dtype),
    )
    return out, grads


# --- public functions ---------------------------------------------------------------------


def _dispatch(inp: Inputs, need: str, extras: bool = False):
    kind = backend(inp.xp)
    if kind == "torch":
        from ..interop import torch_fused

        return torch_fused.run(inp, need, extras)
    if kind == "jax":
        from ..interop import jax_fused

        return jax_fused.run(inp, need, extras)
    return _loop(inp, need_grad=need == "value_and_grad", extras=extras)


def _torch_operator(x, args: tuple, extras: bool):
    """On torch tensors, the public functions call the custom operator of
    ``interop.torch_fused`` (opaque to ``torch.compile``, autocast-aware) before anything else:
    ``prepare`` then runs inside it, untraced. ``NotImplemented`` for other arrays or for
    argument types the operator does not take."""
    if not type(x).__module__.startswith("torch"):
        return NotImplemented
    from ..interop import torch_fused

    return torch_fused.call_op(x, *args, extras)


def linear_cross_entropy(
    x,
    weight,
    target,
    /,
    *,
    bias=None,
    sample_weight=None,
    mask=None,
    reduction="mean",
    normalizer=None,
    validate=True,
    ignore_index=None,
    class_weight=None,
    label_smoothing=0.0,
    smoothing_formula="pytorch",
    z_loss=0.0,
    z_loss_weight=None,
    softcap=None,
    chunk_size=None,
    grad_in_forward=None,
):
    r"""Cross-entropy of a linear projection, ``cross_entropy(x @ weight.T + bias, target)``,
    computed in chunks of rows so that the N×V logits never exist.

    .. math:: z = x W^\top + b,\quad \tilde z = s\tanh(z/s)\ (\text{if softcap}),\quad
              \ell = \sum_k q_k\,(\operatorname{LSE}(\tilde z) - \tilde z_k)
                     + \lambda\,\operatorname{LSE}(\tilde z)^2

    with q the (class-weighted, smoothed) target of :func:`losskit.cross_entropy`. Gradients:
    with G = ∂ℓ/∂z per row (times the reduction multiplier), ∂/∂x = G W, ∂/∂W = Gᵀ x,
    ∂/∂b = Σ_rows G; G is recomputed chunk by chunk from the saved per-row LSE.

    Args:
        x: hidden states, shape (..., H), float.
        weight: projection, shape (V, H) (the layout of ``torch.nn.Linear``), dtype of ``x``.
        target: class ids of shape ``x.shape[:-1]`` or probabilities of shape
            ``x.shape[:-1] + (V,)``.
        bias: optional (V,).
        sample_weight: per-token weights of shape ``x.shape[:-1]`` (the ``weight=`` option of
            every other losskit loss, renamed because ``weight`` is the projection here).
        mask, reduction, normalizer, validate: as for every losskit loss.
        ignore_index, class_weight, label_smoothing: as :func:`losskit.cross_entropy`.
        smoothing_formula: ``"pytorch"`` (target (1 − α)·onehot + α/V, the default, equal to
            ``torch.nn.functional.cross_entropy``) or ``"megatron"`` (Megatron-LM / NeMo: the
            true class keeps 1 − α, each other class gets α/(V − 1); the PyTorch formula with
            α·V/(V − 1)).
        z_loss: λ ≥ 0, adds λ·LSE² per token (PaLM's auxiliary z-loss); the name of
            :func:`losskit.cross_entropy`'s option. ``z_loss_weight`` is its deprecated alias
            (a ``DeprecationWarning``; passing both is an error).
        softcap: s > 0, logits become s·tanh(z/s) before the softmax (Gemma 2); None disables.
        chunk_size: rows per chunk; None picks :func:`default_chunk_size` from the shapes.
        grad_in_forward: PyTorch and JAX. With a scalar reduction, compute the three gradients
            during the forward pass (one logits GEMM per chunk instead of two) and scale them
            by the incoming gradient in backward (on JAX: in the forward rule of the custom VJP,
            so only when a gradient is taken). None (default) does so when a gradient is
            needed and ``reduction`` is ``"mean"`` or ``"sum"``; False always saves only x,
            weight, target and the per-row LSE and recomputes the chunk logits in backward
            (required for ``retain_graph=True`` double calls of ``backward``).

    Returns:
        The reduced loss (shape ``x.shape[:-1]`` for ``reduction="none"``), in the compute
        dtype (float32 for half inputs). Differentiable in ``torch.autograd`` (for ``x``,
        ``weight``, ``bias``) and ``jax.grad``; ``linear_cross_entropy.value_and_grad`` gives
        the gradients on every backend, NumPy included. On torch tensors the function is a
        custom operator, opaque to ``torch.compile`` (``fullgraph=True`` works), and under
        ``torch.autocast`` the projection runs in the autocast dtype. See
        ``docs/linear_cross_entropy.md`` for the memory model.

    Example:
        >>> import numpy as np, losskit as lk
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0]]); W = np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
        >>> round(float(lk.linear_cross_entropy(x, W, np.array([0, 2]))), 6)
        0.634229
    """
    z_loss = _z_loss(z_loss, z_loss_weight)
    args = (weight, target, bias, sample_weight, mask, reduction, normalizer, validate, ignore_index, class_weight,
            label_smoothing, smoothing_formula, z_loss, softcap, chunk_size, grad_in_forward)
    out = _torch_operator(x, args, False)
    if out is not NotImplemented:
        return out
    return _dispatch(prepare(x, *args), "value")


def linear_cross_entropy_with_extras(
    x,
    weight,
    target,
    /,
    *,
    bias=None,
    sample_weight=None,
    mask=None,
    reduction="mean",
    normalizer=None,
    validate=True,
    ignore_index=None,
    class_weight=None,
    label_smoothing=0.0,
    smoothing_formula="pytorch",
    z_loss=0.0,
    z_loss_weight=None,
    softcap=None,
    chunk_size=None,
    grad_in_forward=None,
) -> LinearCrossEntropyExtras:
    """:func:`linear_cross_entropy` plus per-token statistics from the same pass, as a
    :class:`LinearCrossEntropyExtras` named tuple ``(loss, lse, target_logprob, accuracy)``.
    Only ``loss`` is differentiable; the extras are constants for autodiff."""
    z_loss = _z_loss(z_loss, z_loss_weight)
    args = (weight, target, bias, sample_weight, mask, reduction, normalizer, validate, ignore_index, class_weight,
            label_smoothing, smoothing_formula, z_loss, softcap, chunk_size, grad_in_forward)
    out = _torch_operator(x, args, True)
    if out is not NotImplemented:
        return out
    return _dispatch(prepare(x, *args), "value", extras=True)


def _value_and_grad(
    x,
    weight,
    target,
    /,
    *,
    bias=None,
    sample_weight=None,
    mask=None,
    reduction="mean",
    normalizer=None,
    validate=True,
    ignore_index=None,
    class_weight=None,
    label_smoothing=0.0,
    smoothing_formula="pytorch",
    z_loss=0.0,
    z_loss_weight=None,
    softcap=None,
    chunk_size=None,
    grad_in_forward=None,
):
    """``(value, LinearCrossEntropyGrads(x, weight, bias))`` in one chunked pass, on any
    backend (no autodiff needed). For ``reduction="none"`` the gradients are those of the sum
    of the per-token losses."""
    inp = prepare(x, weight, target, bias, sample_weight, mask, reduction, normalizer, validate, ignore_index, class_weight,
                  label_smoothing, smoothing_formula, _z_loss(z_loss, z_loss_weight), softcap, chunk_size, grad_in_forward)
    return _dispatch(inp, "value_and_grad")


def _grad(x, weight, target, /, **options):
    """The gradients only: ``LinearCrossEntropyGrads(x, weight, bias)``."""
    return _value_and_grad(x, weight, target, **options)[1]


linear_cross_entropy.value_and_grad = _value_and_grad
linear_cross_entropy.grad = _grad
