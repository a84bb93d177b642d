"""triplet_margin: the several-input kind. Values and the gradients of all three inputs equal
torch.nn.functional.triplet_margin_loss and its autograd, on every backend; ``.grad`` is always
a tuple with one gradient per input."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional

OPTIONS = [{}, {"margin": 0.5, "p": 1.0}, {"p": 3.0, "swap": True}, {"swap": True, "eps": 0.0, "margin": 2.0}]


def _triplets(rng, shape=(8, 5)):
    a = rng.standard_normal(shape)
    return a, a + 0.7 * rng.standard_normal(shape), a + 1.2 * rng.standard_normal(shape)


@pytest.mark.parametrize("o", OPTIONS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_input_gradient_matches_torch_autograd(o, reduction, rng, backend):
    arrays = _triplets(rng)
    leaves = [torch.tensor(x, requires_grad=True) for x in arrays]
    ref = F.triplet_margin_loss(*leaves, reduction=reduction, **o)
    cot = torch.as_tensor(rng.uniform(0.5, 1.5, tuple(ref.shape)))
    ref.backward(cot)
    got = lk.triplet_margin(*(backend.asarray(x) for x in arrays), reduction=reduction, **o)
    np.testing.assert_allclose(backend.to_numpy(got), ref.detach().numpy(), rtol=1e-12)
    kw = {"reduction": "sum", "weight": backend.asarray(cot.numpy())} if reduction == "none" else {"reduction": reduction}
    grads = lk.triplet_margin.grad(*(backend.asarray(x) for x in arrays), **kw, **o)
    assert isinstance(grads, tuple) and len(grads) == 3
    scale = 1.0 if reduction == "none" else float(cot)
    for g, leaf in zip(grads, leaves):
        np.testing.assert_allclose(backend.to_numpy(g) * scale, leaf.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_torch_and_jax_hooks_return_all_three_gradients(rng):
    arrays = _triplets(rng, (4, 3))
    leaves = [torch.tensor(x, requires_grad=True) for x in arrays]
    assert torch.autograd.gradcheck(lambda *xs: lk.triplet_margin(*xs, swap=True, reduction="none"), leaves)
    assert torch.autograd.gradgradcheck(lambda *xs: lk.triplet_margin(*xs, p=3.0), leaves)
    lk.triplet_margin(*leaves).backward()
    for leaf, g in zip(leaves, lk.triplet_margin.grad(*arrays)):
        np.testing.assert_allclose(leaf.grad.numpy(), g, rtol=1e-12)
    jax = pytest.importorskip("jax")
    gs = jax.grad(lambda *xs: lk.triplet_margin(*xs), argnums=(0, 1, 2))(*map(jax.numpy.asarray, arrays))
    for got, g in zip(gs, lk.triplet_margin.grad(*arrays)):
        np.testing.assert_allclose(np.asarray(got), g, rtol=1e-12)
    per = jax.jit(jax.vmap(lambda *xs: lk.triplet_margin(*xs, reduction="none")))(*map(jax.numpy.asarray, arrays))
    np.testing.assert_allclose(np.asarray(per), lk.triplet_margin(*arrays, reduction="none"), rtol=1e-12)


def test_weights_masks_and_errors(rng):
    a, p, n = _triplets(rng)
    w = rng.uniform(0.5, 2, 8)
    m = rng.random(8) < 0.7
    m[0] = True
    per = lk.triplet_margin(a, p, n, reduction="none")
    np.testing.assert_allclose(lk.triplet_margin(a, p, n, weight=w, mask=m), np.sum((w * per)[m]) / np.sum(w[m]), rtol=1e-12)
    with pytest.raises(TypeError, match="takes 3 positional arrays \\(anchor, positive, negative\\), got 2"):
        lk.triplet_margin(a, p)
    with pytest.raises(ValueError, match="`anchor` and `negative` must have the same shape"):
        lk.triplet_margin(a, p, n[:, :2])
    with pytest.raises(NotImplementedError, match="no closed-form Hessian"):
        lk.triplet_margin.grad_hess(a, p, n)
    with pytest.raises(TypeError, match="`swap` must be True or False"):
        lk.triplet_margin(a, p, n, swap=1)
