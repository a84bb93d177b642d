"""The torch bridge: grad_fn with the closed-form backward, gradcheck / gradgradcheck,
torch.compile(fullgraph=True), gradients for targets and weights, dtype and device rules."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from cases import CASES, case_ids, draw, losskit_options, option_id

torch = pytest.importorskip("torch")


def _torch_inputs(name, i, rng, dtype=torch.float64):
    case, o, pred, target = draw(name, i, rng)
    opts = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in losskit_options(o).items()}
    t = torch.as_tensor(target)
    if t.is_floating_point():
        t = t.to(dtype)
    return case, torch.tensor(pred, dtype=dtype, requires_grad=True), t, opts


@pytest.mark.parametrize("param", case_ids(), ids=option_id)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_and_gradgradcheck(param, reduction, rng):
    name, i = param
    case, pred, target, opts = _torch_inputs(name, i, rng)
    loss = lk.registry[name]
    fn = lambda p: loss(p, target, reduction=reduction, **opts)  # noqa: E731
    out = fn(pred)
    assert out.grad_fn is not None and "LossFunction" in type(out.grad_fn).__name__
    assert torch.autograd.gradcheck(fn, (pred,))
    if name != "mae":  # |x| has no second derivative worth checking numerically
        assert torch.autograd.gradgradcheck(fn, (pred,))


@pytest.mark.parametrize("param", case_ids(), ids=option_id)
def test_soft_targets_and_weights_get_autograd_gradients(param, rng):
    """Inputs other than pred get gradients equal to autograd through the peer."""
    name, i = param
    case, pred, target, opts = _torch_inputs(name, i, rng)
    loss = lk.registry[name]
    shape = pred.shape[:-1] if case.sample_axis_dropped else pred.shape
    w = torch.tensor(rng.uniform(0.5, 1.5, shape), requires_grad=True)
    diff_target = target.is_floating_point()
    if diff_target:
        target = target.detach().requires_grad_(True)
    v = loss(pred, target, weight=w, reduction="sum", **opts)
    v.backward()
    o = CASES[name].option_sets[i]
    p2 = pred.detach().requires_grad_(True)
    t2 = target.detach().requires_grad_(diff_target)
    w2 = w.detach().requires_grad_(True)
    (case.torch_ref(p2, t2, "none", **o) * w2).sum().backward()
    torch.testing.assert_close(pred.grad, p2.grad)
    torch.testing.assert_close(w.grad, w2.grad)
    if diff_target:
        torch.testing.assert_close(target.grad, t2.grad)


@pytest.mark.parametrize("name", ["mse", "huber", "binary_cross_entropy", "cross_entropy", "kl_divergence"])
def test_torch_compile_fullgraph(name, rng):
    i = 1 if len(CASES[name].option_sets) > 1 else 0
    case, pred, target, opts = _torch_inputs(name, i, rng, dtype=torch.float32)
    loss = lk.registry[name]

    def step(p, t):
        v = loss(p, t, **opts)
        (g,) = torch.autograd.grad(v, p)
        return v, g

    compiled = torch.compile(lambda p, t: loss(p, t, **opts), fullgraph=True, backend="eager")
    v = compiled(pred, target)
    v.backward()
    p2 = pred.detach().requires_grad_(True)
    v2 = loss(p2, target, **opts)
    v2.backward()
    torch.testing.assert_close(v, v2)
    torch.testing.assert_close(pred.grad, p2.grad)


def test_torch_compile_inductor_cross_entropy(rng):
    z = torch.randn(16, 7, requires_grad=True)
    y = torch.randint(0, 7, (16,))
    compiled = torch.compile(lambda z, y: lk.cross_entropy(z, y, label_smoothing=0.1), fullgraph=True)
    v = compiled(z, y)
    v.backward()
    z2 = z.detach().requires_grad_(True)
    torch.nn.functional.cross_entropy(z2, y, label_smoothing=0.1).backward()
    torch.testing.assert_close(v, torch.nn.functional.cross_entropy(z2.detach(), y, label_smoothing=0.1))
    torch.testing.assert_close(z.grad, z2.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_inputs_compute_in_float32_and_return_grad_in_input_dtype(dtype):
    z = torch.randn(8, 5).to(dtype).requires_grad_(True)
    y = torch.randint(0, 5, (8,))
    v = lk.cross_entropy(z, y)
    assert v.dtype == torch.float32
    v.backward()
    assert z.grad.dtype == dtype
    ref = torch.nn.functional.cross_entropy(z.detach().float(), y)
    torch.testing.assert_close(v, ref)


def test_no_grad_path_returns_plain_tensor_and_inputs_are_not_mutated():
    z = torch.randn(6, 3)
    y = torch.rand(6, 3)
    z0, y0 = z.clone(), y.clone()
    with torch.no_grad():
        v = lk.binary_cross_entropy(z, y)
    assert v.grad_fn is None
    g = lk.binary_cross_entropy.grad(z, y)
    assert g.data_ptr() != z.data_ptr()
    assert torch.equal(z, z0) and torch.equal(y, y0)


def test_torch_func_grad_and_vmap(rng):
    z = torch.randn(4, 6, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (4, 6))
    per_batch = torch.func.vmap(torch.func.grad(lambda zz, yy: lk.cross_entropy(zz, yy)))(z, y)
    expected = torch.stack([lk.cross_entropy.grad(z[b], y[b]) for b in range(4)])
    torch.testing.assert_close(per_batch, expected)
