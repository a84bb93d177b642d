"""One test case per registered loss: how to draw valid inputs, which option sets to try, and
an independent reference built from ``torch.nn.functional`` (never from losskit's code).

Every loss in ``losskit.registry`` must have an entry here; ``test_every_loss_has_a_case``
enforces it, so the whole property suite runs on each new loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Case:
    make: Callable  # make(rng, options) -> (pred, target) as float64 NumPy arrays (target may be int ids)
    option_sets: list  # option dicts (NumPy arrays for array options)
    torch_ref: Callable  # torch_ref(pred, target, reduction, **options) -> tensor, reduction in mean/sum/none
    sample_axis_dropped: bool = False  # per-sample loss drops a class axis
    kinks: Callable | None = None  # kinks(pred, target, options) -> bool array of points too close to a kink for finite differences
    convex_min: Callable | None = None  # perfect prediction for a target, with the known minimum (value)
    extra: dict = field(default_factory=dict)


def _t(a):
    import torch

    return None if a is None else torch.as_tensor(a)


# --- regression ---------------------------------------------------------------------------


def _make_regression(rng, o, shape=(6, 4)):
    return rng.standard_normal(shape) * 2, rng.standard_normal(shape) * 2


def _ref_mse(p, y, reduction):
    import torch.nn.functional as F

    return F.mse_loss(p, y, reduction=reduction)


def _ref_mae(p, y, reduction):
    import torch.nn.functional as F

    return F.l1_loss(p, y, reduction=reduction)


def _ref_huber(p, y, reduction, delta=1.0):
    import torch.nn.functional as F

    return F.huber_loss(p, y, reduction=reduction, delta=delta)


def _kink_mae(p, y, o):
    return np.abs(p - y) < 1e-2


def _kink_huber(p, y, o):
    return np.abs(np.abs(p - y) - o.get("delta", 1.0)) < 1e-2


# --- binary -------------------------------------------------------------------------------


def _make_bce(rng, o, shape=(6, 4)):
    return rng.standard_normal(shape) * 3, rng.random(shape)


def _ref_bce(z, y, reduction, pos_weight=None):
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(z, y, reduction=reduction, pos_weight=_t(pos_weight))


def _make_bce_probs(rng, o, shape=(6, 4)):
    return rng.uniform(0.02, 0.98, shape), rng.random(shape)


def _ref_bce_probs(p, y, reduction):
    import torch.nn.functional as F

    return F.binary_cross_entropy(p, y, reduction=reduction)


# --- softmax ------------------------------------------------------------------------------


def _make_ce(rng, o, shape=(7, 5)):
    z = rng.standard_normal(shape) * 2
    axis = o.get("axis", -1)
    num_classes = shape[axis]
    if o.get("_probs"):
        t = rng.random(shape) ** 3
        return z, t / t.sum(axis=axis, keepdims=True)
    ids_shape = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    ids = rng.integers(0, num_classes, ids_shape)
    if o.get("ignore_index") is not None:
        ids = np.where(rng.random(ids_shape) < 0.3, o["ignore_index"], ids)
        ids.flat[0] = 0  # keep at least one valid sample
    return z, ids


def _ref_ce(z, y, reduction, axis=-1, ignore_index=None, class_weight=None, label_smoothing=0.0, _probs=False):
    import torch
    import torch.nn.functional as F

    z = torch.movedim(z, axis, 1) if z.ndim > 1 else z
    if _probs and z.ndim > 1:
        y = torch.movedim(y, axis, 1)
    return F.cross_entropy(
        z,
        y,
        weight=_t(class_weight),
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def _make_kl(rng, o, shape=(7, 5)):
    z = rng.standard_normal(shape) * 2
    t = rng.random(shape) ** 2
    t = t / t.sum(axis=-1, keepdims=True)
    return z, (np.log(t) if o.get("log_target") else t)


def _ref_kl(z, t, reduction, axis=-1, log_target=False):
    import torch.nn.functional as F

    per = F.kl_div(F.log_softmax(z, dim=-1), t, reduction="none", log_target=log_target).sum(-1)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / per.numel()


CASES: dict[str, Case] = {
    "mse": Case(_make_regression, [{}], _ref_mse),
    "mae": Case(_make_regression, [{}], _ref_mae, kinks=_kink_mae),
    "huber": Case(_make_regression, [{}, {"delta": 0.5}, {"delta": 2.5}], _ref_huber, kinks=_kink_huber),
    "binary_cross_entropy": Case(
        _make_bce, [{}, {"pos_weight": 3.0}, {"pos_weight": np.array([0.5, 1.0, 2.0, 4.0])}], _ref_bce
    ),
    "binary_cross_entropy_from_probs": Case(_make_bce_probs, [{}], _ref_bce_probs),
    "cross_entropy": Case(
        _make_ce,
        [
            {},
            {"label_smoothing": 0.1},
            {"class_weight": np.array([0.2, 1.0, 3.0, 0.7, 1.5])},
            {"ignore_index": -100},
            {"ignore_index": 2},
            {"class_weight": np.array([0.2, 1.0, 3.0, 0.7, 1.5]), "label_smoothing": 0.25, "ignore_index": -1},
            {"_probs": True},
            {"_probs": True, "label_smoothing": 0.2, "class_weight": np.array([0.2, 1.0, 3.0, 0.7, 1.5])},
        ],
        _ref_ce,
        sample_axis_dropped=True,
    ),
    "kl_divergence": Case(_make_kl, [{}, {"log_target": True}], _ref_kl, sample_axis_dropped=True),
}


def draw(name: str, i: int, rng):
    """(case, option set, pred, target) for option set ``i`` of loss ``name``, with points moved
    off the kinks of non-smooth losses (finite differences would straddle them)."""
    case = CASES[name]
    o = case.option_sets[i]
    pred, target = case.make(rng, o)
    if case.kinks is not None:
        pred = np.where(case.kinks(pred, target, o), pred + 0.1, pred)
    return case, o, pred, target


def losskit_options(o: dict) -> dict:
    """Options as losskit takes them (test-only keys start with an underscore)."""
    return {k: v for k, v in o.items() if not k.startswith("_")}


def case_ids():
    return [(name, i) for name, case in CASES.items() for i in range(len(case.option_sets))]


def option_id(param) -> str:
    name, i = param
    o = CASES[name].option_sets[i]
    return name + ("[" + ",".join(f"{k}" for k in o) + "]" if o else "")
