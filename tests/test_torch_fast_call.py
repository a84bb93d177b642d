"""The per-signature fast call of ``Loss.__call__`` on torch (``interop.torch.fast_value``,
issue 16): two tensors, no options, weight, mask or normalizer, autograd recording ``pred``.

Each condition that selects it is tested on both sides, and each side against torch's own
function in float64 (value and gradient): whether the fast call runs is seen from the general
path's ``Loss._run`` being called or not. Bad inputs on the fast call raise exactly the
message of the general path (the first call of a signature, which takes it)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import losskit as lk  # noqa: E402
from losskit import _loss  # noqa: E402
from losskit.interop import torch as bridge  # noqa: E402


# the losses of goal 1 by name (read from the objects: test modules hold no loss names as strings)
MSE, HUBER, BCE, CE, KL = (f.__name__ for f in (lk.mse, lk.huber, lk.binary_cross_entropy, lk.cross_entropy, lk.kl_divergence))


def _peer(name, z, y, reduction="mean"):
    if name == MSE:
        return F.mse_loss(z, y, reduction=reduction)
    if name == HUBER:
        return F.huber_loss(z, y, reduction=reduction)
    if name == BCE:
        return F.binary_cross_entropy_with_logits(z, y, reduction=reduction)
    if name == CE:
        return F.cross_entropy(z, y, reduction=reduction)
    return F.kl_div(F.log_softmax(z, -1), y, reduction="batchmean" if reduction == "mean" else reduction)


def _inputs(name, shape=(6, 5), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).to(dtype)
    if name in (MSE, HUBER):
        y = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    elif name == BCE:
        y = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    elif name == CE:
        y = torch.randint(0, shape[-1], shape[:-1], generator=g)
    else:
        y = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64), -1).to(dtype)
    return z, y


@pytest.fixture
def general(monkeypatch):
    """Counts the calls of the general path (``Loss._run``) of every loss."""
    calls = []
    real = _loss.Loss._run

    def counted(self, *args, **kwargs):
        calls.append(self.spec.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(_loss.Loss, "_run", counted)
    return calls


def _check(name, z0, y, *, reduction="mean", rtol=None, cotangent=3.0):
    """lk(z, y) equals the peer in float64, value and gradient (through ``cotangent``)."""
    z = z0.clone().requires_grad_(True)
    out = lk.registry[name](z, y, reduction=reduction)
    (g,) = torch.autograd.grad(cotangent * out.sum(), z)
    zr = z0.detach().double().requires_grad_(True)
    yr = y.double() if y.is_floating_point() else y
    want = _peer(name, zr, yr, reduction)
    (wg,) = torch.autograd.grad(cotangent * want.sum(), zr)
    rtol = rtol or (2e-5 if z0.dtype == torch.float32 else 1e-12)
    assert out.dtype == z0.dtype and g.dtype == z0.dtype
    torch.testing.assert_close(out.double(), want, rtol=rtol, atol=rtol * 1e-3)
    torch.testing.assert_close(g.double(), wg, rtol=rtol, atol=rtol * 1e-3)
    return out


LOSSES = [MSE, HUBER, BCE, CE, KL]


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fast_call_equals_torch(name, dtype, reduction, general):
    z, y = _inputs(name, dtype=dtype)
    _check(name, z, y, reduction=reduction)  # the first call of a signature takes the general path
    del general[:]
    for seed in (1, 2):
        z, y = _inputs(name, dtype=dtype, seed=seed)
        out = _check(name, z, y, reduction=reduction)
        # cross_entropy's (N, C) call is torch's own ops, recorded (CrossEntropyKernel.recorded)
        assert type(out.grad_fn).__name__ == ("NllLossBackward0" if name == CE else "GradInForwardLossFunctionBackward")
    assert general == [], "the fast call did not run"


@pytest.mark.parametrize("name", LOSSES)
def test_general_path_where_the_fast_call_does_not_apply(name, general):
    z, y = _inputs(name)
    _check(name, z, y)  # builds the fast call of this signature
    loss = lk.registry[name]
    # autograd not recording: no grad mode, or pred not requiring grad
    del general[:]
    with torch.no_grad():
        got = loss(z.clone().requires_grad_(True), y)
    torch.testing.assert_close(got.double(), _peer(name, z.double(), y.double() if y.is_floating_point() else y), rtol=2e-5, atol=1e-8)
    got = loss(z, y)
    assert not got.requires_grad
    assert len(general) == 2
    # a target that requires grad (soft targets): its gradient by autograd, as torch's
    if y.is_floating_point():
        del general[:]
        zt, yt = z.clone().requires_grad_(True), y.clone().requires_grad_(True)
        gz, gy = torch.autograd.grad(loss(zt, yt), (zt, yt))
        zr, yr = z.double().requires_grad_(True), y.double().requires_grad_(True)
        wz, wy = torch.autograd.grad(_peer(name, zr, yr), (zr, yr))
        torch.testing.assert_close(gz.double(), wz, rtol=2e-5, atol=1e-7)
        torch.testing.assert_close(gy.double(), wy, rtol=2e-5, atol=1e-7)
        assert general == [name]
    # reduction="none" has no fast call (a per-sample value)
    del general[:]
    for _ in range(2):
        out = loss(z.clone().requires_grad_(True), y, reduction="none")
        want = _peer(name, z.double(), y.double() if y.is_floating_point() else y, "none")
        if name == KL:
            want = want.sum(-1)
        torch.testing.assert_close(out.double(), want, rtol=2e-5, atol=1e-7)
    assert len(general) == 2


@pytest.mark.parametrize("name", [MSE, CE])
def test_size_threshold_both_sides(name, general):
    """GRAD_IN_FORWARD_MAX elements take the fast call, one row more the general path."""
    classes = 16
    rows = bridge.GRAD_IN_FORWARD_MAX // classes
    z, y = _inputs(name, shape=(4, classes))
    _check(name, z, y)
    for n, fast in ((rows, True), (rows + 1, False)):
        z, y = _inputs(name, shape=(n, classes), seed=n)
        del general[:]
        _check(name, z, y, rtol=1e-4)
        assert (general == []) == fast


def test_empty_batch_gives_zero_on_both_paths(general):
    z, y = _inputs(MSE)
    _check(MSE, z, y)
    for shape in ((0, 5), (0, 5)):
        ze = torch.zeros(shape, requires_grad=True)
        out = lk.mse(ze, torch.zeros(shape))
        (g,) = torch.autograd.grad(out, ze)
        assert out.item() == 0.0 and g.shape == shape
    assert general == []  # ndim 2, float32: the fast call, with the empty selection's c = 0
    with torch.no_grad():
        assert lk.mse(torch.zeros((0, 5), requires_grad=True), torch.zeros((0, 5))).item() == 0.0


@pytest.mark.parametrize(
    "case",
    ["half", "target_dtype", "parameter", "ndim"],
)
def test_signatures_without_a_fast_call(case, general):
    """Half precision, a float64 target for float32 logits, a tensor subclass (Parameter) and
    another ndim (a signature of its own) all equal the peer; only the last gets a fast call."""
    z, y = _inputs(MSE)
    if case == "half":
        z16, y16 = z.to(torch.bfloat16), y.to(torch.bfloat16)
        for _ in range(2):
            out = lk.mse(z16.clone().requires_grad_(True), y16)
            torch.testing.assert_close(out.double(), F.mse_loss(z16.double(), y16.double()), rtol=1e-2, atol=1e-3)
        assert len(general) == 2
    elif case == "target_dtype":
        for _ in range(2):
            _check(MSE, z, y.double())
        assert len(general) == 2
    elif case == "parameter":
        for _ in range(2):
            p = torch.nn.Parameter(z.clone())
            out = lk.mse(p, y)
            (g,) = torch.autograd.grad(out, p)
            torch.testing.assert_close(g, 2 * (z - y) / z.numel())
        assert len(general) == 2
    else:
        for seed in range(3):
            _check(MSE, *_inputs(MSE, shape=(2, 3, 4), seed=seed))
        assert len(general) == 1


def _message(fn):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    return str(info.value)


@pytest.mark.parametrize(
    "name, bad",
    [
        (MSE, "shape"),
        (MSE, "trailing_axis"),
        (BCE, "shape"),
        (BCE, "value"),
        (CE, "value"),
        (CE, "negative"),
        (CE, "shape"),
        (KL, "value"),
        (KL, "shape"),
    ],
)
def test_bad_inputs_raise_the_general_message(name, bad, general):
    loss = lk.registry[name]
    z, y = _inputs(name)
    _check(name, z, y)
    z = z.clone().requires_grad_(True)
    if bad == "shape":
        y = y[:-1]
    elif bad == "trailing_axis":
        z, y = z[:, :1], y[:, 0]
    elif name == CE:
        y = y.clone()
        y[3] = 7 if bad == "value" else -2
    else:
        y = y.clone()
        y[2, 1] = 1.5
    del general[:]
    fast = _message(lambda: loss(z, y))
    # a loss without ``prepare`` hands a shape mismatch to the general path; the rest raise here
    assert general == ([name] if loss.spec.prepare is None and bad != "value" else [])
    loss._fast.clear()  # the first call of a signature: the general path
    del general[:]
    assert _message(lambda: loss(z, y)) == fast
    assert general == [name]
    # validate=False skips the value checks on both paths (shape errors stay)
    if bad == "value" and name != CE:
        loss(z, y, validate=False)
        loss(z, y, validate=False)


def test_double_backward_through_the_fast_call(general):
    for name in LOSSES:
        z, y = _inputs(name, shape=(3, 4), dtype=torch.float64)
        _check(name, z, y)
        loss = lk.registry[name]
        del general[:]
        zz = z.clone().requires_grad_(True)
        torch.autograd.gradgradcheck(lambda a: loss(a, y), (zz,))
        # the Hessian-vector product equals the peer's autograd
        zr = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(zr, y), zr, create_graph=True)
        (hv,) = torch.autograd.grad((g * z).sum(), zr)
        zp = z.clone().requires_grad_(True)
        (gp,) = torch.autograd.grad(_peer(name, zp, y), zp, create_graph=True)
        (hp,) = torch.autograd.grad((gp * z).sum(), zp)
        torch.testing.assert_close(hv, hp, rtol=1e-10, atol=1e-12)


def test_transforms_and_compile_take_the_general_path(general):
    z, y = _inputs(MSE, shape=(4, 5))
    _check(MSE, z, y)
    zc, yc = _inputs(CE, shape=(4, 5))
    _check(CE, zc, yc)
    del general[:]
    g = torch.func.grad(lambda a: lk.mse(a, y))(z)
    torch.testing.assert_close(g, 2 * (z - y) / z.numel())
    per_row = torch.func.vmap(torch.func.grad(lambda a, t: lk.cross_entropy(a, t)))(zc, yc)
    torch.testing.assert_close(per_row, torch.softmax(zc, -1) - F.one_hot(yc, 5).float())
    assert general  # the general path ran under torch.func
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, t, b, u: lk.mse(a, t) + lk.cross_entropy(b, u), fullgraph=True, backend="eager")
    za, zb = z.clone().requires_grad_(True), zc.clone().requires_grad_(True)
    out = compiled(za, y, zb, yc)
    out.backward()
    want = F.mse_loss(z.double(), y.double()) + F.cross_entropy(zc.double(), yc)
    torch.testing.assert_close(out.double(), want, rtol=2e-5, atol=0)
    torch.testing.assert_close(za.grad, 2 * (z - y) / z.numel())
    torch.testing.assert_close(zb.grad, (torch.softmax(zc, -1) - F.one_hot(yc, 5).float()) / 4)


def test_small_inputs_never_reach_the_block_or_numpy_routes():
    """The bridge's small-input path calls ``evaluate_whole`` (``evaluate`` without its block
    and NumPy-kernel routes): it is only taken below the block threshold."""
    assert bridge.GRAD_IN_FORWARD_MAX < 4 * _loss._BLOCK["torch"]


@pytest.mark.parametrize("case", ["scalar", "mask", "weight", "soft_target_grad", "normalizer"])
def test_in_forward_gradient_scaled_in_forward_or_backward(case):
    """The small path keeps ∂ℓ/∂pred unscaled and multiplies by c·grad_out in backward when the
    multiplier is a scalar and no sample is masked; otherwise c·∂ℓ/∂pred from the forward.
    Both sides, with a cotangent other than 1, against torch's float64 autograd."""
    g = torch.Generator().manual_seed(21)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.randn(6, 5, generator=g, dtype=torch.float64)
    w = torch.rand(6, 5, generator=g, dtype=torch.float64) + 0.1
    m = torch.rand(6, 5, generator=g) > 0.3
    kw, peer = {}, lambda a, t: F.huber_loss(a, t)
    if case == "mask":
        kw = {"mask": m}
        peer = lambda a, t: (F.huber_loss(a, t, reduction="none") * m).sum() / m.sum()  # noqa: E731
    elif case == "weight":
        kw = {"weight": w}
        peer = lambda a, t: (F.huber_loss(a, t, reduction="none") * w).sum() / w.sum()  # noqa: E731
    elif case == "normalizer":
        kw = {"normalizer": 7.0}
        peer = lambda a, t: F.huber_loss(a, t, reduction="sum") / 7.0  # noqa: E731
    for _ in range(2):  # general call, then the fast call where there is one
        zz = z.clone().requires_grad_(True)
        yy = y.clone().requires_grad_(case == "soft_target_grad")
        out = lk.huber(zz, yy, **kw)
        assert type(out.grad_fn).__name__ == "GradInForwardLossFunctionBackward"
        inputs = (zz, yy) if case == "soft_target_grad" else (zz,)
        got = torch.autograd.grad(2.5 * out, inputs, retain_graph=True)
        again = torch.autograd.grad(out, inputs)  # the kept graph, cotangent 1
        zr, yr = z.clone().requires_grad_(True), y.clone().requires_grad_(case == "soft_target_grad")
        want_out = peer(zr, yr)
        want = torch.autograd.grad(2.5 * want_out, (zr, yr) if case == "soft_target_grad" else (zr,))
        torch.testing.assert_close(out, want_out, rtol=1e-12, atol=0)
        for a, b, c in zip(got, want, again):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(2.5 * c, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("size", ["small", "at_range_min"])
@pytest.mark.parametrize("case", ["good", "above_one", "negative", "nan", "masked_bad"])
def test_probability_check_small_cpu_path_both_sides(size, case, monkeypatch):
    """``check_probabilities``' written-out path (eager CPU torch, no mask, fewer than
    ``_accel.RANGE_MIN`` elements) and the general one (a mask, or RANGE_MIN elements: lowered
    here to the test's size) accept and reject the same targets with the same message; NaN
    passes (it propagates)."""
    from losskit import _accel

    if size == "at_range_min":
        monkeypatch.setattr(_accel, "RANGE_MIN", 30)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.rand(6, 5, generator=g, dtype=torch.float64)
    kw = {}
    if case == "above_one":
        y[4, 2] = 1.5
    elif case == "negative":
        y[1, 3] = -1.0
    elif case == "nan":
        y[2, 2] = float("nan")
    elif case == "masked_bad":
        y[0, 0] = 3.0
        m = torch.ones(6, 5, dtype=torch.bool)
        m[0, 0] = False
        kw = {"mask": m}
    if case in ("above_one", "negative"):
        with pytest.raises(ValueError) as small:
            lk.binary_cross_entropy(z, y)
        assert "must hold probabilities in [0, 1]" in str(small.value)
        with pytest.raises(ValueError) as general:  # a mask of ones takes the general path
            lk.binary_cross_entropy(z, y, mask=torch.ones(6, 5, dtype=torch.bool))
        assert str(small.value) == str(general.value)
        return
    out = lk.binary_cross_entropy(z, y, **kw)
    if case == "nan":
        assert torch.isnan(out)
        return
    per = F.binary_cross_entropy_with_logits(z, torch.where(torch.isfinite(y) & (y <= 1), y, 0.0), reduction="none")
    if kw:
        per = per * kw["mask"]
        torch.testing.assert_close(out, per.sum() / kw["mask"].sum(), rtol=1e-12, atol=0)
    else:
        torch.testing.assert_close(out, per.mean(), rtol=1e-12, atol=0)


def test_other_libraries_and_mixed_inputs_have_no_fast_call():
    """NumPy, and JAX with NumPy targets (converted by the general path), keep working on every
    call: only torch signatures get a fast call."""
    import numpy as np

    p, y = np.linspace(-1.0, 1.0, 6).reshape(3, 2), np.zeros((3, 2))
    for _ in range(2):
        np.testing.assert_allclose(lk.mse(p, y), np.mean(p**2), rtol=1e-12)
    jnp = pytest.importorskip("jax.numpy")
    for _ in range(2):
        np.testing.assert_allclose(float(lk.mse(jnp.asarray(p), y)), np.mean(p**2), rtol=1e-6)
    assert not any(callable(f) for key, f in lk.mse._fast.items() if key[0] is not torch.Tensor)
    with pytest.raises(TypeError, match="pass arrays of one library"):
        lk.mse(torch.tensor(p), y)
