"""linear_cross_entropy: equal to the materialised reference ``cross_entropy(x @ W.T + b)``
(PyTorch's ``F.cross_entropy`` on the full logits, or a float64 formula for the options torch
does not have), for the value and all three gradients, on PyTorch, JAX and NumPy; independent
of the chunk size; edge cases; half precision against a float32 reference; PyTorch's own
``F.linear_cross_entropy`` where options overlap."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

import losskit as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional

N, H, V = 123, 77, 1001  # odd shapes: no chunk divides N, nothing is a power of two
IGNORE = -100


def _inputs(dtype=torch.float64, seed=0, n=N, h=H, v=V, ignore_frac=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=g, dtype=torch.float64)
    w = torch.randn(v, h, generator=g, dtype=torch.float64) * 0.3
    b = torch.randn(v, generator=g, dtype=torch.float64) * 0.5
    y = torch.randint(0, v, (n,), generator=g)
    ignored = torch.rand(n, generator=g) < ignore_frac
    y_ign = torch.where(ignored, torch.full_like(y, IGNORE), y)
    return x.to(dtype), w.to(dtype), b.to(dtype), y, y_ign


def _leaves(*arrays):
    return [a.detach().clone().requires_grad_(True) for a in arrays]


def _grads_of(loss, leaves, grad_out):
    return torch.autograd.grad(loss, leaves, grad_out)


def _reference(x, w, b, y, *, reduction, ignore_index=None, class_weight=None, label_smoothing=0.0,
               smoothing_formula="pytorch", z_loss_weight=0.0, softcap=None, sample_weight=None, mask=None, normalizer=None):
    """Independent float64 reference: materialised logits and torch's own cross_entropy, plus
    the documented formulas for z-loss, softcap, Megatron smoothing, weights, masks."""
    z = x @ w.T + (0 if b is None else b)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    v = z.shape[-1]
    a = label_smoothing * v / (v - 1) if smoothing_formula == "megatron" else label_smoothing
    ii = IGNORE if ignore_index is None else ignore_index
    per = F.cross_entropy(z, y, weight=class_weight, ignore_index=ii, label_smoothing=a, reduction="none")
    valid = y != ii
    if mask is not None:
        valid = valid & mask
    if z_loss_weight:
        per = per + z_loss_weight * torch.logsumexp(z, -1) ** 2 * valid
    per = torch.where(valid, per, torch.zeros_like(per))
    sw = torch.ones_like(per) if sample_weight is None else sample_weight
    cwy = torch.ones_like(per) if class_weight is None else class_weight[y.clamp(min=0)]
    if reduction == "none":
        return per * sw
    if reduction == "sum":
        return (per * sw).sum()
    denom = normalizer if normalizer is not None else (sw * cwy * valid).sum()
    return (per * sw).sum() / denom if float(denom) != 0 else (per * sw).sum() * 0.0


OPTION_SETS = {
    "plain": {},
    "ignore": {"ignore_index": IGNORE},
    "class_weight": {"class_weight": "cw", "ignore_index": IGNORE},
    "smooth": {"label_smoothing": 0.1},
    "smooth_cw_ignore": {"label_smoothing": 0.2, "class_weight": "cw", "ignore_index": IGNORE},
    "megatron": {"label_smoothing": 0.1, "smoothing_formula": "megatron", "ignore_index": IGNORE},
    "zloss_softcap": {"z_loss_weight": 1e-3, "softcap": 3.0, "ignore_index": IGNORE},
    "zloss_softcap_cw": {"z_loss_weight": 1e-2, "softcap": 2.0, "class_weight": "cw"},
    "sample_weight_mask": {"sample_weight": "sw", "mask": "mask", "ignore_index": IGNORE},
    "normalizer": {"normalizer": 250.0, "ignore_index": IGNORE},
}


def _bind(opts, rng_seed=1):
    g = torch.Generator().manual_seed(rng_seed)
    out = {}
    for k, val in opts.items():
        if val == "cw":
            val = torch.rand(V, generator=g, dtype=torch.float64) + 0.5
        elif val == "sw":
            val = torch.rand(N, generator=g, dtype=torch.float64) + 0.5
        elif val == "mask":
            val = torch.rand(N, generator=g) > 0.2
        out[k] = val
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", list(OPTION_SETS))
@pytest.mark.parametrize("grad_in_forward", [None, False])
def test_torch_matches_materialised_reference(name, reduction, grad_in_forward):
    if name == "normalizer" and reduction != "mean":
        pytest.skip("normalizer applies to mean only")
    x, w, b, y, y_ign = _inputs()
    opts = _bind(OPTION_SETS[name])
    target = y_ign if "ignore_index" in opts else y
    xs, ws, bs = _leaves(x, w, b)
    out = lk.linear_cross_entropy(xs, ws, target, bias=bs, reduction=reduction, chunk_size=40, grad_in_forward=grad_in_forward, **opts)
    xr, wr, br = _leaves(x, w, b)
    ref = _reference(xr, wr, br, target, reduction=reduction, **opts)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    # non-uniform incoming gradient (per token for "none")
    g_out = torch.rand_like(ref) + 0.5
    got = _grads_of(out, [xs, ws, bs], g_out)
    want = _grads_of(ref, [xr, wr, br], g_out)
    for gg, ww in zip(got, want):
        torch.testing.assert_close(gg, ww, rtol=1e-9, atol=1e-12)


def test_megatron_smoothing_is_the_named_target_distribution():
    """Megatron/NeMo: the true class keeps 1 − α, every other class gets α/(V − 1)."""
    x, w, b, y, _ = _inputs(n=31)
    a = 0.1
    t = torch.full((31, V), a / (V - 1), dtype=torch.float64)
    t[torch.arange(31), y] = 1 - a
    ref = F.cross_entropy(x @ w.T + b, t)
    out = lk.linear_cross_entropy(x, w, y, bias=b, label_smoothing=a, smoothing_formula="megatron")
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)


def test_probability_targets():
    x, w, b, y, _ = _inputs(n=50)
    g = torch.Generator().manual_seed(3)
    t = torch.softmax(torch.randn(50, V, generator=g, dtype=torch.float64) * 3, -1)
    xs, ws, bs = _leaves(x, w, b)
    out = lk.linear_cross_entropy(xs, ws, t, bias=bs, chunk_size=16, label_smoothing=0.05)
    xr, wr, br = _leaves(x, w, b)
    ref = F.cross_entropy(xr @ wr.T + br, t, label_smoothing=0.05)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)
    for gg, ww in zip(_grads_of(out, [xs, ws, bs], None), _grads_of(ref, [xr, wr, br], None)):
        torch.testing.assert_close(gg, ww, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 122, 123, 5000])
def test_independent_of_chunk_size(chunk_size):
    x, w, b, y, y_ign = _inputs(dtype=torch.float32)
    base = lk.linear_cross_entropy.value_and_grad(x, w, y_ign, bias=b, ignore_index=IGNORE, chunk_size=N)
    got = lk.linear_cross_entropy.value_and_grad(x, w, y_ign, bias=b, ignore_index=IGNORE, chunk_size=chunk_size)
    torch.testing.assert_close(got[0], base[0], rtol=1e-6, atol=1e-6)
    for gg, ww in zip(got[1], base[1]):
        torch.testing.assert_close(gg, ww, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("how", ["ignore_index", "mask"])
@pytest.mark.parametrize("grad_in_forward", [None, False])
def test_all_ignored_gives_zero_and_zero_grads(reduction, how, grad_in_forward):
    x, w, b, y, _ = _inputs(dtype=torch.float32, n=20)
    if how == "ignore_index":
        kw = {"ignore_index": IGNORE}
        target = torch.full_like(y[:20], IGNORE)
    else:
        kw = {"mask": torch.zeros(20, dtype=torch.bool)}
        target = y[:20]
    xs, ws, bs = _leaves(x, w, b)
    out = lk.linear_cross_entropy(xs, ws, target, bias=bs, reduction=reduction, grad_in_forward=grad_in_forward, chunk_size=8, **kw)
    assert torch.all(out == 0) and not torch.isnan(out).any()
    out.sum().backward()
    for leaf in (xs, ws, bs):
        assert torch.all(leaf.grad == 0)


def test_nan_rows_that_are_ignored_get_zero_gradient():
    """An ignored token counts nowhere, even when its hidden state is NaN: its logits gradient
    is exactly 0, so its dx row is 0, and dW = Gᵀx reads x with that row zeroed (a plain GEMM
    would give 0·NaN = NaN in every entry of dW). More cases: losses/test_cross_entropy_torch_lean.py."""
    x, w, b, y, _ = _inputs(dtype=torch.float32, n=10)
    x[3] = float("nan")
    target = y[:10].clone()
    target[3] = IGNORE
    clean = x.clone()
    clean[3] = 0.0
    for gif in (None, False):
        xs, ws = _leaves(x, w)
        loss = lk.linear_cross_entropy(xs, ws, target, ignore_index=IGNORE, grad_in_forward=gif)
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.all(xs.grad[3] == 0) and torch.isfinite(xs.grad).all()
        assert torch.isfinite(ws.grad).all()
        xr, wr = _leaves(clean, w)
        F.cross_entropy(xr @ wr.T, target, ignore_index=IGNORE).backward()
        torch.testing.assert_close(ws.grad, wr.grad)
        torch.testing.assert_close(xs.grad, xr.grad)


@pytest.mark.parametrize("dtype,rtol_v,rtol_g", [(torch.bfloat16, 2e-2, 5e-2), (torch.float16, 5e-3, 1e-2)])
@pytest.mark.parametrize("grad_in_forward", [None, False])
def test_half_precision_against_float32_reference(dtype, rtol_v, rtol_g, grad_in_forward):
    """Half inputs: logits GEMMs in the input dtype, softmax/LSE in float32, dW accumulated in
    float32 across chunks. Stated tolerances: value within rtol_v; each gradient within
    rtol_g of its largest entry (bf16 has 8 mantissa bits, fp16 11)."""
    x, w, b, y, y_ign = _inputs(dtype=torch.float32)
    xl, wl, bl = (a.to(dtype) for a in (x, w, b))
    xs, ws, bs = _leaves(xl, wl, bl)
    out = lk.linear_cross_entropy(xs, ws, y_ign, bias=bs, ignore_index=IGNORE, chunk_size=32, grad_in_forward=grad_in_forward)
    assert out.dtype == torch.float32
    out.backward()
    xr, wr, br = _leaves(*(a.to(torch.float32) for a in (xl, wl, bl)))
    ref = F.cross_entropy(xr @ wr.T + br, y_ign, ignore_index=IGNORE)
    ref.backward()
    torch.testing.assert_close(out, ref, rtol=rtol_v, atol=0)
    for got, want in ((xs.grad, xr.grad), (ws.grad, wr.grad), (bs.grad, br.grad)):
        assert got.dtype == dtype
        err = (got.float() - want).abs().max() / want.abs().max()
        assert err < rtol_g, float(err)


@pytest.mark.parametrize("opts", [{"ignore_index": IGNORE}, {"class_weight": True, "z_loss": 1e-3, "softcap": 3.0},
                                  {"label_smoothing": 0.1, "ignore_index": IGNORE}])
# 100: the float32 partial dW fits in the work buffer (one block); 120 (>= 1.5 H): its bfloat16 partial too
@pytest.mark.parametrize("chunk_size", [32, 100, 120, N])
@pytest.mark.parametrize("grad_in_forward", [None, False])
def test_half_precision_row_blocks_and_one_chunk(monkeypatch, opts, chunk_size, grad_in_forward):
    """Half inputs keep the slab in their dtype and run the float32 kernel on row blocks of at
    most ``_WORK_BLOCK`` elements: row blocks smaller than the chunk (7 rows, dividing neither
    the chunk nor N) give bitwise the same value, dx and dW as one block per chunk (db: the same
    sum in another order). One chunk (chunk_size=N) writes dW in the input dtype from one GEMM,
    several chunks accumulate it in float32: both within the half tolerances of the float32
    materialised reference."""
    from losskit.interop import torch_fused

    x, w, b, y, y_ign = _inputs(dtype=torch.float32)
    xl, wl, bl = (a.to(torch.bfloat16) for a in (x, w, b))
    kw = dict(opts)
    if kw.pop("class_weight", False):
        kw["class_weight"] = torch.rand(V, generator=torch.Generator().manual_seed(3)) + 0.5
    target = y_ign if "ignore_index" in kw else y

    def run():
        leaves = _leaves(xl, wl, bl)
        out = lk.linear_cross_entropy(*leaves[:2], target, bias=leaves[2], chunk_size=chunk_size, grad_in_forward=grad_in_forward, **kw)
        out.backward()
        return out, [a.grad for a in leaves]

    assert torch_fused._WORK_BLOCK // V >= N  # the default: one row block per chunk here
    one_block, grads_one = run()
    monkeypatch.setattr(torch_fused, "_WORK_BLOCK", 7 * V)
    blocks, grads_blocks = run()
    assert torch.equal(one_block, blocks)
    assert torch.equal(grads_one[0], grads_blocks[0]) and torch.equal(grads_one[1], grads_blocks[1])
    torch.testing.assert_close(grads_one[2], grads_blocks[2], rtol=1e-2, atol=1e-6)
    assert all(g.dtype == torch.bfloat16 for g in grads_blocks)

    xr, wr, br = _leaves(x.to(torch.bfloat16).float(), w.to(torch.bfloat16).float(), b.to(torch.bfloat16).float())
    ref = _reference(xr, wr, br, target, reduction="mean", **{("z_loss_weight" if k == "z_loss" else k): v for k, v in kw.items()})
    ref.backward()
    torch.testing.assert_close(blocks, ref.float(), rtol=2e-2, atol=0)
    for got, want in zip(grads_blocks, (xr.grad, wr.grad, br.grad)):
        err = (got.float() - want).abs().max() / want.abs().max()
        assert err < 5e-2, float(err)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_equals_torch_linear_cross_entropy(reduction, with_weight, chunked):
    if not hasattr(F, "linear_cross_entropy"):
        pytest.skip("torch.nn.functional.linear_cross_entropy is not in this torch build")
    x, w, b, y, y_ign = _inputs(dtype=torch.float64)
    cw = torch.rand(V, dtype=torch.float64) + 0.5 if with_weight else None
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=32) if chunked else None
    xs, ws, bs = _leaves(x, w, b)
    out = lk.linear_cross_entropy(xs, ws, y_ign, bias=bs, class_weight=cw, ignore_index=IGNORE, reduction=reduction)
    xr, wr, br = _leaves(x, w, b)
    ref = F.linear_cross_entropy(xr, wr, y_ign, linear_bias=br, weight=cw, ignore_index=IGNORE, reduction=reduction, options=options)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g_out = torch.rand_like(ref) + 0.5
    for gg, ww in zip(_grads_of(out, [xs, ws, bs], g_out), _grads_of(ref, [xr, wr, br], g_out)):
        torch.testing.assert_close(gg, ww, rtol=1e-9, atol=1e-12)


def test_leading_axes_and_no_bias():
    x, w, _, y, _ = _inputs(n=24)
    x3, y3 = x.reshape(4, 6, H), y.reshape(4, 6)
    xs, ws = _leaves(x3, w)
    out = lk.linear_cross_entropy(xs, ws, y3, reduction="none", chunk_size=5)
    assert out.shape == (4, 6)
    ref = F.cross_entropy((x3 @ w.T).reshape(24, V), y3.reshape(24), reduction="none").reshape(4, 6)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert xs.grad.shape == (4, 6, H)


def test_inputs_are_not_mutated():
    x, w, b, y, y_ign = _inputs(dtype=torch.float32)
    copies = [a.clone() for a in (x, w, b, y_ign)]
    xs, ws, bs = (a.requires_grad_(True) for a in (x, w, b))
    for gif in (None, False):
        lk.linear_cross_entropy(xs, ws, y_ign, bias=bs, ignore_index=IGNORE, softcap=2.0, z_loss_weight=1e-3, grad_in_forward=gif).backward()
    for a, c in zip((x, w, b, y_ign), copies):
        assert torch.equal(a.detach(), c)


def test_retain_graph():
    x, w, b, y, _ = _inputs(dtype=torch.float32, n=16)
    xs, ws = _leaves(x, w)
    loss = lk.linear_cross_entropy(xs, ws, y[:16], grad_in_forward=False)
    loss.backward(retain_graph=True)
    first = xs.grad.clone()
    loss.backward()
    torch.testing.assert_close(xs.grad, 2 * first)
    loss = lk.linear_cross_entropy(xs, ws, y[:16])  # gradients computed in forward, consumed once
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="grad_in_forward=False"):
        loss.backward()


def test_no_grad_and_value_and_grad_agree_with_autograd():
    x, w, b, y, y_ign = _inputs()
    with torch.no_grad():
        v0 = lk.linear_cross_entropy(x, w, y, bias=b)
    v, grads = lk.linear_cross_entropy.value_and_grad(x, w, y, bias=b)
    assert isinstance(grads, lk.LinearCrossEntropyGrads)
    xs, ws, bs = _leaves(x, w, b)
    ref = lk.linear_cross_entropy(xs, ws, y, bias=bs)
    ref.backward()
    torch.testing.assert_close(v0, ref.detach())
    torch.testing.assert_close(v, ref.detach())
    for got, want in zip(grads, (xs.grad, ws.grad, bs.grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)


def test_extras_named_tuple():
    x, w, b, y, y_ign = _inputs()
    xs = x.clone().requires_grad_(True)
    out = lk.linear_cross_entropy_with_extras(xs, w, y_ign, bias=b, ignore_index=IGNORE, softcap=4.0, chunk_size=50)
    assert isinstance(out, lk.LinearCrossEntropyExtras)
    z = 4.0 * torch.tanh((x @ w.T + b) / 4.0)
    valid = y_ign != IGNORE
    torch.testing.assert_close(out.loss, F.cross_entropy(z, y_ign, ignore_index=IGNORE))
    torch.testing.assert_close(out.lse, torch.logsumexp(z, -1))
    tlp = torch.log_softmax(z, -1).gather(1, y_ign.clamp(min=0)[:, None])[:, 0]
    torch.testing.assert_close(out.target_logprob, torch.where(valid, tlp, torch.zeros_like(tlp)))
    acc = ((z.argmax(-1) == y_ign) & valid).sum() / valid.sum()
    torch.testing.assert_close(out.accuracy, acc.to(out.accuracy.dtype))
    assert out.loss.requires_grad and not out.lse.requires_grad and not out.target_logprob.requires_grad
    out.loss.backward()
    assert xs.grad is not None


# --- NumPy and JAX ---------------------------------------------------------------------------


def _np_inputs():
    x, w, b, y, y_ign = _inputs()
    return x.numpy(), w.numpy(), b.numpy(), y.numpy(), y_ign.numpy()


@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1, "class_weight": True, "ignore_index": IGNORE}, {"z_loss_weight": 1e-3, "softcap": 3.0}])
def test_numpy_value_and_grads(opts):
    x, w, b, y, y_ign = _np_inputs()
    opts = dict(opts)
    if opts.pop("class_weight", False):
        opts["class_weight"] = np.linspace(0.5, 1.5, V)
    target = y_ign if "ignore_index" in opts else y
    value, grads = lk.linear_cross_entropy.value_and_grad(x, w, target, bias=b, chunk_size=30, **opts)
    assert isinstance(value, (float, np.floating, np.ndarray)) and isinstance(grads.x, np.ndarray)
    tr = [torch.from_numpy(a).requires_grad_(True) for a in (x, w, b)]
    topts = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
    ref = _reference(*tr, torch.from_numpy(target), reduction="mean", **topts)
    ref.backward()
    np.testing.assert_allclose(value, ref.item(), rtol=1e-12)
    for got, want in zip(grads, tr):
        np.testing.assert_allclose(got, want.grad.numpy(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(lk.linear_cross_entropy(x, w, target, bias=b, **opts), value, rtol=1e-12)


@pytest.fixture()
def jax_x64():
    jax = pytest.importorskip("jax")
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", prev)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_jax_jit_value_and_vjp(jax_x64, reduction):
    jax = jax_x64
    jnp = jax.numpy
    x, w, b, y, y_ign = _np_inputs()
    opts = {"ignore_index": IGNORE, "label_smoothing": 0.1, "z_loss_weight": 1e-3, "softcap": 3.0}
    f = jax.jit(lambda x_, w_, b_: lk.linear_cross_entropy(x_, w_, jnp.asarray(y_ign), bias=b_, reduction=reduction, chunk_size=40, **opts))
    out, vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
    tr = [torch.from_numpy(a).requires_grad_(True) for a in (x, w, b)]
    ref = _reference(*tr, torch.from_numpy(y_ign), reduction=reduction, **opts)
    np.testing.assert_allclose(np.asarray(out), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    ct = np.random.default_rng(0).uniform(0.5, 1.5, np.shape(out))
    got = vjp(jnp.asarray(ct))
    want = torch.autograd.grad(ref, tr, torch.from_numpy(np.asarray(ct)))
    for gg, ww in zip(got, want):
        np.testing.assert_allclose(np.asarray(gg), ww.numpy(), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", ["plain", "class_weight", "megatron", "zloss_softcap_cw", "sample_weight_mask", "normalizer"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_jax_scalar_reductions_gradients_in_forward(jax_x64, name, reduction):
    """"mean"/"sum" on JAX take the custom_vjp whose forward rule computes the gradients
    (``_reduced``; grad_in_forward=False keeps the recompute rule that
    test_jax_jit_value_and_vjp checks): value and the gradients of x, W, b for a non-unit
    cotangent equal the float64 reference."""
    grad_in_forward = None
    if name == "normalizer" and reduction != "mean":
        pytest.skip("normalizer applies to mean only")
    jax = jax_x64
    jnp = jax.numpy
    x, w, b, y, y_ign = _np_inputs()
    opts = _bind(OPTION_SETS[name])
    target = y_ign if "ignore_index" in opts else y
    jopts = {k: (jnp.asarray(v.numpy()) if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}
    f = jax.jit(lambda x_, w_, b_: lk.linear_cross_entropy(x_, w_, jnp.asarray(target), bias=b_, reduction=reduction, chunk_size=40,
                                                         grad_in_forward=grad_in_forward, **jopts))
    out, vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
    tr = [torch.from_numpy(a).requires_grad_(True) for a in (x, w, b)]
    ref = _reference(*tr, torch.from_numpy(target), reduction=reduction, **opts)
    np.testing.assert_allclose(np.asarray(out), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    got = vjp(jnp.asarray(1.7))
    want = torch.autograd.grad(ref, tr, torch.tensor(1.7, dtype=torch.float64))
    for gg, ww in zip(got, want):
        np.testing.assert_allclose(np.asarray(gg), ww.numpy(), rtol=1e-9, atol=1e-13)


def test_jax_grad_and_extras(jax_x64):
    jax = jax_x64
    jnp = jax.numpy
    x, w, b, y, y_ign = _np_inputs()
    gx = jax.grad(lambda x_: lk.linear_cross_entropy(x_, jnp.asarray(w), jnp.asarray(y), bias=jnp.asarray(b)))(jnp.asarray(x))
    tx = torch.from_numpy(x).requires_grad_(True)
    F.cross_entropy(tx @ torch.from_numpy(w).T + torch.from_numpy(b), torch.from_numpy(y)).backward()
    np.testing.assert_allclose(np.asarray(gx), tx.grad.numpy(), rtol=1e-9, atol=1e-14)
    ex = lk.linear_cross_entropy_with_extras(jnp.asarray(x), jnp.asarray(w), jnp.asarray(y), bias=jnp.asarray(b))
    assert isinstance(ex, lk.LinearCrossEntropyExtras)
    z = x @ w.T + b
    np.testing.assert_allclose(np.asarray(ex.lse), torch.logsumexp(torch.from_numpy(z), -1).numpy(), rtol=1e-12)


# --- errors and import isolation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"smoothing_formula": "nemo"}, ValueError, "smoothing_formula"),
        ({"label_smoothing": 0.9999, "smoothing_formula": "megatron"}, ValueError, "at most"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"softcap": 0.0}, ValueError, "softcap"),
        ({"z_loss_weight": -1.0}, ValueError, "z_loss_weight"),
        ({"reduction": "batchmean"}, ValueError, "reduction"),
        ({"normalizer": 3.0, "reduction": "sum"}, ValueError, "normalizer"),
    ],
)
def test_option_errors(kwargs, exc, match):
    x, w, b, y, _ = _inputs(n=4, v=11, h=3)
    with pytest.raises(exc, match=match):
        lk.linear_cross_entropy(x, w, y, **kwargs)


def test_shape_and_value_errors():
    x, w, b, y, _ = _inputs(n=4, v=11, h=3)
    with pytest.raises(ValueError, match=r"weight.shape\[1\]"):
        lk.linear_cross_entropy(x, w[:, :2], y)
    with pytest.raises(ValueError, match=r"bias"):
        lk.linear_cross_entropy(x, w, y, bias=b[:5])
    with pytest.raises(ValueError, match=r"trailing axis of size 1"):
        lk.linear_cross_entropy(x, w, y[:, None])
    with pytest.raises(TypeError, match="same dtype"):
        lk.linear_cross_entropy(x, w.float(), y)
    bad = y.clone()
    bad[2] = 11
    with pytest.raises(ValueError, match=r"class id 11 at target\[2\]"):
        lk.linear_cross_entropy(x, w, bad)
    lk.linear_cross_entropy(x, w, bad, validate=False, mask=torch.tensor([True, True, False, True]))


def test_import_does_not_import_frameworks():
    code = "import sys, losskit, losskit.fused; assert 'torch' not in sys.modules and 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_signature_options_are_keyword_only():
    x, w, b, y, _ = _inputs(n=4, v=11, h=3)
    with pytest.raises(TypeError):
        lk.linear_cross_entropy(x, w, y, b)  # bias is keyword-only
    for combo in itertools.product(["mean"], [None]):
        assert lk.linear_cross_entropy(x, w, y, reduction=combo[0], bias=combo[1]).ndim == 0


# --- every argument through the shared checks (issue: unclear errors, unchecked array options) --


@pytest.mark.parametrize("arg", ["bias", "sample_weight", "mask", "class_weight", "target"])
def test_non_arrays_and_other_libraries_are_type_errors_naming_the_argument(arg):
    x, w, y = np.zeros((4, 3)), np.zeros((5, 3)), np.array([0, 1, 2, 3])
    for bad in ([0.0] * 5, "abc", 3, torch.zeros(5)):
        kw = {} if arg == "target" else {arg: bad}
        args = (x, w, bad) if arg == "target" else (x, w, y)
        with pytest.raises(TypeError, match=f"`{arg}`"):
            lk.linear_cross_entropy(*args, **kw)


def test_option_values_follow_the_shared_rules():
    x, w, y = np.zeros((4, 3)), np.zeros((5, 3)), np.array([0, 1, 2, 3])
    for kw, err, msg in (
        ({"normalizer": np.array(-1.0)}, ValueError, "`normalizer` must be finite and >= 0"),
        ({"normalizer": np.array([1.0, 2.0])}, ValueError, "`normalizer` must have shape"),
        ({"normalizer": True}, TypeError, "`normalizer`"),
        ({"normalizer": 0}, ValueError, "`normalizer` is 0"),
        ({"class_weight": -np.ones(5)}, ValueError, "`class_weight` must be finite and >= 0"),
        ({"sample_weight": np.zeros(4)}, ValueError, "sum to 0"),
        ({"label_smoothing": True}, TypeError, "`label_smoothing`"),
    ):
        with pytest.raises(err, match=msg):
            lk.linear_cross_entropy(x, w, y, **kw)
    # an empty selection is still the documented 0
    assert float(lk.linear_cross_entropy(x, w, y, sample_weight=np.zeros(4), mask=np.zeros(4, bool))) == 0.0


def test_jax_x_with_numpy_weight_and_labels():
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(0)
    x, w, y = rng.standard_normal((6, 3)), rng.standard_normal((5, 3)), rng.integers(0, 5, 6)
    np.testing.assert_allclose(float(lk.linear_cross_entropy(jnp.asarray(x), w, y)), float(lk.linear_cross_entropy(x, w, y)), rtol=1e-6)
