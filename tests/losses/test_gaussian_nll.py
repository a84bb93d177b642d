"""gaussian_nll: (mean, target, var) as PyTorch; all three gradients; the clamp at eps (value as
PyTorch, zero var-gradient where it is active, where PyTorch returns the unclamped formula's);
negative var is an error; the baseline (mean, var)."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

torch = pytest.importorskip("torch")


def test_clamp_value_as_torch_and_zero_var_gradient(rng):
    m, y = rng.standard_normal(6), rng.standard_normal(6)
    v = np.array([1e-9, 0.0, 0.3, 2.0, 1e-7, 1.0])
    ref = torch.nn.functional.gaussian_nll_loss(torch.tensor(m), torch.tensor(y), torch.tensor(v), reduction="none").numpy()
    np.testing.assert_allclose(lk.gaussian_nll(m, y, v, reduction="none"), ref, rtol=1e-12)
    gm, gy, gv = lk.gaussian_nll.grad(m, y, v, reduction="none")
    clamped = v < 1e-6
    assert np.all(gv[clamped] == 0) and np.all(gv[~clamped] != 0)
    np.testing.assert_allclose(gm, (m - y) / np.maximum(v, 1e-6), rtol=1e-12)
    np.testing.assert_allclose(gy, -gm, rtol=1e-15)


def test_negative_var_is_an_error():
    with pytest.raises(ValueError, match=r"`var` must be >= 0; found -1.0 at var\[1\]"):
        lk.gaussian_nll(np.zeros(2), np.zeros(2), np.array([1.0, -1.0]))


def test_baseline_is_the_weighted_mean_and_variance(rng):
    y = rng.standard_normal(100) * 2 + 1
    w = rng.uniform(0.5, 2.0, 100)
    m, v = lk.gaussian_nll.baseline(y, weight=w)
    mu = np.sum(w * y) / np.sum(w)
    assert float(m) == pytest.approx(mu, rel=1e-14)
    assert float(v) == pytest.approx(np.sum(w * (y - mu) ** 2) / np.sum(w), rel=1e-13)
    gm, _, gv = lk.gaussian_nll.grad(np.full(100, float(m)), y, np.full(100, float(v)), weight=w, reduction="sum")
    assert abs(gm.sum()) < 1e-9 and abs(gv.sum()) < 1e-9


@pytest.mark.parametrize("loss, name", [(lk.gaussian_nll, "var"), (lk.crps_gaussian, "std")])
def test_the_third_input_may_be_named(loss, name, rng):
    m, y, s = rng.standard_normal(5), rng.standard_normal(5), rng.uniform(0.5, 2.0, 5)
    assert float(loss(m, y, **{name: s})) == float(loss(m, y, s))
    for got, want in zip(loss.grad(m, y, **{name: s}), loss.grad(m, y, s)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="3 positional arrays"):
        loss(m, y)
