"""lovasz_softmax and lovasz_hinge: what is special to them (the registry-driven suites compare
them with smp's LovaszLoss, re-run in float64). Here: smp's own float32 code, empty and fully
ignored sets, a single pixel, and the subgradient at extreme logits."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import losskit as lk

torch = pytest.importorskip("torch")
if importlib.util.find_spec("segmentation_models_pytorch") is None:
    pytest.skip("segmentation_models_pytorch is not installed", allow_module_level=True)

from losskit.losses.lovasz import _smp_lovasz_module  # noqa: E402


@pytest.mark.parametrize("per_image", [False, True])
def test_float32_equals_smp_unpatched(per_image, rng, monkeypatch):
    module = _smp_lovasz_module()
    monkeypatch.setattr(module, "_lovasz_grad", module._losskit_original_grad)  # smp's own float32 code
    z = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    t = rng.integers(0, 4, (2, 6, 5))
    loss = module.LovaszLoss("multiclass", per_image=per_image)
    zt = torch.tensor(z, requires_grad=True)
    ref = loss(zt, torch.tensor(t))
    ref.backward()
    x = torch.tensor(z, requires_grad=True)
    v = lk.lovasz_softmax(x, torch.tensor(t), per_image=per_image)
    v.backward()
    torch.testing.assert_close(v, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, zt.grad, rtol=1e-4, atol=1e-6)


def test_empty_and_ignored_sets_single_pixel(rng):
    z = rng.standard_normal((2, 3, 4, 4)) * 1e4
    ignored = np.full((2, 4, 4), -1)
    v, g = lk.lovasz_softmax.value_and_grad(z, ignored, ignore_index=-1, per_image=True)
    assert v == 0 and np.all(g == 0)
    zb = rng.standard_normal((2, 1, 4, 4)) * 1e4
    v, g = lk.lovasz_hinge.value_and_grad(zb, np.full(zb.shape, -1.0), ignore_index=-1)
    assert v == 0 and np.all(g == 0)
    for dtype in (np.float32, np.float64):
        one = np.array([[[[3.0]], [[-2.0]]]], dtype=dtype)
        v, g = lk.lovasz_softmax.value_and_grad(one, np.array([[[1]]]))
        assert np.isfinite(v) and np.all(np.isfinite(g))
        v, g = lk.lovasz_hinge.value_and_grad(one[:, :1], np.ones((1, 1, 1, 1)))
        assert np.isfinite(v) and np.all(np.isfinite(g))


def test_classes_option(rng):
    z = rng.standard_normal((2, 3, 4, 4))
    t = np.zeros((2, 4, 4), dtype=np.int64)  # only class 0 present
    present = lk.lovasz_softmax(z, t)
    assert np.isclose(present, lk.lovasz_softmax(z, t, classes=[0]))
    assert lk.lovasz_softmax(z, t, classes="all") != present
    with pytest.raises(ValueError, match="`classes` must be 'present', 'all'"):
        lk.lovasz_softmax(z, t, classes="some")
    with pytest.raises(NotImplementedError, match="no closed-form Hessian"):
        lk.lovasz_hinge.grad_hess(z[:, :1], np.ones((2, 1, 4, 4)))


@pytest.mark.parametrize("per_image", [False, True])
def test_hinge_ignore_index_equals_smp(per_image, rng):
    z = rng.standard_normal((3, 1, 5, 4)) * 2
    t = np.where(rng.random(z.shape) < 0.2, -1.0, (rng.random(z.shape) < 0.4).astype(np.float64))
    zt = torch.tensor(z, requires_grad=True)
    loss = _smp_lovasz_module().LovaszLoss("binary", per_image=per_image, ignore_index=-1)
    ref = loss(zt, torch.tensor(t))
    ref.backward()
    v, g = lk.lovasz_hinge.value_and_grad(z, t, ignore_index=-1, per_image=per_image)
    np.testing.assert_allclose(v, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-12, atol=1e-15)


# --- the torch integer-key path (radix sort of the float bits) against the generic path ----
# The generic path (float sort, array-API ops) runs on the same tensors when autograd records
# (a tensor that requires grad, grad enabled): both see the same softmax, so they must agree to
# rounding of the final sums, with the same tie order. Sizes on both sides of torch's radix
# threshold (1-D rows of at least 32768 elements).

from losskit.losses import _lovasz_torch  # noqa: E402


def _both_paths(loss, z, t, monkeypatch, **kw):
    """(value, grad) of the torch fast path and of the generic path, and how often each ran."""
    calls = []
    for name in ("softmax_errors", "hinge_errors"):
        original = getattr(_lovasz_torch, name)
        monkeypatch.setattr(_lovasz_torch, name, lambda *a, _f=original: calls.append(1) or _f(*a))
    zt, tt = torch.tensor(z), torch.tensor(t)
    kw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    with torch.no_grad():
        fast = loss.value_and_grad(zt, tt, **kw)
    n_fast = len(calls)
    with torch.enable_grad():
        generic = loss.value_and_grad(zt.clone().requires_grad_(True), tt, **kw)
    assert n_fast == 1 and len(calls) == 1, "the fast path must run once, the generic path not at all"
    return fast, tuple(x.detach() for x in generic)


def _assert_paths_agree(fast, generic, dtype):
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == np.float64 else dict(rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(fast[0], generic[0], **tol)
    torch.testing.assert_close(fast[1], generic[1], **tol)


SOFTMAX_CASES = [
    {},
    {"per_image": True},
    {"ignore_index": -1},
    {"ignore_index": -1, "per_image": True, "classes": "all"},
    {"classes": [0, 2]},
    {"weight": "positive"},
    {"weight": "signed", "per_image": True},
    {"mask": "pixels"},
    {"mask": "full", "weight": "full"},
    {"axis": -1},
]


def _options(case, rng, z_shape, axis):
    kw = dict(case)
    pixel = tuple(s for i, s in enumerate(z_shape) if i != axis % len(z_shape))
    if kw.get("weight") == "positive":
        kw["weight"] = np.where(rng.random(pixel) < 0.2, 0.0, rng.random(pixel) * 2)
    elif kw.get("weight") == "signed":
        kw["weight"] = rng.standard_normal(pixel)
    elif kw.get("weight") == "full":
        kw["weight"] = rng.random(z_shape)
    if kw.get("mask") == "pixels":
        kw["mask"] = rng.random(pixel) < 0.7
    elif kw.get("mask") == "full":
        kw["mask"] = rng.random(z_shape) < 0.7
    return kw, pixel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_softmax_fast_path_equals_generic(case, dtype, rng, monkeypatch):
    axis = case.get("axis", 1)
    shape = (3, 4, 5, 4) if axis == 1 else (3, 5, 4, 4)
    z = (rng.standard_normal(shape) * 2).astype(dtype)
    kw, pixel = _options(case, rng, shape, axis)
    t = rng.integers(0, 4, pixel)
    if kw.get("ignore_index") is not None:
        t = np.where(rng.random(pixel) < 0.3, -1, t)
    _assert_paths_agree(*_both_paths(lk.lovasz_softmax, z, t, monkeypatch, **kw), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_fast_path_ties_keep_input_order(dtype, rng, monkeypatch):
    """Logits on a coarse grid: many equal errors (and 0 errors); the subgradient at ties
    depends on their order, which both paths take from the input."""
    z = rng.integers(-2, 3, (2, 3, 6, 6)).astype(dtype)
    t = rng.integers(0, 3, (2, 6, 6))
    for kw in ({}, {"per_image": True}, {"weight": np.where(rng.random((2, 6, 6)) < 0.5, 0.0, -1.0)}):
        fast, generic = _both_paths(lk.lovasz_softmax, z, t, monkeypatch, **kw)
        monkeypatch.undo()
        _assert_paths_agree(fast, generic, dtype)


@pytest.mark.parametrize("per_image", [False, True])
def test_softmax_fast_path_above_radix_threshold_equals_smp(per_image, rng, monkeypatch):
    """Rows of 40000 pixels (per set): torch's radix sort; against smp in float64 too."""
    z = rng.standard_normal((2, 3, 200, 100)) * 2
    t = rng.integers(0, 3, (2, 200, 100))
    fast, generic = _both_paths(lk.lovasz_softmax, z, t, monkeypatch, per_image=per_image)
    _assert_paths_agree(fast, generic, np.float64)
    zt = torch.tensor(z, requires_grad=True)
    loss = _smp_lovasz_module().LovaszLoss("multiclass", per_image=per_image)
    ref = loss(zt, torch.tensor(t))
    ref.backward()
    torch.testing.assert_close(fast[0], ref.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close(fast[1], zt.grad, rtol=1e-8, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [{}, {"per_image": False}, {"ignore_index": -1}, {"mask": True, "weight": True}, {"per_image": False, "weight": True}])
def test_hinge_fast_path_equals_generic(case, dtype, rng, monkeypatch):
    shape = (3, 1, 200, 120) if case.get("per_image") is False else (3, 1, 6, 5)  # above / below the radix threshold
    z = (rng.standard_normal(shape) * 2).astype(dtype)
    z.flat[:7] = np.array([1.0, -1.0, 0.0, 1e4, -1e4, 1.0, 1.0], dtype=dtype)  # on the hinge, saturated
    t = (rng.random(shape) < 0.4).astype(dtype)
    kw = dict(case)
    if kw.get("ignore_index") is not None:
        t = np.where(rng.random(shape) < 0.2, dtype(-1), t)
    if kw.pop("mask", False):
        kw["mask"] = rng.random(shape) < 0.7
    if kw.get("weight"):
        kw["weight"] = rng.standard_normal(shape).astype(dtype)
    _assert_paths_agree(*_both_paths(lk.lovasz_hinge, z, t, monkeypatch, **kw), dtype)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_mask_removes_pixels_from_every_count(backend, rng):
    """A masked pixel is as if it were not there: the loss on the kept pixels alone (hinge:
    its foreground left Σfg as well, which the generic hinge path once kept)."""
    conv = (lambda a: torch.tensor(a)) if backend == "torch" else (lambda a: a)
    z = rng.standard_normal((1, 1, 8, 6)) * 2
    t = (rng.random(z.shape) < 0.5).astype(np.float64)
    m = rng.random(z.shape) < 0.6
    kept = lk.lovasz_hinge(conv(z[m].reshape(1, 1, -1)), conv(t[m].reshape(1, 1, -1)))
    np.testing.assert_allclose(float(lk.lovasz_hinge(conv(z), conv(t), mask=conv(m))), float(kept), rtol=1e-12)
    zs = rng.standard_normal((1, 3, 8, 6))
    ts = rng.integers(0, 3, (1, 8, 6))
    ms = rng.random((1, 8, 6)) < 0.6
    kept = lk.lovasz_softmax(conv(zs.transpose(0, 2, 3, 1)[ms].T[None, :, :]), conv(ts[ms][None]))
    np.testing.assert_allclose(float(lk.lovasz_softmax(conv(zs), conv(ts), mask=conv(ms))), float(kept), rtol=1e-12)


def test_torch_nan_and_autograd_take_the_generic_path(rng):
    z = torch.tensor(rng.standard_normal((2, 3, 4, 4)))
    t = torch.tensor(rng.integers(0, 3, (2, 4, 4)))
    z[0, 1, 2, 2] = float("nan")
    v, g = lk.lovasz_softmax.value_and_grad(z, t)
    vn, gn = lk.lovasz_softmax.value_and_grad(z.numpy(), t.numpy())
    assert torch.isnan(v) and np.isnan(vn)
    np.testing.assert_array_equal(torch.isnan(g).numpy(), np.isnan(gn))
    x = torch.tensor(rng.standard_normal((1, 3, 2, 3)), requires_grad=True)  # small: the suites gradcheck the rest
    t = t[:1, :2, :3]
    assert torch.autograd.gradcheck(lambda a: lk.lovasz_softmax(a, t), (x,))
    assert torch.autograd.gradgradcheck(lambda a: lk.lovasz_softmax(a, t), (x,))


@pytest.mark.parametrize("shape, axis, options", [((4,), 0, {}), ((5, 3), -1, {"per_image": True}), ((2, 3, 2, 3, 4), 1, {"per_image": True}), ((2, 3, 2, 3, 4), 1, {"classes": "all", "ignore_index": -1})])
def test_softmax_fast_path_other_layouts(shape, axis, options, rng, monkeypatch):
    """One pixel of logits (C,), a table (N, C) with the class axis last, a 3-D volume."""
    z = rng.standard_normal(shape)
    pixel = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    t = rng.integers(0, shape[axis], pixel)
    if "ignore_index" in options:
        t = np.where(rng.random(pixel) < 0.3, -1, t)
    _assert_paths_agree(*_both_paths(lk.lovasz_softmax, z, t, monkeypatch, axis=axis, **options), np.float64)
