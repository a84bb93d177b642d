"""ntxent: one differentiable input with coupled rows (the vjp kernel on the (pred, labels)
path). Equal to optax.ntxent and its JAX gradient for SimCLR pairs on every backend; per
embedding weights through the closed-form vjp; ``.grad`` is an array, not a 1-tuple."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_equals_optax_value_and_gradient(t, rng, backend):
    e = rng.standard_normal((8, 5))
    y = np.arange(8) // 2
    ref, g_ref = jax.value_and_grad(lambda x: optax.ntxent(x, jnp.asarray(y), temperature=t))(jnp.asarray(e))
    v, g = lk.ntxent.value_and_grad(backend.asarray(e), backend.asarray(y), temperature=t)
    np.testing.assert_allclose(backend.to_numpy(v), float(ref), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(g), np.asarray(g_ref), rtol=1e-9, atol=1e-13)


def test_weights_and_hooks(rng):
    torch = pytest.importorskip("torch")
    e = rng.standard_normal((6, 3))
    y = np.array([0, 0, 1, 1, 1, 2])  # 2 has no positive: it contributes 0
    w = rng.uniform(0.5, 2.0, 6)
    per = lk.ntxent(e, y, reduction="none", temperature=0.3)
    assert per[5] == 0.0
    g = lk.ntxent.grad(e, y, weight=w, reduction="sum", temperature=0.3)
    assert isinstance(g, np.ndarray) and g.shape == e.shape
    te = torch.tensor(e, requires_grad=True)
    lk.ntxent(te, torch.tensor(y), weight=torch.tensor(w), reduction="sum", temperature=0.3).backward()
    np.testing.assert_allclose(te.grad.numpy(), g, rtol=1e-12)
    jg = jax.grad(lambda x: lk.ntxent(x, jnp.asarray(y), weight=jnp.asarray(w), reduction="sum", temperature=0.3))(jnp.asarray(e))
    np.testing.assert_allclose(np.asarray(jg), g, rtol=1e-12)
    jac = jax.jacfwd(lambda x: lk.ntxent(x, jnp.asarray(y), reduction="none", temperature=0.3))(jnp.asarray(e))
    np.testing.assert_allclose(np.asarray(jac).sum(0), lk.ntxent.grad(e, y, reduction="sum", temperature=0.3), rtol=1e-10, atol=1e-14)


def test_errors(rng):
    e = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="`labels` must have shape \\(4,\\)"):
        lk.ntxent(e, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="must be an \\(N, d\\) array"):
        lk.ntxent(e[None], np.zeros(1, dtype=int))
