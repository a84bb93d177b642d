"""hinge's (and squared_hinge's) own behaviour: targets must be -1 or +1; {0, 1} labels are an
error with a hint, never mapped silently; other values name the first bad one."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk


@pytest.mark.parametrize("loss", [lk.hinge, lk.squared_hinge])
def test_zero_one_labels_are_an_error_with_a_hint(loss):
    with pytest.raises(ValueError, match=r"2 \* target - 1"):
        loss(np.array([0.5, -0.5, 1.0]), np.array([1.0, 0.0, 1.0]))


@pytest.mark.parametrize("loss", [lk.hinge, lk.squared_hinge])
def test_other_values_name_the_first_bad_one(loss):
    with pytest.raises(ValueError, match=r"got 0\.5 at target\[2\]") as err:
        loss(np.array([0.5, -0.5, 1.0]), np.array([1.0, -1.0, 0.5]))
    assert "2 * target - 1" not in str(err.value)


def test_values():
    p, y = np.array([0.5, 2.0, -3.0]), np.array([1.0, -1.0, -1.0])
    np.testing.assert_allclose(lk.hinge(p, y, reduction="none"), [0.5, 3.0, 0.0])
    np.testing.assert_allclose(lk.squared_hinge(p, y, reduction="none"), [0.25, 9.0, 0.0])
    assert lk.hinge.hessian_kind == "zero" and lk.squared_hinge.hessian_kind == "piecewise"
