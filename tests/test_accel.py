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

One element below the threshold, with weights, masks, options the kernels do not cover,
float16, non-contiguous inputs or a torch graph being recorded, the reference path runs. The
float64 ``exp`` and ``log1p`` of the kernels are also checked against NumPy's on their own.
Without Numba these tests skip, and every call takes the reference path.
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
# (loss, options) the kernels cover, and the option values that must fall back
COVERED = [
    ("binary_cross_entropy", {}),
    ("mse", {}),
    ("huber", {}),
    ("huber", {"delta": 0.1}),  # not a binary fraction: the cast of δ must match the reference's
    ("huber", {"delta": 2.5}),
    ("poisson_nll", {}),
]
NOT_COVERED = [
    ("binary_cross_entropy", {"pos_weight": 3.0}),
    ("binary_cross_entropy", {"label_smoothing": 0.1}),
    ("poisson_nll", {"full": True}),
]
ULPS = {np.float32: 8 * np.finfo(np.float32).eps, np.float64: 1e-12}
TINY = {np.float32: 8 * np.finfo(np.float32).smallest_subnormal, np.float64: 8 * np.finfo(np.float64).smallest_subnormal}
SUM_RTOL = {np.float32: 4e-6, np.float64: 1e-12}  # of Σ|terms|: the reference's pairwise float32 sum


def _threshold(lib):
    return 4 * _loss._BLOCK[lib]


def _edges(name, o, dtype):
    """Every pair of the loss's edge values (NaN included), as float64 arrays."""
    nan, inf = np.nan, np.inf
    if name == "binary_cross_entropy":
        z = [1e4, -1e4, inf, -inf, 0.0, -0.0, 30.0, -30.0, 88.0, -104.0, 1e-30, nan]
        y = [0.0, 1.0, 0.5, 0.25, nan]
    elif name == "poisson_nll":
        z = [80.0, -80.0, 0.0, 30.0, -30.0, 88.7, 89.0, 700.0, 710.0, -745.0, -103.0, -inf, inf, nan]
        y = [0.0, 3.0, 1e3, 2.5, nan]
    else:
        d = float(dtype(o.get("delta", 1.0)))
        # r exactly ±δ (z = ±δ, y = 0) and its neighbours in the dtype, large and non-finite
        z = [d, -d, float(np.nextafter(dtype(d), dtype(0))), float(np.nextafter(dtype(d), dtype(9))), 0.0, 1e4, -1e4, 1e30, inf, -inf, nan]
        y = [0.0, 1e-3, -2.0, 1e4, inf, nan]
    zz, yy = np.meshgrid(np.array(z), np.array(y), indexing="ij")
    return zz.ravel(), yy.ravel()


def _random(name, rng, n):
    if name == "binary_cross_entropy":
        return rng.standard_normal(n) * 4, np.where(rng.random(n) < 0.3, rng.random(n), (rng.random(n) < 0.5) * 1.0)
    if name == "poisson_nll":
        return rng.standard_normal(n) * 2, rng.poisson(2.5, n) * 1.0
    return rng.standard_normal(n) * 2, rng.standard_normal(n) * 2


def _inputs(name, o, rng, n, dtype, finite):
    """n elements: the edge grid (without NaN and inf when ``finite``) then a random sample."""
    z, y = _random(name, rng, n)
    ez, ey = _edges(name, o, dtype)
    if finite:
        keep = np.isfinite(ez) & np.isfinite(ey) & (np.abs(ez) < 1e20) & (np.abs(ey) < 1e20)
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


def _scales(name, need, z, y, reference, c):
    """Per output, the magnitude of the terms the reference adds (float64; ``c`` the reduction's
    multiplier): where the result cancels (σ(z) − y, e^z − y·z), its error is a few ulp of
    these terms, not of the result."""
    z, y = z.astype(np.float64), y.astype(np.float64)
    with np.errstate(all="ignore"):
        if name == "binary_cross_entropy":
            grad = c * (1 / (1 + np.exp(-np.clip(z, -700, 700))) + np.abs(y))
        elif name == "poisson_nll":
            grad = c * (np.exp(np.clip(z, -800, 800)) + np.abs(y))
        else:
            grad = np.abs(_np(reference[-1])).astype(np.float64) if need != "value" else None
        value = np.abs(_np(reference[0])).astype(np.float64)
        if name == "binary_cross_entropy":  # softplus(−|z|) + max(z, 0) − y·z
            value = value + np.abs(y * z)
        if name == "poisson_nll":
            value = value + np.abs(y * z) + np.exp(np.clip(z, -800, 800))
    if need == "value":
        return (value,)
    if need == "grad":
        return (grad,)
    if need == "value_and_grad":
        return (value, grad)
    return (grad, np.abs(_np(reference[1])).astype(np.float64))


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
    """Counts the kernel launches."""
    count = [0]
    launch = _accel._launch

    def counting(*args, **kw):
        count[0] += 1
        return launch(*args, **kw)

    monkeypatch.setattr(_accel, "_launch", counting)
    return count


def test_every_kernel_belongs_to_a_registered_elementwise_loss():
    for name in _accel.KERNELS:
        assert name in lk.registry and lk.registry[name].spec.kind == _loss.ELEMENTWISE
    assert {name for name, _ in COVERED} == set(_accel.KERNELS)


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
                scales = _scales(name, need, _np(z), _np(y), expected, c)
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


@pytest.mark.parametrize("lib", LIBS)
def test_both_sides_of_the_threshold(lib, rng, launches):
    """threshold − 1 elements: the reference path, every output and reduction; threshold
    elements: the kernel, equal to the reference path."""
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
            _assert_elementwise(a, b, _scales(name, "grad_hess", _np(z), _np(y), expected, 1.0)[i], np.float32, f"{name} {lib} [{i}]")
    assert launches[0] == 3


@pytest.mark.parametrize("lib", LIBS)
def test_weights_masks_and_uncovered_options_fall_back(lib, rng, launches, small_blocks):
    n = small_blocks
    w, mask = rng.uniform(0.5, 2.0, n).astype(np.float32), rng.random(n) < 0.9
    w, mask = _lib((w, mask), lib)
    for name, options in COVERED[:2]:
        z, y = _lib(_inputs(name, options, rng, n, np.float32, finite=True), lib)
        for extra in ({"weight": w}, {"mask": mask}, {"weight": w, "mask": mask}):
            for need in NEEDS:
                got = _call(lk.registry[name], need, z, y, reduction="mean", **extra)
                with _accel.disabled():
                    expected = _call(lk.registry[name], need, z, y, reduction="mean", **extra)
                for a, b in zip(got, expected):
                    np.testing.assert_array_equal(_np(a), _np(b))
    for name, options in NOT_COVERED:
        z, y = _lib(_inputs(name, options, rng, n, np.float32, finite=True), lib)
        for need in NEEDS:
            _call(lk.registry[name], need, z, y, reduction="none", **options)
    assert launches[0] == 0


def test_other_layouts_and_dtypes_fall_back(rng, launches):
    n = _threshold("numpy")
    z, y = _inputs("mse", {}, rng, 2 * n, np.float32, finite=True)
    lk.mse.grad_hess(z[::2], y[::2], reduction="none")  # not contiguous
    lk.mse.grad_hess(z[:n].astype(np.float16), y[:n].astype(np.float16), reduction="none")
    lk.mse.grad_hess(z[:n], y[:n].astype(np.float64), reduction="none")  # target upcast: still one dtype
    assert launches[0] == 1
    torch = pytest.importorskip("torch")
    n = _threshold("torch")
    z, y = _inputs("mse", {}, rng, n, np.float32, finite=True)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    leaf = zt.clone().requires_grad_(True)
    value = lk.mse(leaf, yt)  # inside the autograd.Function's forward (not recorded): a kernel
    value.backward()  # the closed-form backward with a 0-d cotangent: a kernel too
    assert value.requires_grad and launches[0] == 3
    np.testing.assert_allclose(leaf.grad.numpy(), 2 * (z - y) / n, rtol=1e-6)
    with _accel.disabled():
        np.testing.assert_allclose(float(value.detach()), float(lk.mse(zt, yt)), rtol=1e-6)
    # torch.func unwraps its tensors at the autograd.Function, whose forward may use a kernel
    grad_fn = torch.func.grad(lambda a: lk.mse(a, yt, reduction="sum"))(zt)
    np.testing.assert_array_equal(grad_fn.numpy(), 2 * (z - y))
    launches[0] = 1
    with torch.no_grad():
        value, grad = lk.mse.value_and_grad(leaf, yt, reduction="none")  # not recorded: the kernel
    assert launches[0] == 2 and not value.requires_grad
    np.testing.assert_array_equal(grad.numpy(), 2 * (z - y))


def test_switch_off_in_process_and_by_environment(rng, launches):
    z, y = _inputs("binary_cross_entropy", {}, rng, _threshold("numpy"), np.float32, finite=True)
    with _accel.disabled():
        assert not _accel.enabled()
        lk.binary_cross_entropy.grad_hess(z, y, reduction="none")
    assert _accel.enabled() and launches[0] == 0
    code = "import losskit._accel as a; print(a.enabled(), a.available())"
    for value, expected in (("0", "False"), ("off", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, _accel.ENV_VAR: value}, capture_output=True, text=True, check=True)
        assert out.stdout.split() == [expected, "True"]


def test_without_numba_every_call_takes_the_reference_path(rng, monkeypatch, launches):
    monkeypatch.setitem(_accel._state, "numba", None)
    assert not _accel.available()
    z, y = _inputs("mse", {}, rng, _threshold("numpy"), np.float32, finite=True)
    grad, hess = lk.mse.grad_hess(z, y, reduction="none")
    assert launches[0] == 0
    np.testing.assert_array_equal(grad, 2 * (z - y))


def test_sums_do_not_depend_on_the_thread_count(rng, monkeypatch):
    z, y = _inputs("binary_cross_entropy", {}, rng, 3 * _threshold("numpy") + 17, np.float32, finite=True)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(_accel, "_threads", lambda: threads)
        results.append(float(lk.binary_cross_entropy(z, y, reduction="sum")))
    assert results[0] == results[1] == results[2]


def test_concurrent_calls_from_threads(rng):
    z, y = _inputs("poisson_nll", {}, rng, _threshold("numpy"), np.float64, finite=True)
    expected = lk.poisson_nll.grad_hess(z, y, reduction="none")
    results = [None] * 4

    def work(i):
        results[i] = lk.poisson_nll.grad_hess(z, y, reduction="none")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


def test_inputs_are_not_mutated(rng):
    for lib in LIBS:
        z, y = _inputs("huber", {}, rng, _threshold(lib), np.float32, finite=False)
        zc, yc = z.copy(), y.copy()
        zl, yl = _lib((z, y), lib)
        lk.huber.value_and_grad(zl, yl, reduction="none")
        lk.huber.grad_hess(zl, yl, reduction="mean")
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
