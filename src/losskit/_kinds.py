"""The kinds of loss beyond one prediction against one target, in the same machinery:

* **several differentiable inputs** (``spec.inputs`` names them, e.g. ``anchor, positive,
  negative``): the kernels take every input and return one gradient per input; ``.grad``
  returns a tuple, and the torch ``autograd.Function`` / JAX ``custom_jvp`` return them all;
* **set-level** losses (``kind=SET``), a ratio of sums over a set of elements (Dice): the
  kernel sees the per-element weights and masks, because they enter both sums, and returns
  the per-set values with a vector-Jacobian product. ``reduction="none"`` gives the per-set
  values, ``"sum"`` their sum, ``"mean"`` their mean (or the sum over ``normalizer``).

Validation and the shared options follow ``_loss`` (the same helpers); only the shapes differ.
"""

from __future__ import annotations

import math

from . import _validate
from ._array import backend, coerce_like, compute_dtype, upcast
from ._reduce import combine_masks, is_scalar, multiplier, reduce_terms, scale_elementwise
from ._spec import CLASS_AXIS, SEQUENCE, SET


def run(loss, need, arrays, weight, mask, reduction, normalizer, validate, options):
    from ._loss import _NORMALIZER, Call, check_option

    spec = loss.spec
    name = spec.name
    first = arrays[0]
    *others, weight, mask = coerce_like(first, *arrays[1:], weight, mask)
    arrays = (first, *others)
    xp = _validate.input_namespace(name, spec.inputs[0], first, **dict(zip(spec.positional[1:], others)), weight=weight, mask=mask)
    n_in = len(spec.inputs)
    inputs, target = arrays[:n_in], (arrays[n_in] if spec.target else None)
    for arg, x in zip(spec.inputs, inputs):
        _validate.check_floating(x, arg, name, xp)
        if x is not first:
            _validate.check_same_shape(first, x, spec.inputs[0], arg, name)
    if target is not None:
        _validate.check_real(target, spec.target, name)
    _validate.check_reduction(reduction, normalizer, name)
    if normalizer is not None:
        normalizer = check_option(_NORMALIZER, normalizer, "normalizer", name, first, xp, validate)
    o = loss._bind(options, first, xp, validate)
    if spec.kind == SEQUENCE:
        return _run_sequence(loss, need, first, target, weight, mask, reduction, normalizer, validate, o, xp)
    if spec.kind == SET:
        return _run_set(loss, need, first, target, weight, mask, reduction, normalizer, validate, o, xp)

    class_axis = spec.kind == CLASS_AXIS
    axis = None
    if class_axis:
        axis = _validate.normalize_axis(o.get("axis", -1), first.ndim, name)
        sample_shape = tuple(first.shape[:axis]) + tuple(first.shape[axis + 1 :])
    else:
        sample_shape = tuple(first.shape)
    _validate.check_sample_array(weight, sample_shape, "weight", name, xp, boolean=False, class_axis=class_axis)
    _validate.check_sample_array(mask, sample_shape, "mask", name, xp, boolean=True, class_axis=class_axis)
    moved = class_axis and axis != first.ndim - 1
    if moved:
        inputs = tuple(xp.moveaxis(x, axis, -1) for x in inputs)
    if target is not None and target.dtype != first.dtype and _validate.is_floating(target, xp):
        target = xp.astype(target, compute_dtype(first.dtype, xp))
    if validate and spec.check_values is not None:
        spec.check_values(*inputs, *(() if target is None else (target,)), o, xp, name, mask)
    c = multiplier(sample_shape, weight, mask, None, reduction, normalizer, compute_dtype(first.dtype, xp), xp, check=validate and name)
    call = Call(spec, reduction, tuple((k, o[k]) for k in loss._static_names), spec.array_options)
    aux = tuple(o[k] for k in spec.array_options)
    kind = backend(xp)
    if need == "value" and kind in ("torch", "jax"):
        if kind == "torch":
            from .interop import torch as hook
        else:
            from .interop import jax as hook
        return hook.value_multi(call, inputs, target, c, mask, aux)
    out = evaluate_multi(call, inputs, target, c, mask, aux, xp, need)
    one = n_in == 1  # one differentiable input (ntxent): its gradient, not a 1-tuple
    if need == "value":
        return out
    move = (lambda g: xp.moveaxis(g, -1, axis)) if moved else (lambda g: g)  # noqa: E731
    back = (lambda gs: move(gs[0])) if one else (lambda gs: tuple(move(g) for g in gs))  # noqa: E731
    if not moved and not one:
        return out
    if need == "grad":
        return back(out)
    if need == "value_and_grad":
        return out[0], back(out[1])
    return back(out[0]), back(out[1])


def evaluate_multi(call, inputs, target, c, valid, aux, xp, need):
    """The math of one call of a several-input loss: 'value' -> reduced value; 'grad' -> tuple
    of gradients (one per input); 'value_and_grad' -> (value, tuple); 'grad_hess' -> (tuple, tuple)."""
    from ._loss import _out_dtype

    spec = call.spec
    o = call.options(aux)
    args = tuple(upcast(x, xp) for x in inputs) + (() if target is None else (target,))
    class_axis = spec.kind == CLASS_AXIS

    def scaled(gs):
        return tuple(_out_dtype(scale_elementwise(g, c, valid, class_axis, xp), x, xp) for g, x in zip(gs, inputs))

    if spec.vjp_kernel is not None:
        return _evaluate_coupled(call, inputs, args, c, valid, o, xp, need)
    if need == "value":
        return reduce_terms(spec.value(*args, o, xp), c, valid, call.reduction, xp)
    if need == "grad":
        return scaled(spec.grad(*args, o, xp))
    if need == "value_and_grad":
        if spec.value_and_grad is not None:
            v, gs = spec.value_and_grad(*args, o, xp)
        else:
            v, gs = spec.value(*args, o, xp), spec.grad(*args, o, xp)
        return reduce_terms(v, c, valid, call.reduction, xp), scaled(gs)
    if spec.grad_and_hess is not None:
        gs, hs = spec.grad_and_hess(*args, o, xp)
    else:
        gs, hs = spec.grad(*args, o, xp), spec.hess(*args, o, xp)
    return scaled(gs), scaled(hs)


def _evaluate_coupled(call, inputs, args, c, valid, o, xp, need):
    """Several inputs with coupled samples (``spec.vjp_kernel``): the gradient is the kernel's
    vector-Jacobian product with the per-sample multipliers c (0 where invalid). 'value_and_vjp'
    returns (value, vjp) with vjp(u) the gradients of Σ u_i c_i ℓ_i (u a scalar or per sample)."""
    from ._loss import _out_dtype

    if need == "value" and call.spec.value is not None:  # the value alone may skip the vjp's work (CTC: the reversed rows)
        return reduce_terms(call.spec.value(*args, o, xp), c, valid, call.reduction, xp)
    values, vjp = call.spec.vjp_kernel(*args, o, xp)
    value = reduce_terms(values, c, valid, call.reduction, xp)
    if need == "value":
        return value

    def weighted(u):
        w = c * u if not (isinstance(c, float) and c == 1.0) else u
        if is_scalar(w) or tuple(getattr(w, "shape", ())) != tuple(values.shape):
            w = w * xp.ones_like(values)
        if valid is not None:
            w = xp.where(valid, w, xp.zeros_like(w))
        return tuple(_out_dtype(g, x, xp) for g, x in zip(vjp(w), inputs))

    if need == "value_and_vjp":
        return value, weighted
    if need == "grad":
        return weighted(1.0)
    if need == "value_and_grad":
        return value, weighted(1.0)
    raise NotImplementedError(f"{call.spec.name} has no closed-form Hessian.")


# --- set-level losses ----------------------------------------------------------------------


def _run_set(loss, need, pred, target, weight, mask, reduction, normalizer, validate, o, xp):
    from ._loss import Call, _prepare_elementwise

    spec = loss.spec
    name = spec.name
    if normalizer is not None:
        raise ValueError(
            f"{name}: `normalizer` does not apply to a set-level loss: its values are per-set "
            "ratios of sums (per class, per image), not per-sample terms, so there is no count "
            "to replace. Use reduction='sum' and divide, or weight/mask the pixels."
        )
    shape = tuple(pred.shape)
    prep = (spec.prepare or _prepare_elementwise)(pred, target, o, xp, validate, name, mask)
    # weight and mask: the pred's shape, or the prepared per-pixel shape broadcast over the class axis
    weight = _set_array(weight, shape, prep, "weight", name, xp, False)
    mask = _set_array(mask, shape, prep, "mask", name, xp, True)
    valid = combine_masks(mask, prep.valid, xp)
    if validate and spec.check_values is not None:
        spec.check_values(prep.pred, prep.target, o, xp, name, valid)
    w = None if weight is None else xp.astype(weight, compute_dtype(pred.dtype, xp))
    static = tuple((k, o[k]) for k in loss._static_names) + tuple(prep.static.items())
    call = Call(spec, reduction, static, spec.array_options)
    aux = tuple(o[k] for k in spec.array_options)
    kind = backend(xp)
    if need == "value" and kind in ("torch", "jax"):
        if kind == "torch":
            from .interop import torch as hook
        else:
            from .interop import jax as hook
        return hook.value_set(call, prep.pred, prep.target, w, valid, normalizer, aux)
    return evaluate_set(call, prep.pred, prep.target, w, valid, normalizer, aux, xp, need)


def _set_array(x, shape, prep, arg, name, xp, boolean):
    if x is not None and prep.axis is not None and tuple(x.shape) == tuple(prep.sample_shape):
        _validate.check_sample_array(x, tuple(prep.sample_shape), arg, name, xp, boolean=boolean)
        return xp.expand_dims(x, axis=prep.axis)
    _validate.check_sample_array(x, shape, arg, name, xp, boolean=boolean)
    return x


def set_factor(call, normalizer, n_sets):
    """What each set's value is multiplied by in the reduced loss."""
    if call.reduction != "mean":
        return 1.0
    if normalizer is None:
        return 0.0 if n_sets == 0 else 1.0 / n_sets
    if isinstance(normalizer, float):
        return 0.0 if normalizer == 0 else 1.0 / normalizer
    return 1.0 / normalizer


def _count(values) -> int:
    return math.prod([int(d) for d in values.shape])


def reduce_sets(values, call, normalizer, xp):
    if call.reduction == "none":
        return values
    total = xp.sum(values)
    return total if call.reduction == "sum" else total * set_factor(call, normalizer, _count(values))


def evaluate_set(call, pred, target, w, valid, normalizer, aux, xp, need, upstream=None):
    """The math of one call of a set-level loss. ``upstream`` (per set, or a scalar) replaces
    the reduction's own weights of the sets in the gradient (the framework hooks' cotangent);
    a callable gets the per-set values first. ``need="value_and_vjp"`` returns the reduced
    value and ``pull(cotangent)``, the gradient for a cotangent of that value, which reuses
    the kernel's forward work (per-class sums, probabilities)."""
    from ._loss import _out_dtype

    o = call.options(aux)
    values, vjp = call.spec.set_kernel(upcast(pred, xp), target, w, valid, o, xp)
    if need == "value":
        return reduce_sets(values, call, normalizer, xp)
    if need == "value_and_vjp":  # the framework hooks keep ``pull`` for the backward pass
        factor = set_factor(call, normalizer, _count(values)) if call.reduction != "none" else 1.0

        def pull(cotangent):
            """d(cotangent · value)/d pred, reusing the forward's sums and probabilities."""
            return _out_dtype(vjp(cotangent * factor if call.reduction != "none" else cotangent), pred, xp)

        return reduce_sets(values, call, normalizer, xp), pull
    if upstream is None:
        upstream = set_factor(call, normalizer, _count(values)) if call.reduction != "none" else 1.0
    elif callable(upstream):
        upstream = upstream(values)
    grad = _out_dtype(vjp(upstream), pred, xp)
    if need == "grad":
        return grad
    return reduce_sets(values, call, normalizer, xp), grad


# --- sequence losses (CTC) -----------------------------------------------------------------
# One value per sequence: the first input is (..., T, C), weight and mask have its shape
# without the time and class axes. The loss's ``prepare`` converts and checks its integer
# inputs (lengths, array options); the math is a ``vjp_kernel`` (per-sequence values and a
# closed-form vector-Jacobian product), evaluated by ``evaluate_multi`` and the multi hooks.


def _run_sequence(loss, need, pred, target, weight, mask, reduction, normalizer, validate, o, xp):
    from ._loss import Call

    spec = loss.spec
    name = spec.name
    if pred.ndim < 2:
        raise ValueError(f"{name}: `{spec.inputs[0]}` must have a time and a class axis, got shape {tuple(pred.shape)}.")
    sample_shape = tuple(pred.shape[:-2])
    _validate.check_sample_array(weight, sample_shape, "weight", name, xp, boolean=False)
    _validate.check_sample_array(mask, sample_shape, "mask", name, xp, boolean=True)
    if spec.prepare is not None:
        o = spec.prepare(pred, target, o, xp, validate, name)
    c = multiplier(sample_shape, weight, mask, None, reduction, normalizer, compute_dtype(pred.dtype, xp), xp, check=validate and name)
    call = Call(spec, reduction, tuple((k, o[k]) for k in loss._static_names), spec.array_options)
    aux = tuple(o[k] for k in spec.array_options)
    kind = backend(xp)
    if need == "value" and kind in ("torch", "jax"):
        if kind == "torch":
            from .interop import torch as hook
        else:
            from .interop import jax as hook
        return hook.value_sequence(call, pred, target, c, mask, aux)
    out = evaluate_multi(call, (pred,), target, c, mask, aux, xp, need)
    if need == "value":
        return out
    if need == "grad":
        return out[0]
    return out[0], out[1][0]


def evaluate_sequence(call, pred, target, c, valid, aux, xp):
    """One pass of a sequence loss for the framework hooks: ``(reduced value, per-sequence
    values ℓ_n, per-sequence gradients ∇ℓ_n)`` (the gradients unweighted, in the compute dtype).
    The gradient of the reduced value for a cotangent u is ``sequence_grad(grads, c·u, valid)``."""
    values, vjp = call.spec.vjp_kernel(upcast(pred, xp), target, call.options(aux), xp)
    (grads,) = vjp(xp.ones_like(values))
    return reduce_terms(values, c, valid, call.reduction, xp), values, grads


def sequence_grad(grads, w, valid, pred, xp):
    """Σ_n w_n ∇ℓ_n over valid sequences, in ``pred``'s dtype (w a number or per sequence)."""
    from ._loss import _out_dtype

    extra = (None,) * (grads.ndim - (w.ndim if hasattr(w, "ndim") else 0))
    g = grads * (w[(...,) + extra] if hasattr(w, "ndim") and w.ndim else w)
    if valid is not None:
        g = xp.where(valid[(...,) + (None,) * (grads.ndim - valid.ndim)], g, xp.zeros_like(g))
    return _out_dtype(g, pred, xp)


def scan(step, carry, xs, xp, reverse=False):
    """``carry, y_t = step(carry, x_t)`` over the leading (time) axis of the arrays ``xs``:
    ``(last carry, ys stacked along axis 0)``. ``lax.scan`` on JAX (one compiled step under
    ``jit``), a Python loop elsewhere; ``reverse`` runs from the last step to the first."""
    if backend(xp) == "jax":
        from jax import lax

        return lax.scan(step, carry, tuple(xs), reverse=reverse)
    steps = int(xs[0].shape[0])
    ys = [None] * steps
    for t in reversed(range(steps)) if reverse else range(steps):
        carry, ys[t] = step(carry, tuple(x[t, ...] for x in xs))
    if not steps:
        raise ValueError("a sequence loss needs at least one time step")
    return carry, xp.stack(ys, axis=0)
