"""kl_divergence's own behaviour: PyTorch's batchmean on 2-D inputs, zero-probability targets
against -inf logits, precision near zero divergence, and the target-form messages."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk


def test_matches_torch_batchmean_2d(rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((5, 4))
    t = rng.dirichlet(np.ones(4), 5)
    expected = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(z), -1), torch.tensor(t), reduction="batchmean")
    np.testing.assert_allclose(lk.kl_divergence(z, t), expected.item(), rtol=1e-10)


def test_zero_probability_target_is_zero_contribution():
    z = np.array([[0.0, 1.0, -np.inf]])
    t = np.array([[0.5, 0.5, 0.0]])
    v, g = lk.kl_divergence.value_and_grad(z, t)
    p = np.exp(z[0, :2] - np.logaddexp(z[0, 0], z[0, 1]))
    expected = np.sum(t[0, :2] * (np.log(t[0, :2]) - np.log(p)))
    np.testing.assert_allclose(v, expected, rtol=1e-12)
    assert np.all(np.isfinite(g)) and g[0, 2] == 0


def test_near_zero_divergence_is_accurate():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    t = np.array([[0.25, 0.25, 0.5]])
    z = np.log(t) + np.array([[1e-6, -1e-6, 0.0]])
    v = lk.kl_divergence(z, t)
    row = [mpmath.mpf(x) for x in z[0]]
    lse = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in row))
    ref = mpmath.fsum(mpmath.mpf(tk) * (mpmath.log(mpmath.mpf(tk)) - (zk - lse)) for tk, zk in zip(t[0], row))
    # the divergence is ~2.5e-13; float64 cancellation leaves ~1e-16 absolute error
    assert abs(float(v) - float(ref)) < 5e-16


def _probs(rng, shape=(4, 3)):
    t = rng.random(shape) + 0.1
    return t / t.sum(-1, keepdims=True)


def test_target_form_mix_ups(rng, backend):
    z = rng.standard_normal((4, 3))
    t = _probs(rng)
    zb = backend.asarray(z)
    with pytest.raises(ValueError, match="found -.* It looks like log-probabilities: pass log_target=True"):
        lk.kl_divergence(zb, backend.asarray(np.log(t)))
    with pytest.raises(ValueError, match="`target` must hold log-probabilities.*pass log_target=False"):
        lk.kl_divergence(zb, backend.asarray(t), log_target=True)
    with pytest.raises(ValueError, match=r"row of `target` must be a distribution.*sums to 0.5"):
        lk.kl_divergence(zb, backend.asarray(0.5 * t))
    with pytest.raises(ValueError, match=r"exp summing to 1"):
        lk.kl_divergence(zb, backend.asarray(np.log(t) - 0.5), log_target=True)
    # both right forms are accepted and agree; a negative KL is impossible
    a = backend.to_numpy(lk.kl_divergence(zb, backend.asarray(t)))
    b = backend.to_numpy(lk.kl_divergence(zb, backend.asarray(np.log(t)), log_target=True))
    np.testing.assert_allclose(a, b, rtol=1e-10)
    assert a >= 0


def test_tolerance_follows_the_target_dtype(rng):
    torch = pytest.importorskip("torch")
    t = _probs(rng, (8, 1000))
    z = torch.randn(8, 1000)
    lk.kl_divergence(z, torch.as_tensor(t, dtype=torch.float32))
    with pytest.raises(ValueError, match="sums to"):
        lk.kl_divergence(z.double(), torch.as_tensor(t * (1 + 1e-6)))


def test_empty_class_axis():
    with pytest.raises(ValueError, match="`logits` has no classes"):
        lk.kl_divergence(np.zeros((4, 0)), np.zeros((4, 0)))
