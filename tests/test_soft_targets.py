"""Soft targets are validated (``validate=True``): probabilities in [0, 1], rows of a class-axis
target summing to 1 within √ε of the target's dtype, log-probabilities <= 0 for
``log_target=True``; the message names ``target`` and suggests the likely mix-up. Also the
other target-shape messages of the classification losses."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk


@pytest.fixture
def z(rng):
    return rng.standard_normal((4, 3))


def _probs(rng, shape=(4, 3)):
    t = rng.random(shape) + 0.1
    return t / t.sum(-1, keepdims=True)


@pytest.mark.parametrize("y,hint", [(np.array([-1.0, 1.0, 1.0]), r"\(y \+ 1\) / 2"), (np.array([0, 255, 0], np.uint8), "Divide by its maximum"), (np.array([0.5, 1.2, 0.0]), "logits version")])
def test_binary_targets_outside_0_1(y, hint, backend):
    zb = backend.asarray(np.zeros(3))
    with pytest.raises(ValueError, match=f"`target` must hold probabilities in \\[0, 1\\].*{hint}"):
        lk.binary_cross_entropy(zb, backend.asarray(y))
    assert np.isfinite(float(backend.to_numpy(lk.binary_cross_entropy(zb, backend.asarray(y), validate=False))))
    # masked entries are exempt
    ok = lk.binary_cross_entropy(np.zeros(3), np.array([0.0, 7.0, 1.0]), mask=np.array([True, False, True]))
    assert np.isfinite(ok)


def test_kl_target_form_mix_ups(z, rng, backend):
    t = _probs(rng)
    zb = backend.asarray(z)
    with pytest.raises(ValueError, match="found -.* It looks like log-probabilities: pass log_target=True"):
        lk.kl_divergence(zb, backend.asarray(np.log(t)))
    with pytest.raises(ValueError, match="`target` must hold log-probabilities.*pass log_target=False"):
        lk.kl_divergence(zb, backend.asarray(t), log_target=True)
    with pytest.raises(ValueError, match=r"row of `target` must be a distribution.*sums to 0.5"):
        lk.kl_divergence(zb, backend.asarray(0.5 * t))
    with pytest.raises(ValueError, match=r"exp summing to 1"):
        lk.kl_divergence(zb, backend.asarray(np.log(t) - 0.5), log_target=True)
    # both right forms are accepted and agree; a negative KL is impossible
    a = backend.to_numpy(lk.kl_divergence(zb, backend.asarray(t)))
    b = backend.to_numpy(lk.kl_divergence(zb, backend.asarray(np.log(t)), log_target=True))
    np.testing.assert_allclose(a, b, rtol=1e-10)
    assert a >= 0


def test_cross_entropy_soft_targets(z, rng, backend):
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
    lk.kl_divergence(z, torch.as_tensor(t, dtype=torch.float32))
    with pytest.raises(ValueError, match="sums to"):
        lk.kl_divergence(z.double(), torch.as_tensor(t * (1 + 1e-6)))


def test_float_class_ids_and_empty_class_axis(z):
    with pytest.raises(ValueError, match="class ids must be integers; probabilities need the logits' shape"):
        lk.cross_entropy(z, np.array([0.0, 1.0, 2.0, 1.0], dtype=np.float32))
    for loss, t in ((lk.cross_entropy, np.zeros((4, 0))), (lk.cross_entropy, np.zeros(4, dtype=int)), (lk.kl_divergence, np.zeros((4, 0)))):
        with pytest.raises(ValueError, match="`logits` has no classes"):
            loss(np.zeros((4, 0)), t)


def test_class_weight_rule(z):
    """Class weights must be finite and >= 0 (validate=True); with validate=False a weight
    enters only where its class does, identically on every path."""
    torch = pytest.importorskip("torch")
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


def test_perfect_probability_predictions_cost_exactly_zero():
    p = np.array([0.0, 1.0, 0.0, 1.0], dtype=np.float32)
    assert np.all(lk.binary_cross_entropy_from_probs(p, p, reduction="none") == 0)
    assert lk.binary_cross_entropy_from_probs(p.astype(np.float64), p.astype(np.float64)) == 0
