"""How a loss is declared once and gets ``__call__``, ``grad``, ``value_and_grad`` and
``grad_hess``, the shared options, a registry entry and its framework hooks.

A loss module supplies per-sample math only (a :class:`LossSpec`); this module does the rest:
namespace lookup, validation, the reduction rule of ``_reduce``, dtype handling and routing to
``interop.torch`` / ``interop.jax`` so that framework autodiff uses the closed-form derivatives.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from . import _accel, _validate
from ._array import backend, coerce_like, compute_dtype, is_floating, upcast
from ._reduce import combine_masks, is_scalar, multiplier, reduce_terms, scale_elementwise

__all__ = ["LossSpec", "Loss", "Option", "Peer", "Checks", "Prepared", "REGISTRY", "declare", "evaluate", "ELEMENTWISE", "CLASS_AXIS", "SET"]

from ._spec import CLASS_AXIS, ELEMENTWISE, HESSIAN_KINDS, KINDS, SET, Checks, LossSpec, Option, Peer, docstring, has_class_axis


@dataclass(slots=True, eq=False)
class Prepared:
    """What a loss's ``prepare`` hands to the kernels: inputs in kernel layout (the class axis
    last), the validity mask it derives (e.g. from ``ignore_index``), its denominator weights
    for ``"mean"`` and the per-sample shape. Read only by convention (slots, not frozen: a
    frozen dataclass's ``__init__`` costs ~1 µs a call, a third of a small loss's prepare)."""

    pred: Any
    target: Any
    sample_shape: tuple
    valid: Any = None
    denom: Any = None
    static: Mapping = field(default_factory=dict)  # extra static options (e.g. target kind)
    axis: int | None = None  # original class axis, to move gradients back


@dataclass(frozen=True)
class Call:
    """The non-array part of one call: hashable, so framework hooks can cache on it."""

    spec: LossSpec
    reduction: str
    static: tuple  # sorted (name, value) pairs of static options
    aux_names: tuple  # names of array options passed as inputs
    # derived once per Call (a Call is made once per signature and reused): the options of a
    # call without array options, whether it reduces a class axis (None: depends on the array
    # options), and whether it is elementwise (may run in blocks)
    _static_options: dict | None = field(init=False, compare=False, repr=False)
    class_axis: bool | None = field(init=False, compare=False, repr=False)
    elementwise: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        # the options when every array option is None (the default, e.g. no class_weight)
        o = dict(self.static)
        o.update((k, None) for k in self.aux_names)
        object.__setattr__(self, "_static_options", o)
        object.__setattr__(self, "class_axis", has_class_axis(self.spec, o) if not self.aux_names else None)
        object.__setattr__(self, "elementwise", self.spec.kind == ELEMENTWISE)

    def options(self, aux) -> dict:
        """The options a kernel reads. Kernels never write to them, so a call whose array
        options are all None shares one dict."""
        for a in aux:
            if a is not None:
                o = dict(self.static)
                o.update(zip(self.aux_names, aux))
                return o
        return self._static_options


def _prepare_elementwise(pred, target, o, xp, validate, loss, mask=None):
    """The elementwise ``prepare`` as a :class:`Prepared` (``_kinds``); ``Loss._run`` calls
    ``elementwise_target`` directly."""
    spec = REGISTRY[loss].spec if loss in REGISTRY else None
    names = (spec.inputs[0], spec.target) if spec is not None else ("pred", "target")
    target = elementwise_target(pred, target, compute_dtype(pred.dtype, xp), xp, *names, loss)
    return Prepared(pred, target, tuple(pred.shape))


def elementwise_target(pred, target, dtype, xp, pred_name, target_name, loss):
    """The one elementwise preparation (a loss without its own ``prepare``): the shapes equal,
    never broadcast; soft targets in ``dtype``, the compute dtype of ``pred``."""
    if pred.shape != target.shape:
        _validate.check_same_shape(pred, target, pred_name, target_name, loss)
    return target if target.dtype == dtype else xp.astype(target, dtype)


def upcast_target(target, pred, xp):
    """Soft/float targets in the compute dtype of ``pred``."""
    dt = compute_dtype(pred.dtype, xp)
    return target if target.dtype == dt else xp.astype(target, dt)


# Eager backends run one kernel at a time over the whole array, so a loss's dozen passes
# stream through main memory and each temporary is a fresh full-size allocation. Evaluating
# large elementwise inputs in blocks that fit in L2 keeps temporaries in cache and small:
# ~2x faster and one array's worth of peak memory less (benchmarks/elementwise.py).
_BLOCK = {"numpy": 1 << 15, "torch": 1 << 17}  # elements; torch splits a block over threads


def _block_size(call: Call, pred, target, aux, xp) -> int:
    if not call.elementwise:
        return 0
    kind = backend(xp)
    block = _BLOCK.get(kind, 0)
    if not block or math.prod(pred.shape) < 4 * block or tuple(target.shape) != tuple(pred.shape):
        return 0  # small inputs (the common case) leave here, before any further check
    if kind == "torch":
        import torch

        # blocks would only add launches on accelerators and break graph capture
        recording = torch.is_grad_enabled() and (pred.requires_grad or target.requires_grad)
        if pred.device.type != "cpu" or recording or torch.compiler.is_compiling():
            return 0
        # torch.func transforms (vmap, grad) cannot write into the blocks' unbatched outputs
        if torch._C._functorch.is_functorch_wrapped_tensor(pred) or torch._C._functorch.is_functorch_wrapped_tensor(target):
            return 0
    if any(a is not None and not is_scalar(a) for a in aux):
        return 0
    return block


def _evaluate_blocks(call: Call, pred, target, c, valid, aux, xp, need: str, block: int):
    """``evaluate`` block by block over the flattened arrays (elementwise losses)."""
    shape = tuple(pred.shape)
    flat = lambda a: None if a is None else xp.reshape(a, (-1,))  # noqa: E731
    p, t, v = flat(pred), flat(target), flat(valid)
    c_flat = c if is_scalar(c) else flat(c)
    per_sample = call.reduction == "none"
    block_call = call if per_sample else replace(call, reduction="sum")
    n = int(p.shape[0])
    dev = pred.device
    value_out = grad_out = hess_out = total = None
    if need in ("value", "value_and_grad") and per_sample:
        value_out = xp.empty((n,), dtype=compute_dtype(pred.dtype, xp), device=dev)
    if need != "value":
        grad_out = xp.empty((n,), dtype=pred.dtype, device=dev)
    if need == "grad_hess":
        hess_out = xp.empty((n,), dtype=pred.dtype, device=dev)
    for start in range(0, n, block):
        s = slice(start, min(start + block, n))
        out = evaluate(block_call, p[s], t[s], c_flat if is_scalar(c_flat) else c_flat[s], None if v is None else v[s], aux, xp, need)
        if need == "value":
            out = (out,)
        elif need == "grad":
            out = (None, out)
        if need in ("value", "value_and_grad"):
            if per_sample:
                value_out[s] = out[0]
            else:
                total = out[0] if total is None else total + out[0]
        if need == "grad_hess":
            grad_out[s], hess_out[s] = out
        elif need != "value":
            grad_out[s] = out[1]
    unflat = lambda a: xp.reshape(a, shape)  # noqa: E731
    if need == "grad":
        return unflat(grad_out)
    if need == "grad_hess":
        return unflat(grad_out), unflat(hess_out)
    value = unflat(value_out) if per_sample else total
    return value if need == "value" else (value, unflat(grad_out))


def evaluate(call: Call, pred, target, c, valid, aux, xp, need: str):
    """The math of one call, on any backend: ``need`` is 'value', 'grad', 'value_and_grad' or
    'grad_hess'. ``pred`` is in kernel layout; gradients come back in ``pred``'s dtype."""
    fused = _accel.run_numpy(call, pred, target, c, valid, aux, need)  # NumPy, any size: a fused kernel where one fits
    if fused is not None:
        return fused
    if call.elementwise:
        block = _block_size(call, pred, target, aux, xp)
        if block:
            fused = _accel.run(call, pred, target, c, valid, aux, xp, need)  # one-pass kernel, where one fits
            if fused is not None:
                return fused
            return _evaluate_blocks(call, pred, target, c, valid, aux, xp, need, block)
    return evaluate_whole(call, pred, target, c, valid, aux, xp, need)


def evaluate_whole(call: Call, pred, target, c, valid, aux, xp, need: str):
    """``evaluate`` on the whole arrays at once, the declaration's math: what ``evaluate`` runs
    for anything but NumPy arrays (their fused kernels) and large elementwise inputs (blocks).
    The torch bridge's small-input path calls it directly (``interop.torch``)."""
    spec = call.spec
    o = call.options(aux)
    p = upcast(pred, xp)
    if need == "value":
        return reduce_terms(spec.value(p, target, o, xp), c, valid, call.reduction, xp)
    class_axis = call.class_axis
    if class_axis is None:
        class_axis = has_class_axis(spec, o)
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
        self._rules = dict(spec.option_rules)
        self._defaults = dict(spec.options)
        self._static_names = tuple(k for k in spec.options if k not in spec.array_options)
        self._n_positional = len(spec.positional)
        # (pred, target) losses with per-sample kernels take the direct path below
        self._plain = spec.kind != SET and len(spec.inputs) == 1 and spec.target is not None and spec.vjp_kernel is None
        self._value_override = spec.value_override  # tried by __call__ after the fast call (see LossSpec)
        # the common call (two arrays, no options, weight, mask or normalizer) per signature:
        # the framework's fast call (``interop.torch.fast_value``) or None where there is none
        self._fast: dict = {}
        self.__signature__ = _signature(spec)

    @property
    def hessian_kind(self) -> str:
        """``"exact"``, ``"piecewise"``, ``"zero"`` (almost everywhere) or ``"none"``."""
        return self.spec.hessian_kind

    def hessian_kind_for(self, **options) -> str:
        """The Hessian kind for these options (``smooth_l1`` with ``beta=0`` is ``mae``:
        ``"zero"``); ``hessian_kind`` where the kind does not depend on the options."""
        if self.spec.hessian_kind_for is None:
            return self.spec.hessian_kind
        if options and not options.keys() <= self._defaults.keys():
            _validate.check_options(options, self._defaults, self.spec.name)
        return self.spec.hessian_kind_for({**self._defaults, **options})

    def baseline(self, target, /, *, weight=None, **options):
        """The optimal constant prediction for ``target`` (with per-sample ``weight``): the value
        c minimising Σ w_i ℓ(c, y_i), e.g. the mean for ``mse``, the weighted median for ``mae``,
        the log-odds for ``binary_cross_entropy``, log class frequencies for softmax losses.
        The usual starting score of a boosted model. ``NotImplementedError`` where the loss has
        no closed form."""
        if self.spec.baseline is None:
            raise NotImplementedError(f"{self.spec.name} has no closed-form optimal constant (baseline).")
        (weight,) = coerce_like(target, weight)
        xp = _validate.input_namespace(self.spec.name, "target", target, weight=weight)
        o = {**self._defaults, **options}
        if options and not options.keys() <= self._defaults.keys():
            _validate.check_options(options, self._defaults, self.spec.name)
        w = weight if weight is None or not is_floating(target, xp) else xp.astype(weight, target.dtype)
        return self.spec.baseline(target, w, o, xp)

    def __repr__(self) -> str:
        return f"<losskit loss {self.spec.name!r} ({self.spec.family})>"

    # -- public API ---------------------------------------------------------------------
    def __call__(self, *arrays, weight=None, mask=None, reduction="mean", normalizer=None, validate=True, **options):
        if len(arrays) == 2 and weight is None and mask is None and normalizer is None and not options:
            # the common call: a fast call built per signature after a first general call
            # succeeded with it (so every metadata check has passed); it re-checks shapes and
            # values and returns NotImplemented wherever the general path must run
            pred, target = arrays
            try:
                key = (type(pred), pred.dtype, pred.ndim, type(target), target.dtype, reduction, validate)
                fast = self._fast.get(key, _NO_FAST_YET)
            except (AttributeError, TypeError):  # not arrays, or an unhashable argument
                fast = None
            if fast is _NO_FAST_YET:
                out = self._call(arrays, None, None, reduction, None, validate, options)
                fast = self._make_fast(pred, target, reduction, validate)
                if fast is not NotImplemented:
                    self._fast[key] = fast
                return out
            if fast is not None:
                out = fast(pred, target)
                if out is not NotImplemented:
                    return out
            return self._call(arrays, None, None, reduction, None, validate, options)
        return self._call(arrays, weight, mask, reduction, normalizer, validate, options)

    def _call(self, arrays, weight, mask, reduction, normalizer, validate, options):
        """``__call__`` on the general path."""
        if self._value_override is not None:
            out = self._value_override(arrays, weight, mask, reduction, normalizer, validate, options)
            if out is not NotImplemented:
                return out
        if self._plain and len(arrays) == self._n_positional == 2:  # _dispatch's common case, one frame less
            return self._run("value", arrays[0], arrays[1], weight, mask, reduction, normalizer, validate, options)
        return self._dispatch("value", arrays, weight, mask, reduction, normalizer, validate, options)

    def _make_fast(self, pred, target, reduction, validate):
        """The fast call for this signature (see ``__call__``), None where there is none, or
        NotImplemented: none yet, ask again next call (e.g. while torch.compile traces)."""
        if not (self._plain and self._n_positional == 2):
            return None
        if type(pred).__module__.partition(".")[0] != "torch" or type(target).__module__.partition(".")[0] != "torch":
            return None  # only torch has one (and a JAX call may mix in NumPy arrays, which _run converts first)
        import torch

        if torch.compiler.is_compiling():  # nothing of the plan traced: Dynamo warns on its lru_caches
            return NotImplemented
        plan = self._plan("value", pred, target, None, None, reduction, None, validate, {})  # cached by the call
        if plan.kind != "torch":
            return None
        from .interop import torch as hook

        return hook.fast_value(self, plan, pred, target, reduction, validate)

    def grad(self, *arrays, weight=None, mask=None, reduction="mean", normalizer=None, validate=True, **options):
        """d value / d input: an array of the input's shape, or for a loss with several
        differentiable inputs a tuple with one gradient per input (for ``reduction='none'``:
        the gradient of the sum, i.e. each sample's own weighted gradient)."""
        return self._dispatch("grad", arrays, weight, mask, reduction, normalizer, validate, options)

    def value_and_grad(self, *arrays, weight=None, mask=None, reduction="mean", normalizer=None, validate=True, **options):
        """``(value, grad)`` in one pass where the math shares work; ``grad`` as in :meth:`grad`."""
        return self._dispatch("value_and_grad", arrays, weight, mask, reduction, normalizer, validate, options)

    def grad_hess(self, *arrays, weight=None, mask=None, reduction="mean", normalizer=None, validate=True, **options):
        """``(grad, hess)``: gradient and Hessian diagonal with respect to the prediction, each of
        its shape (the form gradient-boosting libraries take). ``hessian_kind`` says what the
        Hessian is; a loss declared without one raises ``NotImplementedError``."""
        if self.spec.hessian_kind == "none":
            raise NotImplementedError(
                f"{self.spec.name} has no closed-form Hessian (hessian_kind='none'); use .grad, or a loss with one."
            )
        return self._dispatch("grad_hess", arrays, weight, mask, reduction, normalizer, validate, options)

    def _dispatch(self, need, arrays, weight, mask, reduction, normalizer, validate, options):
        if len(arrays) < self._n_positional and options:
            # trailing inputs may be given by name: gaussian_nll(mean, target, var=v)
            named = self.spec.positional[len(arrays):]
            if all(k in options for k in named):
                options = dict(options)
                arrays = (*arrays, *(options.pop(k) for k in named))
        if len(arrays) != self._n_positional:
            names = ", ".join(self.spec.positional)
            raise TypeError(f"{self.spec.name}() takes {self._n_positional} positional arrays ({names}), got {len(arrays)}.")
        if self._plain:
            return self._run(need, arrays[0], arrays[1], weight, mask, reduction, normalizer, validate, options)
        from ._kinds import run

        return run(self, need, arrays, weight, mask, reduction, normalizer, validate, options)

    # -- machinery ------------------------------------------------------------------------
    def _bind(self, options: dict, pred, xp, validate) -> dict:
        name = self.spec.name
        if options:
            if not options.keys() <= self._defaults.keys():
                _validate.check_options(options, self._defaults, name)
            o = {**self._defaults, **options}
            for k, v in options.items():
                if v is not None or self._defaults[k] is not None:
                    o[k] = check_option(self._rules[k], v, k, name, pred, xp, validate)
        else:
            o = dict(self._defaults)
        if self.spec.check is not None:
            self.spec.check(o, name)
        return o

    def _plan(self, need, pred, target, weight, mask, reduction, normalizer, validate, options):
        """What a call's checks derive from its metadata alone (array types and dtypes, option
        values, reduction): the namespace, the bound options and the static options. Cached per
        signature (``_PLANS``), so a repeated call pays none of these checks again; shapes and
        values are still checked on every call."""
        key = None
        if not options and weight is None and mask is None:
            # the common call (no options, weights or mask): a short key
            try:
                key = (self, need, type(pred), pred.dtype, pred.ndim, type(target), target.dtype, reduction, normalizer is None, validate)
                plan = _PLANS.get(key)
            except (AttributeError, TypeError):  # not an array, or an unhashable dtype
                plan, key = None, None
            if plan is not None:
                return plan
        elif all(type(v) in _SCALAR_TYPES for v in options.values()):
            key = (
                self, need, type(pred), getattr(pred, "dtype", None), getattr(pred, "ndim", None),
                type(target), getattr(target, "dtype", None),
                type(weight), getattr(weight, "dtype", None), type(mask), getattr(mask, "dtype", None),
                reduction, normalizer is None, validate,
                tuple((k, type(v), v) for k, v in options.items()),
            )
            try:
                plan = _PLANS.get(key)
            except TypeError:  # an unhashable dtype or type
                plan, key = None, None
            if plan is not None:
                return plan
        spec = self.spec
        name = spec.name
        xp = _validate.input_namespace(name, spec.pred_name, pred, target=target, weight=weight, mask=mask)
        _validate.check_floating(pred, spec.pred_name, name, xp)
        _validate.check_real(target, "target", name)
        _validate.check_reduction(reduction, normalizer, name)
        o = self._bind(options, pred, xp, validate)
        class_axis = has_class_axis(spec, o)
        axis = _validate.normalize_axis(o.get("axis", -1), pred.ndim, name) if class_axis else None
        plan = _Plan(xp, backend(xp), o, class_axis, axis, spec, pred.dtype)
        if key is not None:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
        return plan

    def _run(self, need, pred, target, weight, mask, reduction, normalizer, validate, options):
        spec = self.spec
        name = spec.name
        if type(pred).__module__.startswith("jax"):
            target, weight, mask = coerce_like(pred, target, weight, mask)
        plan = self._plan(need, pred, target, weight, mask, reduction, normalizer, validate, options)
        xp = plan.xp
        if normalizer is not None:
            normalizer = check_option(_NORMALIZER, normalizer, "normalizer", name, pred, xp, validate)
        if plan.class_axis:
            axis = plan.axis
            shape = tuple(pred.shape)
            sample_shape = shape[:axis] + shape[axis + 1 :]
        else:
            sample_shape = pred.shape
        if weight is not None:
            _validate.check_sample_array(weight, tuple(sample_shape), "weight", name, xp, boolean=False, class_axis=plan.class_axis)
        if mask is not None:
            _validate.check_sample_array(mask, tuple(sample_shape), "mask", name, xp, boolean=True, class_axis=plan.class_axis)
        if spec.prepare is None:
            o = plan.options  # read only: no prepare to replace options
            prep = None
            target = elementwise_target(pred, target, plan.compute_dtype, xp, plan.pred_name, plan.target_name, name)
            kernel_pred, kernel_target, valid, denom = pred, target, mask, None
        else:
            o = dict(plan.options)  # prepare may replace options by converted ones
            prep = spec.prepare(pred, target, o, xp, validate, name, mask)
            kernel_pred, kernel_target, denom = prep.pred, prep.target, prep.denom
            valid = combine_masks(mask, prep.valid, xp)
        if validate and spec.check_values is not None:
            spec.check_values(kernel_pred, kernel_target, o, xp, name, valid)
        c = multiplier(sample_shape, weight, valid, denom, reduction, normalizer, plan.compute_dtype, xp, check=validate and name)
        # one Call object per signature and static options; without prepare (which may
        # derive options from the arrays) the static options are the plan's own
        call = plan.call
        if call is None:
            static = tuple([(k, o[k]) for k in self._static_names] + (list(prep.static.items()) if prep is not None else []))
            call = plan.calls.get(static)
            if call is None:
                call = plan.calls[static] = Call(spec, reduction, static, spec.array_options)
            if prep is None:
                plan.call = call
        aux = tuple([o[k] for k in plan.aux_names]) if plan.aux_names else ()
        if need == "value":
            if plan.hook is not None:
                return plan.hook(call, kernel_pred, kernel_target, c, valid, aux)
            return evaluate(call, kernel_pred, kernel_target, c, valid, aux, xp, need)
        out = evaluate(call, kernel_pred, kernel_target, c, valid, aux, xp, need)
        if prep is None or prep.axis is None:
            return out
        move = lambda g: xp.moveaxis(g, -1, prep.axis)  # noqa: E731
        if need == "grad":
            return move(out)
        if need == "value_and_grad":
            return out[0], move(out[1])
        return move(out[0]), move(out[1])


class _Plan:
    """The metadata-only part of a call (see ``Loss._plan``)."""

    __slots__ = ("xp", "kind", "options", "class_axis", "axis", "calls", "call", "hook", "aux_names", "compute_dtype", "pred_name", "target_name")

    def __init__(self, xp, kind, options, class_axis, axis, spec, dtype):
        self.xp, self.kind, self.options, self.class_axis, self.axis = xp, kind, options, class_axis, axis
        self.calls = {}  # static options (after prepare) -> Call, one object per signature
        self.call = None  # the Call when prepare adds no static options (the common case)
        self.aux_names = spec.array_options
        self.compute_dtype = compute_dtype(dtype, xp)
        self.pred_name, self.target_name = spec.inputs[0], spec.target
        self.hook = None  # the framework's value (custom autograd rule), imported once
        if kind == "torch":
            from .interop import torch as hook

            self.hook = hook.value
        elif kind == "jax":
            from .interop import jax as hook

            self.hook = hook.value


_NO_FAST_YET = object()  # Loss._fast: no fast call built for this signature yet

# Option values that key a plan: hashable, and compared with their type (True == 1 == 1.0 as
# dict keys, but the rules treat them differently).
_SCALAR_TYPES = frozenset({bool, int, float, str, type(None)})
_PLANS: dict = {}
_MAX_PLANS = 1024  # a bound for options that change every call (e.g. a schedule for delta)


_NORMALIZER = Option(None, kind="array", low=0.0)


def check_option(rule: Option, value, arg: str, loss: str, pred, xp, validate):
    """One option through its rule: numbers and 0-d arrays of any backend, or arrays of the
    library of ``pred`` (JAX converts NumPy arrays as usual)."""
    if rule.kind == "number":
        return _validate.check_number(value, arg, loss, low=rule.low, high=rule.high, low_open=rule.low_open)
    if rule.kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{loss}: `{arg}` must be True or False, got {value!r}.")
        return value
    if rule.kind == "choice":
        if not isinstance(value, str) or value not in rule.choices:
            raise ValueError(f"{loss}: `{arg}` must be one of {rule.choices}, got {value!r}.")
        return value
    if rule.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{loss}: `{arg}` must be an int, got {value!r}.")
        return value
    if rule.kind != "array":
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _validate.check_number(value, arg, loss, low=rule.low, high=rule.high, low_open=rule.low_open)
    (value,) = coerce_like(pred, value)
    if not _validate.same_library(value, pred):
        if _validate.is_host_scalar(value):  # a 0-d NumPy array next to torch: read it once
            return _validate.check_number(value, arg, loss, low=rule.low, high=rule.high, low_open=rule.low_open)
        raise TypeError(f"{loss}: `{arg}` must be a number or an array of the library of `{_pred_name(loss)}`, got {_validate.describe(value)}.")
    _validate.check_option_array(value, arg, loss, xp, shape=((),) if arg == "normalizer" else None, low=rule.low, validate=validate)
    return value


def _pred_name(loss: str) -> str:
    return REGISTRY[loss].spec.pred_name if loss in REGISTRY else "pred"


def _signature(spec: LossSpec) -> inspect.Signature:
    P = inspect.Parameter
    params = [P(name, P.POSITIONAL_ONLY) for name in spec.positional]
    params += [
        P("weight", P.KEYWORD_ONLY, default=None),
        P("mask", P.KEYWORD_ONLY, default=None),
        P("reduction", P.KEYWORD_ONLY, default="mean"),
        P("normalizer", P.KEYWORD_ONLY, default=None),
        P("validate", P.KEYWORD_ONLY, default=True),
    ]
    params += [P(k, P.KEYWORD_ONLY, default=v) for k, v in spec.options.items()]
    return inspect.Signature(params)


REGISTRY: dict[str, Loss] = {}


def declare(**fields) -> Loss:
    """Declare a loss from its math and metadata (a :class:`LossSpec`'s fields; ``options`` may
    map names to defaults or to :class:`Option` rules); registers and returns it. Its docstring
    is generated from the declaration."""
    rules = {k: v if isinstance(v, Option) else Option(v) for k, v in dict(fields.pop("options", {})).items()}
    arrays = tuple(fields.pop("array_options", ())) + tuple(k for k, r in rules.items() if r.kind == "array")
    spec = LossSpec(
        options={k: r.default for k, r in rules.items()},
        option_rules=rules,
        array_options=tuple(dict.fromkeys(arrays)),
        **fields,
    )
    if spec.kind not in KINDS:
        raise ValueError(f"unknown loss kind {spec.kind!r}; one of {KINDS}")
    if spec.hessian_kind not in HESSIAN_KINDS:
        raise ValueError(f"unknown hessian_kind {spec.hessian_kind!r}; one of {HESSIAN_KINDS}")
    if spec.name in REGISTRY:
        raise ValueError(f"loss {spec.name!r} is already declared")
    loss = Loss(spec, docstring(spec))
    REGISTRY[spec.name] = loss
    return loss
