"""quantile: several levels at once (trailing axis of size Q, per-sample mean over the levels),
the errors for bad levels and shapes, and the weighted τ-quantile baselines."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

LEVELS = (0.1, 0.5, 0.9)


def test_several_levels_are_the_mean_of_single_levels(rng):
    y = rng.standard_normal((5, 3))
    p = y[..., None] + rng.standard_normal((5, 3, 3))
    per = lk.quantile(p, y, quantile=LEVELS, reduction="none")
    assert per.shape == (5, 3)
    singles = [lk.quantile(p[..., k], y, quantile=t, reduction="none") for k, t in enumerate(LEVELS)]
    np.testing.assert_allclose(per, np.mean(singles, axis=0), rtol=1e-14)
    g = lk.quantile.grad(p, y, quantile=LEVELS, reduction="sum")
    for k, t in enumerate(LEVELS):
        np.testing.assert_allclose(g[..., k], lk.quantile.grad(p[..., k], y, quantile=t, reduction="sum") / 3, rtol=1e-14)
    w = rng.uniform(0.5, 2.0, (5, 3))  # weights have the target's shape
    np.testing.assert_allclose(lk.quantile(p, y, quantile=LEVELS, weight=w, reduction="sum"), np.sum(w * per), rtol=1e-13)


def test_one_level_in_a_sequence_is_the_scalar_loss(rng):
    y = rng.standard_normal(7)
    p = rng.standard_normal(7)
    assert float(lk.quantile(p[:, None], y, quantile=(0.3,))) == pytest.approx(float(lk.quantile(p, y, quantile=0.3)), rel=1e-15)


def test_crossing_predictions_are_scored_as_given_not_sorted():
    y = np.array([0.0])
    crossed = np.array([[1.0, 0.0, -1.0]])  # the 0.1-prediction above the 0.9-prediction
    # each level against its own tau: the crossed band costs 0.9 + 0 + 0.9, the sorted one 0.1 + 0 + 0.1
    assert float(lk.quantile(crossed, y, quantile=LEVELS)) == pytest.approx(1.8 / 3)
    assert float(lk.quantile(crossed[:, ::-1], y, quantile=LEVELS)) == pytest.approx(0.2 / 3)


@pytest.mark.parametrize(
    "levels, message",
    [
        ((0.0, 0.5), r"levels must be in \(0, 1\), got 0.0"),
        ((0.5, 1.0), r"levels must be in \(0, 1\), got 1.0"),
        ((0.9, 0.1), "strictly increasing"),
        ((0.5, 0.5), "strictly increasing"),
        ((), "at least one level"),
        (1.5, r"`quantile` must be in \(0, 1\)"),
    ],
)
def test_bad_levels_are_errors(levels, message):
    p = np.zeros((4, 2))
    with pytest.raises(ValueError, match=message):
        lk.quantile(p, np.zeros(4), quantile=levels)


def test_bad_level_types_are_type_errors():
    for bad in (True, "0.5", None):
        with pytest.raises(TypeError, match="`quantile`"):
            lk.quantile(np.zeros(3), np.zeros(3), quantile=bad)


def test_shapes_with_several_levels():
    with pytest.raises(ValueError, match=r"trailing axis of size 3 \(one prediction per level\), got pred \(4, 2\)"):
        lk.quantile(np.zeros((4, 2)), np.zeros(4), quantile=LEVELS)
    with pytest.raises(ValueError, match=r"`target` must have pred.shape\[:-1\] = \(4,\), got target \(4, 3\)"):
        lk.quantile(np.zeros((4, 3)), np.zeros((4, 3)), quantile=LEVELS)
    with pytest.raises(ValueError, match=r"`weight` must have the shape of the per-sample loss \(4,\)"):
        lk.quantile(np.zeros((4, 3)), np.zeros(4), quantile=LEVELS, weight=np.ones((4, 3)))


def test_baselines_are_weighted_quantiles(rng):
    y = rng.standard_normal(200)
    w = rng.uniform(0.1, 2.0, 200)
    b = np.asarray(lk.quantile.baseline(y, weight=w, quantile=LEVELS))
    assert b.shape == (3,)
    order = np.argsort(y)
    cw = np.cumsum(w[order]) / w.sum()
    for t, got in zip(LEVELS, b):
        assert got == y[order][np.searchsorted(cw, t)]
    assert float(lk.quantile.baseline(y, quantile=0.5)) == float(lk.mae.baseline(y))
    assert lk.quantile.hessian_kind == "zero"
