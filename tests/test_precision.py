"""Accuracy against 50-digit mpmath references where float64 formulas usually lose it: tiny
losses of confident right predictions (log1p territory), large logits, and distant classes."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

mpmath = pytest.importorskip("mpmath")
mpmath.mp.dps = 50

LOGITS = [-745.0, -100.0, -40.0, -20.0, -5.0, -1e-8, 0.0, 1e-8, 3.0, 20.0, 40.0, 100.0, 700.0]


def _bce_ref(z, y):
    # the textbook form log(1 + e^z) − y·z, evaluated with enough digits (400) that its
    # cancellation at z = 700 still leaves 50 correct ones
    with mpmath.workdps(400):
        z, y = mpmath.mpf(z), mpmath.mpf(y)
        return +(mpmath.log1p(mpmath.exp(z)) - y * z)


def _sigmoid_ref(z):
    return 1 / (1 + mpmath.exp(-mpmath.mpf(z)))


@pytest.mark.parametrize("y", [0.0, 0.3, 1.0])
def test_bce_value_and_gradient_to_full_float64_precision(y):
    z = np.array(LOGITS)
    t = np.full_like(z, y)
    v = lk.binary_cross_entropy(z, t, reduction="none")
    g, h = lk.binary_cross_entropy.grad_hess(z, t, reduction="none")
    for k, zk in enumerate(z):
        ref = _bce_ref(zk, y)
        s = _sigmoid_ref(zk)
        # relative accuracy of a few ulps even for losses of 1e-300 (right, confident predictions)
        assert float(abs(v[k] - ref)) <= 4e-16 * float(abs(ref)) + 1e-300, (zk, v[k], ref)
        # σ(z) − y: exact to one ulp of 1 (the subtraction of y cancels; torch computes it alike)
        assert float(abs(g[k] - (s - y))) <= 2.3e-16, (zk, g[k])
        slope = s * _sigmoid_ref(-zk)  # not s·(1 − s): that cancels even at 50 digits for z = 700
        assert float(abs(h[k] - slope)) <= 1e-15 * float(slope) + 1e-300, (zk, h[k], slope)


def test_cross_entropy_with_distant_logits_matches_mpmath():
    z = np.array([[0.0, 50.0, -50.0, 700.0], [1e-3, 2e-3, -3e-3, 0.0], [-1e4, 1e4, 0.0, 3.0]])
    y = np.array([3, 1, 0])
    v = lk.cross_entropy(z, y, reduction="none")
    g = lk.cross_entropy.grad(z, y, reduction="sum")  # p − onehot: one ulp of 1 absolute
    for i in range(z.shape[0]):
        with mpmath.workdps(400):  # the textbook LSE − z_y cancels: carry digits to spare
            row = [mpmath.mpf(x) for x in z[i]]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in row))
            ref = +(lse - row[y[i]])
            probs = [+mpmath.exp(x - lse) for x in row]
        assert float(abs(v[i] - ref)) <= 1e-15 * float(abs(ref)) + 1e-300, (i, v[i], ref)
        for k in range(z.shape[1]):
            ref_g = probs[k] - (1 if k == y[i] else 0)
            assert float(abs(g[i, k] - ref_g)) <= 2.3e-16 + 1e-15 * float(abs(ref_g)), (i, k, g[i, k], ref_g)


def test_cross_entropy_float32_confident_predictions_keep_their_digits():
    """Tiny per-sample losses of a confident model, in float32: (max − z_y) + log1p(rest)
    keeps them; LSE − z_y would round them to multiples of eps·|z_y|."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 10)).astype(np.float32)
    y = rng.integers(0, 10, 200)
    z[np.arange(200), y] += np.float32(25.0)
    got = lk.cross_entropy(z, y, reduction="none")
    for i in range(0, 200, 20):
        row = [mpmath.mpf(float(x)) for x in z[i]]
        with mpmath.workdps(60):
            ref = mpmath.log(mpmath.fsum(mpmath.exp(x - row[y[i]]) for x in row))
        assert abs(float(got[i]) - float(ref)) <= 1e-5 * float(ref), (i, got[i], ref)


def test_kl_near_zero_divergence_is_accurate():
    t = np.array([[0.25, 0.25, 0.5]])
    z = np.log(t) + np.array([[1e-6, -1e-6, 0.0]])
    v = lk.kl_divergence(z, t)
    row = [mpmath.mpf(x) for x in z[0]]
    lse = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in row))
    ref = mpmath.fsum(mpmath.mpf(tk) * (mpmath.log(mpmath.mpf(tk)) - (zk - lse)) for tk, zk in zip(t[0], row))
    # the divergence is ~2.5e-13; float64 cancellation leaves ~1e-16 absolute error
    assert abs(float(v) - float(ref)) < 5e-16


def test_bce_float32_mean_of_confident_right_predictions_keeps_its_digits():
    """A well-trained model's loss: every term tiny. softplus(z) − y·z would lose all of them
    in float32 (the terms vanish next to z); the sum of non-negative terms keeps them."""
    z = np.linspace(8.0, 30.0, 1000).astype(np.float32)
    zz = np.concatenate([z, -z])
    yy = np.concatenate([np.ones_like(z), np.zeros_like(z)])
    got = float(lk.binary_cross_entropy(zz, yy))
    ref = mpmath.fsum(mpmath.log1p(mpmath.exp(-mpmath.mpf(float(v)))) for v in z) * 2 / zz.size
    assert abs(got - float(ref)) <= 1e-5 * float(ref)
