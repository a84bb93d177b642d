"""ctc: what the generic suites do not cover. Random ragged batches against torch's ctc_loss
(value and gradient, every reduction, blank ≠ 0, repeated labels, empty targets, impossible
alignments with and without zero_infinity, −inf logits), optax's paddings, the JAX path under
jit (lax.scan), the torch hook's one-pass backward and double backward, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _batch(rng, n=6, t_max=12, n_classes=6, s_max=5, blank=0):
    z = rng.standard_normal((n, t_max, n_classes))
    labels = np.array([c for c in range(n_classes) if c != blank])
    targets = rng.choice(labels, size=(n, s_max))
    targets[::2, 1] = targets[::2, 0]  # repeated labels
    il = rng.integers(1, t_max + 1, n)
    il[0] = t_max
    tl = np.minimum(rng.integers(0, s_max + 1, n), (il + 1) // 2)  # possible even with every label repeated
    tl[1] = 0  # an empty target
    targets[tl == 0] = 77  # padding past the target length may hold anything
    return z, targets, il, tl


def _torch_ref(z, targets, il, tl, blank, reduction, zero_infinity=False):
    zt = torch.tensor(z, requires_grad=True)
    safe = np.where(np.arange(targets.shape[1])[None, :] < tl[:, None], targets, blank)
    out = F.ctc_loss(zt.log_softmax(-1).transpose(0, 1), torch.tensor(safe), torch.tensor(il), torch.tensor(tl), blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    (out.sum() if reduction == "none" else out).backward()
    return out.detach().numpy(), zt.grad.numpy()


@pytest.mark.parametrize("blank", [0, 3, 5])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_value_and_grad_equal_torch_on_ragged_batches(blank, reduction, rng):
    z, targets, il, tl = _batch(rng, blank=blank)
    norm = "target_length" if reduction == "mean" else None
    expected, expected_g = _torch_ref(z, targets, il, tl, blank, reduction)
    for arrays in ((z, targets, il, tl), tuple(torch.as_tensor(a) for a in (z, targets, il, tl))):
        zz, tt, ii, ll = arrays
        v, g = lk.ctc.value_and_grad(zz, tt, input_lengths=ii, target_lengths=ll, blank=blank, reduction="sum" if reduction == "none" else reduction, normalize_by=norm)
        per = lk.ctc(zz, tt, input_lengths=ii, target_lengths=ll, blank=blank, reduction=reduction, normalize_by=norm)
        np.testing.assert_allclose(np.asarray(per), expected, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(g), expected_g, rtol=1e-9, atol=1e-12)
        if reduction != "none":
            np.testing.assert_allclose(np.asarray(v), expected, rtol=1e-10)


def test_impossible_alignments_are_inf_or_zero_with_zero_infinity(rng):
    z = rng.standard_normal((3, 4, 5))
    targets = np.array([[1, 1, 2], [1, 2, 3], [2, 2, 2]])  # 1 1 2 needs 4 frames; 2 2 2 needs 5
    il, tl = np.array([4, 2, 4]), np.array([3, 3, 3])
    for zero_infinity in (False, True):
        expected, expected_g = _torch_ref(z, targets, il, tl, 0, "none", zero_infinity)
        got = lk.ctc(z, targets, input_lengths=il, target_lengths=tl, reduction="none", zero_infinity=zero_infinity)
        g = lk.ctc.grad(z, targets, input_lengths=il, target_lengths=tl, reduction="sum", zero_infinity=zero_infinity)
        np.testing.assert_array_equal(np.isinf(got), [False, True, True] if not zero_infinity else [False] * 3)
        np.testing.assert_allclose(got, expected, rtol=1e-10)
        # torch: NaN gradient for an infinite loss, 0 with zero_infinity; the possible row equal
        np.testing.assert_array_equal(np.isnan(g), np.isnan(expected_g))
        np.testing.assert_allclose(g[0], expected_g[0], rtol=1e-9, atol=1e-12)
        if zero_infinity:
            assert np.all(g[1:] == 0)


def test_target_longer_than_input_is_inf_not_an_error():
    v = lk.ctc(np.zeros((1, 2, 4)), np.array([[1, 2, 3]]), reduction="none")
    assert np.isinf(v[0]) and v[0] > 0


def test_empty_target_is_the_all_blank_path(rng):
    z = rng.standard_normal((2, 5, 4))
    lp = z - np.logaddexp.reduce(z, axis=-1, keepdims=True)
    v = lk.ctc(z, np.zeros((2, 0), dtype=np.int64), reduction="none")
    np.testing.assert_allclose(v, -lp[:, :, 0].sum(axis=1), rtol=1e-12)
    # a zero-frame input has probability 1 for the empty target
    v0 = lk.ctc(z, np.array([[1], [1]]), input_lengths=np.array([0, 5]), target_lengths=np.array([0, 1]), reduction="none")
    assert v0[0] == 0.0 and np.isfinite(v0[1])


def test_minus_inf_logits_and_log_probs_as_input(rng):
    z = rng.standard_normal((3, 7, 5))
    z[:, :, 4] = -np.inf  # a class never emitted
    z[0, 2, 0] = -np.inf  # no blank at one frame
    targets = np.array([[1, 2, 3], [1, 1, 2], [3, 3, 2]])
    lp = z - np.logaddexp.reduce(z, axis=-1, keepdims=True)
    lpt = torch.tensor(lp, requires_grad=True)  # torch's gradient for log-probs is exp(lp) − γ, ours too
    ref = F.ctc_loss(lpt.transpose(0, 1), torch.tensor(targets), torch.full((3,), 7), torch.full((3,), 3), reduction="sum")
    ref.backward()
    expected, expected_g = ref.detach().numpy(), lpt.grad.numpy()
    v, g = lk.ctc.value_and_grad(lp, targets, reduction="sum")
    np.testing.assert_allclose(v, expected, rtol=1e-10)
    # torch's backward computes exp(lp) − exp(α + β − lp + nll): NaN where lp = −inf; the
    # closed form softmax − γ is 0 there and equal elsewhere
    assert np.all(np.isfinite(g)) and np.all(g[np.isneginf(z)] == 0)
    finite = np.isfinite(expected_g)
    assert finite.mean() > 0.5
    np.testing.assert_allclose(g[finite], expected_g[finite], rtol=1e-9, atol=1e-12)
    # logits and their log-softmax give the same value and gradient
    v2, g2 = lk.ctc.value_and_grad(z, targets, reduction="sum")
    np.testing.assert_allclose(v2, v, rtol=1e-12)
    np.testing.assert_allclose(g2, g, rtol=1e-12, atol=1e-15)


def test_padding_frames_and_labels_are_ignored(rng):
    z, targets, il, tl = _batch(rng)
    z2 = z.copy()
    for i, n_frames in enumerate(il):
        z2[i, n_frames:] = np.nan
    v = lk.ctc(z2, targets, input_lengths=il, target_lengths=tl, reduction="none")
    np.testing.assert_allclose(v, lk.ctc(z, targets, input_lengths=il, target_lengths=tl, reduction="none"), rtol=1e-14)
    g = lk.ctc.grad(z2, targets, input_lengths=il, target_lengths=tl)
    assert np.all(np.isfinite(g))
    # NaN inside a sequence's frames propagates to its value
    z3 = z.copy()
    z3[0, 0, 0] = np.nan
    assert np.isnan(lk.ctc(z3, targets, input_lengths=il, target_lengths=tl, reduction="none")[0])


def test_optax_with_paddings(rng):
    pytest.importorskip("optax")
    import jax.numpy as jnp
    import optax

    z, targets, il, tl = _batch(rng, blank=2)
    logit_pad = (np.arange(z.shape[1])[None, :] >= il[:, None]).astype(np.float64)
    label_pad = (np.arange(targets.shape[1])[None, :] >= tl[:, None]).astype(np.float64)
    expected = optax.ctc_loss(jnp.asarray(z), jnp.asarray(logit_pad), jnp.asarray(np.where(label_pad > 0, 0, targets)), jnp.asarray(label_pad), blank_id=2)
    got = lk.ctc(jnp.asarray(z), jnp.asarray(targets), input_lengths=jnp.asarray(il), target_lengths=jnp.asarray(tl), blank=2, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_jax_jit_grad_uses_scan_and_equals_numpy(rng):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    z, targets, il, tl = _batch(rng)

    def f(z_, il_, tl_):
        return lk.ctc(z_, jnp.asarray(targets), input_lengths=il_, target_lengths=tl_, normalize_by="target_length")

    args = (jnp.asarray(z), jnp.asarray(il), jnp.asarray(tl))
    v, g = jax.jit(jax.value_and_grad(f))(*args)
    ev, eg = lk.ctc.value_and_grad(z, targets, input_lengths=il, target_lengths=tl, normalize_by="target_length")
    np.testing.assert_allclose(v, ev, rtol=1e-12)
    np.testing.assert_allclose(g, eg, rtol=1e-12, atol=1e-15)
    jaxpr = str(jax.make_jaxpr(f)(*args))
    assert "scan" in jaxpr and jaxpr.count("log") < 40  # one compiled step, not T unrolled ones


def test_torch_backward_is_the_saved_closed_form_and_double_backward_works(rng):
    z, targets, il, tl = _batch(rng, n=3, t_max=6, s_max=3)
    zt = torch.tensor(z, requires_grad=True)
    kw = dict(input_lengths=torch.tensor(il), target_lengths=torch.tensor(tl))
    v = lk.ctc(zt, torch.tensor(targets), **kw)
    assert type(v.grad_fn).__name__ == "SequenceLossFunctionBackward"
    (g,) = torch.autograd.grad(v, zt, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), lk.ctc.grad(z, targets, input_lengths=il, target_lengths=tl), rtol=1e-12, atol=1e-15)
    (gg,) = torch.autograd.grad((g * g).sum(), zt)
    # torch's ctc_loss has no double backward: central differences of Σ g² along a direction
    d = rng.standard_normal(z.shape)

    def f(x):
        return float(np.sum(lk.ctc.grad(x, targets, input_lengths=il, target_lengths=tl) ** 2))

    h = 1e-5
    np.testing.assert_allclose(np.sum(gg.numpy() * d), (f(z + h * d) - f(z - h * d)) / (2 * h), rtol=1e-6)


@pytest.mark.parametrize(
    "kw, error, match",
    [
        (dict(targets=np.array([[1, 0]])), ValueError, r"holds 0 at targets\[0, 1\].*the blank"),
        (dict(targets=np.array([[1, 5]])), ValueError, r"holds 5 at targets\[0, 1\].*not a class id in \[0, 3\]"),
        (dict(targets=np.array([[1.0, 2.0]])), TypeError, "integer class ids"),
        (dict(input_lengths=np.array([7])), ValueError, r"`input_lengths` must be in \[0, 6\].*got 7"),
        (dict(input_lengths=np.array([-1])), ValueError, r"`input_lengths` must be in \[0, 6\]"),
        (dict(target_lengths=np.array([3])), ValueError, r"`target_lengths` must be in \[0, 2\]"),
        (dict(input_lengths=np.array([6, 6])), ValueError, r"`input_lengths` must have shape \(1,\)"),
        (dict(input_lengths=np.array([6.0])), TypeError, "`input_lengths` must be an integer array"),
        (dict(blank=4), ValueError, r"`blank` must be a class id in \[0, 3\]"),
        (dict(logits=np.zeros((6, 4))), ValueError, r"\(N, T, C\)"),
    ],
)
def test_bad_inputs_get_clear_errors(kw, error, match):
    args = dict(logits=np.zeros((1, 6, 4)), targets=np.array([[1, 2]]))
    args.update(kw)
    logits, targets = args.pop("logits"), args.pop("targets")
    with pytest.raises(error, match=match):
        lk.ctc(logits, targets, **args)


def test_target_ids_past_the_target_length_are_not_checked():
    v = lk.ctc(np.zeros((1, 6, 4)), np.array([[1, 0, -3]]), target_lengths=np.array([1]))
    assert np.isfinite(v)


def test_lengths_from_another_library_are_rejected():
    with pytest.raises(TypeError, match="`input_lengths` must be an integer array of the library of `logits`"):
        lk.ctc(torch.zeros(1, 6, 4, dtype=torch.float64), torch.tensor([[1, 2]]), input_lengths=np.array([6]))
    # a list of ints is fine on every backend
    assert torch.isfinite(lk.ctc(torch.zeros(1, 6, 4, dtype=torch.float64), torch.tensor([[1, 2]]), input_lengths=[6], target_lengths=[2]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("blank, zero_infinity", [(0, False), (4, True)])
def test_torch_in_place_loop_equals_the_array_api_scan(dtype, blank, zero_infinity, rng):
    # the eager torch fast path (one preallocated in-place loop over the stacked α and reversed
    # rows) against the array-API scan on the same torch tensors, every output of the kernel
    import array_api_compat

    from losskit.losses import ctc as ctc_module

    z, targets, il, tl = _batch(rng, n=7, t_max=11, n_classes=6, s_max=5, blank=blank)
    tl[2], il[2] = 5, 4  # an impossible alignment
    z[3, 1, blank] = -np.inf  # no blank at one frame
    zt = torch.tensor(z, dtype=dtype)
    xp = array_api_compat.array_namespace(zt)
    o = ctc_module._ctc_prepare(zt, torch.tensor(targets), dict(input_lengths=torch.tensor(il), target_lengths=torch.tensor(tl), blank=blank, zero_infinity=zero_infinity, normalize_by="target_length"), xp, False, "ctc")
    u = torch.tensor(rng.standard_normal(7), dtype=dtype)
    out = {}
    for loop in ("scan", "in_place"):
        v, vjp = ctc_module._ctc_kernel(zt, torch.tensor(targets), o, xp, loop=loop)
        out[loop] = v.numpy(), vjp(u)[0].numpy()
    tol = dict(rtol=1e-13, atol=1e-15) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.isinf(out["scan"][0]), np.isinf(out["in_place"][0]))
    np.testing.assert_allclose(out["in_place"][0], out["scan"][0], **tol)
    np.testing.assert_array_equal(np.isnan(out["scan"][1]), np.isnan(out["in_place"][1]))
    np.testing.assert_allclose(out["in_place"][1], out["scan"][1], **tol)
    assert np.isinf(out["scan"][0][2]) != zero_infinity


def test_every_path_equals_enumerating_the_alignments(rng):
    # an independent reference: the sum over every frame path that collapses to the target,
    # on each backend's path (NumPy scan, eager torch in-place loop, JAX scan)
    import itertools

    n_classes, t_max = 3, 5
    z = rng.standard_normal((4, t_max, n_classes))
    targets = np.array([[1, 2, 0], [1, 1, 0], [2, 0, 0], [1, 2, 1]])
    il, tl = np.array([5, 4, 3, 5]), np.array([2, 2, 0, 3])
    lp = z - np.logaddexp.reduce(z, axis=-1, keepdims=True)

    def collapse(path):
        out = [c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1])]
        return tuple(out)

    expected = []
    for i in range(4):
        want = tuple(targets[i, : tl[i]])
        terms = [sum(lp[i, t, c] for t, c in enumerate(p)) for p in itertools.product(range(n_classes), repeat=int(il[i])) if collapse(p) == want]
        expected.append(-np.logaddexp.reduce(terms) if terms else np.inf)
    kw = dict(input_lengths=il, target_lengths=tl, reduction="none")
    np.testing.assert_allclose(lk.ctc(z, targets, **kw), expected, rtol=1e-12)
    tkw = {k: torch.tensor(v) if k != "reduction" else v for k, v in kw.items()}
    np.testing.assert_allclose(lk.ctc(torch.tensor(z), torch.tensor(targets), **tkw).numpy(), expected, rtol=1e-12)
    jax = pytest.importorskip("jax")
    jkw = {k: jax.numpy.asarray(v) if k != "reduction" else v for k, v in kw.items()}
    np.testing.assert_allclose(jax.jit(lambda x: lk.ctc(x, jax.numpy.asarray(targets), **jkw))(jax.numpy.asarray(z)), expected, rtol=1e-12)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_value_alone_runs_the_forward_rows_only_and_equals_torch(library, rng, monkeypatch):
    """A value with no gradient wanted runs the α recursion on N rows, not the 2N (forward and
    reversed) that the gradient needs, and still equals torch's ctc_loss."""
    import losskit.losses.ctc as ctc_module

    z, targets, il, tl = _batch(rng)
    rows = []
    real = ctc_module._alphas

    def counting(lp_pad, ext, *rest):
        rows.append(int(ext.shape[0]))
        return real(lp_pad, ext, *rest)

    monkeypatch.setattr(ctc_module, "_alphas", counting)
    conv = (lambda a: a) if library == "numpy" else torch.tensor
    got = lk.ctc(conv(z), conv(targets), input_lengths=conv(il), target_lengths=conv(tl), reduction="none")
    want, _ = _torch_ref(z, targets, il, tl, 0, "none")
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)
    assert rows == [z.shape[0]]
    rows.clear()
    lk.ctc.value_and_grad(conv(z), conv(targets), input_lengths=conv(il), target_lengths=conv(tl))
    assert rows == [2 * z.shape[0]]  # with the gradient: both directions in one loop
