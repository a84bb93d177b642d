"""poisson_nll: log space (finite at log-rates ±700 in float64, ±80 in float32), exact at y = 0,
counts validated, torch's Stirling term only for y > 1."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk


@pytest.mark.parametrize("dtype, big", [(np.float64, 700.0), (np.float32, 80.0)])
def test_finite_at_extreme_log_rates(dtype, big):
    z = np.array([big, -big, big, -big], dtype=dtype)
    y = np.array([0.0, 0.0, 5.0, 5.0], dtype=dtype)
    v = lk.poisson_nll(z, y, reduction="none")
    g, h = lk.poisson_nll.grad_hess(z, y, reduction="none")
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    # y = 0: the value is e^z, within one ulp of its correctly rounded value (NumPy's float32
    # exp and the Numba kernel's may differ by that ulp)
    exact = dtype(np.exp(np.float64(-big)))
    assert abs(float(v[1]) - float(exact)) <= float(np.spacing(exact))


def test_zero_count_at_zero_rate_costs_nothing():
    v, g = lk.poisson_nll.value_and_grad(np.array([-np.inf]), np.array([0.0]), reduction="none")
    assert v[0] == 0.0 and g[0] == 0.0


def test_stirling_term_only_above_one():
    torch = pytest.importorskip("torch")
    z = np.zeros(4)
    y = np.array([0.0, 0.5, 1.0, 3.0])
    a = lk.poisson_nll(z, y, full=True, reduction="none") - lk.poisson_nll(z, y, reduction="none")
    np.testing.assert_allclose(a[:3], 0.0)
    assert a[3] == pytest.approx(3 * np.log(3) - 3 + 0.5 * np.log(2 * np.pi * 3))
    ref = torch.nn.functional.poisson_nll_loss(torch.tensor(z), torch.tensor(y), full=True, reduction="none").numpy()
    np.testing.assert_allclose(lk.poisson_nll(z, y, full=True, reduction="none"), ref, rtol=1e-12)


def test_negative_counts_are_errors_unless_not_validated():
    with pytest.raises(ValueError, match=r"`target` must be >= 0; found -1.0 at target\[1\]"):
        lk.poisson_nll(np.zeros(3), np.array([1.0, -1.0, 2.0]))
    assert np.isfinite(float(lk.poisson_nll(np.zeros(3), np.array([1.0, -1.0, 2.0]), validate=False)))


def test_baseline_is_the_log_of_the_weighted_mean(rng):
    y = rng.poisson(3.0, 100).astype(float)
    w = rng.uniform(0.5, 2.0, 100)
    assert float(lk.poisson_nll.baseline(y, weight=w)) == pytest.approx(np.log(np.sum(w * y) / np.sum(w)), rel=1e-14)
