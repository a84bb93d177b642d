"""How a loss is declared once and gets ``__call__``, ``grad``, ``value_and_grad`` and
``grad_hess``, the shared options, a registry entry and its framework hooks.

A loss module supplies per-sample math only (a :class:`LossSpec`); this module does the rest:
namespace lookup, validation, the reduction rule of ``_reduce``, dtype handling and routing to
``interop.torch`` / ``interop.jax`` so that framework autodiff uses the closed-form derivatives.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import _validate
from ._array import backend, compute_dtype, namespace, upcast
from ._reduce import combine_masks, is_scalar, multiplier, reduce_terms, scale_elementwise

__all__ = ["LossSpec", "Loss", "Prepared", "REGISTRY", "declare", "evaluate"]

ELEMENTWISE = "elementwise"
CLASS_AXIS = "class_axis"


@dataclass(frozen=True)
class Prepared:
    """What a loss's ``prepare`` hands to the kernels: inputs in kernel layout (the class axis
    last), the validity mask it derives (e.g. from ``ignore_index``), its denominator weights
    for ``"mean"`` and the per-sample shape."""

    pred: Any
    target: Any
    sample_shape: tuple
    valid: Any = None
    denom: Any = None
    static: Mapping = field(default_factory=dict)  # extra static options (e.g. target kind)
    axis: int | None = None  # original class axis, to move gradients back


@dataclass(frozen=True, eq=False)
class LossSpec:
    """Declaration of one loss. Kernels have the signature ``f(pred, target, o, xp)`` where ``o``
    is the dict of bound options, and return per-sample values (shape without the class axis)
    or per-element derivatives of the per-sample loss (shape of ``pred``)."""

    name: str
    family: str
    kind: str
    formula: str
    gradient: str
    hessian: str
    domain: str
    reference: str
    use_when: str
    value: Callable
    grad: Callable
    hess: Callable
    value_and_grad: Callable | None = None
    grad_and_hess: Callable | None = None
    value_sum: Callable | None = None  # Σ of per-sample values, used when no weight/mask
    options: Mapping = field(default_factory=dict)  # name -> default
    array_options: tuple = ()  # options that may be arrays (passed to hooks as inputs)
    check: Callable | None = None  # check(o, loss) -> None, raises on bad option values
    prepare: Callable | None = None  # prepare(pred, target, o, xp, validate, loss, mask) -> Prepared
    check_values: Callable | None = None  # check_values(pred, target, o, xp, loss, valid), when validate
    pred_name: str = "pred"


@dataclass(frozen=True)
class Call:
    """The non-array part of one call: hashable, so framework hooks can cache on it."""

    spec: LossSpec
    reduction: str
    static: tuple  # sorted (name, value) pairs of static options
    aux_names: tuple  # names of array options passed as inputs

    def options(self, aux) -> dict:
        o = dict(self.static)
        o.update(zip(self.aux_names, aux))
        return o


def _prepare_elementwise(pred, target, o, xp, validate, loss, mask=None):
    _validate.check_same_shape(pred, target, "pred", "target", loss)
    return Prepared(pred, upcast_target(target, pred, xp), tuple(pred.shape))


def upcast_target(target, pred, xp):
    """Soft/float targets in the compute dtype of ``pred``."""
    dt = compute_dtype(pred.dtype, xp)
    return target if target.dtype == dt else xp.astype(target, dt)


def evaluate(call: Call, pred, target, c, valid, aux, xp, need: str):
    """The math of one call, on any backend: ``need`` is 'value', 'grad', 'value_and_grad' or
    'grad_hess'. ``pred`` is in kernel layout; gradients come back in ``pred``'s dtype."""
    spec = call.spec
    o = call.options(aux)
    p = upcast(pred, xp)
    if need == "value":
        if spec.value_sum is not None and call.reduction != "none" and valid is None and is_scalar(c):
            total = spec.value_sum(p, target, o, xp)
            return total if isinstance(c, float) and c == 1.0 else total * c
        return reduce_terms(spec.value(p, target, o, xp), c, valid, call.reduction, xp)
    class_axis = spec.kind == CLASS_AXIS
    if need == "grad":
        g = spec.grad(p, target, o, xp)
        return _out_dtype(scale_elementwise(g, c, valid, class_axis, xp), pred, xp)
    if need == "value_and_grad":
        if spec.value_and_grad is not None:
            v, g = spec.value_and_grad(p, target, o, xp)
        else:
            v, g = spec.value(p, target, o, xp), spec.grad(p, target, o, xp)
        value = reduce_terms(v, c, valid, call.reduction, xp)
        return value, _out_dtype(scale_elementwise(g, c, valid, class_axis, xp), pred, xp)
    if need == "grad_hess":
        if spec.grad_and_hess is not None:
            g, h = spec.grad_and_hess(p, target, o, xp)
        else:
            g, h = spec.grad(p, target, o, xp), spec.hess(p, target, o, xp)
        return (
            _out_dtype(scale_elementwise(g, c, valid, class_axis, xp), pred, xp),
            _out_dtype(scale_elementwise(h, c, valid, class_axis, xp), pred, xp),
        )
    raise AssertionError(need)


def _out_dtype(g, pred, xp):
    """Derivatives in ``pred``'s dtype. Narrowing to half precision saturates at the dtype's
    largest finite value instead of overflowing to inf."""
    if g.dtype == pred.dtype:
        return g
    big = float(xp.finfo(pred.dtype).max)
    return xp.astype(xp.clip(g, -big, big), pred.dtype)


class Loss:
    """A declared loss: ``loss(pred, target, **opts)`` returns the reduced value; ``.grad``,
    ``.value_and_grad`` and ``.grad_hess`` return closed-form derivatives with respect to
    ``pred``. See ``docs/conventions.md`` for the shared options."""

    def __init__(self, spec: LossSpec, doc: str | None = None):
        self.spec = spec
        self.__name__ = spec.name
        self.__qualname__ = spec.name
        self.__doc__ = doc
        self._defaults = dict(spec.options)
        self._static_names = tuple(k for k in spec.options if k not in spec.array_options)
        self.__signature__ = _signature(spec)

    def __repr__(self) -> str:
        return f"<losskit loss {self.spec.name!r} ({self.spec.family})>"

    # -- public API ---------------------------------------------------------------------
    def __call__(self, pred, target, /, *, weight=None, mask=None, reduction="mean", normalizer=None, validate=True, **options):
        return self._run("value", pred, target, weight, mask, reduction, normalizer, validate, options)

    def grad(self, pred, target, /, *, weight=None, mask=None, reduction="mean", normalizer=None, validate=True, **options):
        """d value / d pred, shape of ``pred`` (for ``reduction='none'``: the gradient of the sum,
        i.e. each sample's own weighted gradient)."""
        return self._run("grad", pred, target, weight, mask, reduction, normalizer, validate, options)

    def value_and_grad(self, pred, target, /, *, weight=None, mask=None, reduction="mean", normalizer=None, validate=True, **options):
        """``(value, grad)`` in one pass where the math shares work."""
        return self._run("value_and_grad", pred, target, weight, mask, reduction, normalizer, validate, options)

    def grad_hess(self, pred, target, /, *, weight=None, mask=None, reduction="mean", normalizer=None, validate=True, **options):
        """``(grad, hess)``: gradient and Hessian diagonal with respect to ``pred``, each of
        ``pred``'s shape (the form gradient-boosting libraries take)."""
        return self._run("grad_hess", pred, target, weight, mask, reduction, normalizer, validate, options)

    # -- machinery ------------------------------------------------------------------------
    def _bind(self, options: dict) -> dict:
        if options:
            if not options.keys() <= self._defaults.keys():
                _validate.check_options(options, self._defaults, self.spec.name)
            o = {**self._defaults, **options}
        else:
            o = dict(self._defaults)
        if self.spec.check is not None:
            self.spec.check(o, self.spec.name)
        return o

    def _run(self, need, pred, target, weight, mask, reduction, normalizer, validate, options):
        spec = self.spec
        name = spec.name
        xp = namespace(pred, target, weight, mask)
        _validate.check_floating(pred, spec.pred_name, name, xp)
        _validate.check_reduction(reduction, normalizer, name)
        o = self._bind(options)
        if spec.kind == CLASS_AXIS:
            axis = _validate.normalize_axis(o["axis"], pred.ndim, name)
            sample_shape = tuple(pred.shape[:axis]) + tuple(pred.shape[axis + 1 :])
        else:
            sample_shape = tuple(pred.shape)
        if weight is not None:
            _validate.check_sample_array(weight, sample_shape, "weight", name, xp, boolean=False)
        if mask is not None:
            _validate.check_sample_array(mask, sample_shape, "mask", name, xp, boolean=True)
        prep = (spec.prepare or _prepare_elementwise)(pred, target, o, xp, validate, name, mask)
        valid = combine_masks(mask, prep.valid, xp)
        if validate and spec.check_values is not None:
            spec.check_values(prep.pred, prep.target, o, xp, name, valid)
        c = multiplier(sample_shape, weight, valid, prep.denom, reduction, normalizer, compute_dtype(pred.dtype, xp), xp)
        static = [(k, o[k]) for k in self._static_names]
        static.extend(prep.static.items())
        call = Call(spec, reduction, tuple(static), spec.array_options)
        aux = tuple(o[k] for k in spec.array_options)
        kind = backend(xp)
        if need == "value":
            if kind == "torch":
                from .interop import torch as hook

                return hook.value(call, prep.pred, prep.target, c, valid, aux)
            if kind == "jax":
                from .interop import jax as hook

                return hook.value(call, prep.pred, prep.target, c, valid, aux)
            return evaluate(call, prep.pred, prep.target, c, valid, aux, xp, need)
        out = evaluate(call, prep.pred, prep.target, c, valid, aux, xp, need)
        if prep.axis is None:
            return out
        move = lambda g: xp.moveaxis(g, -1, prep.axis)  # noqa: E731
        if need == "grad":
            return move(out)
        if need == "value_and_grad":
            return out[0], move(out[1])
        return move(out[0]), move(out[1])


def _signature(spec: LossSpec) -> inspect.Signature:
    P = inspect.Parameter
    params = [
        P(spec.pred_name, P.POSITIONAL_ONLY),
        P("target", P.POSITIONAL_ONLY),
        P("weight", P.KEYWORD_ONLY, default=None),
        P("mask", P.KEYWORD_ONLY, default=None),
        P("reduction", P.KEYWORD_ONLY, default="mean"),
        P("normalizer", P.KEYWORD_ONLY, default=None),
        P("validate", P.KEYWORD_ONLY, default=True),
    ]
    params += [P(k, P.KEYWORD_ONLY, default=v) for k, v in spec.options.items()]
    return inspect.Signature(params)


REGISTRY: dict[str, Loss] = {}


def declare(doc: str | None = None, **fields) -> Loss:
    """Declare a loss from its per-sample math and metadata; registers and returns it."""
    spec = LossSpec(**fields)
    if spec.kind not in (ELEMENTWISE, CLASS_AXIS):
        raise ValueError(f"unknown loss kind {spec.kind!r}")
    if spec.name in REGISTRY:
        raise ValueError(f"loss {spec.name!r} is already declared")
    loss = Loss(spec, doc)
    REGISTRY[spec.name] = loss
    return loss
