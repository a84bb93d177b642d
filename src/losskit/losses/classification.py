"""Softmax cross-entropy over a class axis (class ids or probabilities)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import _validate
from .._array import backend, class_ids_onehot, compute_dtype, gather_classes, is_floating, is_integral
from .._loss import CLASS_AXIS, Checks, Option, Peer, check_option, declare, Prepared
from . import _softmax

# --- softmax cross-entropy ---------------------------------------------------------------


def _ce_prepare(pred, target, o, xp, validate, loss, mask=None):
    axis = _validate.normalize_axis(o["axis"], pred.ndim, loss)
    num_classes = _validate.check_classes(pred, axis, "logits", loss)
    cw = o["class_weight"]
    if cw is not None:
        if not hasattr(cw, "shape"):
            raise TypeError(f"{loss}: `class_weight` must be an array of shape ({num_classes},), got {cw!r}.")
        if tuple(cw.shape) != (num_classes,):
            raise ValueError(
                f"{loss}: `class_weight` must have shape ({num_classes},) (one weight per class), got {tuple(cw.shape)}."
            )
        cw = o["class_weight"] = xp.astype(cw, compute_dtype(pred.dtype, xp))
    if o["label_smoothing"] and o.get("smoothing_formula", "pytorch") == "megatron":
        if num_classes < 2:
            raise ValueError(f"{loss}: smoothing_formula='megatron' needs at least 2 classes, got {num_classes}.")
        if o["label_smoothing"] * num_classes / (num_classes - 1) > 1.0:
            raise ValueError(
                f"{loss}: with smoothing_formula='megatron', `label_smoothing` must be at most (C-1)/C = "
                f"{(num_classes - 1) / num_classes!r}, got {o['label_smoothing']!r}."
            )
    shape = tuple(pred.shape)
    expected = shape[:axis] + shape[axis + 1 :]
    if is_floating(target, xp):
        if tuple(target.shape) == expected and expected != shape:
            raise ValueError(
                f"{loss}: `target` of shape {expected} has dtype {target.dtype}: class ids must be integers; "
                f"probabilities need the logits' shape {shape}. Cast ids with target.astype(int64)."
            )
        if o["ignore_index"] is not None:
            raise ValueError(f"{loss}: `ignore_index` applies to integer class ids; with probability targets use `mask`.")
        prep = _softmax.prepare_dense_target(pred, target, o, xp, validate, loss, mask)
        return replace(prep, static=_PROBS)
    if not is_integral(target, xp):
        raise TypeError(f"{loss}: `target` must hold integer class ids or float probabilities, got dtype {target.dtype}.")
    if tuple(target.shape) != expected:
        hint = ""
        if tuple(target.shape) == expected + (1,):
            hint = " It has a trailing axis of size 1: pass target[..., 0]."
        elif tuple(target.shape) == shape:
            hint = " Integer ids have the shape of the logits without the class axis; one-hot targets must be float."
        raise ValueError(
            f"{loss}: integer `target` must have the shape of the logits without axis {axis}, "
            f"i.e. {expected}; got {tuple(target.shape)} for logits {shape}.{hint}"
        )
    if backend(xp) == "torch" and target.dtype != xp.int64:
        target = xp.astype(target, xp.int64)  # torch indexes with int64 only (and uint8 != -100 would wrap)
    ii = o["ignore_index"]
    valid = None if ii is None else target != ii
    checked = valid if mask is None else (mask if valid is None else valid & mask)
    # ignored and masked ids may hold anything (padding): gather at a safe id instead
    ids = target if checked is None else xp.where(checked, target, xp.zeros_like(target))
    if validate:
        _validate.check_class_ids(ids, num_classes, ii, loss, xp)
    moved = axis != pred.ndim - 1
    return Prepared(
        xp.moveaxis(pred, axis, -1) if moved else pred,
        ids,
        expected,
        valid=valid,
        denom=None if cw is None else gather_classes(cw, ids, xp),
        static=_IDS,
        axis=axis if moved else None,
    )


_IDS, _PROBS = {"target_kind": "ids"}, {"target_kind": "probs"}  # Prepared.static: read only


def _ce_alpha(o, num_classes):
    """The label-smoothing α of the PyTorch formula: ``smoothing_formula="megatron"`` (the
    true class keeps 1 − α, every other class gets α/(C − 1)) is α·C/(C − 1)."""
    a = o["label_smoothing"]
    if a and o.get("smoothing_formula", "pytorch") == "megatron":
        a = a * num_classes / (num_classes - 1)
    return a


def _ce_q(z, t, o, xp):
    """Effective per-class target weights q (see ``_softmax``). With id targets a class weight
    enters only through the samples labelled with it (and, with label smoothing, through every
    sample's α/C term): a NaN weight of an unused class changes nothing, on every path."""
    cw = o["class_weight"]
    num_classes = z.shape[-1]
    a = _ce_alpha(o, num_classes)
    if o["target_kind"] == "ids":
        q = class_ids_onehot(t, num_classes, z.dtype, xp)
        if cw is not None:
            q = q * gather_classes(cw, t, xp)[..., None]
    else:
        q = t if cw is None else t * cw
    if a:
        spread = (a / num_classes) * xp.astype(z != -xp.inf, z.dtype)
        q = (1.0 - a) * q + (spread if cw is None else spread * cw)
    return q


def _z_loss(lse, o):
    """λ·LSE² per sample (PaLM's z-loss), 0 without it."""
    zl = o.get("z_loss", 0.0)
    if not zl:
        return 0.0
    m, rest = lse
    return zl * (m + rest) * (m + rest)


def _z_loss_grad(z, lse, o, xp):
    """(gradient 2λ·LSE·p, Hessian diagonal 2λ(p² + LSE·p(1 − p))) of the z-loss."""
    zl = o.get("z_loss", 0.0)
    p = _softmax.probabilities(z, xp, lse)
    v = (lse[0] + lse[1])[..., None]
    return 2.0 * zl * v * p, 2.0 * zl * (p * p + v * p * (1.0 - p))


def _plain_ids(o) -> bool:
    """Integer ids without class weights, smoothing or z-loss: ``_softmax.ids_nll``."""
    return o["target_kind"] == "ids" and o["class_weight"] is None and not o["label_smoothing"] and not o.get("z_loss")


def _ids_nll(z, t, xp, want_grad):
    name = backend(xp)
    if name == "numpy":
        return _softmax.ids_nll_numpy(z, t, want_grad)  # in place, one N×C buffer
    if name == "jax":
        return _softmax.ids_nll_jax(z, t, want_grad)  # fewer N×C passes under XLA
    if name == "torch":
        return _softmax.ids_nll_torch(z, t, want_grad)  # fused log_softmax, few ops
    return _softmax.ids_nll(z, t, xp, want_grad)


def _ce_value(z, t, o, xp):
    if _plain_ids(o):
        return _ids_nll(z, t, xp, False)[0]
    if o["target_kind"] == "probs":
        lse = _softmax.lse_parts(z, xp)
        return _softmax.weighted_nll(z, _ce_q(z, t, o, xp), xp, lse) + _z_loss(lse, o)
    return _ce_value_ids(z, t, o, xp)


def _ce_value_ids(z, t, o, xp):
    # integer ids: gather instead of building the one-hot
    cw = o["class_weight"]
    a = _ce_alpha(o, z.shape[-1])
    m, rest = lse = _softmax.lse_parts(z, xp)
    nll = (m - xp.take_along_axis(z, t[..., None], axis=-1)[..., 0]) + rest
    if cw is not None:
        nll = nll * gather_classes(cw, t, xp)
    if a:
        per_class = _softmax._gap(z, lse)
        per_class = xp.where(z == -xp.inf, xp.zeros_like(per_class), per_class)
        smooth = xp.sum(per_class if cw is None else per_class * cw, axis=-1)
        nll = (1.0 - a) * nll + (a / z.shape[-1]) * smooth
    return nll + _z_loss(lse, o)


def _ce_grad(z, t, o, xp):
    if _plain_ids(o):
        return _ids_nll(z, t, xp, True)[1]
    return _ce_value_and_grad(z, t, o, xp)[1] if o.get("z_loss") else _softmax.weighted_nll_grad(z, _ce_q(z, t, o, xp), xp)


def _ce_hess(z, t, o, xp):
    return _ce_grad_and_hess(z, t, o, xp)[1]


def _ce_value_and_grad(z, t, o, xp):
    if _plain_ids(o):
        return _ids_nll(z, t, xp, True)
    q = _ce_q(z, t, o, xp)
    lse = _softmax.lse_parts(z, xp)
    value, grad = _softmax.weighted_nll(z, q, xp, lse), _softmax.weighted_nll_grad(z, q, xp, lse)
    if o.get("z_loss"):
        value, grad = value + _z_loss(lse, o), grad + _z_loss_grad(z, lse, o, xp)[0]
    return value, grad


def _ce_grad_and_hess(z, t, o, xp):
    q = _ce_q(z, t, o, xp)
    lse = _softmax.lse_parts(z, xp)
    p = _softmax.probabilities(z, xp, lse)
    s = xp.sum(q, axis=-1)[..., None]
    grad, hess = s * p - q, s * p * (1.0 - p)
    if o.get("z_loss"):
        zg, zh = _z_loss_grad(z, lse, o, xp)
        grad, hess = grad + zg, hess + zh
    return grad, hess


def _sample_ce(rng, shape, o):
    z = rng.standard_normal(shape) * 2
    axis = o.get("axis", -1) % len(shape)
    num_classes = shape[axis]
    if o.get("_probs"):
        t = rng.random(shape) ** 3
        return z, t / t.sum(axis=axis, keepdims=True)
    ids_shape = tuple(s for i, s in enumerate(shape) if i != axis)
    ids = rng.integers(0, num_classes, ids_shape)
    if o.get("ignore_index") is not None:
        ids = np.where(rng.random(ids_shape) < 0.3, o["ignore_index"], ids)
        ids.flat[0] = 0  # keep at least one valid sample
    return z, ids


def _edges_ce(o):
    """Five classes (the option sets' class_weight has five); rows with -inf action masks."""
    inf = np.inf
    z = np.array(
        [[1e4, -1e4, 0.0, 0.0, 0.0], [0.0, -inf, 2.0, 0.0, 1.0], [-inf, -inf, 1.0, -inf, -inf], [-1e4, 1e4, -1e4, 0.0, 0.0]]
    )
    if o.get("_probs"):
        return z, np.array([[1.0, 0, 0, 0, 0], [0.5, 0, 0.5, 0, 0], [0, 0, 1.0, 0, 0], [0.2, 0.6, 0.2, 0, 0]])
    return z, np.array([0, 2, 2, 1])


def _minimum_ce(t, o):
    """Probability targets: z = log q (the smoothed target) minimises; the minimum is the
    entropy of q. Id targets have no finite minimiser."""
    if not o.get("_probs") or o.get("class_weight") is not None or o.get("axis", -1) % t.ndim != t.ndim - 1:
        return None
    a = _ce_alpha({"label_smoothing": o.get("label_smoothing", 0.0), "smoothing_formula": o.get("smoothing_formula", "pytorch")}, t.shape[-1])
    q = (1 - a) * t + a / t.shape[-1]
    with np.errstate(divide="ignore"):
        logq = np.log(q)
    return logq, -np.sum(np.where(q > 0, q * logq, 0.0), axis=-1)


def _torch_ce(z, y, reduction, axis=-1, ignore_index=None, class_weight=None, label_smoothing=0.0):
    import torch
    import torch.nn.functional as F

    z, y = torch.as_tensor(z), torch.as_tensor(y)
    z = torch.movedim(z, axis, 1) if z.ndim > 1 else z
    if y.is_floating_point() and y.ndim > 1:
        y = torch.movedim(y, axis, 1)
    cw = None if class_weight is None else torch.as_tensor(class_weight)
    ii = -100 if ignore_index is None else ignore_index
    return F.cross_entropy(z, y, weight=cw, ignore_index=ii, reduction=reduction, label_smoothing=label_smoothing).numpy()


def _log_frequency_baseline(t, w, o, xp):
    """The optimal constant logits for probability targets: log Σ_i w_i q_i, q the smoothed,
    class-weighted target (the log of the weighted class frequencies without options)."""
    if xp.isdtype(t.dtype, "integral"):
        raise ValueError("cross_entropy.baseline needs probability targets (one-hot encode class ids first).")
    num_classes = t.shape[-1]
    a = _ce_alpha({"label_smoothing": float(o.get("label_smoothing") or 0.0), "smoothing_formula": o.get("smoothing_formula", "pytorch")}, num_classes)
    q = (1.0 - a) * t + a / num_classes if a else t
    cw = o.get("class_weight")
    if cw is not None:
        q = q * xp.astype(xp.asarray(cw), t.dtype)
    if w is not None:
        q = q * w[..., None]
    freq = xp.sum(xp.reshape(q, (-1, num_classes)), axis=0)
    return xp.log(freq / xp.sum(freq))


_TORCH_COMPILED_CALL: list = []  # interop.torch_lean.compiled_call, imported by the first torch call


def _torch_compiled_value(arrays, weight, mask, reduction, normalizer, validate, options):
    """Under torch.compile, ``cross_entropy`` on torch tensors is one opaque custom operator that
    runs the eager lean kernel (``interop.torch_lean.compiled_call``); ``NotImplemented``
    otherwise (other arrays, eager mode, what the operator does not take)."""
    if not arrays or not type(arrays[0]).__module__.startswith("torch"):
        return NotImplemented
    if not _TORCH_COMPILED_CALL:
        from ..interop import torch_lean

        _TORCH_COMPILED_CALL.append(torch_lean.compiled_call)
    return _TORCH_COMPILED_CALL[0](arrays, weight, mask, reduction, normalizer, validate, options)


_CW = np.array([0.2, 1.0, 3.0, 0.7, 1.5])

cross_entropy = declare(
    name="cross_entropy",
    value_override=_torch_compiled_value,
    family="classification",
    kind=CLASS_AXIS,
    title="Softmax cross-entropy from logits.",
    formula=r"\ell(z, y) = \operatorname{LSE}(z) - z_y = -\log \operatorname{softmax}(z)_y",
    gradient=r"\partial_z \ell = \operatorname{softmax}(z) - \operatorname{onehot}(y)",
    hessian=r"\partial_{z_k}^2 \ell = p_k (1 - p_k)",
    domain="logits real or -inf (impossible classes); integer ids in [0, C) or probabilities",
    reference=(
        "Goodfellow, Bengio & Courville, *Deep Learning* (2016), §6.2.2.3; Szegedy et al., "
        '"Rethinking the Inception Architecture for Computer Vision", CVPR 2016 (label smoothing)'
    ),
    use_when="Multi-class classification (one label per sample) from logits, hard or soft labels.",
    details="""
        ``target`` is either integer class ids (the shape of ``logits`` without ``axis``) or
        probabilities (the shape of ``logits``, rows summing to 1). Options, each equal to
        ``torch.nn.functional.cross_entropy`` (which uses ``axis=1``; losskit's default is the
        last axis):

        * ``class_weight`` (shape (C,)): per-class weights. With ids, the sample weight is
          ``class_weight[y]`` and ``"mean"`` divides by Σ class_weight[y] over valid samples;
          with probabilities, ℓ = −Σ_k w_k t_k log p_k and ``"mean"`` divides by the sample
          count.
        * ``label_smoothing`` = α (PyTorch's formula): the target becomes (1 − α)·onehot + α/C.
          Classes whose logit is −inf (action masks) are left out of the α/C term, so masked
          rows stay finite where PyTorch returns inf.
        * ``ignore_index``: samples whose id equals it count nowhere (ids only; else use
          ``mask``).
        * ``smoothing_formula="megatron"`` (Megatron-LM / NeMo): the true class keeps 1 − α
          and every other class gets α/(C − 1), i.e. the PyTorch formula with α·C/(C − 1)
          (at most 1). Equals the fused ``linear_cross_entropy``'s option of the same name.
        * ``z_loss`` = λ: adds λ·LSE(z)² per sample (PaLM's auxiliary z-loss, not multiplied
          by ``class_weight``), gradient 2λ·LSE·softmax(z), Hessian diagonal
          2λ(p² + LSE·p(1 − p)). Equals the fused ``linear_cross_entropy``'s ``z_loss`` on the
          same logits. It is not shift-invariant; the log class frequencies (LSE = 0) stay
          the optimal constant.

        General form: ℓ = Σ_k q_k (LSE(z) − z_k) with q the weighted, smoothed target, gradient
        (Σq)·softmax(z) − q, Hessian diagonal (Σq)·p(1 − p). For independent labels
        (multi-label) use ``binary_cross_entropy``. Optimal constant logits: the log of the
        (weighted) class frequencies.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
        >>> round(float(lk.cross_entropy(logits, np.array([0, 2]))), 6)
        0.634229
    """,
    value=_ce_value,
    grad=_ce_grad,
    hess=_ce_hess,
    value_and_grad=_ce_value_and_grad,
    grad_and_hess=_ce_grad_and_hess,
    options={
        "axis": Option(-1, "int", doc="the class axis"),
        "ignore_index": Option(None, "int", doc="class id whose samples count nowhere"),
        "class_weight": Option(None, "array", low=0.0, doc="per-class weights, shape (C,)"),
        "label_smoothing": Option(0.0, "number", low=0.0, high=1.0, doc="α of (1 − α)·onehot + α/C"),
        "z_loss": Option(0.0, "number", low=0.0, doc="λ of the auxiliary λ·LSE(z)² (PaLM's z-loss)"),
        "smoothing_formula": Option("pytorch", "choice", choices=("pytorch", "megatron"), doc="label-smoothing formula: PyTorch's α/C or Megatron's α/(C − 1)"),
    },
    prepare=_ce_prepare,
    inputs=("logits",),
    baseline=_log_frequency_baseline,
    checks=Checks(
        sample=_sample_ce,
        shape=(7, 5),
        option_sets=(
            {},
            {"label_smoothing": 0.1},
            {"class_weight": _CW},
            {"ignore_index": -100},
            {"ignore_index": 2},
            {"class_weight": _CW, "label_smoothing": 0.25, "ignore_index": -1},
            {"_probs": True},
            {"_probs": True, "label_smoothing": 0.2, "class_weight": _CW},
            {"label_smoothing": 0.3, "smoothing_formula": "megatron", "class_weight": _CW},
            {"_probs": True, "label_smoothing": 0.2, "smoothing_formula": "megatron"},
        ),
        edges=_edges_ce,
        minimum=_minimum_ce,
        shift_invariant=True,
        peers=(
            Peer(
                "torch.nn.functional.cross_entropy",
                _torch_ce,
                requires="torch",
                options=("axis", "ignore_index", "class_weight", "label_smoothing"),
            ),
        ),
    ),
)




def _ce_check(o, loss):
    """Cross-entropy's option rules for callers outside the declaration (the fused loss)."""
    for k in ("label_smoothing", "ignore_index"):
        if o[k] is not None:
            o[k] = check_option(cross_entropy._rules[k], o[k], k, loss, None, None, True)
