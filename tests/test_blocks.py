"""Large elementwise inputs are evaluated block by block on NumPy and torch (CPU): the results
equal the whole-array evaluation and the peer's, for every option and reduction."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from losskit import _loss

ELEMENTWISE = sorted(name for name, loss in lk.registry.items() if loss.spec.kind == _loss.ELEMENTWISE)


def _inputs(name, rng, n):
    from cases import CASES

    case = CASES[name]
    o = case.option_sets[-1] if name != "binary_cross_entropy" else {"pos_weight": 2.0}
    p, t = case.make(rng, o, shape=(n,))
    return p, t, {k: v for k, v in o.items() if not isinstance(v, np.ndarray)}


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_blocks_equal_whole_array_evaluation(name, lib, rng, monkeypatch):
    n = 4 * _loss._BLOCK[lib] + 123  # several blocks and a ragged tail
    p, t, o = _inputs(name, rng, n)
    w = rng.uniform(0.5, 2.0, n)
    mask = rng.random(n) < 0.9
    if lib == "torch":
        torch = pytest.importorskip("torch")
        p, t, w, mask = (torch.as_tensor(a) for a in (p, t, w, mask))
    loss = lk.registry[name]
    calls = [
        lambda: loss.value_and_grad(p, t, **o),
        lambda: loss.value_and_grad(p, t, weight=w, mask=mask, reduction="none", **o),
        lambda: loss.grad_hess(p, t, weight=w, **o),
        lambda: (loss(p, t, mask=mask, reduction="sum", **o), loss.grad(p, t, **o)),
    ]
    blocked = [call() for call in calls]
    monkeypatch.setattr(_loss, "_BLOCK", {})
    whole = [call() for call in calls]
    for got, expected in zip(blocked, whole):
        for a, b in zip(got, expected):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-15)


def test_blocks_on_float32_match_torch(rng):
    torch = pytest.importorskip("torch")
    n = 1_000_003
    z = torch.as_tensor(rng.standard_normal(n).astype(np.float32) * 3)
    y = torch.as_tensor((rng.random(n) < 0.5).astype(np.float32))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(z.double(), y.double())
    for arr_z, arr_y in ((z, y), (z.numpy(), y.numpy())):
        v, g = lk.binary_cross_entropy.value_and_grad(arr_z, arr_y)
        np.testing.assert_allclose(float(v), expected.item(), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(g), ((torch.sigmoid(z.double()) - y) / n).numpy(), rtol=1e-4, atol=1e-12)
