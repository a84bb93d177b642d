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

import math
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from .._array import compute_dtype
from .._reduce import reduce_terms, scale_elementwise
from .torch_compiled import checked_value, logsumexp_split
from .torch_lean import _EMPTY_INT, stash, zero_rows_
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


# elements of the partial-dW buffer of half inputs (classes × H): 8 MiB in bfloat16. Few, large
# blocks: on a loaded machine every multithreaded op pays for a barrier, so many small GEMMs and
# adds (measured with 2**18) cost more than the traffic a cache-sized buffer saves
_DW_BLOCK = 1 << 22
# elements of the float32 work buffer of half inputs (rows × V, 64 MiB): the softmax and the
# gradient of a half-precision slab run on row blocks of at most this size, copied into it
# and back, so the slab itself is kept in the input dtype (half the bytes per row: more rows
# per chunk for the same memory, so fewer float32 read-modify-writes of dW). Large blocks: on
# a loaded machine each op's thread barrier costs milliseconds (row blocks of 64-256 rows
# measured 2-20x slower than one block at load 13)
_WORK_BLOCK = 1 << 24


def _fast(cfg: Config) -> bool:
    return cfg.target_kind == "ids" and not cfg.label_smoothing


def _fast_chunk(z, t, cw, cfg: Config, s, lse_in, valid_c, extras):
    """In-place kernel on the slab ``z`` (rows, V), compute dtype, class ids ``t`` (rows,).

    Forward (``lse_in`` None): returns per-row value and LSE (and extras). With row scales
    ``s`` (rows,) it also overwrites ``z`` with G = s·∂ℓ/∂zraw and returns it. Backward
    (``lse_in`` given): only G.

    The softmax is torch's fused in-place kernel (max, Σexp and the division in one pass per
    row: measured 2x faster on CPU than ``sub_``, ``exp_``, ``sum`` and a scaling pass, torch's
    own ``exp_`` being slower than the exp inside its softmax). The LSE comes from the softmax
    at the row's arg-max k: LSE = z_k − log p_k = max z − log max p, where p_k ≥ 1/V, so the
    log is well conditioned (the error is that of p_k, a few float32 ulps). In backward the softmax is
    recomputed the same way (it equals exp(z − LSE) of the saved LSE).
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
    value = ext = None
    if lse_in is None:
        zy = z.gather(1, idx)[:, 0]
        k = z.argmax(1) if extras else None
        m = z.amax(1)  # amax, not max(1): the indices cost a slower reduction
        torch.softmax(z, -1, out=z)
        lse = m - z.amax(1).log()  # the largest probability is that of the arg-max
        # a row of ±inf logits: LSE is its max (the softmax of such a row is NaN)
        lse = torch.where(torch.isfinite(m), lse, m)
        value = lse - zy
        if cwy is not None:
            value = value * cwy
        if zl:
            value = value + zl * lse * lse
        if extras:
            ext = (zy - lse, k == t)
        if s is None:
            return value, lse, None, ext
    else:
        lse = lse_in
        torch.softmax(z, -1, out=z)
    # G = s·[(cw_y + 2λ·LSE)·softmax − cw_y·onehot(y)]
    sq = s if cwy is None else s * cwy
    coef = sq + (2.0 * zl) * lse * s if zl else sq
    z.mul_(coef[:, None])
    z.scatter_add_(1, idx, -sq[:, None])
    if deriv is not None:
        z.mul_(deriv)
    if valid_c is not None:
        zero_rows_(z, valid_c)  # exact zeros for ignored rows, even with NaN inputs
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
    mode. Returns (values, lse, tlp, correct, gx, gw, gb) with gb in float32 (compute dtype),
    gx in x's dtype, and gw in float32, or in x's dtype for half inputs in one chunk (one GEMM
    then accumulates all rows in float32 and rounds once: no float32 accumulator is needed).

    Half inputs: the logits slab stays in the input dtype (the GEMMs' dtype); the kernel runs
    on float32 copies of row blocks of at most ``_WORK_BLOCK`` elements, and G is written back
    into the slab, in the input dtype, for the dx and dW GEMMs.

    ``kernel`` replaces the per-chunk kernel (the signature of ``_fast_chunk``; it may
    overwrite the slab ``z`` it is given, and may be called on row blocks of a chunk). ``t`` is
    only sliced by rows (``t[r0:r1]``) and handed to the kernel, so a custom kernel may pass any
    row-sliceable per-row state: ``losskit.distributed`` uses this to gather per-row statistics
    of a vocabulary shard."""
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
    # one chunk of half inputs: dW is that chunk's GEMM, written once in the input dtype
    direct_gw = low and rows >= n and n > 0
    # dW: the first chunk writes it (empty, not zeros: one pass over V·H less), the others add
    gw = None
    if need[1] and not direct_gw:
        gw = (torch.empty if n else torch.zeros)((v, h), dtype=cd, device=x2.device)
    block = max(1, min(v, _DW_BLOCK // max(h, 1)))
    several = low and rows < n  # half inputs in several chunks: float32 accumulation of dW
    gb = torch.zeros((v,), dtype=cd, device=x2.device) if need[2] else None
    if n == 0:
        return values, lse, tlp, correct, gx, gw, gb
    # the slab in the GEMMs' dtype; for half inputs a float32 work buffer of row blocks
    slab = torch.empty((rows, v), dtype=x2.dtype, device=x2.device)
    sub = max(1, min(rows, _WORK_BLOCK // max(v, 1))) if low else rows
    work = torch.empty((sub, v), dtype=cd, device=x2.device) if low else None
    gw_conv = gw_part = None
    if need[1] and several:
        # the partial dW of a block of classes, in the input dtype (the GEMM's output) and in
        # float32 (for the same-dtype add): in the work buffer when they fit (it is free once
        # the chunk's G is back in the slab), else in their own buffers
        flat = work.view(-1)
        if flat.numel() >= block * h:
            gw_conv = flat[: block * h].view(block, h)
            rest = flat[block * h:]
            if rest.numel() * rest.element_size() >= block * h * x2.element_size():
                # the tail's bytes, seen in the input dtype (float32 is twice a half's size)
                gw_part = rest.view(x2.dtype)[: block * h].view(block, h)
        else:
            gw_conv = torch.empty((block, h), dtype=cd, device=x2.device)
        if gw_part is None:
            gw_part = torch.empty((block, h), dtype=x2.dtype, device=x2.device)
    # x rows for dW = Gᵀx with the rows that are not valid zeroed (see masked_rows)
    x_valid = torch.empty((rows, h), dtype=x2.dtype, device=x2.device) if need[1] and valid is not None and s is not None else None
    wt = w.t()
    gw_written = False
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        r = r1 - r0
        xc = x2[r0:r1]
        # logits of this chunk, straight into the reused buffer
        out = slab[:r]
        if b is None:
            torch.mm(xc, wt, out=out)
        else:
            torch.addmm(b, xc, wt, out=out)
        gl = None
        for q0 in range(0, r, sub):
            q1 = min(r, q0 + sub)
            a0, a1 = r0 + q0, r0 + q1  # rows of the whole batch
            z = work[: q1 - q0].copy_(out[q0:q1]) if low else out
            sc = None if s is None else s[a0:a1]
            vc = None if valid is None else valid[a0:a1]
            value, lse_c, g, ext = kernel(z, t[a0:a1], cw, cfg, sc, None if lse_in is None else lse_in[a0:a1], vc, extras)
            if not backward:
                values[a0:a1] = value
                lse[a0:a1] = lse_c
                if extras:
                    tlp[a0:a1] = ext[0]
                    correct[a0:a1] = ext[1]
            if g is None:
                continue
            if low:
                out[q0:q1].copy_(g)  # G into the slab, in the GEMMs' dtype
            gl = out if low else g  # (one row block when not low)
            if gb is not None:
                gb.add_(g.sum(0))
        if gl is None:
            continue
        if gx is not None:
            torch.mm(gl, w, out=gx[r0:r1])
        if need[1]:
            if x_valid is not None:
                # G is 0 on masked / ignored rows, but 0·NaN is NaN: a NaN or inf hidden state
                # of a padding token would poison all of dW through the GEMM
                xc = x_valid[:r].copy_(xc).masked_fill_(~valid[r0:r1, None], 0.0)
            if direct_gw:
                gw = torch.mm(gl.t(), xc)
            elif several:
                # the GEMM accumulates in float32 inside one chunk; the chunk's partial dW is
                # rounded to the input dtype (CPU torch has no mixed-dtype GEMM) and added to
                # the float32 accumulator block by block of classes, through buffers of
                # _DW_BLOCK elements (a full-size one would cost V·H more memory)
                glt = gl.t()
                for v0 in range(0, v, block):
                    v1 = min(v, v0 + block)
                    part = torch.mm(glt[v0:v1], xc, out=gw_part[: v1 - v0])
                    if gw_written:
                        gw[v0:v1].add_(gw_conv[: v1 - v0].copy_(part))  # a same-dtype add: no temporary
                    else:
                        gw[v0:v1].copy_(part)
            elif gw_written:
                gw.addmm_(gl.t(), xc)
            else:
                torch.mm(gl.t(), xc, out=gw)
            gw_written = True
    if need[1] and not gw_written:
        # no chunk produced a gradient
        gw = torch.zeros((v, h), dtype=x2.dtype if direct_gw else cd, device=x2.device) if gw is None else gw.zero_()
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
    """After ``prepare``: ``value_and_grad`` (no autograd), or the value through the
    ``autograd.Function`` (the path for option values the operator does not take, e.g. a 0-d
    tensor ``label_smoothing``)."""
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


# --- the opaque custom operators (torch.compile, autocast) ---------------------------------
# ``torch.compile`` must not trace the chunk loop: Inductor would fuse the slabs of all chunks
# into whole-logits buffers (measured 624 MiB peak where eager needs 64 MiB). So the public
# function on torch tensors calls two operators, ``losskit::linear_cross_entropy`` and its
# backward, registered with ``torch.library.custom_op``: Dynamo and Inductor see one opaque
# call with a fake (shape-only) implementation and a registered autograd formula. Everything
# else (``prepare``'s checks, the chunk loop, the reduction) runs inside them, in eager mode,
# so no array-api-compat code is traced either.
#
# With ``grad_in_forward`` the gradients for a unit incoming gradient are computed in the
# forward pass, as in eager. They are not outputs of the operator (a compiled backward could
# not scale saved tensors in place, and a copy of dW would raise the peak by V·H floats):
# they wait in ``_STASH`` under a ticket (a 1-element int64 CPU tensor the forward returns and
# autograd saves); the backward operator pops them and scales them in place. The entry lives
# as long as the ticket: a graph freed without a backward frees the gradients with it.

_STASH: dict = {}
_NEED_X, _NEED_W, _NEED_B = 1, 2, 4


def _pre(reduction: str, grad_in_forward, need: int) -> bool:
    """Whether the forward computes the gradients (the rule of ``LinearCrossEntropyFunction``)."""
    return bool(need) and reduction != "none" and grad_in_forward is not False


def _normalizer(normalizer, normalizer_value):
    return normalizer if normalizer is not None else normalizer_value


@torch.library.custom_op("losskit::linear_cross_entropy", mutates_args=())
def _op_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: Optional[torch.Tensor],
    sample_weight: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    class_weight: Optional[torch.Tensor],
    normalizer: Optional[torch.Tensor],
    normalizer_value: Optional[float],
    reduction: str,
    validate: bool,
    ignore_index: Optional[int],
    label_smoothing: float,
    smoothing_formula: str,
    z_loss: float,
    softcap: Optional[float],
    chunk_size: Optional[int],
    grad_in_forward: Optional[bool],
    need: int,
    extras: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, per-row LSE (N,), target log-prob (N,) or (0,), accuracy (), ticket (1,) or (0,))."""
    from ..fused.linear_cross_entropy import prepare

    with torch.autocast(x.device.type, enabled=False):
        inp = prepare(x, weight, target, bias, sample_weight, mask, reduction, _normalizer(normalizer, normalizer_value), validate,
                      ignore_index, class_weight, label_smoothing, smoothing_formula, z_loss, softcap, chunk_size, grad_in_forward)
        x2, w, b, t, cfg = inp.x2, inp.weight, inp.bias, inp.target, inp.cfg
        n = int(x2.shape[0])
        cd = compute_dtype(x2.dtype, _xp())
        want = (bool(need & _NEED_X), bool(need & _NEED_W), b is not None and bool(need & _NEED_B))
        pre = _pre(cfg.reduction, cfg.grad_in_forward, need)
        s = _row_scale(inp.c, inp.valid, n, cd, x2.device) if pre else None
        values, lse, tlp, correct, gx, gw, gb = _chunks(x2, w, b, t, s, inp.valid, inp.class_weight, cfg, want if pre else (False,) * 3, extras)
        loss = _reduce(values, inp.c, inp.valid, cfg.reduction)
        if cfg.reduction == "none":
            loss = loss.reshape(inp.lead_shape)
        if extras:
            if inp.valid is not None:
                tlp = torch.where(inp.valid, tlp, torch.zeros_like(tlp))
            acc = accuracy_from(correct, inp.valid, lse.dtype, _xp())
        else:
            tlp = lse.new_empty((0,))
            acc = lse.new_zeros(())
        ticket = _EMPTY_INT.clone()
        if pre:
            ticket = stash(_STASH, (None if gx is None else gx.reshape(inp.x_shape), gw, gb, (x.dtype, weight.dtype, None if bias is None else bias.dtype)))
        return loss, lse, tlp, acc, ticket


def _compute_dtype_of(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@_op_forward.register_fake
def _(x, weight, target, bias, sample_weight, mask, class_weight, normalizer, normalizer_value, reduction, validate, ignore_index,
      label_smoothing, smoothing_formula, z_loss, softcap, chunk_size, grad_in_forward, need, extras):
    lead = tuple(x.shape[:-1])
    n = math.prod(lead)
    cd = _compute_dtype_of(x.dtype)
    loss = x.new_empty(lead if reduction == "none" else (), dtype=cd)
    lse = x.new_empty((n,), dtype=cd)
    tlp = x.new_empty((n,) if extras else (0,), dtype=cd)
    acc = x.new_empty((), dtype=cd)
    ticket = torch.empty((1,) if _pre(reduction, grad_in_forward, need) else (0,), dtype=torch.int64)
    return loss, lse, tlp, acc, ticket


@torch.library.custom_op("losskit::linear_cross_entropy_backward", mutates_args=())
def _op_backward(
    grad: torch.Tensor,
    lse: torch.Tensor,
    ticket: torch.Tensor,
    x: Optional[torch.Tensor],
    weight: Optional[torch.Tensor],
    target: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    sample_weight: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    class_weight: Optional[torch.Tensor],
    normalizer: Optional[torch.Tensor],
    normalizer_value: Optional[float],
    reduction: str,
    ignore_index: Optional[int],
    label_smoothing: float,
    smoothing_formula: str,
    z_loss: float,
    softcap: Optional[float],
    chunk_size: Optional[int],
    need: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dW, db); an empty tensor for each gradient not in ``need``."""
    empty = lambda: grad.new_empty((0,))  # noqa: E731  (outputs may not alias each other)
    bits = (need & _NEED_X, need & _NEED_W, need & _NEED_B)
    with torch.no_grad(), torch.autocast(grad.device.type, enabled=False):
        if ticket.numel():
            grads = _STASH.pop(int(ticket[0]), None)
            if grads is None:
                raise RuntimeError(
                    f"{NAME}: backward ran twice through the same graph, but with grad_in_forward the gradients are "
                    "computed in the forward pass and consumed by the first backward. Pass grad_in_forward=False "
                    "to recompute them in backward (then retain_graph=True works)."
                )
            *gs, dtypes = grads
            # loss.backward() passes 1: then the gradients are already scaled (one pass over dW
            # and dx less); a CPU scalar is read without a device sync
            unit = grad.device.type == "cpu" and grad.ndim == 0 and float(grad) == 1.0
            out = []
            for g, dt, bit in zip(gs, dtypes, bits):
                if g is None or not bit:
                    out.append(empty())
                    continue
                if not unit:
                    g.mul_(grad)
                out.append(g if g.dtype == dt else g.to(dt))
            return tuple(out)
        from ..fused.linear_cross_entropy import prepare

        inp = prepare(x, weight, target, bias, sample_weight, mask, reduction, _normalizer(normalizer, normalizer_value), False,
                      ignore_index, class_weight, label_smoothing, smoothing_formula, z_loss, softcap, chunk_size, False)
        x2, w, b = inp.x2, inp.weight, inp.bias
        n = int(x2.shape[0])
        cd = compute_dtype(x2.dtype, _xp())
        s = _row_scale(inp.c, inp.valid, n, cd, x2.device)
        s = s * (grad.to(cd) if grad.ndim == 0 else grad.reshape(-1).to(cd))
        want = (bool(bits[0]), bool(bits[1]), b is not None and bool(bits[2]))
        _, _, _, _, gx, gw, gb = _chunks(x2, w, b, inp.target, s, inp.valid, inp.class_weight, inp.cfg, want, lse_in=lse)
        return (
            empty() if gx is None else gx.reshape(inp.x_shape),
            empty() if gw is None else gw.to(w.dtype),
            empty() if gb is None else gb.to(b.dtype),
        )


@_op_backward.register_fake
def _(grad, lse, ticket, x, weight, target, bias, sample_weight, mask, class_weight, normalizer, normalizer_value, reduction,
      ignore_index, label_smoothing, smoothing_formula, z_loss, softcap, chunk_size, need):
    empty = grad.new_empty
    return (
        x.new_empty(x.shape) if need & _NEED_X else empty((0,)),
        weight.new_empty(weight.shape) if need & _NEED_W else empty((0,)),
        bias.new_empty(bias.shape) if need & _NEED_B and bias is not None else empty((0,)),
    )


def _setup_context(ctx, inputs, output):
    (x, weight, target, bias, sample_weight, mask, class_weight, normalizer, normalizer_value, reduction, validate, ignore_index,
     label_smoothing, smoothing_formula, z_loss, softcap, chunk_size, grad_in_forward, need, extras) = inputs
    _, lse, _, _, ticket = output
    ctx.static = (normalizer_value, reduction, ignore_index, label_smoothing, smoothing_formula, z_loss, softcap, chunk_size, need)
    # x, weight and bias are saved in the ticket mode too (their shapes and dtypes; the tensors
    # are alive anyway as parameters and activations); the rest is per-token and small
    ctx.save_for_backward(lse, ticket, x, weight, target, bias, sample_weight, mask, class_weight, normalizer)


def _backward(ctx, grad_loss, *_):
    gx, gw, gb = _op_backward(grad_loss, *ctx.saved_tensors, *ctx.static)
    need = ctx.static[-1]
    return (gx if need & _NEED_X else None, gw if need & _NEED_W else None, None, gb if need & _NEED_B else None) + (None,) * 16


_op_forward.register_autograd(_backward, setup_context=_setup_context)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _op_arguments_ok(tensors, target, normalizer, ignore_index, numbers, softcap, chunk_size, grad_in_forward, strings) -> bool:
    """Whether every argument has a type the operator's schema takes; anything else (a 0-d
    tensor option, a NumPy array, a bool where a number belongs) goes through ``prepare`` on
    the ``autograd.Function`` path, which checks it and raises the documented error."""
    if not isinstance(target, torch.Tensor) or not all(a is None or isinstance(a, torch.Tensor) for a in tensors):
        return False
    if not (normalizer is None or isinstance(normalizer, torch.Tensor) or _number(normalizer)):
        return False
    if not (ignore_index is None or (isinstance(ignore_index, int) and not isinstance(ignore_index, bool))):
        return False
    if not all(_number(v) for v in numbers) or not (softcap is None or _number(softcap)):
        return False
    if not (chunk_size is None or (isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1)):
        return False
    return grad_in_forward in (None, True, False) and all(isinstance(v, str) for v in strings) and isinstance(tensors[0], torch.Tensor)


def autocast_inputs(x, weight, bias):
    """Under ``torch.autocast`` the projection runs in the autocast dtype, as ``F.linear`` does:
    float32 ``x``, ``weight``, ``bias`` are cast (differentiably, so their gradients come back in
    float32); the softmax statistics, the loss and dW's accumulation stay float32 in the
    kernels. The result equals the call on explicitly cast inputs."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return x, weight, bias
    dt = torch.get_autocast_dtype(device)
    cast = lambda a: a.to(dt) if a is not None and a.dtype == torch.float32 else a  # noqa: E731
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        return x, weight, bias
    return cast(x), cast(weight), cast(bias)


def call_op(x, weight, target, bias, sample_weight, mask, reduction, normalizer, validate, ignore_index, class_weight,
            label_smoothing, smoothing_formula, z_loss, softcap, chunk_size, grad_in_forward, extras):
    """The public function on torch tensors: autocast, then the custom operator (or
    ``NotImplemented`` for argument types the operator does not take)."""
    if not _op_arguments_ok((x, weight, bias, sample_weight, mask, class_weight), target, normalizer, ignore_index,
                            (label_smoothing, z_loss), softcap, chunk_size, grad_in_forward, (reduction, smoothing_formula)):
        return NotImplemented
    x, weight, bias = autocast_inputs(x, weight, bias)
    if not extras and traced_covers(x, weight, target, (bias, sample_weight, mask, class_weight, normalizer), reduction, ignore_index,
                     label_smoothing, z_loss, softcap, chunk_size, grad_in_forward):
        return traced_call(x, weight, target, reduction, bool(validate), ignore_index, chunk_size)
    need = 0
    if torch.is_grad_enabled():
        need = (_NEED_X if x.requires_grad else 0) | (_NEED_W if weight.requires_grad else 0) | (
            _NEED_B if bias is not None and bias.requires_grad else 0)
    nt = normalizer if isinstance(normalizer, torch.Tensor) else None
    nv = None if normalizer is None or nt is not None else float(normalizer)
    loss, lse, tlp, acc, _ = _op_forward(
        x, weight, target, bias, sample_weight, mask, class_weight, nt, nv, reduction, bool(validate), ignore_index,
        float(label_smoothing), smoothing_formula, float(z_loss), None if softcap is None else float(softcap), chunk_size,
        grad_in_forward, need, bool(extras))
    if not extras:
        return loss
    lead = x.shape[:-1]
    # only the loss is differentiable: the extras are constants for autograd
    return LinearCrossEntropyExtras(loss, lse.detach().reshape(lead), tlp.detach().reshape(lead), acc.detach())


# --- the traced form for torch.compile (the plain case) -------------------------------------
# The operator above runs the eager chunk kernel: under compile that is many separate eager
# ops per chunk, each its own OpenMP region. For class ids with ``ignore_index`` only (no
# bias, weights, mask, class weights, normalizer, smoothing, z-loss or softcap), a scalar
# reduction and a gradient wanted, ``call_op`` instead hands Dynamo ``TracedLinearCrossEntropy``:
# the same chunk loop (static chunk count, ``default_chunk_size``'s rule) written in torch ops,
# so Inductor fuses each chunk's softmax statistics and G into one or two kernels around the
# GEMMs, and the class-id check runs after it in a small operator (the eager message).

# On by default: in the compiled GPT step on an idle machine (benchmarks/gpt_step.py, three
# runs, load 0.7-1.3) the traced form took 0.93-1.00x the unfused compiled step's time at
# 0.81x its peak, the operator 1.01-1.07x at 0.95x (under load 4-6 the order flipped in some
# runs: 1.05-1.35x against 0.87-1.19x). False sends every call to the operator
# (``gpt_step.py``'s ``_operator`` variants).
TRACED = True
_TRACED_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


class TracedLinearCrossEntropy(torch.autograd.Function):
    """forward(x2 (N, H), w (V, H), ids (N,) int64 (ignored rows at id 0), valid (N,) bool or
    None, rows, reduction) -> the loss; the gradients for a unit incoming gradient are
    computed in the forward pass (grad-in-forward) and backward scales them.

    Per chunk: z = x_c Wᵀ in the inputs' dtype (bfloat16 under autocast), statistics in the
    compute dtype (float32 for bfloat16): ℓ = (m − z_y) + r (``logsumexp_split``), G = s·(e^{z −
    LSE} − onehot(y)), 0 on ignored rows; dx_c = G W and dW += Gᵀ x_c (the GEMMs in the inputs'
    dtype, dW accumulated in the compute dtype), as the eager kernel does."""

    @staticmethod
    def forward(ctx, x2, w, ids, valid, rows, reduction):
        n, v = x2.shape[0], w.shape[0]
        cd = torch.float32 if x2.dtype == torch.bfloat16 else x2.dtype
        if reduction == "sum":
            scale = 1.0
        elif valid is None:
            scale = 1.0 / n
        else:
            scale = 1.0 / valid.sum(dtype=cd).clamp(min=1.0)
        classes = torch.arange(v, device=x2.device)
        total = None
        gxs = []
        gw = None
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            xc = x2[r0:r1]
            z = torch.mm(xc, w.t()).to(cd)
            m, r = logsumexp_split(z)
            yc = ids[r0:r1, None]
            per_row = ((m - z.gather(1, yc)) + r)[:, 0]
            p = torch.exp(z - (m + r))
            g = (p - (classes == yc).to(cd)) * scale
            if valid is not None:
                vc = valid[r0:r1]
                per_row = torch.where(vc, per_row, 0.0)
                g = torch.where(vc[:, None], g, 0.0)
                # 0·NaN is NaN: a NaN hidden state of an ignored row must not reach dW
                xc = torch.where(vc[:, None], xc, 0.0)
            part = per_row.sum()
            total = part if total is None else total + part
            gl = g.to(x2.dtype)
            gxs.append(torch.mm(gl, w))
            pw = torch.mm(gl.t(), xc)
            gw = pw.to(cd) if gw is None else gw + pw.to(cd)
        value = total * scale
        gx = gxs[0] if len(gxs) == 1 else torch.cat(gxs)
        if len(gxs) == 1:
            gw = pw  # one chunk: one GEMM accumulates all rows (in float32) and rounds once
        ctx.save_for_backward(gx, gw)
        ctx.dtypes = (x2.dtype, w.dtype)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        gx, gw = ctx.saved_tensors
        dx = (gx * grad_value).to(ctx.dtypes[0])
        dw = (gw * grad_value).to(ctx.dtypes[1])
        return dx, dw, None, None, None, None


def traced_covers(x, weight, target, others, reduction, ignore_index, label_smoothing, z_loss, softcap, chunk_size,
                  grad_in_forward) -> bool:
    """Whether ``traced_call`` computes this call (under ``torch.compile``): float32/64 or
    bfloat16 ``x`` and ``weight`` of one dtype and matching shapes, int class ids of x's
    sample shape, ``"mean"``/``"sum"``, a gradient wanted for x or weight and none for
    anything else, no other option (``others``: bias, sample weights, mask, class weights,
    normalizer, all None). Everything the eager call would reject goes to the operator."""
    from .torch_lean import _functorch_active, _is_compiling

    if not (TRACED and _is_compiling()) or _functorch_active():
        return False
    if any(a is not None for a in others) or label_smoothing or z_loss or softcap is not None or grad_in_forward is False:
        return False
    if reduction not in ("mean", "sum") or not torch.is_grad_enabled():
        return False
    if not (x.requires_grad or weight.requires_grad) or target.requires_grad:
        return False
    return (
        x.dtype in _TRACED_DTYPES
        and weight.dtype == x.dtype
        and x.ndim >= 1
        and weight.ndim == 2
        and x.shape[-1] == weight.shape[1]
        and weight.shape[0] >= 1
        and x.numel() > 0
        and not target.is_floating_point()
        and not target.is_complex()
        and target.dtype != torch.bool
        and tuple(target.shape) == tuple(x.shape[:-1])
        and target.device == x.device == weight.device
    )


def traced_call(x, weight, target, reduction, validate, ignore_index, chunk_size):
    """``lk.linear_cross_entropy`` through ``TracedLinearCrossEntropy`` (``traced_covers``)."""
    from ..fused.linear_cross_entropy import default_chunk_size

    v, h = int(weight.shape[0]), int(weight.shape[1])
    x2 = x.reshape(-1, h)
    n = int(x2.shape[0])
    rows = chunk_size if chunk_size is not None else default_chunk_size(n, h, v, x.element_size())
    rows = max(1, min(int(rows), n))
    if n > rows > 2 * h:
        # dW += Gᵀx_c is out of place here (a second V×H buffer, the size of h slab rows):
        # h rows less per chunk keep the peak at the eager kernel's
        rows -= h
    t = target.reshape(-1)
    t = t if t.dtype == torch.int64 else t.to(torch.int64)
    valid = None if ignore_index is None else t != ignore_index
    ids = t if valid is None else torch.where(valid, t, 0)
    if validate:
        ids = torch.where((ids >= 0) & (ids < v), ids, 0)  # bad ids read as 0; the check after raises
    value = TracedLinearCrossEntropy.apply(x2, weight, ids, valid, rows, reduction)
    return checked_value(value, target, v, ignore_index, NAME) if validate else value
