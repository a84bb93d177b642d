"""The fast paths of issue 16 compute what the reference paths compute, on both sides of every
switch, for every output and reduction:

* cached call plans (``Loss._plan``): the second call of a signature skips the metadata checks,
  so a cached signature must still reject bad shapes, values and options of the same kind;
* one min-max pass for value checks (``_validate.value_range``), with the exact element-wise
  check behind it when a bound is NaN or a mask applies;
* the NumPy cross-entropy kernel for plain integer ids (``_softmax.ids_nll_numpy``) vs the
  array-API path it replaces (taken with class weights), both against torch in float64;
* the fused softmax for softmax-loss derivatives, ``logsumexp_split(keepdims=True)``, ``xlogx``;
* torch's cached 0-d reduction multiplier, never written to;
* the rewritten mse / huber / BCE kernels, against torch and mpmath.

References are independent (torch's functions in float64, mpmath), never losskit's own code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import losskit as lk
from losskit import _validate
from losskit._array import logsumexp_split, namespace, softmax, xlogx
from losskit.losses import _softmax

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ("mean", "sum", "none")
ROOT = Path(__file__).resolve().parents[1]


def _ce_logits(rng, n=9, c=5):
    z = rng.standard_normal((n, c)) * 3
    z[0] = [30.0, 0.0, 0.0, 0.0, 0.0]  # confident and right: loss ~4e-13, kept by the split
    z[1] = [1.0, 1.0, 0.0, -np.inf, 0.0]  # a tie at the max and an impossible class
    z[2] = [1e4, -1e4, 0.0, 0.0, 0.0]
    ids = rng.integers(0, c, n)
    ids[0], ids[1], ids[2] = 0, 1, 1
    return z, ids


def _torch_ce(z, ids, reduction, weight=None):
    zt = torch.tensor(z, requires_grad=True)
    w = None if weight is None else torch.tensor(weight)
    loss = F.cross_entropy(zt, torch.tensor(ids), reduction=reduction, weight=w)
    (grad,) = torch.autograd.grad(loss.sum(), zt)
    return loss.detach().numpy(), grad.numpy()


def _close(a, b, rtol=1e-10, atol=1e-13):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol, atol=atol)


# --- NumPy cross-entropy kernel for plain ids vs the array-API path ----------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("path", ["numpy_ids_kernel", "array_api_path"])
def test_numpy_ce_both_paths_equal_torch(path, reduction):
    rng = np.random.default_rng(0)
    z, ids = _ce_logits(rng)
    # class_weight = ones is the same function but takes the array-API path
    opts = {} if path == "numpy_ids_kernel" else {"class_weight": np.ones(z.shape[1])}
    want_v, want_g = _torch_ce(z, ids, reduction)
    # torch rounds the 4e-13 loss of row 0 (log_softmax); compare it with mpmath instead
    v = lk.cross_entropy(z, ids, reduction=reduction, **opts)
    g = lk.cross_entropy.grad(z, ids, reduction=reduction, **opts)
    vg = lk.cross_entropy.value_and_grad(z, ids, reduction=reduction, **opts)
    gh = lk.cross_entropy.grad_hess(z, ids, reduction=reduction, **opts)
    if reduction == "none":
        _close(v[1:], want_v[1:])
        _close(vg[0][1:], want_v[1:])
    else:
        _close(v, want_v, rtol=1e-9)
        _close(vg[0], want_v, rtol=1e-9)
    for grad in (g, vg[1], gh[0]):
        _close(grad, want_g)


def test_numpy_ce_kernel_keeps_tiny_losses_exact():
    mpmath = pytest.importorskip("mpmath")
    z = np.array([[30.0, 0.0, 0.0, 0.0, 0.0], [45.0, 1.0, -3.0, 0.0, 2.0]])
    ids = np.array([0, 0])
    mpmath.mp.dps = 50
    want = [float(mpmath.log(sum(mpmath.e ** (mpmath.mpf(x) - r[0]) for x in r))) for r in z]
    for dtype, rtol in ((np.float64, 1e-14), (np.float32, 1e-6)):
        got = lk.cross_entropy(z.astype(dtype), ids, reduction="none")
        got_vg = lk.cross_entropy.value_and_grad(z.astype(dtype), ids, reduction="none")[0]
        if dtype is np.float32:
            want32 = [float(mpmath.log(sum(mpmath.e ** (mpmath.mpf(float(np.float32(x))) - mpmath.mpf(float(np.float32(r[0])))) for x in r))) for r in z]
            _close(got, want32, rtol=rtol, atol=0)
        else:
            _close(got, want, rtol=rtol, atol=0)
            _close(got_vg, want, rtol=rtol, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_numpy_ce_kernel_nan_ignored_and_masked_rows(reduction):
    rng = np.random.default_rng(1)
    z, ids = _ce_logits(rng)
    z[3, 2] = np.nan
    v, g = lk.cross_entropy.value_and_grad(z, ids, reduction="none")
    assert np.isnan(v[3]) and np.isnan(g[3]).all() and np.isfinite(np.delete(v, 3)).all()
    # ignored and masked rows: zero gradient, no influence, also with NaN logits in them
    ids_ign = ids.copy()
    ids_ign[3] = -100
    mask = np.ones(len(ids), bool)
    mask[4] = False
    v2, g2 = lk.cross_entropy.value_and_grad(z, ids_ign, ignore_index=-100, mask=mask, reduction=reduction)
    keep = np.ones(len(ids), bool)
    keep[[3, 4]] = False
    want_v, want_g = _torch_ce(z[keep], ids[keep], reduction)
    assert (g2[~keep] == 0).all()
    _close(g2[keep], want_g)
    _close(v2[keep] if reduction == "none" else v2, want_v, rtol=1e-9)


def test_numpy_ce_kernel_moved_axis_and_float32():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((3, 5, 4)).astype(np.float32)  # class axis 1
    ids = rng.integers(0, 5, (3, 4))
    v, g = lk.cross_entropy.value_and_grad(z, ids, axis=1, reduction="sum")
    assert g.dtype == np.float32 and g.shape == z.shape
    want_v, want_g = _torch_ce(z.astype(np.float64), ids, "sum")
    _close(v, want_v, rtol=1e-5)
    _close(g, want_g, rtol=1e-4, atol=1e-6)


# --- cached call plans ----------------------------------------------------------------------


def test_cached_plan_still_checks_shapes_values_and_options():
    p, y = np.zeros(4), np.ones(4)
    for _ in range(2):  # the second call of each signature hits the cache
        assert float(lk.huber(p, y, delta=1.0)) == 0.5
        with pytest.raises(ValueError, match="same shape"):
            lk.huber(np.zeros(4), np.ones(3), delta=1.0)
        with pytest.raises(TypeError, match="delta"):
            lk.huber(p, y, delta=True)  # True == 1 as a dict key: the type is part of the key
        with pytest.raises(ValueError, match="delta"):
            lk.huber(p, y, delta=-1.0)
        with pytest.raises(TypeError, match="unexpected keyword"):
            lk.huber(p, y, dleta=1.0)
        with pytest.raises(ValueError, match="out of range"):
            lk.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
        with pytest.raises(TypeError, match="floating"):
            lk.mse(np.zeros(3, dtype=np.int64), np.zeros(3))


def test_cached_plan_options_with_array_values_are_not_cached():
    z, ids = _ce_logits(np.random.default_rng(3))
    w = np.linspace(0.5, 2.0, z.shape[1])
    want_v, _ = _torch_ce(z, ids, "mean", weight=w)
    for scale in (1.0, 2.0):  # same signature, different array values
        got = lk.cross_entropy(z, ids, class_weight=w * scale)
        _close(got, want_v, rtol=1e-9)


# --- one min-max pass for value checks --------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_value_checks_fast_and_exact_paths(backend):
    to = (lambda a: torch.tensor(a)) if backend == "torch" else np.asarray
    z = to(np.zeros(5))
    good = to(np.array([0.0, 1.0, 0.5, 0.2, 1.0]))
    lk.binary_cross_entropy(z, good)  # happy path: one min-max pass
    bad = to(np.array([0.0, 1.0, -1.0, 0.2, 1.0]))
    with pytest.raises(ValueError, match=r"target\[2\]"):
        lk.binary_cross_entropy(z, bad)
    # a NaN makes the bounds NaN: the exact check still finds the bad entry behind it
    bad_nan = to(np.array([np.nan, 1.0, 0.5, 3.0, 1.0]))
    with pytest.raises(ValueError, match=r"target\[3\]"):
        lk.binary_cross_entropy(z, bad_nan)
    assert np.isnan(float(lk.binary_cross_entropy(z, to(np.array([np.nan, 1.0, 0.5, 0.0, 1.0])))))
    # masked entries are exempt (exact path)
    mask = to(np.array([True, True, False, True, True]))
    lk.binary_cross_entropy(z, bad, mask=mask)
    # class ids and distributions
    logits = to(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="class id 4"):
        lk.cross_entropy(logits, to(np.array([0, 4, 1])))
    dist = np.full((3, 4), 0.25)
    lk.kl_divergence(logits, to(dist))
    off = dist.copy()
    off[1, 0] = 0.5
    with pytest.raises(ValueError, match=r"target\[1\]"):
        lk.kl_divergence(logits, to(off))
    neg = dist.copy()
    neg[2, 3] = -0.1
    neg[2, 2] = 0.45
    with pytest.raises(ValueError, match=r"target\[2, 3\]"):
        lk.kl_divergence(logits, to(neg))
    with pytest.raises(ValueError, match="log_target"):
        lk.kl_divergence(logits, to(np.log(dist)))


def test_value_range_bounds():
    assert _validate.value_range(np.array([3, -1, 2]), namespace(np.zeros(1))) == (-1, 3)
    lo, hi = _validate.value_range(torch.tensor([0.5, -2.0, 4.0]), namespace(torch.zeros(1)))
    assert (lo, hi) == (-2.0, 4.0)
    lo, _ = _validate.value_range(np.array([1.0, np.nan]), namespace(np.zeros(1)))
    assert np.isnan(lo)


# --- softmax derivatives, split LSE, xlogx -----------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_softmax_helpers_match_torch_float64(backend):
    if backend == "jax":
        jnp = pytest.importorskip("jax.numpy")
        to = jnp.asarray
    else:
        to = (lambda a: torch.tensor(a)) if backend == "torch" else np.asarray
    z = np.array([[0.0, -np.inf, 2.0, 1.0], [-np.inf, -np.inf, 1.0, -np.inf], [1e4, -1e4, 0.0, 0.0], [30.0, 0.0, 0.0, 0.0]])
    x = to(z)
    xp = namespace(x)
    want = torch.softmax(torch.tensor(z), -1).numpy()
    _close(np.asarray(softmax(x, xp=xp)), want, rtol=1e-14, atol=0)
    lse = logsumexp_split(x, xp=xp, keepdims=True)
    _close(np.asarray(_softmax.probabilities(x, xp, lse)), want, rtol=1e-14, atol=0)
    m, r = logsumexp_split(x, xp=xp)
    mk, rk = lse
    assert tuple(mk.shape) == (4, 1) and tuple(m.shape) == (4,)
    _close(np.asarray(mk)[:, 0], np.asarray(m), rtol=0, atol=0)
    _close(np.asarray(rk)[:, 0], np.asarray(r), rtol=0, atol=0)
    t = np.array([0.0, 0.25, 1.0, np.nan])
    got = np.asarray(xlogx(to(t), xp=xp))
    assert got[0] == 0.0 and np.isnan(got[3])
    _close(got[1:3], t[1:3] * np.log(t[1:3]), rtol=1e-15, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_kl_outputs_match_torch(backend, reduction):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((6, 5)) * 2
    t = rng.random((6, 5)) ** 2
    t[0, :2] = 0.0
    t /= t.sum(-1, keepdims=True)
    zt = torch.tensor(z, requires_grad=True)
    want = F.kl_div(F.log_softmax(zt, -1), torch.tensor(t), reduction="none").sum(-1)
    want = {"none": want, "sum": want.sum(), "mean": want.mean()}[reduction]
    (want_g,) = torch.autograd.grad(want.sum(), zt)
    to = (lambda a: torch.tensor(a)) if backend == "torch" else np.asarray
    v = lk.kl_divergence(to(z), to(t), reduction=reduction)
    vg = lk.kl_divergence.value_and_grad(to(z), to(t), reduction=reduction)
    g = lk.kl_divergence.grad(to(z), to(t), reduction=reduction)
    gh = lk.kl_divergence.grad_hess(to(z), to(t), reduction=reduction)
    for value in (v, vg[0]):
        _close(np.asarray(value), want.detach().numpy(), rtol=1e-10)
    for grad in (vg[1], g, gh[0]):
        _close(np.asarray(grad), want_g.numpy(), rtol=1e-10)


# --- torch: the cached reduction multiplier -------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torch_cached_multiplier_is_never_written(reduction):
    from losskit.interop import torch as bridge

    z = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 3, dtype=torch.float64)
    for _ in range(3):
        (got,) = torch.autograd.grad(lk.mse(z, y, reduction=reduction).sum(), z)
        (want,) = torch.autograd.grad(F.mse_loss(z, y, reduction=reduction).sum(), z)
        torch.testing.assert_close(got, want)
    for key, t in bridge._SCALARS.items():
        assert float(t) == float(torch.tensor(key[0], dtype=t.dtype))  # unchanged since it was made


def test_torch_double_backward_through_cached_multiplier():
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 4, dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda a: lk.huber(a, y, delta=0.7), (z,))
    t = torch.rand(5, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: lk.binary_cross_entropy(a, t), (z,))
    assert torch.autograd.gradgradcheck(lambda a: lk.binary_cross_entropy(a, t), (z,))


# --- torch: the gradient in the forward below GRAD_IN_FORWARD_MAX elements ------------------------


def _torch_peer_cases(n):
    """(loss, peer, pred, target, options of both) on n = rows × 4 elements, float64."""
    rows = n // 4
    g = torch.Generator().manual_seed(n)
    z = torch.randn(rows, 4, dtype=torch.float64, generator=g) * 2
    y = torch.randn(rows, 4, dtype=torch.float64, generator=g)
    p = torch.rand(rows, 4, dtype=torch.float64, generator=g)
    q = torch.softmax(torch.randn(rows, 4, dtype=torch.float64, generator=g), -1)
    kl = lambda a, t, reduction, weight=None: F.kl_div(  # noqa: E731
        F.log_softmax(a, -1), t, reduction="batchmean" if reduction == "mean" else reduction
    )
    return [
        (lk.mse, F.mse_loss, z, y),
        (lk.huber, lambda a, t, reduction: F.huber_loss(a, t, reduction=reduction, delta=0.7), z, y, {"delta": 0.7}),
        (lk.binary_cross_entropy, F.binary_cross_entropy_with_logits, z, p),
        (lk.kl_divergence, kl, z, q),
        (lk.cross_entropy, F.cross_entropy, z, torch.randint(0, 4, (rows,), generator=g)),  # its lean kernel
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("side", ["at_threshold", "above_threshold"])
def test_torch_grad_in_forward_both_sides_equal_torch(side, reduction, monkeypatch):
    """Both sides of the switch: the value, the gradient (with a cotangent other than 1),
    a second backward through a kept graph, double backward and the gradient of a soft
    target that requires grad, against torch's own losses in float64."""
    from losskit.interop import torch as bridge

    n = 64
    monkeypatch.setattr(bridge, "GRAD_IN_FORWARD_MAX", n if side == "at_threshold" else n - 1)
    below = side == "at_threshold"
    for loss, peer, z0, t0, *opts in _torch_peer_cases(n):
        opts = opts[0] if opts else {}
        z = z0.clone().requires_grad_(True)
        out = loss(z, t0, reduction=reduction, **opts)
        kind = type(out.grad_fn).__name__  # above: the generic bridge or the loss's lean kernel
        recorded = below and loss is lk.cross_entropy and kind == "NllLossBackward0"  # torch's own ops (CrossEntropyKernel.recorded)
        assert recorded or (kind.endswith("LossFunctionBackward") and (kind.startswith("GradInForward") == below)), (loss, kind)
        want = peer(z, t0, reduction=reduction)
        torch.testing.assert_close(out, want, rtol=1e-12, atol=0)
        (got_g,) = torch.autograd.grad(3.0 * out, z, retain_graph=True)
        (want_g,) = torch.autograd.grad(3.0 * want, z, retain_graph=True)
        torch.testing.assert_close(got_g, want_g, rtol=1e-12, atol=1e-15)
        (again,) = torch.autograd.grad(out, z)  # the kept graph gives the same gradient again
        torch.testing.assert_close(3.0 * again, want_g, rtol=1e-12, atol=1e-15)
        # double backward: the gradient's own gradient, as torch's
        (g1,) = torch.autograd.grad(loss(z, t0, reduction=reduction, **opts), z, create_graph=True)
        (w1,) = torch.autograd.grad(peer(z, t0, reduction=reduction), z, create_graph=True)
        v = torch.linspace(-1.0, 1.0, z.numel(), dtype=z.dtype).reshape(z.shape)
        (g2,) = torch.autograd.grad((g1 * v).sum(), z)
        (w2,) = torch.autograd.grad((w1 * v).sum(), z)
        torch.testing.assert_close(g2, w2, rtol=1e-10, atol=1e-13)
        if not t0.is_floating_point():
            continue
        # a soft target that requires grad gets autograd's gradient, and pred its closed form
        t = t0.clone().requires_grad_(True)
        gz, gt = torch.autograd.grad(loss(z, t, reduction=reduction, **opts), (z, t))
        wz, wt = torch.autograd.grad(peer(z, t, reduction=reduction), (z, t))
        torch.testing.assert_close(gz, wz, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(gt, wt, rtol=1e-10, atol=1e-13)


def test_torch_grad_in_forward_not_taken_for_none_half_and_transforms():
    """``reduction='none'``, half precision and torch.func keep the generic bridge; weights and
    masks take the new path and match torch."""
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 4, dtype=torch.float64)
    assert type(lk.mse(z, y, reduction="none").grad_fn).__name__ == "LossFunctionBackward"
    zh = torch.randn(6, 4, dtype=torch.float16, requires_grad=True)
    assert type(lk.mse(zh, y.half()).grad_fn).__name__ == "LossFunctionBackward"
    w = torch.rand(6, 4, dtype=torch.float64)
    m = torch.rand(6, 4) > 0.3
    out = lk.mse(z, y, weight=w, mask=m)
    assert type(out.grad_fn).__name__ == "GradInForwardLossFunctionBackward"
    want = ((z - y) ** 2 * w)[m].sum() / w[m].sum()
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(torch.autograd.grad(out, z)[0], torch.autograd.grad(want, z)[0])
    grads = torch.func.grad(lambda a: lk.mse(a, y))(z.detach())
    torch.testing.assert_close(grads, 2 * (z.detach() - y) / z.numel())


# --- rewritten elementwise kernels ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_huber_mse_bce_kernels_match_torch_at_edges(backend):
    r = np.array([0.3, -2.0, 1.0, -1.0, 0.0, 1e4, -1e4, np.inf, -np.inf, np.nan, 0.999999, 1.000001])
    y = np.zeros_like(r)
    to = (lambda a: torch.tensor(a)) if backend == "torch" else np.asarray
    for loss, peer in ((lk.huber, F.huber_loss), (lk.mse, F.mse_loss)):
        got = np.asarray(loss(to(r), to(y), reduction="none"))
        want = peer(torch.tensor(r), torch.tensor(y), reduction="none").numpy()
        np.testing.assert_array_equal(got, want)  # the same roundings
        g = np.asarray(loss.grad(to(r), to(y), reduction="none"))
        zt = torch.tensor(np.nan_to_num(r, posinf=1e300, neginf=-1e300), requires_grad=True)
        (wg,) = torch.autograd.grad(peer(zt, torch.tensor(y), reduction="sum"), zt)
        finite = np.isfinite(r)
        _close(g[finite], wg.numpy()[finite], rtol=0, atol=0)
    z = np.array([20.0, -20.0, 0.0, 3.0, -3.0, 1e4, -1e4, 36.0, 2.0])
    t = np.array([1.0, 0.0, 0.5, 0.3, 0.7, 1.0, 0.0, 1.0, 0.25])
    got = np.asarray(lk.binary_cross_entropy(to(z), to(t), reduction="none"))
    want = F.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(t), reduction="none").numpy()
    _close(got[2:], want[2:], rtol=1e-8, atol=0)  # torch loses digits at z = -20, y = 0
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    exact = float(mpmath.log1p(mpmath.e ** -20))  # z = 20, y = 1: 2.06e-9, full relative precision
    _close(got[0], exact, rtol=1e-15, atol=0)
    _close(got[1], exact, rtol=1e-15, atol=0)


# --- the benchmark scripts run (tiny sizes) ------------------------------------------------------


def test_benchmark_scripts_run_quick(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import numpy_parity
        import scaling
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = numpy_parity.main(["--quick"])
    assert {r[0] for r in rows} == {lk.cross_entropy.__name__, "bce"}
    out = tmp_path / "scaling.png"
    rows = scaling.main(["--quick", "--backends", "numpy,torch", "--out", str(out)])
    assert len(rows) == 8 and all(r["losskit"] > 0 and r["peer"] > 0 for r in rows)
    assert out.stat().st_size > 1000


def test_overhead_benchmark_runs_quick():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--repeats", "1", "--number", "5"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert "ratio" in out.stdout and lk.kl_divergence.__name__ in out.stdout
