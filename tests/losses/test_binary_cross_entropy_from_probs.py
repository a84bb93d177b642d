"""binary_cross_entropy_from_probs's own behaviour: perfect predictions at 0 and 1 cost
exactly 0 (each log term is clipped on its own)."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk


def test_perfect_probability_predictions_cost_exactly_zero():
    p = np.array([0.0, 1.0, 0.0, 1.0], dtype=np.float32)
    assert np.all(lk.binary_cross_entropy_from_probs(p, p, reduction="none") == 0)
    assert lk.binary_cross_entropy_from_probs(p.astype(np.float64), p.astype(np.float64)) == 0


def test_edge_values_match_torch_inside_the_clip():
    """Within [eps, 1 - eps] the value equals torch's; outside, losskit clips p at eps where
    torch clamps each log at -100 (a documented difference)."""
    torch = pytest.importorskip("torch")
    pred = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30])
    target = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 1.0])
    keep = (pred > 1e-12) & (pred < 1 - 1e-12)
    expected = torch.nn.functional.binary_cross_entropy(torch.as_tensor(pred[keep]), torch.as_tensor(target[keep]), reduction="none").numpy()
    got = lk.binary_cross_entropy_from_probs(pred[keep], target[keep], reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-300)


def test_probabilities_outside_unit_interval():
    with pytest.raises(ValueError, match=r"`probs` must hold probabilities in \[0, 1\]; found 1.5 at probs\[1\]"):
        lk.binary_cross_entropy_from_probs(np.array([0.5, 1.5]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"`target` must hold probabilities.*-0.5"):
        lk.binary_cross_entropy_from_probs(np.array([0.5, 0.5]), np.array([1.0, -0.5]))
    v = lk.binary_cross_entropy_from_probs(np.array([0.5, 1.5]), np.array([1.0, 0.0]), validate=False)
    assert np.isfinite(v)
