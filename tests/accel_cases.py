"""Fixtures and checks shared by the tests of the Numba row kernels (``_accel.ROW_KERNELS``)
and of small recorded torch calls through a kernel (``interop.torch._small_accel``).

Import the fixtures into a test module's namespace (``from accel_cases import kernel_runs,
...``) and pytest finds them there, the autouse ones (``quiet_numpy``, ``one_torch_thread``)
included. The test modules skip without Numba or torch before they import this one.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch

from losskit import _accel

NEEDS = ("value", "grad", "value_and_grad", "grad_hess")
REDUCTIONS = ("none", "sum", "mean")
DTYPES = (np.float32, np.float64)
# against the reference path: a few ulp of the terms (float32: the reference's own float32
# sums, exp/log/log1p roundings); against float64 PyTorch: the rounding of float32 arithmetic
TOL = {np.float32: 4e-6, np.float64: 2e-13}
# the outputs each ``need`` returns, in order
OUTPUTS = {"value": ("value",), "grad": ("grad",), "value_and_grad": ("value", "grad"), "grad_hess": ("grad", "hess")}


@pytest.fixture(autouse=True)
def quiet_numpy():
    """NaN and infinite rows are the point of several cases: no floating-point warnings."""
    with np.errstate(all="ignore"):
        yield


@pytest.fixture
def kernel_runs(monkeypatch):
    """Records, per call, whether the row kernel gave the result (True) or left it (False)."""
    runs = []
    run_rows = _accel._run_rows

    def recording(*args):
        out = run_rows(*args)
        runs.append(out is not None)
        return out

    monkeypatch.setattr(_accel, "_run_rows", recording)
    return runs


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny float64 references: torch's thread pool would only spin against the kernels'."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setitem(_accel._state, "threads", 2)


@pytest.fixture
def routed(monkeypatch):
    """Counts the small torch calls that the kernel answered (``interop.torch._small_accel``)."""
    from losskit.interop import torch as bridge

    count = [0]
    small = bridge._small_accel

    def counting(*args):
        out = small(*args)
        count[0] += out is not None
        return out

    monkeypatch.setattr(bridge, "_small_accel", counting)
    return count


def call(loss, need, z, target, **kw):
    """``loss`` (``need`` = "value") or ``loss.<need>`` on NumPy inputs, always as a tuple."""
    f = loss if need == "value" else getattr(loss, need)
    out = f(z, target, **kw)
    return out if isinstance(out, tuple) else (out,)


def torch_value_and_grad(loss, z, target, **kw):
    """``loss`` on a fresh leaf copy of ``z`` and its autograd gradient."""
    zr = z.detach().clone().requires_grad_(True)
    v = loss(zr, target, **kw)
    (g,) = torch.autograd.grad(v, zr)
    return v.detach(), g


def assert_close(got, expected, dtype, scale, what):
    """Equal NaNs and infinities; finite entries within ``TOL[dtype]·(|expected| + scale)``."""
    g, e = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert g.shape == e.shape, what
    assert np.array_equal(np.isnan(g), np.isnan(e)), what
    inf = np.isinf(e)
    assert np.array_equal(g[inf], e[inf]), f"{what}: infinities differ"
    bound = TOL[dtype] * (np.abs(e) + scale) + 1e-300
    bad = np.flatnonzero(np.isfinite(e) & ~(np.abs(g - e) <= bound))
    assert bad.size == 0, f"{what}: {bad.size} differ, first at {bad[0]}: kernel {g.flat[bad[0]]!r} expected {e.flat[bad[0]]!r}"


def check_against_both(loss, independent, need, z, target, reduction, kw, dtype, kernel_runs, *, term_scale, row_weight, label=""):
    """The kernel (it must run) against the reference path and against ``independent`` (float64
    PyTorch, called as ``independent(need, z64, target, reduction, **kw)``; a floating target
    in float64).

    ``row_weight``: each row's multiplier before the reduction (sample × class weights);
    ``term_scale``: the magnitude of each row's weighted value terms. Derivatives are checked
    on the scale of the largest multiplier, reduced values on the sum of the terms' scales."""
    before = len(kernel_runs)
    got = call(loss, need, z, target, reduction=reduction, **kw)
    assert kernel_runs[before:] == [True], f"{need} {reduction}: the kernel did not run"
    with _accel.disabled():
        reference = call(loss, need, z, target, reduction=reduction, **kw)
    target64 = target.astype(np.float64) if np.issubdtype(target.dtype, np.floating) else target
    expected = independent(need, z.astype(np.float64), target64, reduction, **kw)
    n = len(row_weight)
    c_max = float(np.max(row_weight)) / (n * 0.05 if reduction == "mean" else 1.0)
    for kind, a, b, e in zip(OUTPUTS[need], got, reference, expected):
        what = f"{label}{need} {reduction} {kind}"
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape, what
        if kind == "value":
            scale = term_scale if reduction == "none" else np.sum(term_scale) * c_max / max(float(np.max(row_weight)), 1e-300)
        else:
            scale = c_max
        assert_close(a, b, dtype, scale, f"{what} vs reference path")
        assert_close(a, e, dtype, scale, f"{what} vs torch float64")


def with_reference_path(loss, need, z, target, **kw):
    """(kernel's output, reference path's output) pairs of one call: first as it runs, then
    under ``_accel.disabled()``."""
    got = call(loss, need, z, target, **kw)
    with _accel.disabled():
        expected = call(loss, need, z, target, **kw)
    return list(zip(got, expected))


# rows that send a call to the reference path: a NaN or +inf logit, only −inf logits
rows_left_to_the_reference_path = pytest.mark.parametrize(
    "row",
    [[np.nan, 0.0, 1.0], [0.0, np.nan, 1.0], [np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf], [0.0, np.inf, np.nan]],
    ids=["nan-first", "nan-below-max", "plus-inf", "all-minus-inf", "inf-and-nan"],
)


def rows_at_the_thread_threshold(below, num_classes):
    """Rows of ``num_classes`` that fill ``_SPLIT_MIN_CHUNKS`` − 1 whole chunks (``below``: one
    thread) or ``_SPLIT_MIN_CHUNKS`` chunks and 5 rows more (split over two threads)."""
    per_chunk = _accel._CHUNK // num_classes
    return (_accel._SPLIT_MIN_CHUNKS - 1) * per_chunk if below else _accel._SPLIT_MIN_CHUNKS * per_chunk + 5


def record_splits(monkeypatch):
    """The chunk counts of every call that splits rows over threads (``_accel._split``)."""
    splits = []
    split = _accel._split
    monkeypatch.setattr(_accel, "_split", lambda chunks, work: splits.append(chunks) or split(chunks, work))
    return splits


def assert_sums_do_not_depend_on_the_thread_count(loss, z, target, monkeypatch):
    """``loss.value_and_grad(reduction="sum")`` with 1, 2 and 3 threads: bit for bit equal."""
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setitem(_accel._state, "threads", threads)
        value, grad = loss.value_and_grad(z, target, reduction="sum")
        results.append((float(value), grad))
    assert results[0][0] == results[1][0] == results[2][0]
    assert np.array_equal(results[0][1], results[1][1]) and np.array_equal(results[0][1], results[2][1])


def exact_log1p_of_the_others(row):
    """log Σ_k e^{z_k − z_0} (= log1p(Σ_{k≠0} e^{z_k − z_0})) of a float64 row, by mpmath at 50
    digits: cross-entropy of class 0, and KL of a one-hot target on it."""
    mpmath.mp.dps = 50
    return mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - mpmath.mpf(float(row[0]))) for v in row))


def torch_reduced_outputs(need, zt, per_sample, weight, valid, reduction, row_factor=1.0, hess_scale=1.0):
    """The outputs ``need`` of a float64 torch per-sample loss ``per_sample`` of logits ``zt``,
    weighted, masked (``valid``) and reduced by the rule of docs/conventions.md, as the row
    kernels apply it: each valid row's multiplier is its weight times ``row_factor`` (a class
    weight per row, or 1), divided for "mean" by the sum of those; the gradient is torch's
    autograd one, the Hessian diagonal the multiplier times ``hess_scale`` (Σq per row) times
    p(1 − p), p = softmax(zt)."""
    n = per_sample.shape[0]
    w = np.ones(n) if weight is None else weight.astype(np.float64)
    c = np.where(valid, w, 0.0)
    if reduction == "mean":
        c = c / np.sum(c * row_factor)
    factor = c * row_factor
    (g,) = torch.autograd.grad(per_sample, zt, torch.tensor(factor))
    p = torch.softmax(zt.detach(), -1).numpy()
    terms = np.where(valid, factor * per_sample.detach().numpy(), 0.0)
    value = terms if reduction == "none" else np.sum(terms)
    grad, hess = g.numpy(), (factor * hess_scale)[:, None] * p * (1 - p)
    return {"value": (value,), "grad": (grad,), "value_and_grad": (value, grad), "grad_hess": (grad, hess)}[need]

