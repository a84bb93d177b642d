"""Derivatives, over every registered loss and option set, from the declaration alone:

* closed-form gradients equal 4th-order central finite differences (every differentiable
  input), plain and weighted + masked; ``value_and_grad`` agrees with ``__call__`` / ``grad``;
* gradients and Hessian diagonals equal torch autograd through every torch peer, for every
  reduction; every backend equals NumPy;
* the Hessian diagonal equals finite differences of the closed-form gradient (hessian_kind
  "exact");
* scikit-learn's optimal-constant check: Newton steps on a constant prediction, using only the
  summed closed-form gradient and Hessian, go from 0 to ``loss.baseline(target, weight=w)``,
  where the gradient sum vanishes; for zero / piecewise Hessians the baseline minimises the
  loss over a grid around it."""

from __future__ import annotations

import numpy as np
import pytest

from registry_cases import (
    REDUCTIONS,
    SET,
    arrays_on,
    as_tuple,
    draw,
    finite_difference_diagonal,
    finite_difference_grad,
    grads,
    is_float,
    options_on,
    params,
    peer_value,
    torch_autograd_peer,
    torch_peers,
    weight_and_mask,
)

WEIGHTING = pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted+masked"])


def _weighting(d, weighted, rng) -> dict:
    if not weighted:
        return {}
    w, m = weight_and_mask(rng, d.sample_shape)
    return {"weight": w, "mask": m}


@pytest.mark.parametrize("param", params("test_grad_matches_finite_differences"))
@WEIGHTING
def test_grad_matches_finite_differences(param, weighted, rng):
    d = draw(*param, rng)
    loss = d.loss
    kw = {**d.options, **_weighting(d, weighted, rng)}
    got = grads(d, loss.grad(*d.arrays, **kw))
    for k, x in enumerate(d.inputs):
        expected = finite_difference_grad(lambda xk: float(loss(*d.with_input(k, xk), **kw)), x)
        np.testing.assert_allclose(got[k], expected, rtol=1e-6, atol=1e-8, err_msg=d.spec.inputs[k])
    value, grad = loss.value_and_grad(*d.arrays, **kw)
    np.testing.assert_allclose(value, loss(*d.arrays, **kw), rtol=1e-13)
    for a, b in zip(grads(d, grad), got):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def _has_torch_peer(s):
    return bool(torch_peers(s))


@pytest.mark.parametrize("param", params("test_grad_and_hessian_match_torch_autograd_of_the_peer", where=_has_torch_peer))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_and_hessian_match_torch_autograd_of_the_peer(param, reduction, rng):
    torch = pytest.importorskip("torch")
    d = draw(*param, rng)
    s, loss, o = d.spec, d.loss, d.options
    if reduction == "none" and s.kind == SET:
        pytest.skip("per-set values: no per-sample weight plays the cotangent")
    for peer in torch_peers(s):
        if reduction not in peer.reductions or not all(k in peer.options for k in o):
            continue
        ref = torch_autograd_peer(peer)
        rest = tuple(torch.as_tensor(a) for a in d.arrays[d.n_inputs :])
        upstream = None
        if reduction == "none":
            upstream = torch.as_tensor(rng.uniform(0.5, 1.5, peer_value(peer, d.arrays, "none", d.raw).shape))

        def f(*inputs):
            out = ref(*inputs, *rest, reduction=reduction, **d.raw)
            return out if upstream is None else (out * upstream).sum()

        leaves = [torch.tensor(x, requires_grad=True) for x in d.inputs]
        g_ref = torch.autograd.grad(f(*leaves), leaves)
        kw = dict(o, reduction=reduction) if upstream is None else dict(o, reduction="sum", weight=upstream.numpy())
        # reduction="none": the gradient of Σ u_i ℓ_i, the per-sample weight playing the cotangent
        g = grads(d, loss.grad(*d.arrays, **kw))
        for k in range(d.n_inputs):
            np.testing.assert_allclose(g[k], g_ref[k].numpy(), rtol=1e-9, atol=1e-14, err_msg=f"{peer.name} {s.inputs[k]}")
        if s.hessian_kind == "none":
            continue
        g2, h = (as_tuple(a, d.n_inputs) for a in loss.grad_hess(*d.arrays, **kw))
        for k, x in enumerate(d.inputs):

            def fk(xk, k=k):
                inputs = [torch.as_tensor(a) for a in d.inputs]
                inputs[k] = xk
                return f(*inputs)

            hess_ref = torch.autograd.functional.hessian(fk, torch.tensor(x)).reshape(x.size, x.size).diagonal().reshape(x.shape)
            np.testing.assert_allclose(h[k], hess_ref.numpy(), rtol=1e-9, atol=1e-14, err_msg=f"{peer.name} {s.inputs[k]}")
            np.testing.assert_allclose(g2[k], g[k], rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("param", params("test_derivatives_on_every_backend_match_numpy"))
def test_derivatives_on_every_backend_match_numpy(param, backend, rng):
    d = draw(*param, rng)
    loss, o = d.loss, d.options
    hessian = d.spec.hessian_kind != "none"
    b_arrays, b_opts = arrays_on(backend, d.arrays), options_on(backend, d.raw)
    if hessian:
        expected_g, expected_h = (as_tuple(a, d.n_inputs) for a in loss.grad_hess(*d.arrays, **o))
        g, h = (as_tuple(a, d.n_inputs) for a in loss.grad_hess(*b_arrays, **b_opts))
        for a, b in zip(g + h, expected_g + expected_h):
            assert backend.is_native(a)
            np.testing.assert_allclose(backend.to_numpy(a), b, rtol=1e-12, atol=1e-15)
    else:
        expected_g = grads(d, loss.grad(*d.arrays, **o))
        for a, b in zip(grads(d, loss.grad(*b_arrays, **b_opts)), expected_g):
            assert backend.is_native(a)
            np.testing.assert_allclose(backend.to_numpy(a), b, rtol=1e-12, atol=1e-15)
    v, g2 = loss.value_and_grad(*b_arrays, **b_opts)
    for a, b in zip(grads(d, g2), expected_g):
        np.testing.assert_allclose(backend.to_numpy(a), b, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(v), loss(*d.arrays, **o), rtol=1e-12)


@pytest.mark.parametrize("param", params("test_hessian_matches_finite_differences_of_the_gradient", where=lambda s: s.hessian_kind == "exact"))
@WEIGHTING
def test_hessian_matches_finite_differences_of_the_gradient(param, weighted, rng):
    d = draw(*param, rng)
    loss = d.loss
    kw = {**d.options, **_weighting(d, weighted, rng)}
    _, h = (as_tuple(a, d.n_inputs) for a in loss.grad_hess(*d.arrays, **kw))
    for k, x in enumerate(d.inputs):
        expected = finite_difference_diagonal(lambda xk: grads(d, loss.grad(*d.with_input(k, xk), **kw))[k], x)
        np.testing.assert_allclose(h[k], expected, rtol=1e-6, atol=1e-8, err_msg=d.spec.inputs[k])


# --- the optimal constant (baseline) ------------------------------------------------------------


def _soft_target_case(s, o) -> bool:
    """A loss with a baseline and an option set whose target is not class ids (the baseline of
    a class-axis loss is a logit vector fitted to probability targets)."""
    if s.baseline is None or s.target is None or s.kind == SET:
        return False
    arrays = s.checks.sample(np.random.default_rng(0), s.checks.shape, dict(o))
    return is_float(arrays[len(s.inputs)])


def _constant(d, c):
    """The constant prediction c broadcast over the samples: a number for elementwise losses,
    a vector along the class axis for class-axis losses."""
    shape = np.shape(d.inputs[0])
    if d.axis is None:  # a number, or one per column of the last axis (BCE's per-column pos_weight)
        return np.broadcast_to(np.asarray(c, dtype=np.float64), shape).copy()
    moved = np.broadcast_to(c, tuple(np.delete(shape, d.axis)) + (shape[d.axis],))
    return np.ascontiguousarray(np.moveaxis(moved, -1, d.axis))


def _over_samples(d, g, c=0.0):
    """Sum of a per-element array over the samples (keeping the class axis, or the last axis
    when the constant ``c`` has one value per column)."""
    if d.axis is None:
        return np.sum(g) if np.ndim(c) == 0 else np.sum(g.reshape(-1, g.shape[-1]), axis=0)
    return np.sum(np.moveaxis(g, d.axis, -1).reshape(-1, g.shape[d.axis]), axis=0)


def _same_constant(d, got, expected, **tol):
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if d.axis is not None:  # softmax losses: logits up to a common shift
        got, expected = got - np.logaddexp.reduce(got), expected - np.logaddexp.reduce(expected)
    np.testing.assert_allclose(got, expected, **tol)


def _baseline_case(d, rng):
    w = rng.uniform(0.5, 2.0, d.sample_shape)
    b = np.asarray(d.loss.baseline(d.target, weight=w, **d.options), dtype=np.float64)
    if d.axis is None:
        assert b.shape in ((), np.shape(d.inputs[0])[-1:]), b.shape
    else:
        assert b.shape == (np.shape(d.inputs[0])[d.axis],), b.shape
    return w, b


@pytest.mark.parametrize(
    "param",
    params("test_newton_steps_reach_the_baseline", where=lambda s: s.hessian_kind == "exact", case=_soft_target_case),
)
def test_newton_steps_reach_the_baseline(param, rng):
    """scikit-learn's optimal-constant check, with the closed forms only."""
    d = draw(*param, rng)
    loss, o = d.loss, d.options
    w, b = _baseline_case(d, rng)
    c = np.zeros_like(b)
    for _ in range(200):  # probabilities from p = 0 double each step until Newton's region
        g, h = loss.grad_hess(_constant(d, c), d.target, weight=w, reduction="sum", **o)
        step = _over_samples(d, g, c) / _over_samples(d, h, c)
        c = c - step
        if np.all(step == 0):
            break
    _same_constant(d, c, b, rtol=1e-8, atol=1e-10)
    g_at_b = _over_samples(d, loss.grad(_constant(d, b), d.target, weight=w, reduction="sum", **o), b)
    np.testing.assert_allclose(g_at_b, 0.0, atol=1e-9 * np.sum(w))


@pytest.mark.parametrize(
    "param",
    params("test_baseline_minimises_over_a_grid", where=lambda s: s.hessian_kind in ("zero", "piecewise"), case=_soft_target_case),
)
def test_baseline_minimises_over_a_grid(param, rng):
    """Losses without a useful Hessian: the baseline is no worse than any constant near it."""
    d = draw(*param, rng)
    loss, o = d.loss, d.options
    w, b = _baseline_case(d, rng)
    best = float(loss(_constant(d, b), d.target, weight=w, reduction="sum", **o))
    for delta in (1e-6, 1e-3, 0.1, 1.0):
        for k in range(b.size):
            for sign in (1.0, -1.0):
                c = b.copy()
                c.flat[k] += sign * delta
                other = float(loss(_constant(d, c), d.target, weight=w, reduction="sum", **o))
                assert best <= other * (1 + 1e-12), (delta, k, sign, best, other)
