"""The Numba kernels of NumPy ``cross_entropy`` with integer class ids or probability targets
(``_accel.ROW_KERNELS``) compute what the reference path computes, and what an independent
reference computes.

For every output (``value``, ``grad``, ``value_and_grad``, ``grad_hess``) × reduction × dtype ×
case (plain, sample weights, mask, ``ignore_index``, ``class_weight``, all of them), on rows
that include ties, confident predictions and impossible classes (−inf logits), on both sides
of every switch (one chunk of rows or several, one thread or two, fewer rows than a chunk or a
row longer than a chunk), the kernel's result equals

* the reference path's (the same call under ``_accel.disabled()``) within a few units in the
  last place of the terms it adds, and
* PyTorch's ``F.cross_entropy`` in float64 (value, and gradient by autograd; Hessian diagonal
  p(1 − p) from ``torch.softmax``), weighted and masked in float64 here.

Probability targets: the same matrix (no ``ignore_index``), against float64 PyTorch with soft
targets; −inf logits of zero target add nothing. Confident predictions keep their tiny losses
to full relative precision (mpmath). Rows the kernel leaves to the reference path (a NaN or
+inf logit, only −inf logits, a label out of range with ``validate=False``) and options it does
not cover (label smoothing, z-loss, another class axis, other dtypes) give the reference path's
result.
Without Numba these tests skip, and every call takes the reference path.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import losskit as lk
from losskit import _accel

pytest.importorskip("numba", reason="the accel extra (Numba) is not installed")
torch = pytest.importorskip("torch")

# fixtures: used by name, or autouse (quiet_numpy, one_torch_thread)
from accel_cases import kernel_runs, one_torch_thread, quiet_numpy, two_threads  # noqa: E402, F401
from accel_cases import (  # noqa: E402
    DTYPES, NEEDS, REDUCTIONS, assert_sums_do_not_depend_on_the_thread_count, call, check_against_both,
    exact_log1p_of_the_others, record_splits, rows_at_the_thread_threshold, rows_left_to_the_reference_path,
    torch_reduced_outputs, with_reference_path,
)

CASES = {
    "plain": {},
    "weight": {"weight": True},
    "mask": {"mask": True},
    "ignore_index": {"ignore_index": 3},
    "class_weight": {"class_weight": True},
    "all": {"weight": True, "mask": True, "ignore_index": 3, "class_weight": True},
}
_call = functools.partial(call, lk.cross_entropy)
_with_reference = functools.partial(with_reference_path, lk.cross_entropy)


def _rows(rng, n, num_classes, dtype):
    """Random logits and ids with edge rows first: a tie at the maximum, a confident right and
    a confident wrong prediction, impossible classes (−inf) and large logits."""
    z = rng.standard_normal((n, num_classes)) * 3
    y = rng.integers(0, num_classes, n)
    big = 1e4 if dtype == np.float64 else 1e3
    edges = [
        (np.r_[2.0, 2.0, np.zeros(num_classes - 2)], 1),
        (np.r_[30.0, np.zeros(num_classes - 1)], 0),
        (np.r_[30.0, np.zeros(num_classes - 1)], 1),
        (np.r_[-np.inf, 1.0, -np.inf, np.zeros(num_classes - 3)], 1),
        (np.r_[big, -big, np.zeros(num_classes - 2)], 0),
        (np.r_[-big, big, -big, np.zeros(num_classes - 3)], 2),
    ]
    for i, (row, label) in enumerate(edges[: n - 1]):
        z[i], y[i] = row, label
    return z.astype(dtype), y


def _options(case, rng, n, num_classes, dtype, y):
    spec = CASES[case]
    kw = {}
    if spec.get("weight"):
        kw["weight"] = (rng.random(n) + 0.5).astype(dtype)
    if spec.get("mask"):
        mask = rng.random(n) < 0.7
        mask[0] = True
        kw["mask"] = mask
    if "ignore_index" in spec:
        kw["ignore_index"] = spec["ignore_index"]
        y[rng.random(n) < 0.25] = spec["ignore_index"]
        y[0] = 0
    if spec.get("class_weight"):
        kw["class_weight"] = (rng.random(num_classes) + 0.2).astype(dtype)
    return kw


def _independent(need, z, y, reduction, weight=None, mask=None, ignore_index=None, class_weight=None):
    """float64 PyTorch: per-sample F.cross_entropy, its autograd gradient and p(1 − p),
    weighted, masked and reduced here by the rule of docs/conventions.md."""
    n, num_classes = z.shape
    valid = np.ones(n, bool) if mask is None else mask.copy()
    if ignore_index is not None:
        valid &= y != ignore_index
    ids = np.where(valid, y, 0)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    per_sample = torch.nn.functional.cross_entropy(zt, torch.tensor(ids), reduction="none")
    cw = np.ones(num_classes) if class_weight is None else class_weight.astype(np.float64)
    return torch_reduced_outputs(need, zt, per_sample, weight, valid, reduction, row_factor=cw[ids])


def _check_against_both(need, z, y, reduction, kw, dtype, kernel_runs):
    """The kernel (it must run) against the reference path and against float64 PyTorch."""
    # the magnitude of the terms each output adds: logits for the value, the multiplier for
    # derivatives (|p − onehot| ≤ 1), summed over rows for reduced values
    row_scale = np.max(np.abs(np.where(np.isfinite(z), z, 0)), axis=-1).astype(np.float64) + 1.0
    w = kw.get("weight", np.ones(len(y))).astype(np.float64)
    cw = kw["class_weight"].astype(np.float64)[np.clip(y, 0, z.shape[1] - 1)] if "class_weight" in kw else np.ones(len(y))
    check_against_both(lk.cross_entropy, _independent, need, z, y, reduction, kw, dtype, kernel_runs, term_scale=row_scale * w * cw, row_weight=w * cw)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_reference_and_torch(case, dtype, rng, kernel_runs, monkeypatch, two_threads):
    """Every output × reduction, on both sides of the switches: chunks of 9 rows of 7 classes
    (_CHUNK = 64 elements), 3 chunks (one thread) and 5 chunks with a ragged last one (two
    threads); and rows of 100 classes, longer than a chunk (one row per chunk)."""
    monkeypatch.setattr(_accel, "_CHUNK", 64)
    for n, num_classes in ((27, 7), (41, 7), (6, 100)):
        z, y = _rows(rng, n, num_classes, dtype)
        kw = _options(case, rng, n, num_classes, dtype, y)
        for need in NEEDS:
            for reduction in REDUCTIONS:
                _check_against_both(need, z, y, reduction, kw, dtype, kernel_runs)


@pytest.mark.parametrize("below", [True, False], ids=["one-thread", "two-threads"])
def test_the_real_thread_threshold(below, rng, kernel_runs, two_threads, monkeypatch):
    """10 classes: 1638 rows per chunk; from ``_SPLIT_MIN_CHUNKS`` chunks on the rows are split
    over two threads."""
    rows = rows_at_the_thread_threshold(below, 10)
    splits = record_splits(monkeypatch)
    z, y = _rows(rng, rows, 10, np.float32)
    kw = _options("all", rng, rows, 10, np.float32, y)
    for need in ("value_and_grad", "grad_hess"):
        _check_against_both(need, z, y, "mean", kw, np.float32, kernel_runs)
    assert (splits == []) if below else (len(splits) == 2)


def test_sums_do_not_depend_on_the_thread_count(rng, monkeypatch):
    monkeypatch.setattr(_accel, "_CHUNK", 64)
    z, y = _rows(rng, 300, 7, np.float32)
    assert_sums_do_not_depend_on_the_thread_count(lk.cross_entropy, z, y, monkeypatch)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_confident_predictions_keep_tiny_losses_precise(dtype, kernel_runs):
    """ℓ = log1p(Σ_{k≠y} e^{z_k − z_y}) for a label far above the others: relative error of a
    few ulp against mpmath, where LSE − z_y in the dtype would round to 0."""
    gaps = [5.0, 20.0, 40.0, 80.0] if dtype == np.float64 else [5.0, 10.0, 16.0, 30.0]
    z = np.array([[g, 0.0, -1.0, 0.5] for g in gaps], dtype=dtype)
    y = np.zeros(len(gaps), dtype=np.int64)
    got = lk.cross_entropy(z, y, reduction="none")
    assert kernel_runs == [True]
    for row, value in zip(z.astype(np.float64), got):
        exact = exact_log1p_of_the_others(row)
        assert abs(float(value) - float(exact)) <= 8 * np.finfo(dtype).eps * float(exact), (row, value, exact)


def test_infinite_loss_of_an_impossible_label(kernel_runs):
    z = np.array([[-np.inf, 1.0, 0.0], [0.0, 1.0, 2.0]])
    y = np.array([0, 2])
    value, grad = lk.cross_entropy.value_and_grad(z, y, reduction="none")
    assert kernel_runs == [True]
    with _accel.disabled():
        ref_value, ref_grad = lk.cross_entropy.value_and_grad(z, y, reduction="none")
    assert value[0] == np.inf == ref_value[0]
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-14, atol=1e-300)


@rows_left_to_the_reference_path
@pytest.mark.parametrize("need", NEEDS)
def test_rows_left_to_the_reference_path(row, need, kernel_runs):
    z = np.array([[0.0, 1.0, 2.0], row, [3.0, 0.0, 0.0]])
    y = np.array([0, 1, 2])
    for reduction in REDUCTIONS:
        for a, b in _with_reference(need, z, y, reduction=reduction):
            np.testing.assert_array_equal(a, b)
    assert kernel_runs == [False] * 3


def test_masked_rows_may_hold_anything(kernel_runs):
    """A masked row of NaN logits counts nowhere and does not send the call to the reference
    path."""
    z = np.array([[0.0, 1.0, 2.0], [np.nan, np.inf, 0.0], [3.0, 0.0, 0.0]])
    y = np.array([0, 1, 2])
    mask = np.array([True, False, True])
    value, grad = lk.cross_entropy.value_and_grad(z, y, mask=mask)
    assert kernel_runs == [True]
    with _accel.disabled():
        ref_value, ref_grad = lk.cross_entropy.value_and_grad(z, y, mask=mask)
    np.testing.assert_allclose(value, ref_value, rtol=1e-15)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-15, atol=1e-300)
    assert np.all(grad[1] == 0)


def test_labels_out_of_range_without_validation(kernel_runs):
    z = np.zeros((2, 3))
    with pytest.raises(ValueError):
        lk.cross_entropy(z, np.array([0, 3]))
    for bad in (np.array([0, 3]), np.array([0, -1])):
        try:
            with _accel.disabled():
                expected = lk.cross_entropy(z, bad, validate=False)
        except IndexError:
            with pytest.raises(IndexError):
                lk.cross_entropy(z, bad, validate=False)
        else:
            np.testing.assert_array_equal(lk.cross_entropy(z, bad, validate=False), expected)
    assert True not in kernel_runs


@pytest.mark.parametrize(
    "options, target",
    [
        ({"label_smoothing": 0.1}, "ids"),
        ({"z_loss": 1e-3}, "ids"),
        ({"label_smoothing": 0.1}, "probs"),
        ({"axis": 0}, "ids"),
        ({}, "ids16"),
        ({}, "float16"),
    ],
    ids=["label_smoothing", "z_loss", "probs-label_smoothing", "axis0", "int16-ids", "float16"],
)
def test_what_the_kernel_does_not_cover(options, target, rng, kernel_runs):
    z = rng.standard_normal((6, 5))
    y = rng.integers(0, 5, 6)
    if target == "probs":
        y = rng.random((6, 5))
        y /= y.sum(-1, keepdims=True)
    elif target == "ids16":
        y = y.astype(np.int16)
    elif target == "float16":
        z = z.astype(np.float16)
    if options.get("axis") == 0:
        z = np.ascontiguousarray(z.T)
    for need in NEEDS:
        for a, b in _with_reference(need, z, y, **options):
            np.testing.assert_array_equal(a, b)
    assert True not in kernel_runs


def test_int32_ids_and_more_sample_axes(rng, kernel_runs):
    z = rng.standard_normal((3, 4, 6)).astype(np.float32)
    y = rng.integers(0, 6, (3, 4)).astype(np.int32)
    for need in NEEDS:
        for a, b in _with_reference(need, z, y, reduction="none"):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert kernel_runs == [True] * 4


def test_inputs_are_not_mutated_and_without_numba(rng, monkeypatch, kernel_runs):
    z, y = _rows(rng, 50, 7, np.float64)
    kw = _options("all", rng, 50, 7, np.float64, y)
    copies = [a.copy() for a in (z, y, *kw.values()) if isinstance(a, np.ndarray)]
    for need in NEEDS:
        _call(need, z, y, **kw)
    for before, after in zip(copies, [a for a in (z, y, *kw.values()) if isinstance(a, np.ndarray)]):
        np.testing.assert_array_equal(before, after)
    with _accel.disabled():
        expected = lk.cross_entropy.grad_hess(z, y, **kw)
    monkeypatch.setitem(_accel._state, "numba", None)
    kernel_runs.clear()
    got = lk.cross_entropy.grad_hess(z, y, **kw)
    assert kernel_runs == []
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16])
def test_class_id_check_reads_the_range_in_one_pass(dtype, monkeypatch):
    """``_validate.check_class_ids`` reads NumPy int32/int64 ids' range with ``_accel.id_range``
    (other dtypes: the general path); out-of-range ids still raise the message that names the
    first bad id and its position, with and without Numba."""
    z = np.zeros((4, 3))
    ok = np.array([0, 2, 1, 2], dtype=dtype)
    assert _accel.id_range(ok) == ((0, 2) if dtype != np.int16 else None)
    lk.cross_entropy(z, ok)
    for bad, first in ((np.array([0, 3, 1, 5], dtype=dtype), "class id 3 at target[1]"), (np.array([0, 1, -1, 2], dtype=dtype), "class id -1 at target[2]")):
        with pytest.raises(ValueError, match=re.escape(first)):
            lk.cross_entropy(z, bad)
        with monkeypatch.context() as m:
            m.setitem(_accel._state, "numba", None)
            assert _accel.id_range(bad) is None
            with pytest.raises(ValueError, match=re.escape(first)):
                lk.cross_entropy(z, bad)


@pytest.mark.parametrize(
    "kw",
    [
        {"mask": np.zeros(4, bool)},
        {"mask": np.zeros(4, bool), "reduction": "sum"},
        {"ignore_index": 1, "mask": np.array([False, True, False, True])},
        {"normalizer": 7.0},
        {"normalizer": np.array(3.0)},
    ],
    ids=["all-masked", "all-masked-sum", "all-ignored-or-masked", "normalizer", "normalizer-0d"],
)
def test_empty_selections_and_normalizers(kw, rng, kernel_runs):
    """An empty selection gives 0 with zero gradient (never NaN); a normalizer divides the sum."""
    z, y = rng.standard_normal((4, 3)), np.array([0, 1, 2, 1])
    for need in ("value_and_grad", "grad_hess"):
        for a, b in _with_reference(need, z, y, **kw):
            assert np.shape(a) == np.shape(b) and not np.isnan(a).any()
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
    assert kernel_runs == [True, True]


def test_one_class(kernel_runs):
    z = np.array([[3.0], [-1.0]])
    y = np.zeros(2, dtype=np.int64)
    value, grad = lk.cross_entropy.value_and_grad(z, y, reduction="none")
    g, h = lk.cross_entropy.grad_hess(z, y)
    assert kernel_runs == [True, True]
    assert np.all(value == 0) and np.all(grad == 0) and np.all(g == 0) and np.all(h == 0)


# --- probability targets --------------------------------------------------------------------

PROB_CASES = ("plain", "weight", "mask", "class_weight", "all")


def _distributions(rng, n, num_classes, dtype, with_impossible=False):
    """Logits with the edge rows of ``_rows`` and random target distributions (cubed, so that
    some entries are tiny); ``with_impossible`` keeps the row with −inf logits, whose target is
    0 there."""
    z, _ = _rows(rng, n, num_classes, dtype)
    t = rng.random((n, num_classes)) ** 3
    impossible = ~np.isfinite(z)
    if with_impossible:
        t[impossible] = 0.0
    else:
        z[impossible] = -5.0
    t /= t.sum(-1, keepdims=True)
    return z, t.astype(dtype)


def _independent_probs(need, z, t, reduction, weight=None, mask=None, class_weight=None):
    """float64 PyTorch with probability targets (class weights as torch applies them,
    −Σ_k w_k t_k log p_k), weighted, masked and reduced here ("mean": over valid samples)."""
    n, num_classes = z.shape
    valid = np.ones(n, bool) if mask is None else mask.copy()
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    cw = np.ones(num_classes) if class_weight is None else class_weight.astype(np.float64)
    per_sample = torch.nn.functional.cross_entropy(zt, torch.tensor(t, dtype=torch.float64), weight=torch.tensor(cw), reduction="none")
    q_sum = (t.astype(np.float64) * cw).sum(-1)
    return torch_reduced_outputs(need, zt, per_sample, weight, valid, reduction, hess_scale=q_sum)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", PROB_CASES)
def test_probability_targets_equal_reference_and_torch(case, dtype, rng, kernel_runs, monkeypatch, two_threads):
    """As ``test_kernel_equals_reference_and_torch`` for target distributions: rows of 7
    classes (exponentials of a whole chunk in one loop) and of 100 (``ROW_EXP_MIN`` and more:
    in the row's own pass), one chunk per thread or several."""
    monkeypatch.setattr(_accel, "_CHUNK", 64)
    for n, num_classes in ((27, 7), (41, 7), (6, 100)):
        z, t = _distributions(rng, n, num_classes, dtype)
        kw = _options(case, rng, n, num_classes, dtype, np.zeros(n, dtype=np.int64))
        kw.pop("ignore_index", None)  # integer ids only
        # the largest class weight bounds each row's multiplier of its terms
        w = kw.get("weight", np.ones(n)).astype(np.float64)
        cw = float(np.max(kw["class_weight"])) if "class_weight" in kw else 1.0
        row_scale = np.max(np.abs(z), axis=-1).astype(np.float64) + 1.0
        for need in NEEDS:
            for reduction in REDUCTIONS:
                check_against_both(
                    lk.cross_entropy, _independent_probs, need, z, t, reduction, kw, dtype, kernel_runs,
                    term_scale=row_scale * w * cw, row_weight=w * cw, label="probs ",
                )


@pytest.mark.parametrize("num_classes", [7, 100])
def test_probability_targets_with_impossible_classes(num_classes, rng, kernel_runs):
    """A −inf logit whose target is 0 adds nothing (torch's formula gives NaN there: 0·−inf)."""
    z, t = _distributions(rng, 9, num_classes, np.float64, with_impossible=True)
    assert np.isinf(z).any()
    for need in NEEDS:
        for a, b in _with_reference(need, z, t, reduction="none"):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert kernel_runs == [True] * 4


@pytest.mark.parametrize("row", [[np.nan, 0.0, 1.0], [0.0, np.inf, 1.0], [0.0, np.nan, 1.0]], ids=["nan-first", "plus-inf", "nan-below-max"])
def test_probability_rows_left_to_the_reference_path(row, kernel_runs):
    z = np.array([[0.0, 1.0, 2.0], row, [3.0, 0.0, 0.0]])
    t = np.full((3, 3), 1 / 3)
    for need in NEEDS:
        for a, b in _with_reference(need, z, t, reduction="none"):
            np.testing.assert_array_equal(a, b)
    assert kernel_runs == [False] * 4
