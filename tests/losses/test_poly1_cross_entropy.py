"""poly1_cross_entropy's own behaviour: epsilon=0 is cross_entropy for every declared option
set (the same parametrised weights x smoothing x ignore cases), for ids with one class the
Poly-1 term is w_y * eps * (1 - p_y), and all-ignored batches give 0."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from registry_cases import draw, params

NAME = "poly1_cross_entropy"


@pytest.mark.parametrize("param", params(case=lambda s, o: s.name == NAME))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_epsilon_zero_is_cross_entropy(param, reduction, rng):
    d = draw(*param, rng)
    z, y = d.arrays
    o = {**d.options, "epsilon": 0.0}
    ce = {k: v for k, v in o.items() if k != "epsilon"}
    for need in ("__call__", "grad", "grad_hess"):
        got = getattr(lk.poly1_cross_entropy, need)(z, y, reduction=reduction, **o)
        ref = getattr(lk.cross_entropy, need)(z, y, reduction=reduction, **ce)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-12, atol=1e-15)


def test_poly_term_with_class_weight(rng):
    z = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    cw = np.array([0.5, 1.0, 2.0, 3.0])
    p = np.exp(z - np.log(np.exp(z).sum(-1, keepdims=True)))
    extra = lk.poly1_cross_entropy(z, y, epsilon=1.5, class_weight=cw, reduction="none") - lk.cross_entropy(z, y, class_weight=cw, reduction="none")
    np.testing.assert_allclose(extra, cw[y] * 1.5 * (1 - p[np.arange(6), y]), rtol=1e-12)


def test_all_ignored_batch_is_zero():
    v, g = lk.poly1_cross_entropy.value_and_grad(np.array([[1.0, -np.inf, 0.0]]), np.array([-1]), ignore_index=-1)
    assert float(v) == 0.0 and np.all(g == 0)
