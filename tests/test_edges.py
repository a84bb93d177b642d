"""DESIGN §4.3: finite values and gradients at the edges, for every dtype and backend:
logits ±1e4 and ±inf, probabilities 0 and 1, rows with impossible classes, fully masked and
fully ignored batches."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from cases import CASES

DTYPES = ("float16", "bfloat16", "float32", "float64")
INF = np.inf


def _dtype(backend, name):
    if name == "bfloat16":
        if backend.name == "torch":
            import torch

            return torch.bfloat16
        if backend.name == "jax":
            import jax.numpy as jnp

            return jnp.bfloat16
        pytest.skip(f"{backend.name} has no bfloat16")
    if not hasattr(backend.xp, name):
        pytest.skip(f"{backend.name} has no {name}")
    return getattr(backend.xp, name)


def _cast(backend, a, dtype_name):
    x = backend.asarray(np.asarray(a, dtype=np.float64))
    return backend.xp.astype(x, _dtype(backend, dtype_name))


def _finite(backend, x):
    a = backend.to_numpy(backend.xp.astype(x, backend.xp.float64) if backend.name != "numpy" else x)
    return np.all(np.isfinite(np.asarray(a, dtype=np.float64)))


EDGE_INPUTS = {
    "mse": (np.array([1e4, -1e4, 0.0, 3.0]), np.array([-1e4, 1e4, 0.0, 3.0]), {}),
    "mae": (np.array([1e4, -1e4, 0.0, 3.0]), np.array([-1e4, 1e4, 0.0, 3.0]), {}),
    "huber": (np.array([1e4, -1e4, 0.0, 3.0]), np.array([-1e4, 1e4, 0.0, 3.0]), {"delta": 1.0}),
    "binary_cross_entropy": (
        np.array([1e4, -1e4, INF, -INF, INF, -INF, 0.0, 30.0]),
        np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5, 0.5]),
        {},
    ),
    "binary_cross_entropy_from_probs": (
        np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30]),
        np.array([1.0, 0.0, 0.0, 1.0, 0.5, 1.0]),
        {},
    ),
    "cross_entropy": (
        np.array([[1e4, -1e4, 0.0], [0.0, -INF, 2.0], [-INF, -INF, 1.0], [-1e4, 1e4, -1e4]]),
        np.array([0, 2, 2, 1]),
        {"label_smoothing": 0.1},
    ),
    "kl_divergence": (
        np.array([[1e4, -1e4, 0.0], [0.0, -INF, 2.0], [-1e4, 1e4, -INF]]),
        np.array([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]),
        {},
    ),
}


def test_every_loss_has_edge_inputs():
    assert set(lk.registry) <= set(EDGE_INPUTS)


@pytest.mark.parametrize("name", sorted(EDGE_INPUTS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_value_grad_hess_at_the_edges(name, dtype, backend):
    pred, target, opts = EDGE_INPUTS[name]
    loss = lk.registry[name]
    p = _cast(backend, pred, dtype)
    t = backend.asarray(target) if target.dtype.kind == "i" else _cast(backend, target, dtype)
    for reduction in ("mean", "none"):
        value, grad = loss.value_and_grad(p, t, reduction=reduction, **opts)
        assert _finite(backend, value), (reduction, backend.to_numpy(value))
        assert _finite(backend, grad)
        assert grad.dtype == p.dtype
        g, h = loss.grad_hess(p, t, reduction=reduction, **opts)
        assert _finite(backend, h)


def test_bce_infinite_logits_are_sure_predictions():
    z = np.array([np.inf, -np.inf, np.inf, -np.inf])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    v = lk.binary_cross_entropy(z, y, reduction="none")
    assert v[0] == 0 and v[1] == 0  # right and sure: no loss
    assert np.isfinite(v[2]) and v[2] > 1e300  # wrong and sure: huge but finite
    np.testing.assert_array_equal(lk.binary_cross_entropy.grad(z, y, reduction="none"), [0.0, 0.0, 1.0, -1.0])


def test_cross_entropy_action_mask_rows_match_the_restricted_softmax():
    """A row with -inf logits equals cross-entropy over the remaining classes (no smoothing)."""
    z = np.array([[0.3, -np.inf, 2.0, -np.inf]])
    y = np.array([2])
    v, g = lk.cross_entropy.value_and_grad(z, y)
    v_sub, g_sub = lk.cross_entropy.value_and_grad(z[:, [0, 2]], np.array([1]))
    np.testing.assert_allclose(v, v_sub, rtol=1e-14)
    np.testing.assert_allclose(g[:, [0, 2]], g_sub, rtol=1e-14)
    assert np.all(g[:, [1, 3]] == 0)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fully_masked_batch_is_zero_with_zero_gradient(name, reduction, backend, rng):
    case = CASES[name]
    o = case.option_sets[0]
    pred, target = case.make(rng, o)
    shape = pred.shape[:-1] if case.sample_axis_dropped else pred.shape
    mask = backend.asarray(np.zeros(shape, dtype=bool))
    loss = lk.registry[name]
    v, g = loss.value_and_grad(backend.asarray(pred), backend.asarray(target), mask=mask, reduction=reduction)
    np.testing.assert_array_equal(backend.to_numpy(v), np.zeros(shape if reduction == "none" else ()))
    np.testing.assert_array_equal(backend.to_numpy(g), np.zeros(pred.shape))


def test_fully_ignored_batch_and_nan_in_masked_rows(backend):
    z = backend.asarray(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    y = backend.asarray(np.array([-100, -100]))
    v, g = lk.cross_entropy.value_and_grad(z, y, ignore_index=-100)
    assert float(backend.to_numpy(v)) == 0.0
    np.testing.assert_array_equal(backend.to_numpy(g), np.zeros((2, 2)))
    # NaN in a valid sample propagates, never silently replaced
    v = lk.cross_entropy(z, backend.asarray(np.array([0, 1])))
    assert np.isnan(backend.to_numpy(v))
