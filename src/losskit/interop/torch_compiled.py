"""``lk.cross_entropy`` under ``torch.compile`` for the plain case, written for Inductor to fuse.

The opaque operator of ``torch_lean`` (``losskit::cross_entropy``) runs the eager lean kernel:
eager memory, but several separate passes over the logits (log_softmax into a chunk buffer;
softmax into G, then scale, scatter and zero rows), where Inductor's C++/OpenMP code for a traced
loss reads the logits about twice in the forward and once in the backward (one fused kernel
each). So for what it computes exactly — float32/float64 logits, class ids on the last axis,
``ignore_index``, any reduction, label smoothing (both formulas) and z-loss; no weights,
mask, class weights or normalizer — ``torch_lean.compiled_call`` sends the loss here (which
options it sends: its ``covers`` call) and Inductor traces it:

* forward (one fused kernel): m = max z, r = log1p(Σ_{z_k < m} e^{z_k − m} + ties − 1),
  ℓ_i = (m − z_{y_i}) + r (the precise split of ``_array.logsumexp_split``: a confident right
  prediction keeps its relative precision), 0 on ignored rows, then the reduction (label
  smoothing and z-loss: ``PreciseCrossEntropy``);
* backward (one fused kernel): G = s_i (e^{z − LSE} − onehot(y_i)), exactly 0 on ignored rows
  (a ``where``, never 0·NaN), s_i the incoming gradient times the reduction multiplier.

An ``autograd.Function`` fixes the backward formula, so what is saved is the logits (by
reference), the ids and the per-row LSE: no N×C tensor, the eager memory profile. The class-id
check is data-dependent, so it runs in a small opaque operator
(``losskit::cross_entropy_check_ids``) that takes the loss value and returns it (gradient passed
through), after the fused kernel: it cannot be reordered or dropped, it raises the eager message
for an out-of-range id, and the kernel meanwhile reads such ids as 0.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .. import _validate
from .._array import namespace

TRACED_DTYPES = (torch.float32, torch.float64)
# False sends every call to the opaque operator (benchmarks compare the two; read when traced)
ENABLED = True
_REDUCTIONS = ("mean", "sum", "none")


@torch.library.custom_op("losskit::cross_entropy_check_ids", mutates_args=())
def checked_value(value: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: Optional[int], loss: str) -> torch.Tensor:
    """``value``, after the eager check that every id of ``target`` not ignored is in [0, C)
    (the ValueError of ``loss``, naming the first bad id and its position). The traced
    ``cross_entropy`` and ``linear_cross_entropy`` both run it after their fused kernels."""
    ids = target if ignore_index is None else torch.where(target != ignore_index, target, 0)
    _validate.check_class_ids(ids, num_classes, ignore_index, loss, namespace(ids))
    return value.clone()  # a custom op's output never aliases an input


@checked_value.register_fake
def _(value, target, num_classes, ignore_index, loss):
    return torch.empty_like(value)


def _check_setup(ctx, inputs, output):
    pass


def _check_backward(ctx, grad):
    return grad, None, None, None, None


checked_value.register_autograd(_check_backward, setup_context=_check_setup)


def logsumexp_split(z):
    """(m, r) along the last axis (kept), LSE = m + r: m = max z, r = log1p(Σ_{z_k < m}
    e^{z_k − m} + ties − 1) (the precise split of ``_array.logsumexp_split``), in traceable
    ops that Inductor fuses into one pass; shared by ``PreciseCrossEntropy`` and the traced
    linear cross-entropy of ``torch_fused``."""
    m = torch.amax(z, -1, keepdim=True)
    shift = torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)  # where(isfinite(m), m, 0)
    below = z < m
    t = torch.where(below, torch.exp(z - shift), 0.0).sum(-1, keepdim=True)
    # the other maxima count 1 each; an int32 count: cheaper in Inductor's loop than a
    # second float accumulator (forward 0.99-1.23x compiled torch's, against 1.12-1.33x)
    ties = (~below).sum(-1, keepdim=True, dtype=torch.int32) - 1
    return m, torch.log1p(t + ties.to(z.dtype))


class PreciseCrossEntropy(torch.autograd.Function):
    """(..., C) logits, (...) int64 ids (ignored rows at a safe id), (...) bool ``valid`` or
    None -> the reduced loss (``reduction`` "mean" over valid rows, "sum" or "none"), with
    label smoothing ``alpha`` (PyTorch's formula; Megatron's arrives converted) and z-loss
    ``z_loss`` (Python floats). Any layout: every op works along the last axis, nothing is
    reshaped (a reshape of strided logits would be an N×C copy).

    ℓ = Σ_k q_k (LSE − z_k) + λ·LSE², q = (1 − α)·onehot(y) + (α/C)·[z_k > −inf] (classes
    whose logit is −inf stay out of the α/C term, as in ``lk.cross_entropy``), written as
    (1 − α)·((m − z_y) + r) + (α/C)·(Σ_{finite} (m − z_k) + n_f·r): sums of non-negative
    terms, r = log1p(rest) of the precise split. Gradient (Σq + 2λ·LSE)·softmax(z) − q."""

    @staticmethod
    def forward(ctx, z, ids, valid, reduction, alpha, z_loss):
        m, r = logsumexp_split(z)
        lse = m + r
        per_row = (m - z.gather(-1, ids[..., None])) + r
        n_finite = None
        if alpha:
            finite = z != -math.inf
            n_finite = finite.sum(-1, keepdim=True, dtype=torch.int32)
            spread = torch.where(finite, m - z, 0.0).sum(-1, keepdim=True) + n_finite.to(z.dtype) * r
            per_row = (1.0 - alpha) * per_row + (alpha / z.shape[-1]) * spread
        if z_loss:
            per_row = per_row + z_loss * lse * lse
        per_row = per_row[..., 0]
        if valid is not None:
            per_row = torch.where(valid, per_row, 0.0)
        if reduction == "none":
            scale = None
            value = per_row
        elif reduction == "sum":
            scale = None
            value = per_row.sum()
        else:  # mean over valid rows; an empty selection gives 0 with zero gradient
            count = ids.numel() if valid is None else valid.sum(dtype=z.dtype).clamp(min=1.0)
            scale = 1.0 / count
            value = per_row.sum() * scale
        ctx.reduction, ctx.alpha, ctx.z_loss = reduction, alpha, z_loss
        ctx.scale_is_tensor = isinstance(scale, torch.Tensor)
        ctx.scale = None if ctx.scale_is_tensor else scale
        ctx.save_for_backward(z, ids, valid, lse, scale if ctx.scale_is_tensor else None, n_finite)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        z, ids, valid, lse, scale, n_finite = ctx.saved_tensors
        alpha, z_loss = ctx.alpha, ctx.z_loss
        if not ctx.scale_is_tensor:
            scale = ctx.scale
        s = grad_value if scale is None else grad_value * scale
        s = s[..., None] if ctx.reduction == "none" else s
        q = (torch.arange(z.shape[-1], device=z.device) == ids[..., None]).to(z.dtype)
        coef = None
        if alpha:
            spread = alpha / z.shape[-1]
            q = (1.0 - alpha) * q + spread * (z != -math.inf).to(z.dtype)
            coef = (1.0 - alpha) + spread * n_finite.to(z.dtype)  # Σq
        if z_loss:
            coef = (2.0 * z_loss) * lse + (1.0 if coef is None else coef)
        p = torch.exp(z - lse)
        g = ((p if coef is None else coef * p) - q) * s
        if valid is not None:
            g = torch.where(valid[..., None], g, 0.0)  # exact zeros, even for NaN or inf logits
        return g, None, None, None, None, None


def covers(logits, target, reduction, validate, axis, ignore_index, unweighted, smoothing=0.0, z_loss=0.0, formula="pytorch") -> bool:
    """Whether ``traced_cross_entropy`` computes this call exactly (else the opaque operator):
    float32/64 logits with the classes last, int ids of the logits' sample shape, a known
    reduction, ``unweighted`` (no weight, mask, class weights or normalizer), and label
    smoothing / z-loss values their rules accept. Everything the eager call would reject
    goes to the operator, which raises the eager error."""
    if not (ENABLED and unweighted and formula in ("pytorch", "megatron") and 0.0 <= smoothing <= 1.0):
        return False
    if not (0.0 <= z_loss < math.inf):
        return False
    c = logits.shape[-1] if logits.ndim else 0
    if smoothing and formula == "megatron" and (c < 2 or smoothing * c / (c - 1) > 1.0):
        return False
    return (
        logits.dtype in TRACED_DTYPES
        and logits.ndim >= 2
        and logits.numel() > 0
        and axis % logits.ndim == logits.ndim - 1
        and reduction in _REDUCTIONS
        and not target.is_floating_point()
        and not target.is_complex()
        and target.dtype != torch.bool
        and tuple(target.shape) == tuple(logits.shape[:-1])
        and target.device == logits.device
    )


def traced_cross_entropy(logits, target, reduction: str, validate: bool, ignore_index: Optional[int], smoothing: float = 0.0,
                         z_loss: float = 0.0, formula: str = "pytorch"):
    """``lk.cross_entropy(logits, target, reduction=..., ignore_index=..., label_smoothing=...,
    z_loss=..., smoothing_formula=...)`` in traceable torch ops (see the module doc);
    ``covers`` must hold."""
    num_classes = int(logits.shape[-1])
    target = target if target.dtype == torch.int64 else target.to(torch.int64)  # as eager: uint8 never wraps
    valid = None if ignore_index is None else target != ignore_index
    ids = target if valid is None else torch.where(valid, target, 0)  # ignored rows: a safe id
    if validate:
        # out-of-range ids read as 0 by the fused kernel, and the check after it raises: an
        # operator before the kernel cost ~4 ms of OpenMP thread wake-up per step under load.
        # (validate=False: Inductor's gather raises its own "index out of bounds" error)
        ids = torch.where((ids >= 0) & (ids < num_classes), ids, 0)
    alpha = float(smoothing)
    if alpha and formula == "megatron":  # the PyTorch formula's α (as _ce_alpha)
        alpha = alpha * num_classes / (num_classes - 1)
    value = PreciseCrossEntropy.apply(logits, ids, valid, reduction, alpha, float(z_loss))
    return checked_value(value, target, num_classes, ignore_index, "cross_entropy") if validate else value
