"""Hypothesis property tests over every registered loss (NumPy, float64)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit as lk
from cases import CASES, losskit_options

names = st.sampled_from(sorted(CASES))


@st.composite
def loss_inputs(draw):
    name = draw(names)
    case = CASES[name]
    o = draw(st.sampled_from(case.option_sets))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pred, target = case.make(rng, o)
    shape = pred.shape[:-1] if case.sample_axis_dropped else pred.shape
    return name, losskit_options(o), pred, target, shape, rng


SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(loss_inputs())
def test_sum_equals_mean_times_count(args):
    name, o, pred, target, shape, rng = args
    loss = lk.registry[name]
    valid = np.ones(shape, dtype=bool)
    if "ignore_index" in o and o["ignore_index"] is not None:
        valid = target != o["ignore_index"]
    if o.get("class_weight") is not None and np.asarray(target).dtype.kind == "i":
        count = np.sum(np.where(valid, o["class_weight"][np.where(valid, target, 0)], 0))
    else:
        count = valid.sum()
    np.testing.assert_allclose(loss(pred, target, reduction="sum", **o), loss(pred, target, **o) * count, rtol=1e-10)
    np.testing.assert_allclose(loss(pred, target, reduction="none", **o).sum(), loss(pred, target, reduction="sum", **o), rtol=1e-10)


@SETTINGS
@given(loss_inputs())
def test_unit_weights_change_nothing(args):
    name, o, pred, target, shape, rng = args
    loss = lk.registry[name]
    ones = np.ones(shape)
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(loss(pred, target, weight=ones, reduction=reduction, **o), loss(pred, target, reduction=reduction, **o), rtol=1e-12)
        np.testing.assert_allclose(loss.grad(pred, target, weight=ones, reduction=reduction, **o), loss.grad(pred, target, reduction=reduction, **o), rtol=1e-12, atol=1e-15)


@SETTINGS
@given(loss_inputs())
def test_masked_samples_have_zero_gradient_and_do_not_count(args):
    name, o, pred, target, shape, rng = args
    loss = lk.registry[name]
    mask = rng.random(shape) < 0.6
    mask.flat[0] = True
    g = loss.grad(pred, target, mask=mask, **o)
    g_masked = g[~mask] if g.shape == shape else g[~mask, ...]
    assert np.all(g_masked == 0)
    # changing a masked sample's prediction (to anything in the domain) changes nothing
    other, _ = CASES[name].make(rng, o)
    pred2 = pred.copy()
    pred2[~mask] = other[~mask]
    np.testing.assert_allclose(loss(pred2, target, mask=mask, **o), loss(pred, target, mask=mask, **o), rtol=1e-12)


@SETTINGS
@given(loss_inputs(), st.floats(0.1, 10.0))
def test_weights_multiply_and_scale_out_of_the_mean(args, k):
    name, o, pred, target, shape, rng = args
    loss = lk.registry[name]
    w = rng.uniform(0.1, 2.0, shape)
    np.testing.assert_allclose(loss(pred, target, weight=k * w, reduction="sum", **o), k * loss(pred, target, weight=w, reduction="sum", **o), rtol=1e-10)
    np.testing.assert_allclose(loss(pred, target, weight=k * w, **o), loss(pred, target, weight=w, **o), rtol=1e-10)


@SETTINGS
@given(loss_inputs())
def test_inputs_are_never_mutated(args):
    name, o, pred, target, shape, rng = args
    loss = lk.registry[name]
    p0, t0 = pred.copy(), np.copy(target)
    w = rng.uniform(0.1, 2.0, shape)
    w0 = w.copy()
    loss.value_and_grad(pred, target, weight=w, **o)
    loss.grad_hess(pred, target, weight=w, **o)
    np.testing.assert_array_equal(pred, p0)
    np.testing.assert_array_equal(target, t0)
    np.testing.assert_array_equal(w, w0)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.floats(-1e3, 1e3), st.sampled_from(["cross_entropy", "kl_divergence"]))
def test_softmax_losses_are_shift_invariant(seed, shift, name):
    rng = np.random.default_rng(seed)
    case = CASES[name]
    o = losskit_options(case.option_sets[0])
    z, t = case.make(rng, case.option_sets[0])
    loss = lk.registry[name]
    np.testing.assert_allclose(loss(z + shift, t, **o), loss(z, t, **o), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(loss.grad(z + shift, t, **o), loss.grad(z, t, **o), rtol=1e-6, atol=1e-10)


@SETTINGS
@given(st.integers(0, 2**32 - 1))
def test_perfect_predictions_reach_the_known_minimum(seed):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(10)
    for name in ("mse", "mae", "huber"):
        assert lk.registry[name](y, y) == 0
        assert np.all(lk.registry[name].grad(y, y) == 0)
    t = rng.dirichlet(np.ones(4), 3)
    assert abs(lk.kl_divergence(np.log(t), t)) < 1e-12
    # soft BCE is minimised at sigmoid(z) = y, where it equals the binary entropy of y
    yb = rng.uniform(0.05, 0.95, 10)
    z = np.log(yb / (1 - yb))
    entropy = -(yb * np.log(yb) + (1 - yb) * np.log(1 - yb))
    np.testing.assert_allclose(lk.binary_cross_entropy(z, yb, reduction="none"), entropy, rtol=1e-10)
    np.testing.assert_allclose(lk.binary_cross_entropy.grad(z, yb), 0, atol=1e-12)
