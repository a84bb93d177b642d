"""Vocabulary-parallel cross-entropy on ``torch.distributed`` (any backend: NCCL on GPUs, gloo
on CPU) and the exact global "mean" denominator.

Forward: each rank reduces its block of logits to a few per-row statistics (``_math``), then
two ``all_reduce`` calls (MAX of the row maxima, SUM of the rescaled statistics) give every
rank the same per-row losses; the reduction (weights, masks, class weights, ``normalizer``) is
the shared rule of ``_reduce``, applied identically on every rank. Backward: local, each rank
computes its block of the logits gradient; the fused linear version then all-reduces dx once.

Only per-row statistics travel: 1 + 3 to 6 floats per token, never the logits.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from .._reduce import multiplier, reduce_terms
from ..fused.linear_cross_entropy import Config, default_chunk_size
from ..interop import torch_fused
from . import _args
from ._math import combine, finish_rows, grad_chunk, local_stats

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy", "vocab_layout", "sum_over_group"]

CE = "vocab_parallel_cross_entropy"
LCE = "vocab_parallel_linear_cross_entropy"
_ROWS_CHUNK = 1 << 22  # elements per row block of the logits function (as the lean cross_entropy kernel)


# --- the process group ---------------------------------------------------------------------


class Comm:
    """The group the statistics are exchanged in. Without an initialised default process group
    and with ``group=None`` it is a world of one (no collective runs), so the same code runs in
    a single process."""

    def __init__(self, group, name: str):
        if group is None and not (dist.is_available() and dist.is_initialized()):
            self.group, self.rank, self.size = None, 0, 1
            return
        if not dist.is_initialized():
            raise RuntimeError(f"{name}: `group` was given but torch.distributed is not initialised (call init_process_group first).")
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        if self.rank < 0:
            raise ValueError(f"{name}: this process (global rank {dist.get_rank()}) is not a member of `group`.")

    def max_(self, t):
        """In-place MAX over the group (a no-op in a world of one)."""
        if self.size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    def sum_(self, t):
        """In-place SUM over the group (a no-op in a world of one)."""
        if self.size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def all_gather(self, t) -> list:
        if self.size == 1:
            return [t]
        out = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(out, t, group=self.group)
        return out


def _check_int(value, arg: str, name: str, low: int):
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: `{arg}` must be None or an int >= {low}, got {value!r}.")
    return value


def vocab_layout(v_local: int, *, group=None, vocab_start=None, num_classes=None, validate=True, device=None, name="vocab_layout"):
    """``(vocab_start, num_classes)`` of this rank's block of ``v_local`` classes.

    Derived from the group when not given: the blocks follow the group's rank order
    (rank r holds [Σ_{q<r} V_q, Σ_{q≤r} V_q)), so uneven splits need no arguments. With both
    given and ``validate=False`` no collective runs; otherwise one ``all_gather`` of two ints
    per rank checks that the blocks tile [0, V) exactly, and every rank raises the same error
    if they do not."""
    vocab_start = _check_int(vocab_start, "vocab_start", name, 0)
    num_classes = _check_int(num_classes, "num_classes", name, 1)
    comm = group if isinstance(group, Comm) else Comm(group, name)
    if comm.size == 1:
        start = 0 if vocab_start is None else vocab_start
        total = v_local if num_classes is None else num_classes
        if start != 0 or total != v_local:
            raise ValueError(
                f"{name}: a group of one process must hold the whole vocabulary, but vocab_start={start} and "
                f"num_classes={total} for a block of {v_local} classes."
            )
        return start, total
    if vocab_start is not None and num_classes is not None and not validate:
        return vocab_start, num_classes
    info = torch.tensor([-1 if vocab_start is None else vocab_start, v_local], dtype=torch.int64, device=device)
    table = [tuple(int(v) for v in t.tolist()) for t in comm.all_gather(info)]
    starts = [s for s, _ in table]
    sizes = [v for _, v in table]
    total = sum(sizes)
    if all(s < 0 for s in starts):
        starts = [sum(sizes[:r]) for r in range(len(sizes))]
    elif any(s < 0 for s in starts):
        raise ValueError(f"{name}: `vocab_start` must be given on every rank of the group or on none; got {starts} (-1: not given).")
    if num_classes is not None and num_classes != total:
        raise ValueError(f"{name}: num_classes={num_classes} but the ranks' blocks hold {total} classes in all (sizes {sizes}).")
    pos = 0
    for s, v in sorted(zip(starts, sizes)):
        if s != pos:
            layout = ", ".join(f"rank {r}: [{a}, {a + b})" for r, (a, b) in enumerate(zip(starts, sizes)))
            raise ValueError(f"{name}: the ranks' vocabulary blocks must tile [0, {total}) without gaps or overlaps; got {layout}.")
        pos += v
    return starts[comm.rank], total


# --- the per-call state the autograd Functions use ------------------------------------------


class _RowSlices:
    """Per-row arrays that ``torch_fused._chunks`` slices by rows and hands to a kernel."""

    def __init__(self, **arrays):
        self.a = arrays

    def __getitem__(self, rows):
        return _RowSlices(**{k: None if v is None else v[rows] for k, v in self.a.items()})


class _Plan:
    """Everything of one call besides the differentiable tensors."""

    def __init__(self, args: _args.Args, comm: Comm, start: int):
        self.args, self.comm, self.start = args, comm, start
        self.spec, self.xp = args.spec, args.xp
        self.rows = None

    def exchange(self, m, stats):
        """The two collectives; sets and returns the per-row :class:`~._math.RowStats`."""
        gmax = self.comm.max_(m.clone())
        total = combine(m, gmax, stats, self.spec, self.xp).contiguous()
        self.comm.sum_(total)
        self.rows = finish_rows(gmax, total, self.spec, self.xp)
        return self.rows

    def row_blocks(self, n: int, vr: int):
        rows = max(1, _ROWS_CHUNK // max(vr, 1))
        return [(r0, min(n, r0 + rows)) for r0 in range(0, n, rows)]

    def backward_state(self):
        r = self.rows
        return _RowSlices(tgt=self.args.tgt, m=r.m, r=r.r, coef=r.coef, hot=r.hot)

    def grad_kernel(self, z, st, cw, cfg, s, lse_in, valid_c, extras):
        a = st.a
        g = grad_chunk(z, a["tgt"], cw, self.spec, self.xp, self.start, a["m"], a["r"], a["coef"], a["hot"], s, valid_c)
        return None, None, g, None

    def stats_kernel(self, z, st, cw, cfg, s, lse_in, valid_c, extras):
        m, stats = local_stats(z, st.a["tgt"], cw, self.spec, self.xp, self.start)
        st.a["m"].copy_(m)
        st.a["stats"].copy_(stats)
        return m, m, None, None


class _LogitsFunction(torch.autograd.Function):
    """(N, V_r) block of logits -> per-row losses (N,), identical on every rank."""

    @staticmethod
    def forward(ctx, z2, plan: _Plan):
        a = plan.args
        n, vr = int(z2.shape[0]), int(z2.shape[1])
        cd = a.compute_dtype
        m = torch.empty(n, dtype=cd, device=z2.device)
        stats = torch.empty((n, len(plan.spec.columns)), dtype=cd, device=z2.device)
        for r0, r1 in plan.row_blocks(n, vr):
            zc = z2[r0:r1].to(cd)
            m[r0:r1], stats[r0:r1] = local_stats(zc, a.tgt[r0:r1], a.class_weight, plan.spec, plan.xp, plan.start)
        rows = plan.exchange(m, stats)
        ctx.save_for_backward(z2)
        ctx.plan = plan
        return rows.value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows):
        (z2,) = ctx.saved_tensors
        plan = ctx.plan
        a, r = plan.args, plan.rows
        n, vr = int(z2.shape[0]), int(z2.shape[1])
        cd = a.compute_dtype
        s = grad_rows.to(cd)
        out = torch.empty_like(z2)
        for r0, r1 in plan.row_blocks(n, vr):
            sl = slice(r0, r1)
            g = grad_chunk(z2[sl].to(cd), a.tgt[sl], a.class_weight, plan.spec, plan.xp, plan.start, r.m[sl], r.r[sl], r.coef[sl],
                           None if r.hot is None else r.hot[sl], s[sl], None if a.valid is None else a.valid[sl])
            out[sl] = g
        return out, None


class _LinearFunction(torch.autograd.Function):
    """(x (N, H), W_r (V_r, H), b_r) -> per-row losses (N,), through the fused chunk loop of
    ``interop.torch_fused`` with this module's kernels: no rank holds more than one slab of
    rows × V_r logits."""

    @staticmethod
    def forward(ctx, x2, w, b, plan: _Plan, cfg: Config):
        a = plan.args
        n = int(x2.shape[0])
        cd = a.compute_dtype
        m = torch.empty(n, dtype=cd, device=x2.device)
        stats = torch.empty((n, len(plan.spec.columns)), dtype=cd, device=x2.device)
        with torch.no_grad():
            state = _RowSlices(tgt=a.tgt, m=m, stats=stats)
            torch_fused._chunks(x2, w, b, state, None, a.valid, a.class_weight, cfg, (False, False, False), kernel=plan.stats_kernel)
        rows = plan.exchange(m, stats)
        ctx.save_for_backward(x2, w, b)
        ctx.plan, ctx.cfg = plan, cfg
        return rows.value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows):
        x2, w, b = ctx.saved_tensors
        plan = ctx.plan
        a = plan.args
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], b is not None and ctx.needs_input_grad[2])
        s = grad_rows.to(a.compute_dtype)
        _, _, _, _, gx, gw, gb = torch_fused._chunks(
            x2, w, b, plan.backward_state(), s, a.valid, a.class_weight, ctx.cfg, need, lse_in=plan.rows.m, kernel=plan.grad_kernel
        )
        if gx is not None:
            # every rank's dx is its block's share G_r W_r; one all-reduce gives the full dx
            plan.comm.sum_(gx)
        gw = None if gw is None else gw.to(w.dtype)
        gb = None if gb is None else gb.to(b.dtype)
        return gx, gw, gb, None, None


def _reduce(plan: _Plan, values):
    a, rows = plan.args, plan.rows
    _args.check_row_sums(a, rows.tsum)
    denom = rows.cwy if (a.kind == "ids" and a.class_weight is not None) else None
    c = multiplier((a.n,), a.sample_weight, a.valid, denom, a.reduction, a.normalizer, a.compute_dtype, a.xp,
                   check=a.validate and a.name)
    out = reduce_terms(values, c, a.valid, a.reduction, a.xp)
    return out.reshape(a.lead) if a.reduction == "none" else out


def _torch_only(name, x, arg):
    if not isinstance(x, torch.Tensor):
        kind = type(x).__module__.split(".")[0]
        hint = " For JAX arrays use losskit.distributed.jax (inside shard_map)." if kind in ("jax", "jaxlib") else ""
        raise TypeError(f"{name}: `{arg}` must be a torch.Tensor, got {type(x).__module__}.{type(x).__name__}.{hint}")


# --- public functions ------------------------------------------------------------------------


def vocab_parallel_cross_entropy(
    logits_shard,
    target,
    /,
    *,
    group=None,
    vocab_start=None,
    num_classes=None,
    axis=-1,
    ignore_index=None,
    class_weight=None,
    label_smoothing=0.0,
    smoothing_formula="pytorch",
    z_loss=0.0,
    softcap=None,
    weight=None,
    mask=None,
    reduction="mean",
    normalizer=None,
    validate=True,
):
    r"""Softmax cross-entropy whose logits are split over the classes between the ranks of
    ``group``: the value of ``lk.cross_entropy`` on the concatenated logits, on every rank,
    without ever gathering them.

    Each rank passes its block of classes [vocab_start, vocab_start + V_r) of the logits
    (``logits_shard``, class axis ``axis``) and the same ``target`` (global class ids, or its
    block of probability targets). The ranks exchange per-token statistics with two
    ``all_reduce`` calls (the row max, then the sum of exponentials, the target's logit and,
    with smoothing, Σ(max − z)): 4 to 7 floats per token, never the logits. The backward pass
    is local: each rank's gradient is its block of softmax − target, with no communication.

    Args:
        logits_shard: this rank's block of the logits, float, class axis ``axis``.
        target: global class ids in [0, V) (shape of the logits without the class axis), the
            same on every rank; or this rank's block of probability targets (shape of
            ``logits_shard``, each full row summing to 1).
        group: the ``torch.distributed`` process group that splits the vocabulary (default:
            the default group; without an initialised process group, a world of one).
        vocab_start, num_classes: this block's first class and V. Derived from the group when
            None: blocks follow the group's rank order and may be uneven (see
            :func:`vocab_layout`).
        axis, ignore_index, class_weight, label_smoothing: as :func:`losskit.cross_entropy`;
            ``class_weight`` is this rank's block, shape (V_r,).
        smoothing_formula: ``"pytorch"`` (α/V to every class) or ``"megatron"`` (α/(V − 1) to
            every other class), as :func:`losskit.linear_cross_entropy`.
        z_loss: λ ≥ 0 adds λ·LSE² per token (PaLM's z-loss), as :func:`losskit.cross_entropy`.
        softcap: s > 0 caps the logits at s·tanh(z/s) (Gemma 2).
        weight, mask, reduction, normalizer, validate: as every losskit loss (per token).

    Returns:
        The reduced loss, the same tensor value on every rank (shape of the tokens for
        ``reduction="none"``), in the compute dtype (float32 for half inputs). Differentiable
        in ``torch.autograd`` for ``logits_shard``.

    Every rank of the group must call it (and ``backward``) with the same tokens and options.
    """
    _torch_only(CE, logits_shard, "logits_shard")
    a = _args.logits_args(CE, logits_shard, target, axis=axis, weight=weight, mask=mask, class_weight=class_weight,
                          ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
                          normalizer=normalizer, validate=validate)
    comm = Comm(group, CE)
    start, total = vocab_layout(a.vr, group=comm, vocab_start=vocab_start, num_classes=num_classes, validate=validate,
                                device=logits_shard.device, name=CE)
    a = _args.finish(a, total, label_smoothing, smoothing_formula, z_loss, softcap)
    plan = _Plan(a, comm, start)
    values = _LogitsFunction.apply(a.rows, plan)
    return _reduce(plan, values)


def vocab_parallel_linear_cross_entropy(
    x,
    weight_shard,
    target,
    /,
    *,
    bias_shard=None,
    group=None,
    vocab_start=None,
    num_classes=None,
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
    softcap=None,
    chunk_size=None,
):
    r"""Fused linear + cross-entropy with the output layer split over the classes:
    ``lk.linear_cross_entropy(x, W, target, bias=b, ...)`` where each rank of ``group`` holds
    the rows [vocab_start, vocab_start + V_r) of W (and of b), computed chunk by chunk with the
    fused kernel so that no rank ever holds more than one slab of rows × V_r logits.

    Forward: one chunked pass (one GEMM per chunk) reduces this rank's logits to per-token
    statistics, which two ``all_reduce`` calls combine. Backward: the chunk logits are
    recomputed from the saved per-token statistics, each rank gets its own slice of dW (and db)
    without communication, and dx is all-reduced once, so every rank returns the full dx.

    Args:
        x: hidden states (..., H), the same on every rank of the group.
        weight_shard: this rank's rows of the (V, H) head, shape (V_r, H), dtype of ``x``.
        target: global class ids (shape ``x.shape[:-1]``), or this rank's block of
            probability targets (``x.shape[:-1] + (V_r,)``).
        bias_shard: this rank's block of the bias, (V_r,), or None.
        group, vocab_start, num_classes: as :func:`vocab_parallel_cross_entropy`.
        sample_weight, mask, reduction, normalizer, validate, ignore_index, class_weight
        (this rank's block), label_smoothing, smoothing_formula, z_loss, softcap,
        chunk_size: as :func:`losskit.linear_cross_entropy`.

    Returns:
        The reduced loss, the same value on every rank, in the compute dtype. Gradients flow to
        ``x`` (the full dx on every rank), ``weight_shard`` and ``bias_shard`` (this rank's
        slices).
    """
    _torch_only(LCE, x, "x")
    a = _args.linear_args(LCE, x, weight_shard, target, bias=bias_shard, sample_weight=sample_weight, mask=mask,
                          class_weight=class_weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                          reduction=reduction, normalizer=normalizer, validate=validate)
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"{LCE}: `chunk_size` must be a positive int (rows per chunk) or None, got {chunk_size!r}.")
    comm = Comm(group, LCE)
    start, total = vocab_layout(a.vr, group=comm, vocab_start=vocab_start, num_classes=num_classes, validate=validate,
                                device=x.device, name=LCE)
    a = _args.finish(a, total, label_smoothing, smoothing_formula, z_loss, softcap)
    n, h = int(a.rows.shape[0]), int(a.rows.shape[1])
    rows = chunk_size or default_chunk_size(n, h, a.vr, torch.finfo(x.dtype).bits // 8)
    spec = a.spec
    cfg = Config(a.reduction, a.kind, spec.alpha, spec.z_loss, spec.softcap, int(rows), a.vr, False)
    plan = _Plan(a, comm, start)
    values = _LinearFunction.apply(a.rows, a.weight, a.bias, plan, cfg)
    return _reduce(plan, values)


def sum_over_group(total, group):
    """``global_count``'s sum over the ranks of ``group`` (see ``Comm`` for ``group=None``)."""
    comm = Comm(group, "global_count")
    return comm.sum_(total.contiguous())
