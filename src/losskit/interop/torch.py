"""PyTorch bridge: one ``torch.autograd.Function`` for every declared loss.

Forward computes the value without recording a graph. Backward returns the loss's
closed-form gradient for ``pred``, computed with differentiable torch ops from the saved
inputs, so double backward (``create_graph=True``, ``gradgradcheck``) differentiates the
closed form. Small inputs (``GRAD_IN_FORWARD_MAX``) with a scalar reduction compute that
gradient in the forward instead, where per-call overhead dominates; their double backward
still differentiates the closed form from the saved inputs. Gradients for any other input that requires them (soft targets, weights, array
options) come from autograd on the same declaration's value.
"""

from __future__ import annotations

import torch

from .._array import TORCH_SCALARS as _SCALARS, namespace, torch_scalar
from .._loss import evaluate, evaluate_whole, multiplier
from .._reduce import count_multiplier

_xp_cache: list = []


def _xp():
    if not _xp_cache:
        _xp_cache.append(namespace(torch.empty(0)))
    return _xp_cache[0]


class LossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(call, pred, target, c, valid, *aux):
        return evaluate(call, pred, target, c, valid, aux, _xp(), "value")

    @staticmethod
    def setup_context(ctx, inputs, output):
        call, *args = inputs
        ctx.call = call
        _save(ctx, args)

    @staticmethod
    def backward(ctx, grad_out):
        pred, target, c, valid, *aux, _ = _restore(ctx)
        return _grads(ctx.call, ctx.needs_input_grad, pred, target, c, valid, aux, grad_out)


def _save(ctx, args, residual=None):
    """save_for_backward takes tensors only: remember where the Python values (c, floats) go.
    The common case (every argument a tensor or None) keeps no index lists."""
    for a in args:
        if a is not None and not isinstance(a, torch.Tensor):
            break
    else:
        ctx.is_tensor = None
        ctx.save_for_backward(*args, residual)
        return
    ctx.is_tensor = [isinstance(a, torch.Tensor) for a in args]
    ctx.constants = [None if t else a for a, t in zip(args, ctx.is_tensor)]
    ctx.save_for_backward(*[a for a, t in zip(args, ctx.is_tensor) if t], residual)


def _restore(ctx) -> list:
    """The saved arguments in their original order; the residual (or None) last."""
    if ctx.is_tensor is None:
        return list(ctx.saved_tensors)
    saved = iter(ctx.saved_tensors)
    args = [next(saved) if t else k for t, k in zip(ctx.is_tensor, ctx.constants)]
    return args + [next(saved)]


def _grads(call, needs, pred, target, c, valid, aux, grad_out, pred_grad=None):
    """Gradients for (call, pred, target, c, valid, *aux). ``pred_grad(c_up)`` replaces the
    generic closed form for ``pred`` (a lean kernel's backward)."""
    grads = [None] * (5 + len(aux))
    if needs[1]:
        # d(Σ c ℓ)/d pred scaled by the cotangent: the reduction rule with c' = c · grad_out
        upstream = c * grad_out
        if pred_grad is not None:
            grads[1] = pred_grad(upstream)
        else:
            grads[1] = evaluate(call, pred, target, upstream, valid, tuple(aux), _xp(), "grad")
    if not (needs[2] or needs[3] or any(needs[5:])):
        return tuple(grads)
    others = [i for i in range(2, 5 + len(aux)) if needs[i] and i != 4]
    if others:
        grads_other = _autograd_other_inputs(call, pred, target, c, valid, aux, grad_out, others)
        for i, g in zip(others, grads_other):
            grads[i] = g
    return tuple(grads)


# --- optional memory-lean kernels ----------------------------------------------------------
# A loss may register, under its spec name, a kernel object with
#   applies(call, pred, target, c, valid, aux) -> bool
#   forward(call, pred, target, c, valid, aux, xp) -> (value, residual tensor or None)
#   backward(call, pred, target, c_up, valid, aux, residual, xp) -> d value / d pred, c_up = c·grad_out
#   value_and_grad: None, or (call, pred, target, c, valid, aux, xp) -> (value, c·d value / d pred)
#     for the small-input path (``GradInForwardLossFunction``): forward then backward in one go
#   recorded: None, or (call, pred, target, c, valid, aux, check_ids=False) -> value or None:
#     a small recorded call in torch's own differentiable ops whose backward ops are the
#     loss's closed form (no Python autograd node at all), tried before the small-input path
# It replaces the generic closed form (same math, less memory) outside torch.compile and
# torch.func transforms; double backward (create_graph=True) uses the generic closed form.
LEAN_KERNELS: dict = {}


def _lean_kernel(call, pred, target, c, valid, aux, plain=None):
    kernel = LEAN_KERNELS.get(call.spec.name)
    if kernel is None:
        return None
    if plain is None:
        plain = _plain_mode()
    return kernel if plain and kernel.applies(call, pred, target, c, valid, aux) else None


class LeanLossFunction(torch.autograd.Function):
    """``LossFunction`` with a registered lean kernel: saves its residual (e.g. the per-row
    LSE) next to the inputs and uses the kernel's backward."""

    @staticmethod
    def forward(call, kernel, pred, target, c, valid, *aux):
        return kernel.forward(call, pred, target, c, valid, aux, _xp())

    @staticmethod
    def setup_context(ctx, inputs, output):
        call, kernel, *args = inputs
        ctx.call, ctx.kernel = call, kernel
        if output[1] is not None:
            ctx.mark_non_differentiable(output[1])
        _save(ctx, args, output[1])

    @staticmethod
    def backward(ctx, grad_out, _grad_residual):
        pred, target, c, valid, *aux, residual = _restore(ctx)
        needs = ctx.needs_input_grad[1:]
        lean = None
        if not torch.is_grad_enabled():  # create_graph=True keeps the differentiable closed form
            lean = lambda c_up: ctx.kernel.backward(ctx.call, pred, target, c_up, valid, aux, residual, _xp())  # noqa: E731
        return (None,) + _grads(ctx.call, needs, pred, target, c, valid, aux, grad_out, lean)


def _autograd_other_inputs(call, pred, target, c, valid, aux, grad_out, indices):
    """Gradients for inputs other than ``pred`` by autograd through the plain value."""
    create_graph = torch.is_grad_enabled()
    inputs = [None, pred.detach(), target, c, valid, *aux]
    leaves = []
    with torch.enable_grad():
        for i in indices:
            leaf = inputs[i].detach().requires_grad_(True)
            inputs[i] = leaf
            leaves.append(leaf)
        value = evaluate(call, inputs[1], inputs[2], inputs[3], inputs[4], tuple(inputs[5:]), _xp(), "value")
        return torch.autograd.grad(value, leaves, grad_out, create_graph=create_graph, allow_unused=True)


def _plain_mode() -> bool:
    """Neither torch.compile nor a torch.func transform is running."""
    return not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active())


def _apply(function, *args, plain=None):
    """``function.apply(*args)`` without ``Function.apply``'s per-call ``inspect`` argument
    binding (about 10 µs, a third of a small loss's cost). Every argument is passed
    positionally, so the binding is a no-op; under torch.compile or torch.func transforms the
    public ``apply`` runs as usual."""
    if not (_plain_mode() if plain is None else plain):
        return function.apply(*args)
    raw = _RAW_APPLY.get(function)
    if raw is None:
        raw = _RAW_APPLY[function] = super(torch.autograd.Function, function).apply
    return raw(*args)


_RAW_APPLY: dict = {}


def _records(pred, target, c, aux) -> bool:
    """Whether autograd records this call: grad mode on and some input requires grad."""
    if not torch.is_grad_enabled():
        return False
    if pred.requires_grad or target.requires_grad or (isinstance(c, torch.Tensor) and c.requires_grad):
        return True
    return any(isinstance(a, torch.Tensor) and a.requires_grad for a in aux)




# --- small inputs: the gradient in the forward ------------------------------------------
# At a (32, 10) batch a loss is bound by per-call overhead, and the generic backward (restore,
# scale the cotangent, run the closed form again) costs more than the forward. Below this
# many elements of ``pred``, a recorded call with a scalar reduction computes value and
# gradient in one pass in the forward (the ``value_and_grad`` of the declaration, with the
# reduction multiplier applied), and the backward is one multiply by the incoming scalar.
# Above it, the generic bridge keeps no pred-sized buffer between forward and backward.
GRAD_IN_FORWARD_MAX = 1 << 16


class GradInForwardLossFunction(torch.autograd.Function):
    """``LossFunction`` for small inputs in plain mode (see ``GRAD_IN_FORWARD_MAX``): the
    forward saves c·∂ℓ/∂pred (from the declaration's ``value_and_grad``, or a registered lean
    kernel's forward and backward); backward returns it times the cotangent. A double backward
    (``create_graph=True``) and the gradients of other inputs use ``LossFunction``'s
    differentiable closed forms from the saved inputs. Old-style (``forward(ctx, ...)``), so
    the gradient is saved without being an output; only run outside torch.func transforms and
    torch.compile, which take ``LossFunction``."""

    @staticmethod
    def forward(ctx, call, pred, target, c, valid, *aux):
        kernel = LEAN_KERNELS.get(call.spec.name)  # _lean_kernel in plain mode, inlined
        if kernel is not None and not kernel.applies(call, pred, target, c, valid, aux):
            kernel = None
        scale = None
        accel = None if kernel is not None or call.spec.name not in _SMALL_ACCEL else _small_accel(call, pred, target, c, valid, aux)
        if accel is not None:  # one jitted pass on the tensors' memory: value and c·gradient
            value, grad = accel
        elif kernel is None:
            # ``evaluate`` without its NumPy-kernel and block routes, which never take a
            # tensor of at most GRAD_IN_FORWARD_MAX (< 4 blocks) elements
            if valid is None and type(c) is not float and c.ndim == 0:
                # a scalar multiplier (plain "mean"/"sum"): the sum times c, and the gradient
                # unscaled; backward scales it by c·grad_out (as the generic bridge does), so
                # the forward, whose ops count twice in a training step, has one op less.
                # ``evaluate_whole`` with c = 1 and nothing masked, written out (its reduction
                # rule is then Σℓ and ∂ℓ as they are; float32/64 need no up- or down-cast)
                spec = call.spec
                o = call.options(aux)
                if spec.value_and_grad is not None:
                    per_sample, grad = spec.value_and_grad(pred, target, o, _xp())
                else:
                    per_sample, grad = spec.value(pred, target, o, _xp()), spec.grad(pred, target, o, _xp())
                value = per_sample.sum() * c
                if grad.dtype != pred.dtype:  # ``evaluate_whole``'s dtype rule, for a kernel that widened
                    value, grad = evaluate_whole(call, pred, target, 1.0, None, aux, _xp(), "value_and_grad")
                    value = value * c
                scale = c
            else:
                value, grad = evaluate_whole(call, pred, target, c, valid, aux, _xp(), "value_and_grad")
        elif kernel.value_and_grad is not None:  # one pass for value and c·gradient
            value, grad = kernel.value_and_grad(call, pred, target, c, valid, aux, _xp())
        else:  # a registered lean kernel: its forward, then its backward with c_up = c
            value, residual = kernel.forward(call, pred, target, c, valid, aux, _xp())
            grad = kernel.backward(call, pred, target, c, valid, aux, residual, _xp())
        ctx.call = call
        # an intermediate, not an input or output: kept as an attribute, so the common
        # backward unpacks no saved tensor; the inputs are saved for the closed form
        ctx.grad, ctx.scale = grad, scale  # the gradient is c·∂ℓ/∂pred, or ∂ℓ/∂pred and c
        if aux or type(c) is float:
            _save(ctx, (pred, target, c, valid, *aux))
        else:  # what ``_save`` does when every argument is a tensor or None, inlined
            ctx.is_tensor = None
            ctx.save_for_backward(pred, target, c, valid, None)
        return value

    @staticmethod
    def backward(ctx, grad_out):
        needs = ctx.needs_input_grad
        scale = ctx.scale
        if not torch.is_grad_enabled() and not (needs[2] or needs[3] or any(needs[5:])):
            if not needs[1]:
                return (None,) * len(needs)
            g = ctx.grad * grad_out if scale is None else ctx.grad * (scale * grad_out)
            return (None, g) + (None,) * (len(needs) - 2)
        pred, target, c, valid, *aux, _ = _restore(ctx)
        if torch.is_grad_enabled():  # create_graph=True: differentiate the closed form
            return _grads(ctx.call, needs, pred, target, c, valid, aux, grad_out)
        grad = ctx.grad
        if scale is None:
            return _grads(ctx.call, needs, pred, target, c, valid, aux, grad_out, lambda _c_up: grad * grad_out)
        return _grads(ctx.call, needs, pred, target, c, valid, aux, grad_out, lambda c_up: grad * c_up)


def _accel_opt_ins() -> frozenset:
    """The losses whose Numba kernel (``_accel``) opts in to small torch calls
    (``small_torch``); Numba itself is imported on the first such call, not here."""
    from .. import _accel

    entries = {**_accel.KERNELS, **_accel.ROW_KERNELS}
    return frozenset(name for name, entry in entries.items() if entry.small_torch)


_SMALL_ACCEL = _accel_opt_ins()


def _small_accel(call, pred, target, c, valid, aux):
    """(value, c·∂ℓ/∂pred) of a small grad-in-forward call from the loss's Numba kernel, run by
    ``_accel.run_numpy`` on NumPy views of the tensors' memory (``_accel._host_arrays``'s
    rule), or None (the torch ops run): a device other than the CPU, tensor subclasses, array
    options, a multiplier being differentiated, anything ``run_numpy`` declines (layouts,
    dtypes, option values, rows its kernel leaves to the reference), and inside
    ``_accel.disabled()``. The NumPy conversions cost ~5 µs, so only losses whose kernel opts
    in (``small_torch``) come here."""
    from .. import _accel

    if not _accel.enabled() or not _accel.available():  # Numba absent: the conversions would be wasted
        return None
    for a in aux:
        if a is not None:
            return None
    scalar = type(c) is float or not c.ndim
    if not scalar and c.requires_grad:
        return None
    arrays = (pred, target) if scalar else (pred, target, c)
    host = _accel._host_arrays("torch", arrays if valid is None else arrays + (valid,))
    if host is None:
        return None
    multiplier = (c if type(c) is float else c.item()) if scalar else host[2]
    out = _accel.run_numpy(call, host[0], host[1], multiplier, None if valid is None else host[-1], (), "value_and_grad")
    if out is None:
        return None
    value, grad = out
    return torch.scalar_tensor(float(value), dtype=pred.dtype), torch.from_numpy(grad)


def _grad_in_forward(call, pred, plain) -> bool:
    """Whether a recorded call takes ``GradInForwardLossFunction`` (``value`` inlines this test).
    Half precision keeps the generic path: its gradient is scaled in float32 before rounding."""
    return plain and call.reduction != "none" and pred.dtype in _FULL_PRECISION and pred.numel() <= GRAD_IN_FORWARD_MAX


_FULL_PRECISION = (torch.float32, torch.float64)
# plain mode only: ``Function.apply`` without its per-call argument binding (see ``_apply``)
_RAW_GRAD_IN_FORWARD = super(torch.autograd.Function, GradInForwardLossFunction).apply


def value(call, pred, target, c, valid, aux):
    """Loss value on torch tensors, with a closed-form backward when a graph is recorded."""
    plain = not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active())
    if plain:
        # the common small training call, tested first (see ``_grad_in_forward``)
        small = (
            call.reduction != "none"
            and pred.dtype in _FULL_PRECISION
            and pred.numel() <= GRAD_IN_FORWARD_MAX
            and _records(pred, target, c, aux)
        )
        if small:
            kernel = LEAN_KERNELS.get(call.spec.name)
            if kernel is not None and kernel.recorded is not None:
                out = kernel.recorded(call, pred, target, c, valid, aux)
                if out is not None:
                    return out
        if type(c) is float:
            cached = _SCALARS.get((c, pred.dtype, pred.device))  # torch_scalar, inlined
            c = torch_scalar(c, pred) if cached is None else cached
        if small:
            return _RAW_GRAD_IN_FORWARD(call, pred, target, c, valid, *aux)
    kernel = _lean_kernel(call, pred, target, c, valid, aux, plain)
    if _records(pred, target, c, aux):
        if kernel is not None:
            return _apply(LeanLossFunction, call, kernel, pred, target, c, valid, *aux, plain=plain)[0]
        return _apply(LossFunction, call, pred, target, c, valid, *aux, plain=plain)
    if kernel is not None:
        return kernel.forward(call, pred, target, c, valid, aux, _xp())[0]
    return evaluate(call, pred, target, c, valid, aux, _xp(), "value")


# --- the common call, per signature ---------------------------------------------------------
_grad_enabled = torch.is_grad_enabled
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active


def fast_value(loss, plan, pred, target, reduction, validate):
    """``loss(pred, target, reduction=..., validate=...)`` (no options, weight, mask or
    normalizer) for one signature (``Loss.__call__`` keys it by the arrays' types, dtypes and
    ndim): a function ``fast(pred, target)`` that runs the recorded small-input call of
    ``Loss._run`` + ``value`` without their general steps (plan lookup, option and weight
    handling, the bridge's mode tests one by one), or returns NotImplemented for the general
    path: autograd not recording ``pred`` (or recording ``target``), torch.compile, torch.func
    transforms, more than GRAD_IN_FORWARD_MAX elements, and for a loss without ``prepare``,
    shapes that differ (the general path raises the error). None (no fast call) for other
    signatures: tensor subclasses, reduction "none", half precision, a target dtype other than
    the compute dtype (without ``prepare``). NotImplemented while torch.compile traces (built
    on a later eager call). Every check a call makes (shapes, ``prepare``'s, values with
    ``validate``) is made here too, in the same order, with the same messages."""
    if _is_compiling() or _functorch_active():
        return NotImplemented
    if type(pred) is not torch.Tensor or type(target) is not torch.Tensor:
        return None
    if reduction == "none" or pred.dtype not in _FULL_PRECISION:
        return None
    spec = loss.spec
    name = spec.name
    xp, options = plan.xp, plan.options
    check_values = spec.check_values if validate else None
    dtype = plan.compute_dtype
    prepare = spec.prepare
    if prepare is None:
        call = plan.call
        if call is None or target.dtype != dtype:
            return None if call is not None else NotImplemented
        aux = tuple([options[k] for k in plan.aux_names])

        def fast(pred, target):
            if not _grad_enabled() or not pred.requires_grad or target.requires_grad or _is_compiling() or _functorch_active():
                return NotImplemented
            n = pred.numel()
            if n > GRAD_IN_FORWARD_MAX or pred.shape != target.shape:
                return NotImplemented
            if check_values is not None:
                check_values(pred, target, options, xp, name, None)
            c = count_multiplier(n, reduction)
            scalar = _SCALARS.get((c, pred.dtype, pred.device))  # torch_scalar, inlined
            if scalar is None:
                scalar = torch_scalar(c, pred)
            return _RAW_GRAD_IN_FORWARD(call, pred, target, scalar, None, *aux)

        return fast

    static_names, aux_names, calls = loss._static_names, plan.aux_names, plan.calls
    class_axis = plan.axis if plan.class_axis else None
    kernel = LEAN_KERNELS.get(name)
    recorded = None if kernel is None else kernel.recorded
    # a kernel whose recorded call rejects every target that prepare's validation rejects
    # (cross_entropy's class ids: nll_loss range-checks them) takes that check over
    defer = bool(validate) and recorded is not None and kernel.validates_targets(target)

    def fast_prepared(pred, target):
        if not _grad_enabled() or not pred.requires_grad or target.requires_grad or _is_compiling() or _functorch_active():
            return NotImplemented
        if pred.numel() > GRAD_IN_FORWARD_MAX:
            return NotImplemented
        deferred = defer and target.is_cpu
        o = dict(options)  # prepare may replace options by converted ones
        prep = prepare(pred, target, o, xp, validate and not deferred, name, None)
        kernel_pred, kernel_target, valid, denom = prep.pred, prep.target, prep.valid, prep.denom
        if check_values is not None:
            check_values(kernel_pred, kernel_target, o, xp, name, valid)
        # the samples as ``Loss._run`` counts them (the plan's class axis)
        classes = pred.shape[class_axis] if class_axis is not None else 1
        if valid is None and denom is None and classes:
            n = pred.numel() // classes  # the product of the per-sample shape
            c = count_multiplier(n, reduction)
        else:
            if class_axis is not None:
                shape = tuple(pred.shape)
                sample_shape = shape[:class_axis] + shape[class_axis + 1 :]
            else:
                sample_shape = pred.shape
            c = multiplier(sample_shape, None, valid, denom, reduction, None, dtype, xp, check=validate and name)
        call = calls.get(tuple([(k, o[k]) for k in static_names] + list(prep.static.items())))
        if call is None:  # static options this signature has not met: the general path makes the Call
            return NotImplemented
        aux = tuple([o[k] for k in aux_names])
        records = kernel_pred.dtype in _FULL_PRECISION and kernel_pred.numel() <= GRAD_IN_FORWARD_MAX and _records(kernel_pred, kernel_target, c, aux)
        if records and recorded is not None:
            try:
                out = recorded(call, kernel_pred, kernel_target, c, valid, aux, deferred)
            except TargetsRejected:
                out = None
                prepare(pred, target, dict(options), xp, True, name, None)  # raises the documented error
            if out is not None:
                return out
        if deferred:  # the check the recorded call did not make
            prepare(pred, target, dict(options), xp, True, name, None)
        if type(c) is float:
            scalar = _SCALARS.get((c, kernel_pred.dtype, kernel_pred.device))  # torch_scalar, inlined
            c = torch_scalar(c, kernel_pred) if scalar is None else scalar
        if records:
            return _RAW_GRAD_IN_FORWARD(call, kernel_pred, kernel_target, c, valid, *aux)
        return value(call, kernel_pred, kernel_target, c, valid, aux)

    return fast_prepared


def _register_lean_kernels():
    global TargetsRejected
    from .torch_lean import CrossEntropyKernel, TargetsRejected

    LEAN_KERNELS[CrossEntropyKernel.name] = CrossEntropyKernel


_register_lean_kernels()


# --- several differentiable inputs and set-level losses (see ``_kinds``) ------------------


class MultiLossFunction(torch.autograd.Function):
    """A loss of several differentiable inputs: backward returns the closed-form gradient of
    every input (differentiable torch ops, so double backward works)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(call, n_inputs, c, valid, target, *arrays):
        from .._kinds import evaluate_multi

        return evaluate_multi(call, arrays[:n_inputs], target, c, valid, arrays[n_inputs:], _xp(), "value")

    @staticmethod
    def setup_context(ctx, inputs, output):
        call, n_inputs, *args = inputs
        ctx.call, ctx.n_inputs = call, n_inputs
        _save(ctx, args)

    @staticmethod
    def backward(ctx, grad_out):
        from .._kinds import evaluate_multi

        c, valid, target, *arrays, _ = _restore(ctx)
        n = ctx.n_inputs
        inputs, aux = tuple(arrays[:n]), tuple(arrays[n:])
        needs = ctx.needs_input_grad
        grads = [None] * len(needs)
        if any(needs[5 : 5 + n]):
            gs = evaluate_multi(ctx.call, inputs, target, c * grad_out, valid, aux, _xp(), "grad")
            for i, g in enumerate(gs):
                grads[5 + i] = g if needs[5 + i] else None
        # c (slot 2), target (4) and array options (5 + n + k): autograd through the value
        slots = [2, 4] + [5 + n + k for k in range(len(aux))]
        wanted = [i for i in slots if needs[i]]
        if wanted:
            def plain(c_, target_, *aux_):
                return evaluate_multi(ctx.call, tuple(a.detach() for a in inputs), target_, c_, valid, aux_, _xp(), "value")

            got = _autograd_of(plain, [c, target, *aux], [slots.index(i) for i in wanted], grad_out)
            for i, g in zip(wanted, got):
                grads[i] = g
        return tuple(grads)


def _autograd_of(plain, args, positions, grad_out):
    """Gradients of ``plain(*args)`` (scaled by ``grad_out``) for the args at ``positions``, by
    autograd; keeps the graph when a double backward is being recorded."""
    create_graph = torch.is_grad_enabled()
    args = list(args)
    with torch.enable_grad():
        for j in positions:
            args[j] = args[j].detach().requires_grad_(True)
        value = plain(*args)
        return torch.autograd.grad(value, [args[j] for j in positions], grad_out, create_graph=create_graph, allow_unused=True)


def value_multi(call, inputs, target, c, valid, aux):
    from .._kinds import evaluate_multi

    tensors = [*inputs, target, c, *aux]
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
        return _apply(MultiLossFunction, call, len(inputs), c, valid, target, *inputs, *aux)
    return evaluate_multi(call, inputs, target, c, valid, aux, _xp(), "value")


class SetLossFunction(torch.autograd.Function):
    """A set-level loss: backward is the kernel's closed-form vector-Jacobian product.

    Outputs ``(value, pull)``. Outside torch.compile and torch.func transforms, ``pull`` (a
    Python object, not a tensor) is the kernel's pull-back, holding the forward's per-class
    sums and probabilities, so backward does not run the kernel again; elsewhere it is None
    and backward re-runs the kernel. Double backward (create_graph=True) always re-runs it
    with differentiable ops from the saved inputs."""

    generate_vmap_rule = True

    @staticmethod
    def forward(call, pred, target, w, valid, normalizer, *aux):
        from .._kinds import evaluate_set

        if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            return evaluate_set(call, pred, target, w, valid, normalizer, aux, _xp(), "value"), None
        return evaluate_set(call, pred, target, w, valid, normalizer, aux, _xp(), "value_and_vjp")

    @staticmethod
    def setup_context(ctx, inputs, output):
        call, *args = inputs
        ctx.call, ctx.pull = call, output[1]
        _save(ctx, args)

    @staticmethod
    def backward(ctx, grad_out, _grad_pull=None):
        from .._kinds import evaluate_set, set_factor

        pred, target, w, valid, normalizer, *aux, _ = _restore(ctx)
        aux = tuple(aux)
        needs = ctx.needs_input_grad
        grads = [None] * len(needs)
        if needs[1]:
            call = ctx.call
            if ctx.pull is not None and not torch.is_grad_enabled():
                grads[1] = ctx.pull(grad_out)
            else:
                if call.reduction == "none":
                    upstream = grad_out
                else:
                    upstream = lambda values: grad_out * set_factor(call, normalizer, values.numel())  # noqa: E731
                grads[1] = evaluate_set(call, pred, target, w, valid, normalizer, aux, _xp(), "grad", upstream=upstream)
        # target (slot 2), weight (3) and array options (6 + k): autograd through the value
        slots = [2, 3] + [6 + k for k in range(len(aux))]
        wanted = [i for i in slots if needs[i]]
        if wanted:
            def plain(target_, w_, *aux_):
                return evaluate_set(ctx.call, pred.detach(), target_, w_, valid, normalizer, aux_, _xp(), "value")

            got = _autograd_of(plain, [target, w, *aux], [slots.index(i) for i in wanted], grad_out)
            for i, g in zip(wanted, got):
                grads[i] = g
        return tuple(grads)


def value_set(call, pred, target, w, valid, normalizer, aux):
    from .._kinds import evaluate_set

    tensors = [pred, target, w, *aux]
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
        return _apply(SetLossFunction, call, pred, target, w, valid, normalizer, *aux)[0]
    return evaluate_set(call, pred, target, w, valid, normalizer, aux, _xp(), "value")


# --- sequence losses (CTC, see ``_kinds``) ------------------------------------------------


class SequenceLossFunction(torch.autograd.Function):
    """A sequence loss: forward runs the recursion once for the value and every sequence's
    closed-form gradient, kept for backward (as torch's own ctc_loss keeps its α); double
    backward (``create_graph=True``) differentiates the closed form instead."""

    generate_vmap_rule = True

    @staticmethod
    def forward(call, c, valid, target, pred, *aux):
        from .._kinds import evaluate_sequence

        value, values, grads = evaluate_sequence(call, pred, target, c, valid, aux, _xp())
        return value, (values.clone() if values is value else values), grads  # "none": one tensor cannot be both

    @staticmethod
    def setup_context(ctx, inputs, output):
        call, *args = inputs
        ctx.call = call
        ctx.mark_non_differentiable(output[1], output[2])
        _save(ctx, args + [output[1]], output[2])

    @staticmethod
    def backward(ctx, grad_out, _values, _grads):
        from .._kinds import evaluate_multi, sequence_grad

        c, valid, target, pred, *aux, values, grads = _restore(ctx)
        aux = tuple(aux)
        needs = ctx.needs_input_grad
        out = [None] * len(needs)
        if torch.is_grad_enabled():  # double backward: the differentiable closed form
            if needs[4]:
                (out[4],) = evaluate_multi(ctx.call, (pred,), target, c * grad_out, valid, aux, _xp(), "grad")
            if needs[1]:
                def plain(c_):
                    return evaluate_multi(ctx.call, (pred.detach(),), target, c_, valid, aux, _xp(), "value")

                (out[1],) = _autograd_of(plain, [c], [0], grad_out)
            return tuple(out)
        if needs[4]:
            out[4] = sequence_grad(grads, c * grad_out, valid, pred, _xp())
        if needs[1]:  # d/dc of Σ c_n ℓ_n (or of c_n ℓ_n per sequence)
            d_c = values * grad_out
            if valid is not None:
                d_c = torch.where(valid, d_c, torch.zeros_like(d_c))
            out[1] = d_c if c.ndim else d_c.sum()
        return tuple(out)


def value_sequence(call, pred, target, c, valid, aux):
    from .._kinds import evaluate_multi

    if torch.is_grad_enabled() and (pred.requires_grad or (isinstance(c, torch.Tensor) and c.requires_grad)):
        return _apply(SequenceLossFunction, call, c, valid, target, pred, *aux)[0]
    return evaluate_multi(call, (pred,), target, c, valid, aux, _xp(), "value")
