"""``lk.cross_entropy`` under ``torch.compile`` for the plain case, written for Inductor to fuse.

The opaque operator of ``torch_lean`` (``losskit::cross_entropy``) runs the eager lean kernel:
eager memory, but several separate passes over the logits (log_softmax into a chunk buffer;
softmax into G, then scale, scatter and zero rows), where Inductor's C++/OpenMP code for a traced
loss reads the logits about twice in the forward and once in the backward (one fused kernel
each). So for what it can cover exactly — float32/float64 logits, class ids on the last axis,
``ignore_index``, any reduction, no weights, mask, class weights, normalizer, smoothing or
z-loss — ``compiled_call`` sends the loss here and Inductor traces it:

* forward (one fused kernel): m = max z, r = log1p(Σ_{z_k < m} e^{z_k − m} + ties − 1),
  ℓ_i = (m − z_{y_i}) + r (the precise split of ``_array.logsumexp_split``: a confident right
  prediction keeps its relative precision), 0 on ignored rows, then the reduction;
* backward (one fused kernel): G = s_i (e^{z − LSE} − onehot(y_i)), exactly 0 on ignored rows
  (a ``where``, never 0·NaN), s_i the incoming gradient times the reduction multiplier.

An ``autograd.Function`` fixes the backward formula, so what is saved is the logits (by
reference), the ids and the per-row LSE: no N×C tensor, the eager memory profile. The class-id
check is data-dependent, so it runs in a small opaque operator (``losskit::cross_entropy_ids``)
whose output, the ids with ignored rows set to 0, feeds the loss: it cannot be reordered or
dropped, and it raises the eager message for an out-of-range id.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import _validate
from .._array import namespace

TRACED_DTYPES = (torch.float32, torch.float64)
# False sends every call to the opaque operator (benchmarks compare the two; read when traced)
ENABLED = True
_REDUCTIONS = ("mean", "sum", "none")


def _ids(target: torch.Tensor, ignore_index: Optional[int]) -> torch.Tensor:
    """int64 class ids with ignored rows at 0 (a safe index for the gather)."""
    ids = target if target.dtype == torch.int64 else target.to(torch.int64)
    if ignore_index is not None:
        ids = torch.where(ids != ignore_index, ids, 0)
    return ids


@torch.library.custom_op("losskit::cross_entropy_ids", mutates_args=())
def checked_ids(target: torch.Tensor, num_classes: int, ignore_index: Optional[int]) -> torch.Tensor:
    """``_ids(target)``, after the eager check that every id not ignored is in [0, C) (the
    ValueError of ``lk.cross_entropy``, naming the first bad id and its position)."""
    ids = _ids(target, ignore_index)
    _validate.check_class_ids(ids, num_classes, ignore_index, "cross_entropy", namespace(ids))
    return ids.clone() if ids is target else ids  # a custom op's output never aliases an input


@checked_ids.register_fake
def _(target, num_classes, ignore_index):
    return torch.empty_like(target, dtype=torch.int64)


class PreciseCrossEntropy(torch.autograd.Function):
    """(rows, C) logits, (rows,) int64 ids (ignored rows at a safe id), (rows,) bool ``valid``
    or None -> the reduced loss (``reduction`` "mean" over valid rows, "sum" or "none")."""

    @staticmethod
    def forward(ctx, z, ids, valid, reduction):
        m = torch.amax(z, -1, keepdim=True)
        shift = torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)  # where(isfinite(m), m, 0)
        below = z < m
        t = torch.where(below, torch.exp(z - shift), 0.0).sum(-1, keepdim=True)
        # the other maxima count 1 each; an int32 count: cheaper in Inductor's loop than a
        # second float accumulator (forward 0.99-1.23x compiled torch's, against 1.12-1.33x)
        ties = (~below).sum(-1, keepdim=True, dtype=torch.int32) - 1
        r = torch.log1p(t + ties.to(z.dtype))
        per_row = ((m - z.gather(-1, ids[:, None])) + r)[:, 0]
        if valid is not None:
            per_row = torch.where(valid, per_row, 0.0)
        if reduction == "none":
            scale = None
            value = per_row
        elif reduction == "sum":
            scale = None
            value = per_row.sum()
        else:  # mean over valid rows; an empty selection gives 0 with zero gradient
            count = z.shape[0] if valid is None else valid.sum(dtype=z.dtype).clamp(min=1.0)
            scale = 1.0 / count
            value = per_row.sum() * scale
        ctx.reduction = reduction
        ctx.scale_is_tensor = isinstance(scale, torch.Tensor)
        ctx.scale = None if ctx.scale_is_tensor else scale
        ctx.save_for_backward(z, ids, valid, (m + r)[:, 0], scale if ctx.scale_is_tensor else None)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        z, ids, valid, lse, scale = ctx.saved_tensors
        if not ctx.scale_is_tensor:
            scale = ctx.scale
        s = grad_value if scale is None else grad_value * scale
        s = s[:, None] if ctx.reduction == "none" else s
        onehot = torch.arange(z.shape[-1], device=z.device) == ids[:, None]
        g = (torch.exp(z - lse[:, None]) - onehot.to(z.dtype)) * s
        if valid is not None:
            g = torch.where(valid[:, None], g, 0.0)  # exact zeros, even for NaN or inf logits
        return g, None, None, None


def covers(logits, target, reduction, validate, axis, ignore_index, options_plain) -> bool:
    """Whether ``traced_cross_entropy`` computes this call exactly (else the opaque operator):
    float32/64 logits with the classes last, int ids of the logits' sample shape, a known
    reduction and no other option. Everything the eager call would reject goes to the
    operator, which raises the eager error."""
    return (
        ENABLED
        and options_plain
        and logits.dtype in TRACED_DTYPES
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


def traced_cross_entropy(logits, target, reduction: str, validate: bool, ignore_index: Optional[int]):
    """``lk.cross_entropy(logits, target, reduction=..., ignore_index=...)`` in traceable torch
    ops (see the module doc); ``covers`` must hold."""
    num_classes = int(logits.shape[-1])
    target = target if target.dtype == torch.int64 else target.to(torch.int64)  # as eager: uint8 never wraps
    ids = checked_ids(target, num_classes, ignore_index) if validate else _ids(target, ignore_index)
    valid = None if ignore_index is None else target != ignore_index
    rows = logits.reshape(-1, num_classes)
    value = PreciseCrossEntropy.apply(rows, ids.reshape(-1), None if valid is None else valid.reshape(-1), reduction)
    return value.reshape(logits.shape[:-1]) if reduction == "none" else value
