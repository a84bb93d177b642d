"""Input checks and their messages. Every error names the loss and the argument at fault.

Checks on shapes and dtypes are free (metadata only). Checks that read values (class ids in
range, probabilities in [0, 1]) cost one reduction and a host read; they run when
``validate=True`` (the default) and are skipped under tracing (``jax.jit``, ``torch.compile``).
"""

from __future__ import annotations

from ._array import is_floating, is_tracing

REDUCTIONS = ("mean", "sum", "none")


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


def check_sample_array(x, sample_shape: tuple, arg: str, loss: str, xp, *, boolean: bool) -> None:
    """``weight`` / ``mask`` must be exactly the shape of the per-sample loss."""
    if x is None:
        return
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{loss}: `{arg}` must be an array of shape {sample_shape}, got {type(x).__name__}.")
    if _shape(x) != tuple(sample_shape):
        raise ValueError(
            f"{loss}: `{arg}` must have the shape of the per-sample loss {tuple(sample_shape)}, got {_shape(x)}."
            + (" For class-axis losses the per-sample shape omits the class axis." if len(_shape(x)) == len(sample_shape) + 1 else "")
        )
    if boolean and x.dtype != xp.bool:
        raise TypeError(f"{loss}: `{arg}` must be a boolean array, got dtype {x.dtype}.")
    if not boolean and not is_floating(x, xp):
        raise TypeError(f"{loss}: `{arg}` must be a floating-point array, got dtype {x.dtype}.")


def check_reduction(reduction, normalizer, loss: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{loss}: `reduction` must be one of {REDUCTIONS}, got {reduction!r}.")
    if normalizer is not None:
        if reduction != "mean":
            raise ValueError(f"{loss}: `normalizer` only applies to reduction='mean', got reduction={reduction!r}.")
        if isinstance(normalizer, (int, float)) and not isinstance(normalizer, bool) and not normalizer >= 0:
            raise ValueError(f"{loss}: `normalizer` must be >= 0, got {normalizer!r}.")


def check_number(value, arg: str, loss: str, *, low=None, high=None, low_open=False) -> float:
    """A scalar option; arrays of shape () are read once."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{loss}: `{arg}` must be a number, got {value!r}.") from None
    if low is not None and (v < low or (low_open and v == low)) or high is not None and v > high or v != v:
        lo = "(" if low_open else "["
        raise ValueError(f"{loss}: `{arg}` must be in {lo}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}], got {value!r}.")
    return v


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


def check_class_ids(ids, num_classes: int, ignore_index, loss: str, xp, valid=None) -> None:
    """Integer targets in [0, num_classes) where ``valid`` (ignored and masked ids are exempt)."""
    if is_tracing(ids) or ids.size == 0:
        return
    checked = ids if valid is None else xp.where(valid, ids, xp.zeros_like(ids))
    # two reductions and two host reads on the happy path; the position only on failure
    bounds = _host_read(lambda: (int(xp.min(checked)), int(xp.max(checked))))
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
    if is_tracing(x) or x.size == 0:
        return
    bad = (x < 0) | (x > 1)
    if valid is not None:
        bad = bad & valid
    if _any(bad, xp):
        pos = _first_position(bad, xp)
        raise ValueError(
            f"{loss}: `{arg}` must hold probabilities in [0, 1]; found {float(x[pos])!r} at {arg}{list(pos)}. "
            "Pass logits to the logits version of this loss, or validate=False to skip this check."
        )


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
