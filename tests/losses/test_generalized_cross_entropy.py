"""generalized_cross_entropy's own behaviour: q -> 0 tends to cross_entropy, q = 1 is 1 - p_y."""

from __future__ import annotations

import numpy as np

import losskit as lk


def test_tends_to_cross_entropy_as_q_tends_to_zero(rng):
    z = rng.standard_normal((8, 5)) * 2
    y = rng.integers(0, 5, 8)
    ce = lk.cross_entropy(z, y, reduction="none")
    gce = [np.abs(lk.generalized_cross_entropy(z, y, q=q, reduction="none") - ce).max() for q in (1e-2, 1e-4, 1e-6)]
    assert gce[0] > 50 * gce[1] > 2500 * gce[2] and gce[2] < 1e-4  # the gap is ~q·(LSE − z_y)²/2
    np.testing.assert_allclose(lk.generalized_cross_entropy.grad(z, y, q=1e-7), lk.cross_entropy.grad(z, y), atol=1e-6)


def test_q_one_is_one_minus_p(rng):
    z = rng.standard_normal((8, 5))
    y = rng.integers(0, 5, 8)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(lk.generalized_cross_entropy(z, y, q=1.0, reduction="none"), 1 - p[np.arange(8), y], rtol=1e-12)


def test_confident_right_prediction_keeps_its_precision():
    v = float(lk.generalized_cross_entropy(np.array([[40.0, 0.0]]), np.array([0]), q=0.5))
    np.testing.assert_allclose(v, np.exp(-40.0), rtol=1e-10)  # (1 - p^q)/q ~ (1 - p) for p -> 1
