"""Small recorded torch calls through a Numba kernel (``interop.torch._small_accel``).

A loss whose ``_accel`` kernel opts in (``small_torch``: today ``binary_cross_entropy``) runs
its grad-in-forward call (CPU, at most ``GRAD_IN_FORWARD_MAX`` elements, a scalar reduction)
as one jitted pass over the tensors' memory instead of its torch ops. These tests check, on
both sides of every switch (the opt-in, ``GRAD_IN_FORWARD_MAX``, the kernel's one-chunk call
at ``_CHUNK``, ``_accel.disabled()``, options and layouts the kernel declines), that the value
and the gradients equal float64 PyTorch (``F.binary_cross_entropy_with_logits``) and the
reference path within a few ulp, and that double backward, gradients of the target,
accumulation and the value checks behave as on the reference path.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import losskit as lk
from losskit import _accel

torch = pytest.importorskip("torch")
pytest.importorskip("numba", reason="the accel extra (Numba) is not installed")
F = torch.nn.functional

from accel_cases import routed, torch_value_and_grad  # noqa: E402, F401  (routed: a fixture)
from losskit.interop import torch as bridge  # noqa: E402

DTYPES = (torch.float32, torch.float64)
RTOL = {torch.float32: 2e-6, torch.float64: 1e-13}
_ours = functools.partial(torch_value_and_grad, lk.binary_cross_entropy)


def _inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(shape, generator=g, dtype=torch.float64) * 4).to(dtype)
    y = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    return z, y


def _peer(z, y, reduction, weight=None):
    """float64 PyTorch: value and gradient."""
    z64 = z.detach().double().requires_grad_(True)
    w = None if weight is None else weight.double()
    v = F.binary_cross_entropy_with_logits(z64, y.double(), weight=w, reduction="sum")
    if reduction == "mean":
        v = v / (z.numel() if weight is None else w.sum())
    (g,) = torch.autograd.grad(v, z64)
    return v.detach(), g


def _close(got, expected, dtype, scale=None, what=""):
    got, expected = got.double(), expected.double()
    scale = expected.abs() if scale is None else scale
    bound = RTOL[dtype] * scale + (1e-30 if dtype == torch.float64 else 1e-37)
    bad = ~((got - expected).abs() <= bound)
    assert not bad.any(), f"{what}: {int(bad.sum())} differ, e.g. {got[bad].flatten()[:3].tolist()} vs {expected[bad].flatten()[:3].tolist()}"


def _check(z, y, reduction, routed, expect_route, **kw):
    before = routed[0]
    v, g = _ours(z, y, reduction=reduction, **kw)
    assert routed[0] == before + expect_route, f"kernel route taken {routed[0] - before} times, expected {expect_route}"
    assert v.dtype == z.dtype and v.shape == () and g.dtype == z.dtype and g.shape == z.shape
    pv, pg = _peer(z, y, reduction, kw.get("weight"))
    terms = F.binary_cross_entropy_with_logits(z.double(), y.double(), reduction="none").abs() + (z.double() * y.double()).abs()
    c = 1.0 / z.numel() if reduction == "mean" else 1.0
    _close(v, pv, z.dtype, scale=torch.as_tensor(float(terms.sum()) * c * 4), what=f"value {reduction}")
    _close(g, pg, z.dtype, scale=pg.abs() + c * (y.double().abs() + 1), what=f"grad {reduction}")
    with _accel.disabled():  # the reference path (torch ops) of the same dtype
        rv, rg = _ours(z, y, reduction=reduction, **kw)
    assert routed[0] == before + expect_route
    _close(v, rv, z.dtype, scale=torch.as_tensor(float(terms.sum()) * c * 4), what="value vs reference")
    _close(g, rg, z.dtype, scale=rg.abs().double() + c * (y.double().abs() + 1), what="grad vs reference")
    return v, g


def test_opt_ins_are_the_entries_that_declare_small_torch():
    declared = {n for n, e in {**_accel.KERNELS, **_accel.ROW_KERNELS}.items() if e.small_torch}
    assert bridge._SMALL_ACCEL == frozenset(declared)
    assert lk.binary_cross_entropy.spec.name in declared and lk.mse.spec.name not in declared


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ("mean", "sum"))
@pytest.mark.parametrize("shape", [(32, 10), (7,), (2, 3, 4), (1,)])
def test_small_calls_take_the_kernel(shape, reduction, dtype, routed):
    z, y = _inputs(shape, dtype)
    _check(z, y, reduction, routed, 1)


@pytest.mark.parametrize("n", [_accel._CHUNK, _accel._CHUNK + 1, bridge.GRAD_IN_FORWARD_MAX, bridge.GRAD_IN_FORWARD_MAX + 1])
def test_both_sides_of_the_chunk_and_of_grad_in_forward_max(n, routed):
    """One chunk (run_numpy's own call) and one more element (``_launch``); the largest
    grad-in-forward call and one more element (the generic bridge: no kernel)."""
    z, y = _inputs((n,), torch.float32, seed=n)
    _check(z, y, "mean", routed, int(n <= bridge.GRAD_IN_FORWARD_MAX))


def test_two_d_one_chunk_numpy_call_on_both_sides_of_the_chunk(rng):
    """``run_numpy``'s own one-chunk call now takes any number of axes: 2-D NumPy
    value_and_grad at one chunk and one more row equals the reference path."""
    for rows in (_accel._CHUNK // 8, _accel._CHUNK // 8 + 1):
        z = (rng.standard_normal((rows, 8)) * 4).astype(np.float32)
        y = rng.random((rows, 8)).astype(np.float32)
        v, g = lk.binary_cross_entropy.value_and_grad(z, y)
        with _accel.disabled():
            rv, rg = lk.binary_cross_entropy.value_and_grad(z, y)
        assert g.shape == z.shape and g.dtype == z.dtype and type(v) is type(rv)
        # σ(z) − y cancels: a few ulp of the terms (c·max(σ, y)), not of the result
        np.testing.assert_allclose(g, rg, rtol=1e-5, atol=8 * np.finfo(np.float32).eps / z.size)
        np.testing.assert_allclose(v, rv, rtol=1e-5)


def test_edges_are_finite_and_equal_the_reference(routed):
    z = torch.tensor([[1e4, -1e4, float("inf"), float("-inf")], [float("inf"), float("-inf"), 0.0, 30.0]])
    y = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.5, 0.5]])
    for reduction in ("mean", "sum"):
        v, g = _ours(z, y, reduction=reduction)
        with _accel.disabled():
            rv, rg = _ours(z, y, reduction=reduction)
        assert torch.isfinite(v) and torch.isfinite(g).all()
        assert float(v) == pytest.approx(float(rv), rel=1e-6)
        torch.testing.assert_close(g, rg, rtol=1e-6, atol=1e-12)
    assert routed[0] == 2


def test_weights_and_masks_run_in_the_kernel(routed):
    z, y = _inputs((16, 5), torch.float32, seed=3)
    w = torch.rand(16, 5, generator=torch.Generator().manual_seed(4)) + 0.5
    _check(z, y, "mean", routed, 1, weight=w)
    mask = torch.rand(16, 5, generator=torch.Generator().manual_seed(5)) > 0.3
    before = routed[0]
    v, g = _ours(z, y, mask=mask)
    assert routed[0] == before + 1
    with _accel.disabled():
        rv, rg = _ours(z, y, mask=mask)
    assert float(v) == pytest.approx(float(rv), rel=1e-6)
    c = 1.0 / int(mask.sum())
    _close(g, rg, torch.float32, scale=rg.abs().double() + c * (y.double().abs() + 1), what="masked grad")
    assert (g[~mask] == 0).all()


def test_declined_calls_take_the_torch_ops(routed):
    """Options and layouts the kernel does not take, a differentiated weight, half precision,
    a tensor subclass and ``_accel.disabled()``: the torch ops run, with the same results."""
    z, y = _inputs((8, 6), torch.float32, seed=6)
    for kw in ({"pos_weight": 2.0}, {"label_smoothing": 0.1}):
        zr = z.clone().requires_grad_(True)
        v = lk.binary_cross_entropy(zr, y, **kw)
        v.backward()
        assert torch.isfinite(v) and torch.isfinite(zr.grad).all()
    _check(z.t(), y.t(), "mean", routed, 0)  # transposed: not C-contiguous
    w = (torch.rand(8, 6) + 0.5).requires_grad_(True)
    zr = z.clone().requires_grad_(True)
    lk.binary_cross_entropy(zr, y, weight=w).backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()

    class Marked(torch.Tensor):
        pass

    zm = z.clone().as_subclass(Marked).requires_grad_(True)
    lk.binary_cross_entropy(zm, y).backward()
    with _accel.disabled():
        _check(z, y, "sum", routed, 0)
    assert routed[0] == 0
    zh = z.half().requires_grad_(True)
    lk.binary_cross_entropy(zh, y.half()).backward()
    assert routed[0] == 0


def test_double_backward_differentiates_the_closed_form(routed):
    z, y = _inputs((6, 4), torch.float64, seed=7)
    results = []
    for off in (False, True):
        zr = z.clone().requires_grad_(True)
        if off:
            with _accel.disabled():
                v = lk.binary_cross_entropy(zr, y)
        else:
            v = lk.binary_cross_entropy(zr, y)
        (g,) = torch.autograd.grad(v, zr, create_graph=True)
        (h,) = torch.autograd.grad((g * torch.arange(24.0, dtype=torch.float64).reshape(6, 4)).sum(), zr)
        results.append((g.detach(), h))
    assert routed[0] == 1
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-13, atol=1e-15)
    # d²ℓ/dz² = σ(z)(1 − σ(z))/N, the independent closed form
    s = torch.sigmoid(z)
    torch.testing.assert_close(results[0][1], s * (1 - s) * torch.arange(24.0, dtype=torch.float64).reshape(6, 4) / 24)


def test_target_gradient_accumulation_and_retained_graph(routed):
    z, y = _inputs((5, 3), torch.float64, seed=8)
    zr, yr = z.clone().requires_grad_(True), y.clone().requires_grad_(True)
    v = lk.binary_cross_entropy(zr, yr, reduction="sum")
    v.backward(retain_graph=True)
    v.backward(torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(zr.grad, 3 * (torch.sigmoid(z) - y))
    torch.testing.assert_close(yr.grad, -3 * z)  # ∂ℓ/∂y = −z
    assert routed[0] == 1


def test_value_checks_still_run_first(routed):
    z, y = _inputs((4, 3), torch.float32, seed=9)
    y[1, 2] = 1.5
    with pytest.raises(ValueError, match=r"must hold probabilities in \[0, 1\]; found 1.5 at target\[1, 2\]"):
        lk.binary_cross_entropy(z.requires_grad_(True), y)
    assert routed[0] == 0


def test_without_numba_the_torch_ops_run(routed, monkeypatch):
    monkeypatch.setitem(_accel._state, "numba", None)
    z, y = _inputs((8, 3), torch.float32, seed=10)
    v, g = _ours(z, y)
    assert routed[0] == 0
    pv, pg = _peer(z, y, "mean")
    assert float(v) == pytest.approx(float(pv), rel=1e-6)
    torch.testing.assert_close(g.double(), pg, rtol=1e-5, atol=1e-8)
