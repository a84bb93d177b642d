"""The JAX bridge: jax.grad / jit / vmap / hessian use the closed-form derivatives and agree
with the peer (PyTorch autograd) where the closed form does not apply (soft targets, weights)."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from cases import CASES, case_ids, draw, losskit_options, option_id

jax = pytest.importorskip("jax")
jnp = jax.numpy
torch = pytest.importorskip("torch")


def _inputs(name, i, rng):
    case, o, pred, target = draw(name, i, rng)
    opts = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in losskit_options(o).items()}
    return case, o, pred, target, opts


@pytest.mark.parametrize("param", case_ids(), ids=option_id)
def test_grad_jit_hessian(param, rng):
    name, i = param
    case, o, pred, target, opts = _inputs(name, i, rng)
    loss = lk.registry[name]
    z, t = jnp.asarray(pred), jnp.asarray(target)
    f = lambda p: loss(p, t, **opts)  # noqa: E731
    g_expected, h_expected = loss.grad_hess(pred, target, **losskit_options(o))
    np.testing.assert_allclose(jax.grad(f)(z), g_expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(z), g_expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jax.jit(f)(z), loss(pred, target, **losskit_options(o)), rtol=1e-12)
    hess = jax.hessian(f)(z).reshape(pred.size, pred.size)
    np.testing.assert_allclose(np.diagonal(hess).reshape(pred.shape), h_expected, rtol=1e-10, atol=1e-14)
    # reduction="none": jacobian rows are the per-sample gradients
    jac = jax.jacrev(lambda p: loss(p, t, reduction="none", **opts))(z)
    per_sample_total = jac.reshape(-1, pred.size).sum(0).reshape(pred.shape)
    np.testing.assert_allclose(per_sample_total, loss.grad(pred, target, reduction="sum", **losskit_options(o)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["huber", "binary_cross_entropy", "cross_entropy", "kl_divergence"])
def test_vmap_over_batches(name, rng):
    case = CASES[name]
    o = case.option_sets[0]
    batches = [case.make(rng, o) for _ in range(3)]
    z = jnp.stack([jnp.asarray(b[0]) for b in batches])
    t = jnp.stack([jnp.asarray(b[1]) for b in batches])
    loss = lk.registry[name]
    values = jax.vmap(loss)(z, t)
    grads = jax.vmap(jax.grad(loss))(z, t)
    for k, (p, y) in enumerate(batches):
        np.testing.assert_allclose(values[k], loss(p, y), rtol=1e-12)
        np.testing.assert_allclose(grads[k], loss.grad(p, y), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("param", case_ids(), ids=option_id)
def test_target_and_weight_gradients_match_torch(param, rng):
    name, i = param
    case, o, pred, target, opts = _inputs(name, i, rng)
    loss = lk.registry[name]
    shape = pred.shape[:-1] if case.sample_axis_dropped else pred.shape
    w = rng.uniform(0.5, 1.5, shape)
    soft = np.issubdtype(np.asarray(target).dtype, np.floating)
    z, t, jw = jnp.asarray(pred), jnp.asarray(target), jnp.asarray(w)
    if soft:
        gw, gt = jax.grad(lambda w_, t_: loss(z, t_, weight=w_, **opts), argnums=(0, 1))(jw, t)
    else:
        gw = jax.grad(lambda w_: loss(z, t, weight=w_, **opts))(jw)
    # peer: torch autograd through the rule mean = Σ w ℓ / Σ w d
    tw = torch.tensor(w, requires_grad=True)
    tt = torch.tensor(target, requires_grad=soft)
    per = case.torch_ref(torch.tensor(pred), tt, "none", **o)
    d = torch.ones_like(per)
    valid = torch.ones_like(per, dtype=torch.bool)
    if name == "cross_entropy" and not soft:
        if o.get("ignore_index") is not None:
            valid = tt != o["ignore_index"]
        if o.get("class_weight") is not None:
            d = torch.as_tensor(o["class_weight"])[torch.where(valid, tt, 0)]
    ref = (torch.where(valid, tw * per, 0)).sum() / torch.where(valid, tw * d, 0).sum()
    ref.backward()
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-10, atol=1e-14)
    if soft:
        np.testing.assert_allclose(gt, tt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_validation_is_skipped_under_jit_but_runs_eagerly():
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="class id 7"):
        lk.cross_entropy(z, jnp.asarray([0, 7]))
    jax.jit(lambda z, y: lk.cross_entropy(z, y))(z, jnp.asarray([0, 2]))
