"""Memory-lean torch kernel for ``cross_entropy`` (plugged into ``interop.torch.LEAN_KERNELS``).

The generic bridge saves the inputs and recomputes the closed-form gradient with array-API
ops, which builds several N×C temporaries (one-hot, softmax, products): its peak is about 5×
the logits. This kernel keeps, between forward and backward, only what the generic bridge
keeps (the logits, the targets, the reduction multiplier), never the softmax or the
log-softmax, and works through the rows in chunks of at most 2**22 elements:

* forward: per chunk, one fused ``log_softmax`` into a reused chunk buffer, ℓ = −log p_y
  (times ``class_weight[y]``);
* backward: the gradient buffer G (the size and layout of the logits) is filled chunk by
  chunk: fused ``softmax`` into G, then in place s_i·(p − onehot(y)) (s = reduction
  multiplier × incoming gradient × ``class_weight[y_i]``), then 0 on ignored/masked rows, so
  the peak is logits + G + one chunk.

The per-row LSE is *not* saved: recomputing max and Σexp inside the fused softmax kernel (on a
chunk that is in cache) measured faster on CPU than exp(z − LSE) from a saved LSE, because
``torch.exp`` is slower than the exp inside the softmax kernels; the kernel API still allows
a residual (``forward`` returns ``(value, residual or None)``).

Class-id targets without label smoothing or z-loss take this path. Probability targets, label
smoothing and z-loss run the shared declaration (``_loss.evaluate``) chunk by chunk into the same
preallocated G, so their peak is also logits + G + chunk temporaries. Double backward
(``create_graph=True``) is handled by the caller, which falls back to the differentiable
closed form of the generic bridge.

The kernel takes every layout and input the bridge hands it; ``applies`` only refuses 0-d
and empty logits (the generic bridge handles those):

* any layout: a class axis that is not last arrives as a moved, non-contiguous view. Logits
  that reshape to (rows, C) without a copy are cut into row slices; others (e.g. (N, C, L)
  with ``axis=1``) into blocks of whole rows along their leading axes (``_blocks``), never
  copied in full. Every op works along the last axis of a strided block, and G is allocated
  with the strides of the logits, so the gradient autograd moves back to the caller's layout
  is dense there (no extra copy when it is accumulated);
* class ids of any integer dtype: torch's ``gather`` / ``scatter_add_`` / indexing want int64,
  so other dtypes are converted once per call (int64 ids are used as they are);
* rows that are masked or ignored get exactly zero gradient whatever their logits hold (NaN or
  ±inf padding): their gradient rows are overwritten with 0 after the arithmetic
  (``zero_rows_``: on CPU only those rows are written, a ``masked_fill_`` of all of G cost a
  full pass; never 0·NaN); valid rows with NaN logits still give NaN.
"""

from __future__ import annotations

import itertools

import torch

from .._loss import evaluate
from .._reduce import is_scalar, reduce_terms

# Rows per chunk × classes: between 2**16 and 2**22 elements (16 MiB of float32), about 1/8 of
# the logits. Few, large chunks: every op is one OpenMP region, and on a loaded machine many
# small regions cost more than the cache locality of small chunks gains.
MIN_CHUNK, MAX_CHUNK = 1 << 16, 1 << 22


def _budget(numel):
    """Elements per chunk for logits of ``numel`` elements."""
    return max(MIN_CHUNK, min(MAX_CHUNK, numel // 8))


def _rows(pred):
    """``pred`` (kernel layout, classes last) as (rows, C) when that is a view, else ``pred``
    itself (a moved class axis whose rows do not merge: it is cut into blocks instead)."""
    if pred.ndim == 2:
        return pred
    try:
        return pred.view(-1, int(pred.shape[-1]))
    except RuntimeError:
        return pred


def _cut(shape, budget):
    """``(a, step)``: blocks of ``shape`` (class axis last) hold whole rows, are sliced along
    leading axis ``a`` (the outermost one whose single index fits in ``budget`` elements, or
    0), ``step`` entries of it at a time (at least one)."""
    lead = shape[:-1]
    a, size = len(lead) - 1, int(shape[-1])  # size: elements under one index of axis a
    while a > 0 and size * lead[a] <= budget:
        size *= lead[a]
        a -= 1
    return a, min(lead[a], max(1, budget // size))


def _blocks(shape, budget):
    """``(index, rows)`` pairs that cut an array of ``shape`` (class axis last) into blocks of
    whole rows of about ``budget`` elements: integers on the axes before ``a``, then a slice of
    ``rows`` entries of axis ``a`` (see ``_cut``). For (rows, C): plain row slices."""
    a, step = _cut(shape, budget)
    n = shape[a]
    for outer in itertools.product(*(range(d) for d in shape[:a])):
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            yield outer + (slice(r0, r1),), r1 - r0


def _block_buffer(shape, budget, dtype, device):
    """A buffer for the largest block of ``_blocks(shape, budget)``; block i is ``buf[:rows]``."""
    a, step = _cut(shape, budget)
    return torch.empty((step,) + tuple(shape[a + 1 :]), dtype=dtype, device=device)


def _per_sample(a, pred, shape):
    """A per-sample array in the sample ``shape`` of the working layout; scalars (Python
    floats, and 0-d arrays broadcast over the samples of a batch) as they are. For 1-D
    logits (one sample) the per-sample arrays are 0-d and become shape (1,)."""
    if a is None or isinstance(a, float) or (a.ndim == 0 and pred.ndim > 1):
        return a
    return a.reshape(shape)


def _ids(target, o):
    """Class ids as int64, the index dtype of torch's gather / scatter_add_ / indexing (a no-op
    for int64 ids and probability targets)."""
    if o["target_kind"] == "ids" and target.dtype != torch.int64:
        return target.to(torch.int64)
    return target


def _fast(o) -> bool:
    """Class ids without smoothing or z-loss: the fused log_softmax / softmax chunks below; the
    rest runs the declaration's math chunk by chunk."""
    return o["target_kind"] == "ids" and not o["label_smoothing"] and not o.get("z_loss")


_FULL = (torch.float32, torch.float64)
# torch's ops behind F.cross_entropy, called directly (the functional wrapper's checks cost
# more than the op on a small batch): nll_loss summed (reduction 2) and its backward, the
# log_softmax backward. Ignored rows never reach them (``valid`` is None on that path), so
# their ignore_index is the one int64 value no class id can be after validation.
# (the raw bindings: ``torch.ops``' Python call layer costs about as much as the op here)
_NLL = torch._C._nn.nll_loss
_NLL_BACKWARD = getattr(torch.ops.aten.nll_loss_backward.default, "_op", torch.ops.aten.nll_loss_backward.default)
_LOG_SOFTMAX_BACKWARD = torch._log_softmax_backward_data
_SUM = 2
_MEAN = 1
_NO_ID = -(1 << 63)
# nll_loss's op itself (``F.nll_loss`` calls it through two Python layers): (loss, total
# weight), recorded by autograd with torch's closed-form backward (``nll_loss_backward``)
_NLL_FORWARD = getattr(torch.ops.aten.nll_loss_forward.default, "_op", torch.ops.aten.nll_loss_forward.default)


class TargetsRejected(Exception):
    """``CrossEntropyKernel.recorded`` with ``check_ids`` met an id outside [0, C): the caller
    runs its own class-id check, which raises the documented error."""


class CrossEntropyKernel:
    """forward -> (value, None); backward(c_up) -> d value / d pred. See the module doc."""

    name = "cross_entropy"
    recorded_nodes = ("NllLossBackward0",)  # the autograd node of a ``recorded`` call's value

    @staticmethod
    def applies(call, pred, target, c, valid, aux) -> bool:
        # every layout, integer dtype and option is handled; empty logits keep the generic bridge
        return pred.ndim > 0 and pred.numel() > 0

    @staticmethod
    def validates_targets(target) -> bool:
        """Whether ``recorded(..., check_ids=True)`` rejects every target of this dtype that
        ``prepare``'s validation rejects: class ids (integers), on CPU."""
        return not target.is_floating_point()

    @staticmethod
    def recorded(call, pred, target, c, valid, aux, check_ids=False):
        """The small recorded call as ``F.cross_entropy`` makes it, or None where it does not
        apply: (N, C) logits of float32/float64 with int64 class ids, no ignored or masked
        row, no class weight, smoothing or z-loss, at most MIN_CHUNK elements, and the plain
        multiplier (a Python float: 1/N for "mean", 1 for "sum"). ``log_softmax`` and
        ``nll_loss``, recorded by autograd: their backward ops are the closed form (softmax −
        onehot, the ops of ``value_and_grad``), with double backward, and no Python node (a
        custom ``autograd.Function`` costs more per call than these two ops). "mean" is
        nll_loss's own (Σ / N, not Σ · fl(1/N): at most an ulp apart), so the value equals
        torch's bit for bit.

        ``check_ids``: the ids have not been validated; nll_loss range-checks them on CPU (it
        raises for an id outside [0, C)), and the one id it would skip (its ignore_index, the
        least int64) shows in its total weight: either raises ``TargetsRejected``."""
        if valid is not None or type(c) is not float or pred.ndim != 2 or target.dtype != torch.int64:
            return None
        n = pred.shape[0]
        if c == 1.0 and call.reduction == "sum":
            reduction = _SUM
        elif n and c == 1.0 / n and call.reduction == "mean":
            reduction = _MEAN
        else:
            return None
        o = call.options(aux)
        if o["class_weight"] is not None or not _fast(o) or pred.numel() > MIN_CHUNK or pred.dtype not in _FULL:
            return None
        if check_ids:
            if not target.is_cpu:
                return None  # elsewhere a bad id is a device-side assert, not an error
            try:
                value, total_weight = _NLL_FORWARD(torch.log_softmax(pred, -1), target, None, reduction, _NO_ID)
            except IndexError as exc:
                raise TargetsRejected() from exc
            if total_weight.item() != n:
                raise TargetsRejected()
            return value
        return _NLL_FORWARD(torch.log_softmax(pred, -1), target, None, reduction, _NO_ID)[0]

    @staticmethod
    def value_and_grad(call, pred, target, c, valid, aux, xp):
        """(value, c·∂value/∂pred) in one go, for the bridge's gradient-in-forward path. Small
        batches of class ids with a 0-d multiplier and no ignored or masked rows: torch's own
        three fused ops (``log_softmax``, ``nll_loss`` summed, and the gradient from the same
        log-probabilities: the backward ops of ``F.cross_entropy``), about half the time of a
        separate softmax and ``gather`` / ``scatter_add_`` on a (32, 10) batch. Everything
        else: ``forward`` then ``backward``."""
        o = call.options(aux)
        cw = o["class_weight"]
        dtype = pred.dtype
        if (
            valid is None
            and _fast(o)
            and pred.numel() <= MIN_CHUNK
            and dtype in _FULL
            and isinstance(c, torch.Tensor)
            and c.ndim == 0
            and c.dtype == dtype
            and (cw is None or cw.dtype == dtype)
        ):
            rows = pred.unsqueeze(0) if pred.ndim == 1 else _rows(pred)
            if rows.ndim == 2:
                ids = target if rows is pred and target.dtype == torch.int64 else _ids(target, o).reshape(-1)
                logp = torch.log_softmax(rows, -1)
                total = _NLL(logp, ids, cw, _SUM, _NO_ID)
                # d(c·Σ −logp_y)/d logp (c·w_y at the label, negated), then through log_softmax;
                # the summed reduction reads no total weight (c is passed for the shape check)
                g = _NLL_BACKWARD(c, logp, ids, cw, _SUM, _NO_ID, c)
                g = _LOG_SOFTMAX_BACKWARD(g, logp, 1, dtype)
                return total * c, (g if rows is pred else g.view(pred.shape))
        value, residual = CrossEntropyKernel.forward(call, pred, target, c, valid, aux, xp)
        return value, CrossEntropyKernel.backward(call, pred, target, c, valid, aux, residual, xp)

    @staticmethod
    def forward(call, pred, target, c, valid, aux, xp):
        o = call.options(aux)
        target = _ids(target, o)
        fast = _fast(o)
        if fast and pred.numel() <= MIN_CHUNK:
            # one chunk: no buffers, three fused ops (small batches are overhead-bound)
            z = pred if torch.finfo(pred.dtype).bits >= 32 else pred.float()
            nll = torch.log_softmax(z, -1).gather(-1, target[..., None])[..., 0].neg_()
            cw = o["class_weight"]
            per_sample = nll if cw is None else nll * cw[target]
            return reduce_terms(per_sample, c, valid, call.reduction, xp), None
        p = _rows(pred)
        samples = tuple(p.shape[:-1])
        cd = torch.float32 if torch.finfo(pred.dtype).bits < 32 else pred.dtype
        budget = _budget(pred.numel())
        t = target.reshape(samples if o["target_kind"] == "ids" else tuple(p.shape))
        c2, v2 = _per_sample(c, pred, samples), _per_sample(valid, pred, samples)
        cw = o["class_weight"]
        none = call.reduction == "none"
        values = torch.empty(samples, dtype=cd, device=pred.device) if fast or none else None
        if fast:
            buf = _block_buffer(tuple(p.shape), budget, cd, pred.device)
        parts = []
        for idx, r in _blocks(tuple(p.shape), budget):
            z = p[idx]
            z = z if z.dtype == cd else z.to(cd)
            if fast:
                # one fused kernel (max, Σexp, write) into a reused chunk buffer; ℓ = −log p_y
                logp = torch.log_softmax(z, -1, out=buf[:r])
                tc = t[idx]
                nll = logp.gather(-1, tc[..., None])[..., 0].neg_()
                values[idx] = nll if cw is None else nll * cw[tc]
            else:
                cc = c2 if c2 is None or is_scalar(c2) else c2[idx]
                vc = None if v2 is None else v2[idx]
                part = evaluate(call, z, t[idx], cc, vc, aux, xp, "value")
                if none:
                    values[idx] = part
                else:
                    parts.append(part)
        if fast:
            value = reduce_terms(values.reshape(pred.shape[:-1]), c, valid, call.reduction, xp)
        elif none:
            value = values.reshape(pred.shape[:-1])
        else:
            value = torch.stack(parts).sum()
        return value, None

    @staticmethod
    def backward(call, pred, target, c_up, valid, aux, residual, xp):
        o = call.options(aux)
        target = _ids(target, o)
        cw = o["class_weight"]
        fast = _fast(o)
        if fast and pred.numel() <= MIN_CHUNK and torch.finfo(pred.dtype).bits >= 32 and isinstance(c_up, torch.Tensor):
            # small batch: s_i (p − onehot(y)) in three in-place ops on the softmax
            s = c_up if c_up.ndim == 0 else c_up[..., None]
            if cw is not None:
                s = s * cw[target][..., None]
            idx = target[..., None]
            grad = torch.softmax(pred, -1).mul_(s)
            grad.scatter_add_(-1, idx, (-s).expand(idx.shape))
            if valid is not None:
                # exact zeros for masked / ignored rows, even where their logits are NaN or inf
                zero_rows_(grad, valid)
            return grad
        p = _rows(pred)
        shape = tuple(p.shape)
        samples = shape[:-1]
        cd = torch.float32 if torch.finfo(pred.dtype).bits < 32 else pred.dtype
        budget = _budget(pred.numel())
        # G in the layout of the logits: what autograd moves back to the caller's layout is dense
        grad = torch.empty_like(pred)
        g = grad.view(shape)
        t = target.reshape(samples if o["target_kind"] == "ids" else shape)
        v2 = _per_sample(valid, pred, samples)
        if fast:
            # row scales s_i = c_i · grad_out_i · class_weight[y_i]; rows not valid are zeroed below
            s = c_up if isinstance(c_up, torch.Tensor) else torch.tensor(c_up, dtype=cd, device=pred.device)
            if s.ndim or cw is not None:
                s = torch.broadcast_to(s.to(cd), pred.shape[:-1]).reshape(samples)
                if cw is not None:
                    s = s * cw[t]
                s_col = s[..., None]
            else:
                s_col = torch.broadcast_to(s.to(cd), samples + (1,))  # one scale for every row: no per-row array
            low = pred.dtype != cd
            big = float(torch.finfo(pred.dtype).max) if low else None
            tmp = None
            for idx, r in _blocks(shape, budget):
                z = p[idx]
                out = g[idx]
                direct = not low and out.is_contiguous()
                if not direct:
                    # half inputs: a float32 chunk; strided G (moved class axis): a contiguous
                    # chunk, scaled there and written into G in one pass
                    if tmp is None:
                        tmp = _block_buffer(shape, budget, cd, pred.device)
                    work = tmp[:r]
                else:
                    work = out
                # the fused softmax kernel recomputes max and Σexp from the chunk: on CPU this is
                # ~2x faster than exp(z − LSE) from a saved LSE (torch's exp_ is not the fast
                # exp its softmax kernel uses), so the LSE is not kept
                torch.softmax(z if not low else z.to(cd), -1, out=work)
                sc = s_col[idx]
                work.mul_(sc)
                work.scatter_add_(-1, t[idx][..., None], -sc)
                if v2 is not None:
                    zero_rows_(work, v2[idx])  # exact zeros, even where the logits are NaN or inf
                if low:
                    out.copy_(work.clamp_(-big, big))
                elif not direct:
                    out.copy_(work)
        else:
            c2 = _per_sample(c_up, pred, samples)
            for idx, _ in _blocks(shape, budget):
                cc = c2 if is_scalar(c2) else c2[idx]
                vc = None if v2 is None else v2[idx]
                g[idx] = evaluate(call, p[idx], t[idx], cc, vc, aux, xp, "grad")
        return grad


# --- the opaque custom operators (torch.compile) -------------------------------------------
# Traced by Dynamo, the generic bridge's closed form becomes whole-logits graph code that
# Inductor schedules freely (measured 2x the eager peak with class weights), and tracing the
# array-API dispatch prints Dynamo's lru_cache warnings. So, under torch.compile,
# ``lk.cross_entropy`` on torch tensors is one call of ``losskit::cross_entropy`` (forward) and
# ``losskit::cross_entropy_backward``, registered with ``torch.library.custom_op``: Dynamo and
# Inductor see an opaque operator with a fake (shape-only) implementation and a registered
# autograd formula, and everything else (the checks, the plan, this module's chunked kernel)
# runs inside it in eager mode: the compiled loss has the eager memory profile by
# construction, and its data-dependent checks (class ids in range) still run.
#
# The forward runs the eager loss on a detached leaf and keeps that small graph (its
# ``LeanLossFunction`` node saves the logits by reference and nothing N×C) in ``_STASH`` under
# a ticket, a 1-element int64 tensor the operator returns and autograd saves; the backward
# operator runs that node's lean backward. The entry lives as long as the ticket, so a graph
# freed without backward frees it, and ``retain_graph=True`` backwards work. (The operator's
# body runs below autograd: torch ops there record nothing, but the autograd.Function of the
# bridge does; the class axis is therefore moved last before the leaf is made, never inside.)

import weakref  # noqa: E402
from typing import Optional  # noqa: E402

from .torch_compiled import covers, traced_cross_entropy  # noqa: E402

_STASH: dict = {}
_TICKETS = itertools.count()
_EMPTY_INT = torch.empty(0, dtype=torch.int64)
_OPTIONS = frozenset({"axis", "ignore_index", "class_weight", "label_smoothing", "z_loss", "smoothing_formula"})


def stash(store: dict, entry) -> torch.Tensor:
    """Keep ``entry`` in ``store`` under a new ticket (a 1-element int64 tensor) for as long as
    the ticket lives; the custom operators' forward returns the ticket, their backward reads it."""
    key = next(_TICKETS)
    ticket = torch.tensor([key], dtype=torch.int64)
    store[key] = entry
    weakref.finalize(ticket, store.pop, key, None)
    return ticket


def zero_rows_(g, valid):
    """Overwrite with 0 the rows of ``g`` (..., C) where ``valid`` (...) is False, in place,
    whatever they hold (NaN, inf): never 0·NaN. On CPU (contiguous ``g``) only those rows are
    written: their indices come from one pass over ``valid``, not over ``g`` (``g[~valid] = 0``
    would be a ``masked_fill_`` of all of ``g``); elsewhere one ``masked_fill_`` (no host sync)."""
    if g.device.type == "cpu" and g.is_contiguous():
        bad = torch.logical_not(valid).reshape(-1).nonzero()[:, 0]
        if bad.numel():
            g.view(-1, int(g.shape[-1])).index_fill_(0, bad, 0.0)
    else:
        g.masked_fill_(~valid[..., None], 0.0)
    return g


def _stash(entry) -> torch.Tensor:
    return stash(_STASH, entry)


def _sample_shape(shape, axis):
    a = axis % len(shape)
    return tuple(shape[:a]) + tuple(shape[a + 1 :])


def _half(dtype) -> bool:
    return dtype in (torch.float16, torch.bfloat16)


@torch.library.custom_op("losskit::cross_entropy", mutates_args=())
def _op_forward(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    class_weight: Optional[torch.Tensor],
    normalizer: Optional[torch.Tensor],
    normalizer_value: Optional[float],
    reduction: str,
    validate: bool,
    axis: int,
    ignore_index: Optional[int],
    label_smoothing: float,
    z_loss: float,
    smoothing_formula: str,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, ticket (1,) with ``need_grad`` else (0,)): ``lk.cross_entropy`` in eager mode."""
    from ..losses.classification import cross_entropy

    a = axis % logits.ndim
    options = dict(ignore_index=ignore_index, class_weight=class_weight, label_smoothing=label_smoothing, z_loss=z_loss,
                   smoothing_formula=smoothing_formula)
    norm = normalizer if normalizer is not None else normalizer_value
    with torch.autocast(logits.device.type, enabled=False):
        if not need_grad:
            with torch.no_grad():
                value = cross_entropy(logits, target, weight=weight, mask=mask, reduction=reduction, normalizer=norm,
                                      validate=validate, axis=a, **options)
            return value, _EMPTY_INT.clone()
        moved = a != logits.ndim - 1
        leaf = logits.detach()
        if moved:
            leaf = leaf.movedim(a, -1)
            if target.ndim == logits.ndim:  # probabilities carry the class axis too
                target = target.movedim(a, -1)
        leaf.requires_grad_(True)
        with torch.enable_grad():
            value = cross_entropy(leaf, target, weight=weight, mask=mask, reduction=reduction, normalizer=norm,
                                  validate=validate, axis=-1, **options)
        ticket = _stash((value, leaf, a if moved else None))
        return value.detach().clone(), ticket


@_op_forward.register_fake
def _(logits, target, weight, mask, class_weight, normalizer, normalizer_value, reduction, validate, axis, ignore_index,
      label_smoothing, z_loss, smoothing_formula, need_grad):
    dtype = torch.float32 if _half(logits.dtype) else logits.dtype
    shape = _sample_shape(logits.shape, axis) if reduction == "none" else ()
    ticket = torch.empty((1,) if need_grad else (0,), dtype=torch.int64)
    return logits.new_empty(shape, dtype=dtype), ticket


@torch.library.custom_op("losskit::cross_entropy_backward", mutates_args=())
def _op_backward(grad: torch.Tensor, ticket: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """d value / d logits for the incoming gradient ``grad``, from the forward's stashed graph."""
    entry = _STASH.get(int(ticket[0]))
    if entry is None:
        raise RuntimeError("cross_entropy: the graph of this compiled loss was already freed; use retain_graph=True to backward twice.")
    value, leaf, axis = entry
    with torch.autocast(logits.device.type, enabled=False):
        (g,) = torch.autograd.grad(value, leaf, grad, retain_graph=True)
    if axis is not None:
        g = g.movedim(-1, axis)
    if g.stride() != logits.stride():
        # the layout the fake promises (that of empty_like): the small-batch path's softmax
        # is dense in the kernel layout, and non-dense logits get a dense gradient
        g = torch.empty_like(logits).copy_(g)
    return g


@_op_backward.register_fake
def _(grad, ticket, logits):
    return torch.empty_like(logits)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1], inputs[0])


def _backward(ctx, grad_value, _grad_ticket):
    ticket, logits = ctx.saved_tensors
    return (_op_backward(grad_value, ticket, logits),) + (None,) * 14


_op_forward.register_autograd(_backward, setup_context=_setup_context)


def _number(v) -> bool:
    return type(v) in (int, float)


# bound once: every eager call of lk.cross_entropy on torch tensors asks (about 0.1 µs)
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active


def _needs_grad(a) -> bool:
    return isinstance(a, torch.Tensor) and a.requires_grad


def compiled_call(arrays, weight, mask, reduction, normalizer, validate, options):
    """``lk.cross_entropy(*arrays, ...)`` under ``torch.compile``: the custom operator above,
    or, without weights, mask, class weights or normalizer (float32/64 class ids on the last
    axis; ``ignore_index``, label smoothing, z-loss), the traced formulation of
    ``torch_compiled`` that Inductor fuses into one pass forward and one backward (the
    operator's eager passes took 1.7-2.4x compiled torch).
    ``NotImplemented`` (the caller takes the generic, traced path) outside torch.compile,
    inside torch.func transforms, and for what the operator's schema does not take: option
    values that are tensors or of other types, unknown options, a gradient wanted for
    anything but the logits (soft targets, weights), an axis out of range (the generic path
    raises the documented error)."""
    if not _is_compiling() or _functorch_active():
        return NotImplemented
    if len(arrays) != 2 or not options.keys() <= _OPTIONS:
        return NotImplemented
    logits, target = arrays
    if not (isinstance(logits, torch.Tensor) and isinstance(target, torch.Tensor) and logits.ndim >= 1):
        return NotImplemented
    axis = options.get("axis", -1)
    ignore_index = options.get("ignore_index")
    class_weight = options.get("class_weight")
    smoothing, z_loss = options.get("label_smoothing", 0.0), options.get("z_loss", 0.0)
    formula = options.get("smoothing_formula", "pytorch")
    if type(axis) is not int or not -logits.ndim <= axis < logits.ndim:
        return NotImplemented
    if not (ignore_index is None or type(ignore_index) is int) or not (_number(smoothing) and _number(z_loss)):
        return NotImplemented
    if not isinstance(formula, str) or not isinstance(reduction, str) or not isinstance(validate, bool):
        return NotImplemented
    if not all(a is None or isinstance(a, torch.Tensor) for a in (weight, mask, class_weight)):
        return NotImplemented
    if not (normalizer is None or isinstance(normalizer, torch.Tensor) or _number(normalizer)):
        return NotImplemented
    if any(_needs_grad(a) for a in (target, weight, class_weight, normalizer)):
        return NotImplemented
    unweighted = weight is None and mask is None and class_weight is None and normalizer is None
    if covers(logits, target, reduction, validate, axis, ignore_index, unweighted, smoothing, z_loss, formula):
        # Inductor fuses this into one forward and one backward pass (``torch_compiled``)
        return traced_cross_entropy(logits, target, reduction, validate, ignore_index, smoothing, z_loss, formula)
    nt = normalizer if isinstance(normalizer, torch.Tensor) else None
    nv = None if normalizer is None or nt is not None else float(normalizer)
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    value, _ = _op_forward(logits, target, weight, mask, class_weight, nt, nv, reduction, validate, axis, ignore_index,
                           float(smoothing), float(z_loss), formula, need_grad)
    return value
