"""Memory-lean torch kernel for ``cross_entropy`` (plugged into ``interop.torch.LEAN_KERNELS``).

The generic bridge saves the inputs and recomputes the closed-form gradient with array-API
ops, which builds several N×C temporaries (one-hot, softmax, products): its peak is about 5×
the logits. This kernel keeps, between forward and backward, only what the generic bridge
keeps (the logits, the targets, the reduction multiplier), never the softmax or the
log-softmax, and works through the rows in chunks of at most 2**22 elements:

* forward: per chunk, one fused ``log_softmax`` into a reused chunk buffer, ℓ = −log p_y
  (times ``class_weight[y]``);
* backward: the gradient buffer G (the size of the logits) is filled chunk by chunk: fused
  ``softmax`` straight into G, then in place s_i·(p − onehot(y)) (s = reduction multiplier ×
  incoming gradient × ``class_weight[y_i]``, 0 for ignored/masked rows), so the peak is
  logits + G + one chunk.

The per-row LSE is *not* saved: recomputing max and Σexp inside the fused softmax kernel (on a
chunk that is in cache) measured faster on CPU than exp(z − LSE) from a saved LSE, because
``torch.exp`` is slower than the exp inside the softmax kernels; the kernel API still allows
a residual (``forward`` returns ``(value, residual or None)``).

Class-id targets without label smoothing take this path. Probability targets and label
smoothing run the shared declaration (``_loss.evaluate``) chunk by chunk into the same
preallocated G, so their peak is also logits + G + chunk temporaries. Double backward
(``create_graph=True``) is handled by the caller, which falls back to the differentiable
closed form of the generic bridge.
"""

from __future__ import annotations

import torch

from .._loss import evaluate
from .._reduce import is_scalar, reduce_terms

# Rows per chunk × classes: between 2**16 and 2**22 elements (16 MiB of float32), about 1/8 of
# the logits. Few, large chunks: every op is one OpenMP region, and on a loaded machine many
# small regions cost more than the cache locality of small chunks gains.
MIN_CHUNK, MAX_CHUNK = 1 << 16, 1 << 22


def _step(n, k):
    elems = max(MIN_CHUNK, min(MAX_CHUNK, (n * k) // 8))
    return max(1, elems // max(k, 1))


def _rows(pred):
    """``pred`` (kernel layout, classes last) as a (rows, C) view, or None when that would copy."""
    c = int(pred.shape[-1])
    try:
        return pred.view(-1, c)
    except RuntimeError:
        return None


def _flat(a, n):
    """A per-sample array (or scalar) as (n,) rows, or the scalar itself."""
    if a is None or is_scalar(a):
        return a
    return a.reshape(n)


def _fast(o) -> bool:
    return o["target_kind"] == "ids" and not o["label_smoothing"]


class CrossEntropyKernel:
    """forward -> (value, lse); backward(c_up) -> d value / d pred. See the module doc."""

    name = "cross_entropy"

    @staticmethod
    def applies(call, pred, target, c, valid, aux) -> bool:
        size = pred.numel()
        return pred.ndim > 0 and size > 0 and (size <= MIN_CHUNK or _rows(pred) is not None)

    @staticmethod
    def forward(call, pred, target, c, valid, aux, xp):
        o = call.options(aux)
        if _fast(o) and pred.numel() <= MIN_CHUNK:
            # one chunk: no buffers, three fused ops (small batches are overhead-bound)
            z = pred if torch.finfo(pred.dtype).bits >= 32 else pred.float()
            nll = torch.log_softmax(z, -1).gather(-1, target[..., None])[..., 0].neg_()
            cw = o["class_weight"]
            per_sample = nll if cw is None else nll * cw[target]
            return reduce_terms(per_sample, c, valid, call.reduction, xp), None
        p2 = _rows(pred)
        n, k = p2.shape
        cd = torch.float32 if torch.finfo(pred.dtype).bits < 32 else pred.dtype
        step = _step(n, k)
        fast = _fast(o)
        t2 = target.reshape(n) if o["target_kind"] == "ids" else target.reshape(n, k)
        c2, v2 = _flat(c, n), _flat(valid, n)
        cw = o["class_weight"]
        if fast:
            per_sample = torch.empty(n, dtype=cd, device=pred.device)
            buf = torch.empty((min(step, n), k), dtype=cd, device=pred.device)
        parts = []
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            z = p2[r0:r1]
            z = z if z.dtype == cd else z.to(cd)
            if fast:
                # one fused kernel (max, Σexp, write) into a reused chunk buffer; ℓ = −log p_y
                logp = torch.log_softmax(z, 1, out=buf[: r1 - r0])
                tc = t2[r0:r1]
                nll = logp.gather(1, tc[:, None])[:, 0].neg_()
                per_sample[r0:r1] = nll if cw is None else nll * cw[tc]
            else:
                cc = c2 if c2 is None or is_scalar(c2) else c2[r0:r1]
                vc = None if v2 is None else v2[r0:r1]
                parts.append(evaluate(call, z, t2[r0:r1], cc, vc, aux, xp, "value"))
        if fast:
            value = reduce_terms(per_sample.reshape(pred.shape[:-1]), c, valid, call.reduction, xp)
        elif call.reduction == "none":
            value = torch.cat(parts).reshape(pred.shape[:-1])
        else:
            value = torch.stack(parts).sum() if parts else torch.zeros((), dtype=cd, device=pred.device)
        return value, None

    @staticmethod
    def backward(call, pred, target, c_up, valid, aux, residual, xp):
        o = call.options(aux)
        cw = o["class_weight"]
        if _fast(o) and pred.numel() <= MIN_CHUNK and torch.finfo(pred.dtype).bits >= 32 and isinstance(c_up, torch.Tensor):
            # small batch: s_i (p − onehot(y)) in three in-place ops on the softmax
            s = c_up if c_up.ndim == 0 else c_up[..., None]
            if cw is not None:
                s = s * cw[target][..., None]
            if valid is not None:
                s = torch.where(valid[..., None], s, 0.0)
            idx = target[..., None]
            grad = torch.softmax(pred, -1).mul_(s)
            return grad.scatter_add_(-1, idx, (-s).expand(idx.shape))
        p2 = _rows(pred)
        n, k = p2.shape
        cd = torch.float32 if torch.finfo(pred.dtype).bits < 32 else pred.dtype
        step = _step(n, k)
        grad = torch.empty((n, k), dtype=pred.dtype, device=pred.device)
        t2 = target.reshape(n) if o["target_kind"] == "ids" else target.reshape(n, k)
        v2 = _flat(valid, n)
        if _fast(o):
            # row scales s_i = c_i · grad_out_i · class_weight[y_i], 0 where not valid
            s = c_up if isinstance(c_up, torch.Tensor) else torch.tensor(c_up, dtype=cd, device=pred.device)
            if s.ndim or cw is not None or v2 is not None:
                s = torch.broadcast_to(s.to(cd), pred.shape[:-1]).reshape(n)
                if cw is not None:
                    s = s * cw[t2]
                if v2 is not None:
                    s = torch.where(v2, s, torch.zeros_like(s))
                s_col = s[:, None]
            else:
                s_col = torch.broadcast_to(s.to(cd), (n, 1))  # one scale for every row: no per-row array
            low = pred.dtype != cd
            big = float(torch.finfo(pred.dtype).max) if low else None
            for r0 in range(0, n, step):
                r1 = min(n, r0 + step)
                z = p2[r0:r1]
                out = torch.empty((r1 - r0, k), dtype=cd, device=pred.device) if low else grad[r0:r1]
                # the fused softmax kernel recomputes max and Σexp from the chunk: on CPU this is
                # ~2x faster than exp(z − LSE) from a saved LSE (torch's exp_ is not the fast
                # exp its softmax kernel uses), so the LSE is not kept
                torch.softmax(z if not low else z.to(cd), 1, out=out)
                out.mul_(s_col[r0:r1])
                out.scatter_add_(1, t2[r0:r1, None], -s_col[r0:r1])
                if v2 is not None:
                    out.masked_fill_(~v2[r0:r1, None], 0.0)
                if low:
                    grad[r0:r1] = out.clamp_(-big, big)
        else:
            c2 = _flat(c_up, n)
            for r0 in range(0, n, step):
                r1 = min(n, r0 + step)
                cc = c2 if is_scalar(c2) else c2[r0:r1]
                vc = None if v2 is None else v2[r0:r1]
                grad[r0:r1] = evaluate(call, p2[r0:r1], t2[r0:r1], cc, vc, aux, xp, "grad")
        return grad.view(pred.shape)

