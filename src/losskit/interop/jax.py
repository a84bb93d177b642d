"""JAX bridge: every declared loss becomes a ``jax.custom_jvp`` function.

The JVP rule pushes the tangent of ``pred`` through the closed-form gradient, so ``jax.grad``
(by transposing that linear map), ``jax.jit`` and ``jax.vmap`` use it; ``jax.hessian``
differentiates the closed-form gradient once more. Tangents of the other inputs (soft
targets, weights, array options) go through ordinary JAX autodiff of the same declaration's
value; symbolic zeros keep that free when they are not differentiated.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .._loss import CLASS_AXIS, Call, evaluate
from .._spec import has_class_axis


def _is_zero(t) -> bool:
    return t is None or isinstance(t, SymbolicZero)


@functools.lru_cache(maxsize=512)
def _function(call: Call):
    class_axis = has_class_axis(call.spec, dict(call.static))

    def plain(pred, target, c, valid, aux):
        return evaluate(call, pred, target, c, valid, aux, jnp, "value")

    @jax.custom_jvp
    def loss(pred, target, c, valid, aux):
        return plain(pred, target, c, valid, aux)

    def loss_jvp(primals, tangents):
        pred, target, c, valid, aux = primals
        d_pred, d_target, d_c, _, d_aux = tangents
        if _is_zero(d_pred):
            out = plain(pred, target, c, valid, aux)
            tangent = jnp.zeros_like(out)
        else:
            # per-sample closed-form gradient (c = 1), then the reduction's multiplier
            out, g = evaluate(call, pred, target, c, valid, aux, jnp, "value_and_grad")
            directional = g * d_pred
            if class_axis:
                directional = jnp.sum(directional, axis=-1)
            tangent = jnp.sum(directional) if call.reduction != "none" else directional
            tangent = tangent.astype(out.dtype)
        other_zero = _is_zero(d_target) and _is_zero(d_c) and all(_is_zero(a) for a in jax.tree_util.tree_leaves(d_aux, is_leaf=_is_zero))
        if not other_zero:
            tangent = tangent + _other_tangent(plain, pred, target, c, valid, aux, d_target, d_c, d_aux)
        return out, tangent

    loss.defjvp(loss_jvp, symbolic_zeros=True)
    return loss


def _other_tangent(plain, pred, target, c, valid, aux, d_target, d_c, d_aux):
    def zero_like(x, t):
        return jnp.zeros_like(x) if _is_zero(t) else t

    def f(target_, c_, aux_):
        return plain(pred, target_, c_, valid, aux_)

    float_target = jnp.issubdtype(jnp.result_type(target), jnp.floating)
    args, tans = [], []
    fixed = {}
    if float_target and not _is_zero(d_target):
        args.append(target), tans.append(d_target)
    else:
        fixed["target"] = target
    # c and aux: differentiate only the float array leaves with non-zero tangents
    c_arr = jnp.asarray(c)
    args.append(c_arr), tans.append(zero_like(c_arr, d_c))
    aux_leaves, treedef = jax.tree_util.tree_flatten(aux)
    d_leaves = jax.tree_util.tree_leaves(d_aux, is_leaf=_is_zero) if d_aux is not None else [None] * len(aux_leaves)
    aux_leaves = [jnp.asarray(a) for a in aux_leaves]
    args.extend(aux_leaves)
    tans.extend(zero_like(a, t) for a, t in zip(aux_leaves, d_leaves))

    def g(*xs):
        xs = list(xs)
        t = fixed["target"] if "target" in fixed else xs.pop(0)
        c_ = xs.pop(0)
        a_ = jax.tree_util.tree_unflatten(treedef, xs)
        return f(t, c_, a_)

    return jax.jvp(g, tuple(args), tuple(tans))[1]


def value(call, pred, target, c, valid, aux):
    if isinstance(c, float):
        c = jnp.asarray(c, dtype=jnp.result_type(pred.dtype, jnp.float32))
    return _function(call)(pred, target, c, valid, aux)


# --- several differentiable inputs and set-level losses (see ``_kinds``) ------------------


@functools.lru_cache(maxsize=512)
def _multi_function(call: Call):
    from .._kinds import evaluate_multi

    class_axis = call.spec.kind == CLASS_AXIS

    def plain(inputs, target, c, valid, aux):
        return evaluate_multi(call, inputs, target, c, valid, aux, jnp, "value")

    @jax.custom_jvp
    def loss(inputs, target, c, valid, aux):
        return plain(inputs, target, c, valid, aux)

    def loss_jvp(primals, tangents):
        inputs, target, c, valid, aux = primals
        d_inputs, d_target, d_c, _, d_aux = tangents
        if call.spec.vjp_kernel is not None:  # coupled samples: J·d is the transpose of the closed-form vjp
            out, vjp = evaluate_multi(call, inputs, target, c, valid, aux, jnp, "value_and_vjp")
            ds = tuple(jnp.zeros_like(x) if _is_zero(d) else d for x, d in zip(inputs, d_inputs))
            if call.reduction == "none":
                tangent = jax.linear_transpose(vjp, out)(ds)[0].astype(out.dtype)
            else:
                tangent = sum(jnp.sum(g * d) for g, d in zip(vjp(1.0), ds)).astype(out.dtype)
            gs, d_inputs = (), ()
        else:
            out, gs = evaluate_multi(call, inputs, target, c, valid, aux, jnp, "value_and_grad")
            tangent = jnp.zeros_like(out)
        for g, d in zip(gs, d_inputs):
            if _is_zero(d):
                continue
            directional = g * d
            if class_axis:
                directional = jnp.sum(directional, axis=-1)
            tangent = tangent + (jnp.sum(directional) if call.reduction != "none" else directional).astype(out.dtype)
        rest_zero = _is_zero(d_target) and _is_zero(d_c) and all(_is_zero(a) for a in jax.tree_util.tree_leaves(d_aux, is_leaf=_is_zero))
        if not rest_zero:
            def f(target_, c_, aux_):
                return plain(inputs, target_, c_, valid, aux_)

            zl = lambda x, t: jnp.zeros_like(x) if _is_zero(t) else t  # noqa: E731
            args, tans = [], []
            float_target = target is not None and jnp.issubdtype(jnp.result_type(target), jnp.floating)
            t_arg = target if float_target else None
            c_arr = jnp.asarray(c)
            given = [i for i, a in enumerate(aux) if a is not None]  # array options left at None stay None
            aux_arr = tuple(jnp.asarray(aux[i]) for i in given)
            d_aux_leaves = jax.tree_util.tree_leaves(d_aux, is_leaf=_is_zero) if d_aux is not None else [None] * len(given)

            def g(*xs):
                xs = list(xs)
                tt = xs.pop(0) if float_target else target
                full = list(aux)
                for i, a in zip(given, xs[1:]):
                    full[i] = a
                return f(tt, xs[0], tuple(full))

            args = ([t_arg] if float_target else []) + [c_arr, *aux_arr]
            tans = ([zl(target, d_target)] if float_target else []) + [zl(c_arr, d_c)] + [zl(a, t) for a, t in zip(aux_arr, d_aux_leaves)]
            tangent = tangent + jax.jvp(g, tuple(args), tuple(tans))[1]
        return out, tangent

    loss.defjvp(loss_jvp, symbolic_zeros=True)
    return loss


def value_multi(call, inputs, target, c, valid, aux):
    if isinstance(c, float):
        c = jnp.asarray(c, dtype=jnp.result_type(inputs[0].dtype, jnp.float32))
    return _multi_function(call)(tuple(inputs), target, c, valid, tuple(aux))


@functools.lru_cache(maxsize=512)
def _set_function(call: Call):
    """custom_vjp: the kernel gives a vector-Jacobian product, not a JVP (set-level losses
    declare no Hessian, so forward mode is not needed)."""
    from .._kinds import evaluate_set

    @jax.custom_vjp
    def loss(pred, target, w, valid, normalizer, aux):
        return evaluate_set(call, pred, target, w, valid, normalizer, aux, jnp, "value")

    def fwd(pred, target, w, valid, normalizer, aux):
        unit = None
        if call.reduction == "none":
            value = loss(pred, target, w, valid, normalizer, aux)
        else:  # a reduced value's gradient is linear in its scalar cotangent: keep it for 1
            value, pull = evaluate_set(call, pred, target, w, valid, normalizer, aux, jnp, "value_and_vjp")
            unit = pull(jnp.ones((), dtype=value.dtype))
        return value, (unit, pred, target, w, valid, normalizer, aux)

    def bwd(res, g):
        unit, pred, target, w, valid, normalizer, aux = res
        if unit is not None:  # the forward's kernel run, no second one
            d_pred = (g * unit).astype(unit.dtype)
        else:
            d_pred = evaluate_set(call, pred, target, w, valid, normalizer, aux, jnp, "grad", upstream=g)

        def others(target_, w_, aux_):
            return evaluate_set(call, pred, target_, w_, valid, normalizer, aux_, jnp, "value")

        zero = lambda x: None if x is None else jnp.zeros_like(x)  # noqa: E731
        float_target = jnp.issubdtype(jnp.result_type(target), jnp.floating)
        if w is None and not float_target and not jax.tree_util.tree_leaves(aux):  # nothing else to differentiate
            return d_pred, None, None, None, None if normalizer is None else zero(jnp.asarray(normalizer)), aux
        if float_target:
            _, pull = jax.vjp(others, target, w, aux)
            d_target, d_w, d_aux = pull(g)
        else:
            _, pull = jax.vjp(lambda w_, aux_: others(target, w_, aux_), w, aux)  # class ids: no target gradient
            (d_w, d_aux), d_target = pull(g), None
        return d_pred, d_target, d_w, None if valid is None else None, None if normalizer is None else zero(jnp.asarray(normalizer)), d_aux

    loss.defvjp(fwd, bwd)
    return loss


def value_set(call, pred, target, w, valid, normalizer, aux):
    return _set_function(call)(pred, target, w, valid, normalizer, tuple(aux))


# --- sequence losses (CTC, see ``_kinds``) ------------------------------------------------


@functools.lru_cache(maxsize=512)
def _sequence_function(call: Call):
    """custom_vjp: the forward pass runs the recursion once for the value and every sequence's
    closed-form gradient (the residual); the integer inputs (targets, lengths) get no
    cotangent. No forward mode: the loss declares no Hessian."""
    from .._kinds import evaluate_multi, evaluate_sequence, sequence_grad

    @jax.custom_vjp
    def loss(pred, target, c, valid, aux):
        return evaluate_multi(call, (pred,), target, c, valid, aux, jnp, "value")

    def fwd(pred, target, c, valid, aux):
        value, values, grads = evaluate_sequence(call, pred, target, c, valid, aux, jnp)
        return value, (values, grads, c, valid, jnp.zeros((0,), dtype=pred.dtype))

    def bwd(res, g):
        values, grads, c, valid, like = res
        d_pred = sequence_grad(grads, c * g, valid, like, jnp)
        d_c = values * g
        if valid is not None:
            d_c = jnp.where(valid, d_c, jnp.zeros_like(d_c))
        d_c = (d_c if jnp.ndim(c) else jnp.sum(d_c)).astype(jnp.result_type(c))
        return d_pred, None, d_c, None, None

    loss.defvjp(fwd, bwd)
    return loss


def value_sequence(call, pred, target, c, valid, aux):
    if isinstance(c, float):
        c = jnp.asarray(c, dtype=jnp.result_type(pred.dtype, jnp.float32))
    return _sequence_function(call)(pred, target, c, valid, tuple(aux))
