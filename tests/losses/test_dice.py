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
    v, g = lk.dice.value_and_grad(z, t, mask=mask, **o)
    np.testing.assert_allclose(v, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-9, atol=1e-15)
    # and the torch hook's backward is the same closed form
    z2 = torch.tensor(z, requires_grad=True)
    lk.dice(z2, torch.tensor(t), mask=torch.tensor(mask), **o).backward()
    np.testing.assert_allclose(z2.grad.numpy(), g, rtol=1e-12, atol=1e-18)


def test_weights_scale_each_pixel_in_every_sum(rng):
    """Integer weights equal repeating pixels."""
    z, t, _ = _inputs(rng, (1, 1, 2, 3))
    w = np.array([[[[1.0, 2.0, 1.0], [3.0, 1.0, 2.0]]]])
    rep = np.repeat(z.reshape(-1), w.reshape(-1).astype(int)), np.repeat(t.reshape(-1), w.reshape(-1).astype(int))
    np.testing.assert_allclose(lk.dice(z, t, weight=w), lk.dice(rep[0][None], rep[1][None]), rtol=1e-13)


def test_sets_and_reductions(rng):
    z, t, _ = _inputs(rng)
    per_image = lk.dice(z, t, per_image=True, reduction="none")
    assert per_image.shape == (3,)
    for i in range(3):
        np.testing.assert_allclose(per_image[i], lk.dice(z[i : i + 1], t[i : i + 1]), rtol=1e-13)
    np.testing.assert_allclose(lk.dice(z, t, per_image=True), per_image.mean(), rtol=1e-13)
    np.testing.assert_allclose(lk.dice(z, t, per_image=True, reduction="sum"), per_image.sum(), rtol=1e-13)
    np.testing.assert_allclose(lk.dice(z, t, per_image=True, normalizer=4.0), per_image.sum() / 4, rtol=1e-13)
    assert lk.dice(z, t, reduction="none").shape == ()


def test_empty_selection_and_absent_foreground_are_zero(rng):
    z, t, _ = _inputs(rng)
    for kw in ({"mask": np.zeros(z.shape, bool)}, {}):
        tt = t if kw else np.zeros_like(t)
        v, g = lk.dice.value_and_grad(z, tt, **kw)
        assert v == 0 and np.all(g == 0)


def test_bad_inputs():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="`mode` must be one of \\('binary',\\)"):
        lk.dice(z, z, mode="multiclass")
    with pytest.raises(ValueError, match="`target` must hold probabilities"):
        lk.dice(z, z + 2)
    with pytest.raises(ValueError, match="`logits` and `target` must have the same shape"):
        lk.dice(z, np.zeros(3))
    with pytest.raises(ValueError, match="`weight` must have the shape"):
        lk.dice(z, z, weight=np.ones(2))
    with pytest.raises(NotImplementedError, match="dice has no closed-form Hessian"):
        lk.dice.grad_hess(z, z)


def test_hooks(rng):
    z, t, mask = _inputs(rng, (2, 1, 3, 4))
    x = torch.tensor(z, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: lk.dice(a, torch.tensor(t), mask=torch.tensor(mask), per_image=True, reduction="none"), (x,))
    assert torch.autograd.gradgradcheck(lambda a: lk.dice(a, torch.tensor(t), smooth=0.5), (x,))
    jax = pytest.importorskip("jax")
    g = jax.grad(lambda a: lk.dice(a, t, mask=mask, log_loss=True))(jax.numpy.asarray(z))
    np.testing.assert_allclose(np.asarray(g), lk.dice.grad(z, t, mask=mask, log_loss=True), rtol=1e-10, atol=1e-16)
    jitted = jax.jit(lambda a: lk.dice(a, t, per_image=True, reduction="none"))(jax.numpy.asarray(z))
    np.testing.assert_allclose(np.asarray(jitted), lk.dice(z, t, per_image=True, reduction="none"), rtol=1e-12)
