"""Classification losses: binary cross-entropy (logits and probabilities) and softmax
cross-entropy."""

from __future__ import annotations

import numpy as np

from dataclasses import replace

from .. import _validate
from .._array import (
    backend,
    class_ids_onehot,
    compute_dtype,
    finite_bound,
    gather_classes,
    is_floating,
    nan_where,
    sigmoid,
    sigmoid_and_slope,
    softplus_nonpositive,
)
from .._loss import CLASS_AXIS, ELEMENTWISE, Checks, Option, Peer, Prepared, check_option, declare
from . import _softmax

# --- binary cross-entropy on logits ------------------------------------------------------


def _bce_clip(z, xp):
    # ±inf logits are sure predictions: clipping to half the dtype's range keeps y·z finite,
    # so a right sure prediction costs exactly 0 and a wrong one a huge finite value.
    b = finite_bound(z.dtype, xp)
    return xp.clip(z, -b, b)


def _bce_posw(y, o):
    pw = o["pos_weight"]
    return None if pw is None else (1.0 + (pw - 1.0) * y, pw * y)


def _bce_terms(z, y, o, xp):
    """(ℓ, softplus(−|z|), clipped z, |z|). ℓ is written as a sum of non-negative terms,

        ℓ = (1 + (w − 1)y)·softplus(−|z|) + ½[w·y(|z| − z) + (1 − y)(|z| + z)],

    so the tiny losses of confident right predictions keep full relative precision, where
    softplus(z) − y·z cancels (a loss of 2e-9 at z = 20 would keep 6 digits in float64 and
    none in float32)."""
    zc = _bce_clip(z, xp)
    a = xp.abs(zc)
    tail = softplus_nonpositive(-a, xp=xp)
    pw = _bce_posw(y, o)
    if pw is None:
        return tail + 0.5 * (a + zc * (1.0 - 2.0 * y)), tail, zc, a
    return pw[0] * tail + 0.5 * (pw[1] * (a - zc) + (1.0 - y) * (a + zc)), tail, zc, a


def _bce_value(z, y, o, xp):
    return _bce_terms(z, y, o, xp)[0]


def _bce_grad(z, y, o, xp):
    pw = _bce_posw(y, o)
    s = sigmoid(z, xp=xp)
    return s - y if pw is None else pw[0] * s - pw[1]


def _bce_value_and_grad(z, y, o, xp):
    value, tail, zc, a = _bce_terms(z, y, o, xp)
    s = xp.exp(-(tail + 0.5 * (a - zc)))  # σ(z) = exp(−softplus(−z)), reusing softplus(−|z|)
    pw = _bce_posw(y, o)
    return value, (s - y if pw is None else pw[0] * s - pw[1])


def _bce_hess(z, y, o, xp):
    return _bce_grad_and_hess(z, y, o, xp)[1]


def _bce_grad_and_hess(z, y, o, xp):
    s, h = sigmoid_and_slope(z, xp=xp)
    h = nan_where(y, h, xp=xp)  # the Hessian does not involve y, but a NaN target must reach it
    pw = _bce_posw(y, o)
    if pw is None:
        return s - y, h
    return pw[0] * s - pw[1], pw[0] * h


def _bce_prepare(pred, target, o, xp, validate, loss, mask=None):
    _validate.check_same_shape(pred, target, "logits", "target", loss)
    pw = o["pos_weight"]
    if pw is not None and not isinstance(pw, (int, float)):
        shape = tuple(pw.shape)
        if shape not in ((), (pred.shape[-1] if pred.ndim else 1,)):
            raise ValueError(
                f"{loss}: `pos_weight` must be a number, a 0-d array or have shape ({pred.shape[-1] if pred.ndim else 1},) "
                f"(one weight per column of the last axis), got shape {shape}."
            )
        o["pos_weight"] = xp.astype(pw, compute_dtype(pred.dtype, xp))
    dt = compute_dtype(pred.dtype, xp)
    return Prepared(pred, target if target.dtype == dt else xp.astype(target, dt), tuple(pred.shape))


def _bce_check_values(z, y, o, xp, loss, valid):
    _validate.check_probabilities(y, "target", loss, xp, valid)


def _sample_bce(rng, shape, o):
    return rng.standard_normal(shape) * 3, rng.random(shape)


def _edges_bce(o):
    z = np.array([1e4, -1e4, np.inf, -np.inf, np.inf, -np.inf, 0.0, 30.0])
    return z, np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5, 0.5])


def _minimum_bce(y, o):
    """σ(z) = y minimises soft BCE, where it equals the binary entropy of y."""
    if o.get("pos_weight") is not None:
        return None
    y = np.clip(y, 1e-3, 1 - 1e-3)
    return np.log(y / (1 - y)), -(y * np.log(y) + (1 - y) * np.log1p(-y))


def _torch_bce(z, y, reduction, pos_weight=None):
    import torch
    import torch.nn.functional as F

    pw = None if pos_weight is None else torch.as_tensor(pos_weight)
    return F.binary_cross_entropy_with_logits(torch.as_tensor(z), torch.as_tensor(y), reduction=reduction, pos_weight=pw).numpy()


def _log_odds_baseline(y, w, o, xp):
    m = xp.mean(y) if w is None else xp.sum(w * y) / xp.sum(w)
    return xp.log(m) - xp.log1p(-m)


binary_cross_entropy = declare(
    name="binary_cross_entropy",
    family="classification",
    kind=ELEMENTWISE,
    title="Binary cross-entropy on logits (log-loss), in the stable softplus form.",
    formula=r"\ell(z, y) = \operatorname{softplus}(z) - y z = \log(1 + e^{-|z|}) + (1 - y)\max(z, 0) + y \max(-z, 0)",
    gradient=r"\partial_z \ell = \sigma(z) - y",
    hessian=r"\partial_z^2 \ell = \sigma(z)(1 - \sigma(z))",
    domain="logits z real or ±inf; targets y in [0, 1] (soft labels allowed); pos_weight >= 0",
    reference="Bishop, *Pattern Recognition and Machine Learning* (2006), §4.3.2",
    use_when="Binary or multi-label classification from logits; the stable form of log-loss.",
    details=r"""
        With ``pos_weight`` = w (a number, or one per column of the last axis, as in PyTorch):
        :math:`\ell = (1 + (w - 1)y)\,\operatorname{softplus}(z) - w y z`, the positive term
        weighted by w. Equals ``torch.nn.functional.binary_cross_entropy_with_logits`` and
        ``optax.sigmoid_binary_cross_entropy``. Targets may be soft (any y in [0, 1]; checked
        when ``validate=True``). Prefer it to ``binary_cross_entropy_from_probs`` whenever
        logits are available (no clamping, exact gradients). Logits of ±inf are sure
        predictions: a right one costs 0, a wrong one a huge finite value; gradients stay
        exact. Optimal constant: the log-odds of the (weighted) mean target.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.binary_cross_entropy(np.array([0.0, 2.0]), np.array([1.0, 1.0]))), 6)
        0.410038
    """,
    value=_bce_value,
    grad=_bce_grad,
    hess=_bce_hess,
    grad_and_hess=_bce_grad_and_hess,
    value_and_grad=_bce_value_and_grad,
    options={"pos_weight": Option(None, "array", low=0.0, doc="weight of the positive term: a number or one per column of the last axis")},
    prepare=_bce_prepare,
    check_values=_bce_check_values,
    inputs=("logits",),
    baseline=_log_odds_baseline,
    checks=Checks(
        sample=_sample_bce,
        option_sets=({}, {"pos_weight": 3.0}, {"pos_weight": np.array([0.5, 1.0, 2.0, 4.0])}),
        edges=_edges_bce,
        minimum=_minimum_bce,
        peers=(Peer("torch.nn.functional.binary_cross_entropy_with_logits", _torch_bce, requires="torch", options=("pos_weight",)),),
    ),
)

# --- binary cross-entropy on probabilities -----------------------------------------------


def _clip_probs(p, xp):
    eps = float(xp.finfo(p.dtype).eps)
    return xp.clip(p, eps, 1.0 - eps)


def _bcep_value(p, y, o, xp):
    # each log term clipped on its own, so a perfect prediction (p = y = 0 or 1) costs exactly 0
    eps = float(xp.finfo(p.dtype).eps)
    return -(y * xp.log(xp.clip(p, eps, 1.0)) + (1.0 - y) * xp.log1p(-xp.clip(p, 0.0, 1.0 - eps)))


def _bcep_grad(p, y, o, xp):
    pc = _clip_probs(p, xp)
    return (pc - y) / (pc * (1.0 - pc))


def _bcep_hess(p, y, o, xp):
    pc = _clip_probs(p, xp)
    q = 1.0 - pc
    return y / (pc * pc) + (1.0 - y) / (q * q)


def _bcep_check_values(p, y, o, xp, loss, valid):
    _validate.check_probabilities(p, "probs", loss, xp, valid)
    _validate.check_probabilities(y, "target", loss, xp, valid)


def _torch_bce_probs(p, y, reduction):
    import torch
    import torch.nn.functional as F

    return F.binary_cross_entropy(torch.as_tensor(p), torch.as_tensor(y), reduction=reduction).numpy()


def _minimum_bce_probs(y, o):
    yc = np.clip(y, 1e-300, 1.0)
    entropy = -(y * np.log(yc) + (1 - y) * np.log(np.clip(1 - y, 1e-300, 1.0)))
    return y, entropy


binary_cross_entropy_from_probs = declare(
    name="binary_cross_entropy_from_probs",
    family="classification",
    kind=ELEMENTWISE,
    title="Binary cross-entropy on probabilities.",
    formula=r"\ell(p, y) = -[y \log \max(p, \varepsilon) + (1 - y) \log \max(1 - p, \varepsilon)]",
    gradient=r"\partial_p \ell = \frac{\tilde p - y}{\tilde p (1 - \tilde p)},\ \tilde p = \operatorname{clip}(p, \varepsilon, 1 - \varepsilon)",
    hessian=r"\partial_p^2 \ell = \frac{y}{\tilde p^2} + \frac{1 - y}{(1 - \tilde p)^2}",
    domain="probabilities p and targets y in [0, 1]; epsilon = machine epsilon of the compute dtype",
    reference="Bishop, *Pattern Recognition and Machine Learning* (2006), §4.3.2; clamp as in Keras (epsilon) rather than PyTorch (log >= -100)",
    use_when="Only when the model outputs probabilities; prefer binary_cross_entropy on logits.",
    details="""
        ε is the machine epsilon of the compute dtype (1.19e-7 in float32 and for half
        inputs, 2.2e-16 in float64), so ``p`` = 0 or 1 gives a finite value (at most −log ε:
        15.9 in float32, 36.0 in float64) and a finite gradient. Each log term is clipped on
        its own, so a perfect prediction (p = y ∈ {0, 1}) costs exactly 0. Inside
        [ε, 1 − ε] this equals ``torch.nn.functional.binary_cross_entropy``; PyTorch instead
        clamps each log at −100, so the two differ only for p within ε of 0 or 1. The
        gradient outside the clip is the formula at the clipped p (it keeps its sign instead
        of vanishing). ``validate=True`` checks that ``probs`` and ``target`` lie in [0, 1].
        Optimal constant: the (weighted) mean target.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> round(float(lk.binary_cross_entropy_from_probs(np.array([0.5, 0.9]), np.array([1.0, 1.0]))), 6)
        0.399254
    """,
    value=_bcep_value,
    grad=_bcep_grad,
    hess=_bcep_hess,
    check_values=_bcep_check_values,
    inputs=("probs",),
    baseline=lambda y, w, o, xp: xp.mean(y) if w is None else xp.sum(w * y) / xp.sum(w),
    checks=Checks(
        sample=lambda rng, shape, o: (rng.uniform(0.02, 0.98, shape), rng.random(shape)),
        edges=lambda o: (np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30]), np.array([1.0, 0.0, 0.0, 1.0, 0.5, 1.0])),
        minimum=_minimum_bce_probs,
        peers=(Peer("torch.nn.functional.binary_cross_entropy", _torch_bce_probs, requires="torch"),),
    ),
)

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
    expected = tuple(pred.shape[:axis]) + tuple(pred.shape[axis + 1 :])
    if is_floating(target, xp):
        if tuple(target.shape) == expected and expected != tuple(pred.shape):
            raise ValueError(
                f"{loss}: `target` of shape {expected} has dtype {target.dtype}: class ids must be integers; "
                f"probabilities need the logits' shape {tuple(pred.shape)}. Cast ids with target.astype(int64)."
            )
        if o["ignore_index"] is not None:
            raise ValueError(f"{loss}: `ignore_index` applies to integer class ids; with probability targets use `mask`.")
        prep = _softmax.prepare_dense_target(pred, target, o, xp, validate, loss, mask)
        return replace(prep, static={"target_kind": "probs"})
    if not xp.isdtype(target.dtype, "integral"):
        raise TypeError(f"{loss}: `target` must hold integer class ids or float probabilities, got dtype {target.dtype}.")
    if tuple(target.shape) != expected:
        hint = ""
        if tuple(target.shape) == expected + (1,):
            hint = " It has a trailing axis of size 1: pass target[..., 0]."
        elif tuple(target.shape) == tuple(pred.shape):
            hint = " Integer ids have the shape of the logits without the class axis; one-hot targets must be float."
        raise ValueError(
            f"{loss}: integer `target` must have the shape of the logits without axis {axis}, "
            f"i.e. {expected}; got {tuple(target.shape)} for logits {tuple(pred.shape)}.{hint}"
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
        static={"target_kind": "ids"},
        axis=axis if moved else None,
    )


def _ce_q(z, t, o, xp):
    """Effective per-class target weights q (see ``_softmax``). With id targets a class weight
    enters only through the samples labelled with it (and, with label smoothing, through every
    sample's α/C term): a NaN weight of an unused class changes nothing, on every path."""
    a = o["label_smoothing"]
    cw = o["class_weight"]
    num_classes = z.shape[-1]
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


def _ce_value(z, t, o, xp):
    if o["target_kind"] == "probs":
        return _softmax.weighted_nll(z, _ce_q(z, t, o, xp), xp)
    # integer ids: gather instead of building the one-hot
    cw = o["class_weight"]
    a = o["label_smoothing"]
    m, rest = lse = _softmax.lse_parts(z, xp)
    nll = (m - xp.take_along_axis(z, t[..., None], axis=-1)[..., 0]) + rest
    if cw is not None:
        nll = nll * gather_classes(cw, t, xp)
    if not a:
        return nll
    per_class = _softmax._gap(z, lse)
    per_class = xp.where(z == -xp.inf, xp.zeros_like(per_class), per_class)
    smooth = xp.sum(per_class if cw is None else per_class * cw, axis=-1)
    return (1.0 - a) * nll + (a / z.shape[-1]) * smooth


def _ce_grad(z, t, o, xp):
    return _softmax.weighted_nll_grad(z, _ce_q(z, t, o, xp), xp)


def _ce_hess(z, t, o, xp):
    return _softmax.weighted_nll_hess(z, _ce_q(z, t, o, xp), xp)


def _ce_value_and_grad(z, t, o, xp):
    q = _ce_q(z, t, o, xp)
    lse = _softmax.lse_parts(z, xp)
    return _softmax.weighted_nll(z, q, xp, lse), _softmax.weighted_nll_grad(z, q, xp, lse)


def _ce_grad_and_hess(z, t, o, xp):
    q = _ce_q(z, t, o, xp)
    p = _softmax.softmax_from_lse(z, _softmax.lse_parts(z, xp), xp)
    s = xp.sum(q, axis=-1)[..., None]
    return s * p - q, s * p * (1.0 - p)


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
    inf = np.inf
    z = np.array([[1e4, -1e4, 0.0], [0.0, -inf, 2.0], [-inf, -inf, 1.0], [-1e4, 1e4, -1e4]])
    if o.get("_probs"):
        return z, np.array([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0], [0.2, 0.6, 0.2]])
    return z, np.array([0, 2, 2, 1])


def _minimum_ce(t, o):
    """Probability targets: z = log q (the smoothed target) minimises; the minimum is the
    entropy of q. Id targets have no finite minimiser."""
    if not o.get("_probs") or o.get("class_weight") is not None or o.get("axis", -1) % t.ndim != t.ndim - 1:
        return None
    a = o.get("label_smoothing", 0.0)
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
    """log of the (weighted) class frequencies of probability targets: the optimal constant logits."""
    if xp.isdtype(t.dtype, "integral"):
        raise ValueError("cross_entropy.baseline needs probability targets (one-hot encode class ids first).")
    q = t if w is None else t * w[..., None]
    freq = xp.sum(xp.reshape(q, (-1, t.shape[-1])), axis=0)
    return xp.log(freq / xp.sum(freq))


_CW = np.array([0.2, 1.0, 3.0, 0.7, 1.5])

cross_entropy = declare(
    name="cross_entropy",
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
