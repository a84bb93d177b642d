"""DESIGN §4.3: finite values and gradients at the edges, for every dtype and backend: the
declared edge inputs of every loss and option set (logits ±1e4 and ±inf, probabilities 0 and
1, rows with impossible classes...), and fully masked batches. Driven by the registry."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from registry_cases import KNOWN, REDUCTIONS, SET, as_tuple, draw, is_float, loss_params, names, option_set, options_on, params, spec

DTYPES = ("float16", "bfloat16", "float32", "float64")


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


def test_every_loss_declares_edge_inputs():
    missing = set(lk.registry) - set(names(lambda s: s.checks.edges is not None))
    known = {name for name, tests in KNOWN.items() if "test_every_loss_declares_edge_inputs" in tests}
    assert missing <= known, sorted(missing - known)


@pytest.mark.parametrize("param", params("test_finite_value_grad_hess_at_the_edges", where=lambda s: s.checks.edges is not None))
@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_value_grad_hess_at_the_edges(param, dtype, backend):
    name, i = param
    s = spec(name)
    raw = option_set(name, i)
    arrays = tuple(np.asarray(a) for a in s.checks.edges(raw))
    n = len(s.inputs)
    inputs = tuple(_cast(backend, a, dtype) for a in arrays[:n])
    rest = tuple(_cast(backend, a, dtype) if is_float(a) else backend.asarray(a) for a in arrays[n:])
    loss = lk.registry[name]
    o = options_on(backend, raw)
    for reduction in ("mean", "none"):
        value, grad = loss.value_and_grad(*inputs, *rest, reduction=reduction, **o)
        assert _finite(backend, value), (reduction, backend.to_numpy(value))
        for x, g in zip(inputs, as_tuple(grad, n)):
            assert _finite(backend, g), reduction
            assert g.dtype == x.dtype
        if s.hessian_kind != "none":
            g, h = loss.grad_hess(*inputs, *rest, reduction=reduction, **o)
            for a in as_tuple(h, n):
                assert _finite(backend, a), reduction


@pytest.mark.parametrize("name", loss_params("test_fully_masked_batch_is_zero_with_zero_gradient"))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fully_masked_batch_is_zero_with_zero_gradient(name, reduction, backend, rng):
    d = draw(name, 0, rng)
    mask = backend.asarray(np.zeros(d.sample_shape, dtype=bool))
    arrays = tuple(backend.asarray(a) for a in d.arrays)
    v, g = d.loss.value_and_grad(*arrays, mask=mask, reduction=reduction, **options_on(backend, d.raw))
    v = backend.to_numpy(v)
    if d.spec.kind == SET:
        assert np.all(v == 0), v  # per-set values for "none"
    else:
        np.testing.assert_array_equal(v, np.zeros(d.sample_shape if reduction == "none" else ()))
    for x, gk in zip(d.inputs, as_tuple(g, d.n_inputs)):
        np.testing.assert_array_equal(backend.to_numpy(gk), np.zeros(x.shape))
