"""Issue 12's edge list for every set-level segmentation loss, in every float dtype on torch
(float16/bfloat16 inputs, float32 internals): logits ±1e4 with all-empty targets, fully
ignored images, a single pixel and a single class give finite values and gradients, the loss
never above 1 without ``log_loss``, and an ignored pixel gets zero gradient."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

torch = pytest.importorskip("torch")

DTYPES = ("float16", "bfloat16", "float32", "float64")
OVERLAP = ("dice", "jaccard", "tversky")


def _cases():
    big = np.array([1e4, -1e4, 30.0, 0.0, -1e4, 1e4])
    z = np.resize(big, (2, 3, 2, 3))  # (N, C, H, W), saturated softmax
    yield "all-empty foreground (class 0 everywhere)", z, np.zeros((2, 2, 3), dtype=np.int64), {}
    yield "fully ignored images", z, np.full((2, 2, 3), -1), {"ignore_index": -1, "per_image": True}
    yield "one ignored image", z, np.stack([np.full((2, 3), -1), np.arange(6).reshape(2, 3) % 3]), {"ignore_index": -1, "per_image": True}
    yield "a single pixel", z[:1, :, :1, :1], np.array([[[2]]]), {}
    yield "a single class", z[:, :1], np.zeros((2, 2, 3), dtype=np.int64), {}


def _lovasz_ok(o):
    return {k: v for k, v in o.items() if k in ("ignore_index", "per_image")}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_finite_and_bounded_at_the_issue_edges(case, dtype):
    _, z, t, o = case
    dt = getattr(torch, dtype)
    calls = [(lk.registry[n], o) for n in OVERLAP] + [(lk.dice, dict(o, log_loss=True)), (lk.tversky, dict(o, gamma=0.75)), (lk.lovasz_softmax, _lovasz_ok(o))]
    for loss, opts in calls:
        x = torch.tensor(z, dtype=dt, requires_grad=True)
        v = loss(x, torch.tensor(t), reduction="none", **opts)
        v.sum().backward()
        assert torch.isfinite(v.double()).all(), (loss.spec.name, opts, v)
        assert torch.isfinite(x.grad.double()).all() and x.grad.dtype == dt, (loss.spec.name, opts)
        if not opts.get("log_loss"):
            assert (v.double() <= 1.0 + 1e-3).all(), (loss.spec.name, v)
        if "ignore_index" in opts:  # ignored pixels: zero gradient in every class
            ignored = torch.tensor(t == -1)[:, None].expand_as(x)
            assert (x.grad[ignored] == 0).all(), loss.spec.name


@pytest.mark.parametrize("dtype", DTYPES)
def test_lovasz_hinge_edges(dtype):
    dt = getattr(torch, dtype)
    z = np.resize(np.array([1e4, -1e4, 1.0, -1.0, 0.0, 30.0]), (2, 1, 2, 3))
    for t, o in ((np.zeros(z.shape), {}), (np.full(z.shape, -1.0), {"ignore_index": -1}), (np.ones((1, 1, 1, 1)), {})):
        zz = z[: t.shape[0], :, : t.shape[2], : t.shape[3]]
        x = torch.tensor(zz, dtype=dt, requires_grad=True)
        v = lk.lovasz_hinge(x, torch.tensor(t), reduction="none", **o)
        v.sum().backward()
        assert torch.isfinite(v.double()).all() and torch.isfinite(x.grad.double()).all() and x.grad.dtype == dt
