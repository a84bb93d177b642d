"""The fused kernels of ``losskit._accel`` (optional: Numba) compute what the reference
array-API path computes.

For every loss in ``_accel.KERNELS`` × every output (``value``, ``grad``, ``value_and_grad``,
``grad_hess``) × reduction × dtype (float32, float64) × library (NumPy, torch CPU), on an edge
grid (logits ±1e4 and ±inf, p of 0 and 1, NaN, huber exactly at |r| = δ, exp overflow and
underflow) inside a random sample, at the size threshold, the kernel's result equals the
reference path's (the same call under ``_accel.disabled()``):

* per element within a few units in the last place of the terms that the reference adds
  (float32: 8 ulp, float64: 1e-12 relative), the same NaN and infinities;
* reduced values (summed in float64 by the kernel, in the dtype by the reference) within the
  reference's own summation error.

Per-sample weights and masks run in the kernels too: every kernel × output × reduction ×
dtype × library × (weighted, masked, both) against the reference path, masked NaN included,
on both sides of the threshold. One element below the threshold, with options the kernels do
not cover, float16, non-contiguous inputs or a torch graph being recorded (a weight being
differentiated included), the reference path runs. The float64 ``exp`` and ``log1p`` of the
kernels are also checked against NumPy's on their own. Without Numba these tests skip, and
every call takes the reference path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import losskit as lk
from losskit import _accel, _loss

numba = pytest.importorskip("numba", reason="the accel extra (Numba) is not installed")

LIBS = ("numpy", "torch")
DTYPES = (np.float32, np.float64)
NEEDS = ("value", "grad", "value_and_grad", "grad_hess")
REDUCTIONS = ("none", "sum", "mean")
ULPS = {np.float32: 8 * np.finfo(np.float32).eps, np.float64: 1e-12}
# below the smallest normal number results agree in absolute terms (torch's float32 sigmoid flushes
# e^{-89} to 0 where the kernel keeps the subnormal)
TINY = {np.float32: np.finfo(np.float32).smallest_normal, np.float64: np.finfo(np.float64).smallest_normal}
SUM_RTOL = {np.float32: 4e-6, np.float64: 1e-12}  # of Σ|terms|: the reference's pairwise float32 sum


def _option_sets():
    """(loss, options) for every declared option set of every loss with a kernel, split into
    those the kernel covers and those that must take the reference path."""
    covered, not_covered = [], []
    for name, entry in _accel.KERNELS.items():
        spec = lk.registry[name].spec
        for raw in spec.checks.option_sets:
            o = {k: v for k, v in raw.items() if not k.startswith("_")}
            bound = {**spec.options, **o}
            arrays = any(isinstance(v, np.ndarray) or (k in spec.array_options and v is not None) for k, v in bound.items())
            (not_covered if arrays or entry.constants(bound, np.float32) is None else covered).append((name, o))
    return covered, not_covered


COVERED, NOT_COVERED = _option_sets()
ONE = COVERED[0]  # any covered loss, for the tests of the switch itself


def _threshold(lib):
    return 4 * _loss._BLOCK[lib]


def _edges(name, o):
    """The loss's declared edge points, with NaN in each input and the largest finite value of
    float32 and its exp overflow (log-link and logit losses: z = 89, 710, -104)."""
    spec = lk.registry[name].spec
    z, y = (np.asarray(a, dtype=np.float64).ravel() for a in spec.checks.edges(o))
    y_ok = y[np.isfinite(y)][:1] if np.isfinite(y).any() else np.zeros(1)
    extra_z = np.array([np.nan, 0.0, -0.0, 89.0, -104.0, 710.0, 1e30])
    z = np.concatenate([z, extra_z, z[:1]])
    y = np.concatenate([y, np.repeat(y_ok, extra_z.size), [np.nan]])
    return z, y


def _inputs(name, o, rng, n, dtype, finite):
    """n elements: the edge points (without NaN, inf and huge values when ``finite``), then the
    loss's own random sample."""
    spec = lk.registry[name].spec
    z, y = (np.asarray(a, dtype=np.float64).ravel() for a in spec.checks.sample(rng, (n,), o))
    ez, ey = _edges(name, o)
    if finite:
        keep = np.isfinite(ez) & np.isfinite(ey) & (np.abs(ez) < 80) & (np.abs(ey) < 1e20)
        ez, ey = ez[keep], ey[keep]
    z[: ez.size], y[: ey.size] = ez, ey
    return z.astype(dtype), y.astype(dtype)


def _lib(arrays, lib):
    if lib == "torch":
        torch = pytest.importorskip("torch")
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    return arrays


def _call(loss, need, z, y, **kw):
    out = loss(z, y, **kw) if need == "value" else getattr(loss, need)(z, y, **kw)
    return out if isinstance(out, tuple) else (out,)


def _np(a):
    return a.numpy() if hasattr(a, "numpy") else np.asarray(a)


def _scales(need, z, y, reference, c):
    """Per output, the magnitude of the terms the reference adds (float64; ``c`` the reduction's
    multiplier): where a result cancels (σ(z) − y, e^z − y·z), its error is a few ulp of these
    terms, not of the result. Values: |ℓ| + |y·z|; gradients: |g| + c|y|; Hessians: |h|."""
    z, y = z.astype(np.float64), y.astype(np.float64)
    mags = [np.abs(_np(r)).astype(np.float64) for r in reference]
    with np.errstate(all="ignore"):
        value = lambda m: m + np.abs(y * z)  # noqa: E731
        grad = lambda m: m + c * np.abs(y)  # noqa: E731
    if need == "value":
        return (value(mags[0]),)
    if need == "grad":
        return (grad(mags[0]),)
    if need == "value_and_grad":
        return (value(mags[0]), grad(mags[1]))
    return (grad(mags[0]), mags[1])


def _assert_elementwise(got, expected, scale, dtype, what):
    g, e = _np(got).astype(np.float64), _np(expected).astype(np.float64)
    assert g.shape == e.shape, what
    assert np.array_equal(np.isnan(g), np.isnan(e)), f"{what}: NaN at {np.flatnonzero(np.isnan(g) != np.isnan(e))[:5]}"
    inf = np.isinf(e)
    assert np.array_equal(g[inf], e[inf]), f"{what}: infinities differ"
    ok = ~np.isnan(e) & ~inf
    with np.errstate(all="ignore"):
        bound = ULPS[dtype] * np.where(np.isfinite(scale), scale, np.abs(e)) + TINY[dtype]
    bad = np.flatnonzero(ok & ~(np.abs(g - e) <= bound))
    assert bad.size == 0, f"{what}: {bad.size} elements differ, first at {bad[0]}: kernel {g[bad[0]]!r} reference {e[bad[0]]!r}"


@pytest.fixture(autouse=True)
def _quiet_reference():
    """The reference path meets inf − inf on the edge grid (NaN, as intended): no warnings."""
    with np.errstate(all="ignore"):
        yield


@pytest.fixture
def launches(monkeypatch):
    """Counts the kernel launches: calls of ``_launch``, and NumPy calls that ``run_numpy``
    answered without it (the small value-and-gradient call it runs itself)."""
    count = [0]
    launch = _accel._launch
    run_numpy = _accel.run_numpy

    def counting(*args, **kw):
        count[0] += 1
        return launch(*args, **kw)

    def counting_numpy(*args):
        before = count[0]
        out = run_numpy(*args)
        if out is not None and count[0] == before:
            count[0] += 1
        return out

    monkeypatch.setattr(_accel, "_launch", counting)
    monkeypatch.setattr(_accel, "run_numpy", counting_numpy)
    return count


def test_every_kernel_belongs_to_a_registered_elementwise_loss():
    for name in _accel.KERNELS:
        assert name in lk.registry and lk.registry[name].spec.kind == _loss.ELEMENTWISE
    assert {name for name, _ in COVERED} == set(_accel.KERNELS)  # each covers an option set


@pytest.fixture
def small_blocks(monkeypatch):
    """A threshold of 4 · 16384 elements on both libraries, so the matrix below runs on small
    inputs (still several chunks per thread and a ragged last chunk); the real thresholds are
    tested on their own."""
    monkeypatch.setattr(_loss, "_BLOCK", {"numpy": 1 << 14, "torch": 1 << 14})
    return 4 * (1 << 14) + 4321


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name, options", COVERED, ids=[f"{n}{o or ''}" for n, o in COVERED])
def test_kernel_equals_reference_path(name, options, lib, dtype, rng, launches, small_blocks):
    loss = lk.registry[name]
    n = small_blocks
    edge = _lib(_inputs(name, options, rng, n, dtype, finite=False), lib)
    finite = _lib(_inputs(name, options, rng, n, dtype, finite=True), lib)
    for need in NEEDS:
        for reduction in REDUCTIONS:
            for inputs in (edge, finite) if reduction != "none" else (edge,):
                z, y = inputs
                kw = dict(reduction=reduction, **options)
                before = launches[0]
                got = _call(loss, need, z, y, **kw)
                assert launches[0] == before + 1, f"{need} {reduction}: the kernel did not run"
                with _accel.disabled():
                    expected = _call(loss, need, z, y, **kw)
                assert launches[0] == before + 1
                c = 1.0 / n if reduction == "mean" else 1.0
                scales = _scales(need, _np(z), _np(y), expected, c)
                for i, (a, b) in enumerate(zip(got, expected)):
                    what = f"{name} {options} {lib} {np.dtype(dtype).name} {need}[{i}] {reduction}"
                    assert type(a) is type(b), what
                    assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape), what
                    if a.ndim == 0:  # a reduced value
                        if inputs is edge:  # NaN in the inputs
                            assert np.isnan(float(a)) == np.isnan(float(b)), what
                            continue
                        if not np.isfinite(float(b)):  # exp overflowing in some element
                            assert float(a) == float(b), f"{what}: {float(a)!r} vs {float(b)!r}"
                            continue
                        with _accel.disabled():
                            terms = np.abs(_np(loss(z, y, reduction="none", **options)).astype(np.float64))
                        tol = SUM_RTOL[dtype] * terms.sum() * c
                        assert abs(float(a) - float(b)) <= tol, f"{what}: {float(a)!r} vs {float(b)!r}"
                    else:
                        _assert_elementwise(a, b, scales[i], dtype, what)


def test_both_sides_of_the_threshold_numpy(rng, launches):
    """NumPy calls take the kernel at every size (a jitted call costs less than the reference's
    ufunc calls even at 100 elements): on both sides of the block threshold, and of the size
    where the chunks are split over threads, every output and reduction equals the reference
    path's (plain, weighted, masked)."""
    split = _accel._SPLIT_MIN_CHUNKS * _accel._CHUNK  # from this many chunks on: two threads
    for name, options in COVERED[:2] + COVERED[-1:]:
        sizes = (split - _accel._CHUNK, split) + ((_threshold("numpy") - 1, _threshold("numpy")) if (name, options) == ONE else ())
        for n in sizes:
            z, y = _inputs(name, options, rng, n, np.float32, finite=False)
            w, mask = _weights_and_mask(rng, n, np.float32, "numpy")
            for extra in ({}, {"weight": w, "mask": mask}):
                for need in NEEDS:
                    for reduction in REDUCTIONS:
                        _check_small_call(name, options, need, z, y, dict(extra, reduction=reduction), launches)


def test_both_sides_of_the_one_chunk_call(rng, launches):
    """``run_numpy`` runs a 1-D value-and-gradient call of one chunk itself and the others
    through ``_launch``: one chunk and one more element, 1-D and 2-D, every reduction, plain and
    weighted + masked, equal the reference path."""
    name, options = ONE
    for n in (_accel._CHUNK, _accel._CHUNK + 1):
        z, y = _inputs(name, options, rng, n, np.float32, finite=False)
        w, mask = _weights_and_mask(rng, n, np.float32, "numpy")
        for extra in ({}, {"weight": w, "mask": mask}):
            for reduction in REDUCTIONS:
                _check_small_call(name, options, "value_and_grad", z, y, dict(extra, reduction=reduction), launches)
        if n % 2 == 0:
            z2, y2 = z.reshape(2, -1), y.reshape(2, -1)
            _check_small_call(name, options, "value_and_grad", z2, y2, {"reduction": "mean"}, launches)


def _check_small_call(name, options, need, z, y, kw, launches):
    """``need`` of one NumPy call runs the kernel once and equals the reference path: per
    element within a few ulp of the terms, reduced values within the reference's own float32
    summation error."""
    loss = lk.registry[name]
    before = launches[0]
    got = _call(loss, need, z, y, **options, **kw)
    assert launches[0] == before + 1, f"{name} {need} {kw.get('reduction')} {z.shape}: the kernel did not run"
    with _accel.disabled():
        expected = _call(loss, need, z, y, **options, **kw)
        terms = np.abs(_np(loss(z, y, reduction="none", **options)).astype(np.float64))
    n = z.size
    w = kw.get("weight", np.ones(z.shape)).astype(np.float64)
    keep = kw.get("mask", np.ones(z.shape, bool))
    c = w / (w[keep].sum() if kw["reduction"] == "mean" else 1.0)
    scales = _scales(need, z.reshape(-1), y.reshape(-1), tuple(_np(e).reshape(-1) if e.ndim else e for e in expected), c.reshape(-1))
    dtype = z.dtype.type
    for i, (a, b) in enumerate(zip(got, expected)):
        what = f"{name} {options} n={n} {need}[{i}] {kw.get('reduction')} {sorted(kw)}"
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape, what
        if a.ndim:
            scale = scales[i] * (np.maximum(c.reshape(-1), 1.0) if need in ("value", "value_and_grad") and i == 0 else 1.0)
            _assert_elementwise(a.reshape(-1), b.reshape(-1), scale, dtype, what)
        elif not np.isfinite(float(b)):
            assert float(a) == float(b) or (np.isnan(float(a)) and np.isnan(float(b))), f"{what}: {float(a)!r} vs {float(b)!r}"
        else:
            tol = SUM_RTOL[dtype] * np.sum(np.where(keep, terms * c, 0.0)) + TINY[dtype]
            assert abs(float(a) - float(b)) <= tol, f"{what}: {float(a)!r} vs {float(b)!r}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, options", COVERED, ids=[f"{n}{o or ''}" for n, o in COVERED])
def test_small_numpy_calls_take_the_kernel(name, options, dtype, rng, launches):
    """Every kernel on small NumPy inputs (a few elements, 2-D, 100), every output and
    reduction, plain, weighted and masked, against the reference path."""
    for shape in ((3,), (4, 5), (100,)):
        size = int(np.prod(shape))
        z, y = _inputs(name, options, rng, max(size, 64), dtype, finite=False)  # the edge grid first
        z, y = z[:size].reshape(shape), y[:size].reshape(shape)
        w, mask = _weights_and_mask(rng, z.size, dtype, "numpy")
        w, mask = w.reshape(shape), mask.reshape(shape)
        mask.flat[0] = True
        for extra in ({}, {"weight": w}, {"mask": mask}):
            for need in NEEDS:
                for reduction in REDUCTIONS:
                    _check_small_call(name, options, need, z, y, dict(extra, reduction=reduction), launches)


def test_zero_d_and_empty_numpy_inputs_take_the_reference_path(launches):
    for z in (np.float32(0.5) * np.ones(()), np.ones(0, np.float32), np.ones((0, 3))):
        for need in NEEDS:
            _call(lk.mse, need, z, np.zeros_like(z), reduction="none")
    assert launches[0] == 0


def test_chunk_size_agrees():
    from losskit import _accel_numba

    assert _accel._CHUNK == _accel_numba.CHUNK


@pytest.mark.parametrize("lib", ["torch"])
def test_both_sides_of_the_threshold(lib, rng, launches):
    """torch: threshold − 1 elements: the reference path, every output and reduction;
    threshold elements: the kernel, equal to the reference path."""
    for name, options in COVERED[:2] + COVERED[-1:]:
        z, y = _lib(_inputs(name, options, rng, _threshold(lib) - 1, np.float32, finite=False), lib)
        for need in NEEDS:
            for reduction in REDUCTIONS:
                _call(lk.registry[name], need, z, y, reduction=reduction, **options)
        assert launches[0] == 0
    for name, options in COVERED[:2] + COVERED[-1:]:
        z, y = _lib(_inputs(name, options, rng, _threshold(lib), np.float32, finite=False), lib)
        got = _call(lk.registry[name], "grad_hess", z, y, reduction="none", **options)
        with _accel.disabled():
            expected = _call(lk.registry[name], "grad_hess", z, y, reduction="none", **options)
        for i, (a, b) in enumerate(zip(got, expected)):
            _assert_elementwise(a, b, _scales("grad_hess", _np(z), _np(y), expected, 1.0)[i], np.float32, f"{name} {lib} [{i}]")
    assert launches[0] == 3


def _weights_and_mask(rng, n, dtype, lib):
    """Weights in [0, 2] with a few exact zeros, and a mask that drops every NaN of the edge
    grid's second half (NaN kept in the first: a masked NaN must give 0, an unmasked one NaN)."""
    w = rng.uniform(0.0, 2.0, n)
    w[rng.random(n) < 0.01] = 0.0
    mask = rng.random(n) < 0.8
    return _lib((w.astype(dtype), mask), lib)


# the kernels are the same for both libraries (torch tensors reach them as NumPy views): float64
# on NumPy only keeps the compile and run time of this matrix down
LIB_DTYPES = (("numpy", np.float32), ("numpy", np.float64), ("torch", np.float32))


@pytest.mark.parametrize("lib, dtype", LIB_DTYPES, ids=[f"{lib}-{np.dtype(d).name}" for lib, d in LIB_DTYPES])
@pytest.mark.parametrize("name, options", COVERED, ids=[f"{n}{o or ''}" for n, o in COVERED])
def test_weighted_and_masked_kernels_equal_reference_path(name, options, lib, dtype, rng, launches, monkeypatch):
    """The boosting call with per-sample weights (and masks): every output and reduction, on
    the edge grid (NaN, ±inf, overflow) inside a random sample, each of weight, mask, both."""
    monkeypatch.setattr(_loss, "_BLOCK", {"numpy": 1 << 12, "torch": 1 << 12})
    n = 4 * (1 << 12) + 4321  # two chunks of the kernels (one per thread), the last one ragged
    loss = lk.registry[name]
    z, y = _lib(_inputs(name, options, rng, n, dtype, finite=False), lib)
    w, mask = _weights_and_mask(rng, n, dtype, lib)
    wn, mn = _np(w).astype(np.float64), _np(mask)
    for extra in ({"weight": w}, {"mask": mask}, {"weight": w, "mask": mask}):
        weights = wn if "weight" in extra else np.ones(n)
        keep = mn if "mask" in extra else np.ones(n, bool)
        for need in NEEDS:
            for reduction in REDUCTIONS:
                kw = dict(reduction=reduction, **options, **extra)
                before = launches[0]
                got = _call(loss, need, z, y, **kw)
                assert launches[0] == before + 1, f"{need} {reduction} {list(extra)}: the kernel did not run"
                with _accel.disabled():
                    expected = _call(loss, need, z, y, **kw)
                # the reduction's multiplier, per sample: w, over Σ_valid w for "mean"
                c = weights / (weights[keep].sum() if reduction == "mean" else 1.0)
                scales = _scales(need, _np(z), _np(y), expected, c)
                if need in ("value", "value_and_grad"):  # the reference multiplies ℓ, y·z included, by c
                    scales = (scales[0] * np.maximum(c, 1.0),) + scales[1:]
                for i, (a, b) in enumerate(zip(got, expected)):
                    what = f"{name} {options} {lib} {np.dtype(dtype).name} {list(extra)} {need}[{i}] {reduction}"
                    assert type(a) is type(b) and a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape), what
                    if a.ndim:
                        _assert_elementwise(a, b, scales[i], dtype, what)
                        assert np.all(_np(a)[~keep] == 0), f"{what}: masked samples not 0"
                        continue
                    if np.isnan(float(b)) or not np.isfinite(float(b)):
                        assert float(a) == float(b) or (np.isnan(float(a)) and np.isnan(float(b))), f"{what}: {float(a)!r} vs {float(b)!r}"
                        continue
                    with _accel.disabled():
                        terms = np.abs(_np(loss(z, y, reduction="none", **options)).astype(np.float64))
                    tol = SUM_RTOL[dtype] * np.sum(np.where(keep, terms * c, 0.0)) + TINY[dtype]
                    assert abs(float(a) - float(b)) <= tol, f"{what}: {float(a)!r} vs {float(b)!r}"


@pytest.mark.parametrize("lib", LIBS)
def test_weighted_kernels_on_both_sides_of_the_threshold(lib, rng, launches):
    """threshold − 1 elements with weight and mask: the reference path on torch, the kernel
    on NumPy (every size); threshold elements: the kernel, equal to it."""
    name, options = ONE
    loss = lk.registry[name]
    for n, kernel in ((_threshold(lib) - 1, lib == "numpy"), (_threshold(lib), True)):
        z, y = _lib(_inputs(name, options, rng, n, np.float32, finite=True), lib)
        w, mask = _weights_and_mask(rng, n, np.float32, lib)
        before = launches[0]
        got = loss.grad_hess(z, y, weight=w, mask=mask, reduction="none", **options)
        assert launches[0] == before + kernel
        expected = _reference(loss.grad_hess, z, y, weight=w, mask=mask, reduction="none", **options)
        for i, (a, b) in enumerate(zip(got, expected)):
            _assert_elementwise(a, b, _scales("grad_hess", _np(z), _np(y), expected, _np(w))[i], np.float32, f"{name} {lib} [{i}]")


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_a_weight_being_differentiated(reduction, rng):
    """torch autograd through the weight (the kernel may serve the unrecorded forward):
    d/dw Σ w·ℓ = ℓ, and the "mean" gradient equals the reference path's."""
    torch = pytest.importorskip("torch")
    name, options = ONE
    n = _threshold("torch")
    z, y = _lib(_inputs(name, options, rng, n, np.float32, finite=True), "torch")
    grads = []
    for accel in (True, False):
        w = torch.from_numpy(rng.uniform(0.5, 2.0, n).astype(np.float32)) if not grads else grads[0][0].detach()
        w = w.clone().requires_grad_(True)
        if accel:
            lk.registry[name](z, y, weight=w, reduction=reduction, **options).backward()
        else:
            _reference(lambda: lk.registry[name](z, y, weight=w, reduction=reduction, **options).backward())
        grads.append((w, w.grad))
    np.testing.assert_allclose(grads[0][1].numpy(), grads[1][1].numpy(), rtol=1e-6, atol=1e-12)
    if reduction == "sum":
        per_sample = _reference(lk.registry[name], z, y, reduction="none", **options)
        np.testing.assert_allclose(grads[0][1].numpy(), per_sample.numpy(), rtol=1e-6)


@pytest.mark.parametrize("lib", LIBS)
def test_uncovered_options_fall_back(lib, rng, launches, small_blocks):
    n = small_blocks
    for name, options in NOT_COVERED:
        if any(isinstance(v, np.ndarray) for v in options.values()):
            continue  # one value per column of a 2-D input: the aux check is the same as a number's
        z, y = _lib(_inputs(name, options, rng, n, np.float32, finite=True), lib)
        for need in NEEDS:
            _call(lk.registry[name], need, z, y, reduction="none", **options)
    assert launches[0] == 0


def _reference(fn, *args, **kw):
    with _accel.disabled():
        return fn(*args, **kw)


def _equal(got, expected, ulps=0):
    """Equal, or within ``ulps`` float32 ulps of the terms (|result| + 1) where one side may
    have taken the reference path."""
    for a, b in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
        a, b = _np(a), _np(b)
        if ulps:
            np.testing.assert_allclose(a, b, rtol=ulps * 2**-23, atol=ulps * 2**-23)
        else:
            np.testing.assert_array_equal(a, b)


def test_other_layouts_and_dtypes_fall_back(rng, launches):
    name, o = ONE
    loss = lk.registry[name]
    n = _threshold("numpy")
    z, y = _inputs(name, o, rng, 2 * n, np.float32, finite=True)
    loss.grad_hess(z[::2], y[::2], reduction="none", **o)  # not contiguous
    loss.grad_hess(z[:n].astype(np.float16), y[:n].astype(np.float16), reduction="none", **o)
    loss.grad_hess(z[:n], y[:n].astype(np.float64), reduction="none", **o)  # target cast to pred's dtype: a kernel
    assert launches[0] == 1
    torch = pytest.importorskip("torch")
    n = _threshold("torch")
    z, y = _inputs(name, o, rng, n, np.float32, finite=True)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    leaf = zt.clone().requires_grad_(True)
    value = loss(leaf, yt, **o)  # inside the autograd.Function's forward (not recorded): a kernel
    value.backward()  # the closed-form backward with a 0-d cotangent: a kernel too
    assert value.requires_grad and launches[0] == 3
    np.testing.assert_allclose(leaf.grad.numpy(), _reference(loss.grad, zt, yt, **o).numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(float(value.detach()), float(_reference(loss, zt, yt, **o)), rtol=1e-6)
    # torch.func unwraps its tensors at the autograd.Function, whose forward may use a kernel
    grad_fn = torch.func.grad(lambda a: loss(a, yt, reduction="sum", **o))(zt)
    _equal(grad_fn, loss.grad(zt, yt, reduction="sum", **o), ulps=8)  # its backward: the reference path
    launches[0] = 1
    with torch.no_grad():
        value, grad = loss.value_and_grad(leaf, yt, reduction="none", **o)  # not recorded: the kernel
    assert launches[0] == 2 and not value.requires_grad
    _equal(grad, loss.grad(zt, yt, reduction="none", **o))


def test_switch_off_in_process_and_by_environment(rng, launches):
    name, o = ONE
    z, y = _inputs(name, o, rng, _threshold("numpy"), np.float32, finite=True)
    with _accel.disabled():
        assert not _accel.enabled()
        lk.registry[name].grad_hess(z, y, reduction="none", **o)
    assert _accel.enabled() and launches[0] == 0
    code = "import losskit._accel as a; print(a.enabled(), a.available())"
    for value, expected in (("0", "False"), ("off", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, _accel.ENV_VAR: value}, capture_output=True, text=True, check=True)
        assert out.stdout.split() == [expected, "True"]


def test_without_numba_every_call_takes_the_reference_path(rng, monkeypatch, launches):
    name, o = ONE
    z, y = _inputs(name, o, rng, _threshold("numpy"), np.float32, finite=True)
    expected = _reference(lk.registry[name].grad_hess, z, y, reduction="none", **o)
    monkeypatch.setitem(_accel._state, "numba", None)
    assert not _accel.available()
    got = lk.registry[name].grad_hess(z, y, reduction="none", **o)
    assert launches[0] == 0
    _equal(got, expected)


@pytest.mark.parametrize("name, options", COVERED[:1] + COVERED[-1:], ids=lambda v: str(v))
def test_sums_do_not_depend_on_the_thread_count(name, options, rng, monkeypatch):
    z, y = _inputs(name, options, rng, (_accel._SPLIT_MIN_CHUNKS + 1) * _accel._CHUNK + 17, np.float32, finite=True)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(_accel, "_threads", lambda: threads)
        results.append(float(lk.registry[name](z, y, reduction="sum", **options)))
    assert results[0] == results[1] == results[2]


def test_concurrent_calls_from_threads(rng):
    name, o = COVERED[-1]
    loss = lk.registry[name]
    z, y = _inputs(name, o, rng, _threshold("numpy"), np.float64, finite=True)
    expected = loss.grad_hess(z, y, reduction="none", **o)
    results = [None] * 4

    def work(i):
        results[i] = loss.grad_hess(z, y, reduction="none", **o)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        _equal(got, expected)


@pytest.mark.parametrize("name, options", COVERED, ids=lambda v: str(v))
def test_inputs_are_not_mutated(name, options, rng):
    for lib in LIBS:
        z, y = _inputs(name, options, rng, _threshold(lib), np.float32, finite=False)
        zc, yc = z.copy(), y.copy()
        zl, yl = _lib((z, y), lib)
        lk.registry[name].value_and_grad(zl, yl, reduction="none", **options)
        lk.registry[name].grad_hess(zl, yl, reduction="mean", **options)
        np.testing.assert_array_equal(_np(zl), zc)
        np.testing.assert_array_equal(_np(yl), yc)


def test_exp_and_log1p_against_numpy():
    """The kernels' exp and log1p (t in [0, 1]): float64 within 2 ulp of NumPy's, float32
    within 3 ulp of the float64 value; the same infinities, NaN and gradual underflow."""
    from losskit import _accel_numba as kernels

    @numba.njit(error_model="numpy")
    def apply(x, t, x32, t32, e, l, e32, l32):
        for i in range(x.shape[0]):
            e[i] = kernels.exp64(x[i])
        for i in range(t.shape[0]):
            l[i] = kernels.log1p_unit(t[i])
        for i in range(x32.shape[0]):
            e32[i] = kernels.exp32(x32[i])
        for i in range(t32.shape[0]):
            l32[i] = kernels.log1p_unit32(t32[i])

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-750, 712, 200_000), rng.uniform(-1, 1, 50_000), [0.0, -0.0, 709.78, 709.79, -745.1, -745.2, -708.4, np.inf, -np.inf, np.nan, 1e-300]])
    t = np.concatenate([rng.random(200_000), 10.0 ** rng.uniform(-320, 0, 50_000), [0.0, 1.0, np.sqrt(2) - 1, np.nan, 5e-324]])
    x32 = np.concatenate([rng.uniform(-110, 90, 200_000), rng.uniform(-1, 1, 50_000), [0.0, 88.72, 88.73, -103.9, -87.3, np.inf, -np.inf, np.nan]]).astype(np.float32)
    t32 = np.concatenate([rng.random(200_000), 10.0 ** rng.uniform(-45, 0, 50_000), [0.0, 1.0, np.sqrt(2) - 1, np.nan]]).astype(np.float32)
    e, l, e32, l32 = (np.empty_like(a) for a in (x, t, x32, t32))
    apply(x, t, x32, t32, e, l, e32, l32)
    with np.errstate(all="ignore"):
        cases = (
            (e, np.exp(x), 2.5e-16, np.float64),
            (l, np.log1p(t), 4.5e-16, np.float64),
            (e32, np.exp(x32.astype(np.float64)), 3 * 2**-23, np.float32),
            (l32, np.log1p(t32.astype(np.float64)), 3 * 2**-23, np.float32),
        )
    for got, ref, rtol, dtype in cases:
        got = got.astype(np.float64)
        rounded = ref.astype(dtype).astype(np.float64)  # the dtype's infinities and zeros
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        special = ~np.isfinite(rounded)
        np.testing.assert_array_equal(got[special], rounded[special])
        normal = np.isfinite(rounded) & (np.abs(rounded) >= np.finfo(dtype).smallest_normal)
        np.testing.assert_allclose(got[normal], ref[normal], rtol=rtol, atol=0)
        sub = np.isfinite(rounded) & ~normal  # subnormal results: a few of their (absolute) ulps
        assert np.all(np.abs(got[sub] - ref[sub]) <= 4 * np.finfo(dtype).smallest_subnormal)


# --- the one acceptance rule of the multiplier and the mask (_accept_multiplier_and_mask) ----


def _unaligned(shape, dtype):
    """An array of ``shape`` and ``dtype`` whose data starts one byte off its alignment."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    a = np.frombuffer(bytearray(size * dtype.itemsize + 1), dtype=dtype, count=size, offset=1).reshape(shape)
    assert not a.flags.aligned
    return a


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (4, 3), (2, 3, 2)], ids=["1d", "2d", "3d"])
def test_accept_multiplier_and_mask_decisions(shape, dtype):
    """Every form of ``c`` and ``valid`` the kernels take, and every form they leave to the
    reference path, for an elementwise shape and (the same call) a row kernel's sample shape."""
    import torch

    accept = _accel._accept_multiplier_and_mask
    dtype = np.dtype(dtype)
    other = np.dtype(np.float64 if dtype == np.float32 else np.float32)
    weights = np.arange(1, np.prod(shape) + 1, dtype=dtype).reshape(shape)
    mask = (np.arange(np.prod(shape)) % 3 != 0).reshape(shape)

    numbers = {
        "float": 0.25,
        "0-d array": np.array(0.25, dtype),
        "0-d array of the other dtype": np.array(0.25, other),
        "NumPy scalar": dtype.type(0.25),
        "0-d torch tensor": torch.tensor(0.25),
    }
    for name, c in numbers.items():
        got = accept(c, None, shape, dtype)
        assert got is not None, name
        scalar_c, w, m = got
        assert type(scalar_c) is float and scalar_c == 0.25, name
        assert w.shape == (0,) and w.dtype == dtype and m.shape == (0,) and m.dtype == np.bool_, name

    scalar_c, w, m = accept(weights, mask, shape, dtype)
    assert scalar_c is None and w.ndim == 1 and m.ndim == 1
    np.testing.assert_array_equal(w, weights.reshape(-1))
    np.testing.assert_array_equal(m, mask.reshape(-1))
    assert np.shares_memory(w, weights) and np.shares_memory(m, mask)  # views, no copies

    rows = shape + (5,)  # the row kernels' check: c and valid of the sample shape, not pred's
    assert accept(np.ones(rows, dtype), None, shape, dtype) is None
    assert accept(1.0, np.ones(rows, np.bool_), shape, dtype) is None

    declined_c = {
        "int": 1,
        "0-d tensor being differentiated": torch.tensor(0.25, requires_grad=True),
        "other dtype": weights.astype(other),
        "float16": weights.astype(np.float16),
        "wrong shape": np.ones(shape[:-1] + (shape[-1] + 1,), dtype),
        "flat of a multi-dim shape" if len(shape) > 1 else "2-d of a 1-d shape": weights.reshape(-1) if len(shape) > 1 else weights.reshape(1, -1),
        "empty": np.empty(0, dtype),
        "strided": np.ones(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2],
        "unaligned": _unaligned(shape, dtype),
        "a list": weights.tolist(),
        "a tensor": torch.from_numpy(weights),
        "an ndarray subclass": np.ma.masked_array(weights),
    }
    if len(shape) > 1:
        declined_c["Fortran order"] = np.asfortranarray(weights)
    for name, c in declined_c.items():
        assert accept(c, None, shape, dtype) is None, name
        assert accept(c, mask, shape, dtype) is None, name

    declined_valid = {
        "int8": mask.astype(np.int8),
        "float": mask.astype(dtype),
        "wrong shape": np.ones(shape[:-1] + (shape[-1] + 1,), np.bool_),
        "empty": np.empty(0, np.bool_),
        "strided": np.ones(shape[:-1] + (2 * shape[-1],), np.bool_)[..., ::2],
        "a list": mask.tolist(),
        "a tensor": torch.from_numpy(mask),
        "a Python bool": True,
    }
    if len(shape) > 1:
        declined_valid["Fortran order"] = np.asfortranarray(mask)
    for name, v in declined_valid.items():
        assert accept(0.5, v, shape, dtype) is None, name
        assert accept(weights, v, shape, dtype) is None, name


def test_every_kernel_route_asks_accept_multiplier_and_mask(monkeypatch):
    """``run_numpy`` (elementwise: pred's shape), ``_run_rows`` (the sample shape) and ``run``
    (large torch inputs: pred's shape) take their multiplier and mask through the one helper,
    and decline where it declines."""
    import torch

    asked = []
    real = _accel._accept_multiplier_and_mask

    def spy(c, valid, shape, dtype):
        asked.append(tuple(shape))
        return real(c, valid, shape, dtype)

    monkeypatch.setattr(_accel, "_accept_multiplier_and_mask", spy)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((6, 4)).astype(np.float32)
    y = (rng.random((6, 4)) < 0.5).astype(np.float32)
    ids = rng.integers(0, 4, 6)
    n = 4 * _loss._BLOCK["torch"]
    zt, yt = torch.randn(n), torch.rand(n)
    calls = {
        (6, 4): lambda **kw: lk.binary_cross_entropy.value_and_grad(z, y, **kw),
        (6,): lambda **kw: lk.cross_entropy.value_and_grad(z, ids, **kw),
        (n,): lambda **kw: lk.binary_cross_entropy(zt, yt, **kw),
    }
    weights = {(6, 4): rng.random((6, 4)).astype(np.float32), (6,): rng.random(6).astype(np.float32), (n,): torch.rand(n)}
    for shape, f in calls.items():
        for kw in ({}, {"weight": weights[shape]}):
            asked.clear()
            with torch.no_grad():
                f(**kw)
            assert asked == [shape], (shape, kw)
    monkeypatch.setattr(_accel, "_accept_multiplier_and_mask", lambda *a: None)
    results = []
    for route in ("run_numpy", "run"):
        inner = getattr(_accel, route)
        monkeypatch.setattr(_accel, route, lambda *a, _inner=inner: results.append(_inner(*a)) or results[-1])
    for shape, f in calls.items():
        results.clear()
        with torch.no_grad():
            got = f()
            with _accel.disabled():
                ref = f()
        assert results and all(r is None for r in results), shape  # every route declined
        for g, r in zip(got if isinstance(got, tuple) else (got,), ref if isinstance(ref, tuple) else (ref,)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(r))  # the reference path's result
