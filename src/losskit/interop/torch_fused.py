"""PyTorch kernels for ``losskit.fused.linear_cross_entropy``: one ``torch.autograd.Function``
over a loop of row chunks.

Per chunk of ``rows`` tokens the logits slab z = x_c Wᵀ + b (rows × V) is written into one
preallocated float32 buffer (plus one in the input dtype for half inputs), and everything after
the GEMM happens in place in that buffer: LSE, per-row loss, then the logits gradient
G = s·(∂ℓ/∂z), which feeds dx_c = G W, dW += Gᵀ x_c (float32 accumulator) and db += Σ G.
Buffers are reused across chunks, so the peak is (x, W and their gradients) + one or two slabs.

What is kept for backward (the memory model, see ``docs/linear_cross_entropy.md``):

* ``grad_in_forward=False`` (and always for ``reduction="none"``): x, W, b, target, the
  per-row multiplier and the per-row LSE (N floats); backward recomputes each chunk's logits
  (one more GEMM per chunk) and scales each row by its own incoming gradient.
* ``grad_in_forward=None/True`` with ``"mean"``/``"sum"`` and a gradient needed: the forward
  pass already computes dx, dW, db for a unit cotangent (3 GEMMs per chunk in total instead of
  4) and backward multiplies them, in place, by the scalar incoming gradient. That buffer is
  consumed: a second ``backward`` through the same graph raises.

The fast in-place kernel covers class-id targets without label smoothing (with class weights,
z-loss, softcap, ignore_index); probability targets and label smoothing run the generic
array-API chunk math of ``fused.linear_cross_entropy.chunk_math`` on the same slab.

Masked and ignored tokens contribute exactly nothing, whatever their hidden state holds: G is
overwritten with 0 on their rows (never 0·NaN), and dW = Gᵀx reads x with those rows zeroed
(one chunk-sized copy of x per chunk, only when a mask or ``ignore_index`` is given), so a NaN
or inf padding row leaves dx of its row at 0 and dW, db finite. Class ids arrive as int64
(``prepare`` converts other integer dtypes for torch).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .._array import compute_dtype
from .._reduce import reduce_terms, scale_elementwise
from ..fused.linear_cross_entropy import (
    NAME,
    Config,
    Inputs,
    LinearCrossEntropyExtras,
    LinearCrossEntropyGrads,
    accuracy_from,
    chunk_math,
)

_xp_cache: list = []


def _xp():
    if not _xp_cache:
        from .._array import namespace

        _xp_cache.append(namespace(torch.empty(0)))
    return _xp_cache[0]


def _fast(cfg: Config) -> bool:
    return cfg.target_kind == "ids" and not cfg.label_smoothing


def _fast_chunk(z, t, cw, cfg: Config, s, lse_in, valid_c, extras):
    """In-place kernel on the slab ``z`` (rows, V), compute dtype, class ids ``t`` (rows,).

    Forward (``lse_in`` None): returns per-row value and LSE (and extras). With row scales
    ``s`` (rows,) it also overwrites ``z`` with G = s·∂ℓ/∂zraw and returns it. Backward
    (``lse_in`` given): only G, from the saved LSE.
    """
    cap = cfg.softcap
    zl = cfg.z_loss_weight
    deriv = None
    if cap is not None:
        z.div_(cap).tanh_()
        if s is not None:
            deriv = torch.mul(z, z).neg_().add_(1.0)  # ∂(s·tanh(z/s))/∂z = 1 − tanh²
        z.mul_(cap)
    idx = t[:, None]
    cwy = None if cw is None else cw[t]
    value = ext = inv = None
    if lse_in is None:
        zy = z.gather(1, idx)[:, 0]
        correct = (z.argmax(1) == t) if extras else None
        m = z.amax(1)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        z.sub_(m[:, None]).exp_()
        total = z.sum(1)
        lse = total.log().add_(m)
        value = lse - zy
        if cwy is not None:
            value = value * cwy
        if zl:
            value = value + zl * lse * lse
        if extras:
            ext = (zy - lse, correct)
        if s is None:
            return value, lse, None, ext
        inv = total.reciprocal()
    else:
        lse = lse_in
        z.sub_(lse[:, None]).exp_()  # softmax
    # G = s·[(cw_y + 2λ·LSE)·softmax − cw_y·onehot(y)]
    sq = s if cwy is None else s * cwy
    coef = sq + (2.0 * zl) * lse * s if zl else sq
    if inv is not None:
        coef = coef * inv
    z.mul_(coef[:, None])
    z.scatter_add_(1, idx, -sq[:, None])
    if deriv is not None:
        z.mul_(deriv)
    if valid_c is not None:
        z.masked_fill_(~valid_c[:, None], 0.0)  # exact zeros for ignored rows, even with NaN inputs
    return value, lse, z, ext


def _generic_chunk(z, t, cw, cfg: Config, s, lse_in, valid_c, extras):
    """The shared array-API math (``chunk_math``), for probability targets and smoothing."""
    xp = _xp()
    value, lse, g, ext = chunk_math(z, t, cw, cfg, xp, grad=s is not None, extras=extras, lse=lse_in)
    if g is not None:
        g = scale_elementwise(g, s, valid_c, True, xp)
    return value, lse, g, ext


def _chunks(x2, w, b, t, s, valid, cw, cfg: Config, need, extras=False, lse_in=None, kernel=None):
    """Run all chunks. ``s`` (N,) are the row scales of G (None: value only); ``need`` says
    which of (dx, dW, db) to accumulate; ``lse_in`` (N,) selects the backward (recompute)
    mode. Returns (values, lse, tlp, correct, gx, gw, gb) with gw/gb in float32 (compute
    dtype) and gx in x's dtype.

    ``kernel`` replaces the per-chunk kernel (the signature of ``_fast_chunk``; it may
    overwrite the slab ``z`` it is given). ``t`` is only sliced by rows (``t[r0:r1]``) and
    handed to the kernel, so a custom kernel may pass any row-sliceable per-row state:
    ``losskit.distributed`` uses this to gather per-row statistics of a vocabulary shard."""
    n, h = x2.shape
    v = w.shape[0]
    cd = compute_dtype(x2.dtype, _xp())
    low = x2.dtype != cd
    rows = max(1, min(cfg.chunk_size, n))
    if kernel is None:
        kernel = _fast_chunk if _fast(cfg) else _generic_chunk
    backward = lse_in is not None
    values = lse = tlp = correct = None
    if not backward:
        values = torch.empty(n, dtype=cd, device=x2.device)
        lse = torch.empty(n, dtype=cd, device=x2.device)
        if extras:
            tlp = torch.empty(n, dtype=cd, device=x2.device)
            correct = torch.empty(n, dtype=torch.bool, device=x2.device)
    gx = torch.empty((n, h), dtype=x2.dtype, device=x2.device) if need[0] else None
    gw = torch.zeros((v, h), dtype=cd, device=x2.device) if need[1] else None
    gw_part = torch.empty((v, h), dtype=x2.dtype, device=x2.device) if need[1] and low else None
    gb = torch.zeros((v,), dtype=cd, device=x2.device) if need[2] else None
    if n == 0:
        return values, lse, tlp, correct, gx, gw, gb
    slab = torch.empty((rows, v), dtype=cd, device=x2.device)
    slab_low = torch.empty((rows, v), dtype=x2.dtype, device=x2.device) if low else None
    # x rows for dW = Gᵀx with the rows that are not valid zeroed (see masked_rows)
    x_valid = torch.empty((rows, h), dtype=x2.dtype, device=x2.device) if gw is not None and valid is not None and s is not None else None
    wt = w.t()
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        r = r1 - r0
        xc = x2[r0:r1]
        # logits of this chunk, straight into the reused buffers
        out = slab_low[:r] if low else slab[:r]
        if b is None:
            torch.mm(xc, wt, out=out)
        else:
            torch.addmm(b, xc, wt, out=out)
        z = slab[:r]
        if low:
            z.copy_(out)
        sc = None if s is None else s[r0:r1]
        vc = None if valid is None else valid[r0:r1]
        value, lse_c, g, ext = kernel(z, t[r0:r1], cw, cfg, sc, None if lse_in is None else lse_in[r0:r1], vc, extras)
        if not backward:
            values[r0:r1] = value
            lse[r0:r1] = lse_c
            if extras:
                tlp[r0:r1] = ext[0]
                correct[r0:r1] = ext[1]
        if g is None:
            continue
        if low:
            gl = slab_low[:r]
            gl.copy_(g)
        else:
            gl = g
        if gx is not None:
            torch.mm(gl, w, out=gx[r0:r1])
        if gw is not None:
            if x_valid is not None:
                # G is 0 on masked / ignored rows, but 0·NaN is NaN: a NaN or inf hidden state
                # of a padding token would poison all of dW through the GEMM
                xc = x_valid[:r].copy_(xc).masked_fill_(~vc[:, None], 0.0)
            if low:
                # the GEMM accumulates in float32 inside one chunk; partial sums across chunks
                # are added in float32
                torch.mm(gl.t(), xc, out=gw_part)
                gw.add_(gw_part)
            else:
                gw.addmm_(gl.t(), xc)
        if gb is not None:
            gb.add_(g.sum(0))
    return values, lse, tlp, correct, gx, gw, gb


def _row_scale(c, valid, n, cd, device):
    if isinstance(c, float):
        s = torch.full((n,), c, dtype=cd, device=device)
    else:
        c = c.detach().to(cd)
        s = c.expand(n).clone() if c.ndim == 0 else c
    if valid is not None:
        s = torch.where(valid, s, torch.zeros_like(s))
    return s


def _reduce(values, c, valid, reduction):
    return reduce_terms(values, c, valid, reduction, _xp())


class LinearCrossEntropyFunction(torch.autograd.Function):
    """forward(x2, w, b, t, s, c, valid, cw, cfg, need, extras) -> (loss, lse, tlp, correct)."""

    @staticmethod
    def forward(ctx, x2, w, b, t, s, c, valid, cw, cfg, need, extras):
        pre = any(need) and cfg.reduction != "none" and cfg.grad_in_forward is not False
        values, lse, tlp, correct, gx, gw, gb = _chunks(x2, w, b, t, s if pre else None, valid, cw, cfg, need if pre else (False,) * 3, extras)
        loss = _reduce(values, c, valid, cfg.reduction)
        ctx.cfg = cfg
        ctx.pre = pre
        ctx.dtypes = (x2.dtype, w.dtype, None if b is None else b.dtype)
        if pre:
            ctx.grads = (gx, gw, gb)
        else:
            ctx.save_for_backward(x2, w, b, t, s, valid, cw, lse)
        outs = (loss,) + ((lse, tlp, correct) if extras else ())
        ctx.mark_non_differentiable(*outs[1:])
        return outs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, *_):
        needs = ctx.needs_input_grad[:3]
        if ctx.pre:
            if ctx.grads is None:
                raise RuntimeError(
                    f"{NAME}: backward ran twice through the same graph, but with grad_in_forward the gradients are "
                    "computed in the forward pass and consumed by the first backward. Pass grad_in_forward=False "
                    "to recompute them in backward (then retain_graph=True works)."
                )
            gx, gw, gb = ctx.grads
            ctx.grads = None
            g = grad_loss
            out = []
            for grad, dt, need in zip((gx, gw, gb), ctx.dtypes, needs):
                if grad is None or not need:
                    out.append(None)
                    continue
                grad.mul_(g)
                out.append(grad if grad.dtype == dt else grad.to(dt))
            return (*out,) + (None,) * 8
        x2, w, b, t, s, valid, cw, lse = ctx.saved_tensors
        cfg = ctx.cfg
        s_ct = s * grad_loss.to(s.dtype)
        need = (needs[0], needs[1], needs[2] and b is not None)
        _, _, _, _, gx, gw, gb = _chunks(x2, w, b, t, s_ct, valid, cw, cfg, need, lse_in=lse)
        gw = None if gw is None else gw.to(w.dtype)
        gb = None if gb is None else gb.to(b.dtype)
        return (gx, gw, gb) + (None,) * 8


def run(inp: Inputs, need: str, extras: bool):
    x2, w, b, t = inp.x2, inp.weight, inp.bias, inp.target
    cfg = inp.cfg
    n = int(x2.shape[0])
    cd = compute_dtype(x2.dtype, _xp())
    s = _row_scale(inp.c, inp.valid, n, cd, x2.device)
    xp = _xp()
    if need == "value_and_grad":
        with torch.no_grad():
            want = (True, True, b is not None)
            values, lse, tlp, correct, gx, gw, gb = _chunks(x2, w, b, t, s, inp.valid, inp.class_weight, cfg, want)
            loss = _reduce(values, inp.c, inp.valid, cfg.reduction)
            if cfg.reduction == "none":
                loss = loss.reshape(inp.lead_shape)
            grads = LinearCrossEntropyGrads(gx.reshape(inp.x_shape), gw.to(w.dtype), None if gb is None else gb.to(b.dtype))
            return loss, grads
    grad_on = torch.is_grad_enabled() and (x2.requires_grad or w.requires_grad or (b is not None and b.requires_grad))
    if grad_on:
        want = (x2.requires_grad, w.requires_grad, b is not None and b.requires_grad)
        outs = LinearCrossEntropyFunction.apply(x2, w, b, t, s, inp.c, inp.valid, inp.class_weight, cfg, want, extras)
    else:
        with torch.no_grad():
            values, lse, tlp, correct, *_ = _chunks(x2, w, b, t, None, inp.valid, inp.class_weight, cfg, (False,) * 3, extras)
            outs = (_reduce(values, inp.c, inp.valid, cfg.reduction),) + ((lse, tlp, correct) if extras else ())
    loss = outs[0]
    if cfg.reduction == "none":
        loss = loss.reshape(inp.lead_shape)
    if not extras:
        return loss
    lse, tlp, correct = outs[1:]
    if inp.valid is not None:
        tlp = torch.where(inp.valid, tlp, torch.zeros_like(tlp))
    acc = accuracy_from(correct, inp.valid, lse.dtype, xp)
    return LinearCrossEntropyExtras(loss, lse.reshape(inp.lead_shape), tlp.reshape(inp.lead_shape), acc)
