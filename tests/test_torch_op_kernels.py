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


# --- cross_entropy with class ids (``_softmax.ids_nll_torch``) ---------------------------------


def _ce_mpmath(mpmath, row, y):
    with mpmath.workdps(60):
        r = [mpmath.mpf(float(x)) for x in row]
        return mpmath.log(mpmath.fsum(mpmath.exp(x - r[y]) for x in r))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ce_ids_value_on_both_sides_of_the_half_switch_matches_mpmath(dtype):
    """q = Σ_{k≠y} p_k < ½ takes −log1p(−q) (the label is the maximum), q >= ½ takes −log p_y
    from log_softmax: rows just either side of q = ½, confident rows with tiny losses, and
    very wrong rows (p_y underflows; the loss is still |z_y − m| + ...)."""
    mpmath = pytest.importorskip("mpmath")
    from losskit.losses import _softmax

    z = np.zeros((8, 3))
    z[0, 0] = np.log(2.0) + 1e-3  # p_0 just above ½ (q just below)
    z[1, 0] = np.log(2.0) - 1e-3  # p_0 just below ½
    z[2, 0], z[3, 0], z[4, 1] = 25.0, 60.0, 8.0  # confident: losses 2.8e-11, 1.7e-26, 6.7e-4
    z[5, 1], z[6, 2] = 1e4, 300.0  # wrong and sure: p_y underflows
    z[7] = [3.0, 3.0, -2.0]  # a tie at the maximum
    y = np.array([0, 0, 0, 0, 1, 0, 0, 0])
    zt = torch.tensor(z, dtype=dtype)
    v, g = _softmax.ids_nll_torch(zt, torch.tensor(y), True)
    rel = 2e-6 if dtype == torch.float32 else 1e-14
    for i in range(len(y)):
        ref = _ce_mpmath(mpmath, zt[i].tolist(), y[i])
        assert abs(float(v[i]) - float(ref)) <= rel * float(ref), (i, float(v[i]), ref)
        # the label's gradient entry −q = p_y − 1, exact to a few ulps of q (not of 1)
        with mpmath.workdps(60):
            r = [mpmath.mpf(float(x)) for x in zt[i].tolist()]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in r))
            ref_gy = -mpmath.fsum(mpmath.exp(x - lse) for k, x in enumerate(r) if k != y[i])
        assert abs(float(g[i, y[i]]) - float(ref_gy)) <= 4 * rel * abs(float(ref_gy)) + 1e-300, (i, float(g[i, y[i]]), ref_gy)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ce_ids_value_and_grad_match_torch_float64(dtype, rng):
    z = rng.standard_normal((7, 6)) * 4
    y = rng.integers(0, 6, 7)
    z[np.arange(7)[:3], y[:3]] += 10.0  # some confident rows (the q < ½ side)
    ref_z = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(ref_z, torch.tensor(y), reduction="sum")
    ref.backward()
    v, g = lk.cross_entropy.value_and_grad(torch.tensor(z, dtype=dtype), torch.tensor(y), reduction="sum")
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(float(v), float(ref.detach()), rtol=tol)
    np.testing.assert_allclose(g.double().numpy(), ref_z.grad.numpy(), rtol=tol, atol=tol)


def test_ce_ids_edges_match_numpy_and_autograd_paths_agree():
    """−inf action masks, ±1e4, a −inf label (an infinite loss); the in-place kernel (no
    autograd) and the out-of-place one (recorded: double backward through the closed form)."""
    inf = np.inf
    z = np.array([[1e4, -1e4, 0.0, 0.0], [0.0, -inf, 2.0, 0.0], [-inf, -inf, 1.0, -inf], [-1e4, 1e4, -1e4, 0.0], [0.0, -inf, 1.0, 2.0]])
    y = np.array([0, 2, 2, 1, 1])
    want_v, want_g = lk.cross_entropy.value_and_grad(z, y, reduction="none")
    v, g = lk.cross_entropy.value_and_grad(torch.tensor(z), torch.tensor(y), reduction="none")
    np.testing.assert_allclose(v.numpy(), want_v, rtol=1e-14)
    np.testing.assert_allclose(g.numpy(), want_g, rtol=1e-14, atol=1e-300)
    assert want_v[4] == inf
    from losskit.losses import _softmax

    zt = torch.tensor(z[:4], requires_grad=True)
    with torch.enable_grad():
        v2, g2 = _softmax.ids_nll_torch(zt, torch.tensor(y[:4]), True)
    assert v2.requires_grad and g2.requires_grad  # recorded: out-of-place ops
    np.testing.assert_allclose(v2.detach().numpy(), want_v[:4], rtol=1e-14)
    np.testing.assert_allclose(g2.detach().numpy(), want_g[:4], rtol=1e-14, atol=1e-300)
    (h,) = torch.autograd.grad(g2[:, 0].sum(), zt)
    p = torch.softmax(zt.detach(), -1)
    want_h = -p[:, :1] * p  # d p_0 / d z_k = p_0(δ_0k − p_k)
    want_h[:, 0] += p[:, 0]
    np.testing.assert_allclose(h.numpy(), want_h.numpy(), atol=1e-12)


# --- binary_cross_entropy without pos_weight (−log σ(|z|) + addcmul on torch) ----------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bce_torch_value_matches_mpmath_and_grad_matches_float64(dtype):
    """The torch form (max(z, 0) − y·z) − log σ(|z|) keeps tiny losses of confident right
    predictions (both signs of z) to a few ulps relative; ±inf logits are sure predictions."""
    mpmath = pytest.importorskip("mpmath")
    z = np.array([-100.0, -40.0, -20.0, -5.0, -1e-8, 0.0, 1e-8, 3.0, 20.0, 40.0, 100.0, 30.0, -30.0])
    for y in (0.0, 0.3, 1.0):
        t = np.full_like(z, y)
        zt = torch.tensor(z, dtype=dtype, requires_grad=True)
        v = lk.binary_cross_entropy(zt, torch.tensor(t, dtype=dtype), reduction="none")
        v.sum().backward()
        v = v.detach()
        rel = 3e-7 if dtype == torch.float32 else 4e-16
        for k, zk in enumerate(zt.tolist()):
            with mpmath.workdps(400):
                ref = mpmath.log1p(mpmath.exp(mpmath.mpf(zk))) - mpmath.mpf(y) * mpmath.mpf(zk)
            tiny = float(torch.finfo(dtype).tiny)
            assert abs(float(v[k]) - float(ref)) <= rel * float(ref) + tiny, (dtype, y, zk, float(v[k]), float(ref))
        want = torch.sigmoid(torch.tensor(z, dtype=torch.float64)) - y
        np.testing.assert_allclose(zt.grad.double().numpy(), want.numpy(), atol=float(torch.finfo(dtype).eps))
    zi = torch.tensor([np.inf, -np.inf, np.inf, -np.inf], dtype=dtype)
    v = lk.binary_cross_entropy(zi, torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=dtype), reduction="none")
    assert v[0] == 0 and v[1] == 0 and torch.isfinite(v[2:]).all() and (v[2:] > 1e30).all()
