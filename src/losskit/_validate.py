"""Input checks and their messages. Every error names the loss and the argument at fault.

Checks on shapes and dtypes are free (metadata only). Checks that read values (class ids in
range, probabilities in [0, 1]) cost one reduction and a host read; they run when
``validate=True`` (the default) and are skipped under tracing (``jax.jit``, ``torch.compile``).
"""

from __future__ import annotations

from . import _accel
from ._array import is_floating, is_tracing, namespace

REDUCTIONS = ("mean", "sum", "none")


def input_namespace(loss: str, pred_name: str, pred, **others):
    """The array namespace of ``pred`` and the other array arguments (None entries skipped).
    A non-array or an array of another library is a TypeError naming the argument."""
    present = [pred] + [a for a in others.values() if a is not None]
    try:
        if all(hasattr(a, "shape") and hasattr(a, "dtype") for a in present):
            return namespace(*present)
    except TypeError:
        pass
    for arg, a in ((pred_name, pred), *others.items()):
        if a is None:
            continue
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            raise TypeError(f"{loss}: `{arg}` must be an array, got {describe(a)}.")
        if a is not pred and not same_library(a, pred):
            raise TypeError(
                f"{loss}: `{arg}` is a {describe(a)} but `{pred_name}` is a {describe(pred)}; "
                f"pass arrays of one library (convert `{arg}` to the type of `{pred_name}`)."
            )
    return namespace(*present)


def same_library(a, b) -> bool:
    return type(a).__module__.split(".")[0] == type(b).__module__.split(".")[0] or _namespace_or_none(a, b) is not None


def _namespace_or_none(*arrays):
    try:
        return namespace(*arrays)
    except TypeError:
        return None


def is_host_scalar(x) -> bool:
    """A 0-d NumPy array or NumPy scalar: safe to read with float() from any backend's call."""
    import numpy as np

    return isinstance(x, (np.ndarray, np.generic)) and np.ndim(x) == 0


def check_real(x, arg: str, loss: str) -> None:
    """Targets: any real dtype (floating, integer, bool); complex values would lose their
    imaginary part silently."""
    if "complex" in str(x.dtype):
        raise TypeError(f"{loss}: `{arg}` must be real, got dtype {x.dtype}.")


def check_floating(x, arg: str, loss: str, xp) -> None:
    if not is_floating(x, xp):
        raise TypeError(
            f"{loss}: `{arg}` must be a floating-point array, got dtype {x.dtype}. "
            f"Cast it first, e.g. {arg}.astype(float32)."
        )


def _shape(x) -> tuple:
    return tuple(int(d) for d in x.shape)


def check_same_shape(a, b, arg_a: str, arg_b: str, loss: str) -> None:
    if a.shape == b.shape:
        return
    sa, sb = _shape(a), _shape(b)
    if sa == sb:
        return
    hint = ""
    if len(sa) == len(sb) + 1 and sa[-1] == 1 and sa[:-1] == sb:
        hint = f" `{arg_a}` has a trailing axis of size 1: pass {arg_a}[..., 0] (losskit never broadcasts (N, 1) against (N,))."
    elif len(sb) == len(sa) + 1 and sb[-1] == 1 and sb[:-1] == sa:
        hint = f" `{arg_b}` has a trailing axis of size 1: pass {arg_b}[..., 0] (losskit never broadcasts (N, 1) against (N,))."
    raise ValueError(f"{loss}: `{arg_a}` and `{arg_b}` must have the same shape, got {arg_a} {sa} and {arg_b} {sb}.{hint}")


def check_sample_array(x, sample_shape: tuple, arg: str, loss: str, xp, *, boolean: bool, class_axis: bool = False) -> None:
    """``weight`` / ``mask`` must be exactly the shape of the per-sample loss."""
    if x is None:
        return
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{loss}: `{arg}` must be an array of shape {tuple(sample_shape)}, got {type(x).__name__}.")
    shape, want = _shape(x), tuple(int(d) for d in sample_shape)
    if shape != want:
        hint = ""
        if shape == want + (1,):
            hint = f" It has a trailing axis of size 1: pass {arg}[..., 0] (losskit never broadcasts (N, 1) against (N,))."
        elif shape + (1,) == want:
            hint = f" The per-sample loss has a trailing axis of size 1: pass {arg}[..., None] (losskit never broadcasts (N,) against (N, 1))."
        elif class_axis and len(shape) == len(want) + 1:
            hint = " For class-axis losses the per-sample shape omits the class axis."
        raise ValueError(f"{loss}: `{arg}` must have the shape of the per-sample loss {want}, got {shape}.{hint}")
    if boolean and x.dtype != xp.bool:
        raise TypeError(f"{loss}: `{arg}` must be a boolean array, got dtype {x.dtype}.")
    if not boolean and not is_floating(x, xp):
        raise TypeError(f"{loss}: `{arg}` must be a floating-point array, got dtype {x.dtype}.")


def check_reduction(reduction, normalizer, loss: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{loss}: `reduction` must be one of {REDUCTIONS}, got {reduction!r}.")
    if normalizer is not None and reduction != "mean":
        raise ValueError(f"{loss}: `normalizer` only applies to reduction='mean', got reduction={reduction!r}.")


def _real_kind(value) -> str | None:
    """'number' for a real Python/NumPy number, 'array' for an array with a real numeric dtype,
    None for anything else (bool, str, complex, lists...)."""
    if isinstance(value, (bool, str, bytes, complex)):
        return None
    if isinstance(value, (int, float)):
        return "number"
    dtype = getattr(value, "dtype", None)
    if dtype is None or not hasattr(value, "shape"):
        return None
    kind = getattr(dtype, "kind", None)  # NumPy
    if kind is not None:
        return "array" if kind in "fiu" else None
    name = str(dtype)
    if "complex" in name or "bool" in name:
        return None
    return "array" if any(k in name for k in ("float", "int", "bfloat")) else None


def check_number(value, arg: str, loss: str, *, low=None, high=None, low_open=False) -> float:
    """A scalar option as a Python float: a real number or a 0-d real array of any backend
    (read once). Booleans, strings and complex values are TypeErrors; NaN and values outside
    the range are ValueErrors."""
    kind = _real_kind(value)
    if kind is None or (kind == "array" and _shape(value) != ()):
        what = f"an array of shape {_shape(value)}" if kind == "array" else repr(value)
        raise TypeError(f"{loss}: `{arg}` must be a real number (or a 0-d array), got {what}.")
    v = float(value)
    check_range(v, arg, loss, low=low, high=high, low_open=low_open)
    return v


def check_range(v: float, arg: str, loss: str, *, low=None, high=None, low_open=False) -> None:
    if low is not None and (v < low or (low_open and v == low)) or high is not None and v > high or v != v:
        lo = "(" if low_open else "["
        raise ValueError(f"{loss}: `{arg}` must be in {lo}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}], got {v!r}.")


def check_option_array(x, arg: str, loss: str, xp, *, shape=None, low=None, validate=True):
    """An option given as an array (``class_weight``, ``pos_weight``, ``normalizer``): real
    dtype, the expected shape, and (when ``validate`` and the values are concrete) finite
    values >= ``low``. The same rules as the option's Python-number form."""
    if _real_kind(x) != "array":
        raise TypeError(f"{loss}: `{arg}` must be a real number or a real array, got {describe(x)}.")
    if shape is not None and _shape(x) not in shape:
        want = " or ".join(str(s) for s in shape)
        raise ValueError(f"{loss}: `{arg}` must have shape {want}, got {_shape(x)}.")
    if not validate or is_tracing(x) or 0 in _shape(x):
        return
    bad = ~xp.isfinite(x) if low is None else ~(x >= low) | ~xp.isfinite(x)
    if _any(bad, xp):
        pos = _first_position(bad, xp) if x.ndim else ()
        at = f" at {arg}{list(pos)}" if pos else ""
        cond = "finite" if low is None else f"finite and >= {low}"
        raise ValueError(f"{loss}: `{arg}` must be {cond}; found {float(x[pos])!r}{at}.")


def describe(x) -> str:
    dtype = getattr(x, "dtype", None)
    if dtype is not None:
        return f"{type(x).__module__.split('.')[0]}.{type(x).__name__} of dtype {dtype}"
    return repr(x) if isinstance(x, (bool, str, int, float, complex)) else type(x).__name__


def _host_read(read):
    """``read()`` (a host read of array values), or None when the values are symbolic (JAX
    tracing a jit: there is nothing to check then)."""
    try:
        return read()
    except Exception as exc:
        if type(exc).__module__.startswith("jax"):
            return None
        raise


def _any(bad, xp) -> bool:
    return bool(_host_read(lambda: bool(xp.any(bad))))


def _first_position(bad, xp) -> tuple:
    flat = xp.reshape(bad, (-1,))
    idx = int(xp.argmax(xp.astype(flat, xp.int32)))
    pos, rest = [], idx
    for d in reversed(_shape(bad)):
        pos.append(rest % d)
        rest //= d
    return tuple(reversed(pos))


def check_denominator(total, arg: str, sample_shape, valid, loss: str, xp) -> None:
    """A "mean" denominator (``normalizer``, or the weight sum over valid samples) of 0 while
    some sample is valid: an error, where an empty selection legitimately gives 0."""
    if not isinstance(total, float):
        if is_tracing(total):
            return
        # detached: a weight being differentiated makes the sum part of the graph (torch warns
        # on float() of such a tensor); the check reads its value only
        detached = total.detach() if hasattr(total, "detach") else total
        total = _host_read(lambda: float(detached))
        if total is None:
            return
    if total != 0:
        return
    n = 1
    for d in sample_shape:
        n *= int(d)
    if n == 0 or (valid is not None and not _any(valid, xp)):
        return  # empty selection: the documented 0
    what = (
        "`normalizer` is 0"
        if arg == "normalizer"
        else f"the {'class weights of the valid samples' if arg == 'class_weight' else 'weights of the valid samples'} sum to 0"
    )
    raise ValueError(
        f"{loss}: {what} but some samples are valid, so reduction='mean' would divide by zero. "
        "Only an empty selection (everything masked or ignored) gives 0; use reduction='sum' for a sum."
    )


def value_range(x, xp):
    """``(min, max)`` of a non-empty array as Python numbers, in one pass where the backend
    has a fused min-max (torch), with one host read; None when the values are symbolic. NaN
    anywhere makes a bound NaN (the caller then runs its exact, element-wise check)."""
    if type(x).__module__.startswith("torch"):
        return _torch_ranges(x)  # concrete tensors: nothing symbolic to guard (callers check tracing)

    def read():
        if type(x).__module__ == "numpy":  # the methods skip fromnumeric's dispatch
            return x.min().item(), x.max().item()
        if type(x).__module__.startswith("torch"):
            import torch

            lo, hi = torch.aminmax(x)
            if x.device.type == "cpu":
                return lo.item(), hi.item()
            return tuple(torch.stack((lo, hi)).tolist())  # one device sync, not two
        return float(xp.min(x)), float(xp.max(x))

    return _host_read(read)


def _torch_ranges(x, rows=None) -> tuple:
    """``(min, max)`` of tensor ``x`` (and of ``rows``, appended) as Python numbers: one
    ``aminmax`` per tensor and one host read (on CPU an ``item`` per bound, ~0.2 µs each;
    elsewhere one transfer of the stacked bounds, a single device sync). Written out: on a
    small batch every Python-level step shows."""
    lo, hi = x.aminmax()
    if rows is None:
        if x.is_cpu:
            return lo.item(), hi.item()
        bounds = (lo, hi)
    else:
        row_lo, row_hi = rows.aminmax()
        if x.is_cpu:
            return lo.item(), hi.item(), row_lo.item(), row_hi.item()
        bounds = (lo, hi, row_lo, row_hi)
    import torch

    return tuple(torch.stack(bounds).tolist())


_TORCH_PROBES: list = []


def _cpu_id_range(ids):
    """``(min, max)`` of eager, non-empty CPU tensor ``ids`` (class ids, or any values); None when it is symbolic
    (torch.compile, torch.func) or empty: the caller's general path decides."""
    if not _TORCH_PROBES:
        import torch

        _TORCH_PROBES.extend((torch.compiler.is_compiling, torch._C._functorch.is_functorch_wrapped_tensor))
    compiling, wrapped = _TORCH_PROBES
    if compiling() or wrapped(ids) or ids.numel() == 0:
        return None
    return _torch_ranges(ids)


def check_class_ids(ids, num_classes: int, ignore_index, loss: str, xp, valid=None) -> None:
    """Integer targets in [0, num_classes) where ``valid`` (ignored and masked ids are exempt)."""
    if valid is None and type(ids).__module__ == "torch" and ids.is_cpu:
        # the common eager call, written out (one aminmax, two host reads): ``is_tracing`` and
        # ``value_range`` dispatch cost about as much as the check on a small batch
        lo_hi = _cpu_id_range(ids)
        if lo_hi is not None and lo_hi[0] >= 0 and lo_hi[1] < num_classes:
            return
    elif valid is None and type(ids).__module__ == "numpy":
        lo_hi = _accel.id_range(ids)  # one Numba pass where min and max are two; None: the general path
        if lo_hi is not None and lo_hi[0] >= 0 and lo_hi[1] < num_classes:
            return
    if is_tracing(ids) or 0 in ids.shape:
        return
    checked = ids if valid is None else xp.where(valid, ids, xp.zeros_like(ids))
    # one min-max pass and one host read on the happy path; the position only on failure
    bounds = value_range(checked, xp)
    if bounds is None or (bounds[0] >= 0 and bounds[1] < num_classes):
        return
    bad = (checked < 0) | (checked >= num_classes)
    pos = _first_position(bad, xp)
    value = int(ids[pos])
    extra = "" if ignore_index is None else f" (ignore_index={ignore_index} is exempt)"
    raise ValueError(
        f"{loss}: class id {value} at target{list(pos)} is out of range for {num_classes} classes; "
        f"ids must be in [0, {num_classes}){extra}. Pass validate=False to skip this check."
    )


def check_probabilities(x, arg: str, loss: str, xp, valid=None) -> None:
    """Values in [0, 1] where ``valid``; NaN passes (it propagates, never replaced)."""
    if valid is None and type(x).__module__ == "torch" and x.is_cpu and x.numel() < _accel.RANGE_MIN:
        # the common small eager call, written out (one aminmax, two host reads): ``is_tracing``
        # and the dispatch below cost about as much as the check itself on a small batch;
        # out-of-range or NaN bounds fall through to the general path, which decides
        bounds = _cpu_id_range(x)
        if bounds is not None and bounds[0] >= 0 and bounds[1] <= 1:
            return
    if is_tracing(x) or 0 in x.shape:
        return
    fast = _accel.nonnegative_range(x, valid)  # NumPy, large torch CPU: one Numba pass, no torch op
    if fast is not None and fast[1] <= 1:
        return
    if valid is None:
        bounds = value_range(x, xp)  # one pass on the happy path; NaN bounds fall through
        if bounds is None or (bounds[0] >= 0 and bounds[1] <= 1):
            return
    bad = (x < 0) | (x > 1)
    if valid is not None:
        bad = bad & valid
    if _any(bad, xp):
        pos = _first_position(bad, xp)
        found = float(x[pos])
        hint = "Pass logits to the logits version of this loss"
        if found == -1.0:
            hint = "Labels in {-1, +1}? Map them to {0, 1} with (y + 1) / 2"
        elif found > 1 and found == int(found):
            hint = "A 0/255 or count-valued mask? Divide by its maximum first"
        raise ValueError(
            f"{loss}: `{arg}` must hold probabilities in [0, 1]; found {found!r} at {arg}{list(pos)}. "
            f"{hint}, or pass validate=False to skip this check."
        )


def check_domain(x, arg: str, loss: str, xp, valid=None, *, low: float, low_open: bool = False, hint: str = "") -> None:
    """Values >= ``low`` (> ``low`` with ``low_open``) where ``valid``; NaN passes (it
    propagates, never replaced). For counts, positive targets, variances, scales."""
    if is_tracing(x) or 0 in x.shape:
        return
    fast = _accel.nonnegative_range(x, valid)  # NumPy, large torch CPU: one Numba pass, no torch op
    if fast is not None and (fast[0] > low if low_open else fast[0] >= low):
        return
    bad = (x <= low) if low_open else (x < low)
    if valid is not None:
        bad = bad & valid
    if _any(bad, xp):
        pos = _first_position(bad, xp)
        raise ValueError(
            f"{loss}: `{arg}` must be {'>' if low_open else '>='} {low:g}; found {float(x[pos])!r} at {arg}{list(pos)}. "
            f"{hint + ' ' if hint else ''}Pass validate=False to skip this check."
        )


def check_signs(y, arg: str, loss: str, xp, valid=None) -> None:
    """Labels must be −1 or +1 where ``valid`` (NaN passes: it propagates); {0, 1} labels get
    a hint, never a silent mapping."""
    if is_tracing(y) or 0 in y.shape:
        return
    bad = ~((y == 1) | (y == -1) | xp.isnan(y))
    if valid is not None:
        bad = bad & valid
    if _any(bad, xp):
        pos = _first_position(bad, xp)
        hint = ""
        if not _any(~((y == 0) | (y == 1) | xp.isnan(y)), xp):
            hint = " The labels look like {0, 1}: pass 2 * target - 1."
        raise ValueError(f"{loss}: `{arg}` must hold -1 or +1, got {float(y[pos])} at {arg}{list(pos)}.{hint}")


def check_distribution(t, arg: str, loss: str, xp, valid=None, *, log: bool, tol: float, flag: str | None) -> None:
    """Each row of ``t`` along the last axis is a probability distribution: entries in [0, 1]
    summing to 1 within ``tol`` (``log=True``: log-probabilities, entries <= 0 whose exp sums
    to 1). Rows outside ``valid`` are exempt; NaN passes (it propagates). ``flag`` names the
    option that switches between the two forms, for the hint."""
    if is_tracing(t) or 0 in t.shape:
        return
    fast = None if valid is not None or log else _accel.distribution_ranges(t)  # small: one Numba pass
    if fast is not None:
        if fast[0] >= 0 and fast[1] <= 1 and fast[2] >= 1.0 - tol and fast[3] <= 1.0 + tol:
            return
    elif valid is None:
        # happy path in two reductions and one host read each: the range of the entries and
        # of the row sums (NaN bounds fall through to the exact check below); torch: three
        # of its own ops and one host read for all four bounds
        if type(t).__module__.startswith("torch"):
            lo, hi, sum_lo, sum_hi = _torch_ranges(t, (t.exp() if log else t).sum(-1))
            if ((hi <= 0) if log else (lo >= 0 and hi <= 1)) and sum_lo >= 1.0 - tol and sum_hi <= 1.0 + tol:
                return
        else:
            entries = value_range(t, xp)
            if entries is None:
                return
            if (entries[1] <= 0) if log else (entries[0] >= 0 and entries[1] <= 1):
                sums = value_range(xp.sum(xp.exp(t) if log else t, axis=-1), xp)
                if sums is None or (sums[0] >= 1.0 - tol and sums[1] <= 1.0 + tol):
                    return
    prob = xp.exp(t) if log else t
    entry_bad = (t > 0) if log else ((t < 0) | (t > 1))
    row_bad = xp.abs(xp.sum(prob, axis=-1) - 1.0) > tol
    if valid is not None:
        entry_bad = entry_bad & valid[..., None]
        row_bad = row_bad & valid
    entries, rows = _host_read(lambda: (bool(xp.any(entry_bad)), bool(xp.any(row_bad))))  or (False, False)
    if not (entries or rows):
        return
    looks_other = _host_read(lambda: bool(xp.all(t >= 0) if log else xp.all(t <= 0)))
    if flag and looks_other:
        hint = f" It looks like {'probabilities' if log else 'log-probabilities'}: pass {flag}={not log}."
    elif not log and looks_other:
        hint = " It looks like log-probabilities: pass exp(target)."
    else:
        hint = ""
    form = "log-probabilities" if log else "probabilities"
    if entries:
        pos = _first_position(entry_bad, xp)
        rule = "<= 0" if log else "in [0, 1]"
        raise ValueError(
            f"{loss}: `{arg}` must hold {form} ({rule}); found {float(t[pos])!r} at {arg}{list(pos)}.{hint} "
            "Pass validate=False to skip this check."
        )
    pos = _first_position(row_bad, xp)
    total = float(xp.sum(prob[pos + (...,)]))
    raise ValueError(
        f"{loss}: each row of `{arg}` must be a distribution along the class axis ({'exp ' if log else ''}summing to 1 "
        f"within {tol:.2g}); the row at {arg}{list(pos)} sums to {total!r}.{hint} Normalise it, or pass validate=False "
        "to skip this check."
    )


def check_classes(pred, axis: int, arg: str, loss: str) -> int:
    """The size of the class axis, which must not be empty."""
    k = int(pred.shape[axis])
    if k == 0:
        raise ValueError(f"{loss}: `{arg}` has no classes: axis {axis} of shape {_shape(pred)} has size 0.")
    return k


def normalize_axis(axis, ndim: int, loss: str) -> int:
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"{loss}: `axis` must be an int, got {axis!r}.")
    if ndim == 0:
        raise ValueError(f"{loss}: logits need a class axis, got a 0-d array.")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{loss}: `axis`={axis} is out of range for logits with {ndim} dimensions.")
    return axis % ndim


def check_options(given: dict, allowed: dict, loss: str) -> None:
    unknown = set(given) - set(allowed)
    if unknown:
        import difflib

        name = sorted(unknown)[0]
        close = difflib.get_close_matches(name, list(allowed) + ["weight", "mask", "reduction", "normalizer", "validate"], n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise TypeError(f"{loss}() got an unexpected keyword argument `{name}`.{hint}")
