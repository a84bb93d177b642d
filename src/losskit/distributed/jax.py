"""Vocabulary-parallel cross-entropy for JAX, called inside ``jax.shard_map`` over a mesh axis
(``axis_name``) that splits the classes, and the exact global "mean" denominator.

The same statistics as the torch version travel through ``lax.pmax`` and ``lax.psum``; each
function is a ``jax.custom_vjp`` whose backward pass is the closed form (local to each device,
plus one ``psum`` of dx in the fused linear version when ``x`` is the same on every device of
the axis). Usable under ``jax.jit``; with ``axis_name=None`` they run on one device (no
collective). Tested with ``jax.shard_map`` (JAX 0.10) on simulated CPU devices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from .._array import compute_dtype
from .._reduce import multiplier, reduce_terms
from ..fused.linear_cross_entropy import default_chunk_size, masked_rows
from ..interop.jax_fused import _dot, _logits, _pad_rows
from . import _args
from ._count import local_count
from ._math import Spec, combine, finish_rows, grad_chunk, local_stats

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy", "global_count"]

CE = "vocab_parallel_cross_entropy"
LCE = "vocab_parallel_linear_cross_entropy"


def _jax_only(name, x, arg):
    if not isinstance(x, jax.Array):
        hint = " For torch tensors use losskit.distributed." if type(x).__module__.startswith("torch") else ""
        raise TypeError(f"{name}: `{arg}` must be a JAX array, got {type(x).__module__}.{type(x).__name__}.{hint}")


def _axis_size(axis_name) -> int:
    size = 1
    for name in _names(axis_name):
        size *= int(lax.axis_size(name)) if hasattr(lax, "axis_size") else int(lax.psum(1, name))
    return size


def _layout(vr: int, axis_name, vocab_start, num_classes, name: str):
    """(first class of this device's block as an int32 array, V). Even blocks in the order of
    the axis by default (shard_map splits an axis evenly); pass ``vocab_start`` (an int or a
    traced int, e.g. looked up with ``lax.axis_index``) and ``num_classes`` for other
    layouts."""
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(f"{name}: `num_classes` must be None or a positive int (static), got {num_classes!r}.")
    if vocab_start is not None and (isinstance(vocab_start, bool) or not (isinstance(vocab_start, int) or hasattr(vocab_start, "dtype"))):
        raise TypeError(f"{name}: `vocab_start` must be None, an int or an integer array, got {vocab_start!r}.")
    if axis_name is None:
        start = 0 if vocab_start is None else vocab_start
        total = vr if num_classes is None else num_classes
        if total != vr or (isinstance(start, int) and start != 0):
            raise ValueError(
                f"{name}: without `axis_name` the block must hold the whole vocabulary, but num_classes={total} and "
                f"vocab_start={start} for a block of {vr} classes."
            )
        return jnp.asarray(start, jnp.int32), total
    size = _axis_size(axis_name)
    total = vr * size if num_classes is None else num_classes
    if vocab_start is None:
        if total != vr * size:
            raise ValueError(
                f"{name}: num_classes={total} differs from {size} devices x {vr} classes; uneven layouts need an explicit "
                "`vocab_start` for each device."
            )
        vocab_start = lax.axis_index(axis_name) * vr
    return jnp.asarray(vocab_start, jnp.int32), total


def _exchange(spec: Spec, axis_name, m, stats):
    gmax = m if axis_name is None else lax.pmax(m, axis_name)
    total = combine(m, gmax, stats, spec, jnp)
    if axis_name is not None:
        total = lax.psum(total, axis_name)
    return finish_rows(gmax, total, spec, jnp)


def _outputs(rows):
    """(value, cwy, tsum): the last two are constants for autodiff (zeros when unused)."""
    zero = jnp.zeros_like(rows.value)
    return rows.value, zero if rows.cwy is None else rows.cwy, zero if rows.tsum is None else rows.tsum


def _hot(rows):
    return jnp.zeros_like(rows.value) if rows.hot is None else rows.hot


# --- logits ---------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _logit_rows(spec, axis_name, z2, tgt, valid, cw, start):
    return _logit_rows_fwd(spec, axis_name, z2, tgt, valid, cw, start)[0]


def _logit_rows_fwd(spec, axis_name, z2, tgt, valid, cw, start):
    cd = compute_dtype(z2.dtype, jnp)
    m, stats = local_stats(z2.astype(cd), tgt, cw, spec, jnp, start)
    rows = _exchange(spec, axis_name, m, stats)
    return _outputs(rows), (z2, tgt, valid, cw, start, rows.m, rows.r, rows.coef, _hot(rows))


def _logit_rows_bwd(spec, axis_name, res, cts):
    z2, tgt, valid, cw, start, m, r, coef, hot = res
    cd = compute_dtype(z2.dtype, jnp)
    ct, _ = _cotangent(cts[0], z2, axis_name)
    g = grad_chunk(z2.astype(cd), tgt, cw, spec, jnp, start, m, r, coef, hot, ct.astype(cd), valid)
    return _like(g, z2).astype(z2.dtype), None, None, None, None


_logit_rows.defvjp(_logit_rows_fwd, _logit_rows_bwd)


# --- fused linear ---------------------------------------------------------------------------


def _geometry(rows: int, n: int):
    rows = max(1, min(rows, max(n, 1)))
    return rows, -(-n // rows)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _linear_rows(spec, axis_name, chunk, x2, w, b, tgt, valid, cw, start):
    return _linear_rows_fwd(spec, axis_name, chunk, x2, w, b, tgt, valid, cw, start)[0]


def _linear_rows_fwd(spec, axis_name, chunk, x2, w, b, tgt, valid, cw, start):
    n = x2.shape[0]
    cd = compute_dtype(x2.dtype, jnp)
    rows, n_chunks = _geometry(chunk, n)
    k = len(spec.columns)
    if n == 0:
        m, stats = jnp.zeros((0,), cd), jnp.zeros((0, k), cd)
    else:

        def body(carry, inputs):
            xc, tc = inputs
            return carry, local_stats(_logits(xc, w, b, cd), tc, cw, spec, jnp, start)

        _, (m, stats) = lax.scan(body, None, (_pad_rows(x2, rows, n_chunks), _pad_rows(tgt, rows, n_chunks)))
        m, stats = m.reshape(-1)[:n], stats.reshape(-1, k)[:n]
    rows_ = _exchange(spec, axis_name, m, stats)
    return _outputs(rows_), (x2, w, b, tgt, valid, cw, start, rows_.m, rows_.r, rows_.coef, _hot(rows_))


def _varying_axes(a):
    """The mesh axes ``a`` varies over inside ``shard_map`` (None where JAX does not say)."""
    t = jax.typeof(a)
    mat = getattr(t, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    vma = getattr(t, "vma", None)  # JAX 0.6 - 0.9
    return None if vma is None else frozenset(vma)


def _varying_like(a, *refs):
    """``a`` typed as varying over every mesh axis one of ``refs`` varies over (a scan carry
    must keep its type through the loop)."""
    axes = frozenset().union(*((_varying_axes(r) or frozenset()) for r in refs if r is not None))
    missing = tuple(sorted(axes - (_varying_axes(a) or frozenset())))
    if not missing:
        return a
    if hasattr(lax, "pcast"):
        return lax.pcast(a, missing, to="varying")
    return lax.pvary(a, missing)  # pragma: no cover - JAX < 0.8


def _like(ct, primal, axis_name=None):
    """A cotangent typed like its primal: summed over the mesh axes it varies over and the
    primal does not (the transpose of the implicit broadcast of a shared input). Where JAX has
    no such types, ``axis_name`` (if given) is summed over."""
    have, want = _varying_axes(ct), _varying_axes(primal)
    if have is None or want is None:
        return ct if axis_name is None else lax.psum(ct, axis_name)
    extra = tuple(sorted(have - want))
    return lax.psum(ct, extra) if extra else ct


def _names(axis_name) -> tuple:
    return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def _varies(a, axis_name) -> bool | None:
    """Whether ``a`` varies over every axis of ``axis_name`` (None where JAX does not say)."""
    axes = _varying_axes(a)
    return None if axes is None else all(n in axes for n in _names(axis_name))


def _cotangent(ct, block, axis_name):
    """The loss's cotangent as the closed form needs it. With ``shard_map(check_vma=False)``
    JAX tracks no replication: it hands each device 1/P of a replicated output's cotangent
    and sums the cotangents of replicated inputs itself, undoing what the transpose of a
    ``psum`` would do; the block of classes (which always varies over the axis) not being
    typed as varying says so, and the ``psum`` of the cotangent restores it."""
    if axis_name is not None and _varies(block, axis_name) is False:
        return lax.psum(ct, axis_name), False
    return ct, True


def _linear_rows_bwd(spec, axis_name, chunk, res, cts):
    x2, w, b, tgt, valid, cw, start, m, r, coef, hot = res
    n, h = x2.shape
    v = w.shape[0]
    cd = compute_dtype(x2.dtype, jnp)
    rows, n_chunks = _geometry(chunk, n)
    if n == 0:
        return jnp.zeros_like(x2), jnp.zeros_like(w), None if b is None else jnp.zeros_like(b), None, None, None, None
    ct, checked = _cotangent(cts[0], w, axis_name)
    ct = ct.astype(cd)
    vmask = jnp.ones((n,), bool) if valid is None else valid

    def body(carry, inputs):
        gw, gb = carry
        xc, tc, sc, vc, mc, rc, cc, hc = inputs
        g = grad_chunk(_logits(xc, w, b, cd), tc, cw, spec, jnp, start, mc, rc, cc, hc, sc, vc)
        gl = g.astype(x2.dtype)
        dx = _dot(gl, w, cd).astype(x2.dtype)
        # G is 0 on masked / ignored rows; zero their x too, or a NaN padding row gives 0·NaN in dW
        gw = gw + _dot(gl.T, masked_rows(xc, vc, jnp), cd)
        gb = gb + jnp.sum(g, axis=0)
        return (gw, gb), dx

    refs = (x2, w, b, tgt, ct, valid, cw, start, m)
    init = (_varying_like(jnp.zeros((v, h), cd), *refs), _varying_like(jnp.zeros((v,), cd), *refs))
    chunks = tuple(_pad_rows(a, rows, n_chunks) for a in (x2, tgt, ct, vmask, m, r, coef, hot))
    (gw, gb), dx = lax.scan(body, init, chunks)
    dx = dx.reshape(-1, h)[:n]
    # x is usually one array shared by the devices of the axis: its gradient is then the sum of
    # every device's share G_r W_r, the one psum of dx. Likewise dW, db of a head shared by
    # data-parallel devices are summed over them. (Under check_vma=False shard_map sums the
    # cotangents of shared inputs itself.)
    dx = _like(dx, x2, axis_name if checked else None)
    gw = _like(gw, w)
    gb = None if b is None else _like(gb, b)
    return dx, gw.astype(w.dtype), None if b is None else gb.astype(b.dtype), None, None, None, None


_linear_rows.defvjp(_linear_rows_fwd, _linear_rows_bwd)


# --- public functions -------------------------------------------------------------------------


def _reduce(a: _args.Args, value, cwy, tsum):
    sg = lax.stop_gradient
    _args.check_row_sums(a, sg(tsum) if a.spec.check_rows else None)
    denom = sg(cwy) if (a.kind == "ids" and a.class_weight is not None) else None
    c = multiplier((a.n,), a.sample_weight, a.valid, denom, a.reduction, a.normalizer, a.compute_dtype, jnp,
                   check=a.validate and a.name)
    out = reduce_terms(value, c, a.valid, a.reduction, jnp)
    return out.reshape(a.lead) if a.reduction == "none" else out


def vocab_parallel_cross_entropy(
    logits_shard,
    target,
    /,
    *,
    axis_name,
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
    r"""``lk.cross_entropy`` of logits split over the classes along the mesh axis
    ``axis_name``; call it inside ``jax.shard_map`` (under ``jax.jit``).

    Each device passes its block of the logits (classes [i·V_r, (i+1)·V_r) for device i of
    the axis, or ``vocab_start``) and the same ``target`` (global class ids, or its block of
    probability targets). ``lax.pmax`` and ``lax.psum`` exchange per-token statistics; the
    result is the same on every device (replicated: ``out_specs=P()``). The gradient
    (``jax.custom_vjp``) is local: each device's block of softmax − target.

    Options and arguments as :func:`losskit.distributed.vocab_parallel_cross_entropy` (torch);
    ``axis_name=None`` runs on one device without collectives. Value checks that read arrays
    (class-id range, probability rows) are skipped under tracing, as everywhere in losskit.
    """
    _jax_only(CE, logits_shard, "logits_shard")
    a = _args.logits_args(CE, logits_shard, target, axis=axis, weight=weight, mask=mask, class_weight=class_weight,
                          ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
                          normalizer=normalizer, validate=validate)
    start, total = _layout(a.vr, axis_name, vocab_start, num_classes, CE)
    a = _args.finish(a, total, label_smoothing, smoothing_formula, z_loss, softcap)
    value, cwy, tsum = _logit_rows(a.spec, axis_name, a.rows, a.tgt, a.valid, a.class_weight, start)
    return _reduce(a, value, cwy, tsum)


def vocab_parallel_linear_cross_entropy(
    x,
    weight_shard,
    target,
    /,
    *,
    axis_name,
    bias_shard=None,
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
    r"""``lk.linear_cross_entropy(x, W, target, bias=b)`` with W (and b) split over the classes
    along the mesh axis ``axis_name``; call it inside ``jax.shard_map``.

    A ``lax.scan`` over row chunks computes each chunk's logits block (rows × V_r), reduces it
    to per-token statistics and drops it; the backward pass recomputes the chunk logits from
    the saved statistics. Gradients: each device's block of dW (and db); dx is ``psum``-med
    over the axis when ``x`` is the same array on every device of it (the usual
    ``in_specs=P()`` for x), so every device gets the full dx.

    Options as :func:`losskit.distributed.vocab_parallel_linear_cross_entropy` (torch).
    """
    _jax_only(LCE, x, "x")
    a = _args.linear_args(LCE, x, weight_shard, target, bias=bias_shard, sample_weight=sample_weight, mask=mask,
                          class_weight=class_weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                          reduction=reduction, normalizer=normalizer, validate=validate)
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"{LCE}: `chunk_size` must be a positive int (rows per chunk) or None, got {chunk_size!r}.")
    start, total = _layout(a.vr, axis_name, vocab_start, num_classes, LCE)
    a = _args.finish(a, total, label_smoothing, smoothing_formula, z_loss, softcap)
    n, h = int(a.rows.shape[0]), int(a.rows.shape[1])
    rows = chunk_size or default_chunk_size(n, h, a.vr, jnp.finfo(x.dtype).bits // 8)
    value, cwy, tsum = _linear_rows(a.spec, axis_name, int(rows), a.rows, a.weight, a.bias, a.tgt, a.valid, a.class_weight, start)
    return _reduce(a, value, cwy, tsum)


def global_count(targets, *, axis_name=None, ignore_index=None, weight=None, mask=None, class_weight=None, axis=None, validate=True):
    r"""The denominator of ``reduction="mean"`` over the micro-batches of ``targets`` (an array
    or a list) and over the devices of the mesh axis (or axes) ``axis_name`` that hold
    different samples: ``lax.psum`` of :func:`losskit.distributed.global_count`'s local count.
    Call it inside ``shard_map`` (or ``pmap``) with ``axis_name``, or anywhere without. A 0-d
    float64 array (float32 without ``jax_enable_x64``: exact up to 2**24)."""
    _, total = local_count(targets, ignore_index=ignore_index, weight=weight, mask=mask, class_weight=class_weight, axis=axis,
                           validate=validate)
    return total if axis_name is None else lax.psum(total, axis_name)
