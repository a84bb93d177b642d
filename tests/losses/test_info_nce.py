"""info_nce: the coupled several-input kind. Every key enters every query's row, so weights,
masks and reduction="none" go through the closed-form vector-Jacobian product; checked against
torch autograd of the cross-entropy composition, JAX forward mode, half precision at τ = 0.01."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _pairs(rng, n=7, d=5):
    q = rng.standard_normal((n, d))
    return q, q + 0.4 * rng.standard_normal((n, d))


def _torch_rows(q, k, tau, symmetric=False, negatives=None):
    s = q @ k.T / tau
    ids = torch.arange(q.shape[0])
    if negatives is not None:
        s = torch.cat([s, q @ negatives.T / tau], dim=1)
    rows = F.cross_entropy(s, ids, reduction="none")
    if symmetric:
        rows = (rows + F.cross_entropy((q @ k.T / tau).T, ids, reduction="none")) / 2
    return rows


@pytest.mark.parametrize("o", [{}, {"symmetric": True, "temperature": 0.1}, {"temperature": 0.2, "negatives": "yes"}])
def test_weighted_masked_gradients_equal_torch_autograd(o, rng):
    q, k = _pairs(rng)
    neg = rng.standard_normal((4, 5)) if "negatives" in o else None
    o = {**o, "negatives": neg} if neg is not None else o
    w = rng.uniform(0.5, 2.0, 7)
    m = rng.random(7) < 0.7
    m[0] = True
    tq, tk = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    tn = None if neg is None else torch.tensor(neg, requires_grad=True)
    rows = _torch_rows(tq, tk, o.get("temperature", 0.07), o.get("symmetric", False), tn)
    ref = (rows * torch.tensor(w * m)).sum() / (w * m).sum()
    ref.backward()
    v, (gq, gk) = lk.info_nce.value_and_grad(q, k, weight=w, mask=m, **o)
    np.testing.assert_allclose(v, ref.item(), rtol=1e-10, atol=1e-14)  # torch's LSE − s_ii loses the digits of a tiny loss
    np.testing.assert_allclose(gq, tq.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gk, tk.grad.numpy(), rtol=1e-10, atol=1e-14)
    # the torch hook: the same gradients, and negatives (an array option) get autograd's
    lq, lk_ = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    ln = None if neg is None else torch.tensor(neg, requires_grad=True)
    oo = {**o, "negatives": ln} if neg is not None else o
    lk.info_nce(lq, lk_, weight=torch.tensor(w), mask=torch.tensor(m), **oo).backward()
    torch.testing.assert_close(lq.grad, tq.grad)
    torch.testing.assert_close(lk_.grad, tk.grad)
    if neg is not None:
        torch.testing.assert_close(ln.grad, tn.grad)


def test_jax_forward_and_reverse_mode_per_row(rng):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    q, k = _pairs(rng, 5, 3)
    w = jnp.asarray(rng.uniform(0.5, 2.0, 5))

    def f(q, k):
        return lk.info_nce(q, k, weight=w, reduction="none", symmetric=True, temperature=0.3)

    def ref(q, k):
        s = q @ k.T / 0.3
        return w * (jax.nn.logsumexp(s, 1) + jax.nn.logsumexp(s, 0) - 2 * jnp.diag(s)) / 2

    args = (jnp.asarray(q), jnp.asarray(k))
    for jac in (jax.jacfwd, jax.jacrev):
        for a, b in zip(jac(f, argnums=(0, 1))(*args), jax.jacfwd(ref, argnums=(0, 1))(*args)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(jax.jit(f)(*args), ref(*args), rtol=1e-10, atol=1e-14)  # the reference loses digits of tiny rows


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_stable_at_small_temperature(dtype, rng):
    q, k = _pairs(rng, 16, 8)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    ref = lk.info_nce(q, k, temperature=0.01, symmetric=True)
    tq = torch.tensor(q, dtype=getattr(torch, dtype), requires_grad=True)
    tk = torch.tensor(k, dtype=getattr(torch, dtype), requires_grad=True)
    v = lk.info_nce(tq, tk, temperature=0.01, symmetric=True)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(tq.grad).all() and torch.isfinite(tk.grad).all()
    np.testing.assert_allclose(v.float().item(), ref, rtol=0.05, atol=0.05)


def test_errors(rng):
    q, k = _pairs(rng)
    with pytest.raises(ValueError, match="`query` and `key` must have the same shape"):
        lk.info_nce(q, k[:, :3])
    with pytest.raises(ValueError, match="must be \\(N, d\\) arrays"):
        lk.info_nce(q[None], k[None])
    with pytest.raises(ValueError, match="`negatives` must be an \\(M, 5\\) array"):
        lk.info_nce(q, k, negatives=np.ones((3, 4)))
    with pytest.raises(ValueError, match="cannot be combined with symmetric=True"):
        lk.info_nce(q, k, negatives=np.ones((3, 5)), symmetric=True)
    with pytest.raises(ValueError, match="temperature"):
        lk.info_nce(q, k, temperature=0.0)
