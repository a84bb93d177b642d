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
