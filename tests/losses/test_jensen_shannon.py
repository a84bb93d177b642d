"""jensen_shannon's own behaviour: symmetric at beta = 1/2, zero iff the distributions are
equal, bounded by log 2, 0 by the formula at beta = 0 and 1, the (1 - beta) / beta swap
identity, and both gradients against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk


def test_symmetric_at_half(rng):
    z, zt = rng.standard_normal((6, 5)) * 2, rng.standard_normal((6, 5)) * 2
    np.testing.assert_allclose(lk.jensen_shannon(z, zt, reduction="none"), lk.jensen_shannon(zt, z, reduction="none"), rtol=1e-12)
    gz, gt = lk.jensen_shannon.grad(z, zt)
    hz, ht = lk.jensen_shannon.grad(zt, z)
    np.testing.assert_allclose(gz, ht, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(gt, hz, rtol=1e-10, atol=1e-15)


def test_swapping_inputs_swaps_beta(rng):
    z, zt = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    np.testing.assert_allclose(lk.jensen_shannon(z, zt, beta=0.3), lk.jensen_shannon(zt, z, beta=0.7), rtol=1e-12)


def test_zero_iff_equal_and_bounded(rng):
    z = rng.standard_normal((6, 5))
    assert np.all(np.abs(lk.jensen_shannon(z, z + 3.0, reduction="none")) < 1e-15)
    zt = rng.standard_normal((6, 5))
    v = lk.jensen_shannon(z, zt, reduction="none")
    assert np.all(v > 1e-6) and np.all(v <= np.log(2))
    far = lk.jensen_shannon(np.array([[1e4, -1e4]]), np.array([[-1e4, 1e4]]))
    np.testing.assert_allclose(far, np.log(2), rtol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_zero_at_the_ends_by_this_formula(beta, rng):
    z, zt = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    assert float(lk.jensen_shannon(z, zt, beta=beta)) == 0.0
    assert all(np.all(g == 0) for g in lk.jensen_shannon.grad(z, zt, beta=beta))


@pytest.mark.parametrize("beta", [0.5, 0.25])
def test_both_gradients_match_torch_autograd(beta, rng):
    torch = pytest.importorskip("torch")
    z, zt = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    a, b = torch.tensor(z, requires_grad=True), torch.tensor(zt, requires_grad=True)
    q, p = torch.softmax(a, -1), torch.softmax(b, -1)
    m = beta * p + (1 - beta) * q
    ref = (beta * (p * (p.log() - m.log())).sum(-1) + (1 - beta) * (q * (q.log() - m.log())).sum(-1)).mean()
    ref.backward()
    gz, gt = lk.jensen_shannon.grad(z, zt, beta=beta)
    np.testing.assert_allclose(lk.jensen_shannon(z, zt, beta=beta), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(gz, a.grad.numpy(), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(gt, b.grad.numpy(), rtol=1e-9, atol=1e-15)
