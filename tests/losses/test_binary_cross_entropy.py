"""binary_cross_entropy's own behaviour: ±inf logits are sure predictions, precision against
mpmath (confident predictions keep their tiny losses), float32 block evaluation against
torch, and the messages for targets outside [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

LOGITS = [-745.0, -100.0, -40.0, -20.0, -5.0, -1e-8, 0.0, 1e-8, 3.0, 20.0, 40.0, 100.0, 700.0]


def test_infinite_logits_are_sure_predictions():
    z = np.array([np.inf, -np.inf, np.inf, -np.inf])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    v = lk.binary_cross_entropy(z, y, reduction="none")
    assert v[0] == 0 and v[1] == 0  # right and sure: no loss
    assert np.isfinite(v[2]) and v[2] > 1e300  # wrong and sure: huge but finite
    np.testing.assert_array_equal(lk.binary_cross_entropy.grad(z, y, reduction="none"), [0.0, 0.0, 1.0, -1.0])


# --- precision (mpmath references) --------------------------------------------------------------


def _bce_ref(mpmath, z, y):
    # the textbook form log(1 + e^z) − y·z, evaluated with enough digits (400) that its
    # cancellation at z = 700 still leaves 50 correct ones
    with mpmath.workdps(400):
        z, y = mpmath.mpf(z), mpmath.mpf(y)
        return +(mpmath.log1p(mpmath.exp(z)) - y * z)


@pytest.mark.parametrize("y", [0.0, 0.3, 1.0])
def test_value_and_gradient_to_full_float64_precision(y):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    sigmoid = lambda z: 1 / (1 + mpmath.exp(-mpmath.mpf(z)))  # noqa: E731
    z = np.array(LOGITS)
    t = np.full_like(z, y)
    v = lk.binary_cross_entropy(z, t, reduction="none")
    g, h = lk.binary_cross_entropy.grad_hess(z, t, reduction="none")
    for k, zk in enumerate(z):
        ref = _bce_ref(mpmath, zk, y)
        s = sigmoid(zk)
        # relative accuracy of a few ulps even for losses of 1e-300 (right, confident predictions)
        assert float(abs(v[k] - ref)) <= 4e-16 * float(abs(ref)) + 1e-300, (zk, v[k], ref)
        # σ(z) − y: exact to one ulp of 1 (the subtraction of y cancels; torch computes it alike)
        assert float(abs(g[k] - (s - y))) <= 2.3e-16, (zk, g[k])
        slope = s * sigmoid(-zk)  # not s·(1 − s): that cancels even at 50 digits for z = 700
        assert float(abs(h[k] - slope)) <= 1e-15 * float(slope) + 1e-300, (zk, h[k], slope)


def test_float32_mean_of_confident_right_predictions_keeps_its_digits():
    """A well-trained model's loss: every term tiny. softplus(z) − y·z would lose all of them
    in float32 (the terms vanish next to z); the sum of non-negative terms keeps them."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    z = np.linspace(8.0, 30.0, 1000).astype(np.float32)
    zz = np.concatenate([z, -z])
    yy = np.concatenate([np.ones_like(z), np.zeros_like(z)])
    got = float(lk.binary_cross_entropy(zz, yy))
    ref = mpmath.fsum(mpmath.log1p(mpmath.exp(-mpmath.mpf(float(v)))) for v in z) * 2 / zz.size
    assert abs(got - float(ref)) <= 1e-5 * float(ref)


def test_blocks_on_float32_match_torch(rng):
    """Large float32 batches (the block path) against torch in float64."""
    torch = pytest.importorskip("torch")
    n = 1_000_003
    z = torch.as_tensor(rng.standard_normal(n).astype(np.float32) * 3)
    y = torch.as_tensor((rng.random(n) < 0.5).astype(np.float32))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(z.double(), y.double())
    for arr_z, arr_y in ((z, y), (z.numpy(), y.numpy())):
        v, g = lk.binary_cross_entropy.value_and_grad(arr_z, arr_y)
        np.testing.assert_allclose(float(v), expected.item(), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(g), ((torch.sigmoid(z.double()) - y) / n).numpy(), rtol=1e-4, atol=1e-12)


def test_no_grad_path_returns_a_new_gradient_tensor():
    torch = pytest.importorskip("torch")
    z = torch.randn(6, 3)
    y = torch.rand(6, 3)
    z0, y0 = z.clone(), y.clone()
    with torch.no_grad():
        v = lk.binary_cross_entropy(z, y)
    assert v.grad_fn is None
    g = lk.binary_cross_entropy.grad(z, y)
    assert g.data_ptr() != z.data_ptr()
    assert torch.equal(z, z0) and torch.equal(y, y0)


# --- targets outside [0, 1] ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "y,hint",
    [(np.array([-1.0, 1.0, 1.0]), r"\(y \+ 1\) / 2"), (np.array([0, 255, 0], np.uint8), "Divide by its maximum"), (np.array([0.5, 1.2, 0.0]), "logits version")],
)
def test_targets_outside_0_1(y, hint, backend):
    zb = backend.asarray(np.zeros(3))
    with pytest.raises(ValueError, match=f"`target` must hold probabilities in \\[0, 1\\].*{hint}"):
        lk.binary_cross_entropy(zb, backend.asarray(y))
    assert np.isfinite(float(backend.to_numpy(lk.binary_cross_entropy(zb, backend.asarray(y), validate=False))))
    # masked entries are exempt
    ok = lk.binary_cross_entropy(np.zeros(3), np.array([0.0, 7.0, 1.0]), mask=np.array([True, False, True]))
    assert np.isfinite(ok)


def test_pos_weight_shape_message():
    with pytest.raises(ValueError, match="`pos_weight` must be"):
        lk.binary_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=np.ones(2))
