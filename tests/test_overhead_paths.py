"""The per-call machinery's shortcuts (issue 16): each one against an independent reference.

* ``Call.options`` shares one dict when every array option is None, and builds one per call
  otherwise: a call with ``class_weight`` and one without, in turn, each equal torch's.
* ``Loss._plan``'s short key (no options, weight or mask) and its general key lead to the same
  results and the same errors as a first call.
* ``_reduce.scale_elementwise`` scales in place only where the array is writable and no
  autograd graph sees it, and keeps ``pred``'s dtype for a NumPy float multiplier.
"""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from losskit import _reduce

torch = pytest.importorskip("torch")
F = torch.nn.functional


def test_call_options_shared_only_without_array_options():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (7,), generator=g)
    cw = torch.rand(5, dtype=torch.float64, generator=g) + 0.5
    for class_weight in (None, cw, None, cw * 2, None):
        got = lk.cross_entropy(z, y, class_weight=class_weight)
        want = F.cross_entropy(z, y, weight=class_weight)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
        (gg,) = torch.autograd.grad(got, z)
        (wg,) = torch.autograd.grad(want, z)
        torch.testing.assert_close(gg, wg, rtol=1e-12, atol=1e-15)
        v, gn = lk.cross_entropy.value_and_grad(z.detach().numpy(), y.numpy(), class_weight=None if class_weight is None else class_weight.numpy())
        np.testing.assert_allclose(v, want.item(), rtol=1e-12)
        np.testing.assert_allclose(gn, wg.numpy(), rtol=1e-12, atol=1e-15)


def test_short_and_general_plan_keys_agree_and_still_check():
    rng = np.random.default_rng(1)
    p, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    w = rng.random((4, 3)) + 0.1
    want = F.huber_loss(torch.tensor(p), torch.tensor(y)).item()
    for _ in range(2):  # first call builds the plan, second takes it from the cache
        np.testing.assert_allclose(lk.huber(p, y), want, rtol=1e-12)
        np.testing.assert_allclose(lk.huber(p, y, delta=1.0), want, rtol=1e-12)  # general key
        want_w = (F.huber_loss(torch.tensor(p), torch.tensor(y), reduction="none") * torch.tensor(w)).sum() / w.sum()
        np.testing.assert_allclose(lk.huber(p, y, weight=w), want_w.item(), rtol=1e-12)
        with pytest.raises(ValueError, match=r"same shape"):
            lk.huber(p, y[:, :2])
        with pytest.raises(TypeError):
            lk.huber([[0.0]], [[1.0]])  # not arrays: the short key cannot be built
        with pytest.raises(ValueError, match="reduction"):
            lk.huber(p, y, reduction="avg")
    # float32 after float64 on the same shapes: a plan per dtype
    got = lk.mse(p.astype(np.float32), y.astype(np.float32))
    assert got.dtype == np.float32


def test_scale_elementwise_in_place_only_when_safe():
    g = np.array([1.0, -2.0], dtype=np.float32)
    out = _reduce.scale_elementwise(g, np.float64(0.5), None, False, None)
    assert out is g and out.dtype == np.float32  # NumPy: in place, pred's dtype kept
    np.testing.assert_array_equal(out, [0.5, -1.0])
    leaf = torch.tensor([1.0, -2.0], requires_grad=True)
    t = leaf * 1.0  # a graph node: never written in place
    out = _reduce.scale_elementwise(t, 0.5, None, False, None)
    assert out is not t
    torch.testing.assert_close(t.detach(), torch.tensor([1.0, -2.0]))
    (d,) = torch.autograd.grad(out.sum(), leaf)
    torch.testing.assert_close(d, torch.tensor([0.5, 0.5]))
    c = torch.tensor(0.25, requires_grad=True)
    plain = torch.tensor([4.0, 8.0])
    out = _reduce.scale_elementwise(plain, c, None, False, None)
    assert out is not plain and out.requires_grad
    torch.testing.assert_close(plain, torch.tensor([4.0, 8.0]))
    mine = torch.tensor([4.0, 8.0])
    assert _reduce.scale_elementwise(mine, torch.tensor(0.5), None, False, None) is mine  # no graph: in place
    # class axis: a per-sample multiplier broadcast over the trailing classes
    gc = np.ones((2, 3))
    out = _reduce.scale_elementwise(gc, np.array([1.0, 2.0]), None, True, None)
    np.testing.assert_array_equal(out, [[1.0] * 3, [2.0] * 3])
