"""Large elementwise inputs are evaluated block by block on NumPy and torch (CPU). The block
path must compute exactly what the whole-array path computes: every output (``value``,
``grad``, ``value_and_grad``, ``grad_hess``, and torch's backward) × every reduction, with and
without weights and masks, on both sides of the size threshold (``4 * _BLOCK``)."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from losskit import _loss
from registry_cases import names, option_set, sample, spec, strip

ELEMENTWISE = names(lambda s: s.kind == _loss.ELEMENTWISE and len(s.inputs) == 1 and s.target is not None)
NEEDS = ("value", "grad", "value_and_grad", "grad_hess")
REDUCTIONS = ("mean", "sum", "none")


def _inputs(name, rng, n):
    """The last option set's inputs, 1-D of length n, with its scalar options."""
    i = len(spec(name).checks.option_sets) - 1
    arrays = sample(name, i, rng, shape=(n,))
    return (*arrays, {k: v for k, v in strip(option_set(name, i)).items() if not isinstance(v, np.ndarray)})


def _call(loss, need, *args, **kw):
    return loss(*args, **kw) if need == "value" else getattr(loss, need)(*args, **kw)


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _sizes(lib):
    threshold = 4 * _loss._BLOCK[lib]
    return [threshold - 1, threshold, threshold + _loss._BLOCK[lib] // 3]  # below, at, ragged tail


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_blocks_equal_whole_array_evaluation(name, lib, rng, monkeypatch):
    loss = lk.registry[name]
    blocks = dict(_loss._BLOCK)
    for n in _sizes(lib):
        p, t, o = _inputs(name, rng, n)
        w = rng.uniform(0.5, 2.0, n)
        mask = rng.random(n) < 0.9
        if lib == "torch":
            torch = pytest.importorskip("torch")
            p, t, w, mask = (torch.as_tensor(a) for a in (p, t, w, mask))
        for need in NEEDS:
            for reduction in REDUCTIONS:
                for extra in ({}, {"weight": w, "mask": mask}):
                    kw = dict(reduction=reduction, **extra, **o)
                    monkeypatch.setattr(_loss, "_BLOCK", blocks)
                    got = _as_tuple(_call(loss, need, p, t, **kw))
                    monkeypatch.setattr(_loss, "_BLOCK", {})
                    expected = _as_tuple(_call(loss, need, p, t, **kw))
                    assert len(got) == len(expected)
                    for a, b in zip(got, expected):
                        assert tuple(a.shape) == tuple(b.shape), (n, need, reduction)
                        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-15, err_msg=f"{n} {need} {reduction}")


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torch_backward_of_large_batches(name, reduction, rng):
    """Backward with a per-sample cotangent (reduction='none') goes through the block path."""
    torch = pytest.importorskip("torch")
    loss = lk.registry[name]
    n = 4 * _loss._BLOCK["torch"] + 7
    p, t, o = _inputs(name, rng, n)
    p, t = torch.as_tensor(p).reshape(1, 1, -1), torch.as_tensor(t).reshape(1, 1, -1)
    leaf = p.clone().requires_grad_(True)
    out = loss(leaf, t, reduction=reduction, **o)
    cot = torch.as_tensor(rng.uniform(0.5, 2.0, tuple(out.shape)))
    out.backward(cot)
    expected = loss.grad(p, t, reduction=reduction, **o) if reduction != "none" else loss.grad(p, t, reduction="none", weight=cot, **o)
    np.testing.assert_allclose(leaf.grad.numpy(), (expected * cot if reduction != "none" else expected).numpy(), rtol=1e-10, atol=1e-15)



@pytest.mark.parametrize("name", ELEMENTWISE[:1] + ELEMENTWISE[-1:])
def test_torch_func_transforms_above_the_block_threshold(name, rng):
    """vmap and grad of torch.func wrap tensors that the block path cannot write into: above the
    threshold they take the whole-array path and equal the unbatched calls."""
    torch = pytest.importorskip("torch")
    loss = lk.registry[name]
    n = 4 * _loss._BLOCK["torch"]
    rows = [_inputs(name, rng, n) for _ in range(2)]
    o = rows[0][2]
    p = torch.stack([torch.as_tensor(r[0]) for r in rows])
    t = torch.stack([torch.as_tensor(r[1]) for r in rows])
    per = torch.func.vmap(lambda a, b: loss(a, b, reduction="none", **o))(p, t)
    grads = torch.func.vmap(torch.func.grad(lambda a, b: loss(a, b, reduction="sum", **o)))(p, t)
    for k in range(2):
        np.testing.assert_allclose(per[k].numpy(), loss(p[k], t[k], reduction="none", **o).numpy(), rtol=1e-12, atol=0)
        np.testing.assert_allclose(grads[k].numpy(), loss.grad(p[k], t[k], reduction="sum", **o).numpy(), rtol=1e-12, atol=0)
