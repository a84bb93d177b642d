"""The JAX bridge, over every registered loss: jax.grad / jit / vmap / hessian use the
closed-form derivatives; gradients for weights and soft targets equal autograd through the
torch peers (``"sum"``) and finite differences (``"mean"``). Driven by the registry."""

from __future__ import annotations

import numpy as np
import pytest

from registry_cases import (
    SET,
    as_tuple,
    draw,
    finite_difference_grad,
    finite_difference_grad_relative,
    grads,
    is_float,
    jax_options,
    loss_params,
    params,
    torch_autograd_peer,
    torch_peers,
)

jax = pytest.importorskip("jax")
jnp = jax.numpy


@pytest.mark.parametrize("param", params("test_grad_jit_hessian"))
def test_grad_jit_hessian(param, rng):
    d = draw(*param, rng)
    loss, o, n = d.loss, d.options, d.n_inputs
    opts = jax_options(d.raw)
    inputs = tuple(jnp.asarray(x) for x in d.inputs)
    rest = tuple(jnp.asarray(a) for a in d.arrays[n:])
    f = lambda *xs: loss(*xs, *rest, **opts)  # noqa: E731
    argnums = tuple(range(n))
    hessian = d.spec.hessian_kind != "none"
    if hessian:
        g_expected, h_expected = (as_tuple(a, n) for a in loss.grad_hess(*d.arrays, **o))
    else:
        g_expected = grads(d, loss.grad(*d.arrays, **o))
    for got in (jax.grad(f, argnums)(*inputs), jax.jit(jax.grad(f, argnums))(*inputs)):
        for a, b in zip(got, g_expected):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jax.jit(f)(*inputs), loss(*d.arrays, **o), rtol=1e-12)
    if hessian:
        for k, x in enumerate(d.inputs):
            hess = jax.hessian(f, argnums=k)(*inputs).reshape(x.size, x.size)
            np.testing.assert_allclose(np.diagonal(hess).reshape(x.shape), h_expected[k], rtol=1e-10, atol=1e-14)
    # reduction="none": the jacobian's rows are the per-sample (per-set) gradients
    g_sum = grads(d, loss.grad(*d.arrays, reduction="sum", **o))
    for k, x in enumerate(d.inputs):
        jac = jax.jacrev(lambda *xs: loss(*xs, *rest, reduction="none", **opts), argnums=k)(*inputs)
        total = np.asarray(jac).reshape(-1, x.size).sum(0).reshape(x.shape)
        np.testing.assert_allclose(total, g_sum[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", loss_params("test_vmap_over_batches"))
def test_vmap_over_batches(name, rng):
    batches = [draw(name, 0, rng) for _ in range(3)]
    d = batches[0]
    loss, n = d.loss, d.n_inputs
    opts = jax_options(d.raw)
    stacked = [jnp.stack([jnp.asarray(b.arrays[k]) for b in batches]) for k in range(len(d.arrays))]
    f = lambda *a: loss(*a, **opts)  # noqa: E731
    values = jax.vmap(f)(*stacked)
    per_batch = jax.vmap(jax.grad(f, tuple(range(n))))(*stacked)
    for j, b in enumerate(batches):
        np.testing.assert_allclose(values[j], loss(*b.arrays, **b.options), rtol=1e-12)
        for k, g in enumerate(grads(b, loss.grad(*b.arrays, **b.options))):
            np.testing.assert_allclose(per_batch[k][j], g, rtol=1e-12, atol=1e-15)


def _torch_weights_case(s, o) -> bool:
    return s.kind != SET and any("none" in p.reductions and all(k in p.options for k in o if not k.startswith("_")) for p in torch_peers(s))


@pytest.mark.parametrize("param", params("test_weight_and_soft_target_gradients_of_the_sum_match_torch", case=_torch_weights_case))
def test_weight_and_soft_target_gradients_of_the_sum_match_torch(param, rng):
    """d/dw and d/dt of Σ w·ℓ equal torch autograd through the peer's per-sample values."""
    torch = pytest.importorskip("torch")
    d = draw(*param, rng)
    loss, n = d.loss, d.n_inputs
    peer = next(p for p in torch_peers(d.spec) if "none" in p.reductions and all(k in p.options for k in d.options))
    opts = jax_options(d.raw)
    w = rng.uniform(0.5, 1.5, d.sample_shape)
    soft = d.target is not None and is_float(d.target)
    inputs = tuple(jnp.asarray(x) for x in d.inputs)
    if soft:
        gw, gt = jax.grad(lambda w_, t_: loss(*inputs, t_, weight=w_, reduction="sum", **opts), argnums=(0, 1))(jnp.asarray(w), jnp.asarray(d.target))
    else:
        rest = tuple(jnp.asarray(a) for a in d.arrays[n:])
        gw = jax.grad(lambda w_: loss(*inputs, *rest, weight=w_, reduction="sum", **opts))(jnp.asarray(w))
    tw = torch.tensor(w, requires_grad=True)
    tt = None if d.target is None else torch.tensor(d.target, requires_grad=soft)
    t_inputs = [torch.tensor(x) for x in d.inputs]
    (torch_autograd_peer(peer)(*t_inputs, *(() if tt is None else (tt,)), reduction="none", **d.raw) * tw).sum().backward()
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-10, atol=1e-14)
    if soft:
        np.testing.assert_allclose(gt, tt.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("param", params("test_weight_and_soft_target_gradients_of_the_mean_match_finite_differences"))
def test_weight_and_soft_target_gradients_of_the_mean_match_finite_differences(param, rng):
    """d/dw and d/dt of "mean" (whose denominator holds the weights) equal finite differences
    of the NumPy value (validation off: a perturbed distribution no longer sums to 1)."""
    d = draw(*param, rng)
    loss, n = d.loss, d.n_inputs
    o = d.options
    opts = jax_options(d.raw)
    w = rng.uniform(0.5, 1.5, d.sample_shape)
    inputs = tuple(jnp.asarray(x) for x in d.inputs)
    rest = tuple(jnp.asarray(a) for a in d.arrays[n:])
    gw = jax.grad(lambda w_: loss(*inputs, *rest, weight=w_, **opts))(jnp.asarray(w))
    expected = finite_difference_grad(lambda w_: float(loss(*d.arrays, weight=w_, **o)), w)
    np.testing.assert_allclose(gw, expected, rtol=1e-6, atol=1e-9)
    if d.target is not None and is_float(d.target):
        gt = jax.grad(lambda t_: loss(*inputs, t_, weight=jnp.asarray(w), **opts))(jnp.asarray(d.target))
        # probabilities end at 0: steps relative to each entry never cross it
        expected = finite_difference_grad_relative(lambda t_: float(loss(*d.inputs, t_, weight=w, validate=False, **o)), d.target)
        compared = ~np.isnan(expected)
        np.testing.assert_allclose(np.asarray(gt)[compared], expected[compared], rtol=1e-6, atol=1e-9)
