"""Closed-form gradients equal 4th-order central finite differences and PyTorch autograd of
the peer's loss; Hessian diagonals equal autograd's. Run over every registered loss."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from cases import case_ids, draw, losskit_options, option_id

torch = pytest.importorskip("torch")


def finite_difference_grad(f, x, h=1e-4):
    """4th-order central differences of scalar f at x (float64)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        def at(delta):
            xx = x.copy()
            xx[idx] += delta
            return f(xx)

        g[idx] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return g


@pytest.mark.parametrize("param", case_ids(), ids=option_id)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted+masked"])
def test_grad_matches_finite_differences(param, weighted, rng):
    name, i = param
    case, o, pred, target = draw(name, i, rng)
    loss = lk.registry[name]
    opts = losskit_options(o)
    if weighted:
        shape = pred.shape[:-1] if case.sample_axis_dropped else pred.shape
        opts["weight"] = rng.uniform(0.1, 2.0, shape)
        opts["mask"] = rng.random(shape) < 0.7
        opts["mask"].flat[0] = True
    expected = finite_difference_grad(lambda p: float(loss(p, target, **opts)), pred)
    got = loss.grad(pred, target, **opts)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    value, grad = loss.value_and_grad(pred, target, **opts)
    np.testing.assert_allclose(value, loss(pred, target, **opts), rtol=1e-13)
    np.testing.assert_allclose(grad, got, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("param", case_ids(), ids=option_id)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_grad_and_hessian_match_torch_autograd_of_the_peer(param, reduction, rng):
    name, i = param
    case, o, pred, target = draw(name, i, rng)
    loss = lk.registry[name]
    t_target = torch.as_tensor(target)
    upstream = None

    def ref(p):
        out = case.torch_ref(p, t_target, reduction, **o)
        return out if reduction != "none" else (out * upstream).sum()

    if reduction == "none":
        shape = pred.shape[:-1] if case.sample_axis_dropped else pred.shape
        upstream = torch.as_tensor(rng.uniform(0.5, 1.5, shape))
    tp = torch.tensor(pred, requires_grad=True)
    (g_ref,) = torch.autograd.grad(ref(tp), tp)
    hess_ref = torch.autograd.functional.hessian(ref, torch.tensor(pred)).reshape(pred.size, pred.size).diagonal().reshape(pred.shape)

    opts = losskit_options(o)
    if reduction == "none":
        # gradient of Σ u_i ℓ_i: the per-sample weight plays the cotangent
        g, h = loss.grad_hess(pred, target, reduction="sum", weight=upstream.numpy(), **opts)
    else:
        g, h = loss.grad_hess(pred, target, reduction=reduction, **opts)
    np.testing.assert_allclose(g, g_ref.numpy(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(h, hess_ref.numpy(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(loss.grad(pred, target, reduction=reduction if reduction != "none" else "sum",
                                         weight=None if upstream is None else upstream.numpy(), **opts), g, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("param", case_ids(), ids=option_id)
def test_grad_on_every_backend_matches_numpy(param, backend, rng):
    name, i = param
    case, o, pred, target = draw(name, i, rng)
    loss = lk.registry[name]
    opts = losskit_options(o)
    expected_g, expected_h = loss.grad_hess(pred, target, **opts)
    b_opts = {k: (backend.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
    g, h = loss.grad_hess(backend.asarray(pred), backend.asarray(target), **b_opts)
    assert backend.is_native(g) and backend.is_native(h)
    np.testing.assert_allclose(backend.to_numpy(g), expected_g, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(h), expected_h, rtol=1e-12, atol=1e-15)
    v, g2 = loss.value_and_grad(backend.asarray(pred), backend.asarray(target), **b_opts)
    np.testing.assert_allclose(backend.to_numpy(g2), expected_g, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(v), loss(pred, target, **opts), rtol=1e-12)
