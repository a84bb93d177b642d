"""Hypothesis property tests over every registered loss and option set (NumPy, float64), from
the declaration alone: reductions, weights, masks, immutability, shift invariance of softmax
losses and the declared minimum at perfect predictions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit as lk
from registry_cases import (
    SET,
    draw,
    grads,
    masked_part,
    names,
    option_set,
    params,
    sample,
    set_where_masked,
    spec,
    strip,
)

CASES = [(n, i) for n in names() for i in range(len(spec(n).checks.option_sets))]
SETTINGS = settings(max_examples=100, deadline=None)


@st.composite
def loss_inputs(draw_, cases=CASES):
    name, i = draw_(st.sampled_from(cases))
    seed = draw_(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return draw(name, i, rng), rng


@SETTINGS
@given(loss_inputs())
def test_sum_is_the_sum_of_per_sample_values_and_a_normalizer_divides_it(args):
    d, rng = args
    loss, o = d.loss, d.options
    total = loss(*d.arrays, reduction="sum", **o)
    per = loss(*d.arrays, reduction="none", **o)
    np.testing.assert_allclose(np.sum(per), total, rtol=1e-10)
    if d.spec.kind == SET:  # per-set values: "mean" is their mean; a normalizer is an error
        with pytest.raises(ValueError, match="`normalizer` does not apply to a set-level loss"):
            loss(*d.arrays, normalizer=3.5, **o)
        np.testing.assert_allclose(loss(*d.arrays, **o), np.mean(per), rtol=1e-10)
    else:
        np.testing.assert_allclose(loss(*d.arrays, normalizer=3.5, **o) * 3.5, total, rtol=1e-10)
        assert np.shape(per) == d.sample_shape


# coupled losses (every sample enters every value: info_nce, ntxent) change when the batch is repeated
PER_SAMPLE = [c for c in CASES if spec(c[0]).kind != SET and spec(c[0]).vjp_kernel is None]


@SETTINGS
@given(loss_inputs(PER_SAMPLE))
def test_sum_counts_every_sample_and_mean_does_not(args):
    """sum = mean × count without the denominator rule: the batch twice over (along a sample
    axis) has the same mean and twice the sum, with and without weights."""
    d, rng = args
    if d.axis == 0 or not d.sample_shape:
        return
    loss, o = d.loss, d.options
    twice = tuple(np.concatenate([a, a], axis=0) for a in d.arrays)
    np.testing.assert_allclose(loss(*twice, **o), loss(*d.arrays, **o), rtol=1e-10)
    np.testing.assert_allclose(loss(*twice, reduction="sum", **o), 2 * loss(*d.arrays, reduction="sum", **o), rtol=1e-10)
    w = rng.uniform(0.1, 2.0, d.sample_shape)
    w2 = np.concatenate([w, w], axis=0)
    np.testing.assert_allclose(loss(*twice, weight=w2, **o), loss(*d.arrays, weight=w, **o), rtol=1e-10)
    np.testing.assert_allclose(loss(*twice, weight=w2, reduction="sum", **o), 2 * loss(*d.arrays, weight=w, reduction="sum", **o), rtol=1e-10)
    # the per-sample values of the first copy are the batch's own
    np.testing.assert_allclose(loss(*twice, reduction="none", **o)[: d.sample_shape[0]], loss(*d.arrays, reduction="none", **o), rtol=1e-12)


@SETTINGS
@given(loss_inputs())
def test_unit_weights_change_nothing(args):
    d, rng = args
    loss, o = d.loss, d.options
    ones = np.ones(d.sample_shape)
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(loss(*d.arrays, weight=ones, reduction=reduction, **o), loss(*d.arrays, reduction=reduction, **o), rtol=1e-12)
        for a, b in zip(grads(d, loss.grad(*d.arrays, weight=ones, reduction=reduction, **o)), grads(d, loss.grad(*d.arrays, reduction=reduction, **o))):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# Set-level losses are left out: a mask of the logits' full shape over a softmax class axis
# masks single (pixel, class) entries, whose logits still reach the other classes through the
# softmax; their pixel masks are tested against smp's ignore_index in tests/losses/. Coupled
# losses (info_nce, ntxent) too: a masked sample's embedding is still another sample's negative.
MASKABLE = [c for c in CASES if spec(c[0]).kind != SET and spec(c[0]).vjp_kernel is None]


@SETTINGS
@given(loss_inputs(MASKABLE))
def test_masked_samples_have_zero_gradient_and_do_not_count(args):
    d, rng = args
    loss, o = d.loss, d.options
    mask = rng.random(d.sample_shape) < 0.6
    mask.flat[0] = True
    for g in grads(d, loss.grad(*d.arrays, mask=mask, **o)):
        assert np.all(masked_part(g, mask, d.axis) == 0)
    # changing a masked sample's inputs (to anything in the domain) changes nothing
    other = sample(d.name, d.index, rng)
    changed = d.with_inputs(*(set_where_masked(x, y, mask, d.axis) for x, y in zip(d.inputs, other)))
    np.testing.assert_allclose(loss(*changed, mask=mask, **o), loss(*d.arrays, mask=mask, **o), rtol=1e-12)


@SETTINGS
@given(loss_inputs(PER_SAMPLE), st.floats(0.1, 10.0))
def test_weights_multiply_and_scale_out_of_the_mean(args, k):
    """Per-sample losses only: set-level weights enter the sums of a ratio, next to constants
    such as a smoothing term, so they need not scale out."""
    d, rng = args
    loss, o = d.loss, d.options
    w = rng.uniform(0.1, 2.0, d.sample_shape)
    np.testing.assert_allclose(loss(*d.arrays, weight=k * w, reduction="sum", **o), k * loss(*d.arrays, weight=w, reduction="sum", **o), rtol=1e-10)
    np.testing.assert_allclose(loss(*d.arrays, weight=k * w, **o), loss(*d.arrays, weight=w, **o), rtol=1e-10)


@SETTINGS
@given(loss_inputs())
def test_inputs_are_never_mutated(args):
    d, rng = args
    loss, o = d.loss, d.options
    before = [np.copy(a) for a in d.arrays]
    w = rng.uniform(0.1, 2.0, d.sample_shape)
    m = rng.random(d.sample_shape) < 0.8
    w0, m0 = w.copy(), m.copy()
    loss.value_and_grad(*d.arrays, weight=w, mask=m, **o)
    loss(*d.arrays, weight=w, reduction="none", **o)
    if d.spec.hessian_kind != "none":
        loss.grad_hess(*d.arrays, weight=w, **o)
    for a, b in zip(d.arrays, before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(m, m0)


SHIFT_INVARIANT = [c for c in CASES if spec(c[0]).checks.shift_invariant]


@pytest.mark.skipif(not SHIFT_INVARIANT, reason="no loss declares shift_invariant")
@SETTINGS
@given(loss_inputs(SHIFT_INVARIANT or CASES), st.floats(-1e3, 1e3))
def test_shift_invariant_losses_ignore_a_constant_added_to_the_first_input(args, shift):
    d, rng = args
    loss, o = d.loss, d.options
    shifted = d.with_input(0, d.inputs[0] + shift)
    np.testing.assert_allclose(loss(*shifted, **o), loss(*d.arrays, **o), rtol=1e-9, atol=1e-9)
    for a, b in zip(grads(d, loss.grad(*shifted, **o)), grads(d, loss.grad(*d.arrays, **o))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-10)


def _has_minimum(s, o) -> bool:
    """The loss declares a minimum with a closed form for this option set."""
    if s.checks.minimum is None or s.target is None:
        return False
    arrays = s.checks.sample(np.random.default_rng(0), s.checks.shape, dict(o))
    return s.checks.minimum(arrays[len(s.inputs)], dict(o)) is not None


@pytest.mark.parametrize("param", params("test_perfect_predictions_reach_the_declared_minimum", case=_has_minimum))
@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_perfect_predictions_reach_the_declared_minimum(param, seed):
    """At the declared minimiser the per-sample value is the declared minimum (1e-10 absolute
    or relative), and the gradient vanishes wherever the minimiser is finite."""
    name, i = param
    s = spec(name)
    rng = np.random.default_rng(seed)
    arrays = sample(name, i, rng)
    raw = option_set(name, i)
    target = arrays[len(s.inputs)]
    pred, minimum = s.checks.minimum(target, raw)
    assert len(s.inputs) == 1, "a declared minimum gives the one prediction"
    loss = lk.registry[name]
    o = strip(raw)
    value = loss(pred, target, reduction="none", **o)
    np.testing.assert_allclose(value, minimum, rtol=1e-10, atol=1e-10)
    g = loss.grad(pred, target, reduction="sum", **o)
    interior = np.isfinite(pred)
    np.testing.assert_allclose(g[interior], 0.0, atol=1e-10)
