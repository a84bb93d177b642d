"""softmax_focal's own behaviour: with gamma=0 it is cross_entropy, option set by option set
(every weights x smoothing x ignore case the registry declares, the same parametrised cases);
finite value, gradient and Hessian at logits ±1e4 and -inf in half precision; gamma < 1 near
p = 1; all-ignored batches."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from registry_cases import draw, params

NAME = "softmax_focal"


def _ce_options(o):
    return {k: v for k, v in o.items() if k != "gamma"}


@pytest.mark.parametrize("param", params(case=lambda s, o: s.name == NAME))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gamma_zero_is_cross_entropy(param, reduction, rng):
    d = draw(*param, rng)
    z, y = d.arrays
    o = {**d.options, "gamma": 0.0}
    w = rng.uniform(0.1, 2.0, d.sample_shape)
    for need in ("__call__", "grad", "grad_hess"):
        got = getattr(lk.softmax_focal, need)(z, y, weight=w, reduction=reduction, **o)
        ref = getattr(lk.cross_entropy, need)(z, y, weight=w, reduction=reduction, **_ce_options(o))
        for a, b in zip(np.atleast_1d(got) if need == "__call__" else got, np.atleast_1d(ref) if need == "__call__" else ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("gamma", [0.5, 2.0, 2.5])
def test_finite_at_huge_and_masked_logits_in_low_precision(dtype, gamma):
    torch = pytest.importorskip("torch")
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [0.0, -float("inf"), 3.0], [30.0, 0.0, 0.0]], dtype=getattr(torch, dtype))
    y = torch.tensor([0, 1, 2, 0])
    v = lk.softmax_focal(z, y, gamma=gamma)
    g, h = lk.softmax_focal.grad_hess(z, y, gamma=gamma)
    assert torch.isfinite(v) and torch.isfinite(g).all() and torch.isfinite(h).all()
    # p_t = 1 exactly on the first two rows: zero loss, zero gradient
    assert float(lk.softmax_focal(z[:2], y[:2], gamma=gamma)) == 0.0
    assert float(g[:2].abs().max()) == 0.0


@pytest.mark.parametrize("gamma", [0.3, 0.5, 0.9])
def test_gradient_vanishes_as_p_tends_to_one_for_gamma_below_one(gamma):
    """For γ < 1 the derivative of (1 − p)^γ is unbounded, but the loss's gradient tends to 0
    like (1 − p)^γ (the documented limit); the closed form equals finite differences there."""
    prev = np.inf
    for margin in (5.0, 10.0, 20.0, 30.0):
        z = np.array([[margin, 0.0, 0.0]])
        g = lk.softmax_focal.grad(z, np.array([0]), gamma=gamma)
        size = np.abs(g).max()
        assert size < prev
        prev = size
        s = 2 * np.exp(-margin)  # 1 − p_t
        assert size <= 4 * s**gamma
    z = np.array([[4.0, 0.5, -1.0]])
    eps = 1e-6
    fd = [(lk.softmax_focal(z + eps * e, np.array([0]), gamma=gamma) - lk.softmax_focal(z - eps * e, np.array([0]), gamma=gamma)) / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(lk.softmax_focal.grad(z, np.array([0]), gamma=gamma)[0], fd, rtol=1e-6)


def test_all_ignored_batch_is_zero():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = np.array([-100, -100])
    v, g = lk.softmax_focal.value_and_grad(z, y, ignore_index=-100, label_smoothing=0.1, class_weight=np.array([1.0, 2.0, 3.0]))
    assert float(v) == 0.0 and np.all(g == 0)
