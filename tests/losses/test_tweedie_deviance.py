"""tweedie_deviance and gamma_deviance: log space (finite at log-means ±700 in float64 and ±80 in
float32 where the deviance is finite), exact at y = 0, the power's target domain validated, and a
power in (0, 1) rejected whatever `validate` says."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk


@pytest.mark.parametrize("power", [1.0, 1.5, 2.0])
@pytest.mark.parametrize("dtype, big", [(np.float64, 700.0), (np.float32, 80.0)])
def test_finite_at_extreme_log_means(power, dtype, big):
    z = np.array([big, -big, big, -big], dtype=dtype)
    y = np.array([0.0, 0.0, 5.0, 5.0], dtype=dtype) if power < 2 else np.array([0.5, 0.5, 5.0, 5.0], dtype=dtype)
    for loss, o in ((lk.tweedie_deviance, {"power": power}),) + (((lk.gamma_deviance, {}),) if power == 2 else ()):
        v = loss(z, y, reduction="none", **o)
        g, h = loss.grad_hess(z, y, reduction="none", **o)
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(g)) and np.all(np.isfinite(h)), (loss, v, g, h)


def test_exact_at_zero_targets():
    z = np.array([-3.0, 0.0, 2.0])
    for p in (1.0, 1.2, 1.5, 1.9):
        b = 2.0 - p
        np.testing.assert_allclose(lk.tweedie_deviance(z, np.zeros(3), power=p, reduction="none"), 2 * np.exp(b * z) / b, rtol=1e-15)


def test_limits_and_gamma():
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal(20), rng.gamma(2.0, 1.0, 20)
    mu = np.exp(z)
    np.testing.assert_allclose(lk.tweedie_deviance(z, y, power=0.0, reduction="none"), (y - mu) ** 2, rtol=1e-12)
    np.testing.assert_allclose(lk.tweedie_deviance(z, y, power=1.0, reduction="none"), 2 * (y * np.log(y / mu) - y + mu), rtol=1e-10)
    np.testing.assert_allclose(lk.gamma_deviance(z, y, reduction="none"), lk.tweedie_deviance(z, y, power=2.0, reduction="none"), rtol=1e-15)


def test_power_between_zero_and_one_is_always_an_error():
    for validate in (True, False):
        with pytest.raises(ValueError, match=r"`power` in \(0, 1\) has no Tweedie distribution"):
            lk.tweedie_deviance(np.zeros(2), np.ones(2), power=0.5, validate=validate)


@pytest.mark.parametrize(
    "loss, o, y, message",
    [
        ("tweedie_deviance", {"power": 1.5}, [1.0, -1.0], r"`target` must be >= 0; found -1.0"),
        ("tweedie_deviance", {"power": 3.0}, [1.0, 0.0], r"`target` must be > 0; found 0.0"),
        ("gamma_deviance", {}, [0.0, 1.0], r"`target` must be > 0; found 0.0 at target\[0\]"),
    ],
)
def test_target_domain(loss, o, y, message):
    fn = lk.registry[loss]
    with pytest.raises(ValueError, match=message):
        fn(np.zeros(2), np.array(y), **o)
    with np.errstate(all="ignore"):
        fn(np.zeros(2), np.array(y), validate=False, **o)  # nothing checked, nothing crashes


def test_near_the_minimum_the_deviance_keeps_its_digits():
    y = np.array([2.0])
    z = np.log(y) + 1e-6
    # 2(e^u − 1 − u) with u = −1e-6: 1e-12 to 10 digits
    assert float(lk.gamma_deviance(z, y)) == pytest.approx(1e-12 * (1 - 2e-6 / 3), rel=1e-9)
