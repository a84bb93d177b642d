"""multi_margin's own behaviour: with class_weight, "mean" divides by the sum of w[y] (as
cross_entropy does) where torch divides by N: the documented difference, spelled out."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk


@pytest.mark.parametrize("p", [1, 2])
def test_class_weight_mean_divides_by_the_weight_sum(p, rng):
    torch = pytest.importorskip("torch")
    z, y = rng.standard_normal((8, 4)), rng.integers(0, 4, 8)
    cw = np.array([0.5, 1.0, 2.0, 4.0])
    total = torch.nn.functional.multi_margin_loss(torch.tensor(z), torch.tensor(y), p=p, weight=torch.tensor(cw), reduction="sum").item()
    np.testing.assert_allclose(lk.multi_margin(z, y, p=p, class_weight=cw), total / cw[y].sum(), rtol=1e-12)
    torch_mean = torch.nn.functional.multi_margin_loss(torch.tensor(z), torch.tensor(y), p=p, weight=torch.tensor(cw)).item()
    np.testing.assert_allclose(torch_mean, total / len(y), rtol=1e-12)


def test_p_must_be_one_or_two():
    with pytest.raises(ValueError, match="1 or 2"):
        lk.multi_margin(np.zeros((2, 3)), np.array([0, 1]), p=3)


def test_float_targets_need_the_logits_shape():
    with pytest.raises(TypeError, match="integer class ids"):
        lk.multi_margin(np.zeros((2, 3)), np.full((2,), 1.0))
    z = np.array([[1.0, 0.5, -1.0]])
    assert float(lk.multi_margin(z, np.array([[0.0, 1.0, 0.0]]))) == float(lk.multi_margin(z, np.array([1])))


@pytest.mark.parametrize("loss", [lk.multi_margin, lk.sparsemax_loss], ids=lambda f: f.spec.name)
@pytest.mark.parametrize("xp_name", ["numpy", "torch", "jax"])
def test_soft_labels_are_an_error_not_their_argmax(loss, xp_name):
    """A loss on a single true class must not read probabilities as their argmax: the
    one-hot form is accepted (it names one class), soft labels are rejected with the position."""
    z = np.array([[1.0, 0.5, -1.0], [0.2, -0.3, 0.9]])
    one_hot = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    soft = np.array([[0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    two_hot = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    if xp_name == "numpy":
        conv = np.asarray
    else:
        mod = pytest.importorskip(xp_name)
        conv = mod.tensor if xp_name == "torch" else pytest.importorskip("jax.numpy").asarray
    expected = float(loss(z, np.array([1, 2])))
    assert float(loss(conv(z), conv(one_hot))) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match=r"one-hot.*position \(0, 0\)"):
        loss(conv(z), conv(soft))
    with pytest.raises(ValueError, match=r"one-hot.*position \(1,\)"):
        loss(conv(z), conv(two_hot))
    # validate=False skips the check (the documented contract of validate): read as argmax.
    assert float(loss(conv(z), conv(soft), validate=False)) == pytest.approx(expected, rel=1e-12)
