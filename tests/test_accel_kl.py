"""The Numba kernel of NumPy ``kl_divergence`` (forward KL with probability targets,
``_accel.ROW_KERNELS["kl_divergence"]``: soft-target cross-entropy's driver plus Σ t log t)
computes what the reference path computes, and what an independent reference computes.

For every output (``value``, ``grad``, ``value_and_grad``, ``grad_hess``) × reduction × dtype ×
case (plain, sample weights, mask, both), on rows that include ties, confident predictions,
±1e4 logits, targets with zeros and impossible classes (−inf logits of zero target), on both
sides of every switch (one chunk of rows or several, one thread or two, short rows whose
exponentials and t·log t are computed chunk-wide or rows of ``ROW_EXP_MIN`` classes and more,
longer than a chunk), the kernel's result equals

* the reference path's (the same call under ``_accel.disabled()``) within a few units in the
  last place of the terms it adds, and
* PyTorch's ``F.kl_div(F.log_softmax(z), t)`` in float64 (value, and gradient by autograd;
  Hessian diagonal (Σt)·p(1 − p) from ``torch.softmax``), weighted, masked and reduced here.

Confident right predictions of one-hot targets keep their tiny values to full relative
precision (mpmath). The kernel's own ``log`` (``log32``/``log64``, written to vectorise) is
checked against mpmath and float64. Rows the kernel leaves to the reference path (a NaN or
+inf logit, only −inf logits; for a value, a target entry outside [0, inf), possible with
``validate=False`` only) and options it does not cover (``log_target``, ``reverse``, another
class axis, float16) give the reference path's result.

Small recorded torch calls (``small_torch``: ``interop.torch._small_accel`` runs the kernel
on the tensors' memory) equal float64 PyTorch and the torch reference path, on both sides of
the chunk and of ``GRAD_IN_FORWARD_MAX``; declined calls, double backward, the target's
gradient and the value checks behave as on the reference path. Without Numba these tests
skip, and every call takes the reference path.
"""

from __future__ import annotations

import contextlib
import functools
import math

import mpmath
import numpy as np
import pytest

import losskit as lk
from losskit import _accel

pytest.importorskip("numba", reason="the accel extra (Numba) is not installed")
torch = pytest.importorskip("torch")

# fixtures: used by name, or autouse (quiet_numpy, one_torch_thread)
from accel_cases import kernel_runs, one_torch_thread, quiet_numpy, routed, two_threads  # noqa: E402, F401
from accel_cases import (  # noqa: E402
    DTYPES, NEEDS, REDUCTIONS, TOL, assert_close, assert_sums_do_not_depend_on_the_thread_count, call,
    check_against_both, exact_log1p_of_the_others, record_splits, rows_at_the_thread_threshold,
    rows_left_to_the_reference_path, torch_reduced_outputs, torch_value_and_grad, with_reference_path,
)

CASES = {"plain": {}, "weight": {"weight": True}, "mask": {"mask": True}, "all": {"weight": True, "mask": True}}
_call = functools.partial(call, lk.kl_divergence)
_with_reference = functools.partial(with_reference_path, lk.kl_divergence)
_torch_ours = functools.partial(torch_value_and_grad, lk.kl_divergence)


def _distributions(rng, n, num_classes, dtype):
    """Logits with edge rows first (a tie at the maximum, confident right and wrong
    predictions of one-hot targets, impossible classes: −inf logits of zero target, large
    logits, a target with zeros) and random target distributions (cubed: some tiny entries)."""
    z = rng.standard_normal((n, num_classes)) * 3
    t = rng.random((n, num_classes)) ** 3
    big = 1e4 if dtype == np.float64 else 1e3
    one_hot = lambda k: np.eye(num_classes)[k]  # noqa: E731
    rest = np.zeros(num_classes - 3)
    edges = [
        (np.r_[2.0, 2.0, 0.0, rest], np.r_[0.5, 0.5, 0.0, rest]),
        (np.r_[30.0, 0.0, 0.0, rest], one_hot(0)),
        (np.r_[30.0, 0.0, 0.0, rest], one_hot(1)),
        (np.r_[-np.inf, 1.0, -np.inf, rest], np.r_[0.0, 0.7, 0.0, np.full(num_classes - 3, 0.3 / (num_classes - 3))]),
        (np.r_[big, -big, 0.0, rest], np.r_[0.9, 0.1, 0.0, rest]),
        (np.r_[-big, big, -big, rest], np.r_[0.0, 0.6, 0.4, rest]),
    ]
    for i, (zr, tr) in enumerate(edges[: n - 1]):
        z[i], t[i] = zr, tr
    t /= t.sum(-1, keepdims=True)
    return z.astype(dtype), t.astype(dtype)


def _options(case, rng, n, dtype):
    spec, kw = CASES[case], {}
    if spec.get("weight"):
        kw["weight"] = (rng.random(n) + 0.5).astype(dtype)
    if spec.get("mask"):
        mask = rng.random(n) < 0.7
        mask[0] = True
        kw["mask"] = mask
    return kw


def _independent(need, z, t, reduction, weight=None, mask=None):
    """float64 PyTorch: per-sample F.kl_div(F.log_softmax(z), t) summed over classes, its
    autograd gradient and (Σt)·p(1 − p), weighted, masked and reduced here ("mean": over the
    valid samples' weights). −inf logits become −1e300 for torch (whose 0·(−inf) is NaN):
    the same softmax, and t = 0 there adds 0."""
    n, _ = z.shape
    valid = np.ones(n, bool) if mask is None else mask.copy()
    zt = torch.tensor(np.where(np.isneginf(z), -1e300, z), dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(t, dtype=torch.float64)
    per_sample = torch.nn.functional.kl_div(torch.log_softmax(zt, -1), tt, reduction="none").sum(-1)
    return torch_reduced_outputs(need, zt, per_sample, weight, valid, reduction, hess_scale=t.sum(-1))


def _check_against_both(need, z, t, reduction, kw, dtype, kernel_runs):
    """The kernel (it must run) against the reference path and float64 PyTorch."""
    n, num_classes = z.shape
    # the magnitude of the terms each output adds: logits and log C (|Σ t log t| ≤ log C) for
    # the value, the multiplier for derivatives (|(Σt)p − t| ≤ 1), summed over rows if reduced
    row_scale = np.max(np.abs(np.where(np.isfinite(z), z, 0)), axis=-1).astype(np.float64) + math.log(num_classes) + 1.0
    w = kw.get("weight", np.ones(n)).astype(np.float64)
    check_against_both(lk.kl_divergence, _independent, need, z, t, reduction, kw, dtype, kernel_runs, term_scale=row_scale * w, row_weight=w)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_reference_and_torch(case, dtype, rng, kernel_runs, monkeypatch, two_threads):
    """Every output × reduction, on both sides of the switches: chunks of 9 rows of 7 classes
    (_CHUNK = 64 elements), 3 chunks (one thread) and 5 chunks with a ragged last one (two
    threads); and rows of 100 classes (``ROW_EXP_MIN`` and more), longer than a chunk."""
    monkeypatch.setattr(_accel, "_CHUNK", 64)
    for n, num_classes in ((27, 7), (41, 7), (6, 100)):
        z, t = _distributions(rng, n, num_classes, dtype)
        kw = _options(case, rng, n, dtype)
        for need in NEEDS:
            for reduction in REDUCTIONS:
                _check_against_both(need, z, t, reduction, kw, dtype, kernel_runs)


@pytest.mark.parametrize("below", [True, False], ids=["one-thread", "two-threads"])
def test_the_real_thread_threshold(below, rng, kernel_runs, two_threads, monkeypatch):
    """10 classes: 1638 rows per chunk; from ``_SPLIT_MIN_CHUNKS`` chunks on the rows are split
    over two threads."""
    rows = rows_at_the_thread_threshold(below, 10)
    splits = record_splits(monkeypatch)
    z, t = _distributions(rng, rows, 10, np.float32)
    kw = _options("all", rng, rows, np.float32)
    for need in ("value_and_grad", "grad_hess"):
        _check_against_both(need, z, t, "mean", kw, np.float32, kernel_runs)
    assert (splits == []) if below else (len(splits) == 2)


def test_sums_do_not_depend_on_the_thread_count(rng, monkeypatch):
    monkeypatch.setattr(_accel, "_CHUNK", 64)
    z, t = _distributions(rng, 300, 7, np.float32)
    assert_sums_do_not_depend_on_the_thread_count(lk.kl_divergence, z, t, monkeypatch)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_confident_predictions_keep_tiny_values_precise(dtype, kernel_runs):
    """One-hot target on a label far above the others: KL = log1p(Σ_{k≠y} e^{z_k − z_y}) to a
    few ulp relative against mpmath, where LSE − z_y in the dtype would round to 0."""
    gaps = [5.0, 20.0, 40.0, 80.0] if dtype == np.float64 else [5.0, 10.0, 16.0, 30.0]
    z = np.array([[g, 0.0, -1.0, 0.5] for g in gaps], dtype=dtype)
    t = np.zeros_like(z)
    t[:, 0] = 1.0
    got = lk.kl_divergence(z, t, reduction="none")
    assert kernel_runs == [True]
    for row, value in zip(z.astype(np.float64), got):
        exact = exact_log1p_of_the_others(row)
        assert 0 < float(exact) and abs(float(value) - float(exact)) <= 8 * np.finfo(dtype).eps * float(exact), (row, value, exact)


@pytest.mark.parametrize("num_classes", [7, 100])
def test_impossible_classes_of_zero_target(num_classes, rng, kernel_runs):
    """−inf logits where the target is 0 add nothing: finite values and gradients, as on the
    reference path (torch's own formula gives NaN there: 0·−inf)."""
    z, t = _distributions(rng, 9, num_classes, np.float64)
    z[:, 1], t[:, 1] = -np.inf, 0.0
    t[2] = np.eye(num_classes)[0]  # was one-hot on class 1
    t /= t.sum(-1, keepdims=True)
    for need in NEEDS:
        for a, b in _with_reference(need, z, t, reduction="none"):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert kernel_runs == [True] * 4


@rows_left_to_the_reference_path
@pytest.mark.parametrize("need", NEEDS)
def test_rows_left_to_the_reference_path(row, need, kernel_runs):
    z = np.array([[0.0, 1.0, 2.0], row, [3.0, 0.0, 0.0]])
    t = np.full((3, 3), 1 / 3)
    for reduction in REDUCTIONS:
        for a, b in _with_reference(need, z, t, reduction=reduction):
            np.testing.assert_array_equal(a, b)
    assert kernel_runs == [False] * 3


def test_masked_rows_may_hold_anything(kernel_runs):
    """A masked row of NaN logits counts nowhere and does not send the call to the reference
    path."""
    z = np.array([[0.0, 1.0, 2.0], [np.nan, np.inf, 0.0], [3.0, 0.0, 0.0]])
    t = np.array([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0], [0.6, 0.0, 0.4]])
    mask = np.array([True, False, True])
    value, grad = lk.kl_divergence.value_and_grad(z, t, mask=mask)
    g, h = lk.kl_divergence.grad_hess(z, t, mask=mask, reduction="sum")
    assert kernel_runs == [True, True]
    with _accel.disabled():
        ref_value, ref_grad = lk.kl_divergence.value_and_grad(z, t, mask=mask)
        ref_g, ref_h = lk.kl_divergence.grad_hess(z, t, mask=mask, reduction="sum")
    np.testing.assert_allclose(value, ref_value, rtol=1e-15)
    for a, b in ((grad, ref_grad), (g, ref_g), (h, ref_h)):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-300)
        assert np.all(a[1] == 0)


def test_unvalidated_targets_as_the_reference_path(rng, kernel_runs):
    """``validate=False`` passes targets that are not distributions: rows that do not sum to
    1 and subnormal entries run in the kernel."""
    for dtype, tiny in ((np.float32, 1e-40), (np.float64, 1e-310)):
        z = (rng.standard_normal((8, 5)) * 2).astype(dtype)
        t = rng.random((8, 5)) * 2
        t[1, 2], t[2, :] = tiny, [tiny, 0.0, 1.0, tiny, 0.5]
        t = t.astype(dtype)
        for need in NEEDS:
            for reduction in REDUCTIONS:
                for a, b in _with_reference(need, z, t, reduction=reduction, validate=False):
                    assert type(a) is type(b) and a.dtype == b.dtype
                    np.testing.assert_allclose(a, b, rtol=TOL[dtype] * 4, atol=TOL[dtype] * 10)
    assert kernel_runs == [True] * 24


@pytest.mark.parametrize("entry", [-0.25, np.nan, np.inf], ids=["negative", "nan", "inf"])
def test_targets_outside_the_domain_are_left_to_the_reference_path(entry, kernel_runs):
    """A target entry outside [0, inf) (only with ``validate=False``; x·log x is not defined
    alike on every backend there) sends a value to the reference path; the derivatives,
    (Σt)·p − t on every backend, stay in the kernel."""
    z = np.array([[0.0, 1.0, 2.0], [1.0, -1.0, 0.5], [3.0, 0.0, 0.0]])
    t = np.array([[0.2, 0.3, 0.5], [0.5, entry, 0.5], [0.6, 0.0, 0.4]])
    for need in NEEDS:
        for a, b in _with_reference(need, z, t, reduction="none", validate=False):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    assert kernel_runs == [False, True, False, True]


@pytest.mark.parametrize(
    "options, variant",
    [
        ({"log_target": True}, None),
        ({"reverse": True}, None),
        ({"reverse": True, "log_target": True}, None),
        ({"axis": 0}, None),
        ({}, "float16"),
    ],
    ids=["log_target", "reverse", "reverse-log_target", "axis0", "float16"],
)
def test_what_the_kernel_does_not_cover(options, variant, rng, kernel_runs):
    z = rng.standard_normal((6, 5))
    t = rng.random((6, 5))
    t /= t.sum(-1, keepdims=True)
    if options.get("log_target"):
        t = np.log(t)
    if variant == "float16":
        z, t = z.astype(np.float16), t.astype(np.float16)
    if options.get("axis") == 0:
        z, t = np.ascontiguousarray(z.T), np.ascontiguousarray(t.T)
    for need in NEEDS:
        for a, b in _with_reference(need, z, t, **options):
            np.testing.assert_array_equal(a, b)
    assert True not in kernel_runs


def test_more_sample_axes_and_a_float64_target(rng, kernel_runs):
    """(3, 4, 6) logits; a float64 target of float32 logits is cast to float32 first, as the
    reference path casts it (distributions of powers of two: exact in float32, whose rounding
    of other float64 distributions the check's float64 tolerance would reject)."""
    z = rng.standard_normal((3, 4, 6)).astype(np.float32)
    t = np.ascontiguousarray(rng.permuted(np.broadcast_to([0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0], (3, 4, 6)), axis=-1))
    for need in NEEDS:
        for a, b in _with_reference(need, z, t, reduction="none"):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert kernel_runs == [True] * 4


def test_inputs_are_not_mutated_and_without_numba(rng, monkeypatch, kernel_runs):
    z, t = _distributions(rng, 50, 7, np.float64)
    kw = _options("all", rng, 50, np.float64)
    arrays = lambda: [z, t, *kw.values()]  # noqa: E731
    copies = [a.copy() for a in arrays()]
    for need in NEEDS:
        _call(need, z, t, **kw)
    for before, after in zip(copies, arrays()):
        np.testing.assert_array_equal(before, after)
    with _accel.disabled():
        expected = lk.kl_divergence.value_and_grad(z, t, **kw)
    monkeypatch.setitem(_accel._state, "numba", None)
    monkeypatch.setattr(_accel, "_NUMPY_PLANS", {})
    kernel_runs.clear()
    got = lk.kl_divergence.value_and_grad(z, t, **kw)
    assert kernel_runs == []
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kw",
    [{"mask": np.zeros(4, bool)}, {"mask": np.zeros(4, bool), "reduction": "sum"}, {"normalizer": 7.0}, {"normalizer": np.array(3.0)}],
    ids=["all-masked", "all-masked-sum", "normalizer", "normalizer-0d"],
)
def test_empty_selections_and_normalizers(kw, rng, kernel_runs):
    """An empty selection gives 0 with zero gradient (never NaN); a normalizer divides the sum."""
    z = rng.standard_normal((4, 3))
    t = rng.random((4, 3))
    t /= t.sum(-1, keepdims=True)
    for need in ("value_and_grad", "grad_hess"):
        for a, b in _with_reference(need, z, t, **kw):
            assert np.shape(a) == np.shape(b) and not np.isnan(a).any()
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-17)
    assert kernel_runs == [True, True]


# --- the kernel's own log -----------------------------------------------------------------


def _log_loops():
    from numba import njit

    from losskit._accel_numba import log32, log64

    @njit
    def loop64(x, out):
        for i in range(x.shape[0]):
            out[i] = log64(x[i])

    @njit
    def loop32(x, out):
        for i in range(x.shape[0]):
            out[i] = log32(x[i])

    return loop32, loop64


def test_log_is_a_few_ulp(rng):
    """``log64`` against mpmath and ``log32`` against the float64 log of float32 inputs: at
    most 2 ulp over (0, 1] (probabilities, a fine grid near 1), subnormals, large values,
    +inf and NaN passed through."""
    loop32, loop64 = _log_loops()
    x = np.concatenate([
        rng.random(20000), rng.random(2000) ** 30, 1 + rng.uniform(-1e-3, 1e-3, 2000),
        np.exp(rng.uniform(-740, 709, 2000)),
        [5e-324, 1e-310, 2.2250738585072014e-308, 1.0, 0.5, 2.0, np.nextafter(1.0, 0), np.nextafter(1.0, 2), np.finfo(float).max],
    ])
    got = np.empty_like(x)
    loop64(x, got)
    mpmath.mp.dps = 40
    for xi, gi in zip(x[::7].tolist() + x[-9:].tolist(), got[::7].tolist() + got[-9:].tolist()):
        exact = mpmath.log(mpmath.mpf(xi))
        ulp = np.spacing(abs(float(exact))) if exact != 0 else 5e-324
        assert abs(mpmath.mpf(gi) - exact) <= 2 * ulp, (xi, gi)
    x32 = np.concatenate([x.astype(np.float32), np.array([1e-45, 1e-40, 1.1754944e-38, 3e38], np.float32)])
    x32 = x32[(x32 > 0) & np.isfinite(x32)]
    got32 = np.empty_like(x32)
    loop32(x32, got32)
    exact32 = np.log(x32.astype(np.float64))
    ulp32 = np.spacing(np.abs(exact32).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got32 - exact32) <= 2 * ulp32)
    special = np.array([np.inf, np.nan])
    for loop, a in ((loop64, special), (loop32, special.astype(np.float32))):
        out = np.empty_like(a)
        loop(a, out)
        assert out[0] == np.inf and np.isnan(out[1])


# --- small recorded torch calls through the kernel (``small_torch``) ------------------------


def _torch_check(z, t, routed, expect_route, reduction="mean", weight=None, mask=None):
    """losskit on small recorded tensors (the kernel route taken ``expect_route`` times)
    against ``_independent`` (float64 PyTorch) and against the torch reference path."""
    kw = {k: v for k, v in (("weight", weight), ("mask", mask)) if v is not None}
    before = routed[0]
    v, g = _torch_ours(z, t, reduction=reduction, **kw)
    assert routed[0] == before + expect_route, f"kernel route taken {routed[0] - before} times, expected {expect_route}"
    assert v.dtype == z.dtype and v.shape == () and g.dtype == z.dtype and g.shape == z.shape
    with _accel.disabled():
        rv, rg = _torch_ours(z, t, reduction=reduction, **kw)
    z2, t2 = z.detach().double().reshape(-1, z.shape[-1]).numpy(), t.double().reshape(-1, z.shape[-1]).numpy()
    flat = lambda a: None if a is None else a.double().reshape(-1).numpy()  # noqa: E731
    pv, pg = _independent("value_and_grad", z2, t2, reduction, weight=flat(weight), mask=None if mask is None else mask.reshape(-1).numpy())
    dtype = np.float32 if z.dtype == torch.float32 else np.float64
    n = z2.shape[0]
    w = np.ones(n) if weight is None else flat(weight)
    c = w / (n * 0.05) if reduction == "mean" else w
    row_scale = np.max(np.abs(z2), axis=-1) + math.log(z.shape[-1]) + 1.0
    for got, expected, scale, what in (
        (v, rv, np.sum(row_scale * c), "value vs reference"), (v, pv, np.sum(row_scale * c), "value vs torch float64"),
        (g, rg, float(np.max(c)), "grad vs reference"), (g, pg.reshape(g.shape), float(np.max(c)), "grad vs torch float64"),
    ):
        assert_close(np.asarray(got.double()), np.asarray(expected.double() if torch.is_tensor(expected) else expected), dtype, scale, f"{reduction} {what}")


def _torch_inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    t = torch.rand(shape, generator=g, dtype=torch.float64) ** 3
    return z, (t / t.sum(-1, keepdim=True)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ("mean", "sum"))
@pytest.mark.parametrize("shape", [(32, 10), (2, 3, 4), (1, 1)])
def test_small_torch_calls_take_the_kernel(shape, reduction, dtype, routed):
    z, t = _torch_inputs(shape, dtype)
    _torch_check(z, t, routed, 1, reduction)


def test_small_torch_weights_masks_and_edge_rows(routed):
    z, t = _distributions(np.random.default_rng(3), 16, 7, np.float32)
    z, t = torch.from_numpy(z), torch.from_numpy(t)
    w = torch.rand(16, generator=torch.Generator().manual_seed(4)) + 0.5
    mask = torch.rand(16, generator=torch.Generator().manual_seed(5)) > 0.3
    mask[0] = True
    _torch_check(z, t, routed, 1, weight=w)
    _torch_check(z, t, routed, 1, mask=mask, reduction="sum")
    _torch_check(z, t, routed, 1, weight=w, mask=mask)


@pytest.mark.parametrize("rows", [_accel._CHUNK // 8, _accel._CHUNK // 8 + 1, 8192, 8193])
def test_small_torch_both_sides_of_the_chunk_and_of_grad_in_forward_max(rows, routed):
    """8 classes: one chunk of rows and one more row; 8192 × 8 = ``GRAD_IN_FORWARD_MAX``
    elements (the kernel) and one row more (the generic bridge, no kernel)."""
    from losskit.interop import torch as bridge

    assert 8192 * 8 == bridge.GRAD_IN_FORWARD_MAX
    z, t = _torch_inputs((rows, 8), torch.float32, seed=rows)
    _torch_check(z, t, routed, int(rows * 8 <= bridge.GRAD_IN_FORWARD_MAX))


def test_small_torch_calls_the_kernel_declines(routed):
    """A +inf logit (the row goes to the reference path), ``log_target``, ``reverse``, a
    transposed (not contiguous) input, ``_accel.disabled()`` and a negative target entry
    with ``validate=False`` (torch's own x·log x: NaN): the torch ops run."""
    z, t = _torch_inputs((6, 5), torch.float32, seed=6)
    z_inf = z.clone()
    z_inf[2, 1] = float("inf")
    _torch_check(z_inf, t, routed, 0)
    zt, tt = z.t().contiguous().t(), t.t().contiguous().t()  # same values, transposed memory
    _torch_check(zt, tt, routed, 0)
    for kw in ({"log_target": True}, {"reverse": True}):
        target = torch.log(t) if kw.get("log_target") else t
        zr = z.clone().requires_grad_(True)
        lk.kl_divergence(zr, target, **kw).backward()
        assert torch.isfinite(zr.grad).all()
    with _accel.disabled():
        _torch_check(z, t, routed, 0)
    t_neg = t.clone()
    t_neg[0, 0] = -0.1  # validate=False: torch's own x·log x (NaN), not NumPy's
    values = []
    for off in (False, True):
        zr = z.clone().requires_grad_(True)
        with _accel.disabled() if off else contextlib.nullcontext():
            values.append(lk.kl_divergence(zr, t_neg, validate=False).detach())
    assert torch.isnan(values[0]) and torch.isnan(values[1])
    assert routed[0] == 0


def test_small_torch_double_backward_and_target_gradient(routed):
    """create_graph differentiates the closed form, and the target's gradient is the
    reference path's: the same results with the kernel route and without."""
    z, t = _torch_inputs((6, 4), torch.float64, seed=7)
    results = []
    for off in (False, True):
        zr, tr = z.clone().requires_grad_(True), t.clone().requires_grad_(True)
        if off:
            with _accel.disabled():
                v = lk.kl_divergence(zr, tr)
        else:
            v = lk.kl_divergence(zr, tr)
        g, gt = torch.autograd.grad(v, (zr, tr), create_graph=True)
        (h,) = torch.autograd.grad((g * torch.arange(24.0, dtype=torch.float64).reshape(6, 4)).sum(), zr)
        results.append((g.detach(), gt.detach(), h))
    assert routed[0] == 1
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_small_torch_value_checks_still_run_first(routed):
    z, t = _torch_inputs((4, 3), torch.float32, seed=9)
    t[1] = t[1] * 0.5
    with pytest.raises(ValueError, match=r"must be a distribution along the class axis .* the row at target\[1\] sums to"):
        lk.kl_divergence(z.requires_grad_(True), t)
    assert routed[0] == 0
