"""Array namespace, dtype rules and numerically stable special functions.

Everything backend-specific that a loss's math needs lives here, behind functions that take
``*, xp``. Loss modules call these and ``xp.*`` only. Where a backend ships a fused, stable
kernel (``torch.nn.functional.softplus``, ``jax.nn.logsumexp``) it is used; otherwise the
function is written once with array-API calls.
"""

from __future__ import annotations

import functools

import array_api_compat
import numpy as _np

__all__ = [
    "namespace",
    "coerce_like",
    "sigmoid_and_slope",
    "can_write_inplace",
    "backend",
    "is_floating",
    "is_integral",
    "compute_dtype",
    "upcast",
    "softplus",
    "softplus_nonpositive",
    "clip",
    "positive_part",
    "zero_where",
    "add_scaled",
    "sub_product",
    "log_sigmoid",
    "sigmoid",
    "logsumexp",
    "logsumexp_split",
    "softmax",
    "xlogx",
    "finite_bound",
    "nan_where",
    "sign",
]


def namespace(*arrays):
    """The array-API namespace shared by ``arrays`` (``None`` entries are skipped)."""
    present = [a for a in arrays if a is not None]
    try:
        return array_api_compat.array_namespace(*present)
    except TypeError as exc:
        kinds = ", ".join(sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in present}))
        raise TypeError(
            f"losskit needs arrays of one library (NumPy, PyTorch, JAX, ...); got {kinds}. "
            "Convert them to the type of `pred` first."
        ) from exc


def coerce_like(pred, *others):
    """``others`` converted to the library of ``pred`` where that library itself converts them
    implicitly: JAX takes NumPy arrays and Python scalars (as every JAX function does). Torch,
    like torch itself, never mixes with NumPy, and NumPy stays NumPy."""
    if not type(pred).__module__.startswith("jax"):
        return others
    import jax.numpy as jnp
    import numpy as np

    return tuple(jnp.asarray(a) if isinstance(a, (np.ndarray, np.generic, int, float)) and not isinstance(a, bool) else a for a in others)


@functools.lru_cache(maxsize=None)
def _backend_of(xp) -> str:
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    if array_api_compat.is_jax_namespace(xp):
        return "jax"
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    return getattr(xp, "__name__", "other")


def backend(xp) -> str:
    """'numpy', 'torch', 'jax' or the namespace's module name (e.g. 'array_api_strict')."""
    return _backend_of(xp)


def is_floating(x, xp) -> bool:
    try:
        return _is_floating_dtype(x.dtype, xp)
    except TypeError:  # an unhashable dtype
        return _floating_dtype(x.dtype, xp)


@functools.lru_cache(maxsize=None)
def _is_floating_dtype(dtype, xp) -> bool:
    return _floating_dtype(dtype, xp)


def _floating_dtype(dtype, xp) -> bool:
    try:
        return bool(xp.isdtype(dtype, "real floating"))
    except (TypeError, ValueError, AttributeError):
        # bfloat16 and other extension dtypes that isdtype does not know
        try:
            xp.finfo(dtype)
            return True
        except (TypeError, ValueError):
            return False


def is_integral(x, xp) -> bool:
    """Whether ``x`` holds integers (bool is not one), as ``xp.isdtype(x.dtype, "integral")``,
    cached per dtype (isdtype costs ~1 µs a call on torch)."""
    try:
        return _is_integral_dtype(x.dtype, xp)
    except TypeError:  # an unhashable dtype
        return bool(xp.isdtype(x.dtype, "integral"))


@functools.lru_cache(maxsize=None)
def _is_integral_dtype(dtype, xp) -> bool:
    return bool(xp.isdtype(dtype, "integral"))


@functools.lru_cache(maxsize=None)
def _compute_dtype(dtype, xp):
    return xp.float32 if xp.finfo(dtype).bits < 32 else dtype


def compute_dtype(dtype, xp):
    """Dtype the math runs in: float32 for float16/bfloat16, the input dtype otherwise."""
    return _compute_dtype(dtype, xp)


def upcast(x, xp):
    """``x`` in its compute dtype (no copy when it already is)."""
    dt = _compute_dtype(x.dtype, xp)
    return x if dt == x.dtype else xp.astype(x, dt)


@functools.lru_cache(maxsize=None)
def finite_bound(dtype, xp) -> float:
    """Half the largest finite value of ``dtype``: logits are clipped here so that products
    such as ``y * z`` stay finite when ``z`` is ±inf (a sure prediction)."""
    return float(xp.finfo(dtype).max) / 2


# --- softplus, sigmoid, logsumexp -------------------------------------------------------


def softplus(x, *, xp):
    """log(1 + exp(x)), stable for every finite and infinite x."""
    name = _backend_of(xp)
    if name == "torch":
        import torch.nn.functional as F

        # Above the threshold softplus(x) == x to within one ulp of the dtype.
        return F.softplus(x, threshold=20.0 if x.dtype != _torch_float64() else 40.0)
    if name == "jax":
        import jax

        return jax.nn.softplus(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def softplus_nonpositive(x, *, xp):
    """log(1 + exp(x)) for x <= 0 (e.g. x = −|z|): no overflow to guard, so NumPy needs only
    exp and log1p; torch and JAX use their fused softplus."""
    name = _backend_of(xp)
    if name == "torch":
        import torch.nn.functional as F

        return F.softplus(x)  # x <= 0 stays below any threshold: no dtype-dependent one needed
    if name == "jax":
        return softplus(x, xp=xp)
    return xp.log1p(xp.exp(x))


def clip(x, low, high, *, xp):
    """``xp.clip(x, low, high)`` (``None`` for no bound; NaN stays NaN). On torch it is
    ``torch.clamp`` itself, on NumPy arrays ``maximum`` then ``minimum``: array-api-compat's
    wrapper adds ~1 µs a call on torch and ~8 µs on NumPy, which a small loss feels."""
    name = _backend_of(xp)
    if name == "torch":
        import torch

        return torch.clamp(x, low, high)
    if name == "numpy" and x.ndim:  # 0-d: NumPy's ufuncs would return a scalar, not an array
        import numpy as np

        out = x if low is None else np.maximum(x, low)
        if high is not None:
            out = np.minimum(out, high, out=None if out is x else out)
        return out
    return xp.clip(x, low, high)


def zero_where(cond, x, *, xp):
    """0 where ``cond``, ``x`` elsewhere (e.g. 0·∞ = 0 terms), in ``x``'s dtype: ``torch.where``
    itself on torch, whose array-API wrapper costs ~3 µs more with a scalar operand."""
    if _backend_of(xp) == "torch":
        import torch

        return torch.where(cond, 0.0, x)
    return xp.where(cond, 0.0, x)


def positive_part(x, *, xp):
    """max(x, 0), exact; NaN stays NaN. ``torch.relu`` on torch (one op, no scalar operand)."""
    if _backend_of(xp) == "torch":
        import torch

        return torch.relu(x)
    return clip(x, 0.0, None, xp=xp)


def add_scaled(x, y, alpha: float, *, xp):
    """x + alpha·y; on torch one ``torch.add(x, y, alpha=...)`` (a Python-scalar product is a
    separate op with a wrapped scalar, ~3 µs on a small batch). Rounds as x + fl(alpha·y), so
    alpha a power of two gives the same numbers on every backend."""
    if _backend_of(xp) == "torch":
        import torch

        return torch.add(x, y, alpha=alpha)
    return x + alpha * y


def sub_product(x, a, b, *, xp):
    """x − a·b, rounded as x − fl(a·b) (or better, where the backend fuses it): on torch one
    ``torch.addcmul(x, a, b, value=-1)`` instead of a multiply and a subtract."""
    if _backend_of(xp) == "torch":
        import torch

        return torch.addcmul(x, a, b, value=-1)
    return x - a * b


def log_sigmoid(x, *, xp):
    """log σ(x) = −softplus(−x), to a few ulps relative for every x (−x for x → −∞, −e^{−x}
    for x → +∞): one fused op on torch and JAX."""
    name = _backend_of(xp)
    if name == "torch":
        import torch.nn.functional as F

        return F.logsigmoid(x)
    if name == "jax":
        import jax

        return jax.nn.log_sigmoid(x)
    return -softplus(-x, xp=xp)


def sigmoid(x, *, xp):
    """1 / (1 + exp(-x)), without overflow for large |x|."""
    name = _backend_of(xp)
    if name == "torch":
        import torch

        return torch.sigmoid(x)
    if name == "jax":
        import jax

        return jax.nn.sigmoid(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0, e) / (1.0 + e)


def sigmoid_and_slope(x, *, xp):
    """(sigmoid(x), sigmoid'(x)) with the slope σ(x)σ(−x) accurate to a few ulps relative, also
    where σ(x)(1 − σ(x)) would cancel to 0 (|x| > 37 in float64)."""
    name = _backend_of(xp)
    if name in ("torch", "jax"):
        s = sigmoid(x, xp=xp)
        return s, s * sigmoid(-x, xp=xp)
    e = xp.exp(-xp.abs(x))
    d = 1.0 + e
    return xp.where(x >= 0, 1.0, e) / d, e / (d * d)


def logsumexp_split(x, *, xp, keepdims=False):
    """LSE along the last axis as ``(m, r)`` with LSE = m + r: m = max(x) and
    r = log1p(Σ_{k ≠ argmax} exp(x_k − m)) ≥ 0. Keeping the two apart lets a loss write
    LSE − x_y = (m − x_y) + r, two non-negative terms, so the tiny loss of a confident right
    prediction keeps its relative precision (m + log(1 + t) − x_y rounds t away)."""
    if _backend_of(xp) == "torch":
        return _logsumexp_split_torch(x, keepdims)
    m = xp.max(x, axis=-1, keepdims=True)
    shift = xp.where(xp.isfinite(m), m, 0.0)
    below = x < m
    t = xp.sum(xp.where(below, xp.exp(x - shift), 0.0), axis=-1, keepdims=True)
    # the other maxima count 1 each; "not below" rather than "equal" keeps this >= 0 when the
    # max is NaN (the NaN then propagates through m)
    ties = xp.sum(xp.astype(~below, x.dtype), axis=-1, keepdims=True) - 1.0
    r = xp.log1p(t + ties)
    # keepdims: (m, r) broadcast against x without an indexing op each (torch: ~1.5 µs apiece)
    return (m, r) if keepdims else (m[..., 0], r[..., 0])


def _logsumexp_split_torch(x, keepdims):
    """``logsumexp_split`` in torch's own calls, the same ops and roundings: the array-API
    wrappers of ``where`` and ``sum`` and scalar operands cost ~2 µs each on a small batch."""
    import torch

    m = torch.amax(x, -1, keepdim=True)
    shift = torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)  # where(isfinite(m), m, 0)
    below = x < m
    t = torch.where(below, torch.exp(x - shift), 0.0).sum(-1, keepdim=True)
    ties = (~below).sum(-1, keepdim=True, dtype=x.dtype) - 1.0
    r = torch.log1p(t + ties)
    return (m, r) if keepdims else (m[..., 0], r[..., 0])


def xlogx(x, *, xp):
    """x·log(x) with 0·log 0 = 0 (NaN propagates, negative x gives NaN): one fused op on torch
    and JAX (xlogy), a select around log elsewhere."""
    name = _backend_of(xp)
    if name == "torch":
        import torch

        return torch.special.xlogy(x, x)
    if name == "jax":
        import jax

        return jax.scipy.special.xlogy(x, x)
    pos = x > 0
    out = xp.where(pos, x, xp.zeros_like(x)) * xp.log(xp.where(pos, x, xp.ones_like(x)))
    # as xlogy: NaN for a negative x (not x·log 1 = −0) and for NaN, without a warning at −inf
    return xp.where(pos | (x == 0), out, xp.full_like(x, xp.nan))


def softmax(x, *, xp):
    """softmax along the last axis, each entry to a few ulps relative; -inf entries give 0.
    The backend's fused kernel where it has one (one pass over x on torch and JAX). The
    (max, rest) split of ``logsumexp_split`` buys nothing here: p_k = exp(z_k − LSE) is
    already accurate relative to itself, and the cancellation in p − q is the same for both."""
    name = _backend_of(xp)
    if name == "torch":
        import torch

        return torch.softmax(x, -1)
    if name == "jax":
        import jax

        return jax.nn.softmax(x, axis=-1)
    m = xp.max(x, axis=-1, keepdims=True)
    e = xp.exp(x - xp.where(xp.isfinite(m), m, xp.zeros_like(m)))
    if name == "numpy":
        e /= xp.sum(e, axis=-1, keepdims=True)
        return e
    return e / xp.sum(e, axis=-1, keepdims=True)


def logsumexp(x, *, axis, xp, keepdims=False):
    """log Σ exp(x) along ``axis``; -inf entries contribute nothing, an all -inf slice gives -inf."""
    name = _backend_of(xp)
    if name == "torch":
        import torch

        return torch.logsumexp(x, dim=axis, keepdim=keepdims)
    if name == "jax":
        import jax

        return jax.nn.logsumexp(x, axis=axis, keepdims=keepdims)
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


@functools.lru_cache(maxsize=1)
def _torch_float64():
    import torch

    return torch.float64


def sign(x, *, xp):
    """sign(x) with sign(0) = 0 and NaN propagated. On torch this is ``torch.sign``:
    array-api-compat's version fixes NaN up with a boolean-mask assignment that
    ``torch.func.vmap`` cannot batch."""
    if _backend_of(xp) == "torch":
        import torch

        return torch.where(torch.isnan(x), x, torch.sign(x))  # torch.sign(NaN) is 0
    return xp.sign(x)


def nan_where(x, values, *, xp):
    """``values`` with NaN wherever ``x`` is NaN: for derivatives that are constant or an
    indicator in ``x`` (a Hessian of 2, of 0, of 1[|r| <= δ]), so NaN inputs still propagate."""
    return xp.where(xp.isnan(x), x, values)


TORCH_SCALARS: dict = {}  # (value, like's dtype, like's device) -> 0-d tensor; read inline by the torch bridge


def torch_scalar(value: float, like):
    """``value`` as a cached 0-d tensor in the compute dtype of torch tensor ``like``, on its
    device: a Python-scalar operand makes torch wrap it into a fresh tensor on every op (~1.5 µs
    each on a small batch). Shared, so never written to."""
    key = (value, like.dtype, like.device)
    t = TORCH_SCALARS.get(key)
    if t is None:
        import torch

        if len(TORCH_SCALARS) >= 256:
            TORCH_SCALARS.clear()
        t = TORCH_SCALARS[key] = torch.tensor(value, dtype=compute_dtype(like.dtype, torch), device=like.device)
    return t


def torch_may_overwrite(*tensors) -> bool:
    """Whether a torch kernel may update its own temporaries in place: autograd records no
    op on ``tensors`` (grad mode off, as inside an ``autograd.Function`` forward, or none of
    them requires grad) and no ``torch.func`` transform sees them. An in-place update of a
    tensor autograd saved (e.g. exp's output) breaks its backward, and under ``vmap`` some
    in-place ops (``scatter_`` with a scalar) have no batching rule (a slow per-sample loop)."""
    import torch

    if not torch.compiler.is_compiling():  # Dynamo cannot trace the functorch query
        is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
        if any(is_wrapped(t) for t in tensors):
            return False
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


def can_write_inplace(x, xp, *operands) -> bool:
    """Whether ``x`` (a temporary the caller owns) may be updated in place with ``operands``:
    NumPy always, torch when autograd records none of them; never JAX (immutable). The
    array's type is tested first: the namespace test costs more than a small loss's multiply."""
    t = type(x)
    if t is _np.ndarray:
        return True
    if t.__module__ == "torch":  # torch.Tensor itself (FakeTensor and others: the test below)
        if x.requires_grad:
            return False
        for o in operands:  # a loop, not any(generator): this runs on every small call
            if getattr(o, "requires_grad", False):
                return False
        return True
    name = _backend_of(xp)
    if name == "numpy":
        return True
    if name == "torch":
        return not x.requires_grad and not any(getattr(o, "requires_grad", False) for o in operands)
    return False


def is_tracing(x) -> bool:
    """True when ``x`` is a symbolic value (a JAX tracer, or a tensor under torch.compile),
    where data-dependent checks cannot run."""
    mod = type(x).__module__
    if mod.startswith("jax"):
        import jax

        return isinstance(x, jax.core.Tracer)
    if mod.startswith("torch"):
        import torch

        if torch.compiler.is_compiling():
            return True
        # inside torch.func transforms (vmap, grad) tensors are functorch wrappers
        return torch._C._functorch.is_functorch_wrapped_tensor(x)
    return False


def class_ids_onehot(ids, num_classes: int, dtype, xp):
    """One-hot of integer ``ids`` along a new trailing axis, in ``dtype``."""
    return xp.astype(ids[..., None] == xp.arange(num_classes, device=_device(ids)), dtype)


def gather_classes(values, ids, xp):
    """``values[ids]`` for a 1-D ``values`` (per class) and integer ``ids`` of any shape."""
    flat = xp.take(values, xp.reshape(ids, (-1,)), axis=0)
    return xp.reshape(flat, ids.shape)


def _device(x):
    try:
        return array_api_compat.device(x)
    except Exception:  # tracers without a committed device
        return None
