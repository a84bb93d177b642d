"""crps_gaussian: std > 0 validated, the limit std -> 0 is the absolute error, and the erf written
with array-API calls matches SciPy's."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from losskit.losses.distributional import erf


def test_std_must_be_positive():
    with pytest.raises(ValueError, match=r"`std` must be > 0; found 0.0 at std\[0\]"):
        lk.crps_gaussian(np.zeros(2), np.zeros(2), np.array([0.0, 1.0]))


def test_small_std_tends_to_the_absolute_error(rng):
    m, y = rng.standard_normal(10), rng.standard_normal(10) + 3
    np.testing.assert_allclose(lk.crps_gaussian(m, y, np.full(10, 1e-9), reduction="none"), np.abs(y - m), rtol=1e-8)


def test_erf_matches_scipy():
    special = pytest.importorskip("scipy.special")
    x = np.linspace(-9, 9, 20001)
    np.testing.assert_allclose(erf(x, np), special.erf(x), rtol=0, atol=3e-15)
