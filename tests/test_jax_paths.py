"""The JAX kernels of issue 16 (``_softmax.ids_nll_jax`` for cross-entropy on plain class ids,
``_softmax.lse_split_jax`` behind forward KL) compute what the reference paths compute:

* against torch in float64 (value, grad, value_and_grad, grad_hess; every reduction), eager
  and under ``jax.jit``;
* both sides of every switch inside them: the label a maximum or not (CE), a row with a
  single clear maximum (Σe < 2, the sum without the maximum) or with ties / a flat row
  (Σe ≥ 2, Σe − 1), finite and non-finite maxima; and the array-API path they replace
  (cross-entropy with ``class_weight=ones``, NumPy) on the same rows;
* tiny losses of confident predictions to full relative precision (mpmath);
* ``jax.hessian`` (autodiff through the gradient) equals the closed-form Hessian on rows
  with ties, where a derivative through the split's pieces would go wrong.

References are independent (torch's functions in float64, mpmath), never losskit's code.
"""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

jax = pytest.importorskip("jax")
jnp = jax.numpy
torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ("mean", "sum", "none")


def _close(a, b, rtol=1e-12, atol=1e-14):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol, atol=atol)


def _ce_rows():
    """Rows on both sides of each switch; ids chosen so the label is / is not a maximum."""
    z = np.array([
        [30.0, 0.0, 0.0, 0.0, 0.0],  # confident and right: loss ~3.7e-13 (label the clear max)
        [30.0, 0.0, 0.0, 0.0, 0.0],  # confident and wrong: label not the max
        [1.0, 1.0, 0.0, -np.inf, 0.0],  # a tie at the max, label on the tie; an impossible class
        [1.0, 1.0, 0.0, -np.inf, 0.0],  # the same, label off the tie
        [1e4, -1e4, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],  # flat: every class a maximum
        [0.3, -1.2, 2.5, 0.7, -0.1],
    ])
    ids = np.array([0, 2, 1, 4, 1, 3, 2])
    return z, ids


def _torch_ce(z, ids, reduction):
    zt = torch.tensor(z, requires_grad=True)
    loss = F.cross_entropy(zt, torch.tensor(ids), reduction=reduction)
    (grad,) = torch.autograd.grad(loss.sum(), zt)
    p = torch.softmax(zt.detach(), -1)
    scale = {"mean": 1.0 / len(ids), "sum": 1.0, "none": 1.0}[reduction]
    return loss.detach().numpy(), grad.numpy(), (scale * p * (1 - p)).numpy()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("path", ["jax_ids_kernel", "array_api_path"])
def test_jax_ce_equals_torch(path, reduction):
    z, ids = _ce_rows()
    want_v, want_g, want_h = _torch_ce(z, ids, reduction)
    opts = {} if path == "jax_ids_kernel" else {"class_weight": jnp.ones(z.shape[1])}
    o = {"reduction": reduction, **opts}

    def outputs(a, b):  # one compilation for every output, and jax.grad through the custom_jvp
        d = jax.grad(lambda a_: jnp.sum(lk.cross_entropy(a_, b, **o)))(a)
        return lk.cross_entropy(a, b, **o), lk.cross_entropy.grad(a, b, **o), lk.cross_entropy.value_and_grad(a, b, **o), lk.cross_entropy.grad_hess(a, b, **o), d

    v, g, vg, gh, d = jax.jit(outputs)(jnp.asarray(z), jnp.asarray(ids))
    if reduction == "none":  # torch rounds row 0's 3.7e-13 loss (log_softmax): mpmath below
        _close(np.asarray(v)[1:], want_v[1:])
        _close(np.asarray(vg[0])[1:], want_v[1:])
    else:
        _close(v, want_v, rtol=1e-9)
        _close(vg[0], want_v, rtol=1e-9)
    for grad in (g, vg[1], gh[0], d):
        _close(grad, want_g)
    _close(gh[1], want_h)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_jax_ce_tiny_losses_keep_full_precision(dtype):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    z = np.array([[30.0, 0.0, 0.0, 0.0, 0.0], [45.0, 1.0, -3.0, 0.0, 2.0], [20.0, 20.0, 0.0, 0.0, 0.0]], dtype=dtype)
    ids = np.array([0, 0, 1])

    def exact(row, y):
        r = [mpmath.mpf(float(x)) for x in row]
        return float(mpmath.log(mpmath.fsum(mpmath.e ** (x - r[y]) for x in r)))

    want = [exact(row, y) for row, y in zip(z, ids)]
    rtol = 1e-14 if dtype is np.float64 else 2e-6
    zj, yj = jnp.asarray(z), jnp.asarray(ids)
    _close(lk.cross_entropy(zj, yj, reduction="none"), want, rtol=rtol, atol=0)
    _close(jax.jit(lambda a, b: lk.cross_entropy.value_and_grad(a, b, reduction="none"))(zj, yj)[0], want, rtol=rtol, atol=0)


def test_jax_ce_non_finite_rows_as_numpy():
    """+inf, all -inf and NaN rows: the same value and gradient (NaN where NaN) as the NumPy
    kernel; finite rows beside them are untouched."""
    z = np.array([[np.inf, 0.0, 1.0], [np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf], [0.0, np.nan, 1.0], [0.5, 0.0, 1.0]])
    ids = np.array([1, 0, 2, 0, 2])
    with np.errstate(all="ignore"):
        want_v, want_g = lk.cross_entropy.value_and_grad(z, ids, reduction="none")
    got_v, got_g = jax.jit(lambda a, b: lk.cross_entropy.value_and_grad(a, b, reduction="none"))(jnp.asarray(z), jnp.asarray(ids))
    np.testing.assert_array_equal(np.isnan(got_v), np.isnan(want_v))
    np.testing.assert_array_equal(np.isnan(got_g), np.isnan(want_g))
    ok_v, ok_g = ~np.isnan(want_v), ~np.isnan(want_g)
    _close(np.asarray(got_v)[ok_v], want_v[ok_v])
    _close(np.asarray(got_g)[ok_g], want_g[ok_g])


# --- forward KL ------------------------------------------------------------------------------


def _kl_rows():
    z = np.array([
        [30.0, 0.0, 0.0, 0.0],  # single clear maximum (Σe < 2): the sum without it
        [2.0, 2.0, 0.0, -1.0],  # tie (Σe ≥ 2)
        [0.0, -np.inf, 2.0, 1.0],  # an impossible class where the target is 0
        [0.3, -1.2, 0.5, 0.7],  # no tie, Σe ≥ 2
        [1e4, -1e4, 0.0, 0.0],
    ])
    t = np.array([
        [0.7, 0.1, 0.1, 0.1],
        [0.25, 0.25, 0.5, 0.0],
        [0.5, 0.0, 0.25, 0.25],
        [0.1, 0.2, 0.3, 0.4],
        [1.0, 0.0, 0.0, 0.0],
    ])
    return z, t


def _torch_kl(z, t, reduction):
    # torch's kl_div gives 0·(−inf) = NaN where t = 0 at a −inf logit; a logit of −1e4 has
    # the same (zero) softmax in float64
    zt = torch.tensor(np.where(z == -np.inf, -1e4, z), requires_grad=True)
    per = F.kl_div(F.log_softmax(zt, -1), torch.tensor(t), reduction="none").sum(-1)
    loss = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    (grad,) = torch.autograd.grad(loss.sum(), zt)
    p = torch.softmax(zt.detach(), -1)
    scale = {"mean": 1.0 / len(t), "sum": 1.0, "none": 1.0}[reduction]
    return loss.detach().numpy(), grad.numpy(), (scale * p * (1 - p)).numpy()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("log_target", [False, True])
def test_jax_kl_equals_torch(log_target, reduction):
    z, t = _kl_rows()
    want_v, want_g, want_h = _torch_kl(z, t, reduction)
    with np.errstate(divide="ignore"):
        target = np.log(t) if log_target else t
    o = {"reduction": reduction, "log_target": log_target}

    def outputs(a, b):
        d = jax.grad(lambda a_: jnp.sum(lk.kl_divergence(a_, b, **o)))(a)
        return lk.kl_divergence(a, b, **o), lk.kl_divergence.grad(a, b, **o), lk.kl_divergence.value_and_grad(a, b, **o), lk.kl_divergence.grad_hess(a, b, **o), d

    v, g, vg, gh, d = jax.jit(outputs)(jnp.asarray(z), jnp.asarray(target))
    for value in (v, vg[0]):
        _close(value, want_v, rtol=1e-10)
    for grad in (g, vg[1], gh[0], d):
        _close(grad, want_g)
    _close(gh[1], want_h)
    # the NumPy (array-API) path on the same rows
    _close(lk.kl_divergence(z, target, **o), want_v, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_jax_kl_of_a_confident_match_keeps_full_precision(dtype):
    """A one-hot target against confident logits: KL = log1p(Σ_{k≠0} e^{z_k − z_0}), ~1e-13,
    lost entirely by log Σe − z_0 (and by torch)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    z = np.array([[30.0, 0.0, 0.0, 0.0], [25.0, 1.0, -2.0, 3.0]], dtype=dtype)
    t = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=dtype)
    want = [float(mpmath.log1p(mpmath.fsum(mpmath.e ** (mpmath.mpf(float(x)) - mpmath.mpf(float(r[0]))) for x in r[1:]))) for r in z]
    rtol = 1e-14 if dtype is np.float64 else 2e-6
    got = jax.jit(lambda a, b: lk.kl_divergence.value_and_grad(a, b, reduction="none"))(jnp.asarray(z), jnp.asarray(t))[0]
    _close(got, want, rtol=rtol, atol=0)


# --- jax.hessian through the kernels' gradients ----------------------------------------------


def test_jax_hessian_through_the_kernels_on_tied_rows():
    z = np.array([[1.0, 1.0, 0.0, -0.5], [2.0, 2.0, 2.0, 0.0], [30.0, 0.0, 0.0, 0.0]])
    ids = np.array([0, 3, 0])
    t = np.array([[0.4, 0.4, 0.1, 0.1], [0.2, 0.3, 0.3, 0.2], [0.9, 0.05, 0.05, 0.0]])
    zj = jnp.asarray(z)
    cases = (
        (lambda a: lk.cross_entropy(a, jnp.asarray(ids), reduction="sum"), lk.cross_entropy.grad_hess(z, ids, reduction="sum")),
        (lambda a: lk.kl_divergence(a, jnp.asarray(t), reduction="sum"), lk.kl_divergence.grad_hess(z, t, reduction="sum")),
    )
    for f, (want_g, want_h) in cases:
        _close(jax.jit(jax.grad(f))(zj), want_g)
        hess = np.asarray(jax.jit(jax.hessian(f))(zj)).reshape(z.size, z.size)
        _close(np.diagonal(hess).reshape(z.shape), want_h, rtol=1e-10, atol=1e-14)
        # each row's block is the softmax Jacobian diag(p) − p pᵀ (times Σt), symmetric
        np.testing.assert_allclose(hess, hess.T, rtol=0, atol=1e-15)


def test_jax_vmap_over_batches_of_the_kernels():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((3, 4, 6))
    ids = rng.integers(0, 6, (3, 4))
    t = rng.random((3, 4, 6))
    t /= t.sum(-1, keepdims=True)
    ce = jax.jit(jax.vmap(jax.value_and_grad(lambda a, b: lk.cross_entropy(a, b))))(jnp.asarray(z), jnp.asarray(ids))
    kl = jax.jit(jax.vmap(jax.value_and_grad(lambda a, b: lk.kl_divergence(a, b))))(jnp.asarray(z), jnp.asarray(t))
    for j in range(3):
        for got, (want_v, want_g, _) in ((ce, _torch_ce(z[j], ids[j], "mean")), (kl, _torch_kl(z[j], t[j], "mean"))):
            _close(got[0][j], want_v, rtol=1e-10)
            _close(got[1][j], want_g)
