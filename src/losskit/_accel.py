"""Single-pass kernels for elementwise losses on NumPy and torch-CPU arrays.

The array-API path evaluates a loss as a dozen whole-array operations, each a pass through
memory. For the large inputs of gradient boosting (millions of rows every round) that is the
whole cost, so the losses listed in :data:`KERNELS` also have a fused kernel: one parallel pass
that reads ``pred`` and ``target`` once and writes each output once. The kernels are compiled by
Numba (the optional ``accel`` extra: ``pip install losskit[accel]``) and cached on disk.

* The array-API path stays the reference. On NumPy a kernel runs at every size
  (:func:`run_numpy`: one jitted call, ~2 µs at 100 elements, where the reference path's dozen
  ufunc calls cost ~10 µs), on torch where ``_loss.evaluate`` would take its block path
  (large, CPU, not recorded by autograd, not under ``torch.compile``) and, for the entries that
  declare ``small_torch``, in the small recorded calls of ``interop.torch`` (grad in the forward,
  at most ``GRAD_IN_FORWARD_MAX`` elements: ``run_numpy`` on NumPy views of the tensors, where
  one jitted call beats the loss's torch ops); in all cases for
  same-shape float32/float64 C-contiguous inputs (plain tensors, not functorch wrappers; not
  0-d) and the option values its entry covers. Per-sample ``weight`` (the reduction's
  multiplier as an array of pred's dtype) and ``mask`` run in the kernel too (gradient-boosting
  users pass weights every round); a weight being differentiated by torch autograd, array
  options, and every call when Numba is not installed or ``LOSSKIT_ACCEL=0`` is set take the
  reference path.
* Each kernel (``_accel_numba``) mirrors its loss's reference arithmetic step by step in the
  input dtype (multiply-adds may be fused); only ``exp`` and ``log1p`` differ: vectorisable
  few-ulp routines of the kernels' own, where NumPy and torch use theirs. ``tests/test_accel.py`` checks every kernel against the
  reference path, per element, output, reduction and dtype, on both sides of the threshold.
* Reduced values are summed in float64 over fixed chunks: they do not depend on the number of
  threads, and where the reference's float32 sum overflows to inf (terms near the dtype's
  largest value) the kernel's mean can stay finite.
* Threads: one per CPU the process may use; the chunks are split between them (the kernels
  release the GIL) from ``_SPLIT_MIN_CHUNKS`` chunks on, below which the hand-off costs more than it saves.
* The value checks of targets (BCE's probabilities, Poisson's counts) read the targets' range
  with :func:`nonnegative_range`, one Numba pass, on NumPy and on large torch CPU tensors: on
  torch, ``torch.aminmax`` left its OpenMP workers spinning against the kernels' threads (the
  BCE and Poisson kernels ran at a quarter of the copy floor after it, half without it).
  The check of a small target distribution (``kl_divergence``, cross-entropy's probability
  targets) reads its entry and row-sum ranges with :func:`distribution_ranges`, one Numba pass.

* Losses over a class axis have row kernels (:data:`ROW_KERNELS`; NumPy, and small recorded
  torch calls for ``small_torch`` entries): NumPy
  ``cross_entropy`` with integer ids or probability targets (without label smoothing or
  z-loss; sample weights, masks, ``ignore_index`` and ``class_weight`` included) runs one
  Numba pass per chunk of rows
  that keeps the reference's precise split (max − z_y) + log1p(Σ_{k≠argmax} e^{z_k − max}).
  Forward ``kl_divergence`` with probability targets (not ``log_target``, not ``reverse``;
  weights and masks included) runs the probability-target driver with each row's
  Σ_k t_k log t_k added (its derivatives are soft-target cross-entropy's; ``log`` is the
  kernels' own few-ulp routine too), also for small recorded torch calls (``small_torch``).
  Rows it cannot take (a NaN or +inf logit, only −inf logits, a label out of range; for KL's
  value a target outside [0, inf), which only ``validate=False`` lets through) send the
  whole call to the reference path.
  ``tests/test_accel_cross_entropy.py`` and ``tests/test_accel_kl.py`` check them against
  the reference path and float64 PyTorch.

``LOSSKIT_ACCEL=0`` (read at import) or :func:`disabled` (a context manager) switches the
kernels off; :func:`available` says whether they can run.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["KERNELS", "ROW_KERNELS", "ENV_VAR", "available", "enabled", "disabled", "run", "nonnegative_range", "id_range"]

ENV_VAR = "LOSSKIT_ACCEL"
_enabled = os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")
_state: dict = {}  # "numba": the module or None; "compiled": the drivers; "pool": the threads


@dataclass(frozen=True)
class AccelKernel:
    """The fused kernels of one loss. ``constants(o, dtype)`` turns the bound options into the
    kernels' constants (a tuple of NumPy scalars of ``dtype``), or returns None for option values
    the kernels do not cover. ``build()`` returns the three compiled drivers
    ``(value, value_and_grad, grad_hess)``."""

    constants: Callable
    build: Callable
    small_torch: bool = False  # see ``RowKernel.small_torch``


KERNELS: dict[str, AccelKernel] = {}


def enabled() -> bool:
    """Whether the kernels are switched on (``LOSSKIT_ACCEL`` unset or not 0, and not inside
    :func:`disabled`). They run only when Numba can also be imported (:func:`available`)."""
    return _enabled


@contextlib.contextmanager
def disabled():
    """Within this block every call takes the reference (array-API) path."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def available() -> bool:
    """Whether Numba is installed, so that the kernels can run."""
    return _numba() is not None


def _numba():
    if "numba" not in _state:
        try:
            import numba
        except ImportError:
            numba = None
        _state["numba"] = numba
    return _state["numba"]


def _drivers(name: str):
    key = ("drivers", name)
    if key not in _state:
        _state[key] = KERNELS[name].build()
    return _state[key]


_NEEDS = ("value", "grad", "value_and_grad", "grad_hess")


def run(call, pred, target, c, valid, aux, xp, need: str):
    """The fused kernel's result for this call of ``_loss.evaluate``, or None where the
    reference path must run. The caller has already checked what ``_loss._block_size`` checks
    (an elementwise loss, a large input, target of pred's shape, torch CPU outside autograd)."""
    entry = KERNELS.get(call.spec.name)
    if entry is None or not _enabled or need not in _NEEDS:
        return None
    if any(a is not None for a in aux):
        return None  # array options: the reference path
    from ._array import backend

    kind = backend(xp)
    scalar_c = _host_number(c)
    arrays = (pred, target) if scalar_c is not None else (pred, target, c)
    if valid is not None:
        arrays += (valid,)
    host = _host_arrays(kind, arrays)
    if host is None:
        return None
    p, t = host[0], host[1]
    import numpy as np

    dtype = p.dtype
    if dtype not in (np.float32, np.float64) or t.dtype != dtype:
        return None
    if scalar_c is None and not host[2].ndim:
        return None  # a 0-d multiplier _host_number declined (being differentiated): its detached host view must not pass as a number
    shape = tuple(pred.shape)
    accepted = _accept_multiplier_and_mask(scalar_c if scalar_c is not None else host[2], host[-1] if valid is not None else None, shape, dtype)
    if accepted is None:
        return None
    scalar_c, w, mask = accepted
    k = entry.constants(dict(call.static), dtype.type)
    if k is None or _numba() is None:
        return None
    value_fn, value_grad_fn, grad_hess_fn = _drivers(call.spec.name)
    flat = (p.reshape(-1), t.reshape(-1), w, mask)
    out = _launch(value_fn, value_grad_fn, grad_hess_fn, *flat, dtype, scalar_c, call.reduction, k, need)
    if kind == "torch":
        import torch

        wrap = lambda a: a if isinstance(a, float) else torch.from_numpy(a).reshape(shape)  # noqa: E731
        scalar = lambda v: torch.tensor(v, dtype=pred.dtype)  # noqa: E731
    else:
        wrap = lambda a: a if isinstance(a, float) else a.reshape(shape)  # noqa: E731
        scalar = dtype.type
    if need == "grad_hess":
        return wrap(out[0]), wrap(out[1])
    value, grad = out
    if isinstance(value, float):
        value = scalar(value)
    else:
        value = wrap(value)
    if need == "value":
        return value
    if need == "grad":
        return wrap(grad)
    return value, wrap(grad)


_SPLIT_MIN_CHUNKS = 16  # below, one thread: handing half of 16 chunks (~0.3 ms of BCE) to the pool costs more than it saves on a busy machine (1e5 elements: 0.24 ms on two threads, 0.17 ms on one, load 4)
_NUMPY_PLANS: dict = {}  # (loss, static options, dtype) -> (drivers, constants), or None: not covered


def run_numpy(call, pred, target, c, valid, aux, need: str):
    """``run`` for NumPy arrays of any size, lean enough for small ones: a jitted call costs
    ~2 µs where the reference path's dozen ufunc calls cost ~10 µs at 100 elements. Returns
    None (the reference path runs) for anything but C-contiguous float32/float64 NumPy arrays of
    one shape (not 0-d, not empty), option values a kernel covers, a number or a same-shape weight array as the
    multiplier, and a boolean mask or none; and when Numba is absent or switched off."""
    if type(pred) is not np.ndarray or not _enabled:
        return None
    key = (call.spec.name, call.static, pred.dtype)
    plan = _NUMPY_PLANS.get(key, False)
    if plan is False:
        if _numba() is None:
            return None  # not cached: a plan made without Numba would outlive its return (tests switch it off and on)
        plan = _NUMPY_PLANS[key] = _numpy_plan(call, pred.dtype)
    if plan is None or _state["numba"] is None:
        return None
    if type(plan) is _RowPlan:
        return _run_rows(plan, call, pred, target, c, valid, aux, need)
    for a in aux:
        if a is not None:
            return None  # array options: the reference path (a loop: any(generator) costs ~0.3 µs)
    if need not in _NEEDS:
        return None
    if type(target) is not np.ndarray or target.dtype != pred.dtype or target.shape != pred.shape or pred.size == 0:
        return None
    if not pred.ndim:
        return None  # 0-d: NumPy's ufuncs return scalars there, which the reference path keeps
    if not (_c_aligned(pred) and _c_aligned(target)):
        return None
    shape, dtype = pred.shape, pred.dtype
    flat = pred.ndim == 1  # the common case: no reshapes
    accepted = _accept_multiplier_and_mask(c, valid, shape, dtype)
    if accepted is None:
        return None
    scalar_c, w, mask = accepted
    (value_fn, value_grad_fn, grad_hess_fn), k = plan
    if need == "value_and_grad" and call.reduction != "none" and pred.size <= _CHUNK:
        # the small training call, written out (one chunk): _launch's frame costs ~0.4 µs
        grad, partial = np.empty(shape, dtype), np.empty(1)
        if flat:
            value_grad_fn(pred, target, w, mask, _NO_OUTPUT[dtype.char], grad, partial, _scale(dtype, scalar_c), 0, 1, k)
        else:
            value_grad_fn(pred.reshape(-1), target.reshape(-1), w, mask, _NO_OUTPUT[dtype.char], grad.reshape(-1), partial, _scale(dtype, scalar_c), 0, 1, k)
        total = float(partial[0])
        return dtype.type(total if scalar_c is None else total * scalar_c), grad
    if flat:
        out = _launch(value_fn, value_grad_fn, grad_hess_fn, pred, target, w, mask, dtype, scalar_c, call.reduction, k, need)
    else:
        out = _launch(value_fn, value_grad_fn, grad_hess_fn, pred.reshape(-1), target.reshape(-1), w, mask, dtype, scalar_c, call.reduction, k, need)
    if need == "grad_hess":
        return (out[0], out[1]) if flat else (out[0].reshape(shape), out[1].reshape(shape))
    value, grad = out
    if type(value) is float:
        value = dtype.type(value)
    elif not flat:
        value = value.reshape(shape)
    if grad is not None and not flat:
        grad = grad.reshape(shape)
    if need == "value":
        return value
    if need == "grad":
        return grad
    return value, grad


def _accept_multiplier_and_mask(c, valid, shape, dtype):
    """The reduction's multiplier ``c`` and the mask ``valid`` as a kernel takes them, or None
    (the reference path runs): ``(scalar_c, w, mask)`` with ``scalar_c`` the number ``c``
    (:func:`_host_number`) and ``w`` empty, or ``scalar_c`` None and ``w`` the flat ``c``, a
    C-contiguous aligned NumPy array of ``dtype`` and of ``shape``; ``mask`` empty where
    ``valid`` is None, else the flat ``valid``, a C-contiguous aligned boolean NumPy array of
    ``shape``. ``shape`` is the elementwise kernels' pred.shape, the row kernels' sample shape
    pred.shape[:-1]. The one acceptance rule of ``run``, ``run_numpy`` and ``_run_rows``."""
    scalar_c = c if type(c) is float else _host_number(c)
    if scalar_c is not None:
        w = _EMPTY[dtype.char]
    elif type(c) is np.ndarray and c.dtype == dtype and c.shape == shape and _c_aligned(c):
        w = c if c.ndim == 1 else c.reshape(-1)
    else:
        return None
    if valid is None:
        mask = _EMPTY["?"]
    elif type(valid) is np.ndarray and valid.dtype == np.bool_ and valid.shape == shape and _c_aligned(valid):
        mask = valid if valid.ndim == 1 else valid.reshape(-1)
    else:
        return None
    return scalar_c, w, mask


def _numpy_plan(call, dtype):
    """``run_numpy``'s cached plan of a (loss, options, dtype), made with Numba present: the
    compiled drivers and constants, a row plan, or None (not covered)."""
    rows = ROW_KERNELS.get(call.spec.name)
    if rows is not None:
        kind = rows.covers(dict(call.static)) if dtype in (np.float32, np.float64) else None
        if kind is None:
            return None
        return _RowPlan(lambda: rows.build(kind), kind == "dense")
    entry = KERNELS.get(call.spec.name)
    if entry is None:
        return None
    k = entry.constants(dict(call.static), dtype.type) if dtype in (np.float32, np.float64) else None
    return None if k is None else (_drivers(call.spec.name), k)


def _c_aligned(a) -> bool:
    f = a.flags
    return f.c_contiguous and f.aligned


_EMPTY = {"f": np.empty(0, np.float32), "d": np.empty(0, np.float64), "?": np.empty(0, np.bool_)}
for _a in _EMPTY.values():
    _a.flags.writeable = False  # shared: a kernel only reads an absent weight or mask


def _host_arrays(kind, arrays):
    """The arrays as C-contiguous NumPy arrays sharing their memory (NumPy arrays, or plain
    torch CPU tensors: not a subclass, not inside torch.func transforms, not a negative or
    conjugate view, none but the first being differentiated), or None where one of them is
    anything else. The one rule for reading a tensor's memory (``run``, the small checks, the
    small torch calls of ``interop.torch``); ~1 µs a tensor."""
    if kind == "numpy":
        for a in arrays:
            if type(a) is not np.ndarray or not (a.flags.c_contiguous and a.flags.aligned):
                return None
        return arrays
    if kind != "torch":
        return None
    plain, grad_enabled = _torch_probes()
    host = []
    for a in arrays:
        if type(a) not in plain or not a.is_cpu or not a.is_contiguous():
            return None  # subclasses may mean something else by their data
        if a.requires_grad:
            if a is not arrays[0] and grad_enabled():
                return None  # a weight being differentiated: the reference path records it
            a = a.detach()
        try:
            # .numpy() itself refuses what has no plain memory of its own: functorch wrappers
            # (torch.func transforms), negative and conjugate views, sparse layouts
            host.append(a.numpy())
        except (RuntimeError, TypeError):
            return None
    return tuple(host)


def _torch_probes():
    """(plain tensor types, torch.is_grad_enabled), looked up once."""
    probes = _state.get("torch_probes")
    if probes is None:
        import torch

        probes = _state["torch_probes"] = ((torch.Tensor, torch.nn.Parameter), torch.is_grad_enabled)
    return probes


def _host_number(c):
    """The reduction's multiplier ``c`` as a Python float: a float, or a 0-d NumPy array or
    torch CPU tensor outside autograd (read on the host, no device sync); None otherwise."""
    if type(c) is float:
        return c
    if getattr(c, "ndim", None) != 0 or getattr(c, "requires_grad", False):
        return None
    device = getattr(c, "device", "cpu")
    if getattr(device, "type", device) != "cpu" or getattr(c, "dtype", None) is None:
        return None
    try:
        return float(c)
    except (TypeError, ValueError):
        return None


def _launch(value_fn, value_grad_fn, grad_hess_fn, p, t, w, valid, dtype, c, reduction, k, need):
    """Run one driver on flat arrays, its chunks split over the threads. ``w`` is the
    per-sample multiplier (empty where the multiplier is the number ``c``), ``valid`` the mask
    (empty: none). Returns (value, grad) or (grad, hess); a reduced value is a Python float
    (the float64 sum, times ``c`` when that is a number)."""
    n = p.shape[0]
    chunks = (n + _CHUNK - 1) // _CHUNK
    one_call = chunks < _SPLIT_MIN_CHUNKS or _threads() == 1  # small calls: no closure, no pool
    per_sample = reduction == "none"
    scale = _scale(dtype, c)
    if need == "grad_hess":
        g, h = np.empty(n, dtype), np.empty(n, dtype)
        if one_call:
            grad_hess_fn(p, t, w, valid, g, h, scale, 0, chunks, k)
        else:
            _split(chunks, lambda c0, c1: grad_hess_fn(p, t, w, valid, g, h, scale, c0, c1, k))
        return g, h
    values = np.empty(n, dtype) if per_sample else _NO_OUTPUT[dtype.char]  # empty: never written
    partial = _NO_OUTPUT["d"] if per_sample else np.empty(chunks)  # each chunk writes its sum
    if need == "value":
        if one_call:
            value_fn(p, t, w, valid, values, partial, 0, chunks, k)
        else:
            _split(chunks, lambda c0, c1: value_fn(p, t, w, valid, values, partial, c0, c1, k))
        g = None
    else:
        g = np.empty(n, dtype)
        if one_call:
            value_grad_fn(p, t, w, valid, values, g, partial, scale, 0, chunks, k)
        else:
            _split(chunks, lambda c0, c1: value_grad_fn(p, t, w, valid, values, g, partial, scale, c0, c1, k))
    if per_sample:
        return values, g
    total = float(partial[0]) if chunks == 1 else float(partial.sum())
    return (total if c is None else total * c), g


_SCALES: dict = {}  # (dtype char, multiplier) -> the multiplier in the dtype (a "mean" of n: 1/n)


def _scale(dtype, c):
    """The multiplier ``c`` (a Python float, None: 1) as a NumPy scalar of ``dtype``, cached:
    the conversion costs a tenth of a small call."""
    key = (dtype.char, c)
    scale = _SCALES.get(key)
    if scale is None:
        if len(_SCALES) > 256:
            _SCALES.clear()
        scale = _SCALES[key] = dtype.type(1.0 if c is None else c)
    return scale


def _threads() -> int:
    threads = _state.get("threads")
    if threads is None:
        try:
            threads = max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            threads = max(1, os.cpu_count() or 1)
        _state["threads"] = threads
    return threads


def _pool():
    if "pool" not in _state:
        from concurrent.futures import ThreadPoolExecutor

        _state["pool"] = ThreadPoolExecutor(max_workers=max(1, _threads() - 1), thread_name_prefix="losskit-accel")
    return _state["pool"]


def _forget_pool():
    _state.pop("pool", None)  # its threads did not survive the fork
    _state.pop("threads", None)  # nor, perhaps, the CPU affinity


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _split(chunks: int, work) -> None:
    """``work(c0, c1)`` over [0, chunks) in one contiguous share per thread, the calling
    thread taking the first (the kernels release the GIL)."""
    threads = min(_threads(), chunks)
    if threads <= 1 or chunks < _SPLIT_MIN_CHUNKS:
        work(0, chunks)
        return
    bounds = [chunks * i // threads for i in range(threads + 1)]
    pool = _pool()
    futures = [pool.submit(work, bounds[i], bounds[i + 1]) for i in range(1, threads)]
    try:
        work(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


# --- class-axis kernels: one row of logits at a time --------------------------------------


@dataclass(frozen=True)
class RowKernel:
    """The fused kernels of a loss over a class axis (NumPy; small torch calls with
    ``small_torch``). ``covers(static options)``
    names the driver that computes the call ("ids": integer targets, "dense": a target of the
    logits' shape), or None (e.g. cross-entropy with label smoothing); ``build(kind)`` returns
    the compiled driver."""

    covers: Callable
    build: Callable
    # also run on small torch CPU tensors recorded by autograd (``interop.torch``'s
    # grad-in-forward path, through ``run_numpy`` on their memory): only where one jitted call
    # costs less than the reference's torch ops (~9 µs of conversions and dispatch at (32, 10),
    # against ~4 µs for mse's three ops and ~23 µs for binary_cross_entropy's eleven)
    small_torch: bool = False


ROW_KERNELS: dict[str, RowKernel] = {}


class _RowPlan:
    __slots__ = ("build", "kernel", "dense")

    def __init__(self, build, dense):
        self.build = build  # () -> the compiled driver
        self.kernel = None  # compiled on first use
        self.dense = dense  # the target has the logits' shape (probabilities), not ids


_MODES = {"value": 0, "value_and_grad": 1, "grad": 2, "grad_hess": 3}
_IDS = (np.dtype(np.int64), np.dtype(np.int32))


def _run_rows(plan, call, pred, target, c, valid, aux, need):
    """``run_numpy`` for a row kernel (cross-entropy with integer ids): ``pred`` (..., C) with
    the class axis last, ``target`` the ids (...,), ``c`` a number or an array of the sample
    shape in pred's dtype, ``valid`` None or a boolean array of the sample shape, ``aux`` the
    class weights (None or (C,) in pred's dtype). None where the reference path must run:
    other layouts or dtypes, and rows the kernel leaves to it (a maximum that is not finite, a
    label out of range)."""
    mode = _MODES.get(need)
    if mode is None or pred.ndim < 2 or type(target) is not np.ndarray or not (_c_aligned(pred) and _c_aligned(target)):
        return None
    shape, dtype = pred.shape, pred.dtype
    sample_shape = shape[:-1]
    num_classes = shape[-1]
    if plan.dense:
        if target.shape != shape or target.dtype != dtype or pred.size == 0:
            return None
    elif target.shape != sample_shape or target.dtype not in _IDS or pred.size == 0:
        return None
    cw = aux[0] if aux else None
    if cw is None:
        cw = _EMPTY[dtype.char]
    elif not (type(cw) is np.ndarray and cw.dtype == dtype and cw.shape == (num_classes,) and _c_aligned(cw)):
        return None
    accepted = _accept_multiplier_and_mask(c, valid, sample_shape, dtype)
    if accepted is None:
        return None
    scalar_c, w, mask = accepted
    n = pred.size // num_classes  # rows
    z = pred.reshape(-1)
    bits = z.view(_FLOAT_BITS[dtype][0])
    per_row = call.reduction == "none"
    rows_per_chunk = max(1, _CHUNK // num_classes)
    chunks = (n + rows_per_chunk - 1) // rows_per_chunk
    values = np.empty(n, dtype) if per_row and mode <= 1 else _NO_OUTPUT[dtype.char]
    partial = np.empty(chunks) if not per_row and mode <= 1 else _NO_OUTPUT["d"]  # each chunk writes its sum
    grad = np.empty(n * num_classes, dtype) if mode else _NO_OUTPUT[dtype.char]
    hess = np.empty(n * num_classes, dtype) if mode == 3 else _NO_OUTPUT[dtype.char]
    scale = _scale(dtype, scalar_c)
    kernel = plan.kernel
    if kernel is None:
        kernel = plan.kernel = plan.build()
    y = target if target.ndim == 1 else target.reshape(-1)
    if chunks < _SPLIT_MIN_CHUNKS or _threads() == 1:
        bad = kernel(z, bits, y, w, mask, cw, values, grad, hess, partial, scale, num_classes, rows_per_chunk, 0, chunks, mode)
    else:
        counts = []
        _split(chunks, lambda c0, c1: counts.append(kernel(z, bits, y, w, mask, cw, values, grad, hess, partial, scale, num_classes, rows_per_chunk, c0, c1, mode)))
        bad = sum(counts)
    if bad:
        return None
    if mode >= 2:
        g = grad.reshape(shape)
        return g if mode == 2 else (g, hess.reshape(shape))
    if per_row:
        value = values.reshape(sample_shape)
    else:
        total = float(partial[0]) if chunks == 1 else float(partial.sum())
        value = dtype.type(total if scalar_c is None else total * scalar_c)
    return value if mode == 0 else (value, grad.reshape(shape))


# absent outputs: empty, and writeable so that one compiled signature serves every mode
_NO_OUTPUT = {"f": np.empty(0, np.float32), "d": np.empty(0, np.float64)}


def _ce_covers(o):
    if o.get("label_smoothing") or o.get("z_loss"):
        return None
    return {"ids": "ids", "probs": "dense"}.get(o.get("target_kind"))


def _compiled_rows(name):
    key = ("rows", name)
    if key not in _state:
        from . import _accel_numba

        _state[key] = _accel_numba.ROW_DRIVERS[name]
    return _state[key]


ROW_KERNELS["cross_entropy"] = RowKernel(
    covers=_ce_covers, build=lambda kind: _compiled_rows("cross_entropy" if kind == "ids" else "cross_entropy_probs")
)


def _kl_covers(o):
    """Forward KL with probability targets: soft-target cross-entropy's kernel plus Σ t log t."""
    return None if o.get("log_target") or o.get("reverse") else "dense"


# small_torch: at (32, 10) the jitted call (~2 µs plus ~5 µs of conversions) replaces
# ``_kl_torch``'s dozen ops (~46 µs of forward kernel in ``overhead.py --profile``)
ROW_KERNELS["kl_divergence"] = RowKernel(covers=_kl_covers, build=lambda kind: _compiled_rows("kl_divergence"), small_torch=True)


# --- the validation pass of large targets -------------------------------------------------

RANGE_MIN = 1 << 17  # torch elements; below, torch.aminmax runs on one thread (no spinning)
_FLOAT_BITS = {
    np.dtype(np.float32): (np.dtype(np.int32), 0x7F800000, struct.Struct("2i"), struct.Struct("2f")),
    np.dtype(np.float64): (np.dtype(np.int64), 0x7FF0000000000000, struct.Struct("2q"), struct.Struct("2d")),
}


def nonnegative_range(x, valid=None):
    """``(min, max)`` as Python floats of the elements of ``x`` where ``valid`` (None: all), in
    one Numba pass, when every one of them is in [+0, +inf]; None otherwise (a value of sign bit
    1, -0.0 included, a NaN, nothing valid) and wherever the pass does not run: float32/float64
    C-contiguous NumPy arrays of any size and torch CPU tensors from ``RANGE_MIN`` elements
    only, with Numba installed and not switched off. The value checks of targets (probabilities,
    counts) call it first on their happy path: on torch it replaces ``torch.aminmax``, whose
    OpenMP workers would then spin against the kernels' threads; on NumPy it is one pass where
    ``min`` and ``max`` are two (and ~1 µs at 100 elements where they cost ~4 µs). None sends
    the caller to its own exact check, which finds and reports any bad value."""
    if not _enabled:
        return None
    if type(x) is np.ndarray:
        if x.size == 0 or not _c_aligned(x):
            return None
        if valid is None and x.ndim == 1 and x.size <= _CHUNK:  # the small call: one pass, nothing else
            kernels = _loaded_kernels()
            if kernels is None or x.dtype not in _FLOAT_BITS:
                return None
            ok, low, high = kernels.float_range_serial(x, _EMPTY["?"])
            return (float(low), float(high)) if ok else None
        values = x
        if valid is None:
            mask = _EMPTY["?"]
        elif type(valid) is np.ndarray and valid.dtype == np.bool_ and valid.shape == x.shape and _c_aligned(valid):
            mask = valid
        else:
            return None
    elif type(x).__module__.startswith("torch"):
        if x.numel() < RANGE_MIN:
            return None
        host = _host_arrays("torch", (x,) if valid is None else (x, valid))
        if host is None:
            return None
        values = host[0]
        mask = _EMPTY["?"] if valid is None else host[1]
        if mask.shape != (0,) and (mask.dtype != np.bool_ or mask.shape != values.shape):
            return None
    else:
        return None
    kind = _FLOAT_BITS.get(values.dtype)
    if kind is None or _numba() is None:
        return None
    int_type, inf_bits, pack, unpack = kind
    from . import _accel_numba as kernels

    bits, mask = values.reshape(-1).view(int_type), mask.reshape(-1)
    chunks = (bits.shape[0] + _CHUNK - 1) // _CHUNK
    if chunks < _SPLIT_MIN_CHUNKS or _threads() == 1:
        low, high = kernels.bits_range_serial(bits, mask)
    else:
        lows, highs = np.empty(chunks, int_type), np.empty(chunks, int_type)
        _split(chunks, lambda c0, c1: kernels.bits_range(bits, mask, lows, highs, c0, c1))
        low, high = lows.min(), highs.max()
    if low < 0 or high > inf_bits or low > high:  # sign bit 1, a NaN, or nothing valid
        return None
    return unpack.unpack(pack.pack(low, high))


DISTRIBUTION_MAX = 1 << 14  # elements; above, the caller's own reductions run (vectorised)


def distribution_ranges(t):
    """``(min, max, min row sum, max row sum)`` as Python floats of a target distribution ``t``
    (rows along the last axis; row sums in float64) in one Numba pass: a C-contiguous
    float32/float64 NumPy array or plain CPU torch tensor (read through a NumPy view of its
    memory) of 1 to ``DISTRIBUTION_MAX`` elements, with Numba installed and not switched off.
    None elsewhere and where an entry is NaN. ``_validate.check_distribution`` reads it first on
    its happy path: on a (32, 10) torch tensor it replaces three torch ops and a host read
    (~8 µs) by ~3 µs."""
    if not _enabled:
        return None
    if type(t) is np.ndarray:
        if not 0 < t.size <= DISTRIBUTION_MAX or t.dtype not in _FLOAT_BITS or not _c_aligned(t) or not t.ndim:
            return None
        values = t
    elif type(t).__module__.startswith("torch"):
        if not 0 < t.numel() <= DISTRIBUTION_MAX or not t.ndim:
            return None
        host = _host_arrays("torch", (t,))
        if host is None or host[0].dtype not in _FLOAT_BITS:
            return None
        values = host[0]
    else:
        return None
    kernels = _loaded_kernels()
    if kernels is None:
        return None
    ok, low, high, sum_low, sum_high = kernels.distribution_ranges(values.reshape(-1), values.shape[-1])
    return (low, high, sum_low, sum_high) if ok else None


def id_range(ids):
    """``(min, max)`` of NumPy integer class ids (int32 or int64, C-contiguous, not empty) as
    Python ints, in one Numba pass (~0.6 µs for 10 ids, where ``min`` and ``max`` cost ~2.5 µs);
    None elsewhere and when the kernels are off or absent. ``_validate.check_class_ids`` reads
    it first on its happy path."""
    if not _enabled or type(ids) is not np.ndarray or ids.dtype not in _IDS or ids.size == 0 or not _c_aligned(ids):
        return None
    kernels = _loaded_kernels()
    if kernels is None:
        return None
    low, high = kernels.bits_range_serial(ids if ids.ndim == 1 else ids.reshape(-1), _EMPTY["?"])
    return int(low), int(high)


def _loaded_kernels():
    """``_kernels()``, read from the state in one step once loaded (the small checks call it on
    every call)."""
    kernels = _state.get("kernels") if _state.get("numba") is not None else None
    return kernels if kernels is not None else _kernels()


def _kernels():
    """The ``_accel_numba`` module (imported once), or None without Numba."""
    if _numba() is None:
        _state.pop("kernels", None)
        return None
    from . import _accel_numba

    _state["kernels"] = _accel_numba
    return _accel_numba


# --- the registry ------------------------------------------------------------------------
# The kernels themselves live in ``_accel_numba`` (imported on first use only): Numba caches
# compiled code for functions defined at module level, not for closures.


_CHUNK = 1 << 14  # _accel_numba.CHUNK, here without importing Numba


def _compiled():
    if "compiled" not in _state:
        from . import _accel_numba

        _state["compiled"] = _accel_numba.DRIVERS
    return _state["compiled"]


def _half_range(dtype):
    import numpy as np

    return dtype(float(np.finfo(dtype).max) / 2)  # _array.finite_bound


def _bce_constants(o, dtype):
    if o.get("label_smoothing") or o.get("pos_weight") is not None:
        return None
    return (_half_range(dtype), dtype(0.0))


def _huber_constants(o, dtype):
    d = o["delta"]
    # the reference's Python-float constants meet the array as NumPy / torch cast them
    return (dtype(d), dtype(0.5), dtype(0.5 * d), dtype(1.0), dtype(0.0))


def _poisson_constants(o, dtype):
    return None if o.get("full") else (_half_range(dtype),)


def _entry(name, constants, small_torch=False):
    return AccelKernel(constants=constants, build=lambda: _compiled()[name], small_torch=small_torch)


KERNELS.update(
    binary_cross_entropy=_entry("binary_cross_entropy", _bce_constants, small_torch=True),
    mse=_entry("mse", lambda o, dtype: (dtype(2.0),)),
    huber=_entry("huber", _huber_constants),
    poisson_nll=_entry("poisson_nll", _poisson_constants),
)
