"""Connectionist temporal classification (CTC): −log of the total probability of every
alignment of a label sequence with a sequence of frame distributions, by the forward–backward
(α–β) recursion in log space. One value per sequence (the sequence kind)."""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _validate
from .._array import _device, backend, coerce_like, is_tracing, logsumexp
from .._kinds import scan
from .._loss import Checks, Option, Peer, declare
from .._spec import peer_reduction
from .._spec import SEQUENCE

_NINF = -math.inf


def _lse3(a, b, c, xp):
    """log(e^a + e^b + e^c) entrywise; all −inf gives −inf, NaN propagates. Eager torch: two
    ``logaddexp`` (the recursion's step is bound by kernel launches), except when autograd
    records it (double backward: logaddexp's derivative at (−inf, −inf) is NaN). Elsewhere the
    same function spelt out with a guarded max shift (NumPy's logaddexp warns on NaN; XLA fuses
    the whole step anyway)."""
    if backend(xp) == "torch" and not a.requires_grad:
        return a.logaddexp(b).logaddexp(c)  # the tensor method: no array-api-compat promotion wrapper per call
    m = xp.maximum(xp.maximum(a, b), c)
    shift = xp.where(m == _NINF, xp.zeros_like(m), m)
    total = xp.exp(a - shift) + xp.exp(b - shift) + xp.exp(c - shift)
    empty = total == 0.0
    return xp.where(empty, xp.full_like(m, _NINF), shift + xp.log(xp.where(empty, xp.ones_like(total), total)))


@functools.lru_cache(maxsize=None)
def _forward_step(xp):
    """One frame of α for every row, for namespace ``xp``; one function object per namespace:
    ``lax.scan`` caches its compiled step by function identity, so eager JAX calls do not
    recompile it every time. The carry ``a`` is α_{t-1} after two −inf columns (s − 1 and
    s − 2 of s = 0, 1 are then plain slices), and so is each output; the skip penalties and
    the −inf padding travel in the carry."""

    def step(carry, x):
        a, skip_pen, pad = carry
        (lp_t,) = x
        new = xp.concat([pad, lp_t + _lse3(a[:, 2:], a[:, 1:-1], a[:, :-2] + skip_pen, xp)], axis=1)
        return (new, skip_pen, pad), new

    return step


def _alpha_scan(emit, skip_pen, start, xp):
    """α_t for t = 0..T−1, each after two −inf columns: (T, rows, W + 2); the array-API
    recursion (``lax.scan`` on JAX, a Python loop elsewhere)."""
    rows = int(emit.shape[1])
    pad = xp.full((rows, 2), _NINF, dtype=emit.dtype, device=_device(emit))
    return scan(_forward_step(xp), (start, skip_pen, pad), (emit,), xp)[1]


def _alpha_in_place(emit, skip_pen, start):
    """``_alpha_scan`` on eager torch: the same operations in the same order, written into one
    preallocated tensor, 4 kernel launches a frame and no allocation (the step is bound by
    launch overhead, not arithmetic)."""
    import torch

    t_max, rows, width = (int(d) for d in emit.shape)
    a = torch.full((t_max + 1, rows, width + 2), _NINF, dtype=emit.dtype, device=emit.device)  # the −inf columns 0, 1
    a[0] = start
    same, one_back, two_back = a[:, :, 2:].unbind(0), a[:, :, 1:-1].unbind(0), a[:, :, :-2].unbind(0)
    frames = emit.unbind(0)
    skipped = torch.empty((rows, width), dtype=emit.dtype, device=emit.device)
    for t in range(t_max):
        new = same[t + 1]
        torch.add(two_back[t], skip_pen, out=skipped)
        torch.logaddexp(same[t], one_back[t], out=new)
        torch.logaddexp(new, skipped, out=new)
        new.add_(frames[t])
    return a[1:]


def _take_along(x, index, axis, xp):
    """``take_along_axis`` with ``index`` broadcast against ``x`` (non-negative indices); on
    torch ``gather`` of the expanded index (no copy of it, no negative-index pass)."""
    if backend(xp) == "torch":
        shape = list(x.shape)
        shape[axis] = int(index.shape[axis])
        return x.gather(axis, index.expand(shape))
    return xp.take_along_axis(x, index, axis=axis)


def _alphas(lp_pad, ext, frame, loop, xp):
    """α of a set of rows, each a sequence with its extended labels ``ext`` (rows, W) read at
    its frames ``frame`` (rows, T) of ``lp_pad`` (N, T + 1, C; frame T: −inf). Returns α
    (T, rows, W + 2) at column s + 2 (−inf in columns 0 and 1; not frozen past the input
    length, read at T_n − 1) and the loop's input lp_t(l'_s) (T, rows, W)."""
    rows, width = (int(d) for d in ext.shape)
    n, t_pad, n_classes = (int(d) for d in lp_pad.shape)
    dev, dt = _device(lp_pad), lp_pad.dtype
    pos = xp.arange(width, device=dev)
    before = xp.take(ext, xp.maximum(pos - 2, xp.zeros_like(pos)), axis=1)
    skip = ((pos % 2) == 1)[None, :] & (ext != before)  # s = 1: from the virtual start
    skip_pen = xp.where(skip, xp.zeros((rows, width), dtype=dt, device=dev), xp.full((rows, width), _NINF, dtype=dt, device=dev))
    # row r of the loop's input at step t is lp_pad[r mod N, frame[r, t]] at the labels ext[r]
    row_of = (xp.arange(rows, device=dev) % n)[:, None] * t_pad + frame
    lp_rows = xp.take(xp.reshape(lp_pad, (n * t_pad, n_classes)), xp.reshape(xp.permute_dims(row_of, (1, 0)), (-1,)), axis=0)
    emit = _take_along(xp.reshape(lp_rows, (t_pad - 1, rows, n_classes)), ext[None, :, :], 2, xp)
    # the virtual start state sits just before s = 0, with probability 1
    start = xp.concat([xp.full((rows, 1), _NINF, dtype=dt, device=dev), xp.zeros((rows, 1), dtype=dt, device=dev), xp.full((rows, width), _NINF, dtype=dt, device=dev)], axis=1)
    alphas = _alpha_in_place(emit, skip_pen, start) if loop == "in_place" else _alpha_scan(emit, skip_pen, start, xp)
    return alphas, emit


def _ctc_kernel(z, targets, o, xp, loop=None, want_vjp=True):
    """Per-sequence values and the vjp. Extended labels l' = (blank, l_1, blank, ..., l_S,
    blank), s = 0..2S; α_t(s) = lp_t(l'_s) + log(e^{α_{t-1}(s)} + e^{α_{t-1}(s-1)} +
    [l'_s ≠ blank, l'_s ≠ l'_{s-2}] e^{α_{t-1}(s-2)}), with a virtual start state before s = 0,
    read at each sequence's last frame T_n − 1. The backward variable is the same recursion
    on each sequence reversed in time and label positions (frame T_n − 1 − t, position
    2S_n − s): lp_t(l'_s) + β_t(s) = α^rev_{T_n−1−t}(2S_n − s). Where a step costs kernel
    launches rather than arithmetic (eager torch, NumPy) both run as the 2N rows of one loop;
    on JAX (one compiled step, arithmetic-bound) the reversed rows run in the vjp only.
    ``loop``: "scan" (the array-API recursion), "in_place" (eager torch) or None (in_place on
    torch unless autograd records the kernel, as in double backward, or torch.compile /
    torch.func trace it). ``want_vjp=False`` (a value alone) runs the forward rows only."""
    il, tl, blank = o["input_lengths"], o["target_lengths"], o["blank"]
    n, t_max, n_classes = (int(d) for d in z.shape)
    if not t_max:
        raise ValueError("a sequence loss needs at least one time step")
    s_max = int(targets.shape[1])
    width = 2 * s_max + 1
    dev = _device(z)
    dt = z.dtype
    lp = z - logsumexp(z, axis=-1, xp=xp, keepdims=True)
    # an extra −inf frame T, read past T_n: α is −inf there (no occupation, and padding frames
    # holding NaN never enter)
    lp_pad = xp.concat([lp, xp.full((n, 1, n_classes), _NINF, dtype=dt, device=dev)], axis=1)

    pos = xp.arange(width, device=dev)
    idt = pos.dtype  # the default index dtype (int32 on JAX without x64)
    zero = xp.zeros((), dtype=idt, device=dev)
    blanks = xp.full((n, width), blank, dtype=idt, device=dev)
    last = 2 * tl[:, None]  # the final blank of each sequence
    rev_pos = last - pos[None, :]  # position 2S_n − s of the reversed sequence; < 0 past its end
    ext = blanks
    if s_max:
        in_target = xp.arange(s_max, device=dev)[None, :] < tl[:, None]
        ids = xp.where(in_target, xp.astype(targets, idt), xp.full((n, s_max), blank, dtype=idt, device=dev))
        ext = xp.where(((pos % 2) == 1)[None, :], xp.take(ids, xp.minimum(pos // 2, xp.full_like(pos, s_max - 1)), axis=1), blanks)
    ext_rev = xp.where(rev_pos >= 0, _take_along(ext, xp.maximum(rev_pos, zero), 1, xp), blanks)
    frames = xp.arange(t_max, device=dev)
    active = frames[None, :] < il[:, None]  # (N, T)
    rev_frames = xp.maximum(il[:, None] - 1 - frames[None, :], zero)  # clipped: read only where active
    past = xp.full((n, t_max), t_max, dtype=idt, device=dev)
    frame = xp.where(active, xp.broadcast_to(frames[None, :], (n, t_max)), past)
    frame_rev = xp.where(active, rev_frames, past)

    if loop is None:
        eager = backend(xp) == "torch" and not is_tracing(lp) and not (lp.requires_grad and _grad_enabled())
        loop = "in_place" if eager else "scan"
    stacked = want_vjp and backend(xp) != "jax"
    if stacked:
        alphas, emit = _alphas(lp_pad, xp.concat([ext, ext_rev], axis=0), xp.concat([frame, frame_rev], axis=0), loop, xp)
    else:
        alphas, emit = _alphas(lp_pad, ext, frame, loop, xp)
    final = _take_along(alphas[:, :n, :], xp.maximum(il - 1, zero)[None, :, None], 0, xp)  # (1, N, W + 2) at T_n − 1
    final = _take_along(final, xp.concat([last, last - 1], axis=1)[None, :, :] + 2, 2, xp)[0, ...]  # (N, 2)
    log_p = _lse3(final[:, 0], final[:, 1], xp.full_like(final[:, 0], _NINF), xp)
    # no frame: probability 1 for the empty target, 0 otherwise
    log_p = xp.where(il == 0, xp.where(tl == 0, xp.zeros_like(log_p), xp.full_like(log_p, _NINF)), log_p)
    nll = -log_p
    scale = None
    if o["normalize_by"] == "target_length":
        scale = 1.0 / xp.astype(xp.maximum(tl, xp.ones_like(tl)), dt)
    zeroed = xp.isinf(nll) if o["zero_infinity"] else None
    value = nll if scale is None else nll * scale
    if zeroed is not None:
        value = xp.where(zeroed, xp.zeros_like(value), value)

    def vjp(u):
        # lp_t(l'_s) + β_t(s) (T, N, W), from the reversed rows at (T_n − 1 − t, 2S_n − s); the
        # −inf column 0 past the label sequence (s > 2S_n); past T_n α is −inf
        source, first = (alphas, n) if stacked else (_alphas(lp_pad, ext_rev, frame_rev, loop, xp)[0], 0)
        rows = int(source.shape[1])
        row = xp.permute_dims(rev_frames, (1, 0)) * rows + (first + xp.arange(n, device=dev))[None, :]  # whole rows: one copy each
        rev = xp.reshape(xp.take(xp.reshape(source, (t_max * rows, width + 2)), xp.reshape(row, (-1,)), axis=0), (t_max, n, width + 2))
        rev = _take_along(rev, xp.where(rev_pos >= 0, rev_pos + 2, zero)[None, :, :], 2, xp)
        # occupation γ_t(s) = e^{α_t(s) + β_t(s) − log p}: lp = −inf (where α = lp + β = −inf
        # too) is floored so that the sum stays −inf and not −inf + inf
        possible = log_p != _NINF
        shift = xp.where(possible, log_p, xp.zeros_like(log_p))
        lowest = -xp.finfo(dt).max
        if loop == "in_place":  # the same operations in the same order, into the gathered temporary
            occ = rev.add_(alphas[:, :n, 2:]).sub_(emit[:, :n, :].clamp_min(lowest)).sub_(shift[None, :, None]).exp_()
        else:
            floor = xp.maximum(emit[:, :n, :], xp.full((), lowest, dtype=dt, device=dev))
            occ = xp.exp(alphas[:, :n, 2:] + rev - floor - shift[None, :, None])
        occ = xp.permute_dims(occ, (1, 0, 2))  # (N, T, W)
        # summed over the positions of each class; through the log-softmax: ∂/∂z = softmax(z) Σ_c γ − γ
        onehot = xp.astype(ext[:, :, None] == xp.arange(n_classes, device=dev)[None, None, :], dt)
        g = xp.exp(lp) * xp.sum(occ, axis=-1)[:, :, None] - xp.matmul(occ, onehot)
        # no alignment (log p = −inf): the loss is +inf, its gradient undefined, NaN as in
        # torch (0 with zero_infinity); 0 on the frames past T_n
        w = u if scale is None else u * scale
        w = xp.where(possible, w, xp.full_like(w, math.nan))
        if zeroed is not None:
            w = xp.where(zeroed, xp.zeros_like(w), w)
        g = g * w[:, None, None]
        return (xp.where(active[:, :, None], g, xp.zeros_like(g)),)

    return value, vjp


def _grad_enabled():
    import torch

    return torch.is_grad_enabled()


def _ctc_value(z, targets, o, xp):
    return _ctc_kernel(z, targets, o, xp, want_vjp=False)[0]


def _ctc_grad(z, targets, o, xp):
    return _ctc_kernel(z, targets, o, xp)[1](xp.ones_like(z[:, 0, 0]))[0]


# --- the integer inputs: lengths, targets, blank ---------------------------------------------


def _lengths(value, arg, n, limit, z, xp, loss):
    dev = _device(z)
    idt = xp.arange(1, device=dev).dtype  # the default index dtype (int32 on JAX without x64)
    if value is None:
        return xp.full((n,), limit, dtype=idt, device=dev)
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{loss}: `{arg}` must hold integers, got {value!r}.")
        value = xp.asarray(value, dtype=idt, device=dev)
    (value,) = coerce_like(z, value)
    if not hasattr(value, "shape") or not hasattr(value, "dtype") or not _validate.same_library(value, z):
        raise TypeError(f"{loss}: `{arg}` must be an integer array of the library of `logits` (or a list of ints), got {_validate.describe(value)}.")
    if xp.isdtype(value.dtype, "bool") or not xp.isdtype(value.dtype, "integral"):
        raise TypeError(f"{loss}: `{arg}` must be an integer array, got dtype {value.dtype}.")
    if tuple(value.shape) != (n,):
        raise ValueError(f"{loss}: `{arg}` must have shape ({n},) (one length per sequence), got {tuple(value.shape)}.")
    return xp.astype(value, idt)


def _check_range(x, arg, low, high, what, xp, loss):
    bad = (x < low) | (x > high)
    if _validate._any(bad, xp):
        (i,) = _validate._first_position(bad, xp)
        raise ValueError(f"{loss}: `{arg}` must be in [{low}, {high}] ({what}), got {int(x[i])} at {arg}[{i}].")


def _ctc_prepare(z, targets, o, xp, validate, loss):
    """Lengths as integer arrays (the default index dtype) of the library of ``logits`` (None: every frame / every label);
    shapes always checked, values when ``validate``."""
    if z.ndim != 3:
        raise ValueError(f"{loss}: `logits` must be an (N, T, C) array (batch, time, classes), got shape {tuple(z.shape)}.")
    n, t_max, n_classes = (int(d) for d in z.shape)
    if targets.ndim != 2 or int(targets.shape[0]) != n:
        raise ValueError(f"{loss}: `targets` must be an (N, S) array of padded label ids with N = {n}, got shape {tuple(targets.shape)}.")
    if xp.isdtype(targets.dtype, "bool") or not xp.isdtype(targets.dtype, "integral"):
        raise TypeError(f"{loss}: `targets` must hold integer class ids, got dtype {targets.dtype}.")
    s_max = int(targets.shape[1])
    blank = o["blank"]
    if not 0 <= blank < n_classes:
        raise ValueError(f"{loss}: `blank` must be a class id in [0, {n_classes - 1}], got {blank}.")
    il = _lengths(o["input_lengths"], "input_lengths", n, t_max, z, xp, loss)
    tl = _lengths(o["target_lengths"], "target_lengths", n, s_max, z, xp, loss)
    if validate and not (_validate.is_tracing(il) or _validate.is_tracing(tl) or _validate.is_tracing(targets)) and n:
        _check_range(il, "input_lengths", 0, t_max, "the number of frames T", xp, loss)
        _check_range(tl, "target_lengths", 0, s_max, "the padded target length S", xp, loss)
        if s_max:
            used = xp.arange(s_max, device=_device(targets))[None, :] < tl[:, None]
            bad = used & ((targets < 0) | (targets >= n_classes) | (targets == blank))
            if _validate._any(bad, xp):
                i, j = _validate._first_position(bad, xp)
                value = int(targets[i, j])
                why = "the blank" if value == blank else f"not a class id in [0, {n_classes - 1}]"
                raise ValueError(f"{loss}: `targets` holds {value} at targets[{i}, {j}], within target_lengths[{i}] = {int(tl[i])}: {why}.")
    return {**o, "input_lengths": il, "target_lengths": tl}


# --- checks: inputs, edges, peers -------------------------------------------------------------


def _lengths_for(o, shape):
    n, t_max, _ = shape
    il = np.asarray(o["input_lengths"]) if o.get("input_lengths") is not None else np.full(n, t_max)
    return il, o.get("target_lengths")


def _ctc_sample(rng, shape, o):
    n, t_max, n_classes = shape
    blank = o.get("blank", 0)
    s_max = 3
    labels = np.array([c for c in range(n_classes) if c != blank])
    targets = rng.choice(labels, size=(n, s_max))
    targets[:, 1] = targets[:, 0]  # a repeated label in every sequence: it needs a blank between
    return rng.standard_normal(shape), targets


def _ctc_edges(o):
    """Logits ±1e4 and −inf, a frame-tight repeated label, and an empty target where the option
    set has target lengths; impossible alignments (inf) only where zero_infinity makes them 0."""
    n, t_max, n_classes = 3, 6, 5
    blank = o.get("blank", 0)
    other = [c for c in range(n_classes) if c != blank]
    z = np.zeros((n, t_max, n_classes))
    z[0] = -1e4
    z[0, ::2, other[0]] = 1e4
    z[0, 1::2, blank] = 1e4
    z[1, :, other[-1]] = -np.inf  # a class that never occurs: probability 0 at every frame
    z[2] = np.linspace(-30.0, 30.0, t_max * n_classes).reshape(t_max, n_classes)
    # three equal labels need five of the six frames; with the zero_infinity option set's lengths
    # row 1 (three labels, two frames) has no alignment
    targets = np.array([[other[0], other[1], other[1]], [other[0], other[0], other[1]], [other[1], other[1], other[1]]])
    return z, targets


def _torch_ctc(z, targets, reduction, blank=0, zero_infinity=False, normalize_by=None, input_lengths=None, target_lengths=None):
    import torch
    import torch.nn.functional as F

    z = torch.as_tensor(z)
    n, t_max, _ = z.shape
    il = torch.as_tensor(input_lengths) if input_lengths is not None else torch.full((n,), t_max)
    tl = torch.as_tensor(target_lengths) if target_lengths is not None else torch.full((n,), targets.shape[1])
    lp = torch.log_softmax(z, dim=-1).transpose(0, 1)  # torch is time-major: (T, N, C)
    tg = torch.as_tensor(targets)
    if reduction == "mean" and normalize_by == "target_length":
        return F.ctc_loss(lp, tg, il, tl, blank=blank, reduction="mean", zero_infinity=zero_infinity).numpy()
    per = F.ctc_loss(lp, tg, il, tl, blank=blank, reduction="none", zero_infinity=zero_infinity)
    if normalize_by == "target_length":
        per = per / tl.clamp(min=1)
    return peer_reduction(per, reduction).numpy()


def _optax_ctc(z, targets, reduction, blank=0, normalize_by=None, input_lengths=None, target_lengths=None):
    import jax.numpy as jnp
    import optax

    n, t_max, _ = z.shape
    il = np.asarray(input_lengths) if input_lengths is not None else np.full(n, t_max)
    tl = np.asarray(target_lengths) if target_lengths is not None else np.full(n, targets.shape[1])
    # optax marks padding with 1.0 in logit_paddings / label_paddings instead of lengths
    logit_pad = (np.arange(t_max)[None, :] >= il[:, None]).astype(np.float64)
    label_pad = (np.arange(targets.shape[1])[None, :] >= tl[:, None]).astype(np.float64)
    per = np.asarray(optax.ctc_loss(jnp.asarray(z), jnp.asarray(logit_pad), jnp.asarray(targets), jnp.asarray(label_pad), blank_id=blank))
    if normalize_by == "target_length":
        per = per / np.maximum(tl, 1)
    return peer_reduction(per, reduction)


def _optax_less_accurate(z, targets, blank=0, normalize_by=None, input_lengths=None, target_lengths=None):
    """optax scores an impossible alignment with log_epsilon = −1e5 instead of −inf (a large
    finite loss); −inf logits get the same floor."""
    return np.isneginf(z).any(axis=(1, 2)) | ~np.isfinite(_torch_ctc(z, targets, "none", blank=blank, input_lengths=input_lengths, target_lengths=target_lengths))


_RAGGED = {"input_lengths": np.array([6, 4, 5]), "target_lengths": np.array([3, 0, 2])}

ctc = declare(
    name="ctc",
    family="sequence",
    kind=SEQUENCE,
    title="Connectionist temporal classification (CTC) loss of frame logits against a label sequence.",
    formula=r"\ell_n = -\log \sum_{\pi \in \mathcal{B}^{-1}(l_n)} \prod_{t=1}^{T_n} \mathrm{softmax}(z_{n,t})_{\pi_t} = -\log \big(e^{\alpha_{T_n}(2S_n)} + e^{\alpha_{T_n}(2S_n - 1)}\big)",
    gradient=r"\partial_{z_{n,t,c}} \ell_n = \mathrm{softmax}(z_{n,t})_c - \gamma_{n,t}(c),\ \gamma_{n,t}(c) = \textstyle\sum_{s: l'_s = c} e^{\alpha_t(s) + \beta_t(s) - \log p(l_n)}\ (t \le T_n;\ 0 \text{ past it})",
    hessian=r"\text{not provided}",
    hessian_kind="none",
    domain="logits: real (N, T, C), batch-major, classes last; targets: (N, S) integer ids, padded; input_lengths, target_lengths: (N,) integers",
    reference='Graves, Fernández, Gomez & Schmidhuber, "Connectionist Temporal Classification: Labelling Unsegmented Sequence Data with Recurrent Neural Networks", ICML 2006',
    use_when="Speech / handwriting recognition and other sequence labelling without frame-level alignment (the label sequence is shorter than the input).",
    details="""
        One value per sequence: −log of the probability of the first ``target_lengths[n]``
        labels of ``targets[n]`` over the first ``input_lengths[n]`` frames, summed over every
        alignment (blanks and repeats collapsed). ``logits`` are batch-major ``(N, T, C)`` and
        go through a log-softmax over the class axis inside (log-probabilities pass through it
        unchanged); frames and labels past the lengths are ignored, whatever they hold.
        ``input_lengths`` / ``target_lengths`` default to every frame / every label; they may
        be integer arrays of the library of ``logits`` or lists of ints.

        The α–β recursion runs in log space, vectorised over the batch and the label
        positions, with one loop over time (``lax.scan`` on JAX); β is the same forward
        recursion on each sequence reversed in time and labels, run as extra rows of the
        same loop (on eager torch, written in place: four kernel launches a frame). The
        gradient with respect to the logits is its closed form softmax − γ (no autodiff
        through the loop).
        ``weight`` / ``mask`` are per sequence. ``reduction="mean"`` averages the sequences;
        ``normalize_by="target_length"`` first divides each sequence's value by its target
        length (at least 1), and with ``"mean"`` that is ``torch.nn.functional.ctc_loss``'s
        default ``reduction="mean"``. A target that no alignment can produce (longer than its
        input once repeats need blanks between them) has an infinite loss and a NaN gradient,
        as in torch; ``zero_infinity=True`` makes both 0. An empty target is the all-blank
        path. Equals ``torch.nn.functional.ctc_loss`` on ``log_softmax(logits).transpose(0, 1)``
        (time-major) and ``optax.ctc_loss`` with paddings ``t >= input_lengths`` (optax floors
        impossible alignments at ``log_epsilon`` instead of −inf).
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> logits = np.zeros((1, 3, 3))  # uniform frames: each of the 3^3 paths has probability 1/27
        >>> round(float(lk.ctc(logits, np.array([[1, 2]]))), 6)  # 5 paths give "1 2": -log(5/27)
        1.686399
        >>> lk.ctc.grad(logits, np.array([[1, 2]])).shape
        (1, 3, 3)
    """,
    vjp_kernel=_ctc_kernel,
    value=_ctc_value,
    grad=_ctc_grad,
    prepare=_ctc_prepare,
    inputs=("logits",),
    target="targets",
    options={
        "input_lengths": Option(None, "any", doc="(N,) frames used per sequence (default: all T)"),
        "target_lengths": Option(None, "any", doc="(N,) labels used per sequence (default: all S)"),
        "blank": Option(0, "int", doc="the class id of the blank"),
        "zero_infinity": Option(False, "bool", doc="impossible alignments: loss and gradient 0 instead of inf and NaN"),
        "normalize_by": Option(None, "choice", choices=("target_length",), doc='"target_length": divide each sequence\'s value by its target length (torch\'s "mean")'),
    },
    array_options=("input_lengths", "target_lengths"),
    checks=Checks(
        sample=_ctc_sample,
        shape=(3, 6, 5),
        option_sets=(
            {},
            {"blank": 2},
            dict(_RAGGED),
            {**_RAGGED, "normalize_by": "target_length"},
            {"input_lengths": np.array([6, 2, 4]), "target_lengths": np.array([3, 3, 2]), "zero_infinity": True},
        ),
        edges=_ctc_edges,
        peers=(
            Peer("torch.nn.functional.ctc_loss", _torch_ctc, requires="torch", options=("blank", "zero_infinity", "normalize_by", "input_lengths", "target_lengths")),
            Peer("optax.ctc_loss", _optax_ctc, requires="optax", options=("blank", "normalize_by", "input_lengths", "target_lengths"), less_accurate=_optax_less_accurate),
        ),
    ),
)
