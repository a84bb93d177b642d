"""kl_divergence(reverse=True): KL(model || target), the mode-seeking direction, against the
formula with log_target both ways, and its optimal constant (the geometric mean)."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk


@pytest.mark.parametrize("log_target", [False, True])
def test_reverse_is_kl_of_the_model_to_the_target(log_target, rng):
    z = rng.standard_normal((6, 4))
    t = rng.dirichlet(np.ones(4), 6)
    q = np.exp(z - np.log(np.exp(z).sum(-1, keepdims=True)))
    expected = np.sum(q * (np.log(q) - np.log(t)), axis=-1)
    got = lk.kl_divergence(z, np.log(t) if log_target else t, reverse=True, log_target=log_target, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    forward = lk.kl_divergence(z, np.log(t) if log_target else t, log_target=log_target, reduction="none")
    assert not np.allclose(got, forward)


def test_reverse_zero_model_probability_contributes_nothing():
    z = np.array([[0.0, 1.0, -np.inf]])
    t = np.array([[0.5, 0.5, 0.0]])
    v, g = lk.kl_divergence.value_and_grad(z, t, reverse=True)
    assert np.isfinite(v) and np.all(np.isfinite(g)) and g[0, 2] == 0


def test_reverse_baseline_is_the_geometric_mean(rng):
    t = rng.dirichlet(np.ones(3), 20)
    c = lk.kl_divergence.baseline(t, reverse=True)
    g = lk.kl_divergence.grad(np.broadcast_to(c, t.shape).copy(), t, reverse=True)
    np.testing.assert_allclose(g.sum(0), 0.0, atol=1e-12)
