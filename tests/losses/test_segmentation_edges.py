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


# --- JAX: the backward reuses the forward's kernel run ---------------------------------------
# jax.custom_vjp's forward keeps the kernel's gradient for a unit cotangent (the reduced value's
# gradient is linear in its scalar cotangent), so jax.grad runs the kernel once, eagerly and
# when traced under jit. Counted at a function each kernel calls exactly once per run.

SET_LOSSES = {
    "dice": (lambda z, t, **o: lk.dice(z, t, **o), "softmax"),
    "jaccard": (lambda z, t, **o: lk.jaccard(z, t, **o), "softmax"),
    "tversky": (lambda z, t, **o: lk.tversky(z, t, alpha=0.3, beta=0.7, gamma=1.5, **o), "softmax"),
    "lovasz_softmax": (lambda z, t, **o: lk.lovasz_softmax(z, t, **o), "softmax"),
    "lovasz_hinge": (lambda z, t, **o: lk.lovasz_hinge(z, t, **o), "sorted_dot"),
}


def _set_inputs(name, rng):
    if name == "lovasz_hinge":
        return rng.standard_normal((3, 1, 4, 5)) * 2, (rng.random((3, 1, 4, 5)) < 0.4).astype(np.float64)
    return rng.standard_normal((3, 4, 4, 5)) * 2, rng.integers(0, 4, (3, 4, 5))


def _count_kernel_runs(monkeypatch, where):
    from losskit.losses import _overlap, lovasz

    module, attr = (_overlap, "_softmax") if where == "softmax" else (lovasz, "_sorted_dot")
    calls, original = [], getattr(module, attr)
    monkeypatch.setattr(module, attr, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.mark.parametrize("name", sorted(SET_LOSSES))
@pytest.mark.parametrize("options", [{}, {"per_image": True, "reduction": "sum"}])
def test_jax_grad_runs_the_kernel_once(name, options, rng, monkeypatch):
    jax = pytest.importorskip("jax")
    f, where = SET_LOSSES[name]
    z, t = _set_inputs(name, rng)
    # float targets (lovasz_hinge's 0/1 masks) get a cotangent from autodiff of the value: a
    # second run, which XLA drops under jit when only the logits are differentiated
    runs = 2 if name == "lovasz_hinge" else 1
    calls = _count_kernel_runs(monkeypatch, where)
    g = jax.grad(lambda a: f(a, t, **options))(jax.numpy.asarray(z))
    assert len(calls) == runs
    del calls[:]
    g_jit = jax.jit(jax.grad(lambda a: f(a, t, **options)))(jax.numpy.asarray(z))
    assert len(calls) == runs  # one trace
    reference = lk.registry[name].grad(z, t, **({"alpha": 0.3, "beta": 0.7, "gamma": 1.5} if name == "tversky" else {}), **options)
    np.testing.assert_allclose(np.asarray(g), reference, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(g_jit), reference, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(SET_LOSSES))
def test_jax_grad_under_vmap_and_finite_differences(name, rng):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    f, _ = SET_LOSSES[name]
    z, t = _set_inputs(name, rng)
    per_item = jax.jit(jax.vmap(jax.grad(lambda a, b: f(a[None], b[None])), in_axes=(0, 0)))(jnp.asarray(z), jnp.asarray(t))
    for i in range(z.shape[0]):
        np.testing.assert_allclose(np.asarray(per_item[i]), np.asarray(jax.grad(lambda a: f(a[None], t[i : i + 1]))(jnp.asarray(z[i]))), rtol=1e-12, atol=1e-15)
    # central differences along a random direction (Lovász: piecewise smooth, the sort order is
    # constant for a step this small at these random inputs)
    direction = rng.standard_normal(z.shape)
    h = 1e-6
    fd = (float(f(jnp.asarray(z + h * direction), t)) - float(f(jnp.asarray(z - h * direction), t))) / (2 * h)
    g = np.asarray(jax.grad(lambda a: f(a, t))(jnp.asarray(z)))
    np.testing.assert_allclose(np.sum(g * direction), fd, rtol=1e-6, atol=1e-9)
