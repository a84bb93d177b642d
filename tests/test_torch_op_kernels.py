"""The torch-specific kernels (fewer, fused torch ops for the per-call cost of small batches,
issue 16) against independent references: torch float64 of the textbook formula, 50-digit
mpmath for the tiny losses the precise arithmetic keeps, and the NumPy path at the edges
(−inf logits under zero targets, ties, NaN). Each kernel also runs under autograd (value,
gradient, double backward) through the generic suites; here: what is special to its ops."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

torch = pytest.importorskip("torch")


def _kl_ref64(z, t):
    """Σ t (log t − log_softmax z), 0·log 0 = 0, in float64, per row."""
    z, t = torch.as_tensor(z, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64)
    terms = torch.special.xlogy(t, t) - t * torch.log_softmax(z, -1)
    return torch.where(t == 0, 0.0, terms).sum(-1)


# --- kl_divergence ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_kl_value_and_grad_match_float64(dtype, reduction, rng):
    z = rng.standard_normal((6, 5)) * 3
    t = rng.random((6, 5)) ** 2
    t[1, 2] = 0.0
    t /= t.sum(-1, keepdims=True)
    zt = torch.tensor(z, dtype=dtype, requires_grad=True)
    tt = torch.tensor(t, dtype=dtype)
    v = lk.kl_divergence(zt, tt, reduction=reduction)
    (v.sum()).backward()
    ref_z = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    ref = _kl_ref64(ref_z, t)
    ref = ref if reduction == "none" else ref.mean()
    ref.sum().backward()
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    np.testing.assert_allclose(v.detach().double().numpy(), ref.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(zt.grad.double().numpy(), ref_z.grad.numpy(), rtol=tol, atol=tol)
    # the same numbers from value_and_grad without autograd (the generic forward's call)
    v2, g2 = lk.kl_divergence.value_and_grad(zt.detach(), tt, reduction=reduction)
    np.testing.assert_allclose(v2.double().numpy(), ref.detach().numpy(), rtol=tol, atol=tol)


def test_kl_confident_one_hot_keeps_tiny_values_in_float32():
    """KL against a one-hot target is the cross-entropy: the split keeps its tiny values."""
    mpmath = pytest.importorskip("mpmath")
    z = np.zeros((3, 4), dtype=np.float32)
    z[0, 1], z[1, 2], z[2, 0] = 25.0, 18.0, 30.0
    t = np.zeros_like(z)
    t[0, 1] = t[1, 2] = t[2, 0] = 1.0
    got = lk.kl_divergence(torch.tensor(z, requires_grad=True), torch.tensor(t), reduction="none").detach().numpy()
    for i, y in enumerate((1, 2, 0)):
        with mpmath.workdps(50):
            row = [mpmath.mpf(float(x)) for x in z[i]]
            ref = mpmath.log(mpmath.fsum(mpmath.exp(x - row[y]) for x in row))
        assert abs(float(got[i]) - float(ref)) <= 1e-6 * float(ref), (i, got[i], ref)


def test_kl_edges_match_numpy():
    """−inf logits under zero targets contribute 0; mass on a −inf logit is an infinite KL;
    ties count as in the split; NaN logits and targets propagate: as on NumPy."""
    inf, nan = np.inf, np.nan
    z = np.array([[0.0, -inf, 2.0], [3.0, 3.0, 1.0], [1e4, -1e4, 0.0], [0.0, -inf, 1.0], [nan, 0.0, 1.0], [0.0, 1.0, 2.0]])
    t = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [nan, 0.5, 0.5]])
    want_v, want_g = lk.kl_divergence.value_and_grad(z, t, reduction="none", validate=False)
    for record in (False, True):
        zt = torch.tensor(z, requires_grad=record)
        v, g = lk.kl_divergence.value_and_grad(zt.detach(), torch.tensor(t), reduction="none", validate=False)
        np.testing.assert_allclose(v.numpy(), want_v, rtol=1e-14)
        np.testing.assert_allclose(g.numpy(), want_g, rtol=1e-14, atol=1e-300)
        if record:  # the recorded call (small inputs: the gradient computed in the forward)
            out = lk.kl_divergence(zt, torch.tensor(t), reduction="sum", validate=False)
            out.backward()
            np.testing.assert_allclose(zt.grad.numpy(), want_g, rtol=1e-14, atol=1e-300)
    assert want_v[3] == inf and np.isnan(want_v[4]) and np.isnan(want_v[5])


def test_kl_double_backward_matches_the_hessian():
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(torch.randn(3, 4, dtype=torch.float64), -1)
    (g,) = torch.autograd.grad(lk.kl_divergence(z, t, reduction="sum"), z, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), z)
    p = torch.softmax(z.detach(), -1)
    # d/dz_j Σ_k g_k with g = softmax·Σt − t: Σt·(p_j − p_j Σ_k p_k) = 0
    np.testing.assert_allclose(h.numpy(), np.zeros((3, 4)), atol=1e-14)
    np.testing.assert_allclose(g.detach().numpy(), (p - t).numpy(), atol=1e-14)
