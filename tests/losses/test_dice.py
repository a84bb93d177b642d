"""dice (binary mode): the set-level kind. Values and gradients equal
segmentation_models_pytorch 0.6's DiceLoss("binary", from_logits=True), a pixel mask equals
its ignore_index (the masked pixels leave both sums), and the hooks use the closed form."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk

import importlib.util

torch = pytest.importorskip("torch")
if importlib.util.find_spec("segmentation_models_pytorch") is None:  # its __init__ needs timm: only find it
    pytest.skip("segmentation_models_pytorch is not installed", allow_module_level=True)

from losskit.losses.segmentation import _smp_losses  # noqa: E402

OPTIONS = [{}, {"smooth": 1.0}, {"log_loss": True}, {"smooth": 0.3, "eps": 1e-3}]


def _inputs(rng, shape=(3, 1, 6, 5)):
    z = rng.standard_normal(shape) * 2
    t = (rng.random(shape) < 0.3).astype(np.float64)
    mask = rng.random(shape) < 0.75
    return z, t, mask


@pytest.mark.parametrize("o", OPTIONS)
def test_mask_enters_both_sums_like_smp_ignore_index(o, rng):
    z, t, mask = _inputs(rng)
    zt = torch.tensor(z, requires_grad=True)
    ref = _smp_losses().DiceLoss("binary", from_logits=True, ignore_index=-1, **o)(zt, torch.tensor(np.where(mask, t, -1.0)))
    ref.backward()
    v, g = lk.dice.value_and_grad(z, t, mask=mask, mode="binary", **o)
    v2, g2 = lk.dice.value_and_grad(z, np.where(mask, t, -1.0), ignore_index=-1, mode="binary", **o)
    np.testing.assert_allclose(v2, v, rtol=1e-13)
    np.testing.assert_allclose(g2, g, rtol=1e-13, atol=1e-18)
    np.testing.assert_allclose(v, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-9, atol=1e-15)
    # and the torch hook's backward is the same closed form
    z2 = torch.tensor(z, requires_grad=True)
    lk.dice(z2, torch.tensor(t), mask=torch.tensor(mask), mode="binary", **o).backward()
    np.testing.assert_allclose(z2.grad.numpy(), g, rtol=1e-12, atol=1e-18)


def test_weights_scale_each_pixel_in_every_sum(rng):
    """Integer weights equal repeating pixels."""
    z, t, _ = _inputs(rng, (1, 1, 2, 3))
    w = np.array([[[[1.0, 2.0, 1.0], [3.0, 1.0, 2.0]]]])
    rep = np.repeat(z.reshape(-1), w.reshape(-1).astype(int)), np.repeat(t.reshape(-1), w.reshape(-1).astype(int))
    np.testing.assert_allclose(lk.dice(z, t, weight=w, mode="binary"), lk.dice(rep[0][None], rep[1][None], mode="binary"), rtol=1e-13)


def test_sets_and_reductions(rng):
    z, t, _ = _inputs(rng)
    B = {"mode": "binary"}
    per_image = lk.dice(z, t, per_image=True, reduction="none", **B)
    assert per_image.shape == (3,)
    for i in range(3):
        np.testing.assert_allclose(per_image[i], lk.dice(z[i : i + 1], t[i : i + 1], **B), rtol=1e-13)
    np.testing.assert_allclose(lk.dice(z, t, per_image=True, **B), per_image.mean(), rtol=1e-13)
    np.testing.assert_allclose(lk.dice(z, t, per_image=True, reduction="sum", **B), per_image.sum(), rtol=1e-13)
    with pytest.raises(ValueError, match="`normalizer` does not apply to a set-level loss: its values are per-set"):
        lk.dice(z, t, per_image=True, normalizer=4.0, **B)
    assert lk.dice(z, t, reduction="none", **B).shape == ()


def test_empty_selection_and_absent_foreground_are_zero(rng):
    z, t, _ = _inputs(rng)
    for kw in ({"mask": np.zeros(z.shape, bool)}, {}):
        tt = t if kw else np.zeros_like(t)
        v, g = lk.dice.value_and_grad(z, tt, mode="binary", **kw)
        assert v == 0 and np.all(g == 0)


def test_bad_inputs():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="`mode` must be one of \\('binary', 'multilabel', 'multiclass'\\)"):
        lk.dice(z, z, mode="softmax")
    with pytest.raises(ValueError, match="`target` must hold probabilities"):
        lk.dice(z, z + 2, mode="binary")
    with pytest.raises(ValueError, match="`logits` and `target` must have the same shape"):
        lk.dice(z, np.zeros(3), mode="binary")
    with pytest.raises(ValueError, match="`weight` must have the shape"):
        lk.dice(z, z, weight=np.ones(2), mode="binary")
    with pytest.raises(ValueError, match="class ids `target` must have the logits' shape without the class axis"):
        lk.dice(z, np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="`classes` needs mode='multiclass' or 'multilabel'"):
        lk.dice(z, z, mode="binary", classes=[0])
    with pytest.raises(ValueError, match="class id 5"):
        lk.dice(z, np.array([0, 5]))
    with pytest.raises(NotImplementedError, match="dice has no closed-form Hessian"):
        lk.dice.grad_hess(z, z, mode="binary")


def test_hooks(rng):
    z, t, mask = _inputs(rng, (2, 1, 3, 4))
    x = torch.tensor(z, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: lk.dice(a, torch.tensor(t), mask=torch.tensor(mask), per_image=True, reduction="none", mode="binary"), (x,))
    assert torch.autograd.gradgradcheck(lambda a: lk.dice(a, torch.tensor(t), smooth=0.5, mode="binary"), (x,))
    jax = pytest.importorskip("jax")
    g = jax.grad(lambda a: lk.dice(a, t, mask=mask, log_loss=True, mode="binary"))(jax.numpy.asarray(z))
    np.testing.assert_allclose(np.asarray(g), lk.dice.grad(z, t, mask=mask, log_loss=True, mode="binary"), rtol=1e-10, atol=1e-16)
    jitted = jax.jit(lambda a: lk.dice(a, t, per_image=True, reduction="none", mode="binary"))(jax.numpy.asarray(z))
    np.testing.assert_allclose(np.asarray(jitted), lk.dice(z, t, per_image=True, reduction="none", mode="binary"), rtol=1e-12)


# --- multilabel and multiclass (issue 12) -----------------------------------------------------


def _smp(cls, mode, z, t, **o):
    zt = torch.tensor(z, requires_grad=True)
    v = getattr(_smp_losses(), cls)(mode, from_logits=True, **o)(zt, torch.tensor(t))
    v.backward()
    return v.item(), zt.grad.numpy()


@pytest.mark.parametrize("cls,name", [("DiceLoss", "dice"), ("JaccardLoss", "jaccard"), ("TverskyLoss", "tversky")])
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
@pytest.mark.parametrize("o", [{}, {"smooth": 1.0, "log_loss": True}, {"ignore_index": 2}, {"classes": [0, 2]}])
def test_values_and_grads_equal_smp(cls, name, mode, o, rng):
    z = rng.standard_normal((2, 3, 5, 4)) * 2
    if mode == "multiclass":
        t = rng.integers(0, 3, (2, 5, 4))
    else:
        t = (rng.random(z.shape) < 0.3).astype(np.float64)
        if "ignore_index" in o:
            t = np.where(rng.random(z.shape) < 0.2, 2.0, t)
    ref, ref_g = _smp(cls, mode, z, t, **o)
    v, g = lk.registry[name].value_and_grad(z, t, mode=mode, **o)
    np.testing.assert_allclose(v, ref, rtol=1e-12)
    np.testing.assert_allclose(g, ref_g, rtol=1e-9, atol=1e-15)


def test_focal_tversky_equals_smp(rng):
    z = rng.standard_normal((2, 3, 5, 4)) * 2
    t = rng.integers(0, 3, (2, 5, 4))
    ref, ref_g = _smp("TverskyLoss", "multiclass", z, t, alpha=0.3, beta=0.7, gamma=4 / 3)
    v, g = lk.tversky.value_and_grad(z, t, alpha=0.3, beta=0.7, gamma=4 / 3)
    np.testing.assert_allclose(v, ref, rtol=1e-12)
    np.testing.assert_allclose(g, ref_g, rtol=1e-9, atol=1e-15)


def test_identities(rng):
    z = rng.standard_normal((2, 3, 6, 5)) * 2
    t = rng.integers(0, 3, (2, 6, 5))
    for s in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(lk.tversky(z, t, smooth=s, reduction="none"), lk.dice(z, t, smooth=s, reduction="none"), rtol=1e-13)
    # on hard predictions and masks at smooth 0: Jaccard = Dice / (2 − Dice) per class
    p = (rng.random(z.shape) < 0.4).astype(np.float64)
    logits = np.where(p > 0, 1e4, -1e4)
    m = (rng.random(z.shape) < 0.3).astype(np.float64)
    dsc = 1 - lk.dice(logits, m, mode="multilabel", reduction="none")
    jsc = 1 - lk.jaccard(logits, m, mode="multilabel", reduction="none")
    np.testing.assert_allclose(jsc, dsc / (2 - dsc), rtol=1e-12)


def test_empty_classes_and_ignored_images(rng):
    z = rng.standard_normal((2, 3, 4, 4)) * 1e4
    t = np.zeros((2, 4, 4), dtype=np.int64)  # classes 1 and 2 empty: 0 each, in the mean
    for name in ("dice", "jaccard", "tversky"):
        per = lk.registry[name](z, t, reduction="none")
        assert np.all(np.isfinite(per)) and np.all(per <= 1) and per[1] == 0 and per[2] == 0
        per_image = lk.registry[name](z, np.full((2, 4, 4), -1), ignore_index=-1, per_image=True, reduction="none")
        assert np.all(per_image == 0)
        assert np.all(lk.registry[name].grad(z, np.full((2, 4, 4), -1), ignore_index=-1) == 0)


def test_pixel_shaped_weight_and_mask_and_nan_target(rng):
    z = rng.standard_normal((2, 3, 4, 5))
    t = rng.integers(0, 3, (2, 4, 5))
    w = rng.uniform(0.5, 2.0, (2, 4, 5))
    np.testing.assert_allclose(lk.dice(z, t, weight=w), lk.dice(z, t, weight=np.broadcast_to(w[:, None], z.shape)), rtol=1e-13)
    mask = rng.random((2, 4, 5)) < 0.7
    np.testing.assert_allclose(lk.dice(z, t, mask=mask), lk.dice(z, np.where(mask, t, 7), ignore_index=7), rtol=1e-13)
    soft = (rng.random(z.shape) < 0.3).astype(np.float64)
    soft[0, 1, 0, 0] = np.nan
    v = lk.dice(z, soft, mode="multilabel", reduction="none", validate=False)
    assert np.isnan(v[1]) and not np.isnan(v[0])


@pytest.mark.parametrize("name,cls", [("dice", "DiceLoss"), ("jaccard", "JaccardLoss"), ("tversky", "TverskyLoss")])
@pytest.mark.parametrize("o", [{}, {"smooth": 0.5, "log_loss": True}, {"per_image": True}])
def test_multiclass_probability_targets_gradient(name, cls, o, rng):
    """Soft multiclass targets: the closed form equals central differences in float64 and
    torch autograd through smp (its multilabel score on the softmax), and the torch hook's
    saved-forward backward equals both."""
    z = rng.standard_normal((2, 3, 4, 3)) * 2
    e = np.exp(rng.standard_normal(z.shape))
    t = e / e.sum(axis=1, keepdims=True)
    loss = lk.registry[name]
    g = loss.grad(z, t, **o)
    h, fd = 1e-5, np.zeros_like(z)
    for i in np.ndindex(z.shape):  # 4th-order central differences
        d = np.zeros_like(z)
        d[i] = h
        fd[i] = (-loss(z + 2 * d, t, **o) + 8 * loss(z + d, t, **o) - 8 * loss(z - d, t, **o) + loss(z - 2 * d, t, **o)) / (12 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-10)
    zt = torch.tensor(z, requires_grad=True)
    smp_loss = getattr(_smp_losses(), cls)("multilabel", from_logits=False, **{k: v for k, v in o.items() if k != "per_image"})
    sets = [(zt[i : i + 1], t[i : i + 1]) for i in range(2)] if o.get("per_image") else [(zt, t)]
    ref = torch.stack([smp_loss(zs.softmax(1), torch.tensor(ts)) for zs, ts in sets]).mean()
    ref.backward()
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-9, atol=1e-14)
    x = torch.tensor(z, requires_grad=True)
    loss(x, torch.tensor(t), **o).backward()
    np.testing.assert_allclose(x.grad.numpy(), g, rtol=1e-12, atol=1e-16)


def _keras():
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend here")
    import jax

    jax.config.update("jax_enable_x64", True)
    return keras


def _probs(z, axis=1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_keras_dice_and_tversky_where_the_definitions_coincide(rng):
    """Keras 3 ``dice`` / ``tversky`` take probabilities, I = Σ t·p and ε = 1e-7 added to the
    denominator: on hard targets with every class present they equal losskit to ~1e-8 (the ε),
    Keras's ``alpha`` weighing the false negatives Σ(1 − p)·t (losskit's ``beta``)."""
    keras = _keras()
    z = rng.standard_normal((3, 1, 5, 4)) * 2
    t = (rng.random(z.shape) < 0.4).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-z))
    close = lambda ours, ref: np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-6)  # noqa: E731  (ε / denominator)
    close(lk.dice(z, t, mode="binary"), keras.losses.dice(t, p))  # the whole batch: one set
    close(lk.dice(z, t, mode="binary", per_image=True, reduction="none"), keras.losses.dice(t, p, axis=(1, 2, 3)))
    for a, b in ((0.3, 0.7), (0.8, 0.1)):
        close(lk.tversky(z, t, mode="binary", alpha=b, beta=a), keras.losses.tversky(t, p, alpha=a, beta=b))
        close(lk.tversky(z, t, mode="binary", alpha=b, beta=a, per_image=True, reduction="none"), keras.losses.tversky(t, p, alpha=a, beta=b, axis=(1, 2, 3)))
    zc = rng.standard_normal((2, 3, 6, 5)) * 2
    ids = rng.permutation(np.arange(60) % 3).reshape(2, 6, 5)  # every class present
    onehot = np.moveaxis(np.eye(3)[ids], -1, 1)
    close(lk.dice(zc, ids, reduction="none"), keras.losses.dice(onehot, _probs(zc), axis=(0, 2, 3)))  # per class
    close(lk.tversky(zc, ids, alpha=0.2, beta=0.6), np.mean(keras.losses.tversky(onehot, _probs(zc), alpha=0.6, beta=0.2, axis=(0, 2, 3))))


def test_keras_differs_on_soft_targets_and_absent_classes():
    keras = _keras()
    half = np.full((1, 1, 2, 2), 0.5)  # p = t = 0.5: a perfect soft prediction
    assert lk.dice(np.zeros(half.shape), half, mode="binary") == 0.0  # I = Σ min(p, t)
    np.testing.assert_allclose(np.asarray(keras.losses.dice(half, half)), 0.5, rtol=1e-6)  # I = Σ p·t
    z = np.array([[[[2.0, -1.0]], [[-3.0, 1.0]]]])  # class 1 has no target pixel
    t = np.zeros((1, 1, 1, 2))
    p = 1.0 / (1.0 + np.exp(-z))
    assert lk.dice(z, np.concatenate([1 - t, t], axis=1), mode="multilabel", reduction="none")[1] == 0.0
    np.testing.assert_allclose(np.asarray(keras.losses.dice(np.concatenate([1 - t, t], axis=1), p, axis=(0, 2, 3)))[1], 1.0)
