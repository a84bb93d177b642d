"""info_nce's chunked path (similarities recomputed in blocks of query rows above a row count):
on both sides of the threshold, for value, grad and value_and_grad, every reduction, symmetric
True/False and negatives=, with weights and a mask, it equals torch's materialised composition
F.cross_entropy(q @ k.T / τ, arange(N)) (value and autograd gradients) and the whole-matrix
path. The threshold and block size are lowered so the test stays small; blocks are uneven."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from losskit.losses import contrastive

torch = pytest.importorskip("torch")
F = torch.nn.functional

THRESHOLD, BLOCK = 6, 4  # N = 6: whole matrix; N = 7: blocks of 4 + 3 rows
OPTIONS = [
    {"temperature": 0.2},
    {"temperature": 0.1, "symmetric": True},
    {"temperature": 0.3, "negatives": "bank"},
]


@pytest.fixture
def small_chunks(monkeypatch):
    calls = []
    chunked = contrastive._nce_chunked

    def spy(*a, **k):
        calls.append(a[0].shape[0])
        return chunked(*a, **k)

    monkeypatch.setattr(contrastive, "_CHUNK_ROWS", THRESHOLD)
    monkeypatch.setattr(contrastive, "_BLOCK_ROWS", BLOCK)
    monkeypatch.setattr(contrastive, "_nce_chunked", spy)
    return calls


def _case(rng, n, o):
    q = rng.standard_normal((n, 5))
    k = q + 0.5 * rng.standard_normal((n, 5))
    opts = dict(o)
    if opts.get("negatives") == "bank":
        opts["negatives"] = rng.standard_normal((3, 5))
    w = rng.uniform(0.2, 2.0, n)
    mask = rng.random(n) < 0.8
    mask[0] = True
    return q, k, opts, w, mask


def _torch_reference(q, k, opts, w, mask, reduction):
    """The materialised composition, weights and mask applied to its per-row values."""
    qt, kt = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    tau = opts["temperature"]
    s = qt @ kt.T / tau
    ids = torch.arange(q.shape[0])
    if opts.get("negatives") is not None:
        per = F.cross_entropy(torch.cat([s, qt @ torch.tensor(opts["negatives"]).T / tau], 1), ids, reduction="none")
    else:
        per = F.cross_entropy(s, ids, reduction="none")
        if opts.get("symmetric"):
            per = (per + F.cross_entropy(s.T, ids, reduction="none")) / 2
    wm = torch.tensor(np.where(mask, w, 0.0))
    out = per * wm if reduction == "none" else (per * wm).sum() / (wm.sum() if reduction == "mean" else 1.0)
    out.sum().backward()
    return out.detach().numpy(), qt.grad.numpy(), kt.grad.numpy()


@pytest.mark.parametrize("n", [THRESHOLD, THRESHOLD + 1], ids=["whole", "chunked"])
@pytest.mark.parametrize("o", OPTIONS, ids=["plain", "symmetric", "negatives"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_both_sides_of_the_threshold_equal_the_torch_composition(small_chunks, n, o, reduction, rng):
    q, k, opts, w, mask = _case(rng, n, o)
    value, g_q, g_k = _torch_reference(q, k, opts, w, mask, reduction)
    kw = dict(opts, weight=w, mask=mask, reduction=reduction)
    got = lk.info_nce(q, k, **kw)
    grad = lk.info_nce.grad(q, k, **kw)
    v2, grad2 = lk.info_nce.value_and_grad(q, k, **kw)
    assert small_chunks == ([n] * 3 if n > THRESHOLD else [])  # the path each side takes
    # torch's LSE − s_ii loses the digits of near-zero row losses that losskit keeps: atol
    np.testing.assert_allclose(got, value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(v2, value, rtol=1e-10, atol=1e-12)
    for a, b in ((grad[0], g_q), (grad[1], g_k), (grad2[0], g_q), (grad2[1], g_k)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # and the whole-matrix path on the same inputs, to rounding
    contrastive._CHUNK_ROWS = 10**9
    np.testing.assert_allclose(got, lk.info_nce(q, k, **kw), rtol=1e-12, atol=1e-15)
    for a, b in zip(grad, lk.info_nce.grad(q, k, **kw)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("o", OPTIONS, ids=["plain", "symmetric", "negatives"])
def test_chunked_path_through_the_torch_and_jax_hooks(small_chunks, o, rng):
    jax = pytest.importorskip("jax")
    q, k, opts, w, mask = _case(rng, THRESHOLD + 3, o)
    value, g_q, g_k = _torch_reference(q, k, opts, w, mask, "mean")
    qt, kt = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    t_opts = {key: torch.tensor(v) if isinstance(v, np.ndarray) else v for key, v in opts.items()}
    out = lk.info_nce(qt, kt, weight=torch.tensor(w), mask=torch.tensor(mask), **t_opts)
    out.backward()
    np.testing.assert_allclose(out.item(), value, rtol=1e-10)
    np.testing.assert_allclose(qt.grad.numpy(), g_q, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kt.grad.numpy(), g_k, rtol=1e-10, atol=1e-12)
    jnp = jax.numpy
    j_opts = {key: jnp.asarray(v) if isinstance(v, np.ndarray) else v for key, v in opts.items()}
    f = lambda a, b: lk.info_nce(a, b, weight=jnp.asarray(w), mask=jnp.asarray(mask), **j_opts)  # noqa: E731
    v, (jq, jk) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(jnp.asarray(q), jnp.asarray(k))
    np.testing.assert_allclose(v, value, rtol=1e-10)
    np.testing.assert_allclose(jq, g_q, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jk, g_k, rtol=1e-10, atol=1e-12)
    assert small_chunks  # the chunked path ran


def test_chunked_stays_stable_at_small_temperature_in_float32(small_chunks, rng):
    q = rng.standard_normal((THRESHOLD + 5, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k = q + np.float32(0.05) * rng.standard_normal(q.shape).astype(np.float32)
    for symmetric in (False, True):
        v, (g_q, g_k) = lk.info_nce.value_and_grad(q, k, temperature=0.01, symmetric=symmetric)
        expected = _torch_reference(q.astype(np.float64), k.astype(np.float64), {"temperature": 0.01, "symmetric": symmetric}, np.ones(len(q)), np.ones(len(q), bool), "mean")
        assert np.isfinite(v) and np.all(np.isfinite(g_q)) and np.all(np.isfinite(g_k))
        np.testing.assert_allclose(v, expected[0], rtol=1e-3, atol=1e-5)
