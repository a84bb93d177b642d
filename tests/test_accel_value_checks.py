"""The value checks of large targets run as one Numba pass (``_accel.nonnegative_range``).

On NumPy arrays and large torch CPU tensors (from ``_accel.RANGE_MIN`` elements) the happy path
of ``check_probabilities`` (BCE's targets in [0, 1]) and ``check_domain`` (Poisson's counts
>= 0) reads the targets' range with the accelerator instead of the backend's min/max. Checked
here against NumPy's own min/max of the selected elements, on both sides of the threshold, for
both libraries, dtypes, with and without a mask; and that an invalid target raises the same
error, naming the same value and position, on every path (accelerated or not, below or above
the threshold, masked or not). Without Numba these tests skip.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest

import losskit as lk
from losskit import _accel, _accel_numba

pytest.importorskip("numba", reason="the accel extra (Numba) is not installed")

LIBS = ("numpy", "torch")
DTYPES = (np.float32, np.float64)
SIZES = (_accel.RANGE_MIN - 1, _accel.RANGE_MIN + 1234)  # both sides; several chunks, a ragged last


def _lib(a, lib):
    if lib == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(np.ascontiguousarray(a))
    return a


@pytest.fixture
def passes(monkeypatch):
    """Counts the Numba range passes (one thread, or chunks split over threads)."""
    count = [0]
    # jitted callers of the patched passes resolve them when they compile: compile them first
    # (on a cold cache the first compile would otherwise meet the counting wrapper)
    # (the shared empty mask is read-only: a type of its own)
    for dtype in DTYPES:
        for mask in (_accel._EMPTY["?"], np.empty(0, np.bool_), np.ones(1, np.bool_)):
            _accel_numba.float_range_serial(np.ones(1, dtype), mask)
    for name in ("bits_range", "bits_range_serial"):
        inner = getattr(_accel_numba, name)

        def counting(*args, inner=inner):
            count[0] += 1
            return inner(*args)

        monkeypatch.setattr(_accel_numba, name, counting)
    return count


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("lib", LIBS)
def test_nonnegative_range_against_numpy(lib, dtype, rng, passes):
    below, above = SIZES
    x = rng.random(below).astype(dtype)
    small = _accel.nonnegative_range(_lib(x, lib))
    if lib == "torch":  # below the threshold: torch's own min/max
        assert small is None and passes[0] == 0
    else:  # NumPy: every size, on one thread up to a few chunks
        assert small == (float(x.min()), float(x.max())) and passes[0] >= 1
        for n in (1, 2, 17, 3 * _accel_numba.CHUNK + 5):
            assert _accel.nonnegative_range(x[:n]) == (float(x[:n].min()), float(x[:n].max()))
            mask = rng.random(n) < 0.5
            expected = (float(x[:n][mask].min()), float(x[:n][mask].max())) if mask.any() else None
            assert _accel.nonnegative_range(x[:n], mask) == expected
    x = (rng.random(above) * 3).astype(dtype)
    x[5], x[-1] = 0.0, np.inf
    assert _accel.nonnegative_range(_lib(x, lib)) == (0.0, np.inf)
    x[-1] = 2.5
    assert _accel.nonnegative_range(_lib(x, lib)) == (0.0, float(x.max()))
    mask = rng.random(above) < 0.3
    x[~mask] = -7.0  # bad values where masked out do not count
    x[np.flatnonzero(~mask)[0]] = np.nan
    assert _accel.nonnegative_range(_lib(x, lib), _lib(mask, lib)) == (float(x[mask].min()), float(x[mask].max()))
    assert _accel.nonnegative_range(_lib(x, lib), _lib(np.zeros(above, bool), lib)) is None  # nothing valid
    for bad in (-0.0, -1e-30, np.nan, -np.nan, -np.inf):  # a sign bit or a NaN: the caller's exact check
        y = np.abs(x)
        y[1000] = bad
        assert _accel.nonnegative_range(_lib(y, lib)) is None, bad
        assert _accel.nonnegative_range(_lib(y, lib), _lib(mask | (np.arange(above) == 1000), lib)) is None, bad
    assert passes[0] > 0


def test_nonnegative_range_leaves_other_inputs_alone(rng, passes):
    n = SIZES[1]
    x = rng.random(n)
    assert _accel.nonnegative_range(lk_torch().from_numpy(x[: n // 4])) is None  # small torch
    assert _accel.nonnegative_range(np.tile(x, (2, 1))[:, ::2]) is None  # not contiguous
    assert _accel.nonnegative_range(x[:0]) is None
    assert _accel.nonnegative_range(x.astype(np.float16)) is None
    assert _accel.nonnegative_range(np.arange(n)) is None  # integers: the backend's own min/max
    with _accel.disabled():
        assert _accel.nonnegative_range(x) is None
    assert passes[0] == 0
    assert _accel.nonnegative_range(x) == (float(x.min()), float(x.max())) and passes[0] > 0


def lk_torch():
    return pytest.importorskip("torch")


CASES = (  # (loss, a bad target value, the message's hint)
    (lk.binary_cross_entropy, 1.5, r"must hold probabilities in \[0, 1\]; found 1\.5 at target\[{pos}\]"),
    (lk.binary_cross_entropy, -1.0, r"found -1\.0 at target\[{pos}\]\. Labels in \{{-1, \+1\}}"),
    (lk.binary_cross_entropy, 255.0, r"found 255\.0 at target\[{pos}\]\. A 0/255"),
    (lk.poisson_nll, -2.0, r"must be >= 0; found -2\.0 at target\[{pos}\]"),
)


def _targets(loss, rng, n, dtype):
    y = rng.random(n) if loss is lk.binary_cross_entropy else rng.poisson(2.5, n).astype(np.float64)
    return rng.standard_normal(n).astype(dtype), y.astype(dtype)


def _error(fn):
    with pytest.raises(ValueError) as info:
        fn()
    return str(info.value)


@pytest.mark.parametrize("n", SIZES, ids=("below", "above"))
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("loss, bad, message", CASES, ids=[f"{c[0].__name__}{c[1]}" for c in CASES])
def test_invalid_targets_raise_the_same_error_on_every_path(loss, bad, message, lib, n, rng):
    z, y = _targets(loss, rng, n, np.float32)
    pos = n - 3  # in the ragged last chunk
    y[pos] = bad
    mask = np.ones(n, bool)
    mask[pos + 1] = False
    pattern = message.format(pos=pos)
    for kw in ({}, {"mask": _lib(mask, lib)}):
        for need in ("value", "grad_hess"):
            call = (lambda: loss(_lib(z, lib), _lib(y, lib), **kw)) if need == "value" else (
                lambda: getattr(loss, need)(_lib(z, lib), _lib(y, lib), reduction="none", **kw))
            got = _error(call)
            with _accel.disabled():
                assert _error(call) == got
            assert re.search(pattern, got), got
    # the same bad value where masked out, and NaN anywhere: no error on either path
    mask[pos] = False
    y_nan = y.copy()
    y_nan[pos], y_nan[pos + 1] = 0.5, np.nan
    for switch in (contextlib.nullcontext, _accel.disabled):
        with switch():
            loss.grad_hess(_lib(z, lib), _lib(y, lib), reduction="none", mask=_lib(mask, lib))
            value, _ = loss.value_and_grad(_lib(z, lib), _lib(y_nan, lib), reduction="none")
            assert np.isnan(np.asarray(value)[pos + 1]) and not np.isnan(np.asarray(value)[pos])


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("n", (100, SIZES[1]), ids=("small", "large"))
def test_weights_are_read_not_copied_nor_written(lib, n, rng):
    """Weights of pred's dtype reach the kernels as they are (no copy per call) and are never
    written: each output is its own array, equal to the reference path's, and the weights are
    unchanged."""
    z, y = _targets(lk.binary_cross_entropy, rng, n, np.float32)
    w = rng.uniform(0.0, 2.0, n).astype(np.float32)
    kept = w.copy()
    zt, yt, wt = (_lib(a, lib) for a in (z, y, w))
    for reduction in ("none", "sum", "mean"):
        for switch in (contextlib.nullcontext, _accel.disabled):
            with switch():
                g, h = lk.binary_cross_entropy.grad_hess(zt, yt, weight=wt, reduction=reduction)
                value, g2 = lk.binary_cross_entropy.value_and_grad(zt, yt, weight=wt, reduction=reduction)
            outs = [g, h, g2] + ([value] if reduction == "none" else [])
            assert all(np.asarray(o).ctypes.data != np.asarray(wt).ctypes.data for o in outs)
            np.testing.assert_array_equal(np.asarray(wt), kept)
        with _accel.disabled():
            expected = lk.binary_cross_entropy.grad_hess(zt, yt, weight=wt, reduction=reduction)
        np.testing.assert_allclose(np.asarray(g), np.asarray(expected[0]), rtol=1e-5, atol=1e-12)
