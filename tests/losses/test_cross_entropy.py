"""cross_entropy's own behaviour, beyond what the registry-driven suites check: the class axis
on 3-D inputs against torch, the documented "mean" denominator Σ w·class_weight[y] spelled
out, action-mask rows (-inf logits), fully ignored batches, torch and JAX specifics, precision
against mpmath, and the soft-target and class-weight rules and messages."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from registry_cases import draw, params

NAME = "cross_entropy"


def _torch_ref(z, y, reduction, o):
    """torch.nn.functional.cross_entropy on tensors (autograd flows), class axis last."""
    import torch

    cw = None if o.get("class_weight") is None else torch.as_tensor(o["class_weight"])
    ii = -100 if o.get("ignore_index") is None else o["ignore_index"]
    return torch.nn.functional.cross_entropy(z, y, weight=cw, ignore_index=ii, reduction=reduction, label_smoothing=o.get("label_smoothing", 0.0))


# --- values against torch ---------------------------------------------------------------------


def test_class_axis_1_matches_torch_on_3d(rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((4, 6, 3))
    y = rng.integers(0, 6, (4, 3))
    cw = rng.uniform(0.5, 2, 6)
    for ls in (0.0, 0.3):
        expected = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y), weight=torch.tensor(cw), label_smoothing=ls)
        got = lk.cross_entropy(z, y, axis=1, class_weight=cw, label_smoothing=ls)
        np.testing.assert_allclose(got, expected.item(), rtol=1e-10)
        g = lk.cross_entropy.grad(z, y, axis=1, class_weight=cw, label_smoothing=ls)
        tz = torch.tensor(z, requires_grad=True)
        torch.nn.functional.cross_entropy(tz, torch.tensor(y), weight=torch.tensor(cw), label_smoothing=ls).backward()
        np.testing.assert_allclose(g, tz.grad.numpy(), rtol=1e-9, atol=1e-14)


def _ids_rule(o, target, shape):
    """(valid, d) of the documented rule: ignored ids are invalid, d = class_weight[y]."""
    d = np.ones(shape)
    valid = np.ones(shape, dtype=bool)
    if o.get("ignore_index") is not None:
        valid &= target != o["ignore_index"]
    if o.get("class_weight") is not None:
        d = o["class_weight"][np.where(valid, target, 0)]
    return valid, d


# torch has no megatron smoothing: those option sets are checked against the fused loss
@pytest.mark.parametrize("param", params(case=lambda s, o: s.name == NAME and "smoothing_formula" not in o))
def test_weighted_mean_is_the_documented_rule(param, rng):
    """mean = Σ w·ℓ / Σ w·d over valid samples, with ℓ from torch and d = class_weight[y] for
    integer targets (1 for probability targets)."""
    torch = pytest.importorskip("torch")
    d = draw(*param, rng)
    z, y = d.arrays
    o = d.options
    per = _torch_ref(torch.as_tensor(z), torch.as_tensor(y), "none", o).numpy()
    w = rng.uniform(0.1, 2.0, per.shape)
    mask = rng.random(per.shape) < 0.8
    mask.flat[0] = True
    valid, den = (mask, np.ones(per.shape)) if d.raw.get("_probs") else _ids_rule(o, y, per.shape)
    valid = valid & mask
    expected = np.sum(np.where(valid, w * per, 0)) / np.sum(np.where(valid, w * den, 0))
    np.testing.assert_allclose(lk.cross_entropy(z, y, weight=w, mask=mask, **o), expected, rtol=1e-10)
    got_norm = lk.cross_entropy(z, y, weight=w, mask=mask, normalizer=7.0, **o)
    np.testing.assert_allclose(got_norm, np.sum(np.where(valid, w * per, 0)) / 7.0, rtol=1e-10)


@pytest.mark.parametrize("param", params(case=lambda s, o: s.name == NAME and "smoothing_formula" not in o))
def test_jax_weight_and_target_gradients_of_the_mean_match_torch(param, rng):
    """JAX gradients for weights (and soft targets) of "mean" equal torch autograd through the
    documented rule mean = Σ w·ℓ / Σ w·d."""
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    jnp = jax.numpy
    d = draw(*param, rng)
    z, y = d.arrays
    o = d.options
    opts = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in o.items()}
    soft = bool(d.raw.get("_probs"))
    w = rng.uniform(0.5, 1.5, d.sample_shape)
    jz, jy, jw = jnp.asarray(z), jnp.asarray(y), jnp.asarray(w)
    if soft:
        gw, gt = jax.grad(lambda w_, t_: lk.cross_entropy(jz, t_, weight=w_, **opts), argnums=(0, 1))(jw, jy)
    else:
        gw = jax.grad(lambda w_: lk.cross_entropy(jz, jy, weight=w_, **opts))(jw)
    tw = torch.tensor(w, requires_grad=True)
    tt = torch.tensor(y, requires_grad=soft)
    per = _torch_ref(torch.tensor(z), tt, "none", o)
    if soft:
        valid, den = torch.ones_like(per, dtype=torch.bool), torch.ones_like(per)
    else:
        v, dd = _ids_rule(o, y, per.shape)
        valid, den = torch.as_tensor(v), torch.as_tensor(dd)
    (torch.where(valid, tw * per, 0).sum() / torch.where(valid, tw * den, 0).sum()).backward()
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-10, atol=1e-14)
    if soft:
        np.testing.assert_allclose(gt, tt.grad.numpy(), rtol=1e-10, atol=1e-14)


# --- edges ---------------------------------------------------------------------------------------


def test_action_mask_rows_match_the_restricted_softmax():
    """A row with -inf logits equals cross-entropy over the remaining classes (no smoothing)."""
    z = np.array([[0.3, -np.inf, 2.0, -np.inf]])
    y = np.array([2])
    v, g = lk.cross_entropy.value_and_grad(z, y)
    v_sub, g_sub = lk.cross_entropy.value_and_grad(z[:, [0, 2]], np.array([1]))
    np.testing.assert_allclose(v, v_sub, rtol=1e-14)
    np.testing.assert_allclose(g[:, [0, 2]], g_sub, rtol=1e-14)
    assert np.all(g[:, [1, 3]] == 0)


def test_fully_ignored_batch_and_nan_in_masked_rows(backend):
    z = backend.asarray(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    y = backend.asarray(np.array([-100, -100]))
    v, g = lk.cross_entropy.value_and_grad(z, y, ignore_index=-100)
    assert float(backend.to_numpy(v)) == 0.0
    np.testing.assert_array_equal(backend.to_numpy(g), np.zeros((2, 2)))
    # NaN in a valid sample propagates, never silently replaced
    v = lk.cross_entropy(z, backend.asarray(np.array([0, 1])))
    assert np.isnan(backend.to_numpy(v))


def test_edge_grid_with_class_weights_is_finite():
    """The declared edge grid has 3 classes; with 3 class weights (the option sets' weights have
    5) every output stays finite."""
    inf = np.inf
    z = np.array([[1e4, -1e4, 0.0], [0.0, -inf, 2.0], [-inf, -inf, 1.0], [-1e4, 1e4, -1e4]])
    cw = np.array([0.2, 3.0, 0.7])
    for t, o in ((np.array([0, 2, 2, 1]), {"label_smoothing": 0.25, "ignore_index": -1}), (np.array([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0], [0.2, 0.6, 0.2]]), {"label_smoothing": 0.2})):
        for reduction in ("mean", "none"):
            v, g = lk.cross_entropy.value_and_grad(z, t, class_weight=cw, reduction=reduction, **o)
            gg, h = lk.cross_entropy.grad_hess(z, t, class_weight=cw, reduction=reduction, **o)
            assert np.all(np.isfinite(v)) and np.all(np.isfinite(g)) and np.all(np.isfinite(h))


# --- torch and JAX ------------------------------------------------------------------------------


def test_torch_compile_inductor(rng):
    torch = pytest.importorskip("torch")
    z = torch.randn(16, 7, requires_grad=True)
    y = torch.randint(0, 7, (16,))
    compiled = torch.compile(lambda z, y: lk.cross_entropy(z, y, label_smoothing=0.1), fullgraph=True)
    v = compiled(z, y)
    v.backward()
    z2 = z.detach().requires_grad_(True)
    torch.nn.functional.cross_entropy(z2, y, label_smoothing=0.1).backward()
    torch.testing.assert_close(v, torch.nn.functional.cross_entropy(z2.detach(), y, label_smoothing=0.1))
    torch.testing.assert_close(z.grad, z2.grad)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32"])
def test_half_inputs_compute_in_float32_and_return_grad_in_input_dtype(dtype_name):
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    z = torch.randn(8, 5).to(dtype).requires_grad_(True)
    y = torch.randint(0, 5, (8,))
    v = lk.cross_entropy(z, y)
    assert v.dtype == torch.float32
    v.backward()
    assert z.grad.dtype == dtype
    ref = torch.nn.functional.cross_entropy(z.detach().float(), y)
    torch.testing.assert_close(v, ref)


def test_torch_func_grad_and_vmap_over_3d_batches():
    torch = pytest.importorskip("torch")
    z = torch.randn(4, 6, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (4, 6))
    per_batch = torch.func.vmap(torch.func.grad(lambda zz, yy: lk.cross_entropy(zz, yy)))(z, y)
    expected = torch.stack([lk.cross_entropy.grad(z[b], y[b]) for b in range(4)])
    torch.testing.assert_close(per_batch, expected)


def test_jax_validation_is_skipped_under_jit_but_runs_eagerly():
    jax = pytest.importorskip("jax")
    z = jax.numpy.zeros((2, 3))
    with pytest.raises(ValueError, match="class id 7"):
        lk.cross_entropy(z, jax.numpy.asarray([0, 7]))
    jax.jit(lambda z, y: lk.cross_entropy(z, y))(z, jax.numpy.asarray([0, 2]))


# --- precision (50-digit mpmath references) -----------------------------------------------------


def test_distant_logits_match_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    z = np.array([[0.0, 50.0, -50.0, 700.0], [1e-3, 2e-3, -3e-3, 0.0], [-1e4, 1e4, 0.0, 3.0]])
    y = np.array([3, 1, 0])
    v = lk.cross_entropy(z, y, reduction="none")
    g = lk.cross_entropy.grad(z, y, reduction="sum")  # p − onehot: one ulp of 1 absolute
    for i in range(z.shape[0]):
        with mpmath.workdps(400):  # the textbook LSE − z_y cancels: carry digits to spare
            row = [mpmath.mpf(x) for x in z[i]]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in row))
            ref = +(lse - row[y[i]])
            probs = [+mpmath.exp(x - lse) for x in row]
        assert float(abs(v[i] - ref)) <= 1e-15 * float(abs(ref)) + 1e-300, (i, v[i], ref)
        for k in range(z.shape[1]):
            ref_g = probs[k] - (1 if k == y[i] else 0)
            assert float(abs(g[i, k] - ref_g)) <= 2.3e-16 + 1e-15 * float(abs(ref_g)), (i, k, g[i, k], ref_g)


def test_float32_confident_predictions_keep_their_digits():
    """Tiny per-sample losses of a confident model, in float32: (max − z_y) + log1p(rest)
    keeps them; LSE − z_y would round them to multiples of eps·|z_y|."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 10)).astype(np.float32)
    y = rng.integers(0, 10, 200)
    z[np.arange(200), y] += np.float32(25.0)
    got = lk.cross_entropy(z, y, reduction="none")
    for i in range(0, 200, 20):
        row = [mpmath.mpf(float(x)) for x in z[i]]
        with mpmath.workdps(60):
            ref = mpmath.log(mpmath.fsum(mpmath.exp(x - row[y[i]]) for x in row))
        assert abs(float(got[i]) - float(ref)) <= 1e-5 * float(ref), (i, got[i], ref)


# --- soft targets, class ids and class weights --------------------------------------------------


def _probs(rng, shape=(4, 3)):
    t = rng.random(shape) + 0.1
    return t / t.sum(-1, keepdims=True)


def test_soft_targets(rng, backend):
    z = rng.standard_normal((4, 3))
    t = _probs(rng)
    zb = backend.asarray(z)
    with pytest.raises(ValueError, match="found -0.* pass exp\\(target\\)"):
        lk.cross_entropy(zb, backend.asarray(np.log(t)))
    with pytest.raises(ValueError, match="sums to"):
        lk.cross_entropy(zb, backend.asarray(t * 0.5))
    # rows that are masked are exempt; validate=False skips the check
    bad = t.copy()
    bad[1] = -1.0
    mask = np.array([True, False, True, True])
    assert np.isfinite(float(backend.to_numpy(lk.cross_entropy(zb, backend.asarray(bad), mask=backend.asarray(mask)))))
    lk.cross_entropy(z, bad, validate=False)


def test_tolerance_follows_the_target_dtype(rng):
    torch = pytest.importorskip("torch")
    t = _probs(rng, (8, 1000))
    z = torch.randn(8, 1000)
    # rounding probabilities to bfloat16 moves each row's sum by ~1e-3: accepted in bf16
    lk.cross_entropy(z.bfloat16(), torch.as_tensor(t).bfloat16())


def test_float_class_ids_and_empty_class_axis(rng):
    z = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="class ids must be integers; probabilities need the logits' shape"):
        lk.cross_entropy(z, np.array([0.0, 1.0, 2.0, 1.0], dtype=np.float32))
    for t in (np.zeros((4, 0)), np.zeros(4, dtype=int)):
        with pytest.raises(ValueError, match="`logits` has no classes"):
            lk.cross_entropy(np.zeros((4, 0)), t)


def test_class_weight_rule(rng):
    """Class weights must be finite and >= 0 (validate=True); with validate=False a weight
    enters only where its class does, identically on every path."""
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((4, 3))
    y = np.array([0, 1, 0, 1])
    cw = np.array([1.0, 2.0, np.nan])
    with pytest.raises(ValueError, match="`class_weight` must be finite and >= 0.0; found nan at class_weight\\[2\\]"):
        lk.cross_entropy(z, y, class_weight=cw)
    with pytest.raises(ValueError, match="`class_weight`"):
        lk.cross_entropy(z, y, class_weight=np.array([1.0, -2.0, 1.0]))
    v = lk.cross_entropy(z, y, class_weight=cw, validate=False)
    v2, g = lk.cross_entropy.value_and_grad(z, y, class_weight=cw, validate=False)
    zt = torch.tensor(z, requires_grad=True)
    vt = lk.cross_entropy(zt, torch.tensor(y), class_weight=torch.tensor(cw), validate=False)
    vt.backward()
    for a in (v, v2, vt.item()):
        assert np.isfinite(a)
    np.testing.assert_allclose([v2, vt.item()], v, rtol=1e-12)
    np.testing.assert_allclose(zt.grad.numpy(), g, rtol=1e-12)
    assert np.all(np.isfinite(g))
    # with label smoothing every class enters every sample: NaN everywhere, on every path
    assert np.isnan(lk.cross_entropy(z, y, class_weight=cw, label_smoothing=0.1, validate=False))



# --- class ids, shapes and option messages --------------------------------------------------------


def test_class_ids_out_of_range_name_the_first_bad_id_and_position():
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"class id 9 at target\[1\] is out of range for 4 classes"):
        lk.cross_entropy(z, np.array([0, 9, -3]))
    with pytest.raises(ValueError, match=r"class id -3 at target\[2\]"):
        lk.cross_entropy(z, np.array([0, -100, -3]), ignore_index=-100)
    # ignored or masked ids are exempt, and validate=False skips the check
    assert np.isfinite(lk.cross_entropy(z, np.array([0, -100, 1]), ignore_index=-100))
    assert np.isfinite(lk.cross_entropy(z, np.array([0, 77, 1]), mask=np.array([True, False, True])))


def test_integer_target_shape_errors():
    with pytest.raises(ValueError, match=r"without axis 1.*\(3,\).*trailing axis of size 1"):
        lk.cross_entropy(np.zeros((3, 4)), np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match="one-hot targets must be float"):
        lk.cross_entropy(np.zeros((3, 4)), np.zeros((3, 4), dtype=int))
    with pytest.raises(ValueError, match="ignore_index` applies to integer class ids"):
        lk.cross_entropy(np.zeros((3, 4)), np.full((3, 4), 0.25), ignore_index=-100)
    with pytest.raises(ValueError, match="`axis`=2 is out of range"):
        lk.cross_entropy(np.zeros((3, 4)), np.zeros(3, dtype=int), axis=2)


def test_option_messages():
    with pytest.raises(ValueError, match="`label_smoothing` must be in \\[0.0, 1.0\\]"):
        lk.cross_entropy(np.zeros((2, 3)), np.zeros(2, dtype=int), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"`class_weight` must have shape \(3,\)"):
        lk.cross_entropy(np.zeros((2, 3)), np.zeros(2, dtype=int), class_weight=np.ones(4))
    with pytest.raises(TypeError, match="`logits` must be a floating-point array"):
        lk.cross_entropy(np.zeros((2, 3), dtype=np.int32), np.zeros(2, dtype=int))


@pytest.mark.parametrize("logits, given", [(np.float32, np.float64), (np.float64, np.float32)])
def test_probability_target_of_another_float_dtype_passes_the_check(logits, given):
    """A distribution normalised in float64 and checked in float32 (the logits' dtype) sums to
    1 within float32's rounding: it was rejected against float64's √ε. A row 1 % off is still
    rejected."""
    rng = np.random.default_rng(5)
    t = rng.random((64, 1000))
    t = (t / t.sum(-1, keepdims=True)).astype(given)
    z = rng.standard_normal((64, 1000)).astype(logits)
    value = lk.cross_entropy(z, t)
    exact = lk.cross_entropy(z.astype(np.float64), t.astype(np.float64), validate=False)
    assert np.isfinite(value) and abs(float(value) - float(exact)) <= 1e-5 * abs(float(exact))
    bad = t.copy()
    bad[3] *= 1.01
    with pytest.raises(ValueError, match=r"the row at target\[3\] sums to"):
        lk.cross_entropy(z, bad)
