"""smooth_l1: beta = 0 is exactly mae (value, subgradient, zero Hessian, median baseline), and
beta > 0 is huber(delta=beta) / beta; the Hessian kind follows beta."""

from __future__ import annotations

import numpy as np

import losskit as lk


def test_beta_zero_is_mae(rng):
    p, y = rng.standard_normal(50), rng.standard_normal(50)
    p[:3] = y[:3]  # exact ties: subgradient 0
    for need in ("__call__", "grad"):
        a = getattr(lk.smooth_l1, need)(p, y, beta=0.0, reduction="none")
        b = getattr(lk.mae, need)(p, y, reduction="none")
        np.testing.assert_array_equal(a, b)
    g, h = lk.smooth_l1.grad_hess(p, y, beta=0.0)
    assert np.all(h == 0)
    assert lk.smooth_l1.hessian_kind_for(beta=0.0) == "zero" and lk.smooth_l1.hessian_kind_for() == "piecewise"
    assert float(lk.smooth_l1.baseline(y, beta=0.0)) == float(lk.mae.baseline(y))


def test_huber_divided_by_beta(rng):
    p, y = rng.standard_normal(50) * 3, rng.standard_normal(50)
    for beta in (0.3, 1.0, 2.5):
        np.testing.assert_allclose(lk.smooth_l1(p, y, beta=beta, reduction="none"), lk.huber(p, y, delta=beta, reduction="none") / beta, rtol=1e-14)


def test_baseline_is_the_huber_location(rng):
    y = np.concatenate([rng.standard_normal(100), [50.0, 80.0]])
    w = rng.uniform(0.5, 2.0, 102)
    b = float(lk.smooth_l1.baseline(y, weight=w, beta=1.0))
    assert abs(float(np.sum(w * np.clip((b - y) / 1.0, -1, 1)))) < 1e-9
    assert abs(b) < 1.0  # the outliers barely move it (the mean moves by ~1.3)
