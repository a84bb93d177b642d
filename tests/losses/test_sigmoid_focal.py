"""sigmoid_focal's own behaviour: alpha=None, gamma=0 is binary_cross_entropy for every
declared option set; finite value, gradient and Hessian at logits ±1e4 / ±inf in half
precision; p_t -> 1 with gamma < 1; label smoothing replaces the target everywhere."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from registry_cases import draw, params

NAME = "sigmoid_focal"


@pytest.mark.parametrize("param", params(case=lambda s, o: s.name == NAME))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_no_alpha_gamma_zero_is_binary_cross_entropy(param, reduction, rng):
    d = draw(*param, rng)
    z, y = d.arrays
    o = {**d.options, "alpha": None, "gamma": 0.0}
    bce = {k: v for k, v in o.items() if k == "label_smoothing"}
    for need in ("__call__", "grad", "grad_hess"):
        got = getattr(lk.sigmoid_focal, need)(z, y, reduction=reduction, **o)
        ref = getattr(lk.binary_cross_entropy, need)(z, y, reduction=reduction, **bce)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("gamma", [0.5, 2.0, 2.5])
def test_finite_at_huge_logits_in_low_precision(dtype, gamma):
    torch = pytest.importorskip("torch")
    inf = float("inf")
    z = torch.tensor([1e4, -1e4, inf, -inf, 1e4, -1e4, 20.0], dtype=getattr(torch, dtype))
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0], dtype=getattr(torch, dtype))
    outs = (lk.sigmoid_focal(z, y, gamma=gamma, reduction="none"), *lk.sigmoid_focal.grad_hess(z, y, gamma=gamma))
    assert all(torch.isfinite(o).all() for o in outs)
    # right sure predictions: exactly zero loss and gradient
    assert float(outs[0][:4].abs().max()) == 0.0 and float(outs[1][:4].abs().max()) == 0.0


@pytest.mark.parametrize("gamma", [0.3, 0.5, 0.9])
def test_gradient_vanishes_as_p_t_tends_to_one_for_gamma_below_one(gamma):
    prev = np.inf
    for z in (5.0, 10.0, 20.0, 40.0):
        g = abs(float(lk.sigmoid_focal.grad(np.array([z]), np.array([1.0]), gamma=gamma, alpha=None)[0]))
        assert g < prev
        prev = g
    # the (1 - p_t) factor keeps its precision where 1 - sigmoid(z) would round to 0
    v = float(lk.sigmoid_focal(np.array([40.0]), np.array([1.0]), gamma=2.0, alpha=None))
    np.testing.assert_allclose(v, np.exp(-40.0) ** 3, rtol=1e-10)


def test_label_smoothing_replaces_the_target_everywhere(rng):
    z, y = rng.standard_normal(10), (rng.random(10) < 0.5).astype(float)
    e = 0.2
    ys = y * (1 - e) + e / 2
    np.testing.assert_allclose(lk.sigmoid_focal(z, y, label_smoothing=e, alpha=0.3), lk.sigmoid_focal(z, ys, alpha=0.3), rtol=1e-13)


def test_demo_class_imbalance_section_measures_in_the_run(rng):
    """The demo's 1:50 experiment trains the three losses and measures AP and calibration; its
    average precision is scikit-learn's."""
    from losskit.demo import _experiments as ex
    from losskit.demo import _imbalance

    r = _imbalance.run(np.random.default_rng(0), True, ex.NullProgress())
    assert set(r["runs"]) == {label for label, _, _ in _imbalance.LOSSES}
    for v in r["runs"].values():
        assert 0.0 < v["test_average_precision"] <= 1.0 and 0.0 <= v["test_ece"] <= 1.0 and np.isfinite(v["test_log_loss"])
    # pos_weight shifts the predicted rate far above the true rate; plain BCE stays calibrated
    runs = list(r["runs"].values())
    assert runs[1]["mean_predicted_positive_rate"] > 3 * runs[0]["mean_predicted_positive_rate"]
    rows, finding = _imbalance.summarize(r)
    assert len(rows) == 3 and "AP" in finding
    sklearn = pytest.importorskip("sklearn.metrics")
    s, y = rng.standard_normal(200), (rng.random(200) < 0.1).astype(float)
    np.testing.assert_allclose(_imbalance.average_precision(s, y), sklearn.average_precision_score(y, s), rtol=1e-12)
