"""Set-level segmentation losses: Dice, Jaccard and Tversky (a score that is a ratio of sums
over a set of pixels; the kernel is ``_overlap.overlap_kernel``, ``_kinds`` does the rest).

Modes as in segmentation_models_pytorch: ``binary`` (sigmoid, a target of the logits' shape),
``multilabel`` (sigmoid per class), ``multiclass`` (softmax over ``axis``; integer ids of the
logits' shape without the class axis, or probabilities of the logits' shape).
"""

from __future__ import annotations

import numpy as np

from .._loss import SET, Checks, Option, Peer, declare
from . import _overlap


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



def _smp_peer(cls, z, t, reduction, mode="multiclass", axis=1, smooth=0.0, eps=1e-7, log_loss=False, per_image=False,
              ignore_index=None, classes=None, alpha=0.5, beta=0.5, gamma=1.0, **_):
    """smp's loss per set and class: one call per image (``per_image``) and per class
    (``classes=[c]``); with ``gamma`` ≠ 1 one call per set on all the selected classes."""
    import torch

    losses = _smp_losses()
    extra = {"alpha": alpha, "beta": beta, "gamma": gamma} if cls == "TverskyLoss" else {}
    z, t = torch.as_tensor(z), torch.as_tensor(t)
    if mode != "binary" and axis not in (1, -z.ndim + 1):
        z = torch.movedim(z, axis, 1)
        t = torch.movedim(t, axis, 1) if t.is_floating_point() else t
    if mode == "multiclass" and t.is_floating_point():  # soft targets: smp's multilabel score on the softmax
        mode, z, from_logits = "multilabel", z.softmax(1), False
    else:
        from_logits = True
    if mode == "binary" and z.ndim == 1:
        z, t = z[None], t[None]

    def one(zi, ti, sel):
        loss = getattr(losses, cls)(mode, classes=sel, from_logits=from_logits, smooth=smooth, eps=eps, log_loss=log_loss, ignore_index=ignore_index, **extra)
        return loss(zi, ti)

    def per_set(zi, ti):
        if mode == "binary":
            return one(zi, ti, None)
        if gamma != 1.0:
            return one(zi, ti, None if classes is None else list(classes))
        ids = range(z.shape[1]) if classes is None else classes
        return torch.stack([one(zi, ti, [c]) for c in ids])

    if per_image:
        values = torch.stack([per_set(z[i : i + 1], t[i : i + 1]) for i in range(z.shape[0])])
    else:
        values = per_set(z, t)
    return {"none": values, "sum": values.sum(), "mean": values.mean()}[reduction].detach().numpy()


def _peer(cls):
    return lambda z, t, reduction="mean", **o: _smp_peer(cls, z, t, reduction, **o)


def _sample(rng, shape, o):
    z = rng.standard_normal(shape) * 2
    mode = o.get("mode", "multiclass")
    if mode == "multiclass" and o.get("_probs"):  # probability targets along the class axis
        axis = o.get("axis", 1) % len(shape)
        e = np.exp(rng.standard_normal(shape) * 1.5)
        return z, e / e.sum(axis=axis, keepdims=True)
    if mode == "multiclass":
        axis = o.get("axis", 1) % len(shape)
        pixel = shape[:axis] + shape[axis + 1 :]
        t = rng.integers(0, shape[axis], pixel)
        if o.get("ignore_index") is not None:
            t = np.where(rng.random(pixel) < 0.2, o["ignore_index"], t)
        return z, t
    t = (rng.random(shape) < 0.4).astype(np.float64)
    if o.get("ignore_index") is not None:
        t = np.where(rng.random(shape) < 0.2, float(o["ignore_index"]), t)
    return z, t


def _edges(o):
    z = np.array([[[1e4, -1e4], [30.0, -30.0]], [[0.0, 1e4], [-1e4, 2.0]]])[:, :, :, None] * np.ones((1, 1, 1, 3))
    mode = o.get("mode", "multiclass")
    axis = o.get("axis", 1) % z.ndim
    if mode == "multiclass" and o.get("_probs"):  # one sure, one uniform, one two-way target
        t = np.moveaxis(np.zeros(z.shape), axis, -1)
        t[..., 0], t[0, ..., :] = 1.0, 1.0 / t.shape[-1]
        t[1, 0, 0] = np.eye(t.shape[-1])[-1]
        return z, np.moveaxis(t, -1, axis)
    if mode == "multiclass":
        pixel = z.shape[:axis] + z.shape[axis + 1 :]
        return z, np.arange(np.prod(pixel)).reshape(pixel) % 3 % z.shape[axis]
    return z, (np.arange(z.size).reshape(z.shape) % 3 == 0).astype(np.float64)


_SHARED_OPTIONS = {
    "mode": Option("multiclass", "choice", choices=_overlap.MODES, doc="binary / multilabel (sigmoid), multiclass (softmax over `axis`)"),
    "axis": Option(1, "int", doc="the class axis (multilabel, multiclass)"),
    "smooth": Option(0.0, "number", low=0.0, doc="added to numerator and denominator (as in smp)"),
    "eps": Option(1e-7, "number", low=0.0, low_open=True, doc="lower clamp of the denominator (and of the score with log_loss)"),
    "log_loss": Option(False, "bool", doc="−log(score) instead of 1 − score"),
    "ignore_index": Option(None, "int", doc="target value whose pixels leave every sum (numerator and denominator)"),
    "classes": Option(None, "any", doc="class ids whose losses are averaged (default: all)"),
    "per_image": Option(False, "bool", doc="one set per image (first axis) and class instead of one per class for the batch"),
}
_OPTION_SETS = (
    {},
    {"mode": "binary"},
    {"mode": "multilabel", "smooth": 1.0},
    {"log_loss": True, "per_image": True},
    {"ignore_index": -1, "smooth": 0.5},
    {"mode": "multilabel", "per_image": True, "smooth": 0.2},
    {"classes": [1], "mode": "multilabel"},
    {"_probs": True},
    {"_probs": True, "per_image": True, "smooth": 0.5, "axis": -1},
)
_SETS_TEXT = """
        The sums run over a set of pixels, per class: the whole batch (smp's and nnU-Net's
        "batch Dice"), or each image with ``per_image=True``. ``reduction="none"`` returns the
        per-class losses (shape (C,), (N, C) per image; binary mode: (), (N,)), ``"mean"`` their
        mean, ``"sum"`` their sum; ``classes=[...]`` keeps the listed classes. **Empty classes:**
        a class without target pixel in the set contributes 0 and stays in the mean (as in smp),
        so the loss is never NaN and never above 1 without ``log_loss``. ``ignore_index`` and
        ``mask`` remove pixels from every sum with zero gradient (smp #852); ``weight``
        multiplies each pixel's share of every sum. ``weight``/``mask`` have the logits' shape,
        or (multilabel, multiclass) the pixel shape, broadcast over the classes. Integer
        targets are never expanded to a float one-hot. ``normalizer`` is an error: the values
        are per-set ratios, there is no per-sample count to replace. The Hessian is not
        provided (``grad_hess`` raises). The intersection is I = Σ min(p, t) (smp 0.6:
        (Σp + Σt − Σ|p − t|)/2), whose derivative is ½ at a tie p = t; with integer class
        ids it is I = Σ p·[t = c] with derivative [t = c] (smp's ½ at a saturated p = 1
        changes the logits' gradient only by terms times the other classes' probabilities,
        which are below the rounding unit there). On torch the backward reuses the
        forward's sums and probabilities."""


def _declare(name, cls, title, formula, kernel, extra_options=None, extra_sets=(), details="", example=""):
    options = dict(_SHARED_OPTIONS, **(extra_options or {}))
    return declare(
        name=name,
        family="segmentation",
        kind=SET,
        title=title,
        formula=formula,
        gradient=r"\partial_{z} \ell = \text{the chain rule through } \partial s/\partial I,\ \partial s/\partial P \text{ and the softmax/sigmoid (closed form)}",
        hessian=r"\text{not provided}",
        hessian_kind="none",
        domain="logits real (±inf in sigmoid modes); targets in [0, 1] or class ids; smooth >= 0; eps > 0",
        reference='Milletari, Navab & Ahmadi, "V-Net", 3DV 2016; Salehi, Erdogmus & Gholipour, "Tversky loss function for image segmentation", MLMI 2017; Abraham & Khan, "A novel focal Tversky loss", ISBI 2019',
        use_when="Segmentation with small or rare foreground classes, where a per-pixel loss is dominated by the background.",
        details=details + _SETS_TEXT + f"""

        Equals ``segmentation_models_pytorch.losses.{cls}(mode, classes, log_loss,
        from_logits=True, smooth, ignore_index, eps)`` (version 0.6) in every mode.""",
        example=example,
        set_kernel=kernel,
        prepare=_overlap.prepare,
        check=_overlap.check_modes,
        inputs=("logits",),
        options=options,
        check_values=_overlap.check_values,
        checks=Checks(
            sample=_sample,
            shape=(3, 2, 4, 5),
            option_sets=_OPTION_SETS + tuple(extra_sets),
            edges=_edges,
            kinks=lambda z, t, **o: np.zeros(z.shape, dtype=bool),
            peers=(Peer(f"segmentation_models_pytorch.losses.{cls}(mode, from_logits=True)", _peer(cls), requires="segmentation_models_pytorch", options=tuple(options)),),
        ),
    )


dice = _declare(
    "dice",
    "DiceLoss",
    "Soft Dice loss on logits (binary, multilabel, multiclass).",
    r"\ell_c = 1 - \frac{2 I_c + 2s}{\max(\sum p_c + \sum t_c + 2s,\ 2\epsilon)},\ I_c = \sum \min(p_c, t_c)",
    lambda z, t, w, valid, o, xp: _overlap.overlap_kernel(z, t, w, valid, o, xp, 0.5, 0.5),
    details="""
        Tversky with α = β = ½: score (2I + 2s)/(Σp + Σt + 2s); loss 1 − score, or
        −log max(score, eps) with ``log_loss``. The default mode is ``"multiclass"`` (as in
        the issue and smp's usual use); pass ``mode="binary"`` for one sigmoid channel.
""",
    example="""
        >>> import numpy as np, losskit as lk
        >>> z = np.array([[2.0, -1.0], [0.5, -3.0]])
        >>> t = np.array([[1.0, 0.0], [1.0, 0.0]])
        >>> round(float(lk.dice(z, t, mode="binary")), 6)
        0.212877
        >>> z = np.array([[[2.0, -1.0]], [[0.0, 1.0]]])[None]  # N=1, C=2, H=1, W=2
        >>> round(float(lk.dice(z, np.array([[[0, 1]]]))), 6)
        0.119203
""",
)

jaccard = _declare(
    "jaccard",
    "JaccardLoss",
    "Soft Jaccard (IoU) loss on logits (binary, multilabel, multiclass).",
    r"\ell_c = 1 - \frac{I_c + s}{\max(\sum p_c + \sum t_c - I_c + s,\ \epsilon)},\ I_c = \sum \min(p_c, t_c)",
    lambda z, t, w, valid, o, xp: _overlap.overlap_kernel(z, t, w, valid, o, xp, 1.0, 1.0),
    details="""
        Tversky with α = β = 1; on hard masks at smooth 0, Jaccard = Dice / (2 − Dice) per class.
""",
    example="""
        >>> import numpy as np, losskit as lk
        >>> z = np.array([[2.0, -1.0], [0.5, -3.0]])
        >>> t = np.array([[1.0, 0.0], [1.0, 0.0]])
        >>> round(float(lk.jaccard(z, t, mode="binary")), 6)
        0.351028
""",
)


def _tversky_kernel(z, t, w, valid, o, xp):
    return _overlap.overlap_kernel(z, t, w, valid, o, xp, o["alpha"], o["beta"])


tversky = _declare(
    "tversky",
    "TverskyLoss",
    "Tversky and focal Tversky loss on logits (binary, multilabel, multiclass).",
    r"\ell = \Big(\operatorname{mean}_c \Big[1 - \frac{I_c + s}{\max(I_c + \alpha FP_c + \beta FN_c + s,\ \epsilon)}\Big]\Big)^{\gamma}",
    _tversky_kernel,
    extra_options={
        "alpha": Option(0.5, "number", low=0.0, doc="weight of the false positives FP = Σp − I"),
        "beta": Option(0.5, "number", low=0.0, doc="weight of the false negatives FN = Σt − I"),
        "gamma": Option(1.0, "number", low=0.0, low_open=True, doc="focal exponent, applied to the class mean (as smp)"),
    },
    extra_sets=({"alpha": 0.3, "beta": 0.7}, {"alpha": 0.7, "beta": 0.3, "gamma": 1.5, "mode": "multilabel"}, {"gamma": 0.75, "per_image": True}),
    details="""
        FP = Σp − I and FN = Σt − I. α = β = ½ is Dice, α = β = 1 Jaccard. With ``gamma`` ≠ 1
        (focal Tversky) the exponent applies to the mean over the selected classes, as smp
        does: each set (the batch, or each image with ``per_image``) then has one value, and
        ``reduction="none"`` returns it; its derivative is taken as 0 where that mean is 0.
""",
    example="""
        >>> import numpy as np, losskit as lk
        >>> z = np.array([[2.0, -1.0], [0.5, -3.0]])
        >>> t = np.array([[1.0, 0.0], [1.0, 0.0]])
        >>> round(float(lk.tversky(z, t, mode="binary", alpha=0.3, beta=0.7)), 6)
        0.22747
""",
)
