"""The torch bridge, over every registered loss: grad_fn with the closed-form backward,
gradcheck / gradgradcheck, gradients for targets and weights equal to autograd through the
torch peers, torch.compile(fullgraph=True) (``checks.compiles``), torch.func.vmap
(``checks.vmaps``), dtype rules and the no-grad path. Driven by the registry."""

from __future__ import annotations

import numpy as np
import pytest

from registry_cases import (
    SET,
    draw,
    grads,
    is_float,
    loss_params,
    names,
    params,
    peer_value,
    spec,
    torch_autograd_peer,
    torch_options,
    torch_peers,
)

torch = pytest.importorskip("torch")


def _torch_inputs(param, rng, dtype=torch.float64):
    """(drawn case, leaf tensors for the differentiable inputs, the other positional tensors,
    options as torch values)."""
    d = draw(*param, rng)
    leaves = [torch.tensor(x, dtype=dtype, requires_grad=True) for x in d.inputs]
    rest = []
    for a in d.arrays[d.n_inputs :]:
        t = torch.as_tensor(a)
        rest.append(t.to(dtype) if t.is_floating_point() else t)
    return d, leaves, rest, torch_options(d.raw)



from losskit.interop.torch import LEAN_KERNELS as lean_kernels  # noqa: E402

@pytest.mark.parametrize("param", params("test_gradcheck_and_gradgradcheck"))
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_and_gradgradcheck(param, reduction, rng):
    d, leaves, rest, opts = _torch_inputs(param, rng)
    loss = d.loss
    fn = lambda *inputs: loss(*inputs, *rest, reduction=reduction, **opts)  # noqa: E731
    out = fn(*leaves)
    # losskit's Function, or the torch ops a lean kernel records whose backward ops are the closed form
    recorded = getattr(lean_kernels.get(d.spec.name), "recorded_nodes", ())
    assert out.grad_fn is not None and ("LossFunction" in type(out.grad_fn).__name__ or type(out.grad_fn).__name__ in recorded), type(out.grad_fn)
    assert torch.autograd.gradcheck(fn, tuple(leaves))
    if d.spec.hessian_kind != "zero":  # a zero Hessian has no second derivative worth checking numerically
        assert torch.autograd.gradgradcheck(fn, tuple(leaves))


def _weights_case(s, o) -> bool:
    return s.kind != SET and any("none" in p.reductions and all(k in p.options for k in o if not k.startswith("_")) for p in torch_peers(s))


@pytest.mark.parametrize("param", params("test_soft_targets_and_weights_get_autograd_gradients", case=_weights_case))
def test_soft_targets_and_weights_get_autograd_gradients(param, rng):
    """Every input that requires grad (inputs, soft targets, weights) gets the gradient autograd
    finds through the torch peer's per-sample values."""
    d, leaves, rest, opts = _torch_inputs(param, rng)
    peer = next(p for p in torch_peers(d.spec) if "none" in p.reductions and all(k in p.options for k in d.options))
    w = torch.tensor(rng.uniform(0.5, 1.5, d.sample_shape), requires_grad=True)
    rest = [r.detach().requires_grad_(True) if r.is_floating_point() else r for r in rest]
    d.loss(*leaves, *rest, weight=w, reduction="sum", **opts).backward()
    leaves2 = [x.detach().requires_grad_(True) for x in leaves]
    rest2 = [r.detach().requires_grad_(r.is_floating_point()) for r in rest]
    w2 = w.detach().requires_grad_(True)
    (torch_autograd_peer(peer)(*leaves2, *rest2, reduction="none", **d.raw) * w2).sum().backward()
    for a, b in zip(leaves + rest + [w], leaves2 + rest2 + [w2]):
        if b.requires_grad:
            torch.testing.assert_close(a.grad, b.grad)


def _compile_params():
    """Option sets 0 and 1 of every loss that declares it compiles."""
    return [p for p in params("test_torch_compile_fullgraph", where=lambda s: s.checks.compiles) if p.values[0][1] < 2]


@pytest.mark.parametrize("param", _compile_params())
def test_torch_compile_fullgraph(param, rng):
    d, leaves, rest, opts = _torch_inputs(param, rng, dtype=torch.float32)
    loss = d.loss
    torch._dynamo.reset()  # one code object compiled for every loss: do not hit the recompile limit
    compiled = torch.compile(lambda *a: loss(*a, **opts), fullgraph=True, backend="eager")
    v = compiled(*leaves, *rest)
    v.backward()
    leaves2 = [x.detach().requires_grad_(True) for x in leaves]
    v2 = loss(*leaves2, *rest, **opts)
    v2.backward()
    torch.testing.assert_close(v, v2)
    for a, b in zip(leaves, leaves2):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("name", loss_params("test_half_inputs_compute_in_float32_and_return_grad_in_input_dtype"))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_half_inputs_compute_in_float32_and_return_grad_in_input_dtype(name, dtype, rng):
    d, leaves, rest, opts = _torch_inputs((name, 0), rng, dtype=dtype)
    v = d.loss(*leaves, *rest, **opts)
    assert v.dtype == torch.float32
    v.backward()
    for x in leaves:
        assert x.grad.dtype == dtype
    # the value of the rounded inputs, as the float64 peer computes it
    rounded = tuple(t.detach().double().numpy() if t.is_floating_point() else t.numpy() for t in leaves + rest)
    for peer in torch_peers(d.spec):
        if "mean" in peer.reductions and all(k in peer.options for k in d.options):
            np.testing.assert_allclose(v.item(), peer_value(peer, rounded, "mean", d.raw), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", loss_params("test_no_grad_path_returns_plain_tensor_and_inputs_are_not_mutated"))
def test_no_grad_path_returns_plain_tensor_and_inputs_are_not_mutated(name, rng):
    d = draw(name, 0, rng)
    tensors = [torch.as_tensor(a).clone() for a in d.arrays]
    before = [t.clone() for t in tensors]
    opts = torch_options(d.raw)
    with torch.no_grad():
        v = d.loss(*tensors, **opts)
    assert v.grad_fn is None
    for g in grads(d, d.loss.grad(*tensors, **opts)):
        assert all(g.data_ptr() != t.data_ptr() for t in tensors)
    for t, t0 in zip(tensors, before):
        assert torch.equal(t, t0)


@pytest.mark.parametrize("name", loss_params("test_torch_func_grad_and_vmap", where=lambda s: s.checks.vmaps))
def test_torch_func_grad_and_vmap(name, rng):
    s = spec(name)
    batches = [draw(name, 0, rng) for _ in range(4)]
    d = batches[0]
    stacked = [torch.as_tensor(np.stack([b.arrays[k] for b in batches])) for k in range(len(d.arrays))]
    opts = torch_options(d.raw)
    n = d.n_inputs
    f = lambda *a: d.loss(*a, **opts)  # noqa: E731
    per_batch = torch.func.vmap(torch.func.grad(f, argnums=tuple(range(n))))(*stacked)
    for k in range(n):
        expected = torch.stack([torch.as_tensor(grads(b, b.loss.grad(*b.arrays, **b.options))[k]) for b in batches])
        torch.testing.assert_close(per_batch[k], expected, msg=s.inputs[k])


def test_every_float_target_is_differentiable_somewhere():
    """Guard for the weights test: it covers soft targets wherever a loss has them."""
    for name in names():
        s = spec(name)
        if s.target is None:
            continue
        soft = [o for i, o in enumerate(s.checks.option_sets) if is_float(draw(name, i, np.random.default_rng(0)).target)]
        if soft and s.kind != SET and torch_peers(s):
            # at least one soft-target option set is covered (options the torch peer lacks, such
            # as BCE's label_smoothing, are covered by their own peers)
            assert any(_weights_case(s, o) for o in soft), name
