"""Set-level segmentation losses: a score that is a ratio of sums over a set of pixels.

The kernel sees per-pixel weights and masks (they enter every sum) and returns the per-set
values with their vector-Jacobian product; ``_kinds`` does the rest.
"""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import sigmoid_and_slope
from .._loss import SET, Checks, Option, Peer, declare


def _set_sum(x, o, xp):
    """Sum over each set: every pixel (one set), or every pixel of an image (``per_image``)."""
    if o["per_image"] and x.ndim > 1:
        return xp.sum(xp.reshape(x, (x.shape[0], -1)), axis=1)
    return xp.sum(x)


def _per_pixel(v, x, o):
    """A per-set quantity broadcast back over the pixels of ``x``."""
    if o["per_image"] and x.ndim > 1:
        return v[(...,) + (None,) * (x.ndim - 1)]
    return v


def _dice_kernel(z, t, w, valid, o, xp):
    """Binary Dice on sigmoid(z): per set, score = (2I + 2s) / (Σp + Σt + 2s) with
    I = Σ min(p, t), the denominator clamped below by eps; loss 1 − score (or
    −log max(score, eps)), 0 for a set without positive target pixels (as in smp)."""
    p, slope = sigmoid_and_slope(z, xp=xp)
    scale = xp.ones_like(p) if w is None else w
    if valid is not None:
        scale = xp.where(valid, scale, xp.zeros_like(scale))
    s, eps = o["smooth"], o["eps"]
    inter = _set_sum(scale * xp.minimum(p, t), o, xp)
    sum_p, sum_t = _set_sum(scale * p, o, xp), _set_sum(scale * t, o, xp)
    den = 0.5 * (sum_p + sum_t) + s
    den_c = xp.maximum(den, eps)
    score = (inter + s) / den_c
    present = sum_t > 0
    if o["log_loss"]:
        values = -xp.log(xp.maximum(score, eps))
        d_score = xp.where(score > eps, -1.0 / xp.where(score > eps, score, xp.ones_like(score)), xp.zeros_like(score))
    else:
        values = 1.0 - score
        d_score = -xp.ones_like(score)
    values = xp.where(present, values, xp.zeros_like(values))

    def vjp(upstream):
        coef = xp.where(present, upstream * d_score, xp.zeros_like(d_score))
        d_inter = coef / den_c
        d_sum_p = xp.where(den > eps, -coef * (inter + s) * 0.5 / (den_c * den_c), xp.zeros_like(coef))
        # d min(p, t) / dp: 1 below the target, 0 above, ½ at a tie
        d_min = xp.where(p < t, xp.ones_like(p), xp.where(p > t, xp.zeros_like(p), 0.5 * xp.ones_like(p)))
        d_p = _per_pixel(d_inter, z, o) * d_min + _per_pixel(d_sum_p, z, o)
        return d_p * scale * slope

    return values, vjp


def _dice_check_values(z, t, o, xp, loss, valid):
    _validate.check_probabilities(t, "target", loss, xp, valid)


def _sample_dice(rng, shape, o):
    return rng.standard_normal(shape) * 2, (rng.random(shape) < 0.4).astype(np.float64)


def _edges_dice(o):
    z = np.array([[[1e4, -1e4], [np.inf, -np.inf]], [[0.0, 30.0], [-30.0, 2.0]]])
    return z, np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])


def _smp_losses():
    """segmentation_models_pytorch's ``losses`` subpackage, loaded on its own: the package's
    ``__init__`` imports timm and torchvision, the losses need only torch."""
    import importlib.util
    import pathlib
    import sys

    name = "_losskit_peer_smp_losses"
    if name not in sys.modules:
        root = pathlib.Path(importlib.util.find_spec("segmentation_models_pytorch").submodule_search_locations[0]) / "losses"
        spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _smp_dice(z, t, reduction, mode="binary", smooth=0.0, eps=1e-7, log_loss=False, per_image=False, ignore_index=None, target_for_ignore=None):
    import torch

    loss = _smp_losses().DiceLoss(mode, from_logits=True, smooth=smooth, eps=eps, log_loss=log_loss, ignore_index=ignore_index)
    z, t = torch.as_tensor(z), torch.as_tensor(t)
    if z.ndim == 1:
        z, t = z[None], t[None]
    if per_image:
        values = torch.stack([loss(z[i : i + 1], t[i : i + 1]) for i in range(z.shape[0])])
    else:
        values = loss(z, t).reshape(())
    return {"none": values, "sum": values.sum(), "mean": values.mean()}[reduction].numpy()


dice = declare(
    name="dice",
    family="segmentation",
    kind=SET,
    title="Soft Dice loss on logits (binary mode).",
    formula=r"\ell = 1 - \frac{2 I + 2s}{\max(\sum_i p_i + \sum_i t_i + 2s,\ 2\epsilon)},\ I = \sum_i \min(p_i, t_i),\ p = \sigma(z)",
    gradient=r"\partial_{z_i} \ell = -\Big(\frac{\mathbb{1}[p_i < t_i]}{D} - \frac{I + s}{2 D^2}\Big)\, p_i (1 - p_i),\ D = \tfrac12(\textstyle\sum p + \sum t) + s",
    hessian=r"\text{not provided}",
    hessian_kind="none",
    domain="logits real or ±inf; targets in [0, 1] of the logits' shape; smooth >= 0; eps > 0",
    reference='Milletari, Navab & Ahmadi, "V-Net", 3DV 2016; Sudre et al., "Generalised Dice overlap as a deep learning loss function", DLMIA 2017',
    use_when="Binary segmentation with a small foreground, where a per-pixel loss is dominated by the background.",
    details="""
        A ratio of sums over a set of pixels, not a sum of per-pixel terms: ``weight`` and
        ``mask`` have the logits' shape and enter every sum (a masked pixel is in neither
        Σp nor Σt). The set is every pixel of the batch, or each image with
        ``per_image=True``; ``reduction="none"`` returns the per-set values, ``"mean"`` their
        mean. A set without positive target pixels contributes 0 (Dice is undefined there),
        and an empty selection gives 0 with zero gradient. With ``log_loss=True`` the loss is
        −log max(score, eps).

        Equals ``segmentation_models_pytorch.losses.DiceLoss("binary", from_logits=True)``
        (version 0.6, I = (Σp + Σt − Σ|p − t|)/2 = Σ min(p, t)), whose ``ignore_index`` is
        losskit's ``mask``. Only ``mode="binary"`` is available in this version.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> z = np.array([[2.0, -1.0], [0.5, -3.0]])
        >>> t = np.array([[1.0, 0.0], [1.0, 0.0]])
        >>> round(float(lk.dice(z, t)), 6)
        0.212877
    """,
    set_kernel=_dice_kernel,
    inputs=("logits",),
    options={
        "mode": Option("binary", "choice", choices=("binary",), doc="binary: sigmoid of the logits against a target of their shape"),
        "smooth": Option(0.0, "number", low=0.0, doc="added to numerator and denominator (as in smp)"),
        "eps": Option(1e-7, "number", low=0.0, low_open=True, doc="lower clamp of the denominator (and of the score with log_loss)"),
        "log_loss": Option(False, "bool", doc="−log(score) instead of 1 − score"),
        "per_image": Option(False, "bool", doc="one set per image (first axis) instead of one for the batch"),
    },
    check_values=_dice_check_values,
    checks=Checks(
        sample=_sample_dice,
        shape=(3, 2, 4, 5),
        option_sets=({}, {"smooth": 1.0}, {"log_loss": True}, {"per_image": True, "smooth": 0.5}),
        edges=_edges_dice,
        kinks=lambda z, t, **o: np.zeros(z.shape, dtype=bool),
        peers=(
            Peer(
                "segmentation_models_pytorch.losses.DiceLoss('binary', from_logits=True)",
                _smp_dice,
                requires="segmentation_models_pytorch",
                options=("mode", "smooth", "eps", "log_loss", "per_image"),
            ),
        ),
    ),
)
